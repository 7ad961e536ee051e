"""Signs of reward hacking while an RL run trains against the server, as Prometheus metrics.

- ``rmserve_reward_length_correlation`` (gauge): Pearson correlation between response length and
  raw reward over the last ``window`` scored pairs (a Prefer adds both of its responses). A
  policy that learns "longer scores higher" drives it up long before the reward curve shows
  anything wrong.
- ``rmserve_ensemble_std`` (histogram): per pair, the standard deviation of an ensemble's
  member rewards, each member's reward normalised by its own held-out mean and std. Rising
  disagreement means the policy's responses are leaving the region the members agree on.

Length is the response's characters (Unicode code points), not its tokens: a chat-template
artifact tokenises the whole rendered conversation in one piece, so the response's own token
count is unknown without a second tokenisation; tokens would also stop growing at
``max_length`` (truncation) just when a policy pads its answers; and the reward model's tokens
are not the policy's anyway. Pearson's r ignores scale, so characters and tokens give nearly
the same r for text of one language.

Cost on the hot path: ``observe`` copies a request's lengths and rewards into a ring buffer,
O(pairs); the correlation is computed only when Prometheus scrapes, O(window), from exact sums
over the buffer (running sums with subtraction would drift over a long run).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Gauge, Histogram

DEFAULT_LENGTH_WINDOW = 1024
# Member std of normalised rewards: 1.0 is one held-out std of the rewards themselves.
ENSEMBLE_STD_BUCKETS = (
    0.01,
    0.02,
    0.05,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
)


class RollingCorrelation:
    """Pearson r of the last ``window`` (x, y) samples. ``add`` and ``value`` may run on
    different threads (the event loop adds, the metrics thread reads).

    ``value`` is NaN while fewer than two samples are held or while x or y is constant over
    the window: the correlation is undefined then, and a NaN is never mistaken for "no
    correlation" by an alert (comparisons with NaN are false)."""

    def __init__(self, window: int) -> None:
        if window < 2:
            raise ValueError(f"window must be at least 2 samples, got {window}")
        self.window = window
        self._x = np.zeros(window, dtype=np.float64)
        self._y = np.zeros(window, dtype=np.float64)
        self._next = 0  # slot the next sample goes to
        self._count = 0  # samples held, at most window
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        return self._count

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Append samples in order; the oldest beyond ``window`` are forgotten."""
        x = np.asarray(x, dtype=np.float64).ravel()
        y = np.asarray(y, dtype=np.float64).ravel()
        if x.shape != y.shape:
            raise ValueError(f"{x.size} lengths but {y.size} rewards")
        n = min(x.size, self.window)
        if n == 0:
            return
        x, y = x[-n:], y[-n:]
        with self._lock:
            start = self._next
            first = min(n, self.window - start)  # up to the end of the buffer, then wrap
            self._x[start : start + first] = x[:first]
            self._y[start : start + first] = y[:first]
            if first < n:
                self._x[: n - first] = x[first:]
                self._y[: n - first] = y[first:]
            self._next = (start + n) % self.window
            self._count = min(self.window, self._count + n)

    def samples(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the samples held (in buffer order, not arrival order)."""
        with self._lock:
            return self._x[: self._count].copy(), self._y[: self._count].copy()

    def value(self) -> float:
        x, y = self.samples()
        if x.size < 2 or np.ptp(x) == 0.0 or np.ptp(y) == 0.0:
            return math.nan
        dx = x - x.mean()
        dy = y - y.mean()
        r = float(dx @ dy) / math.sqrt(float(dx @ dx) * float(dy @ dy))
        if not math.isfinite(r):  # a NaN or inf reward in the window
            return math.nan
        return min(1.0, max(-1.0, r))  # rounding can step just past +-1


def response_lengths(responses: Sequence[str]) -> np.ndarray:
    """The length the correlation uses: characters per response."""
    return np.fromiter((len(r) for r in responses), dtype=np.float64, count=len(responses))


class RewardWatch:
    """The reward-hacking metrics of one registry, fed by the core with every answered
    request."""

    def __init__(self, registry: CollectorRegistry, window: int = DEFAULT_LENGTH_WINDOW) -> None:
        self.correlation = RollingCorrelation(window)
        self.length_correlation = Gauge(
            "rmserve_reward_length_correlation",
            f"Pearson correlation of response length (characters) and raw reward over the last "
            f"{window} scored pairs (length_correlation_window); NaN until defined.",
            registry=registry,
        )
        self.length_correlation.set_function(self.correlation.value)
        self.ensemble_std = Histogram(
            "rmserve_ensemble_std",
            "Per pair, the std of an ensemble's member rewards, each normalised by its member's "
            "held-out mean and std (ensemble artifacts only).",
            buckets=ENSEMBLE_STD_BUCKETS,
            registry=registry,
        )

    def observe(
        self, lengths: np.ndarray, rewards: np.ndarray, ensemble_std: np.ndarray | None = None
    ) -> None:
        """One request's (or batch's) pairs, in order: response lengths, raw rewards and, for
        an ensemble, the members' std per pair. A non-finite std (a member returned NaN or
        inf) is left out of the histogram: one NaN would turn its ``_sum`` into NaN for good."""
        spread = None
        if ensemble_std is not None:
            spread = np.asarray(ensemble_std, dtype=np.float64).ravel()
            if spread.size != np.size(rewards):
                raise ValueError(f"{spread.size} ensemble stds but {np.size(rewards)} rewards")
            if (spread < 0).any():
                raise ValueError(f"negative ensemble std {spread.min()}: a std is never negative")
        self.correlation.add(lengths, rewards)
        if spread is not None:
            for value in spread[np.isfinite(spread)].tolist():
                self.ensemble_std.observe(value)
