"""Do long pairs starve short ones? Short Score callers' throughput alone, and while one long pair
is always computing, on one server.

The issue's done-when (docs/guides/serving.md#long-pairs): "while a 16k pair computes, 64
concurrent short Score callers keep >= 50% of the throughput they have alone". Phases, on one
``rmserve serve`` process:

  1. alone: ``--callers`` concurrent single-pair Score callers (``rmserve.tools.loadtest``, in a
     process of its own) for ``--duration`` seconds;
  2. one long Score alone, timed (it also warms the long shape up);
  3. during: one long pair kept in flight back to back (a thread of this process sends the next
     one as soon as the last is answered) while the same short load runs again;
  4. alone again (the baseline is the mean of 1 and 4: a shared machine drifts).

Prints and writes (``--out``) short calls/s alone and during, their ratio, the short latencies,
the long pair's tokens and seconds alone and during, and how many long pairs completed.

    .venv/bin/python bench/long_starvation.py --artifact /models/qwen3-rm-32k \\
        --long-tokens 16384 --out bench/results/long-starvation-16k.json

``--long-tokens`` defaults to the artifact's max_length (the long pair is never truncated). Server
flags go after ``--``, e.g. ``-- --engine-workers 2 --max-batch-tokens 4096``. Without
``--artifact`` it builds a tiny random Qwen3 (tests/support/qwen3_rm.py) and imports it with
``rmserve import-hf --max-length 2048``: the figures then only show the mechanism.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_record import add_record_arguments, finish_record, start_record

from rmserve import testing
from rmserve.engine.session import load_artifact
from rmserve.tools.loadtest import LoadPair, run
from rmserve.v1 import reward_pb2, reward_pb2_grpc

GOAL = 0.5  # short callers keep at least half their throughput while a long pair computes
TINY_SHAPE = {
    "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "max_position_embeddings": 4096,
}  # fmt: skip
TINY_MAX_LENGTH = 2048
SHORTS = [
    LoadPair(f"what is the capital of france ? question {i} .", f"paris . answer {i % 7} .")
    for i in range(256)
]
LONG_DEADLINE_S = 3600.0


def tiny_artifact(folder: Path) -> Path:
    from tests.support.qwen3_rm import write_qwen3_rm

    write_qwen3_rm(folder / "hf", **TINY_SHAPE)
    artifact = folder / "artifact"
    command = [sys.executable, "-m", "rmserve.cli", "import-hf", "--model", str(folder / "hf"),
               "--out", str(artifact), "--max-length", str(TINY_MAX_LENGTH)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    return artifact


def long_response(artifact: Path, tokens: int) -> tuple[str, int]:
    """A response whose pair (empty prompt) has at most ``tokens`` tokens, as close as words go;
    and its token count."""
    preprocessor = load_artifact(artifact).preprocessor
    limit = preprocessor.config.max_length
    if tokens > limit:
        raise SystemExit(f"--long-tokens {tokens} is over the artifact's max_length={limit}")
    word = "paris" if preprocessor.tokenizer.token_to_id("paris") is not None else "word"

    def count(words: int) -> int:
        return preprocessor.prepare("", " ".join([word] * words)).untruncated_tokens

    lo, hi = 0, tokens  # every word is at least one token
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if count(mid) <= tokens else (lo, mid - 1)
    return " ".join([word] * lo), count(lo)


def short_load(target: str, callers: int, duration: float, out: Any) -> None:
    result = run(target, SHORTS, mode="score", concurrency=callers, duration_s=duration)
    out.put(result.summary())


def measure_short(target: str, callers: int, duration: float) -> dict[str, Any]:
    """The short load in a process of its own (its client never shares this GIL)."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    process = context.Process(target=short_load, args=(target, callers, duration, out))
    process.start()
    summary: dict[str, Any] = out.get(timeout=duration + 600)
    process.join(timeout=60)
    return summary


class LongLoop:
    """Keeps one long Score in flight, back to back, until stopped."""

    def __init__(self, stub: Any, response: str) -> None:
        self._stub = stub
        self._request = reward_pb2.ScoreRequest(prompt="", response=response)
        self._stop = threading.Event()
        self.seconds: list[float] = []
        self.tokens = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            reply = self._stub.Score(self._request, timeout=LONG_DEADLINE_S)
            self.seconds.append(time.perf_counter() - start)
            self.tokens = reply.num_tokens

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=LONG_DEADLINE_S)


def measure(
    artifact: Path, long_tokens: int | None, callers: int, duration: float, flags: list[str]
) -> dict[str, Any]:
    max_length = load_artifact(artifact).manifest.preprocessing.max_length
    response, tokens = long_response(artifact, long_tokens or max_length)
    server = testing.start_server(artifact, None, *flags)
    try:
        server.wait_serving()
        channel = grpc.insecure_channel(server.target)
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        info = stub.GetModelInfo(reward_pb2.GetModelInfoRequest(), timeout=60)
        before = measure_short(server.target, callers, duration)
        start = time.perf_counter()
        alone = stub.Score(reward_pb2.ScoreRequest(prompt="", response=response), timeout=3600)
        long_alone_s = time.perf_counter() - start
        assert alone.num_tokens == tokens and not alone.truncated, (alone.num_tokens, tokens)
        loop = LongLoop(stub, response)
        loop.start()
        during = measure_short(server.target, callers, duration)
        in_flight = len(loop.seconds)  # long pairs answered while the short load ran
        loop.stop()
        after = measure_short(server.target, callers, duration)
        channel.close()
    finally:
        server.terminate()
    baseline = (before["requests_per_s"] + after["requests_per_s"]) / 2
    ratio = during["requests_per_s"] / baseline
    return {
        "artifact": str(artifact),
        "max_length": max_length,
        "engine_workers": info.engine_workers,
        "max_batch_tokens": info.max_batch_tokens,
        "provider": info.provider,
        "server_flags": flags,
        "callers": callers,
        "long_pair_tokens": tokens,
        "long_pair_s_alone": long_alone_s,
        "long_pair_s_during_median": statistics.median(loop.seconds) if loop.seconds else None,
        "long_pairs_answered_during": in_flight,
        "short_calls_per_s_alone": baseline,
        "short_calls_per_s_during_long": during["requests_per_s"],
        "ratio_during_over_alone": ratio,
        "goal": GOAL,
        "meets_goal": ratio >= GOAL,
        "short_alone_before": before,
        "short_during_long": during,
        "short_alone_after": after,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", type=Path, help="the artifact (default: a tiny Qwen3)")
    parser.add_argument("--long-tokens", type=int, help="the long pair (default: max_length)")
    parser.add_argument("--callers", type=int, default=64, help="concurrent short Score callers")
    parser.add_argument("server_flags", nargs="*", help="after --: flags for rmserve serve")
    add_record_arguments(parser, duration=20.0)
    args = parser.parse_args()
    record = start_record(args)
    flags = ["--intra-op-threads", str(args.threads), *args.server_flags]
    with tempfile.TemporaryDirectory() as tmp:
        artifact = args.artifact or tiny_artifact(Path(tmp))
        figures = measure(artifact, args.long_tokens, args.callers, args.duration, flags)
        if args.artifact is None:
            figures["artifact"] = f"tiny random Qwen3 {TINY_SHAPE}, max_length {TINY_MAX_LENGTH}"
    finish_record(record, args, figures)
    loads = ("short_alone_before", "short_during_long", "short_alone_after")
    shown = {k: v for k, v in figures.items() if k not in loads}
    print(json.dumps(shown, indent=2))
    print(
        f"{args.callers} short Score callers: {figures['short_calls_per_s_alone']:.1f}/s alone, "
        f"{figures['short_calls_per_s_during_long']:.1f}/s while a "
        f"{figures['long_pair_tokens']}-token pair computes: "
        f"{figures['ratio_during_over_alone']:.2f} (goal >= {GOAL})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
