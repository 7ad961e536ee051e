"""The gates an int8 artifact must pass before ``rmserve quantize`` writes it, and what a
refusal carries. Pure: the CLI reads the defaults without importing onnxruntime.quantization."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Gates:
    """What an int8 artifact must meet; the defaults are issue 11's."""

    accuracy_drop: float = 0.005
    spearman: float = 0.99
    batch_invariance: float = 1e-5

    def describe(self) -> str:
        return (
            f"int8 gates: accuracy ≥ fp32 − {self.accuracy_drop:g}; Spearman vs fp32 ≥ "
            f"{self.spearman:g}; batch invariance ≤ {self.batch_invariance:.0e}"
        )


@dataclass(frozen=True)
class Figures:
    """What the candidate measured; ``failed`` names each gate it missed."""

    pairs: int
    accuracy: float
    reference_accuracy: float
    spearman: float
    max_abs_diff: float
    rank_agreement: float
    batch_invariance_max_abs_diff: float
    failed: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failed": list(self.failed)}

    def describe(self) -> str:
        return (
            f"accuracy {self.accuracy:.4f} vs fp32 {self.reference_accuracy:.4f}, Spearman "
            f"{self.spearman:.5f}, batch invariance {self.batch_invariance_max_abs_diff:.2e}, "
            f"max |Δ| {self.max_abs_diff:.3g} over {self.pairs} pairs"
        )


class QuantizeError(Exception):
    """The input cannot be quantised (not fp32, no calibration pairs); nothing was written."""


class QuantizeRefused(QuantizeError):
    """The int8 candidate missed a gate; ``figures`` holds what it measured. Nothing written."""

    def __init__(self, figures: Figures, gates: Gates) -> None:
        super().__init__(
            f"refused to write the int8 artifact: {', '.join(figures.failed)} gate failed "
            f"({figures.describe()}; {gates.describe()})"
        )
        self.figures = figures
        self.gates = gates
