"""Ensemble arithmetic (rmserve.rewards.ensemble) and how a request's options are served
(rmserve.serving.replies), against formulas written out by hand, member by member."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from rmserve.artifact.manifest import EnsembleMember, Manifest, Normalization
from rmserve.batching.pending import PairScore
from rmserve.errors import InvalidRequest
from rmserve.rewards.ensemble import (
    aggregate,
    member_stats,
    normalize_members,
    preference,
    sigmoid,
)
from rmserve.serving.replies import preferences, resolve_options, served_scores

RAW = np.array([[1.0, 3.0, -2.0], [0.5, 0.5, 0.5], [-4.0, 10.0, 2.5]])
MEANS = [0.5, 2.0, -1.0]
STDS = [2.0, 4.0, 0.5]


def by_hand(row: list[float]) -> tuple[list[float], float, float, float]:
    z = [(r - m) / s for r, m, s in zip(row, MEANS, STDS, strict=True)]
    mean = sum(z) / len(z)
    std = math.sqrt(sum((v - mean) ** 2 for v in z) / len(z))
    return z, mean, std, min(z)


def test_normalise_then_mean_std_min_match_the_formulas() -> None:
    z = normalize_members(RAW, MEANS, STDS)
    stats = member_stats(z)
    for i, row in enumerate(RAW.tolist()):
        hand_z, mean, std, low = by_hand(row)
        assert z[i].tolist() == pytest.approx(hand_z, abs=1e-12)
        assert stats.mean[i] == pytest.approx(mean, abs=1e-12)
        assert stats.std[i] == pytest.approx(std, abs=1e-12)
        assert stats.min[i] == pytest.approx(low, abs=1e-12)


@pytest.mark.parametrize("penalty", [0.0, 0.5, 2.0])
def test_aggregates(penalty: float) -> None:
    stats = member_stats(normalize_members(RAW, MEANS, STDS))
    for i, row in enumerate(RAW.tolist()):
        _, mean, std, low = by_hand(row)
        assert aggregate(stats, "mean", penalty)[i] == pytest.approx(mean, abs=1e-12)
        assert aggregate(stats, "min", penalty)[i] == pytest.approx(low, abs=1e-12)
        assert aggregate(stats, "mean_minus_std", penalty)[i] == pytest.approx(
            mean - penalty * std, abs=1e-12
        )


def test_unknown_aggregate_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown aggregate 'median'"):
        aggregate(member_stats(RAW), "median", 1.0)  # type: ignore[arg-type]


def test_preference_is_the_mean_of_member_sigmoids_on_raw_rewards() -> None:
    a, b = RAW, RAW[::-1]
    probability, spread = preference(a, b)
    for i in range(len(RAW)):
        each = [sigmoid(x - y) for x, y in zip(a[i], b[i], strict=True)]
        assert probability[i] == pytest.approx(float(np.mean(each)), abs=1e-12)
        assert spread[i] == pytest.approx(float(np.std(each)), abs=1e-12)
    assert preference(RAW, RAW)[0].tolist() == [0.5, 0.5, 0.5]
    forward, _ = preference(a, b)
    backward, _ = preference(b, a)
    assert (forward + backward).tolist() == pytest.approx([1.0] * 3, abs=1e-12)


def test_sigmoid_is_stable_at_the_extremes() -> None:
    values = sigmoid(np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0]))
    assert np.isfinite(values).all()
    assert values[0] == 0.0 and values[2] == 0.5 and values[4] == 1.0
    scalars = [sigmoid(x) for x in (-1000.0, -710.0, 0.0, 710.0, 1000.0)]  # e^710 overflows
    assert scalars[0] == 0.0 and scalars[2] == 0.5 and scalars[4] == 1.0
    assert all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in scalars)


@pytest.mark.parametrize("x", [1.5, -1.5, 0.0, 1e-12, -36.7, 36.7, 123.4, -700.0])
def test_one_sigmoid_for_scalars_and_arrays(x: float) -> None:
    assert sigmoid(2.5 - 1.0) == pytest.approx(0.8175744762, abs=1e-10)  # DESIGN.md's example
    assert sigmoid(x) + sigmoid(-x) == pytest.approx(1.0, abs=1e-15)
    assert sigmoid(x) == float(sigmoid(np.array([x]))[0])  # the same number either way


def manifest(members: int | None) -> Manifest:
    fields: dict[str, Any] = {
        "format_version": 1,
        "name": "m",
        "version": "v",
        "backbone": "tiny",
        "architecture": "encoder",
        "input_names": ["input_ids"],
        "pooling": "cls",
        "preprocessing": {"join": "pair", "max_length": 16, "pad_token_id": 0},
        "normalization": {"mean": 0.0, "std": 1.0} if members else {"mean": 1.0, "std": 2.0},
        "optimization": "none",
        "files": {"model.onnx": "0" * 64, "tokenizer.json": "0" * 64},
    }
    if members:
        fields["ensemble"] = [
            EnsembleMember(
                name=f"m{k}",
                version=f"v{k}",
                backbone="tiny",
                pooling="cls",
                normalization=Normalization(mean=MEANS[k], std=STDS[k]),
            )
            for k in range(members)
        ]
    return Manifest.model_validate(fields)


def test_an_ensemble_manifest_needs_identity_stats_and_two_members() -> None:
    good = manifest(3).model_dump()
    with pytest.raises(ValueError, match="mean 0, std 1"):
        Manifest.model_validate({**good, "normalization": {"mean": 1.0, "std": 1.0}})
    with pytest.raises(ValueError, match="at least 2"):
        Manifest.model_validate({**good, "ensemble": good["ensemble"][:1]})
    assert manifest(3).members == 3 and manifest(None).members == 0


def scores(raw: np.ndarray) -> list[PairScore]:
    return [PairScore(float(np.mean(r)), False, False, 7, tuple(r.tolist())) for r in raw]


def test_served_scores_of_an_ensemble() -> None:
    ensemble = manifest(3)
    options = resolve_options(ensemble, False, "mean_minus_std", 0.5, return_members=True)
    served = served_scores(ensemble, scores(RAW), options)
    for s, row in zip(served, RAW.tolist(), strict=True):
        z, mean, std, low = by_hand(row)
        assert s.reward == pytest.approx(mean - 0.5 * std, abs=1e-12)
        assert s.ensemble is not None and s.ensemble.members is not None
        assert list(s.ensemble.members) == pytest.approx(z, abs=1e-12)
        assert (s.ensemble.mean, s.ensemble.std, s.ensemble.min) == pytest.approx(
            (mean, std, low), abs=1e-12
        )
    # normalize changes nothing for an ensemble; members are returned only on request
    plain = served_scores(ensemble, scores(RAW), resolve_options(ensemble, True, "min", 0, False))
    assert [s.reward for s in plain] == pytest.approx([by_hand(r)[3] for r in RAW.tolist()])
    assert all(s.ensemble is not None and s.ensemble.members is None for s in plain)


def test_a_single_model_ignores_ensemble_options() -> None:
    single = manifest(None)
    raw = [PairScore(3.0, False, False, 5)]
    for how in ("mean", "min", "mean_minus_std"):
        options = resolve_options(single, True, how, -1.0, return_members=True)  # type: ignore[arg-type]
        (served,) = served_scores(single, raw, options)
        assert served.reward == (3.0 - 1.0) / 2.0 and served.ensemble is None
    (served,) = served_scores(single, raw, resolve_options(single, False, "min", math.nan, True))
    assert served.reward == 3.0


@pytest.mark.parametrize("penalty", [-0.1, math.nan, math.inf])
def test_a_bad_uncertainty_penalty_names_the_field(penalty: float) -> None:
    with pytest.raises(InvalidRequest, match=r"^uncertainty_penalty: must be a finite number >= 0"):
        resolve_options(manifest(3), False, "mean_minus_std", penalty, False)


def test_ensemble_preferences() -> None:
    rows = scores(np.array([RAW[0], RAW[2], RAW[1], RAW[1]]))
    first, second = preferences(rows)
    each = [sigmoid(x - y) for x, y in zip(RAW[0], RAW[2], strict=True)]
    assert first.probability_a == pytest.approx(float(np.mean(each)), abs=1e-12)
    assert first.probability_a_std == pytest.approx(float(np.std(each)), abs=1e-12)
    assert second.probability_a == 0.5 and second.probability_a_std == 0.0
    (single,) = preferences([PairScore(2.5, False, False, 3), PairScore(1.0, False, False, 3)])
    assert single.probability_a == pytest.approx(0.8175744762) and single.probability_a_std is None
