"""HTTP front for trainers that speak OpenRLHF's remote reward-model protocol.

``POST /get_reward`` with ``{"query": [prompt + response, ...], "prompts": [prompt, ...]}``
answers ``{"rewards": [...], "scores": [...]}`` (the same raw rewards; ``"normalize": true``
returns (r - mean) / std instead; an ensemble artifact returns the server's default aggregate
of its normalised members either way). Each response is its query with the prompt prefix removed,
so every query must start with its prompt. ``GET /health`` is 200 while serving, else 503.

A thin adapter like the gRPC servicer: JSON → ``RewardCore.score`` → JSON, the same batcher and
metrics (method label ``http_get_reward``), and domain errors mapped to HTTP codes in one place.
Plaintext and without auth: the server settings refuse ``http_port`` together with TLS or
``auth_token``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from rmserve.core import CoreState, RewardCore
from rmserve.errors import (
    DeadlineExpired,
    EngineFailure,
    InvalidRequest,
    Overloaded,
    RewardError,
    Unavailable,
    log_unexpected,
)
from rmserve.metrics import Metrics

log = logging.getLogger(__name__)

METHOD = "http_get_reward"
# HTTP status and the gRPC code name used as the metrics label, per domain error.
STATUS_OF: dict[type[RewardError], tuple[int, str]] = {
    InvalidRequest: (400, "INVALID_ARGUMENT"),
    Overloaded: (429, "RESOURCE_EXHAUSTED"),
    Unavailable: (503, "UNAVAILABLE"),
    DeadlineExpired: (504, "DEADLINE_EXCEEDED"),
    EngineFailure: (500, "INTERNAL"),
}


def error_response(error: RewardError) -> tuple[web.Response, str]:
    """The one mapping point: a domain error → (HTTP response, metrics code label)."""
    status, code = STATUS_OF.get(type(error), (500, "INTERNAL"))
    headers = {}
    if isinstance(error, Overloaded):
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_ms / 1000.0)))
    elif isinstance(error, Unavailable):
        headers["Retry-After"] = "1"
    body = {"error": {"code": code, "message": str(error)}}
    return web.json_response(body, status=status, headers=headers), code


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
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise InvalidRequest(f"body is not JSON: {e}") from None
    except RecursionError:  # json's decoder recurses once per level of [ or {
        raise InvalidRequest("body is not JSON this server reads: nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidRequest('body must be an object {"query": [...], "prompts": [...]}')
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


class HttpFront:
    """``POST /get_reward`` and ``GET /health`` on their own port, over the shared core."""

    def __init__(
        self,
        core: Callable[[], RewardCore | None],
        metrics: Metrics,
        max_body_bytes: int,
        log_request_content: bool = False,
    ) -> None:
        self._core = core
        self._log_content = log_request_content
        self._metrics = metrics
        self._max_body_bytes = max_body_bytes
        # aiohttp stops reading a body at client_max_size (413); a Content-Length over it is
        # refused before a byte of the body is read (get_reward).
        self._app = web.Application(client_max_size=max_body_bytes)
        self._app.router.add_post("/get_reward", self.get_reward)
        self._app.router.add_get("/health", self.health)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        # handler_cancellation: a caller that hangs up frees its queue slot, as in gRPC.
        self._runner = web.AppRunner(self._app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.port = int(self._runner.addresses[0][1])
        log.info("HTTP /get_reward on %s:%d", host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def health(self, request: web.Request) -> web.Response:
        core = self._core()
        serving = core is not None and core.state is CoreState.SERVING
        return web.json_response(
            {"status": "SERVING" if serving else "NOT_SERVING"}, status=200 if serving else 503
        )

    @staticmethod
    async def _score(core: RewardCore, raw: bytes) -> web.Response:
        pairs, normalize = parse_get_reward(raw)
        options = core.reward_options(normalize)  # an ensemble: the server's default aggregate
        scores = await core.score(pairs, None, field="query")
        rewards = [s.reward for s in core.served(scores, options)]
        return web.json_response(
            {"rewards": rewards, "scores": rewards, "model_version": core.model_version}
        )

    async def get_reward(self, request: web.Request) -> web.Response:
        start = time.perf_counter()
        code = "OK"
        try:
            core = self._core()
            if core is None:
                raise Unavailable("server is loading the model; retry later")
            length = request.content_length
            if length is not None and length > self._max_body_bytes:  # as aiohttp bounds read()
                raise web.HTTPRequestEntityTooLarge(
                    max_size=self._max_body_bytes,
                    actual_size=length,
                    text=f"request body: {length} bytes is over "
                    f"max_message_bytes={self._max_body_bytes}",
                )
            if length is None:  # chunked: bounded by client_max_size, admitted once read
                body = await request.read()
                with core.admit_bytes(len(body)):
                    return await self._score(core, body)
            with core.admit_bytes(length):  # before a byte of the body is read
                return await self._score(core, await request.read())
        except RewardError as e:
            e.__traceback__ = None  # its frames held the request body
            response, code = error_response(e)
            return response
        except web.HTTPException as e:  # e.g. 413 for a body over max_message_bytes
            code = "INVALID_ARGUMENT" if e.status < 500 else "INTERNAL"
            raise
        except Exception as e:  # a bug: answer 500 with the reason, keep serving
            log_unexpected(log, "get_reward", e, self._log_content)
            response, code = error_response(RewardError(f"{type(e).__name__}: {e}"))
            return response
        except BaseException:  # the caller hung up
            code = "CANCELLED"
            raise
        finally:
            self._metrics.requests.labels(method=METHOD, code=code).inc()
            self._metrics.request_duration.labels(method=METHOD).observe(
                time.perf_counter() - start
            )
