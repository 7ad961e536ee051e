"""Domain errors of the serving core. Protocol adapters map each to a status code in one place."""

from __future__ import annotations

import logging
import traceback


class RewardError(Exception):
    """Base of every error the core reports to a caller; the message is for the caller."""


class InvalidRequest(RewardError):
    """The request is malformed (names the field and index); it never joined a batch."""


class Overloaded(RewardError):
    """The queue is full; the request was not queued. Retry after ``retry_after_ms``."""

    def __init__(self, message: str, retry_after_ms: int) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class Unavailable(RewardError):
    """The server is loading, warming up or draining."""


class DeadlineExpired(RewardError):
    """The caller's deadline passed while the request waited; it was never computed."""


class EngineFailure(RewardError):
    """The engine failed on the batch holding this request; other batches are unaffected."""


def log_unexpected(logger: logging.Logger, where: str, error: BaseException, content: bool) -> None:
    """Log a bug in a request handler. Its message may quote request text, so unless the
    ``log_request_content`` debug setting (``content``) is on, only the type and frames are kept."""
    if content:
        logger.error("%s failed", where, exc_info=error)
        return
    frames = "".join(traceback.format_tb(error.__traceback__))
    logger.error(
        "%s failed with %s (message withheld: it may quote request text; set "
        "log_request_content to see it)\n%s",
        where,
        type(error).__name__,
        frames.rstrip(),
    )


class Refused(RewardError):
    """A valid operator request the server's state does not allow now (a model swap the memory
    cannot hold, an artifact that fails its checks, another swap running)."""
