"""Hot-path cost of the reward-hacking watch, against the per-pair `rmserve_reward` histogram
observe the batcher already does, timed in the same run (ratios, since the machine may be
shared), plus the scrape-time cost of computing the correlation.

    .venv/bin/python bench/reward_watch.py --out bench/results/reward_watch.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import timeit
from collections.abc import Callable
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Histogram

from rmserve.observability.metrics import REWARD_BUCKETS
from rmserve.observability.reward_watch import DEFAULT_LENGTH_WINDOW, RewardWatch, response_lengths

PAIRS = (1, 8, 32, 256)
CALLS = 5000


def best_seconds(work: Callable[[], object], calls: int = CALLS) -> float:
    return min(timeit.repeat(work, number=calls, repeat=5)) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    registry = CollectorRegistry()
    watch = RewardWatch(registry, DEFAULT_LENGTH_WINDOW)
    reward = Histogram("baseline_reward", "baseline", buckets=REWARD_BUCKETS, registry=registry)
    rng = np.random.default_rng(0)
    rows = []
    for pairs in PAIRS:
        responses = ["x" * int(n) for n in rng.integers(1, 4000, size=pairs)]
        rewards = rng.normal(size=pairs).astype(np.float32)

        def observe(responses: list[str] = responses, rewards: np.ndarray = rewards) -> None:
            watch.observe(response_lengths(responses), rewards)

        def baseline(rewards: np.ndarray = rewards) -> None:
            for value in rewards.tolist():
                reward.observe(value)

        watch_s, baseline_s = best_seconds(observe), best_seconds(baseline)
        rows.append(
            {
                "pairs_per_request": pairs,
                "watch_us": round(watch_s * 1e6, 2),
                "reward_histogram_us": round(baseline_s * 1e6, 2),
                "ratio_watch_to_reward_histogram": round(watch_s / baseline_s, 3),
            }
        )
        print(rows[-1])
    scrape_s = best_seconds(watch.correlation.value, 1000)
    result = {
        "window": DEFAULT_LENGTH_WINDOW,
        "observe": rows,
        "correlation_at_scrape_us": round(scrape_s * 1e6, 2),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared with other jobs "
        f"(load average {os.getloadavg()[0]:.1f}): compare ratios, not absolute times",
    }
    print({k: v for k, v in result.items() if k != "observe"})
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
