"""Batch collection: one pure function from a queue snapshot to the next engine batch.

Policy, in order:
1. Items whose owner is finished (cancelled, failed) are dropped; items whose deadline passed
   are returned as expired. Neither is ever computed. The snapshot is the window: the caller
   passes the oldest ``window`` queued items, so the cost per batch stays bounded.
2. With ``max_queue_delay_s`` > 0 and too little work for a full batch, wait until the oldest
   item has waited that long.
3. The oldest live item anchors the batch, so nothing starves. The window is sorted by length
   and the batch grows from the anchor to whichever neighbour in that order is closest in
   length, while the caps hold: rows <= ``max_batch_size`` and, when set, padded tokens
   (longest x rows) <= ``max_batch_tokens`` and padded / real tokens <= ``max_padding_ratio``.
   The anchor always runs, even alone over a cap. The batch grows as far as the caps allow
   (``batch_policy`` 'caps', the only policy: docs/guides/serving.md#batch-policy says why
   the cost-model policies were removed).

An item is the unit that must share a batch: one pair for Score, both pairs of a Prefer. An
item over ``max_batch_tokens`` on its own ``runs_alone``: no other item can join its batch (the
batcher keeps such items in a lane of their own, so they never take every engine worker).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from rmserve.text.preprocess import PreparedPair


class Owner(Protocol):
    """The request an item belongs to; ``finished`` once answered, failed or cancelled."""

    @property
    def finished(self) -> bool: ...


OwnerT = TypeVar("OwnerT", bound=Owner)


@dataclass(eq=False, slots=True)
class QueuedItem(Generic[OwnerT]):
    owner: OwnerT
    index: int  # position of this item's first pair among its owner's pairs
    pairs: tuple[PreparedPair, ...]
    enqueued_at: float
    deadline: float | None  # same clock as enqueued_at; None: no deadline
    longest: int = field(init=False)
    real_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        if not self.pairs:
            raise ValueError("a queued item needs at least one pair")
        self.longest = max(p.num_tokens for p in self.pairs)
        self.real_tokens = sum(p.num_tokens for p in self.pairs)

    @property
    def rows(self) -> int:
        return len(self.pairs)


@dataclass(frozen=True)
class BatchLimits:
    max_batch_size: int
    max_batch_tokens: int | None = None  # None: no cap
    max_padding_ratio: float | None = None  # None: no cap
    max_queue_delay_s: float = 0.0
    window: int = 256  # how many of the oldest queued items the caller passes as a snapshot

    def __post_init__(self) -> None:
        tokens = 1 if self.max_batch_tokens is None else self.max_batch_tokens
        if self.max_batch_size < 1 or tokens < 1 or self.window < 1:
            raise ValueError(f"batch limits must be positive: {self}")
        ratio = 1.0 if self.max_padding_ratio is None else self.max_padding_ratio
        if ratio < 1.0 or self.max_queue_delay_s < 0.0:
            raise ValueError(f"invalid batch limits: {self}")


def runs_alone(item: QueuedItem[OwnerT], limits: BatchLimits) -> bool:
    """Whether ``item`` alone is over the token budget (a long pair, or a long Prefer)."""
    cap = limits.max_batch_tokens
    return cap is not None and item.longest * item.rows > cap


@dataclass
class Collected(Generic[OwnerT]):
    batch: list[QueuedItem[OwnerT]]  # sorted by length; run these now (may be empty)
    expired: list[QueuedItem[OwnerT]]  # deadline passed: answer DEADLINE_EXCEEDED
    dropped: list[QueuedItem[OwnerT]]  # owner already finished: forget silently
    wait_until: float | None = None  # nothing to run yet; look again at this time

    @property
    def rows(self) -> int:
        return sum(item.rows for item in self.batch)

    @property
    def padded_tokens(self) -> int:
        return max((i.longest for i in self.batch), default=0) * self.rows

    @property
    def real_tokens(self) -> int:
        return sum(item.real_tokens for item in self.batch)


def collect_batch(
    snapshot: Sequence[QueuedItem[OwnerT]],
    now: float,
    limits: BatchLimits,
) -> Collected[OwnerT]:
    """Pick the next batch from ``snapshot``, the oldest ``limits.window`` queued items.

    Pure: reads the items (and whether their owners finished), never mutates anything.
    """
    live: list[QueuedItem[OwnerT]] = []
    expired: list[QueuedItem[OwnerT]] = []
    dropped: list[QueuedItem[OwnerT]] = []
    for item in snapshot:
        if item.owner.finished:
            dropped.append(item)
        elif item.deadline is not None and item.deadline <= now:
            expired.append(item)
        else:
            live.append(item)
    if not live:
        return Collected([], expired, dropped)
    oldest = min(live, key=lambda item: item.enqueued_at)
    if limits.max_queue_delay_s > 0 and sum(item.rows for item in live) < limits.max_batch_size:
        ready_at = oldest.enqueued_at + limits.max_queue_delay_s
        if ready_at > now:
            return Collected([], expired, dropped, wait_until=ready_at)
    return Collected(_grow_around(oldest, live, limits), expired, dropped)


def _fits(rows: int, longest: int, real: int, limits: BatchLimits) -> bool:
    padded = rows * longest
    return (
        rows <= limits.max_batch_size
        and (limits.max_batch_tokens is None or padded <= limits.max_batch_tokens)
        and (limits.max_padding_ratio is None or padded <= limits.max_padding_ratio * real)
    )


@dataclass(slots=True)
class _Span:
    """A contiguous run ``[lo, hi]`` of the length-sorted window and its totals."""

    lo: int
    hi: int
    rows: int
    longest: int
    real: int


def _grow_around(
    anchor: QueuedItem[OwnerT], window: list[QueuedItem[OwnerT]], limits: BatchLimits
) -> list[QueuedItem[OwnerT]]:
    by_length = sorted(window, key=lambda item: (item.longest, item.enqueued_at))
    at = by_length.index(anchor)
    span = _Span(at, at, anchor.rows, anchor.longest, anchor.real_tokens)
    while (grown := _grow_once(span, by_length, anchor.longest, limits)) is not None:
        span = grown
    return by_length[span.lo : span.hi + 1]


def _grow_once(
    span: _Span, by_length: list[QueuedItem[OwnerT]], anchor_length: int, limits: BatchLimits
) -> _Span | None:
    """``span`` grown by its closest-in-length neighbour that keeps the caps, or None when
    neither neighbour can join."""
    candidates = []
    if span.lo > 0:
        candidates.append(span.lo - 1)
    if span.hi < len(by_length) - 1:
        candidates.append(span.hi + 1)
    # Closest in length first; ties go to the shorter neighbour (cheaper padding).
    candidates.sort(key=lambda i: (abs(by_length[i].longest - anchor_length), i))
    for i in candidates:
        item = by_length[i]
        rows, longest = span.rows + item.rows, max(span.longest, item.longest)
        real = span.real + item.real_tokens
        if _fits(rows, longest, real, limits):
            return _Span(min(span.lo, i), max(span.hi, i), rows, longest, real)
    return None
