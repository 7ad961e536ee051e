"""Test doubles that ship with the package (used by the integration tests, usable by others)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from rmserve.engine import Engine, EngineError
from rmserve.preprocess import PreparedPair

GATE_TIMEOUT_S = 120.0  # a forgotten gate fails the batch instead of hanging the test run


class ScriptedEngine:
    """Wraps a real engine: holds batches while ``gate`` is closed and fails chosen calls.

    ``calls`` counts ``score`` calls (warm-up included); ``fail_calls`` holds the 0-based call
    numbers that raise ``EngineError`` instead of scoring; ``batch_sizes[i]`` is the number of
    pairs engine call ``i`` received.
    """

    def __init__(self, inner: Engine, gate_open: bool = True) -> None:
        self.inner = inner
        self.gate = threading.Event()
        if gate_open:
            self.gate.set()
        self.fail_calls: set[int] = set()
        self.calls = 0
        self.scored_pairs = 0
        self.batch_sizes: list[int] = []
        self._lock = threading.Lock()

    @property
    def provider(self) -> str:
        return self.inner.provider

    def score(self, pairs: Sequence[PreparedPair]) -> np.ndarray:
        with self._lock:
            call = self.calls
            self.calls += 1
            self.batch_sizes.append(len(pairs))
        if not self.gate.wait(timeout=GATE_TIMEOUT_S):
            raise EngineError(f"ScriptedEngine gate stayed closed for {GATE_TIMEOUT_S}s")
        if call in self.fail_calls:
            raise EngineError(f"scripted failure of engine call {call}")
        rewards = self.inner.score(pairs)
        with self._lock:
            self.scored_pairs += len(pairs)
        return rewards
