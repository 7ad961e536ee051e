"""int8 (``rmserve quantize``) against its fp32 source, in one run, on the mixed length set.

For each artifact, on the same pairs (prompt+response tokens uniform in 16..256):

  1. raw onnxruntime session, pairs sorted by length, at its best batch size
  2. the server (default settings) with 64 concurrent single-pair Score callers, ``--repeats``
     times, fp32 and int8 alternating (single runs of this mix vary by about ±10% on a 2-core
     machine); the ratio is the median of the runs' ratios
  3. the server under an open-loop load at half of (2)'s pairs/s, its p99 against one batch's
     mean service time (rmserve_inference_duration_seconds) there and in (2)

and the ratios int8 / fp32 of tokens/s. The gate figures come from the int8 manifest.
``bench/int8_profile.py`` explains the server figure batch by batch.

    .venv/bin/python bench/int8.py --fp32 A --int8 B --out bench/results/int8-cpu.json
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from bench_record import add_record_arguments, finish_record, start_record
from throughput import RAW_BATCH_SIZES, make_pairs, raw_onnxruntime, raw_rate, server_run

from rmserve.artifact.folder import read_manifest
from rmserve.engine.session import OrtEngine, load_artifact

MIX = (16, 256)


def raw_best(artifact: Path, pairs: list[Any], threads: int) -> dict[str, Any]:
    """A bare onnxruntime session on ``pairs``, sorted by length, at its best batch size."""
    loaded = load_artifact(artifact)
    engine = OrtEngine(loaded, "cpu", threads)
    prepared = loaded.preprocessor.prepare_many(
        [p.prompt for p in pairs], [p.response for p in pairs]
    )
    raw = raw_onnxruntime(engine, prepared, RAW_BATCH_SIZES)
    raw_rate(raw, prepared)
    return raw


def open_loop_p99(
    name: str, artifact: Path, pairs: list[Any], threads: int, closed: dict[str, Any],
    duration_s: float,
) -> dict[str, Any]:  # fmt: skip
    """The server at half of ``closed``'s pairs/s (the full-load runs' median): p99 against one
    batch's mean service time at that load and at full load."""
    rate = 0.5 * closed["pairs_per_s"]
    load = {"mode": "score", "concurrency": 64, "duration_s": duration_s, "rate": rate}
    got = server_run(
        f"mixed: server {name}, open loop at {rate:.1f} pairs/s", artifact, pairs, threads, [],
        load,
    )  # fmt: skip
    got["rate_pairs_per_s"] = rate
    got["p99_over_batch_service_time"] = got["p99_ms"] / 1000.0 / got["mean_inference_s"]
    # The batches at half load are mostly single pairs; a batch at full load is bigger.
    got["p99_over_full_load_batch_service_time"] = (
        got["p99_ms"] / 1000.0 / closed["mean_inference_s"]
    )
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp32", type=Path, required=True)
    parser.add_argument("--int8", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="server runs per artifact")
    parser.add_argument("--no-open-loop", action="store_true", help="skip the open-loop runs")
    add_record_arguments(parser, duration=10.0)
    args = parser.parse_args()

    record = start_record(args)
    pairs = make_pairs(args.fp32, args.pairs, args.seed, *MIX)
    artifacts = {"fp32": args.fp32, "int8": args.int8}
    single = {"mode": "score", "concurrency": 64, "duration_s": args.duration}
    runs: dict[str, dict[str, Any]] = {}
    for name, artifact in artifacts.items():
        runs[f"raw {name}"] = raw_best(artifact, pairs, args.threads)
    server_ratios = []
    for repeat in range(args.repeats):  # fp32 and int8 alternate, so drift hits both
        for name, artifact in artifacts.items():
            runs[f"score64 {name} #{repeat}"] = server_run(
                f"mixed: server {name}, 64 Score callers, run {repeat}", artifact, pairs,
                args.threads, [], single,
            )  # fmt: skip
        fp32, int8 = (runs[f"score64 {name} #{repeat}"]["tokens_per_s"] for name in artifacts)
        server_ratios.append(int8 / fp32)
        print(f"run {repeat}: server fp32 {fp32:.0f}, int8 {int8:.0f} tokens/s", flush=True)
    if not args.no_open_loop:
        for name, artifact in artifacts.items():
            closed = [runs[f"score64 {name} #{repeat}"] for repeat in range(args.repeats)]
            full_load = {
                key: statistics.median(run[key] for run in closed)
                for key in ("pairs_per_s", "mean_inference_s")
            }
            runs[f"open-loop {name}"] = open_loop_p99(
                name, artifact, pairs, args.threads, full_load, args.duration
            )
    ratios = {
        "raw int8 / fp32 tokens/s": runs["raw int8"]["tokens_per_s"]
        / runs["raw fp32"]["tokens_per_s"],
        "server int8 / fp32 tokens/s, median of runs": statistics.median(server_ratios),
    }
    for name in ("fp32", "int8") if not args.no_open_loop else ():
        got = runs[f"open-loop {name}"]
        ratios[f"open-loop {name} p99 / its mean batch service time"] = got[
            "p99_over_batch_service_time"
        ]
        ratios[f"open-loop {name} p99 / full-load mean batch service time"] = got[
            "p99_over_full_load_batch_service_time"
        ]
    parity = read_manifest(args.int8).parity
    figures = {
        "fp32": str(args.fp32),
        "int8": str(args.int8),
        "mix_tokens": list(MIX),
        "pairs": len(pairs),
        "int8_gates": parity.model_dump() if parity else None,
        "runs": runs,
        "server_ratio_by_run": server_ratios,
        "ratios": ratios,
    }
    finish_record(record, args, figures)
    for key, value in ratios.items():
        print(f"{key}: {value:.3f}")


if __name__ == "__main__":
    main()
