"""Admission by memory: the bytes of requests in flight are bounded, as queued pairs are.

A request is charged its size on the wire from before it is parsed until it is answered; the
memory it can make the server hold (its bytes, the parsed message, its texts and token ids) is
taken as ``REQUEST_BYTES_FACTOR`` times that, the tokenizer's own work being bounded apart (the
whole bound is checked against a real server's RSS in tests/reliability). Over the
budget a request is refused with ``Overloaded`` (RESOURCE_EXHAUSTED / 429 with a retry hint),
exactly like a full queue. The last ``SMALL_REQUEST_RESERVE_BYTES`` of the budget are kept for
requests of at most ``SMALL_REQUEST_BYTES``, so big requests never starve single ``Score`` calls.

The memory a server needs (``required_memory_bytes``) is the documented formula the Kubernetes
overlays are checked against:

    base runtime + MODEL_LOAD_FACTOR x model files + REQUEST_BYTES_FACTOR x max_inflight_bytes
    + max_queue_pairs x (max_length x QUEUED_TOKEN_BYTES + QUEUED_PAIR_BYTES) + tokenizer workspace
    + the engine's activations (on the CPU; on CUDA they live in device memory)

The tokenizer workspace is what tokenising one text costs, at most WHOLE_TEXT_MAX_CHARS x
TOKENIZER_BYTES_PER_CHAR (longer texts are windowed or refused, ``rmserve.text.windows``), on
each of the TOKENIZE_WORKERS threads and the event loop.

The activations (``activation_bytes``): every engine worker runs one batch at once. A batch of
``tokens`` padded tokens, padded to ``length``, holds (ACTIVATION_CONSTANT x ``activation_width``
+ ``retained_kv_width``) x tokens x bytes per element, the width being what one layer keeps alive
at its peak (4 x hidden + the Q, K and V projections + 3 x the MLP width; with materialised
attention also 2 x heads x length, its scores and probabilities), the retained K/V what a fused
attention keeps of every layer to the run's end (layers x 2 x kv_heads x head_dim). The long
batches (at most ``long_batch_slots``) hold a Prefer's two max-length pairs, 2 x max_length
tokens; the others max_batch_tokens. Artifacts whose manifest records no ``shape`` get
``assumed_shape``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from rmserve.errors import Overloaded
from rmserve.text.windows import WHOLE_TEXT_MAX_CHARS

MIB = 1024 * 1024
SMALL_REQUEST_BYTES = 64 * 1024
SMALL_REQUEST_RESERVE_BYTES = 1 * MIB
# Python, gRPC, onnxruntime, tokenizers and numpy loaded, before the model (measured idle RSS
# of a server with an 8 MB model was 129 MiB on x86_64; the margin covers other platforms).
BASE_RUNTIME_BYTES = 192 * MIB
# onnxruntime reads the model file and builds its initializers from it.
MODEL_LOAD_FACTOR = 2.0
# Memory one in-flight request holds per byte of it on the wire (bytes, message, texts, ids).
REQUEST_BYTES_FACTOR = 8.0
# A queued pair's token ids and type ids: two int64 numpy arrays, 8 bytes per token each.
QUEUED_TOKEN_BYTES = 16
# Per queued pair on top of that: the two arrays' objects and allocations and the PreparedPair
# (tracemalloc: 297 bytes for a pair of any length, numpy 2 on x86_64; with malloc's headers and
# the queue's pointer to it ~400, rounded up).
QUEUED_PAIR_BYTES = 512
# Threads that tokenise big requests (small ones are tokenised on the event loop).
TOKENIZE_WORKERS = 2
# The tokenizer's peak per character of one text it is given whole (alignments, offsets, token
# strings): measured up to ~290 with a byte-level BPE on 1 Mi characters of short words.
TOKENIZER_BYTES_PER_CHAR = 320
TOKENIZER_WORKSPACE_BYTES = (TOKENIZE_WORKERS + 1) * WHOLE_TEXT_MAX_CHARS * TOKENIZER_BYTES_PER_CHAR
CGROUP_MEMORY_FILES = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)
NO_CGROUP_LIMIT = 1 << 60  # cgroup v1 reports "unlimited" as a huge number


def fixed_memory_bytes(
    model_bytes: int, max_queue_pairs: int, max_length: int, activations: int = 0
) -> int:
    """What the server holds apart from requests in flight: runtime, model, queued tokens,
    tokenizer workspace, and ``activations`` (``activation_bytes``)."""
    return int(
        BASE_RUNTIME_BYTES
        + MODEL_LOAD_FACTOR * model_bytes
        + max_queue_pairs * (max_length * QUEUED_TOKEN_BYTES + QUEUED_PAIR_BYTES)
        + TOKENIZER_WORKSPACE_BYTES
        + activations
    )


def required_memory_bytes(
    model_bytes: int,
    max_inflight_bytes: int,
    max_queue_pairs: int,
    max_length: int,
    activations: int = 0,
) -> int:
    """The documented bound on the server's memory for these settings and this model."""
    return fixed_memory_bytes(model_bytes, max_queue_pairs, max_length, activations) + int(
        REQUEST_BYTES_FACTOR * max_inflight_bytes
    )


def smallest_inflight_bytes(max_message_bytes: int) -> int:
    """A budget that always admits one request of ``max_message_bytes`` beside small calls."""
    return max_message_bytes + SMALL_REQUEST_RESERVE_BYTES


def inflight_bytes_for(
    memory_limit: int,
    model_bytes: int,
    max_queue_pairs: int,
    max_length: int,
    activations: int = 0,
) -> int:
    """The largest ``max_inflight_bytes`` whose ``required_memory_bytes`` fits the limit."""
    spare = memory_limit - fixed_memory_bytes(model_bytes, max_queue_pairs, max_length, activations)
    return max(0, int(spare / REQUEST_BYTES_FACTOR))


def cgroup_memory_limit(files: tuple[Path, ...] = CGROUP_MEMORY_FILES) -> int | None:
    """The container's memory limit in bytes, or None where there is none."""
    for file in files:
        try:
            text = file.read_text(encoding="ascii").strip()
        except OSError:
            continue
        if text == "max" or not text.isdigit():
            return None
        limit = int(text)
        return None if limit >= NO_CGROUP_LIMIT else limit
    return None


class RequestBytesBudget:
    """Bytes of requests admitted and not yet answered, against ``limit``."""

    def __init__(self, limit: int, on_change: Callable[[int], None] = lambda _: None) -> None:
        if limit < SMALL_REQUEST_RESERVE_BYTES + 1:
            raise ValueError(f"request byte budget {limit} is under the small-request reserve")
        self.limit = limit
        self.in_use = 0
        self._on_change = on_change

    def _fits(self, size: int) -> bool:
        if self.in_use == 0:  # one request alone always runs, as with the pair queue
            return True
        room = (
            self.limit if size <= SMALL_REQUEST_BYTES else self.limit - SMALL_REQUEST_RESERVE_BYTES
        )
        return self.in_use + size <= room

    def reservation(self, retry_after_ms: Callable[[], int]) -> BytesReservation:
        """An empty charge that grows as a request's bytes arrive."""
        return BytesReservation(self, retry_after_ms)

    @contextlib.contextmanager
    def admit(self, size: int, retry_after_ms: Callable[[], int]) -> Iterator[None]:
        """Hold ``size`` bytes of the budget for the block, or raise ``Overloaded``."""
        if not self._fits(size):
            raise Overloaded(
                f"memory: {self.in_use} request bytes in flight, {size} more would exceed "
                f"max_inflight_bytes={self.limit}; retry later",
                retry_after_ms=retry_after_ms(),
            )
        self.in_use += size
        self._on_change(self.in_use)
        try:
            yield
        finally:
            self.in_use -= size
            self._on_change(self.in_use)


class BytesReservation:
    """Bytes of one request charged as they arrive (an HTTP body read in chunks): ``grow``
    adds to the charge or raises ``Overloaded``; ``release`` (or leaving the ``with``) gives
    all of it back. A request with nothing charged yet holds nothing of the budget."""

    def __init__(self, budget: RequestBytesBudget, retry_after_ms: Callable[[], int]) -> None:
        self._budget = budget
        self._retry_after_ms = retry_after_ms
        self.size = 0

    def grow(self, more: int) -> None:
        """Charge ``more`` bytes, or raise ``Overloaded`` (the charge so far is kept)."""
        budget = self._budget
        size = self.size + more
        others = budget.in_use - self.size
        room = (
            budget.limit
            if size <= SMALL_REQUEST_BYTES
            else budget.limit - SMALL_REQUEST_RESERVE_BYTES
        )
        if others > 0 and others + size > room:  # one request alone always runs
            raise Overloaded(
                f"memory: {others} request bytes in flight, {size} more would exceed "
                f"max_inflight_bytes={budget.limit}; retry later",
                retry_after_ms=self._retry_after_ms(),
            )
        self.size = size
        budget.in_use += more
        budget._on_change(budget.in_use)

    def release(self) -> None:
        if self.size:
            self._budget.in_use -= self.size
            self.size = 0
            self._budget._on_change(self._budget.in_use)

    def __enter__(self) -> BytesReservation:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


class MemoryTooSmall(Exception):
    """The memory limit cannot hold the model, the queue and one request at the size limit."""


def default_inflight_bytes(max_message_bytes: int) -> int:
    """The budget when no memory limit is known."""
    return 4 * max_message_bytes + SMALL_REQUEST_RESERVE_BYTES


def resolve_inflight_bytes(
    configured: int | None,
    memory_limit: int | None,
    max_message_bytes: int,
    model_bytes: int,
    max_queue_pairs: int,
    max_length: int,
    activations: int = 0,
) -> int:
    """``max_inflight_bytes`` as set, else derived from the memory limit, else the default."""
    if configured is not None:
        return configured
    if memory_limit is None:
        return default_inflight_bytes(max_message_bytes)
    derived = inflight_bytes_for(
        memory_limit, model_bytes, max_queue_pairs, max_length, activations
    )
    smallest = smallest_inflight_bytes(max_message_bytes)
    if derived < smallest:
        needed = required_memory_bytes(
            model_bytes, smallest, max_queue_pairs, max_length, activations
        )
        raise MemoryTooSmall(
            f"memory limit {memory_limit} bytes is under the {needed} bytes this server needs "
            f"for its model ({model_bytes} bytes), max_queue_pairs={max_queue_pairs} of "
            f"max_length={max_length} tokens, the engine's activations ({activations} bytes) "
            f"and one request of max_message_bytes={max_message_bytes} "
            "(docs/guides/operations.md#the-memory-formula); raise the limit or lower those "
            "settings"
        )
    return derived


def folder_bytes(folder: Path) -> int:
    """Total size of the files in an artifact folder (what the engine loads)."""
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
