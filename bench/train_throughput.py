"""Training throughput (pairs/s) of ``rmserve train``: 1 process against 2 torchrun processes
(DDP, and FSDP with ``--fsdp``) on CPU, in one run, same global batch, data and seed.

The 1-process baseline accumulates 2 micro-batches per step (``--grad-accum 2``) and uses every
core (torch's default threads); each of the 2 ranks runs 1 micro-batch with 1 thread (torchrun's
default), so both sides get the same cores. A second baseline, 1 process with 1 thread, shows
how much of the ratio is threading rather than the second process: on an oversubscribed
machine a multi-threaded process loses far more to preemption than single-threaded ones.
Throughput is measured between the first and the last optimiser step in metrics.jsonl
(start-up, tokenising, eval and export excluded); ratios are against "1 process". On a machine
with 2 cores shared with other work, 2 processes may not scale: the load average before and
after each case is recorded.

GPU bf16 vs fp32 needs a GPU; this script measures CPU only.

    .venv/bin/python bench/train_throughput.py --fsdp --out bench/results/train-throughput-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

TIMEOUT_S = 1800


def train_command(nproc: int, strategy: str) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "rmserve", "--log-level", "WARNING", "train"]
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",  # store on port 0
        "--nproc-per-node", str(nproc),
        "-m", "rmserve", "--log-level", "WARNING", "train", "--strategy", strategy,
    ]  # fmt: skip


def steady_pairs_per_s(work_dir: Path, train_pairs: int, global_batch: int) -> dict[str, float]:
    events = [json.loads(line) for line in (work_dir / "metrics.jsonl").open()]
    steps = [e for e in events if e["event"] == "train"]
    if len(steps) < 3:
        raise SystemExit("too few steps to measure: use more --pairs")
    seconds = steps[-1]["time"] - steps[0]["time"]
    last_step_pairs = train_pairs - global_batch * (len(steps) - 1)
    pairs = global_batch * (len(steps) - 2) + last_step_pairs  # steps 2..N
    return {"steps": len(steps), "pairs_measured": pairs, "seconds": seconds}


def run_case(
    name: str,
    nproc: int,
    threads: int | None,
    strategy: str,
    args: argparse.Namespace,
    data: Path,
    root: Path,
) -> dict[str, Any]:
    out = root / name
    flags = [
        "--train-data", str(data / "train.jsonl"), "--eval-data", str(data / "eval.jsonl"),
        "--out", str(out), "--base-model", args.base_model, "--max-length", str(args.max_length),
        "--batch-size", str(args.batch_size), "--grad-accum", str(2 // nproc),
        "--epochs", "1", "--seed", "0",
    ]  # fmt: skip
    if threads is not None:
        flags += ["--threads", str(threads)]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}
    load_before = os.getloadavg()[0]
    done = subprocess.run(
        [*train_command(nproc, strategy), *flags],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout.splitlines()[-1])
    measured = steady_pairs_per_s(
        out.with_name(out.name + ".work"), args.pairs, args.batch_size * 2
    )
    result = {
        "name": name,
        "processes": nproc,
        "strategy": strategy if nproc > 1 else None,
        "threads_per_process": threads or ("torch default" if nproc == 1 else 1),
        **measured,
        "pairs_per_s": measured["pairs_measured"] / measured["seconds"],
        "eval_accuracy": summary["eval_accuracy"],
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Raw JSON results.")
    parser.add_argument("--base-model", default="minilm", help="minilm, tiny or a folder.")
    parser.add_argument("--pairs", type=int, default=192, help="Training pairs (one epoch).")
    parser.add_argument("--batch-size", type=int, default=8, help="Pairs per micro-batch.")
    parser.add_argument("--max-length", type=int, default=128, help="Tokens per sequence.")
    parser.add_argument("--fsdp", action="store_true", help="Also run 2 processes with FSDP.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        data = root / "data"
        subprocess.run(
            [sys.executable, "-m", "rmserve", "demo-data", "--out", str(data),
             "--train", str(args.pairs), "--eval", "32"],
            check=True, capture_output=True, timeout=TIMEOUT_S,
        )  # fmt: skip
        cases = [
            ("1 process", 1, None, "ddp"),
            ("1 process, 1 thread", 1, 1, "ddp"),
            ("2 processes ddp", 2, None, "ddp"),
        ]
        if args.fsdp:
            cases.append(("2 processes fsdp", 2, None, "fsdp"))
        runs = [run_case(n, p, t, s, args, data, root) for n, p, t, s in cases]
    baseline = runs[0]["pairs_per_s"]
    report = {
        "machine": f"{os.cpu_count()} CPU cores, shared with other work while measured",
        "gpu": "none on this machine: bf16 vs fp32 on one GPU not measured",
        "base_model": args.base_model,
        "train_pairs": args.pairs,
        "global_batch": args.batch_size * 2,
        "max_length": args.max_length,
        "runs": runs,
        "ratio_vs_1_process": {r["name"]: r["pairs_per_s"] / baseline for r in runs[1:]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["ratio_vs_1_process"]))


if __name__ == "__main__":
    main()
