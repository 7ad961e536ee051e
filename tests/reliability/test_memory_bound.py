"""A real `rmserve serve` process under big and hostile requests stays within its documented
memory bound and gives the memory back afterwards.

Concurrently and repeatedly (bounded in count and time, loopback only): oversized requests just
under twice ``max_message_bytes`` (refused by gRPC before Python sees them), valid requests at
the size limit (admitted up to ``max_inflight_bytes``, RESOURCE_EXHAUSTED beyond it), and a
stream of small ``Score`` calls, every one of which must be answered. The server's RSS, sampled
from /proc throughout, never exceeds ``required_memory_bytes`` for its settings and model, and
returns to within 20% of its idle value (serving, after one small call of each kind) once the
burst is over.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from rmserve.engine.session import load_artifact
from rmserve.server.settings import ServerSettings
from rmserve.serving.activations import engine_activation_bytes, model_shape
from rmserve.serving.memory_budget import (
    MIB,
    default_inflight_bytes,
    folder_bytes,
    required_memory_bytes,
)
from rmserve.testing import ServerProcess, start_server
from rmserve.v1 import reward_pb2

LIMIT = 4 * MIB
QUEUE_PAIRS = 16384
ROUNDS = 3
CONCURRENT = 16  # of each kind per round
CALL_BOUND_S = 120.0  # "must not hang"; never a performance target
SETTLE_BOUND_S = 60.0
SCORE_BATCH = "/rmserve.v1.RewardService/ScoreBatch"
SCORE = "/rmserve.v1.RewardService/Score"


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def batch_bytes(size: int, pairs: int) -> bytes:
    """A serialized ScoreBatch of just under ``size`` bytes: ``pairs`` long responses."""
    text = "word " * ((size - 64 * pairs) // pairs // 5)
    request = reward_pb2.ScoreBatchRequest(
        pairs=[reward_pb2.Pair(prompt=f"q{i}", response=text) for i in range(pairs)]
    )
    raw = request.SerializeToString()
    assert size - 64 * 1024 < len(raw) <= size, len(raw)
    return raw


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            self._stop.wait(0.01)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def server(tiny_artifact: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    process = start_server(
        tiny_artifact, tmp_path / "server.log",
        "--max-message-bytes", str(LIMIT),
        "--max-queue-pairs", str(QUEUE_PAIRS),
    )  # fmt: skip
    try:
        process.wait_serving()
        yield process
    finally:
        process.terminate()


def test_rss_stays_within_the_bound_and_returns_after_a_burst(
    server: ServerProcess, tiny_artifact: Path
) -> None:
    artifact = load_artifact(tiny_artifact)
    max_length = artifact.manifest.preprocessing.max_length
    model_bytes = folder_bytes(tiny_artifact)
    activations = engine_activation_bytes(  # one engine worker: one intra-op thread
        model_shape(artifact.manifest, model_bytes), artifact.manifest.dtype, max_length,
        ServerSettings.model_fields["max_batch_tokens"].default, workers=1,
        long_batch_workers=0,
    )  # fmt: skip
    bound = required_memory_bytes(
        model_bytes, default_inflight_bytes(LIMIT), QUEUE_PAIRS, max_length, activations
    )
    oversized = batch_bytes(2 * LIMIT - 4096, 64)
    at_limit = batch_bytes(LIMIT, 64)
    normal = reward_pb2.ScoreRequest(prompt="how are you?", response="fine").SerializeToString()
    options = [("grpc.max_send_message_length", 4 * LIMIT)]
    outcomes: Counter[tuple[str, str]] = Counter()
    lock = threading.Lock()

    def call(kind: str, method: str, raw: bytes, channel: grpc.Channel) -> None:
        stub = channel.unary_unary(method)
        try:
            stub(raw, timeout=CALL_BOUND_S)
            code = "OK"
        except grpc.RpcError as e:
            code = e.code().name
        with lock:
            outcomes[(kind, code)] += 1

    burst_over = threading.Event()

    def normal_stream(channel: grpc.Channel) -> None:
        while not burst_over.is_set():
            call("normal", SCORE, normal, channel)

    # Idle: serving, after one small call of each kind has started the threads and buffers a
    # server keeps for its life (the tokenizer threads, gRPC's), before the burst.
    warm_up = reward_pb2.ScoreBatchRequest(
        pairs=[reward_pb2.Pair(prompt=f"q{i}", response="a") for i in range(32)]
    ).SerializeToString()
    with grpc.insecure_channel(server.target) as channel:
        for method, raw in ((SCORE, normal), (SCORE_BATCH, warm_up)):
            channel.unary_unary(method)(raw, timeout=CALL_BOUND_S)
    idle = rss_bytes(server.process.pid)
    with (
        grpc.insecure_channel(server.target, options=options) as big,
        grpc.insecure_channel(server.target) as small,
        RssSampler(server.process.pid) as sampler,
        ThreadPoolExecutor(2 * CONCURRENT + 1) as pool,
    ):
        stream = pool.submit(normal_stream, small)
        for _ in range(ROUNDS):
            calls = [pool.submit(call, "oversized", SCORE_BATCH, oversized, big)]
            calls += [pool.submit(call, "oversized", SCORE_BATCH, oversized, big)
                      for _ in range(CONCURRENT - 1)]  # fmt: skip
            calls += [pool.submit(call, "at_limit", SCORE_BATCH, at_limit, big)
                      for _ in range(CONCURRENT)]  # fmt: skip
            for future in calls:
                future.result()
        burst_over.set()
        stream.result()
    peak = sampler.peak
    end = time.monotonic() + SETTLE_BOUND_S
    while (after := rss_bytes(server.process.pid)) > 1.2 * idle and time.monotonic() < end:
        time.sleep(0.1)
    figures = {
        "idle_mib": round(idle / MIB, 1),
        "peak_mib": round(peak / MIB, 1),
        "after_mib": round(after / MIB, 1),
        "bound_mib": round(bound / MIB, 1),
        "outcomes": {f"{kind}:{code}": n for (kind, code), n in outcomes.items()},
    }
    print(json.dumps(figures))

    assert outcomes[("oversized", "RESOURCE_EXHAUSTED")] == ROUNDS * CONCURRENT, figures
    assert outcomes[("at_limit", "OK")] >= ROUNDS, figures  # at least one at a time got in
    at_limit_total = outcomes[("at_limit", "OK")] + outcomes[("at_limit", "RESOURCE_EXHAUSTED")]
    assert at_limit_total == ROUNDS * CONCURRENT, figures
    assert outcomes[("normal", "OK")] > 0, figures
    assert (
        sum(n for (kind, _), n in outcomes.items() if kind == "normal")
        == outcomes[("normal", "OK")]
    ), figures
    assert peak <= bound, figures
    assert after <= 1.2 * idle, figures
