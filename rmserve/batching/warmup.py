"""The batches that warm the engine up before SERVING, shortest first, within a time budget.

Order: the short pair (alone, then as full a batch as the caps allow), then each padded length of
the grid 16, 32, 64, ... up to ``max_length``, ascending; at each length the fullest batch first,
then smaller ones. On CUDA every row class of the grid (1, 2, 4, ... up to ``max_batch_size``,
within ``max_batch_tokens``); on a CPU the fullest batch and a lone pair.

The budget (``warm_up``): each shape runs ``runs`` times before the next; a shape starts only if
it is predicted to end within ``budget_s`` of the start (the last shape's seconds scaled by padded
tokens; the first shape always runs). Once one does not fit, it and every later, longer shape are
skipped and reported: on a long-context decoder the max-length shapes can take minutes, and the
first request of a skipped shape pays its first-run cost instead.

What a first run of a shape costs on onnxruntime's CUDA provider is memory: its arena grows to
the largest batch (``arena_extend_strategy`` kSameAsRequested) and cuBLAS / cuDNN set up their
handles and workspaces. Nothing is compiled per exact shape (no CUDA graphs, no TensorRT; cuDNN
searches algorithms by heuristics, ``providers.cuda_options``), so a length between two grid
points needs no warm-up of its own, and lengths are NOT padded to buckets: padding would add
compute to every batch for a cost that is paid once. ``bench/gpu_check.py`` measures the first
run of an unseen shape after warm-up against its later runs, to check this. The CPU provider
compiles nothing; its arena grows as the shapes do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rmserve.batching.collect import BatchLimits
from rmserve.text.preprocess import PreparedPair, Preprocessor

MIN_GRID_LENGTH = 16


def grid_rows(max_batch_size: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to ``max_batch_size`` (included)."""
    rows = [1 << i for i in range(max_batch_size.bit_length()) if 1 << i <= max_batch_size]
    if rows[-1] != max_batch_size:
        rows.append(max_batch_size)
    return tuple(rows)


def grid_lengths(max_length: int) -> tuple[int, ...]:
    """16, 32, 64, ... up to ``max_length`` (included); just ``max_length`` if it is shorter."""
    lengths = []
    n = MIN_GRID_LENGTH
    while n < max_length:
        lengths.append(n)
        n *= 2
    lengths.append(max_length)
    return tuple(lengths)


def cut(pair: PreparedPair, length: int) -> PreparedPair:
    """``pair``'s first ``length`` tokens (a batch of a given shape, not a meaningful pair)."""
    return PreparedPair(pair.input_ids[:length], pair.token_type_ids[:length], False, False)


def tiled(pair: PreparedPair, length: int) -> PreparedPair:
    """``pair``'s tokens repeated to exactly ``length`` (a shape, not a meaningful pair): a
    long model's max_length in text would pass the preprocessor's per-text character limit."""
    ids = np.resize(pair.input_ids, length)
    types = np.resize(pair.token_type_ids, length)
    return PreparedPair(ids, types, False, False)


def full_rows(limits: BatchLimits, length: int) -> int:
    """Rows of the fullest batch of pairs this long that the caps allow (at least one)."""
    cap = limits.max_batch_tokens or limits.max_batch_size * length
    return max(1, min(limits.max_batch_size, cap // length))


Shape = tuple[int, int]  # (rows, padded length)


def shape_of(batch: Sequence[PreparedPair]) -> Shape:
    return len(batch), max(p.num_tokens for p in batch)


def warmup_batches(
    short: PreparedPair, long: PreparedPair, limits: BatchLimits, every_shape: bool
) -> list[list[PreparedPair]]:
    """The warm-up batches, shortest first; ``long`` is a pair of ``max_length`` tokens. With
    ``every_shape`` (CUDA), every row class of the batcher's grid at each length."""
    batches = [[short] * rows for rows in _rows_at(short.num_tokens, limits, every_shape=False)]
    for length in grid_lengths(long.num_tokens):
        pair = cut(long, length)
        batches += [[pair] * rows for rows in _rows_at(length, limits, every_shape)]
    return batches


def warmup_batches_for(
    preprocessor: Preprocessor, limits: BatchLimits, every_shape: bool
) -> list[list[PreparedPair]]:
    """``warmup_batches`` of a model that reads pairs with ``preprocessor``: a short pair and
    one tiled to its ``max_length``."""
    short = preprocessor.prepare("warm-up prompt", "warm-up response")
    long = tiled(preprocessor.prepare("", "warm up " * 64), preprocessor.config.max_length)
    return warmup_batches(short, long, limits, every_shape)


def _rows_at(length: int, limits: BatchLimits, every_shape: bool) -> list[int]:
    """Row counts warmed at one padded length, most first."""
    full = full_rows(limits, length)
    rows = [r for r in grid_rows(limits.max_batch_size) if r <= full] if every_shape else [1]
    return sorted({full, *rows}, reverse=True)


@dataclass(frozen=True)
class WarmupReport:
    ran: list[Shape]
    skipped: list[Shape]  # over the budget: their first request pays their first-run cost
    seconds: float


def warm_up(
    score: Callable[[list[PreparedPair]], object],
    batches: Sequence[list[PreparedPair]],
    runs: int,
    budget_s: float,
    clock: Callable[[], float],
) -> WarmupReport:
    """Run each batch ``runs`` times, in order, while the next is predicted to fit
    ``budget_s``; the first always runs. ``clock``: seconds (a test moves a fake one)."""
    start = clock()
    ran: list[Shape] = []
    last: tuple[int, float] | None = None  # the last shape's padded tokens and seconds
    for index, batch in enumerate(batches):
        rows, length = shape_of(batch)
        if last is not None:
            predicted = last[1] * rows * length / last[0]
            if clock() - start + predicted > budget_s:
                return WarmupReport(ran, [shape_of(b) for b in batches[index:]], clock() - start)
        began = clock()
        for _ in range(runs):
            score(batch)
        last = (rows * length, clock() - began)
        ran.append((rows, length))
    return WarmupReport(ran, [], clock() - start)
