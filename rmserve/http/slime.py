"""slime's ``--rm-type remote_rm``: one sample in, a bare JSON number out.

slime (THUDM/slime, ``slime/rollout/rm_hub/__init__.py``, ``remote_rm``) posts
``{"prompt": sample.prompt, "response": sample.response, "label": sample.label}`` to the URL
given as ``--rm-url`` and uses the reply's JSON (``await resp.json()``) as the reward, so the
reply is a bare number: ``POST /slime/reward`` → ``0.8131``. ``prompt`` is a string, or a list
of ``{"role", "content"}`` messages (slime keeps chat prompts that way), rendered as the TRL
adapter renders them (``rmserve.text.conversation``); ``label`` is accepted and ignored (a reward
model needs no reference answer). The reward is raw unless ``"normalize": true``. A served model
is named by ``?model=NAME`` on the URL (slime's body is fixed) or a ``model`` key; with
``reward_weights`` the reply is the composite reward (``rmserve.http.served``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from rmserve.errors import InvalidRequest
from rmserve.http.json_body import json_object, optional_bool
from rmserve.http.served import Served
from rmserve.serving.composite import Composite
from rmserve.text.conversation import MessageError, render_prompt

PATH = "/slime/reward"
METHOD = "http_slime_reward"


def parse_slime(raw: bytes) -> tuple[tuple[str, str], bool, dict[str, Any]]:
    """The (prompt, response) pair, the normalize flag and the whole body of one request."""
    body = json_object(raw, '{"prompt": ..., "response": ..., "label": ...}')
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        try:
            prompt = render_prompt(prompt)
        except MessageError as e:
            raise InvalidRequest(f"prompt{e.location}: {e.reason}") from None
    elif not isinstance(prompt, str):
        raise InvalidRequest("prompt must be a string or a list of messages")
    response = body.get("response")
    if not isinstance(response, str):
        raise InvalidRequest("response must be a string")
    return (prompt, response), optional_bool(body, "normalize", False), body


async def slime_reward(served: Served, raw: bytes) -> web.Response:
    pair, normalize, body = parse_slime(raw)
    with served.select(body, served.model_name(body)) as target:
        if isinstance(target, Composite):
            (combined,) = await target.score([pair], target.options(), None, field="")
            return web.json_response(combined.reward)
        core = target
        options = core.reward_options(normalize)  # an ensemble: the server's default aggregate
        scores = await core.score([pair], None, field="")  # errors name "prompt" or "response"
        (reward,) = (s.reward for s in core.served(scores, options))
        return web.json_response(reward)
