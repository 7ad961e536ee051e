"""Live progress of a bounded run on stderr: a one-line bar on a terminal, plain log lines
elsewhere (a CI log or a file never fills with carriage returns). No dependency: a tiny bar."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol, TextIO

log = logging.getLogger("rmserve.tools.loadtest")

BAR_WIDTH = 24


class Progress(Protocol):
    interval_s: float  # how often the run reports

    def update(
        self, fraction: float, elapsed_s: float, requests: int, pairs: int, codes: Mapping[str, int]
    ) -> None: ...

    def close(self) -> None: ...


def status_text(elapsed_s: float, requests: int, pairs: int, codes: Mapping[str, int]) -> str:
    rate = pairs / elapsed_s if elapsed_s > 0 else 0.0
    shown = " ".join(f"{code}={n}" for code, n in sorted(codes.items())) or "-"
    return f"{elapsed_s:6.1f}s  {requests} requests  {rate:8.1f} pairs/s  {shown}"


def bar_text(fraction: float, status: str) -> str:
    fraction = min(1.0, max(0.0, fraction))
    filled = round(fraction * BAR_WIDTH)
    return f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {fraction:4.0%}  {status}"


class TerminalBar:
    """Redraws one line in place (``\\r``)."""

    interval_s = 0.2

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._width = 0

    def update(
        self, fraction: float, elapsed_s: float, requests: int, pairs: int, codes: Mapping[str, int]
    ) -> None:
        text = bar_text(fraction, status_text(elapsed_s, requests, pairs, codes))
        self._stream.write("\r" + text.ljust(self._width))
        self._stream.flush()
        self._width = len(text)

    def close(self) -> None:
        self._stream.write("\n")
        self._stream.flush()


class LogLines:
    """One INFO log line every ``interval_s``."""

    def __init__(self, interval_s: float = 5.0) -> None:
        self.interval_s = interval_s

    def update(
        self, fraction: float, elapsed_s: float, requests: int, pairs: int, codes: Mapping[str, int]
    ) -> None:
        log.info("%3.0f%%  %s", 100 * fraction, status_text(elapsed_s, requests, pairs, codes))

    def close(self) -> None:
        pass
