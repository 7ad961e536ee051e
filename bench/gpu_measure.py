"""Measurements for ``bench/gpu_check.py``: the bare engine (best batch, IO binding vs plain run,
first run of a shape after warm-up) and a served artifact (GetModelInfo, batch invariance,
ScoreBatch and many-caller Score throughput). Provider-agnostic: the same code runs on CPU in
``tests/integration/test_gpu_check.py``."""

from __future__ import annotations

import asyncio
import random
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
