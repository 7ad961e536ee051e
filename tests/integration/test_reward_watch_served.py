"""rmserve_reward_length_correlation on a real server with the tiny model: after each call it
equals numpy's Pearson r over the last `length_correlation_window` pairs, computed from the
responses sent and the rewards the server returned; pairs chosen so that reward grows (then
shrinks) with length move it up (then down)."""

from __future__ import annotations

import asyncio
import math
import random
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from rmserve.engine.session import OrtEngine
from rmserve.v1 import reward_pb2
from tests.support.harness import Harness, make_settings, serving

pytestmark = pytest.mark.asyncio(loop_scope="session")

GAUGE = "rmserve_reward_length_correlation"
WINDOW = 32
WORDS = ["the", "answer", "is", "clearly", "kind", "wrong", "paris", "because", "maybe", "ok"]


@pytest.fixture(scope="module")
async def watched(tiny_artifact: Path) -> AsyncIterator[Harness]:
    settings = make_settings(tiny_artifact, length_correlation_window=WINDOW, max_batch_size=8)
    async with serving(settings) as harness:
        yield harness


def candidates(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [
        (f"question {i}?", " ".join(rng.choices(WORDS, k=rng.randint(1, 60)))) for i in range(n)
    ]


def tied_to_length(
    engine: OrtEngine, pool: list[tuple[str, str]], sign: int, count: int
) -> list[tuple[str, str]]:
    """Pairs whose offline reward rises (sign +1) or falls (-1) with response length: the
    longer half's highest (lowest) rewards and the shorter half's lowest (highest)."""
    rewards = engine.score_texts([p for p, _ in pool], [r for _, r in pool])
    by_length = sorted(range(len(pool)), key=lambda i: len(pool[i][1]))
    short, long = by_length[: len(pool) // 2], by_length[len(pool) // 2 :]
    short.sort(key=lambda i: sign * rewards[i])
    long.sort(key=lambda i: -sign * rewards[i])
    return [pool[i] for i in short[: count // 2] + long[: count // 2]]


async def score_batch(h: Harness, pairs: list[tuple[str, str]]) -> list[float]:
    request = reward_pb2.ScoreBatchRequest(
        pairs=[reward_pb2.Pair(prompt=p, response=r) for p, r in pairs]
    )
    reply = await h.stub.ScoreBatch(request, timeout=60)
    return [result.reward for result in reply.results]


def http_get(metrics_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30) as reply:
        return str(reply.read().decode())


def expected(lengths: list[float], rewards: list[float]) -> float:
    return float(np.corrcoef(lengths[-WINDOW:], rewards[-WINDOW:])[0, 1])


async def test_the_gauge_follows_the_last_window_pairs(
    watched: Harness, offline_engine: OrtEngine
) -> None:
    assert math.isnan(watched.metric(GAUGE))  # nothing scored yet
    lengths: list[float] = []
    rewards: list[float] = []

    rising = tied_to_length(offline_engine, candidates(200, seed=1), +1, WINDOW)
    random.Random(0).shuffle(rising)
    for chunk in (rising[:5], rising[5:19], rising[19:]):  # the window fills over three calls
        rewards += await score_batch(watched, chunk)
        lengths += [len(r) for _, r in chunk]
        assert watched.metric(GAUGE) == pytest.approx(expected(lengths, rewards), abs=1e-9)
    up = watched.metric(GAUGE)
    assert up > 0.5, up

    # a Prefer adds both of its responses, a then b
    prompt, a, b = "q", "short", "a much longer answer " * 5
    reply = await watched.stub.Prefer(
        reward_pb2.PreferRequest(prompt=prompt, response_a=a, response_b=b), timeout=60
    )
    lengths += [len(a), len(b)]
    rewards += [reply.result.reward_a, reply.result.reward_b]
    assert watched.metric(GAUGE) == pytest.approx(expected(lengths, rewards), abs=1e-9)

    falling = tied_to_length(offline_engine, candidates(200, seed=2), -1, WINDOW)
    for chunk in (falling[:10], falling[10:]):  # the window wraps: rising pairs leave it
        rewards += await score_batch(watched, chunk)
        lengths += [len(r) for _, r in chunk]
        assert watched.metric(GAUGE) == pytest.approx(expected(lengths, rewards), abs=1e-9)
    down = watched.metric(GAUGE)
    assert down < -0.5, down

    scrape = await asyncio.to_thread(http_get, watched.server.metrics_port)
    (line,) = [x for x in scrape.splitlines() if x.startswith(GAUGE + " ")]
    assert float(line.split()[1]) == pytest.approx(down, abs=1e-12)
