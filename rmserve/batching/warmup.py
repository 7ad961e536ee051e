"""The batches that warm the engine up before SERVING.

CPU: a short and a max-length pair, each alone and in a batch as full as the caps allow (what
the first requests look like; the CPU provider allocates per run and compiles nothing).

CUDA: every shape class the batcher can form, a grid (rows 1, 2, 4, ... up to
``max_batch_size``, padded length 16, 32, ... up to ``max_length``, within
``max_batch_tokens``), largest first. What a first run of a shape costs on onnxruntime's CUDA
provider is memory: its arena grows to the largest batch once (largest first, so later batches
are carved out of that block, ``arena_extend_strategy`` kSameAsRequested) and cuBLAS / cuDNN
set up their handles and workspaces. Nothing is compiled per exact shape (no CUDA graphs, no
TensorRT; cuDNN searches algorithms by heuristics, ``providers.cuda_options``), so a length
between two grid points needs no warm-up of its own, and lengths are NOT padded to buckets:
padding would add compute to every batch for a cost that is paid once. ``bench/gpu_check.py``
measures the first run of an unseen shape after warm-up against its later runs, to check this.
"""

from __future__ import annotations

import numpy as np

from rmserve.batching.collect import BatchLimits
from rmserve.text.preprocess import PreparedPair

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


def warmup_batches(
    short: PreparedPair, long: PreparedPair, limits: BatchLimits, every_shape: bool
) -> list[list[PreparedPair]]:
    """The warm-up batches; ``long`` is a pair of ``max_length`` tokens. With ``every_shape``
    (CUDA), the batcher's whole shape grid, largest padded batch first."""
    if not every_shape:
        batches: list[list[PreparedPair]] = []
        for pair in (short, long):
            batches += [[pair], [pair] * full_rows(limits, pair.num_tokens)]
        return batches
    shapes = [
        (rows, length)
        for length in grid_lengths(long.num_tokens)
        for rows in grid_rows(limits.max_batch_size)
        if rows == 1 or rows <= full_rows(limits, length)
    ]
    shapes.sort(key=lambda shape: (shape[0] * shape[1], shape[1]), reverse=True)
    return [[cut(long, length)] * rows for rows, length in shapes]
