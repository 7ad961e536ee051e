"""Server throughput against bare onnxruntime, in one run, on three length mixes.

For each mix (prompt+response tokens uniform in short 16..64, mixed 16..256, long 256..512):

  1. raw onnxruntime session on pre-tokenised pairs, sorted by length, in its best batch size
  2. the server with 64 concurrent single-pair Score callers
  3. the server with ScoreBatch requests of 256 pairs

and 2-3 twice: ``before`` is the hand-tuned policy and the server's default (``--batch-policy
caps --max-batch-tokens 1024 --max-padding-ratio 1.05``), ``after`` batches cut by the cost model
the server measures at warm-up (``--batch-policy measured``, caps raised to their maxima so the
cost model decides alone, as when this benchmark's committed results were taken).
``--unbatched`` adds the server with batching off.

The load generator (``rmserve.loadtest``) runs in its own process and shares the cores with the
server; its CPU share is reported, and so is the machine's load average before and after. Use
a MiniLM artifact with max_length >= 512 (``rmserve train --base-model minilm --max-length 512``):
with the tiny test model the server's overhead dominates and the ratios mean nothing.

    .venv/bin/python bench/throughput.py --artifact A --out bench/results/throughput-mixes.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import time
from pathlib import Path
from typing import Any

from rmserve import testing
from rmserve.engine import OrtEngine, load_artifact
from rmserve.loadtest import LoadPair, run
from rmserve.preprocess import PreparedPair
from rmserve.testing import ServerProcess

MIXES = {"short": (16, 64), "mixed": (16, 256), "long": (256, 512)}
PAIRS = {"short": 1024, "mixed": 512, "long": 192}  # about the same tokens in each mix
BATCH_DEADLINE_S = 600.0  # a ScoreBatch of 256 long pairs takes tens of seconds on 2 cores
OLD_CAPS = ["--max-batch-tokens", "1024", "--max-padding-ratio", "1.05"]
NO_CAPS = ["--max-batch-tokens", "1048576", "--max-padding-ratio", "100"]
POLICIES = {
    "before": ["--batch-policy", "caps", *OLD_CAPS],
    "after": ["--batch-policy", "measured", *NO_CAPS],
}
RAW_BATCH_SIZES = (1, 4, 8, 16, 32)
_WORD_TEXT = (
    "the reward model scores each answer for helpful correct and polite replies while "
    "capital city river mountain number water light music garden paper window market "
    "teacher doctor simple bright quiet quickly often before after under over between"
)
WORDS = _WORD_TEXT.split()


def make_pairs(artifact: Path, count: int, seed: int, lo: int, hi: int) -> list[LoadPair]:
    """Pairs whose prompt+response token count (specials included) is uniform in lo..hi."""
    pre = load_artifact(artifact).preprocessor
    if pre.config.max_length < hi:
        raise SystemExit(f"the artifact's max_length {pre.config.max_length} is under {hi}")
    overhead = pre.prepare("", "").num_tokens
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        total = rng.randint(lo, hi) - overhead
        response_words = max(1, total // 3)
        prompt = " ".join(rng.choice(WORDS) for _ in range(total - response_words))
        response = " ".join(rng.choice(WORDS) for _ in range(response_words))
        pairs.append(LoadPair(prompt, response))
    return pairs


def raw_onnxruntime(artifact: Path, pairs: list[LoadPair], threads: int) -> dict[str, Any]:
    loaded = load_artifact(artifact)
    engine = OrtEngine(loaded, "cpu", threads)
    prepared = loaded.preprocessor.prepare_many(
        [p.prompt for p in pairs], [p.response for p in pairs]
    )
    prepared.sort(key=lambda p: p.num_tokens)
    real_tokens = sum(p.num_tokens for p in prepared)

    def timed(batch_size: int) -> float:
        batches: list[list[PreparedPair]] = [
            prepared[i : i + batch_size] for i in range(0, len(prepared), batch_size)
        ]
        engine.score(batches[0])
        start = time.perf_counter()
        for batch in batches:
            engine.score(batch)
        return time.perf_counter() - start

    by_size = {size: timed(size) for size in RAW_BATCH_SIZES}
    best = min(by_size, key=lambda size: by_size[size])
    seconds = min(timed(best), by_size[best])
    return {
        "name": "raw onnxruntime",
        "best_batch_size": best,
        "seconds_by_batch_size": by_size,
        "pairs_per_s": len(prepared) / seconds,
        "tokens_per_s": real_tokens / seconds,
    }


def start_server(artifact: Path, threads: int, extra: list[str]) -> ServerProcess:
    server = testing.start_server(artifact, None, "--intra-op-threads", str(threads), *extra)
    try:
        server.wait_serving()
    except AssertionError:
        server.kill()
        raise
    return server


def _load_process(target: str, pairs: list[LoadPair], kwargs: dict[str, Any], out: Any) -> None:
    warm = {k: v for k, v in kwargs.items() if k not in ("duration_s", "batch_size")}
    run(target, pairs[:64], duration_s=2.0, batch_size=16, **warm)
    out.put(run(target, pairs, **kwargs).summary())


def batch_figures(metrics_page: str) -> dict[str, Any]:
    """Mean batch size and padding ratio, and the cost table, from the server's /metrics."""
    samples: dict[str, float] = {}
    table: dict[str, float] = {}
    for line in metrics_page.splitlines():
        m = re.match(r"(rmserve_\w+?)(\{[^}]*\})? ([-+0-9.e]+|NaN)$", line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        if name == "rmserve_batch_cost_seconds":
            got = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            table[f"{got['rows']}x{got['padded_length']}"] = value
        elif not labels:
            samples[name] = value
    batches = samples.get("rmserve_batch_size_count", 0.0) or float("nan")
    return {
        "batches": samples.get("rmserve_batch_size_count", 0.0),
        "mean_batch_size": samples.get("rmserve_batch_size_sum", 0.0) / batches,
        "mean_padding_ratio": samples.get("rmserve_padding_ratio_sum", 0.0) / batches,
        "mean_inference_s": samples.get("rmserve_inference_duration_seconds_sum", 0.0) / batches,
        "cost_table_seconds": table,
    }


def server_run(
    name: str, artifact: Path, pairs: list[LoadPair], threads: int, server_flags: list[str],
    load: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    server = start_server(artifact, threads, server_flags)
    port = server.port
    try:
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        generator = ctx.Process(
            target=_load_process, args=(f"127.0.0.1:{port}", pairs, load, queue)
        )
        generator.start()
        summary: dict[str, Any] = queue.get(timeout=900)
        generator.join(timeout=60)
        summary.update(batch_figures(server.scrape()))
    finally:
        server.terminate()
    summary["name"] = name
    summary["load_generator_cpu_share"] = summary["client_cpu_s"] / summary["duration_s"]
    return summary


def run_mix(mix: str, args: argparse.Namespace) -> dict[str, Any]:
    lo, hi = MIXES[mix]
    pairs = make_pairs(args.artifact, int(PAIRS[mix] * args.pairs_scale), args.seed, lo, hi)
    raw = raw_onnxruntime(args.artifact, pairs, args.threads)
    print(f"{mix}: raw {raw['tokens_per_s']:.0f} tokens/s", flush=True)
    single = {"mode": "score", "concurrency": 64, "duration_s": args.duration}
    batched = {"mode": "score-batch", "batch_size": 256, "concurrency": 2}
    batched.update(duration_s=args.duration, deadline_s=BATCH_DEADLINE_S)
    runs: dict[str, dict[str, Any]] = {"raw": raw}
    for policy, flags in POLICIES.items():
        runs[f"score64 {policy}"] = server_run(
            f"{mix}: server {policy}, 64 Score callers", args.artifact, pairs, args.threads,
            flags, single,
        )  # fmt: skip
        runs[f"batch256 {policy}"] = server_run(
            f"{mix}: server {policy}, ScoreBatch of 256", args.artifact, pairs, args.threads,
            flags, batched,
        )  # fmt: skip
        for key in (f"score64 {policy}", f"batch256 {policy}"):
            print(f"{mix}: {key} {runs[key]['tokens_per_s']:.0f} tokens/s", flush=True)
    if args.unbatched:
        runs["unbatched"] = server_run(
            f"{mix}: server, batching off", args.artifact, pairs, args.threads,
            ["--max-batch-size", "1"], single,
        )  # fmt: skip
    base = raw["tokens_per_s"]
    ratios = {f"{key} / raw": r["tokens_per_s"] / base for key, r in runs.items() if key != "raw"}
    for mode in ("score64", "batch256"):
        after, before = runs[f"{mode} after"], runs[f"{mode} before"]
        ratios[f"{mode} after / before"] = after["tokens_per_s"] / (
            before["tokens_per_s"] or float("nan")
        )
    return {"mix": mix, "tokens": [lo, hi], "pairs": len(pairs), "runs": runs, "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, default=Path("demo/artifact"))
    parser.add_argument("--mixes", nargs="+", choices=list(MIXES), default=list(MIXES))
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per server run")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pairs-scale", type=float, default=1.0, help="scale the pairs per mix (raw runs' length)"
    )
    parser.add_argument("--unbatched", action="store_true", help="also run batching off")
    parser.add_argument("--note", default="", help="the machine's condition, for the record")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    load_before = os.getloadavg()
    started = time.time()
    results = []
    for mix in args.mixes:
        results.append(run_mix(mix, args))
        summary = {
            "artifact": str(args.artifact),
            "max_length": load_artifact(args.artifact).manifest.preprocessing.max_length,
            "cores": os.cpu_count(),
            "threads": args.threads,
            "duration_s_per_server_run": args.duration,
            "wall_s": time.time() - started,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "note": args.note,
            "policies": POLICIES,
            "mixes": results,
        }
        if args.out:  # after every mix: a later failure keeps what was measured
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{'run':44} {'tokens/s':>9} {'pairs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'batch':>6}")
    for result in results:
        for r in result["runs"].values():
            print(
                f"{r['name']:44} {r['tokens_per_s']:9.0f} {r['pairs_per_s']:8.1f} "
                f"{r.get('p50_ms', float('nan')):8.1f} {r.get('p99_ms', float('nan')):8.1f} "
                f"{r.get('mean_batch_size', r.get('best_batch_size', 0)):6.1f}"
            )
        print("  " + "  ".join(f"{k} = {v:.3f}" for k, v in result["ratios"].items()))


if __name__ == "__main__":
    main()
