"""Tokenising a request for the core: inline when small, else a chunk at a time on a worker
thread that stops once the caller left, and the errors that name the text too long to cut."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from functools import partial

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


def first_truncated(prepared: Sequence[PreparedPair]) -> int | None:
    """The row of the first pair that was cut to fit max_length, or None."""
    return next((row for row, pair in enumerate(prepared) if pair.truncated), None)


def refused_message(
    pair: PreparedPair, row: int, field: str, rows_per_item: int, max_length: int, group: bool
) -> str:
    """Why a pair over max_length is refused (truncation 'refuse'), naming it as the other
    errors do: ``pairs[3]``, ``items[1].response_b``, ``responses[2]``, or ``the pair`` for a
    request of one pair whose fields are its own (``field`` empty)."""
    if not field:
        where = "the pair"
    elif group or rows_per_item == 1:
        where = f"{field}[{row // rows_per_item}]"
    else:
        where = f"{field}[{row // rows_per_item}].{('response_a', 'response_b')[row % 2]}"
    tokens = pair.untruncated_tokens
    count = f"at least {tokens}" if pair.untruncated_at_least else str(tokens)
    return (
        f"{where}: {count} tokens (prompt and response with the model's special tokens) is over "
        f"max_length={max_length}, and this server refuses to truncate (truncation=refuse); "
        "shorten it, or serve with truncation=cut"
    )


def text_chars(texts: Iterable[str]) -> int:
    return sum(len(text) for text in texts)


def uncuttable_group_message(error: UncuttableText, field: str) -> str:
    """Name the text of a group: ``prompt``, or ``responses[3]``."""
    where = "prompt" if error.part == "prompt" else f"{field}[{error.row}]"
    return f"{where}: {error.reason}"


async def tokenize(
    chars: int,
    prepare: Chunks,
    deadline: float | None,
    clock: Callable[[], float],
    executor: Executor,
) -> list[PreparedPair]:
    """Inline up to INLINE_TOKENIZE_CHARS, else on an ``executor`` thread, which stops between
    chunks once the caller cancelled (``CancelledError`` here) or the deadline passed
    (``DeadlineExpired``)."""
    if chars <= INLINE_TOKENIZE_CHARS:
        return [pair for chunk in prepare() for pair in chunk]
    stop = threading.Event()
    work = partial(tokenize_chunks, prepare, stop, deadline, clock)
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(executor, work)
    except asyncio.CancelledError:
        stop.set()
        raise


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
