"""What an HTTP protocol handler is given: the served models, the request's query and the
request scope, and the one way handlers pick the model(s) a request names.

A request names a model with a ``model`` key in its JSON body or a ``model`` query parameter
(``POST /slime/reward?model=safe``: slime sends a fixed body), or a weighted combination with a
``reward_weights`` object (``{"helpful": 1.0, "safe": 0.5}``); neither: the default model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rmserve.errors import InvalidRequest
from rmserve.serving.composite import Composite
from rmserve.serving.core import RewardCore
from rmserve.serving.models import ModelRegistry
from rmserve.serving.request_scope import RequestScope


@dataclass(frozen=True)
class Served:
    models: ModelRegistry
    scope: RequestScope
    query: Mapping[str, str]

    def model_name(self, body: Mapping[str, Any]) -> str | None:
        """The model the request names in its body or query (they must agree), or None."""
        in_body = body.get("model")
        if in_body is not None and not isinstance(in_body, str):
            raise InvalidRequest("model must be a string (a served model's name)")
        in_query = self.query.get("model")
        if in_body is not None and in_query is not None and in_body != in_query:
            raise InvalidRequest(
                f"model: the body names {in_body!r} but the query names {in_query!r}"
            )
        return in_body if in_body is not None else in_query

    @contextlib.contextmanager
    def select(self, body: Mapping[str, Any], name: str | None) -> Iterator[RewardCore | Composite]:
        """The model ``name`` (None: the default) or, with the body's ``reward_weights``, the
        combination the request asks for, held until the block ends."""
        weights = body.get("reward_weights")
        if weights is not None and not isinstance(weights, dict):
            raise InvalidRequest(
                'reward_weights must be an object of model name to weight, e.g. {"helpful": 1.0}'
            )
        with self.models.select(name, weights) as target:
            if isinstance(target, Composite):
                self.scope.served_by(tuple(c.name for c in target.components))
            else:
                self.scope.served_by((target.name,))
            yield target
