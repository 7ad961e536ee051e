"""The load check: golden pairs re-tokenised and scored through an engine, compared with their
references at the artifact's tolerance; drift refused with the figures that show it."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pytest

from rmserve.artifact.golden import GoldenTolerance
from rmserve.artifact.manifest import ArtifactError
from rmserve.engine.session import LoadedArtifact
from rmserve.serving.golden import GoldenDrift, golden_batches, golden_pairs, verify_golden
from rmserve.text.preprocess import PreparedPair
from tests.support.golden_rig import FP32, LengthEngine, golden_of, minilm_artifact, with_golden


@pytest.fixture(scope="module")
def artifact() -> LoadedArtifact:
    return minilm_artifact()


def test_within_tolerance_gives_the_figures(artifact: LoadedArtifact) -> None:
    engine = LengthEngine()
    engine.offset = 5e-5  # within 1e-4
    report = verify_golden(engine, with_golden(artifact, golden_of(artifact, FP32)))
    assert report is not None and report.ok and report.beyond == 0
    assert report.pairs == 4 and report.provider == "FakeExecutionProvider"
    assert report.max_abs_diff == pytest.approx(5e-5, rel=1e-2)
    assert report.drift_ratio == pytest.approx(0.5, rel=1e-2)
    assert "4 golden pairs within tolerance" in report.describe()
    assert sum(map(len, engine.batches)) == 4  # each pair scored once


def test_drift_is_refused_with_the_worst_pair(artifact: LoadedArtifact) -> None:
    engine = LengthEngine()
    engine.offset = 0.25
    loaded = with_golden(artifact, golden_of(artifact, FP32))
    with pytest.raises(GoldenDrift) as caught:
        verify_golden(engine, loaded)
    assert isinstance(caught.value, ArtifactError)  # `rmserve serve` refuses to start
    report = caught.value.report
    assert report is not None and not report.ok
    assert report.beyond == 4 and report.max_abs_diff == pytest.approx(0.25)
    assert report.drift_ratio == pytest.approx(2500.0, rel=1e-3)
    message = str(caught.value)
    assert "golden pairs drifted on FakeExecutionProvider: 4 of 4 beyond tolerance" in message
    assert "|Δ| 2.50e-01 where 1.0e-04 is allowed" in message
    assert "against the torch fp32 reference" in message
    assert "every |Δ| ≤ 1.0e-04 (the fp32 export check's bound)" in message


def test_a_relative_tolerance_allows_more_for_large_rewards(artifact: LoadedArtifact) -> None:
    fp16 = GoldenTolerance(atol=1e-2, rtol=1e-2, basis="fp16")
    golden = golden_of(artifact, fp16)
    references = [float(p.reward) for p in golden.pairs]  # type: ignore[arg-type]
    engine = LengthEngine()
    engine.offset = 0.05  # beyond 1e-2 + 1e-2·r only where r < 4
    loaded = with_golden(artifact, golden)
    expected_beyond = sum(1e-2 + 1e-2 * abs(r) < 0.05 for r in references)
    assert 0 < expected_beyond < 4, references
    with pytest.raises(GoldenDrift) as caught:
        verify_golden(engine, loaded)
    assert caught.value.report is not None and caught.value.report.beyond == expected_beyond


def test_a_nan_reward_is_drift(artifact: LoadedArtifact) -> None:
    engine = LengthEngine()
    engine.offset = float("nan")
    with pytest.raises(GoldenDrift, match="max \\|Δ\\| inf"):
        verify_golden(engine, with_golden(artifact, golden_of(artifact, FP32)))


def test_ensemble_members_are_checked_each(artifact: LoadedArtifact) -> None:
    golden = golden_of(artifact, FP32, members=3)
    assert golden.members == 3
    loaded = with_golden(artifact, golden)
    report = verify_golden(LengthEngine(members=3), loaded)
    assert report is not None and report.ok and report.max_abs_diff == 0.0

    class ThirdMemberOff(LengthEngine):
        def score(self, pairs: Sequence[PreparedPair]) -> np.ndarray:
            rewards = super().score(pairs)
            rewards[:, 2] += 1.0
            return rewards

    with pytest.raises(GoldenDrift, match="4 of 4 beyond") as caught:
        verify_golden(ThirdMemberOff(members=3), loaded)
    report = caught.value.report
    assert report is not None and report.max_abs_diff == pytest.approx(1.0)


def test_a_changed_tokenizer_is_refused_before_scoring(artifact: LoadedArtifact) -> None:
    golden = golden_of(artifact, FP32)
    first = golden.pairs[2]
    ids = [*first.input_ids]
    ids[1] += 1  # what a different vocabulary would have given at export
    changed = golden.model_copy(
        update={
            "pairs": [
                *golden.pairs[:2],
                first.model_copy(update={"input_ids": ids}),
                *golden.pairs[3:],
            ]
        }
    )
    engine = LengthEngine()
    with pytest.raises(GoldenDrift) as caught:
        verify_golden(engine, with_golden(artifact, changed))
    message = str(caught.value)
    assert "golden pair 2 tokenises differently than at export" in message
    assert f"input_ids[1] is {ids[1] - 1} here, {ids[1]} at export" in message
    assert "1 of 4 pairs differ" in message and "tokenizer.json" in message
    assert engine.batches == [] and caught.value.report is None


def test_no_golden_pairs_is_logged_and_loads(
    artifact: LoadedArtifact, caplog: pytest.LogCaptureFixture
) -> None:
    engine = LengthEngine()
    with caplog.at_level(logging.INFO, logger="rmserve.serving.golden"):
        assert verify_golden(engine, with_golden(artifact, None)) is None
    assert "carries no golden pairs" in caplog.text and engine.batches == []
    assert golden_pairs(with_golden(artifact, None)) is None


@pytest.mark.parametrize(
    ("lengths", "max_pairs", "max_tokens", "expected"),
    [
        ([3, 90, 4, 80, 5], 4, 8192, [[0, 1, 2, 3], [4]]),
        ([3, 90, 4, 80, 5], 2, 8192, [[0, 1], [2, 3], [4]]),
        ([10, 100, 10, 10], 4, 250, [[0, 1], [2, 3]]),
        ([10, 300, 10], 4, 250, [[0], [1], [2]]),  # longer than the budget: alone
        ([], 4, 100, []),
    ],
)
def test_golden_batches(
    lengths: list[int], max_pairs: int, max_tokens: int, expected: list[list[int]]
) -> None:
    pairs = [
        PreparedPair(np.zeros(n, np.int64), np.zeros(n, np.int64), False, False) for n in lengths
    ]
    batches = golden_batches(pairs, max_pairs, max_tokens)
    assert batches == expected
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) == 1 or longest * len(batch) <= max_tokens
