"""Which served model(s) a client call asks for: one model by name, or a weighted combination
(``reward_weights``), and the per-model parts a combination's replies carry."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Target:
    """``model``: a served model's name (None: the server's default); ``reward_weights``: a
    weighted combination of served models instead (``{"helpful": 1.0, "safe": 0.5}``)."""

    model: str | None = None
    reward_weights: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        if self.model is not None and self.reward_weights:
            raise ValueError("give model or reward_weights, not both")
        if self.model is not None and not isinstance(self.model, str):
            raise TypeError(f"model must be a str, got {type(self.model).__name__}")
        for name, weight in (self.reward_weights or {}).items():
            if not isinstance(name, str):
                raise TypeError(f"reward_weights keys are model names, got {name!r}")
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise TypeError(f"reward_weights[{name!r}] must be a number, got {weight!r}")
            if not math.isfinite(weight):
                raise ValueError(f"reward_weights[{name!r}] must be finite, got {weight}")

    def apply(self, request: Any) -> Any:
        """Set the request's ``model`` or ``reward_weights``; returns it."""
        if self.model is not None:
            request.model = self.model
        if self.reward_weights:
            request.reward_weights.update({k: float(v) for k, v in self.reward_weights.items()})
        return request


DEFAULT = Target()


def components(results: Iterable[Any]) -> dict[str, np.ndarray]:
    """Each model's normalised rewards (float64, in result order) from the ``components`` of
    composite results; empty for a single model's."""
    found: dict[str, list[float]] = {}
    for result in results:
        for part in result.components:
            found.setdefault(part.model, []).append(part.reward)
    return {name: np.asarray(values, dtype=np.float64) for name, values in found.items()}
