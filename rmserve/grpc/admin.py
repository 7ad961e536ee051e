"""The gRPC adapter of the operator calls (``rmserve.v1.ModelAdmin``): a version swap."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
from grpc.aio import ServicerContext

from rmserve.grpc.service import code_label, status_of
from rmserve.observability.metrics import Metrics
from rmserve.serving.models import ModelRegistry
from rmserve.serving.request_scope import RequestScopes
from rmserve.serving.swap_result import SwapResult
from rmserve.v1 import reward_pb2, reward_pb2_grpc

Swap = Callable[[str, str], Awaitable[SwapResult]]
NO_TOKEN = (
    "model swaps are refused on a server without auth_token: they change what it serves, so "
    "only a caller holding its bearer token may (docs/guides/serving.md#version-swap)"
)


class ModelAdminServicer(reward_pb2_grpc.ModelAdminServicer):
    """``swap``: the server's swap (None when the server has no auth token: refused)."""

    def __init__(
        self, models: Callable[[], ModelRegistry | None], swap: Swap | None, metrics: Metrics
    ) -> None:
        self._requests = RequestScopes(models, metrics, code_label)
        self._swap = swap

    async def SwapModel(
        self, request: reward_pb2.SwapModelRequest, context: ServicerContext
    ) -> reward_pb2.SwapModelResponse:
        if self._swap is None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, NO_TOKEN)
            raise AssertionError("context.abort returned")
        with self._requests.open("SwapModel") as scope:
            done = await self._swap(request.model, request.artifact)
            return reward_pb2.SwapModelResponse(
                model=done.model,
                old_version=done.old_version,
                new_version=done.new_version,
                load_seconds=done.load_seconds,
                drain_seconds=done.drain_seconds,
            )
        assert scope.error is not None
        if context.done():
            raise asyncio.CancelledError
        await context.abort(status_of(scope.error), str(scope.error))
        raise AssertionError("context.abort returned")


def add_admin_service(servicer: ModelAdminServicer, server: grpc.aio.Server) -> None:
    reward_pb2_grpc.add_ModelAdminServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
