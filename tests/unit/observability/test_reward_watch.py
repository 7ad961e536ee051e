"""The reward-hacking metrics: the rolling length-reward correlation against numpy over the
same window (wrap-around, undefined cases) and the ensemble-disagreement histogram."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from rmserve.observability.metrics import Metrics
from rmserve.observability.reward_watch import (
    ENSEMBLE_STD_BUCKETS,
    RewardWatch,
    RollingCorrelation,
    response_lengths,
)

GAUGE = "rmserve_reward_length_correlation"


def corrcoef(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1])


@pytest.mark.parametrize("chunk", [1, 3, 7, 16, 40])
def test_matches_numpy_over_the_last_window_samples_as_the_buffer_wraps(chunk: int) -> None:
    rng = np.random.default_rng(chunk)
    window = 16
    x = rng.integers(1, 500, size=100).astype(np.float64)
    y = 0.01 * x + rng.normal(size=100)
    rolling = RollingCorrelation(window)
    seen = 0
    while seen < len(x):
        end = min(len(x), seen + chunk)
        rolling.add(x[seen:end], y[seen:end])
        seen = end
        lo = max(0, seen - window)
        assert rolling.count == seen - lo
        if seen - lo >= 2:
            assert rolling.value() == pytest.approx(corrcoef(x[lo:seen], y[lo:seen]), abs=1e-12)


def test_a_batch_longer_than_the_window_keeps_its_last_samples() -> None:
    rolling = RollingCorrelation(4)
    rolling.add(np.array([1.0, 2.0]), np.array([5.0, 1.0]))
    x = np.array([9.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    y = np.array([0.0, 1.0, 3.0, 2.0, 5.0, 4.0])
    rolling.add(x, y)
    assert rolling.count == 4
    assert rolling.value() == pytest.approx(corrcoef(x[-4:], y[-4:]), abs=1e-12)


def test_perfectly_correlated_and_anti_correlated_windows() -> None:
    rolling = RollingCorrelation(8)
    lengths = np.arange(8.0)
    rolling.add(lengths, 3.0 * lengths - 1.0)
    assert rolling.value() == 1.0
    rolling.add(lengths, -lengths)
    assert rolling.value() == -1.0


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ([], []),  # nothing scored yet
        ([3.0], [0.5]),  # one sample
        ([5.0, 5.0, 5.0], [0.1, 0.9, -2.0]),  # every response the same length
        ([1.0, 2.0, 3.0], [0.7, 0.7, 0.7]),  # a constant reward
        ([1.0, 2.0, 3.0], [0.1, math.nan, 0.3]),  # a NaN reward in the window
    ],
)
def test_undefined_correlation_is_nan(x: list[float], y: list[float]) -> None:
    rolling = RollingCorrelation(8)
    rolling.add(np.array(x), np.array(y))
    assert math.isnan(rolling.value())


def test_a_constant_window_becomes_defined_once_values_differ() -> None:
    rolling = RollingCorrelation(3)
    rolling.add(np.full(3, 7.0), np.array([1.0, 2.0, 3.0]))
    assert math.isnan(rolling.value())
    rolling.add(np.array([8.0]), np.array([4.0]))
    assert rolling.value() == pytest.approx(corrcoef(np.array([7, 7, 8.0]), np.arange(2, 5.0)))


def test_mismatched_lengths_and_a_too_small_window_are_refused() -> None:
    with pytest.raises(ValueError, match="window must be at least 2"):
        RollingCorrelation(1)
    rolling = RollingCorrelation(4)
    with pytest.raises(ValueError, match="3 lengths but 2 rewards"):
        rolling.add(np.ones(3), np.ones(2))
    assert rolling.count == 0


def test_length_is_characters_of_the_response() -> None:
    assert response_lengths(["", "abc", "héllo", "日本"]).tolist() == [0.0, 3.0, 5.0, 2.0]


def test_the_gauge_is_computed_when_scraped() -> None:
    registry = CollectorRegistry()
    watch = RewardWatch(registry, window=5)
    assert math.isnan(registry.get_sample_value(GAUGE) or 0.0)
    lengths = response_lengths(["a", "bb", "ccc", "dddd", "eeeee", "ffffff"])
    rewards = np.array([0.3, -0.2, 0.9, 1.4, 0.8, 2.0], dtype=np.float32)
    watch.observe(lengths[:2], rewards[:2])
    watch.observe(lengths[2:], rewards[2:])
    expected = corrcoef(lengths[1:], rewards[1:].astype(np.float64))
    assert registry.get_sample_value(GAUGE) == pytest.approx(expected, abs=1e-12)
    assert f"{GAUGE} " in generate_latest(registry).decode()


def test_ensemble_std_histogram_counts_each_pair_in_its_bucket() -> None:
    metrics = Metrics()
    registry = metrics.registry
    assert registry.get_sample_value("rmserve_ensemble_std_count") == 0  # exposed before any
    spread = np.array([0.0, 0.04, 0.05, 0.3, 0.9, 2.5, 7.0])
    metrics.reward_watch.observe(np.arange(7.0), np.zeros(7), ensemble_std=spread)
    for le in ENSEMBLE_STD_BUCKETS:
        value = registry.get_sample_value("rmserve_ensemble_std_bucket", {"le": str(le)})
        assert value == float((spread <= le).sum()), le
    assert registry.get_sample_value("rmserve_ensemble_std_bucket", {"le": "+Inf"}) == 7
    assert registry.get_sample_value("rmserve_ensemble_std_sum") == pytest.approx(spread.sum())


def test_ensemble_std_skips_non_finite_and_refuses_bad_shapes() -> None:
    metrics = Metrics()
    watch, registry = metrics.reward_watch, metrics.registry
    watch.observe(np.arange(3.0), np.arange(3.0), ensemble_std=np.array([0.2, math.nan, math.inf]))
    assert registry.get_sample_value("rmserve_ensemble_std_count") == 1
    assert registry.get_sample_value("rmserve_ensemble_std_sum") == pytest.approx(0.2)
    with pytest.raises(ValueError, match="2 ensemble stds but 3 rewards"):
        watch.observe(np.arange(3.0), np.arange(3.0), ensemble_std=np.ones(2))
    with pytest.raises(ValueError, match="negative ensemble std"):
        watch.observe(np.arange(2.0), np.arange(2.0), ensemble_std=np.array([0.1, -0.1]))
    assert watch.correlation.count == 3  # a refused call changes nothing
    assert registry.get_sample_value("rmserve_ensemble_std_count") == 1


def test_window_comes_from_the_metrics_constructor() -> None:
    assert Metrics(length_correlation_window=7).reward_watch.correlation.window == 7
