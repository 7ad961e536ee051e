"""Server throughput against bare onnxruntime, in one run, on the same mixed-length pairs.

  1. raw onnxruntime session on pre-tokenised pairs, sorted by length, in its best batch size
  2. the server with 64 concurrent single-pair Score callers
  3. the server with ScoreBatch requests of 256 pairs
  4. the server with batching off (max_batch_size=1), 64 concurrent Score callers

Prompt+response lengths are uniform in 16..256 tokens. The load generator
(``rmserve.loadtest``) runs in its own process and shares the cores with the server; its CPU
share is reported. Use a MiniLM artifact (``bash scripts/demo.sh --no-serve`` makes one): with
the tiny test model the server's overhead dominates and the ratios mean nothing.

    .venv/bin/python bench/throughput.py --artifact demo/artifact --out bench/results/cpu.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import time
from pathlib import Path
from typing import Any

from rmserve import testing
from rmserve.engine import OrtEngine, load_artifact
from rmserve.loadtest import LoadPair, run
from rmserve.preprocess import PreparedPair
from rmserve.testing import ServerProcess

MIN_TOKENS, MAX_TOKENS = 16, 256
_WORD_TEXT = (
    "the reward model scores each answer for helpful correct and polite replies while "
    "capital city river mountain number water light music garden paper window market "
    "teacher doctor simple bright quiet quickly often before after under over between"
)
WORDS = _WORD_TEXT.split()


def make_pairs(artifact: Path, count: int, seed: int) -> list[LoadPair]:
    """Pairs whose prompt+response token count (specials included) is uniform in 16..256."""
    pre = load_artifact(artifact).preprocessor
    overhead = pre.prepare("", "").num_tokens
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        total = rng.randint(MIN_TOKENS, MAX_TOKENS) - overhead
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

    by_size = {size: timed(size) for size in (1, 4, 8, 16, 32)}
    best = min(by_size, key=lambda size: by_size[size])
    seconds = min(timed(best), by_size[best])
    return {
        "name": "1 raw onnxruntime",
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
    run(
        target, pairs[:64], duration_s=2.0, **{k: v for k, v in kwargs.items() if k != "duration_s"}
    )
    out.put(run(target, pairs, **kwargs).summary())


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
        summary: dict[str, Any] = queue.get(timeout=600)
        generator.join(timeout=60)
    finally:
        server.terminate()
    summary["name"] = name
    summary["load_generator_cpu_share"] = summary["client_cpu_s"] / summary["duration_s"]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, default=Path("demo/artifact"))
    parser.add_argument("--pairs", type=int, default=1024)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per server run")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    pairs = make_pairs(args.artifact, args.pairs, args.seed)
    raw = raw_onnxruntime(args.artifact, pairs, args.threads)
    single = {"mode": "score", "concurrency": 64, "duration_s": args.duration}
    batched = {
        "mode": "score-batch",
        "batch_size": 256,
        "concurrency": 2,
        "duration_s": args.duration,
    }
    runs = [
        raw,
        server_run("2 server, 64 Score callers", args.artifact, pairs, args.threads, [], single),
        server_run("3 server, ScoreBatch of 256", args.artifact, pairs, args.threads, [], batched),
        server_run(
            "4 server, batching off", args.artifact, pairs, args.threads,
            ["--max-batch-size", "1"], single,
        ),
    ]  # fmt: skip
    base = raw["tokens_per_s"]
    ratios = {
        "2/1": runs[1]["tokens_per_s"] / base,
        "3/1": runs[2]["tokens_per_s"] / base,
        "2/4": runs[1]["tokens_per_s"] / runs[3]["tokens_per_s"],
    }
    print(f"{'run':32} {'tokens/s':>10} {'pairs/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'gen cpu':>8}")
    for r in runs:
        print(
            f"{r['name']:32} {r['tokens_per_s']:10.0f} {r['pairs_per_s']:9.1f} "
            f"{r.get('p50_ms', float('nan')):8.1f} {r.get('p99_ms', float('nan')):8.1f} "
            f"{r.get('load_generator_cpu_share', float('nan')):8.2f}"
        )
    print("ratios: " + "  ".join(f"{k} = {v:.3f}" for k, v in ratios.items()))
    result = {
        "artifact": str(args.artifact),
        "pairs": len(pairs),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "runs": runs,
        "ratios": ratios,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
