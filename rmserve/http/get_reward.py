"""OpenRLHF's remote reward-model request: ``POST /get_reward``.

``{"query": [prompt + response, ...], "prompts": [prompt, ...]}`` → ``{"rewards": [...],
"scores": [...]}`` (the same raw rewards; ``"normalize": true`` returns (r - mean) / std).
Each response is its query with the prompt prefix removed, so every query must start with its
prompt.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from rmserve.errors import InvalidRequest
from rmserve.http.json_body import json_object
from rmserve.serving.core import RewardCore

METHOD = "http_get_reward"


def _string_list(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key)
    if not isinstance(value, list):
        raise InvalidRequest(f"{key} must be a list of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidRequest(f"{key}[{i}] must be a string, got {type(item).__name__}")
    return value


def parse_get_reward(raw: bytes) -> tuple[list[tuple[str, str]], bool]:
    """(prompt, response) pairs and the normalize flag of one request body."""
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
    return pairs, normalize


async def get_reward(core: RewardCore, raw: bytes) -> web.Response:
    pairs, normalize = parse_get_reward(raw)
    options = core.reward_options(normalize)  # an ensemble: the server's default aggregate
    scores = await core.score(pairs, None, field="query")
    rewards = [s.reward for s in core.served(scores, options)]
    return web.json_response(
        {"rewards": rewards, "scores": rewards, "model_version": core.model_version}
    )
