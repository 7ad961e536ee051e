"""The gRPC adapter: bytes → protobuf → core call → protobuf, and the one place errors become codes.

The RewardService methods are registered with raw-bytes handlers (``reward_handlers``): gRPC hands
the servicer the request's bytes unparsed, so a request over ``max_message_bytes`` is refused by
its length before any Python object is built from it, and bytes that are not a valid message
(truncated, invalid UTF-8 in a string field) are an ``INVALID_ARGUMENT`` answered here instead of
a deserializer failure that gRPC reports as ``UNKNOWN`` with a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from grpc.aio import ServicerContext

from rmserve.errors import (
    DeadlineExpired,
    EngineFailure,
    InvalidRequest,
    Overloaded,
    Refused,
    RewardError,
    Unavailable,
)
from rmserve.grpc.messages import (
    composite_fields,
    composite_options,
    composite_prefer_result,
    model_info,
    prefer_result,
    require_text,
    reward_options,
    score_fields,
    score_result,
)
from rmserve.observability.metrics import Metrics
from rmserve.rewards.group_stats import group_stats
from rmserve.serving.composite import Composite
from rmserve.serving.core import RewardCore
from rmserve.serving.models import ModelRegistry
from rmserve.serving.request_scope import RequestScope, RequestScopes
from rmserve.v1 import reward_pb2

log = logging.getLogger(__name__)

R = TypeVar("R")
M = TypeVar("M", bound=Message)
REWARD_SERVICE = reward_pb2.DESCRIPTOR.services_by_name["RewardService"]

STATUS_OF: dict[type[RewardError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExpired: grpc.StatusCode.DEADLINE_EXCEEDED,
    EngineFailure: grpc.StatusCode.INTERNAL,
    Refused: grpc.StatusCode.FAILED_PRECONDITION,
}
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"


def status_of(error: RewardError) -> grpc.StatusCode:
    return STATUS_OF.get(type(error), grpc.StatusCode.INTERNAL)


def code_label(error: RewardError) -> str:
    """The ``code`` label of ``rmserve_requests_total`` for a failed RPC: its status's name."""
    return str(status_of(error).name)


def parse_request(message_type: type[M], raw: bytes) -> M:
    """The one place request bytes become a message; a malformed one is ``InvalidRequest``."""
    try:
        return message_type.FromString(raw)
    except DecodeError as e:
        # The reason names the message type, never its content; the caller sent the bytes anyway.
        raise InvalidRequest(
            f"request: not a valid {message_type.DESCRIPTOR.full_name}: {e}"
        ) from None


class RequestBytes:
    """A request as received. gRPC keeps this holder until the call ends; the servicer takes
    the bytes out, so they are freed as soon as it is done with them."""

    __slots__ = ("_raw", "size")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self.size = len(raw)

    def take(self) -> bytes:
        raw, self._raw = self._raw, b""
        return raw


def reward_handlers(servicer: RewardServicer) -> dict[str, grpc.RpcMethodHandler]:
    """Raw-bytes handlers for every RewardService method, listed from the proto descriptor."""
    handlers = {}
    for method in REWARD_SERVICE.methods:
        response_type = GetMessageClass(method.output_type)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=RequestBytes,  # the servicer checks the size, then parses
            response_serializer=response_type.SerializeToString,
        )
    return handlers


def add_reward_service(servicer: RewardServicer, server: Any) -> None:
    """Register ``servicer`` on a ``grpc.aio.Server`` (what the generated ``add_…`` does, raw)."""
    handlers = reward_handlers(servicer)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REWARD_SERVICE.full_name, handlers),)
    )
    server.add_registered_method_handlers(REWARD_SERVICE.full_name, handlers)


# What a request is scored with: one model's current version, or a weighted combination.
Target = RewardCore | Composite
# A RewardService method's own part: the servicer, its target, the parsed request, the time left.
Work = Callable[["RewardServicer", Target, M, "float | None"], Awaitable[R]]
# What gRPC calls: the servicer, the request's bytes, the call.
Method = Callable[["RewardServicer", RequestBytes, ServicerContext], Awaitable[R]]


def rpc(request_type: type[M]) -> Callable[[Work[M, R]], Method[R]]:
    """A RewardService method from its ``work``: parsed as ``request_type`` and run through
    ``RewardServicer._handle`` under the name of ``work``."""

    def method(work: Work[M, R]) -> Method[R]:
        name = work.__name__

        async def handle(
            self: RewardServicer, received: RequestBytes, context: ServicerContext
        ) -> R:
            async def bound(target: Target, request: M, timeout: float | None) -> R:
                return await work(self, target, request, timeout)

            return await self._handle(name, received, context, request_type, bound)

        handle.__name__, handle.__qualname__ = name, work.__qualname__
        handle.__doc__ = work.__doc__
        return handle

    return method


class RewardServicer:
    """RewardService over raw request bytes: register it with ``add_reward_service``."""

    def __init__(
        self,
        models: Callable[[], ModelRegistry | None],
        metrics: Metrics,
        max_message_bytes: int,
        log_content: bool = False,
    ) -> None:
        self._requests = RequestScopes(models, metrics, code_label, log_content)
        self._models = models
        self._max_message_bytes = max_message_bytes

    async def _handle(
        self,
        method: str,
        received: RequestBytes,
        context: ServicerContext,
        request_type: type[M],
        work: Callable[[Target, M, float | None], Awaitable[R]],
    ) -> R:
        """Run one RPC: size check, memory admission, parse, core call (``RequestScope``: the
        metrics, and a bug answered as INTERNAL), then the single error-to-status mapping."""
        try:
            with self._requests.open(method) as scope:
                models = scope.core()
                size = received.size
                if size > self._max_message_bytes:  # refused before a Python object is built
                    raise InvalidRequest(
                        f"request: {size} bytes is over max_message_bytes={self._max_message_bytes}"
                    )
                with models.admit_bytes(size):
                    return await self._parse_and_run(
                        models, scope, method, received, context, request_type, work
                    )
        finally:
            received.take()  # the bytes go now, not when gRPC drops the call
        error = scope.error
        assert error is not None  # the block returned unless it failed
        if isinstance(error, Overloaded):
            context.set_trailing_metadata(((RETRY_PUSHBACK_KEY, str(error.retry_after_ms)),))
        if context.done():  # gRPC's own deadline timer ended the call: nothing can be sent
            raise asyncio.CancelledError
        try:
            await context.abort(status_of(error), str(error))
        except grpc.aio.InternalError:  # the call ended between the check and the abort
            raise asyncio.CancelledError from None
        raise AssertionError("context.abort returned")

    async def _parse_and_run(
        self,
        models: ModelRegistry,
        scope: RequestScope,
        method: str,
        received: RequestBytes,
        context: ServicerContext,
        request_type: type[M],
        work: Callable[[Target, M, float | None], Awaitable[R]],
    ) -> R:
        """The only frame that holds the parsed request (the scope drops it with the error).
        The request's model (or models) is held from here until it is answered."""
        try:
            request = parse_request(request_type, received.take())
        except InvalidRequest:
            log.info(
                "%s: refused %d bytes that are not a valid %s",
                method,
                received.size,
                request_type.DESCRIPTOR.full_name,
            )
            raise
        if self._requests.log_content:
            log.debug("%s request: %s", method, str(request)[:4096])
        name = getattr(request, "model", None) if request.HasField("model") else None
        weights = getattr(request, "reward_weights", None)
        with models.select(name, dict(weights) if weights else None) as target:
            if isinstance(target, Composite):
                scope.served_by(tuple(c.name for c in target.components))
            else:
                scope.served_by((target.name,))
            return await work(target, request, context.time_remaining())

    @rpc(reward_pb2.ScoreRequest)
    async def Score(
        self, target: Target, request: reward_pb2.ScoreRequest, timeout: float | None
    ) -> reward_pb2.ScoreResponse:
        pair = (require_text(request, "prompt", ""), require_text(request, "response", ""))
        if isinstance(target, Composite):
            parts = composite_options(target, request)
            (combined,) = await target.score([pair], parts, timeout, field="")
            return reward_pb2.ScoreResponse(
                **composite_fields(combined), model_version=target.model_version
            )
        core = target
        scores = await core.score([pair], timeout, field="")
        (served,) = core.served(scores, reward_options(core, request))
        return reward_pb2.ScoreResponse(
            **score_fields(served), model_version=core.model_version, model=core.name
        )

    @rpc(reward_pb2.ScoreBatchRequest)
    async def ScoreBatch(
        self, target: Target, request: reward_pb2.ScoreBatchRequest, timeout: float | None
    ) -> reward_pb2.ScoreBatchResponse:
        pairs = [
            (require_text(p, "prompt", f"pairs[{i}]."), require_text(p, "response", f"pairs[{i}]."))
            for i, p in enumerate(request.pairs)
        ]
        if isinstance(target, Composite):
            combined = await target.score(
                pairs, composite_options(target, request), timeout, field="pairs"
            )
            return reward_pb2.ScoreBatchResponse(
                results=[reward_pb2.ScoreResult(**composite_fields(c)) for c in combined],
                model_version=target.model_version,
            )
        core = target
        options = reward_options(core, request)
        scores = await core.score(pairs, timeout, field="pairs")
        served = core.served(scores, options)
        return reward_pb2.ScoreBatchResponse(
            results=[score_result(s) for s in served],
            model_version=core.model_version,
            model=core.name,
        )

    @rpc(reward_pb2.ScoreGroupRequest)
    async def ScoreGroup(
        self, target: Target, request: reward_pb2.ScoreGroupRequest, timeout: float | None
    ) -> reward_pb2.ScoreGroupResponse:
        prompt = require_text(request, "prompt", "")
        if not request.responses:
            raise InvalidRequest("responses: a group needs at least one response")
        if isinstance(target, Composite):
            parts = composite_options(target, request)
            combined = await target.score_group(prompt, request.responses, parts, timeout)
            results = [reward_pb2.ScoreResult(**composite_fields(c)) for c in combined]
            rewards = [c.reward for c in combined]
            version, name = target.model_version, ""
        else:
            core = target
            options = reward_options(core, request)
            scores = await core.score_group(prompt, request.responses, timeout)
            served = core.served(scores, options)
            results = [score_result(s) for s in served]
            rewards = [s.reward for s in served]
            version, name = core.model_version, core.name
        stats = group_stats(rewards)
        return reward_pb2.ScoreGroupResponse(
            results=results,
            mean=stats.mean,
            std=stats.std,
            advantages=stats.advantages,
            advantage_epsilon=stats.epsilon,
            model_version=version,
            model=name,
        )

    @rpc(reward_pb2.PreferRequest)
    async def Prefer(
        self, target: Target, request: reward_pb2.PreferRequest, timeout: float | None
    ) -> reward_pb2.PreferResponse:
        item = tuple(require_text(request, f, "") for f in ("prompt", "response_a", "response_b"))
        items = [(item[0], item[1], item[2])]
        if isinstance(target, Composite):
            (combined,) = await target.prefer(items, target.options(), timeout)
            return reward_pb2.PreferResponse(
                result=composite_prefer_result(combined), model_version=target.model_version
            )
        (preference,) = await target.prefer(items, timeout)
        return reward_pb2.PreferResponse(
            result=prefer_result(preference), model_version=target.model_version, model=target.name
        )

    @rpc(reward_pb2.PreferBatchRequest)
    async def PreferBatch(
        self, target: Target, request: reward_pb2.PreferBatchRequest, timeout: float | None
    ) -> reward_pb2.PreferBatchResponse:
        items = []
        for i, it in enumerate(request.items):
            where = f"items[{i}]."
            texts = [require_text(it, f, where) for f in ("prompt", "response_a", "response_b")]
            items.append((texts[0], texts[1], texts[2]))
        if isinstance(target, Composite):
            combined = await target.prefer(items, target.options(), timeout, field="items")
            return reward_pb2.PreferBatchResponse(
                results=[composite_prefer_result(p) for p in combined],
                model_version=target.model_version,
            )
        preferences = await target.prefer(items, timeout, field="items")
        return reward_pb2.PreferBatchResponse(
            results=[prefer_result(p) for p in preferences],
            model_version=target.model_version,
            model=target.name,
        )

    @rpc(reward_pb2.GetModelInfoRequest)
    async def GetModelInfo(
        self, target: Target, request: reward_pb2.GetModelInfoRequest, timeout: float | None
    ) -> reward_pb2.ModelInfo:
        assert isinstance(target, RewardCore)  # the request has no reward_weights
        models = self._models()
        assert models is not None  # the target came from it
        info = model_info(target, target.name == models.default)
        names = [models.default, *(n for n in models.names if n != models.default)]
        info.models.extend(model_info(models.core(n), n == models.default) for n in names)
        return info
