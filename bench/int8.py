"""int8 (``rmserve quantize``) against its fp32 source, in one run, on the mixed length set.

For each artifact, on the same pairs (prompt+response tokens uniform in 16..256):

  1. raw onnxruntime session, pairs sorted by length, at its best batch size
  2. the server (default settings) with 64 concurrent single-pair Score callers
  3. int8 only: the server under an open-loop load at half of (2)'s pairs/s, its p99 against
     one batch's mean service time (rmserve_inference_duration_seconds)

and the ratios int8 / fp32 of tokens/s. The gate figures come from the int8 manifest.

    .venv/bin/python bench/int8.py --fp32 A --int8 B --out bench/results/int8-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from throughput import make_pairs, raw_onnxruntime, server_run

from rmserve.artifact import read_manifest

MIX = (16, 256)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp32", type=Path, required=True)
    parser.add_argument("--int8", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per server run")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", default="", help="the machine's condition, for the record")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    load_before = os.getloadavg()
    started = time.time()
    pairs = make_pairs(args.fp32, args.pairs, args.seed, *MIX)
    single = {"mode": "score", "concurrency": 64, "duration_s": args.duration}
    runs: dict[str, dict[str, Any]] = {}
    for name, artifact in (("fp32", args.fp32), ("int8", args.int8)):
        runs[f"raw {name}"] = raw_onnxruntime(artifact, pairs, args.threads)
        runs[f"score64 {name}"] = server_run(
            f"mixed: server {name}, 64 Score callers", artifact, pairs, args.threads, [], single
        )
        print(name, {k: round(v["tokens_per_s"]) for k, v in runs.items()}, flush=True)
    half = 0.5 * runs["score64 int8"]["pairs_per_s"]
    open_loop = {"mode": "score", "concurrency": 64, "duration_s": args.duration, "rate": half}
    runs["open-loop int8"] = server_run(
        f"mixed: server int8, open loop at {half:.1f} pairs/s", args.int8, pairs, args.threads,
        [], open_loop,
    )  # fmt: skip
    service = runs["open-loop int8"]["mean_inference_s"]
    ratios = {
        "raw int8 / fp32 tokens/s": runs["raw int8"]["tokens_per_s"]
        / runs["raw fp32"]["tokens_per_s"],
        "server int8 / fp32 tokens/s": runs["score64 int8"]["tokens_per_s"]
        / runs["score64 fp32"]["tokens_per_s"],
        "open-loop int8 p99 / mean batch service time": runs["open-loop int8"]["p99_ms"]
        / 1000.0
        / service,
    }
    parity = read_manifest(args.int8).parity
    summary = {
        "fp32": str(args.fp32),
        "int8": str(args.int8),
        "mix_tokens": list(MIX),
        "pairs": len(pairs),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "duration_s_per_server_run": args.duration,
        "wall_s": time.time() - started,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "note": args.note,
        "int8_gates": parity.model_dump() if parity else None,
        "runs": runs,
        "ratios": ratios,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    for key, value in ratios.items():
        print(f"{key}: {value:.3f}")


if __name__ == "__main__":
    main()
