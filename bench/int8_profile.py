"""Where the server's time goes, fp32 against int8: every engine batch the server forms, timed.

For each artifact and each session variant, on the same pairs (mixed, 16..256 tokens):

  1. the server runs in this process with an engine that records every batch (rows, padded
     length, real tokens, wall seconds) while a load-generator process drives 64 Score callers;
  2. the same recorded batches are replayed on the same engine with the server stopped and
     nothing else running: what those shapes cost the engine alone;
  3. the bare session at its best batch (``int8.raw_best``) for reference;
  4. with ``--open-loop``, the server at half the default run's pairs/s, open loop (unwarmed,
     so the server's latency histograms hold that run alone): where a request's time goes.

So the server's tokens/s splits into (a) the shapes it forms (replay tokens/s vs the bare best
batch), (b) what the server's other work on the same cores does to each engine run (in-server
seconds vs replay seconds per batch) and (c) the time the engine is idle (busy share).

    .venv/bin/python bench/int8_profile.py --fp32 A --int8 B --out bench/results/int8-profile.json
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from bench_record import add_record_arguments, finish_record, start_record
from int8 import MIX, raw_best
from throughput import make_pairs

from rmserve.engine.session import Engine, LoadedArtifact, OrtEngine
from rmserve.server.app import RewardServer
from rmserve.server.settings import ServerSettings
from rmserve.text.preprocess import PreparedPair
from rmserve.tools.loadtest import LoadPair, run


@dataclass(frozen=True)
class Variant:
    """onnxruntime config entries added to the server's session options, and server settings."""

    session: dict[str, str] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)


VARIANTS = {
    "default": Variant(),
    "no-spin": Variant(session={"session.intra_op.allow_spinning": "0"}),
}  # the "measured" variant went with its policy (docs/guides/serving.md#batch-policy)


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
        self.thread_id = 0  # the server's engine thread (runs the session's first share)
        self.pool_thread_ids: set[int] = set()  # onnxruntime's intra-op pool
        self._lock = threading.Lock()

    @property
    def provider(self) -> str:
        return self.inner.provider

    @property
    def device(self) -> str:
        return self.inner.device

    def score(self, pairs: Sequence[PreparedPair]) -> np.ndarray:
        self.thread_id = threading.get_native_id()
        started = time.perf_counter()
        rewards = self.inner.score(pairs)
        with self._lock:
            self.batches.append(Batch(tuple(pairs), started, time.perf_counter() - started))
        return rewards


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SAMPLE_EVERY_S = 0.25


def thread_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of each thread of this process, by native thread id."""
    seconds = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        seconds[int(task.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return seconds


class CpuSampler:
    """Samples every thread's CPU time until stopped, so a window can be cut afterwards."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, dict[int, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-cpu-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), thread_cpu()))
            self._stop.wait(SAMPLE_EVERY_S)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, end: float) -> tuple[float, float, dict[int, float]]:
        """(first sample time, last sample time, CPU seconds per thread) inside the window."""
        inside = [sample for sample in self.samples if start <= sample[0] <= end]
        (t0, first), (t1, last) = inside[0], inside[-1]
        return t0, t1, {tid: cpu - first.get(tid, 0.0) for tid, cpu in last.items()}


def session_factory(config: dict[str, str]) -> Callable[..., ort.InferenceSession]:
    def make(path: str, options: ort.SessionOptions, **kwargs: Any) -> ort.InferenceSession:
        for key, value in config.items():
            options.add_session_config_entry(key, value)
        return ort.InferenceSession(path, options, **kwargs)

    return make


def _load(
    target: str, pairs: list[LoadPair], duration_s: float, rate: float | None, out: Any
) -> None:
    if rate is None:  # closed loop; open loop goes unwarmed, so the server's histograms hold it
        run(target, pairs[:64], mode="score", concurrency=64, duration_s=2.0)
    started = time.perf_counter()  # CLOCK_MONOTONIC: the same clock in the server's process
    load = {"mode": "score", "concurrency": 64, "duration_s": duration_s, "rate": rate}
    summary = run(target, pairs, **load).summary()
    out.put({**summary, "window": [started, time.perf_counter()]})


def latency_split(registry: Any) -> dict[str, dict[str, float]]:
    """Server-side latency histograms: count, mean and the share above 50 and 100 ms."""
    split: dict[str, dict[str, float]] = {}
    for family in registry.collect():
        if family.name not in LATENCY_PARTS:
            continue
        above: dict[float, float] = {}
        total = count = 0.0
        for sample in family.samples:
            if sample.labels.get("method", "Score") != "Score":
                continue
            if sample.name.endswith("_bucket"):
                above[float(sample.labels["le"])] = sample.value
            elif sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_count"):
                count = sample.value
        split[LATENCY_PARTS[family.name]] = {
            "count": count,
            "mean_ms": 1000 * total / max(count, 1.0),
            "share_over_50ms": 1 - above.get(0.05, 0.0) / max(count, 1.0),
            "share_over_100ms": 1 - above.get(0.1, 0.0) / max(count, 1.0),
        }
    return split


LATENCY_PARTS = {
    "rmserve_request_duration_seconds": "request (server side)",
    "rmserve_tokenize_duration_seconds": "tokenise",
    "rmserve_queue_duration_seconds": "queue (until its batch is submitted)",
    "rmserve_inference_duration_seconds": "engine, per batch",
}


async def serve_under_load(
    artifact: Path, pairs: list[LoadPair], threads: int, variant: Variant, duration_s: float,
    rate: float | None = None,
) -> tuple[RecordingEngine, dict[str, Any]]:  # fmt: skip
    built: list[RecordingEngine] = []

    def factory(loaded: LoadedArtifact, s: ServerSettings) -> Engine:
        before = set(thread_cpu())
        inner = OrtEngine(loaded, "cpu", threads, session_factory=session_factory(variant.session))
        built.append(RecordingEngine(inner))
        built[0].pool_thread_ids = set(thread_cpu()) - before
        return built[0]

    # One batch at a time, as before engine workers: the replays run its batches one by one.
    settings = ServerSettings(
        artifact=artifact, host="127.0.0.1", port=0, metrics_port=0, provider="cpu",
        intra_op_threads=threads, engine_workers=1, **variant.server,
    )  # fmt: skip
    server = RewardServer(settings, factory)
    await server.start()
    try:
        await server.load()
        queue = multiprocessing.get_context("spawn").Queue()
        generator = multiprocessing.get_context("spawn").Process(
            target=_load, args=(f"127.0.0.1:{server.port}", pairs, duration_s, rate, queue)
        )
        with CpuSampler() as sampler:
            generator.start()
            summary: dict[str, Any] = await asyncio.to_thread(queue.get, True, 900)
        await asyncio.to_thread(generator.join, 60)
    finally:
        await server.stop()
    summary["cpu"] = cpu_by_role(built[0], sampler, *summary["window"])
    summary["server_latency"] = latency_split(server.metrics.registry)
    return built[0], summary


def cpu_by_role(
    engine: RecordingEngine, sampler: CpuSampler, start: float, end: float
) -> dict[str, Any]:
    """Cores used by each role in the server process while the load ran, and CPU ms per pair
    (pairs: those of the batches that ran in the same span)."""
    t0, t1, used = sampler.between(start, end)
    named = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    roles: dict[str, float] = {}
    for tid, seconds in used.items():
        if tid == engine.thread_id:
            role = "engine thread"
        elif tid in engine.pool_thread_ids:
            role = "onnxruntime pool threads"
        elif tid == threading.main_thread().native_id:
            role = "event loop (gRPC handlers, batcher)"
        elif named.get(tid, "").startswith("rmserve-tokenize"):
            role = "tokenizer threads"
        elif named.get(tid, "").startswith("bench-"):
            continue  # this benchmark's own sampler
        else:
            role = "other threads (gRPC core, metrics)"
        roles[role] = roles.get(role, 0.0) + seconds
    pairs = sum(len(b.pairs) for b in engine.batches if t0 <= b.started <= t1)
    return {
        "span_s": t1 - t0,
        "pairs": pairs,
        "cores": {role: cpu / (t1 - t0) for role, cpu in sorted(roles.items())},
        "cpu_ms_per_pair": {
            role: 1000 * cpu / max(pairs, 1) for role, cpu in sorted(roles.items())
        },
    }


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
    artifact: Path, pairs: list[LoadPair], threads: int, variant: str, duration_s: float,
    rate: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    chosen = VARIANTS[variant]
    engine, summary = asyncio.run(
        serve_under_load(artifact, pairs, threads, chosen, duration_s, rate)
    )
    start, end = summary.pop("window")
    window = [b for b in engine.batches if start <= b.started and b.started + b.seconds <= end]
    alone = replay(engine.inner, window)
    # The same batches shortest first, as the bare run meets its shapes: any cost of the order.
    in_order = replay(engine.inner, sorted(window, key=lambda b: b.padded_tokens // len(b.pairs)))
    served = [b.seconds for b in window]
    real = sum(b.real_tokens for b in window)
    padded = sum(b.padded_tokens for b in window)
    return {
        "artifact": str(artifact),
        "variant": variant,
        "session_config": chosen.session,
        "server_settings": chosen.server,
        "server_tokens_per_s": summary["tokens_per_s"],
        "server_pairs_per_s": summary["pairs_per_s"],
        "client_p50_ms": summary["p50_ms"],
        "server_p99_ms": summary["p99_ms"],
        "server_latency": summary["server_latency"],
        "open_loop_rate": rate,
        "load_generator_cpu_share": summary["client_cpu_s"] / summary["duration_s"],
        "server_cpu": summary["cpu"],
        "batches": len(window),
        "mean_rows": float(np.mean([len(b.pairs) for b in window])),
        "padding_ratio": padded / real,
        "engine_busy_share": sum(served) / (end - start),
        "in_server_s_per_batch": float(np.mean(served)),
        "replayed_alone_s_per_batch": float(np.mean(alone)),
        "in_server_over_alone": sum(served) / sum(alone),
        "in_server_engine_tokens_per_s": real / sum(served),
        "replayed_alone_tokens_per_s": real / sum(alone),
        "replayed_alone_sorted_tokens_per_s": real / sum(in_order),
        "by_rows_in_server": by_rows(window, served),
        "by_rows_alone": by_rows(window, alone),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp32", type=Path, required=True)
    parser.add_argument("--int8", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument(
        "--open-loop", action="store_true",
        help="also an open-loop run at half the default server's pairs/s, latency split",
    )  # fmt: skip
    add_record_arguments(parser, duration=8.0)
    args = parser.parse_args()
    if args.open_loop and "default" not in args.variants:
        parser.error("--open-loop paces from the default variant: include it in --variants")

    record = start_record(args)
    pairs = make_pairs(args.fp32, args.pairs, args.seed, *MIX)
    runs: dict[str, dict[str, Any]] = {}
    for name, artifact in (("fp32", args.fp32), ("int8", args.int8)):
        runs[f"raw {name}"] = raw_best(artifact, pairs, args.threads)
        for variant in args.variants:
            key = f"server {name} {variant}"
            runs[key] = profile(artifact, pairs, args.threads, variant, args.duration)
            got = runs[key]
            print(
                f"{key}: server {got['server_tokens_per_s']:.0f} tok/s, engine in server "
                f"{got['in_server_engine_tokens_per_s']:.0f}, replayed alone "
                f"{got['replayed_alone_tokens_per_s']:.0f} (sorted "
                f"{got['replayed_alone_sorted_tokens_per_s']:.0f}), bare best "
                f"{runs[f'raw {name}']['tokens_per_s']:.0f}; rows {got['mean_rows']:.2f}, busy "
                f"{got['engine_busy_share']:.2f}, in-server/alone "
                f"{got['in_server_over_alone']:.2f}",
                flush=True,
            )
            cores = got["server_cpu"]["cores"]
            print("  cores: " + ", ".join(f"{k} {v:.2f}" for k, v in cores.items()), flush=True)
        if args.open_loop:  # half of the default variant's pairs/s, where the p99 goal is set
            rate = 0.5 * runs[f"server {name} default"]["server_pairs_per_s"]
            got = profile(artifact, pairs, args.threads, "default", args.duration, rate)
            runs[f"open-loop {name}"] = got
            print(f"open loop {name} at {rate:.1f} pairs/s: client p50 {got['client_p50_ms']:.0f}"
                  f" ms, p99 {got['server_p99_ms']:.0f} ms", flush=True)  # fmt: skip
            for part, figures in got["server_latency"].items():
                print(f"  {part}: " + ", ".join(f"{k} {v:.3g}" for k, v in figures.items()))
    finish_record(record, args, {"fp32": str(args.fp32), "int8": str(args.int8), "runs": runs})


if __name__ == "__main__":
    main()
