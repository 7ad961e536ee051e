"""Test helpers for the client tests: interceptors that count or alter requests on the wire,
and one way to drive either client face from an async test."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc

from rmserve.client import AsyncRewardClient, RewardClient

FACES = ("async", "sync")


def _name(details: Any) -> str:
    method = details.method
    text = method.decode() if isinstance(method, bytes) else str(method)
    return text.rsplit("/", 1)[-1]


class Counting(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Counts attempts per RPC name; ``alter`` may edit a request before it is sent.
    ``blocking()`` is the same counter as a ``grpc.UnaryUnaryClientInterceptor``."""

    def __init__(self, alter: Callable[[str, Any], None] | None = None) -> None:
        self.calls: Counter[str] = Counter()
        self.requests: list[tuple[str, Any]] = []
        self._alter = alter

    def record(self, details: Any, request: Any) -> None:
        name = _name(details)
        self.calls[name] += 1
        if self._alter is not None:
            self._alter(name, request)
        self.requests.append((name, request))

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        self.record(details, request)
        return await continuation(details, request)

    def blocking(self) -> grpc.UnaryUnaryClientInterceptor:
        counting = self

        class BlockingCounting(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
            def intercept_unary_unary(
                self, continuation: Callable[..., Any], details: Any, request: Any
            ) -> Any:
                counting.record(details, request)
                return continuation(details, request)

        return BlockingCounting()


class Blocking:
    """An async view of a ``RewardClient``: each method runs in a worker thread, because the
    test's event loop also runs the server."""

    def __init__(self, client: RewardClient) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
        if not callable(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(attribute, *args, **kwargs)

        return call

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.client.close)


def open_client(face: str, target: str, counter: Counting | None = None, **options: Any) -> Any:
    """``AsyncRewardClient`` (face "async") or ``RewardClient`` ("sync"), used the same way:
    ``async with open_client(face, target) as c: await c.score(...)``."""
    if face == "async":
        return AsyncRewardClient(target, interceptors=[counter] if counter else [], **options)
    interceptors = [counter.blocking()] if counter else []
    return Blocking(RewardClient(target, interceptors=interceptors, **options))
