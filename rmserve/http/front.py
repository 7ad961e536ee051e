"""HTTP front for RL trainers' remote reward-model protocols, one small module each:

- ``POST /get_reward``: OpenRLHF (``rmserve.http.get_reward``), metrics label ``http_get_reward``;
- ``POST /classify``: vLLM's classify API as verl's reward loop calls it
  (``rmserve.http.classify``), label ``http_classify``;
- ``POST /slime/reward``: slime's ``--rm-type remote_rm`` (``rmserve.http.slime``), label
  ``http_slime_reward``.

``GET /health`` is 200 while serving, else 503. Every protocol goes through one wrapper here:
the body read under its limits and charged to the memory budget as it arrives
(``rmserve.http.body``: deadline, minimum rate, per-client share, bounded decompression), then
the request scope gRPC uses too
(``rmserve.serving.request_scope``: the same core, metrics and bug handling), and domain errors
mapped to HTTP codes in one place
(400 naming the field, 429 + Retry-After, 503, 504).
Plaintext and without auth: the server settings refuse ``http_port`` together with TLS or
``auth_token``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from rmserve.errors import (
    DeadlineExpired,
    EngineFailure,
    InvalidRequest,
    Overloaded,
    RewardError,
    Unavailable,
)
from rmserve.http import classify, get_reward, slime
from rmserve.http.body import BodyLimits, ClientShares, read_body, too_large
from rmserve.http.quiet_log import QuietServerLog
from rmserve.http.served import Served
from rmserve.observability.metrics import Metrics
from rmserve.serving.config import CoreState
from rmserve.serving.models import ModelRegistry
from rmserve.serving.request_scope import RequestScopes

log = logging.getLogger(__name__)

# A protocol adapter: the served models (with the query and scope) and the admitted body → reply.
Handler = Callable[[Served, bytes], Awaitable[web.Response]]
# HTTP status and the gRPC code name used as the metrics label, per domain error.
STATUS_OF: dict[type[RewardError], tuple[int, str]] = {
    InvalidRequest: (400, "INVALID_ARGUMENT"),
    Overloaded: (429, "RESOURCE_EXHAUSTED"),
    Unavailable: (503, "UNAVAILABLE"),
    DeadlineExpired: (504, "DEADLINE_EXCEEDED"),
    EngineFailure: (500, "INTERNAL"),
}


def code_label(error: RewardError) -> str:
    """The ``code`` label of ``rmserve_requests_total``: the gRPC code's name, as for gRPC."""
    return STATUS_OF.get(type(error), (500, "INTERNAL"))[1]


def error_response(error: RewardError) -> web.Response:
    """The one mapping point: a domain error → its HTTP response."""
    status, code = STATUS_OF.get(type(error), (500, "INTERNAL"))
    headers = {}
    if isinstance(error, Overloaded):
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_ms / 1000.0)))
    elif isinstance(error, Unavailable):
        headers["Retry-After"] = "1"
    body = {"error": {"code": code, "message": str(error)}}
    return web.json_response(body, status=status, headers=headers)


@dataclass(frozen=True)
class HttpLimits:
    """What a client may hold of the server (``ServerSettings``' ``http_*`` fields)."""

    body: BodyLimits
    header_timeout_seconds: float = 60.0
    max_inflight_bytes_per_client: int | None = None  # None: half the core's budget


class HttpFront:
    """The protocols above and ``GET /health`` on their own port, over the shared core."""

    def __init__(
        self,
        core: Callable[[], ModelRegistry | None],
        metrics: Metrics,
        max_body_bytes: int,
        log_request_content: bool = False,
        limits: HttpLimits | None = None,
    ) -> None:
        self._core = core  # for /health
        self._requests = RequestScopes(core, metrics, code_label, log_request_content)
        self._max_body_bytes = max_body_bytes
        self._limits = limits or HttpLimits(BodyLimits(max_body_bytes, 30.0, 64 * 1024))
        self._clients = ClientShares()
        # Bodies are read by read_body, which stops at max_body_bytes; client_max_size bounds
        # any other read.
        self._app = web.Application(client_max_size=max_body_bytes)
        self._route("/get_reward", get_reward.METHOD, get_reward.get_reward)
        self._route("/classify", classify.METHOD, classify.classify)
        self._route(slime.PATH, slime.METHOD, slime.slime_reward)
        self._app.router.add_get("/health", self.health)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        """Bind and serve (quietly: ``announce`` logs it once the server's start succeeded)."""
        # handler_cancellation: a caller that hangs up frees its queue slot (and its body's
        # bytes), as in gRPC. auto_decompress off: read_body inflates within the limits.
        # keepalive_timeout: aiohttp closes a connection that has not sent a whole request's
        # headers this long after opening or after its last reply: the header-read timeout.
        self._runner = web.AppRunner(
            self._app,
            handler_cancellation=True,
            access_log=None,
            auto_decompress=False,
            keepalive_timeout=self._limits.header_timeout_seconds,
            logger=QuietServerLog(logging.getLogger("aiohttp.server")),
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.port = int(self._runner.addresses[0][1])

    def announce(self, host: str) -> None:
        log.info("HTTP /get_reward, /classify, %s on %s:%d", slime.PATH, host, self.port)

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

    def _route(self, path: str, method: str, handler: Handler) -> None:
        async def serve(request: web.Request) -> web.Response:
            return await self._serve(request, method, handler)

        self._app.router.add_post(path, serve)

    def _client_limit(self, models: ModelRegistry) -> int:
        limit = self._limits.max_inflight_bytes_per_client
        if limit is None:
            limit = models.max_inflight_bytes // 2
        return max(limit, self._max_body_bytes)

    async def _serve(self, request: web.Request, method: str, handler: Handler) -> web.Response:
        """One request of any protocol: admission, body, handler (``RequestScope``: the
        metrics, and a bug answered as 500), then the one mapping of domain errors to HTTP."""
        with self._requests.open(method) as scope:
            core = scope.core()
            try:
                length = request.content_length
                if length is not None and length > self._max_body_bytes:  # refused unread
                    raise too_large(
                        f"request body: {length} bytes is over "
                        f"max_message_bytes={self._max_body_bytes}"
                    )
                with (
                    core.reserve_bytes() as reservation,
                    self._clients.share(request.remote or "", self._client_limit(core)) as share,
                ):

                    def charge(size: int) -> None:
                        share(size)
                        reservation.grow(size)

                    body = await read_body(request, self._limits.body, charge)
                    return await handler(Served(core, scope, request.query), body)
            except web.HTTPException as e:  # e.g. 413 for a body over max_message_bytes
                scope.let_through("INVALID_ARGUMENT" if e.status < 500 else "INTERNAL")
                raise
        assert scope.error is not None  # the block returned unless it failed
        return error_response(scope.error)
