"""What the sync and asyncio clients share: settings, deadlines, retry policy, chunk limits."""

from __future__ import annotations

import random
import time
from typing import Any

import grpc

from rmserve.client.channel import call_metadata, channel_options, resolve_target, tls_credentials
from rmserve.client.errors import DeadlineExceededError
from rmserve.client.plan import RetryPolicy
from rmserve.client.settings import ClientSettings


def build_settings(
    target: str | None, settings: ClientSettings | None, overrides: dict[str, Any]
) -> ClientSettings:
    values: dict[str, Any] = settings.model_dump(exclude_unset=True) if settings else {}
    values.update(overrides)
    if target is not None:
        values["target"] = target
    return ClientSettings(**values)


class ClientBase:
    def __init__(
        self,
        target: str | None,
        settings: ClientSettings | None,
        credentials: Any,
        overrides: dict[str, Any],
    ) -> None:
        self.settings = s = build_settings(target, settings, overrides)
        self.target = resolve_target(s.target)
        self._credentials = credentials if credentials is not None else tls_credentials(s)
        self._options = channel_options(s)
        self._metadata = call_metadata(s)
        self._retry = RetryPolicy(s.max_attempts, s.initial_backoff, s.max_backoff)
        self._rng = random.Random()
        self._max_request_pairs: int | None = None  # the server's, from GetModelInfo

    def _deadline(self, timeout: float | None) -> float:
        seconds = self.settings.timeout if timeout is None else timeout
        if seconds <= 0:
            raise ValueError(f"timeout must be positive, got {seconds}")
        return time.monotonic() + seconds

    @staticmethod
    def _remaining(deadline: float, attempts: int) -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceededError(
                f"DEADLINE_EXCEEDED: deadline passed after {attempts} attempts",
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "deadline passed before the request could be (re)sent",
                attempts,
            )
        return remaining

    def _chunk_items(self) -> int:
        server = self._max_request_pairs or self.settings.max_chunk_pairs
        return max(1, min(server, self.settings.max_chunk_pairs))
