"""OpenRLHF's remote reward-model request: ``POST /get_reward``.

``{"query": [prompt + response, ...], "prompts": [prompt, ...]}`` → ``{"rewards": [...],
"scores": [...]}`` (the same raw rewards; ``"normalize": true`` returns (r - mean) / std).
Each response is its query with the prompt prefix removed, so every query must start with its
prompt. ``"model"`` (or ``?model=``) names a served model; ``"reward_weights"`` asks for a
weighted combination (``rmserve.http.served``): ``rewards`` are then the composite rewards and
``components`` maps each model to its normalised rewards.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from rmserve.errors import InvalidRequest
from rmserve.http.json_body import json_object
from rmserve.http.served import Served
from rmserve.serving.composite import Composite

METHOD = "http_get_reward"


def _string_list(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key)
    if not isinstance(value, list):
        raise InvalidRequest(f"{key} must be a list of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidRequest(f"{key}[{i}] must be a string, got {type(item).__name__}")
    return value


def parse_get_reward(raw: bytes) -> tuple[list[tuple[str, str]], bool, dict[str, Any]]:
    """(prompt, response) pairs, the normalize flag and the whole body of one request."""
    body = json_object(raw, '{"query": [...], "prompts": [...]}')
    queries = _string_list(body, "query")
    prompts = _string_list(body, "prompts")
    if len(queries) != len(prompts):
        raise InvalidRequest(f"query has {len(queries)} entries but prompts has {len(prompts)}")
    normalize = body.get("normalize", False)
    if not isinstance(normalize, bool):
        raise InvalidRequest("normalize must be true or false")
    pairs = []
    for i, (query, prompt) in enumerate(zip(queries, prompts, strict=True)):
        if not query.startswith(prompt):
            raise InvalidRequest(f"query[{i}] does not start with prompts[{i}]")
        pairs.append((prompt, query[len(prompt) :]))
    return pairs, normalize, body


async def get_reward(served: Served, raw: bytes) -> web.Response:
    pairs, normalize, body = parse_get_reward(raw)
    with served.select(body, served.model_name(body)) as target:
        if isinstance(target, Composite):
            combined = await target.score(pairs, target.options(), None, field="query")
            rewards = [c.reward for c in combined]
            return web.json_response(
                {
                    "rewards": rewards,
                    "scores": rewards,
                    "components": target.rewards_by_model(combined),
                    "model_version": target.model_version,
                }
            )
        core = target
        options = core.reward_options(normalize)  # an ensemble: the server's default aggregate
        scores = await core.score(pairs, None, field="query")
        rewards = [s.reward for s in core.served(scores, options)]
        return web.json_response(
            {"rewards": rewards, "scores": rewards, "model_version": core.model_version}
        )
