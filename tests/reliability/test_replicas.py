"""Drain and failover across real `rmserve serve` processes, through the round_robin client.

Drain: SIGTERM one of two replicas under sustained load; every OK carries the right reward,
refused attempts got UNAVAILABLE and the client retried them on the other replica, and the
drained process exits 0 within its grace period. Failover: SIGKILL one of three replicas
mid-run; every one of N pairs still gets its offline reward, none lost or duplicated.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from rmserve.client import AsyncRewardClient
from rmserve.engine.session import OrtEngine
from tests.support.replicas import BOUND_S, Replica, start_replica

pytestmark = pytest.mark.asyncio(loop_scope="session")

GRACE_S = 20.0
N_PAIRS = 12_000


class Attempts(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Records the status code of every attempt the client makes (retries included)."""

    def __init__(self) -> None:
        self.codes: Counter[str] = Counter()

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        call = await continuation(details, request)
        try:
            code = await call.code()
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
        self.codes[code.name] += 1
        return call


@pytest.fixture
def replicas(tiny_artifact: Path, tmp_path: Path) -> Iterator[Callable[[int], list[Replica]]]:
    started: list[Replica] = []

    def start(n: int) -> list[Replica]:
        new = [
            start_replica(
                tiny_artifact,
                tmp_path / f"replica{len(started) + i}.log",
                RMSERVE_GRACE_SECONDS=str(GRACE_S),
                RMSERVE_MAX_BATCH_SIZE="16",
            )
            for i in range(n)
        ]
        started.extend(new)
        for replica in new:
            replica.wait_serving()
        return new

    yield start
    for replica in started:
        replica.kill()


def texts(n: int, tag: str) -> tuple[list[str], list[str]]:
    return [f"{tag} prompt {i}" for i in range(n)], ["answer " * (i % 9) for i in range(n)]


async def run_load(
    client: AsyncRewardClient,
    prompts: list[str],
    responses: list[str],
    chunk: int,
    results: dict[int, float],
) -> None:
    """Score every pair in chunks with 8 concurrent callers; rewards by pair index."""
    starts = list(range(0, len(prompts), chunk))

    async def caller(mine: list[int]) -> None:
        for start in mine:
            end = start + chunk
            rewards = await client.score(prompts[start:end], responses[start:end], timeout=60)
            for i, reward in zip(range(start, end), rewards.tolist(), strict=False):
                assert i not in results, f"pair {i} answered twice"
                results[i] = reward

    await asyncio.gather(*(caller(starts[k::8]) for k in range(8)))


async def mid_run(load: asyncio.Future[None], results: dict[int, float], total: int) -> None:
    """Wait until a quarter of the pairs are answered (the load is then well under way)."""
    while len(results) < total // 4:
        assert not load.done(), load.exception() if load.done() else None
        await asyncio.sleep(0.005)


def client_for(targets: list[Replica], attempts: Attempts) -> AsyncRewardClient:
    return AsyncRewardClient(
        ",".join(r.target for r in targets),
        interceptors=[attempts],
        max_attempts=10,
        initial_backoff=0.02,
        max_backoff=0.2,
    )


# A replica that shuts down (or is flooded) may reset streams it never dispatched: the client
# sees CANCELLED from the server and retries it like UNAVAILABLE.
RETRYABLE_OR_OK = {"OK", "UNAVAILABLE", "CANCELLED"}


async def test_sigterm_drain_under_load(
    replicas: Callable[[int], list[Replica]], offline_engine: OrtEngine
) -> None:
    a, b = replicas(2)
    prompts, responses = texts(N_PAIRS, "drain")
    attempts = Attempts()
    async with client_for([a, b], attempts) as client:
        results: dict[int, float] = {}
        load = asyncio.ensure_future(run_load(client, prompts, responses, 10, results))
        await mid_run(load, results, len(prompts))
        a.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = await asyncio.to_thread(a.process.wait, BOUND_S)
        exited_after = time.monotonic() - signalled
        await asyncio.wait_for(load, timeout=BOUND_S)
    assert code == 0, a.output()
    assert exited_after < GRACE_S + 5.0, exited_after
    assert "Traceback" not in a.output()
    # the draining replica refused some attempts with UNAVAILABLE; the client retried them on
    # the other replica, so every pair below still has its answer
    assert attempts.codes["UNAVAILABLE"] >= 1, attempts.codes
    assert sorted(results) == list(range(len(prompts)))  # every pair answered exactly once
    offline = offline_engine.score_texts(prompts, responses)
    np.testing.assert_allclose([results[i] for i in range(len(prompts))], offline, atol=1e-5)
    assert set(attempts.codes) <= RETRYABLE_OR_OK, attempts.codes


async def test_sigkill_failover(
    replicas: Callable[[int], list[Replica]], offline_engine: OrtEngine
) -> None:
    servers = replicas(3)
    prompts, responses = texts(N_PAIRS, "failover")
    attempts = Attempts()
    async with client_for(servers, attempts) as client:
        results: dict[int, float] = {}
        load = asyncio.ensure_future(run_load(client, prompts, responses, 10, results))
        await mid_run(load, results, len(prompts))
        servers[1].process.kill()  # SIGKILL mid-run: in-flight calls die with the process
        await asyncio.wait_for(load, timeout=BOUND_S)
    assert servers[1].process.wait(BOUND_S) == -signal.SIGKILL
    assert sorted(results) == list(range(len(prompts)))  # none lost, none duplicated
    offline = offline_engine.score_texts(prompts, responses)
    np.testing.assert_allclose([results[i] for i in range(len(prompts))], offline, atol=1e-5)
    assert set(attempts.codes) <= RETRYABLE_OR_OK, attempts.codes
