"""A ``RewardService`` front on 127.0.0.1 that answers the first attempts with scripted
failures (status code and optional retry pushback), then forwards to a real server. It records
when each attempt arrived, so backoff can be checked from the server's side."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc

from rmserve.v1 import reward_pb2, reward_pb2_grpc

SERVICE = "rmserve.v1.RewardService"
MESSAGES: dict[str, tuple[Any, Any]] = {
    "Score": (reward_pb2.ScoreRequest, reward_pb2.ScoreResponse),
    "ScoreBatch": (reward_pb2.ScoreBatchRequest, reward_pb2.ScoreBatchResponse),
    "Prefer": (reward_pb2.PreferRequest, reward_pb2.PreferResponse),
    "PreferBatch": (reward_pb2.PreferBatchRequest, reward_pb2.PreferBatchResponse),
    "GetModelInfo": (reward_pb2.GetModelInfoRequest, reward_pb2.ModelInfo),
}


@dataclass(frozen=True)
class Failure:
    code: grpc.StatusCode
    pushback_ms: int | None = None


class FlakyFront:
    def __init__(self, backend: str, failures: Sequence[Failure]) -> None:
        self._backend = backend
        self._failures = list(failures)
        self.arrivals: list[tuple[str, float]] = []  # (method, time.monotonic())

    def _handler(self, name: str) -> Any:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self.arrivals.append((name, time.monotonic()))
            if self._failures:
                failure = self._failures.pop(0)
                if failure.pushback_ms is not None:
                    context.set_trailing_metadata(
                        (("grpc-retry-pushback-ms", str(failure.pushback_ms)),)
                    )
                await context.abort(failure.code, f"scripted {failure.code.name}")
            return await getattr(self._stub, name)(request, timeout=context.time_remaining())

        return handle

    async def __aenter__(self) -> FlakyFront:
        self._channel = grpc.aio.insecure_channel(self._backend)
        self._stub: Any = reward_pb2_grpc.RewardServiceStub(self._channel)
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._handler(name),
                request_deserializer=request.FromString,
                response_serializer=reply.SerializeToString,
            )
            for name, (request, reply) in MESSAGES.items()
        }
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        self.target = f"127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._server.stop(None)
        await self._channel.close()
