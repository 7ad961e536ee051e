"""A version swap of a real `rmserve serve` process under 64 concurrent callers: no call fails,
every reply is the old version or the new one (its rewards those of that version, a batch never
split between them), every call that starts after the swap returned gets the new version, and
the old session's memory goes back (RSS within 20% of a fresh server of the new version alone).

Bounded and self-stopping, synchronised by counters: the swap starts once the callers have
made ``BEFORE`` calls, and each caller stops after ``AFTER`` calls begun after the swap returned.
The model is a Qwen3 reward model with a 150k-token embedding (~80 MB of weights), so an old
session left behind would be far more than 20% of the server's memory.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from rmserve.engine.session import OrtEngine, load_artifact
from rmserve.testing import ServerProcess, start_server
from rmserve.v1 import reward_pb2, reward_pb2_grpc
from tests.support.multi_model import Cli, import_qwen3

CALLERS = 64
BEFORE = 100 * CALLERS  # calls made before the swap starts
AFTER = 100  # calls each caller starts after the swap returned, then it stops
CALL_BOUND_S = 120.0  # "must not hang"; never a performance target
SETTLE_BOUND_S = 60.0
TOKEN = "swap-load-secret"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
BIG = {"vocab_size": 151936, "hidden_size": 128, "intermediate_size": 256, "head_dim": 32}
PAIRS = [
    ("what is the capital of france ?", "paris ."),
    ("say hello", "hello ! how can i help you today ?"),
    ("write a haiku about sea waves", "waves fold into foam " * 3),
    ("", "one two three"),
]
MIB = 1 << 20


@dataclass(frozen=True)
class Version:
    name: str
    folder: Path
    raw: np.ndarray  # offline reward of each of PAIRS
    z: np.ndarray  # normalised


def offline(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    loaded = load_artifact(folder)
    engine = OrtEngine(loaded, provider="cpu", intra_op_threads=1)
    raw = np.array([engine.score(loaded.preprocessor.prepare_many([p], [r]))[0] for p, r in PAIRS])
    n = loaded.manifest.normalization
    return raw, (raw - n.mean) / n.std


@pytest.fixture(scope="module")
def versions(
    demo_data_dir: Path, tmp_path_factory: pytest.TempPathFactory, rmserve_cli: Cli
) -> dict[str, Version]:
    root = tmp_path_factory.mktemp("swap-load")
    found = {}
    for seed, name in enumerate(("v1", "v2")):
        folder = import_qwen3(
            rmserve_cli, root / name, demo_data_dir / "eval.jsonl", "qwen", name, seed, **BIG
        )
        found[name] = Version(name, folder, *offline(folder))
    assert np.abs(found["v1"].raw - found["v2"].raw).min() > 1e-3  # told apart by rewards
    return found


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@pytest.fixture
def servers(versions: dict[str, Version], tmp_path: Path) -> Iterator[dict[str, ServerProcess]]:
    """The server that swaps (v1 first) and a fresh one of v2 alone, both SERVING."""
    started = {
        "swapping": start_server(versions["v1"].folder, tmp_path / "swapping.log",
                                 RMSERVE_AUTH_TOKEN=TOKEN),
        "fresh": start_server(versions["v2"].folder, tmp_path / "fresh.log",
                              RMSERVE_AUTH_TOKEN=TOKEN),
    }  # fmt: skip
    try:
        for process in started.values():
            process.wait_serving()
        yield started
    finally:
        for process in started.values():
            process.terminate()


class Callers:
    """``CALLERS`` tasks calling Score, a one-model composite and ScoreBatch in turn; each
    reply is checked against the version it names."""

    def __init__(self, target: str, versions: dict[str, Version]) -> None:
        self.target = target
        self.versions = versions
        self.done = 0
        self.swap_returned = False
        self.outcomes: Counter[str] = Counter()
        self.after_swap: Counter[str] = Counter()  # versions of calls begun after it returned
        self.enough_before = asyncio.Event()

    def _check(self, version: str, rewards: list[float], rows: list[int], z: bool) -> str:
        expected = self.versions[version].z if z else self.versions[version].raw
        got, want = np.array(rewards), expected[rows]
        assert np.abs(got - want).max() <= 1e-4, (version, got, want)
        return version

    async def _one(self, stub: reward_pb2_grpc.RewardServiceStub, i: int) -> str:
        kind = i % 3
        row = i % len(PAIRS)
        prompt, response = PAIRS[row]
        if kind == 0:
            reply = await stub.Score(
                reward_pb2.ScoreRequest(prompt=prompt, response=response, model="qwen"),
                timeout=CALL_BOUND_S, metadata=AUTH,
            )  # fmt: skip
            return self._check(reply.model_version, [reply.reward], [row], z=False)
        if kind == 1:
            reply = await stub.Score(
                reward_pb2.ScoreRequest(
                    prompt=prompt, response=response, reward_weights={"qwen": 1.0}
                ),
                timeout=CALL_BOUND_S, metadata=AUTH,
            )  # fmt: skip
            (part,) = reply.components
            assert reply.model_version == f"qwen={part.model_version}"
            return self._check(part.model_version, [reply.reward], [row], z=True)
        pairs = [reward_pb2.Pair(prompt=p, response=r) for p, r in PAIRS]
        batch = await stub.ScoreBatch(
            reward_pb2.ScoreBatchRequest(pairs=pairs, model="qwen"),
            timeout=CALL_BOUND_S, metadata=AUTH,
        )  # fmt: skip
        rewards = [r.reward for r in batch.results]
        return self._check(batch.model_version, rewards, list(range(len(PAIRS))), z=False)

    async def _caller(self, stub: reward_pb2_grpc.RewardServiceStub, me: int) -> None:
        i, after = me, 0
        while after < AFTER:
            begun_after_swap = self.swap_returned
            try:
                version = await self._one(stub, i)
                self.outcomes[version] += 1
                if begun_after_swap:
                    self.after_swap[version] += 1
            except grpc.aio.AioRpcError as e:
                self.outcomes[f"failed {e.code().name}: {e.details()}"] += 1
            i += CALLERS
            after += begun_after_swap
            self.done += 1
            if self.done >= BEFORE:
                self.enough_before.set()

    async def run(self, swap: asyncio.Task[reward_pb2.SwapModelResponse] | None = None) -> None:
        channels = [grpc.aio.insecure_channel(self.target) for _ in range(4)]
        try:
            stubs = [reward_pb2_grpc.RewardServiceStub(c) for c in channels]  # type: ignore[no-untyped-call]
            await asyncio.gather(*(self._caller(stubs[i % 4], i) for i in range(CALLERS)))
        finally:
            for channel in channels:
                await channel.close()


async def swap_when_ready(
    callers: Callers, target: str, folder: Path
) -> reward_pb2.SwapModelResponse:
    await callers.enough_before.wait()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = reward_pb2_grpc.ModelAdminStub(channel)  # type: ignore[no-untyped-call]
        request = reward_pb2.SwapModelRequest(model="qwen", artifact=str(folder))
        reply: reward_pb2.SwapModelResponse = await stub.SwapModel(
            request, timeout=CALL_BOUND_S, metadata=AUTH
        )
    callers.swap_returned = True
    return reply


async def swap_under_load(
    swapping: ServerProcess, fresh: ServerProcess, versions: dict[str, Version]
) -> tuple[Callers, Callers, reward_pb2.SwapModelResponse]:
    callers = Callers(swapping.target, versions)
    swap = asyncio.create_task(swap_when_ready(callers, swapping.target, versions["v2"].folder))
    load = asyncio.create_task(callers.run())
    done, _ = await asyncio.wait({swap, load}, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        task.result()  # a failed swap or checker stops the test here
    await load
    reply = await swap
    baseline = Callers(fresh.target, versions)
    baseline.swap_returned = True  # the same calls, all on v2
    await baseline.run()
    return callers, baseline, reply


def test_a_swap_under_load_loses_nothing_and_returns_the_memory(
    servers: dict[str, ServerProcess], versions: dict[str, Version]
) -> None:
    swapping, fresh = servers["swapping"], servers["fresh"]
    start = time.monotonic()
    callers, baseline, reply = asyncio.run(swap_under_load(swapping, fresh, versions))
    took = time.monotonic() - start
    fresh_rss = rss_bytes(fresh.process.pid)
    end = time.monotonic() + SETTLE_BOUND_S
    while (after := rss_bytes(swapping.process.pid)) > 1.2 * fresh_rss and time.monotonic() < end:
        time.sleep(0.1)
    figures = {
        "outcomes": dict(callers.outcomes),
        "begun_after_swap": dict(callers.after_swap),
        "seconds": round(took, 1),
        "swap": {"load_s": round(reply.load_seconds, 2), "drain_s": round(reply.drain_seconds, 2)},
        "rss_after_swap_mib": round(after / MIB, 1),
        "rss_fresh_v2_mib": round(fresh_rss / MIB, 1),
    }
    print(json.dumps(figures))
    assert (reply.old_version, reply.new_version) == ("v1", "v2"), figures
    assert set(callers.outcomes) == {"v1", "v2"}, figures  # no failure, no third version
    assert set(callers.after_swap) == {"v2"}, figures
    assert sum(callers.after_swap.values()) == CALLERS * AFTER, figures
    assert set(baseline.outcomes) == {"v2"}, figures
    assert after <= 1.2 * fresh_rss, figures
