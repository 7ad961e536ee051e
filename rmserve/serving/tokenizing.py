"""Tokenising a request for the core: inline when small, else a chunk at a time on a worker
thread that stops once the caller left, and the errors that name the text too long to cut."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable

from rmserve.errors import DeadlineExpired
from rmserve.text.preprocess import PreparedPair
from rmserve.text.windows import UncuttableText

# Requests with more characters of text are tokenised on a worker thread (the Rust encoder
# releases the GIL), a chunk at a time (``Preprocessor.iter_many``), so no request stalls the
# event loop and one whose caller left stops between chunks. Smaller ones cost well under a
# millisecond, less than the hand-off.
INLINE_TOKENIZE_CHARS = 4096

Chunks = Callable[[], Iterable[list[PreparedPair]]]


def uncuttable_message(error: UncuttableText, field: str, rows_per_item: int) -> str:
    """Name the text: ``pairs[3].response``, ``items[1].response_b`` for Prefer, or just
    ``response`` for a request of one pair whose fields are its own (``field`` empty)."""
    part = error.part
    if rows_per_item == 2 and part == "response":
        part = ("response_a", "response_b")[error.row % 2]
    if not field:
        return f"{part}: {error.reason}"
    return f"{field}[{error.row // rows_per_item}].{part}: {error.reason}"


def text_chars(texts: Iterable[str]) -> int:
    return sum(len(text) for text in texts)


def uncuttable_group_message(error: UncuttableText, field: str) -> str:
    """Name the text of a group: ``prompt``, or ``responses[3]``."""
    where = "prompt" if error.part == "prompt" else f"{field}[{error.row}]"
    return f"{where}: {error.reason}"


def tokenize_chunks(
    prepare: Chunks, stop: threading.Event, deadline: float | None, clock: Callable[[], float]
) -> list[PreparedPair]:
    """Every chunk of ``prepare``, checking before each one that the caller still waits."""
    prepared: list[PreparedPair] = []
    chunks = iter(prepare())
    while True:
        if stop.is_set():
            raise asyncio.CancelledError  # nobody awaits it: the caller left
        if deadline is not None and clock() >= deadline:
            raise DeadlineExpired("deadline passed while the request was being tokenised")
        chunk = next(chunks, None)
        if chunk is None:
            return prepared
        prepared += chunk
