"""Where the server's time goes, fp32 against int8: every engine batch the server forms, timed.

For each artifact and each session variant, on the same pairs (mixed, 16..256 tokens):

  1. the server runs in this process with an engine that records every batch (rows, padded
     length, real tokens, wall seconds) while a load-generator process drives 64 Score callers;
  2. the same recorded batches are replayed on the same engine with the server stopped and
     nothing else running: what those shapes cost the engine alone;
  3. the bare session at its best batch (``throughput.raw_onnxruntime``) for reference.

So the server's tokens/s splits into (a) the shapes it forms (replay tokens/s vs the bare best
batch), (b) what the server's other work on the same cores does to each engine run (in-server
seconds vs replay seconds per batch) and (c) the time the engine is idle (busy share).

    .venv/bin/python bench/int8_profile.py --fp32 A --int8 B --out bench/results/int8-profile.json
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from bench_record import add_record_arguments, finish_record, start_record
from int8 import MIX
from throughput import make_pairs, raw_onnxruntime

from rmserve.engine import Engine, LoadedArtifact, OrtEngine
from rmserve.loadtest import LoadPair, run
from rmserve.preprocess import PreparedPair
from rmserve.server import RewardServer
from rmserve.settings import ServerSettings

# Session variants: onnxruntime config entries added to the server's own session options.
VARIANTS: dict[str, dict[str, str]] = {
    "default": {},
    "no-spin": {"session.intra_op.allow_spinning": "0"},
}


@dataclass(frozen=True)
class Batch:
    pairs: tuple[PreparedPair, ...]
    started: float
    seconds: float

    @property
    def padded_tokens(self) -> int:
        return len(self.pairs) * max(p.num_tokens for p in self.pairs)

    @property
    def real_tokens(self) -> int:
        return sum(p.num_tokens for p in self.pairs)


class RecordingEngine:
    """The server's engine, timing every batch it is given."""

    def __init__(self, inner: OrtEngine) -> None:
        self.inner = inner
        self.batches: list[Batch] = []
        self._lock = threading.Lock()

    @property
    def provider(self) -> str:
        return self.inner.provider

    @property
    def device(self) -> str:
        return self.inner.device

    def score(self, pairs: Sequence[PreparedPair]) -> np.ndarray:
        started = time.perf_counter()
        rewards = self.inner.score(pairs)
        with self._lock:
            self.batches.append(Batch(tuple(pairs), started, time.perf_counter() - started))
        return rewards


def session_factory(config: dict[str, str]) -> Callable[..., ort.InferenceSession]:
    def make(path: str, options: ort.SessionOptions, **kwargs: Any) -> ort.InferenceSession:
        for key, value in config.items():
            options.add_session_config_entry(key, value)
        return ort.InferenceSession(path, options, **kwargs)

    return make


def _load(target: str, pairs: list[LoadPair], duration_s: float, out: Any) -> None:
    run(target, pairs[:64], mode="score", concurrency=64, duration_s=2.0)  # warm the channel
    started = time.perf_counter()  # CLOCK_MONOTONIC: the same clock in the server's process
    summary = run(target, pairs, mode="score", concurrency=64, duration_s=duration_s).summary()
    out.put({**summary, "window": [started, time.perf_counter()]})


async def serve_under_load(
    artifact: Path, pairs: list[LoadPair], threads: int, config: dict[str, str], duration_s: float
) -> tuple[RecordingEngine, dict[str, Any]]:
    built: list[RecordingEngine] = []

    def factory(loaded: LoadedArtifact, s: ServerSettings) -> Engine:
        inner = OrtEngine(loaded, "cpu", threads, session_factory=session_factory(config))
        built.append(RecordingEngine(inner))
        return built[0]

    settings = ServerSettings(
        artifact=artifact, host="127.0.0.1", port=0, metrics_port=0, provider="cpu",
        intra_op_threads=threads,
    )  # fmt: skip
    server = RewardServer(settings, factory)
    await server.start()
    try:
        await server.load()
        queue = multiprocessing.get_context("spawn").Queue()
        generator = multiprocessing.get_context("spawn").Process(
            target=_load, args=(f"127.0.0.1:{server.port}", pairs, duration_s, queue)
        )
        generator.start()
        summary: dict[str, Any] = await asyncio.to_thread(queue.get, True, 900)
        await asyncio.to_thread(generator.join, 60)
    finally:
        await server.stop()
    return built[0], summary


def replay(engine: OrtEngine, batches: Sequence[Batch]) -> list[float]:
    engine.score(list(batches[0].pairs))
    seconds = []
    for batch in batches:
        started = time.perf_counter()
        engine.score(list(batch.pairs))
        seconds.append(time.perf_counter() - started)
    return seconds


def by_rows(batches: Sequence[Batch], seconds: Sequence[float]) -> dict[str, dict[str, float]]:
    groups: dict[int, list[int]] = {}
    for i, batch in enumerate(batches):
        groups.setdefault(len(batch.pairs), []).append(i)
    return {
        str(rows): {
            "batches": len(idx),
            "mean_padded_length": float(np.mean([batches[i].padded_tokens / rows for i in idx])),
            "mean_seconds": float(np.mean([seconds[i] for i in idx])),
        }
        for rows, idx in sorted(groups.items())
    }


def profile(
    artifact: Path, pairs: list[LoadPair], threads: int, variant: str, duration_s: float
) -> dict[str, Any]:
    config = VARIANTS[variant]
    engine, summary = asyncio.run(serve_under_load(artifact, pairs, threads, config, duration_s))
    start, end = summary.pop("window")
    window = [b for b in engine.batches if start <= b.started and b.started + b.seconds <= end]
    alone = replay(engine.inner, window)
    served = [b.seconds for b in window]
    real = sum(b.real_tokens for b in window)
    padded = sum(b.padded_tokens for b in window)
    return {
        "artifact": str(artifact),
        "variant": variant,
        "session_config": config,
        "server_tokens_per_s": summary["tokens_per_s"],
        "server_p99_ms": summary["p99_ms"],
        "load_generator_cpu_share": summary["client_cpu_s"] / summary["duration_s"],
        "batches": len(window),
        "mean_rows": float(np.mean([len(b.pairs) for b in window])),
        "padding_ratio": padded / real,
        "engine_busy_share": sum(served) / (end - start),
        "in_server_s_per_batch": float(np.mean(served)),
        "replayed_alone_s_per_batch": float(np.mean(alone)),
        "in_server_over_alone": sum(served) / sum(alone),
        "in_server_engine_tokens_per_s": real / sum(served),
        "replayed_alone_tokens_per_s": real / sum(alone),
        "by_rows_in_server": by_rows(window, served),
        "by_rows_alone": by_rows(window, alone),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp32", type=Path, required=True)
    parser.add_argument("--int8", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    add_record_arguments(parser, duration=8.0)
    args = parser.parse_args()

    record = start_record(args)
    pairs = make_pairs(args.fp32, args.pairs, args.seed, *MIX)
    runs: dict[str, dict[str, Any]] = {}
    for name, artifact in (("fp32", args.fp32), ("int8", args.int8)):
        runs[f"raw {name}"] = raw_onnxruntime(artifact, pairs, args.threads)
        for variant in args.variants:
            key = f"server {name} {variant}"
            runs[key] = profile(artifact, pairs, args.threads, variant, args.duration)
            got = runs[key]
            print(
                f"{key}: server {got['server_tokens_per_s']:.0f} tok/s, engine in server "
                f"{got['in_server_engine_tokens_per_s']:.0f}, replayed alone "
                f"{got['replayed_alone_tokens_per_s']:.0f}, bare best "
                f"{runs[f'raw {name}']['tokens_per_s']:.0f}; rows {got['mean_rows']:.2f}, busy "
                f"{got['engine_busy_share']:.2f}, in-server/alone "
                f"{got['in_server_over_alone']:.2f}",
                flush=True,
            )
    finish_record(record, args, {"fp32": str(args.fp32), "int8": str(args.int8), "runs": runs})


if __name__ == "__main__":
    main()
