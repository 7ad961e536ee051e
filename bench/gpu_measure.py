"""Measurements for ``bench/gpu_check.py``: the bare engine (best batch, IO binding vs plain run,
first run of a shape after warm-up) and a served artifact (GetModelInfo, batch invariance,
ScoreBatch and many-caller Score throughput). Provider-agnostic: the same code runs on CPU in
``tests/integration/test_gpu_check.py``."""

from __future__ import annotations

import asyncio
import random
import resource
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from rmserve.engine.padding import pad_batch
from rmserve.engine.session import OrtEngine, ProviderChoice, load_artifact
from rmserve.testing import start_server
from rmserve.text.preprocess import PreparedPair
from rmserve.v1 import reward_pb2, reward_pb2_grpc

INVARIANCE_BATCH = 16


def load_pairs(
    words: Sequence[str], count: int, seed: int, longest_words: int = 60
) -> list[tuple[str, str]]:
    """Prompt and response of 0..``longest_words`` of ``words`` each: a mix of lengths."""
    rng = random.Random(seed)
    return [
        (
            " ".join(rng.choices(words, k=rng.randint(0, longest_words))),
            " ".join(rng.choices(words, k=rng.randint(0, longest_words))),
        )
        for _ in range(count)
    ]


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def raw_engine(
    artifact: Path,
    provider: ProviderChoice,
    pairs: Sequence[tuple[str, str]],
    batch_sizes: Sequence[int],
    rounds: int,
) -> dict[str, Any]:
    """Pairs/s of the bare engine over ``pairs`` sorted by length and cut into batches of each
    size (the best the server could do with the whole set in view), the IO-bound run against a
    plain ``session.run`` at the best size, and the first and second run of a shape that
    warm-up never saw."""
    engine = OrtEngine(load_artifact(artifact), provider=provider)
    prepared = engine.artifact.preprocessor.prepare_many(
        [p for p, _ in pairs], [r for _, r in pairs]
    )
    ordered = sorted(prepared, key=lambda p: p.num_tokens)

    def batches(size: int) -> list[list[PreparedPair]]:
        return [ordered[i : i + size] for i in range(0, len(ordered), size)]

    def run_all(size: int, score: Any) -> float:
        chunks = batches(size)
        for chunk in chunks:  # untimed: first runs of these shapes
            score(chunk)
        best = min(_timed(lambda: [score(c) for c in chunks]) for _ in range(rounds))
        return len(ordered) / best

    manifest = engine.artifact.manifest

    def plain(chunk: list[PreparedPair]) -> np.ndarray:
        feed = pad_batch(chunk, manifest.preprocessing.pad_token_id, manifest.input_names)
        return np.asarray(engine.session.run([manifest.output_name], feed)[0])

    sample = prepared[:INVARIANCE_BATCH]  # unsorted: short and long pairs share the batch
    alone = np.array([engine.score([pair])[0] for pair in sample])
    in_batch = engine.score(sample)
    per_size = {size: run_all(size, engine.score) for size in batch_sizes}
    best = max(per_size, key=lambda size: per_size[size])
    unseen = [ordered[-1]] * 3  # 3 rows at the longest length: not a power of two
    first = _timed(lambda: engine.score(unseen))
    later = min(_timed(lambda: engine.score(unseen)) for _ in range(3))
    return {
        "provider": engine.provider,
        "device": engine.device,
        "pairs": len(ordered),
        "rewards_alone": alone.tolist(),
        "batch_invariance_max_abs_diff": float(np.max(np.abs(alone - in_batch))),
        "invariance_batch_padded_length": max(p.num_tokens for p in sample),
        "tokens_per_pair_mean": float(np.mean([p.num_tokens for p in ordered])),
        "pairs_per_second_by_batch": {str(k): round(v, 2) for k, v in per_size.items()},
        "best_batch": best,
        "best_pairs_per_second": round(per_size[best], 2),
        "plain_run_pairs_per_second_at_best": round(run_all(best, plain), 2),
        "unseen_shape_first_run_ms": round(first * 1e3, 3),
        "unseen_shape_later_run_ms": round(later * 1e3, 3),
    }


async def _score_batch_rate(
    stub: Any, pairs: Sequence[tuple[str, str]], request_pairs: int, seconds: float
) -> float:
    requests = [
        reward_pb2.ScoreBatchRequest(
            pairs=[reward_pb2.Pair(prompt=p, response=r) for p, r in pairs[i : i + request_pairs]]
        )
        for i in range(0, len(pairs), request_pairs)
    ]
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for request in requests:
            await stub.ScoreBatch(request, timeout=120)
            done += len(request.pairs)
    return done / (time.perf_counter() - start)


async def _score_rate(
    stubs: Sequence[Any], pairs: Sequence[tuple[str, str]], callers: int, seconds: float
) -> float:
    done = 0
    end = time.perf_counter() + seconds

    async def caller(k: int) -> None:
        nonlocal done
        stub, i = stubs[k % len(stubs)], k
        while time.perf_counter() < end:
            prompt, response = pairs[i % len(pairs)]
            await stub.Score(reward_pb2.ScoreRequest(prompt=prompt, response=response), timeout=120)
            done, i = done + 1, i + callers

    start = time.perf_counter()
    await asyncio.gather(*(caller(k) for k in range(callers)))
    return done / (time.perf_counter() - start)


async def _serve_measurements(
    target: str, pairs: Sequence[tuple[str, str]], callers: int, seconds: float
) -> dict[str, Any]:
    channels = [grpc.aio.insecure_channel(target) for _ in range(8)]
    try:
        stubs: list[Any] = [reward_pb2_grpc.RewardServiceStub(c) for c in channels]
        info = await stubs[0].GetModelInfo(reward_pb2.GetModelInfoRequest(), timeout=60)
        sample = list(pairs[:INVARIANCE_BATCH])
        alone = [
            (await stubs[0].Score(reward_pb2.ScoreRequest(prompt=p, response=r), timeout=60)).reward
            for p, r in sample
        ]
        batch = await stubs[0].ScoreBatch(
            reward_pb2.ScoreBatchRequest(
                pairs=[reward_pb2.Pair(prompt=p, response=r) for p, r in sample]
            ),
            timeout=60,
        )
        in_batch = [r.reward for r in batch.results]
        score_batch = await _score_batch_rate(stubs[0], pairs, 256, seconds)
        score = await _score_rate(stubs, pairs, callers, seconds)
    finally:
        for channel in channels:
            await channel.close()
    return {
        "model_info": {
            "provider": info.provider, "device": info.device, "dtype": info.dtype,
            "parameters": info.parameters, "max_batch_size": info.max_batch_size,
            "parity_status": info.parity.status, "parity_provider": info.parity.provider,
        },
        "rewards_alone": alone,
        "batch_invariance_max_abs_diff": float(np.max(np.abs(np.subtract(alone, in_batch)))),
        "score_batch_pairs_per_second": round(score_batch, 2),
        "score_pairs_per_second": round(score, 2),
        "score_callers": callers,
    }  # fmt: skip


def served(
    artifact: Path,
    provider: ProviderChoice,
    pairs: Sequence[tuple[str, str]],
    callers: int,
    seconds: float,
    log: Path,
    serve_flags: Sequence[str],
) -> dict[str, Any]:
    """Start ``rmserve serve`` on ``artifact``, measure it, stop it (exit code recorded)."""
    start = time.perf_counter()
    server = start_server(
        artifact, log, "--provider", provider, "--intra-op-threads", "0", *serve_flags
    )
    try:
        server.wait_serving(timeout=600)
        result = {"seconds_to_serving": round(time.perf_counter() - start, 1)}
        result |= asyncio.run(_serve_measurements(server.target, pairs, callers, seconds))
    finally:
        result_code = server.terminate()
    return result | {"exit_code": result_code}


class PeakGpuMemory:
    """The device's used memory (nvidia-smi, MiB), polled every 50 ms while the block runs;
    None where there is no nvidia-smi (the CPU test)."""

    def __init__(self) -> None:
        self.peak_mib: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    @staticmethod
    def used_mib() -> int | None:
        if shutil.which("nvidia-smi") is None:
            return None
        query = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]
        done = subprocess.run(query, capture_output=True, text=True, check=False)
        lines = done.stdout.split()
        return int(lines[0]) if done.returncode == 0 and lines else None

    def _poll(self) -> None:
        while not self._stop.is_set():
            used = self.used_mib()
            if used is not None:
                self.peak_mib = max(self.peak_mib or 0, used)
            self._stop.wait(0.05)

    def __enter__(self) -> PeakGpuMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def long_pairs_engine(
    artifact: Path, provider: ProviderChoice, lengths: Sequence[int]
) -> dict[str, Any]:
    """One pair of exactly L tokens scored alone, per length: first and second run, tokens/s
    of the second, peak device memory (GPU) and process peak RSS. The graph takes any length;
    the artifact's max_length only bounds what the preprocessor keeps."""
    engine = OrtEngine(load_artifact(artifact), provider=provider)
    rows = []
    for length in lengths:
        ids = np.array([(7 + i) % 900 + 50 for i in range(length)], dtype=np.int64)
        pair = PreparedPair(ids, np.zeros(length, dtype=np.int64), False, False)
        idle_mib = PeakGpuMemory.used_mib()
        with PeakGpuMemory() as gpu:
            first = _timed(lambda p=pair: engine.score([p]))
            second = _timed(lambda p=pair: engine.score([p]))
        rows.append(
            {
                "tokens": length,
                "first_run_s": round(first, 3),
                "second_run_s": round(second, 3),
                "tokens_per_s": round(length / second, 1),
                "gpu_used_mib_before": idle_mib,
                "gpu_used_mib_peak": gpu.peak_mib,
                "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            }
        )
    return {"provider": engine.provider, "device": engine.device, "pairs": rows}
