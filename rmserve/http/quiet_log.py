"""aiohttp's server log, quiet about clients' mistakes.

aiohttp logs every request it cannot parse (a bad Content-Length, a 100 KB URL, a thousand
headers, a bad chunk size) at ERROR with a full traceback on its ``aiohttp.server`` logger. A
malformed request is the client's mistake, answered 400 by aiohttp itself: here it becomes one
WARNING line, at most one per ``every_seconds`` (the rest are counted and the count is given on
the next line). Anything else aiohttp reports keeps its ERROR and traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError


class RateLimitedLine:
    """One log line per ``every_seconds`` at most; the lines left out are counted."""

    def __init__(
        self, log: logging.Logger, every_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._log = log
        self._every = every_seconds
        self._clock = clock
        self._next = float("-inf")
        self.left_out = 0

    def warning(self, message: str, *args: object) -> None:
        now = self._clock()
        if now < self._next:
            self.left_out += 1
            return
        self._next = now + self._every
        if self.left_out:
            message += " (%d more such requests since the last line)"
            args = (*args, self.left_out)
            self.left_out = 0
        self._log.warning(message, *args)


class QuietServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The ``logger`` aiohttp's request handler is given: its ``exception`` on a malformed
    request is one rate-limited WARNING line without a traceback."""

    def __init__(self, logger: logging.Logger, every_seconds: float = 10.0) -> None:
        super().__init__(logger, {})
        self.malformed = RateLimitedLine(logger, every_seconds)

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            reason = exc_info.message or type(exc_info).__name__
            text = str(msg) % args if args else str(msg)
            self.malformed.warning("malformed HTTP request answered %d: %s (%s)",
                                   exc_info.code, reason.splitlines()[0][:200], text)  # fmt: skip
            return
        self.logger.error(msg, *args, exc_info=exc_info, **kwargs)
