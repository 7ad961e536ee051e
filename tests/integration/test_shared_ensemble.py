"""A K=3 shared-backbone ensemble of the tiny model (``--ensemble-kind shared``): it trains,
exports one graph with output [B, 3] whose heads differ, records each head's held-out stats,
and the existing serving code serves it: every aggregate and Prefer equal offline numpy on the
graph's own member columns, normalised by the manifest's stats."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from rmserve.artifact.folder import read_manifest
from rmserve.artifact.manifest import MANIFEST_FILE
from rmserve.engine.session import OrtEngine, load_artifact
from rmserve.text.preference_data import load_preferences
from rmserve.v1 import reward_pb2
from tests.support.ensemble_texts import (
    MATH_TOL,
    OFFLINE_TOL,
    TEXTS,
    TRAINING_BOUND_S,
    batch_request,
    expected_aggregate,
    member_stats_of,
)
from tests.support.harness import Harness, make_settings, serving

pytestmark = pytest.mark.timeout(TRAINING_BOUND_S)
on_session_loop = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
def offline_raw(tiny_shared_ensemble: Any) -> np.ndarray:
    """[N, 3]: the artifact's graph on TEXTS, offline, in float64."""
    engine = OrtEngine(load_artifact(tiny_shared_ensemble.artifact), provider="cpu")
    raw = engine.score_texts([p for p, _ in TEXTS], [r for _, r in TEXTS])
    return np.asarray(raw, dtype=np.float64)


@pytest.fixture(scope="module")
async def shared_server(tiny_shared_ensemble: Any) -> AsyncIterator[Harness]:
    settings = make_settings(tiny_shared_ensemble.artifact, max_batch_size=4)
    async with serving(settings) as harness:
        yield harness


def test_trains_and_exports_three_different_heads(
    tiny_shared_ensemble: Any, offline_raw: np.ndarray
) -> None:
    manifest = read_manifest(tiny_shared_ensemble.artifact)
    assert manifest.ensemble_kind == "shared" and manifest.members == 3
    raw = json.loads((tiny_shared_ensemble.artifact / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert raw["ensemble_kind"] == "shared"
    assert offline_raw.shape == (len(TEXTS), 3)
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert np.max(np.abs(offline_raw[:, a] - offline_raw[:, b])) > 1e-3, (a, b)
    assert manifest.ensemble is not None
    assert len({m.version for m in manifest.ensemble}) == 3
    assert manifest.parity is not None and manifest.parity.status == "checked"
    summary = tiny_shared_ensemble.summary
    assert summary["finished"] and summary["ensemble_kind"] == "shared"
    assert [h["eval_accuracy"] for h in summary["heads"]] == [
        m.metrics["eval_accuracy"] for m in manifest.ensemble
    ]


def test_manifest_holds_each_heads_held_out_stats(
    tiny_shared_ensemble: Any, demo_data_dir: Any
) -> None:
    """Each head's normalisation is the mean and std (ddof 0) of its rewards over every held-out
    response, chosen and rejected: recomputed here from the exported graph."""
    artifact = load_artifact(tiny_shared_ensemble.artifact)
    pairs = load_preferences(demo_data_dir / "eval.jsonl").pairs
    prompts = [p.prompt for p in pairs] * 2
    responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    raw = OrtEngine(artifact, provider="cpu").score_texts(prompts, responses).astype(np.float64)
    means, stds = member_stats_of(artifact.manifest)
    np.testing.assert_allclose(means, raw.mean(axis=0), atol=1e-4, rtol=0)
    np.testing.assert_allclose(stds, raw.std(axis=0), atol=1e-4, rtol=1e-4)


@on_session_loop
@pytest.mark.parametrize(
    ("aggregate", "how", "lam"),
    [
        (reward_pb2.AGGREGATE_MEAN, "mean", 0.0),
        (reward_pb2.AGGREGATE_MIN, "min", 0.0),
        (reward_pb2.AGGREGATE_MEAN_MINUS_STD, "mean_minus_std", 0.5),
    ],
)
async def test_served_aggregates_equal_offline_numpy(
    shared_server: Harness,
    tiny_shared_ensemble: Any,
    offline_raw: np.ndarray,
    aggregate: int,
    how: str,
    lam: float,
) -> None:
    options = {"aggregate": aggregate, "uncertainty_penalty": lam, "return_members": True}
    reply = await shared_server.stub.ScoreBatch(batch_request(**options), timeout=60)
    z = np.array([list(r.ensemble.member_rewards) for r in reply.results])
    rewards = np.array([r.reward for r in reply.results])
    means, stds = member_stats_of(read_manifest(tiny_shared_ensemble.artifact))
    offline_z = (offline_raw - means) / stds
    np.testing.assert_allclose(z, offline_z, atol=OFFLINE_TOL, rtol=0)
    np.testing.assert_allclose(
        rewards, expected_aggregate(offline_z, how, lam), atol=OFFLINE_TOL, rtol=0
    )
    for r, row in zip(reply.results, z, strict=True):
        assert r.ensemble.std == pytest.approx(row.std(ddof=0), abs=MATH_TOL)


@on_session_loop
async def test_prefer_and_model_info(
    shared_server: Harness, tiny_shared_ensemble: Any, offline_raw: np.ndarray
) -> None:
    reply = await shared_server.stub.Prefer(
        reward_pb2.PreferRequest(
            prompt=TEXTS[0][0], response_a=TEXTS[0][1], response_b=TEXTS[1][1]
        ),
        timeout=60,
    )
    each = 1.0 / (1.0 + np.exp(-(offline_raw[0] - offline_raw[1])))
    assert reply.result.probability_a == pytest.approx(each.mean(), abs=OFFLINE_TOL)
    assert reply.result.probability_a_std == pytest.approx(each.std(ddof=0), abs=OFFLINE_TOL)
    info = await shared_server.stub.GetModelInfo(reward_pb2.GetModelInfoRequest(), timeout=60)
    manifest = read_manifest(tiny_shared_ensemble.artifact)
    assert manifest.ensemble is not None
    assert [m.version for m in info.members] == [m.version for m in manifest.ensemble]
    assert info.ensemble_kind == "shared"
    assert [m.normalization_std for m in info.members] == [
        m.normalization.std for m in manifest.ensemble
    ]
