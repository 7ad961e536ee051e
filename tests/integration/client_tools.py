"""Test helpers for the client tests: interceptors that count or alter requests on the wire."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc


def _name(details: Any) -> str:
    method = details.method
    text = method.decode() if isinstance(method, bytes) else str(method)
    return text.rsplit("/", 1)[-1]


class Counting(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Counts attempts per RPC name; ``alter`` may edit a request before it is sent."""

    def __init__(self, alter: Callable[[str, Any], None] | None = None) -> None:
        self.calls: Counter[str] = Counter()
        self.requests: list[tuple[str, Any]] = []
        self._alter = alter

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        name = _name(details)
        self.calls[name] += 1
        if self._alter is not None:
            self._alter(name, request)
        self.requests.append((name, request))
        return await continuation(details, request)
