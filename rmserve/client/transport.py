"""How one attempt reaches the server: the only code that differs between the two faces.

``AioTransport`` awaits a ``grpc.aio`` call. ``FutureTransport`` starts a call on a blocking
``grpc`` channel (so ``RewardClient`` keeps taking ``grpc.UnaryUnaryClientInterceptor`` objects)
and awaits its ``grpc.Future`` on the running event loop. Both raise ``grpc.RpcError`` (with
``code()``, ``details()``, ``trailing_metadata()``) for a failed attempt, so retry and error
mapping (``rmserve.client.caller``) are written once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Protocol

import grpc

from rmserve.client.channel import channel_options, resolve_target, tls_credentials
from rmserve.client.settings import ClientSettings
from rmserve.v1 import reward_pb2_grpc

Metadata = tuple[tuple[str, str], ...]


class Transport(Protocol):
    target: str  # the resolved gRPC target URI

    async def call(self, method: str, request: Any, timeout: float, metadata: Metadata) -> Any:
        """One attempt of ``RewardService/<method>``; raises ``grpc.RpcError`` on failure."""
        ...

    async def close(self) -> None: ...


def open_channel(
    module: ModuleType, settings: ClientSettings, credentials: Any, **kwargs: Any
) -> Any:
    """A ``module`` (``grpc`` or ``grpc.aio``) channel to the settings' target: TLS from
    ``credentials``, else from the settings, else plaintext."""
    credentials = credentials if credentials is not None else tls_credentials(settings)
    target, options = resolve_target(settings.target), channel_options(settings)
    if credentials is None:
        return module.insecure_channel(target, options=options, **kwargs)
    return module.secure_channel(target, credentials, options=options, **kwargs)


class AioTransport:
    """``grpc.aio``; the channel is opened on first use, inside the caller's event loop."""

    def __init__(
        self, settings: ClientSettings, credentials: Any, interceptors: Sequence[Any]
    ) -> None:
        self.target = resolve_target(settings.target)
        self._settings = settings
        self._credentials = credentials
        self._interceptors = list(interceptors)
        self._channel: Any = None
        self._stub: Any = None

    async def call(self, method: str, request: Any, timeout: float, metadata: Metadata) -> Any:
        if self._stub is None:
            self._channel = open_channel(
                grpc.aio, self._settings, self._credentials, interceptors=self._interceptors
            )
            self._stub = reward_pb2_grpc.RewardServiceStub(self._channel)
        return await getattr(self._stub, method)(request, timeout=timeout, metadata=metadata)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None


class FutureTransport:
    """A blocking ``grpc`` channel whose calls are awaited as futures on the running loop."""

    def __init__(
        self, settings: ClientSettings, credentials: Any, interceptors: Sequence[Any]
    ) -> None:
        self.target = resolve_target(settings.target)
        self._channel = open_channel(grpc, settings, credentials)
        channel = grpc.intercept_channel(self._channel, *interceptors) if interceptors else None
        self._stub = reward_pb2_grpc.RewardServiceStub(channel or self._channel)

    async def call(self, method: str, request: Any, timeout: float, metadata: Metadata) -> Any:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        call = getattr(self._stub, method).future(request, timeout=timeout, metadata=metadata)

        def settle(done: Any) -> None:  # on the loop: copy the gRPC outcome into ``waiter``
            if waiter.done() or done.cancelled():
                return
            error = done.exception()
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(done.result())

        def on_done(done: Any) -> None:  # on a gRPC thread (or right here, if already done)
            with contextlib.suppress(RuntimeError):  # the loop closed while the call was out
                loop.call_soon_threadsafe(settle, done)

        call.add_done_callback(on_done)
        try:
            return await waiter
        except asyncio.CancelledError:
            call.cancel()  # our own cancellation (another chunk failed, close(), Ctrl-C)
            raise

    async def close(self) -> None:
        self._channel.close()
