"""Exceptions raised by the reward clients: one per thing a caller can do something about."""

from __future__ import annotations

import re
from typing import Any

import grpc

# Server messages name the bad entry as ``pairs[3].prompt`` or ``items[0].response_b``.
_ENTRY = re.compile(r"\b(pairs|items)\[(\d+)\](?:\.(\w+))?")


class RewardClientError(Exception):
    """A reward call failed. ``code`` is the final gRPC status, ``attempts`` how many were made."""

    def __init__(self, message: str, code: Any, details: str, attempts: int) -> None:
        super().__init__(message)
        self.code = code
        self.details = details
        self.attempts = attempts


class InvalidRequestError(RewardClientError, ValueError):
    """``INVALID_ARGUMENT``: never retried. ``index`` is the bad pair's position in the caller's
    input (``None`` when the server named no entry) and ``field`` the bad field, if named;
    ``details`` is the server's own message (whose index is relative to one chunk)."""

    def __init__(
        self, message: str, details: str, attempts: int, index: int | None, field: str | None
    ) -> None:
        super().__init__(message, grpc.StatusCode.INVALID_ARGUMENT, details, attempts)
        self.index = index
        self.field = field


class DeadlineExceededError(RewardClientError, TimeoutError):
    """The call's deadline passed (in transit, in the server's queue, or before a retry)."""


def from_rpc_error(
    code: Any, details: str, attempts: int, offset: int, count: int
) -> RewardClientError:
    """The client exception for a failed request covering input entries [offset, offset+count)."""
    details = details or ""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        match = _ENTRY.search(details)
        if match is not None:
            index: int | None = offset + int(match.group(2))
            field = match.group(3)
            where = f"{match.group(1)}[{index}]" + (f".{field}" if field else "")
            message = details[: match.start()] + where + details[match.end() :]
        else:
            index = offset if count == 1 else None
            field = None
            message = details if index is None else f"pair {index}: {details}"
        return InvalidRequestError(f"INVALID_ARGUMENT: {message}", details, attempts, index, field)
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    message = f"{getattr(code, 'name', code)}{tries}: {details}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceededError(message, code, details, attempts)
    return RewardClientError(message, code, details, attempts)
