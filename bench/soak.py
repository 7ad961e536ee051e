"""Soak: mixed load against a real `rmserve serve` process; watch its memory and descriptors.

    python bench/soak.py --artifact DIR [--duration 600] [--warmup 60] [--out FILE]

Starts the server on free 127.0.0.1 ports and drives it for ``--duration`` seconds with a
mix of Score, ScoreBatch (1-64 pairs), Prefer and PreferBatch calls, calls cancelled at random
moments, calls whose deadline passes in the queue, and malformed requests. Every few seconds
it samples the server's RSS, open file descriptors and threads from /proc, and re-scores a
fixed probe pair, which must score exactly as it did at the start (no drift, no mix-ups).

Pass: RSS at the end is within ``--max-rss-growth`` (5%) of RSS after warm-up, no more file
descriptors than after warm-up, the probe never changes, no reply has a non-finite reward and
the server exits 0 on SIGTERM. Writes every sample and figure to ``--out`` as JSON; exit 0 on
pass. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from rmserve.testing import start_server
from rmserve.v1 import reward_pb2, reward_pb2_grpc

WORDS = [
    "the",
    "a",
    "reward",
    "model",
    "scores",
    "answers",
    "quickly",
    "slowly",
    "kindly",
    "why",
    "how",
    "when",
    "42",
    "ok",
    "no",
]
PROBE = ("soak probe prompt", "soak probe response")


def proc_sample(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_bytes": int(fields["VmRSS"].split()[0]) * 1024,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(fields["Threads"].strip()),
    }


def text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


class Load:
    def __init__(self, stub: Any, seed: int) -> None:
        self.stub = stub
        self.rng = random.Random(seed)
        self.codes: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.pairs = 0
        self.non_finite = 0

    def _check(self, rewards: list[float]) -> None:
        self.non_finite += sum(not math.isfinite(r) for r in rewards)

    async def one(self) -> None:
        rng, stub = self.rng, self.stub
        kind = rng.choices(
            ["score", "batch", "prefer", "prefer_batch", "cancel", "deadline", "invalid"],
            weights=[30, 25, 15, 10, 8, 7, 5],
        )[0]
        self.kinds[kind] += 1
        try:
            if kind == "score":
                reply = await stub.Score(
                    reward_pb2.ScoreRequest(prompt=text(rng, 0, 40), response=text(rng, 0, 60)),
                    timeout=30,
                )
                self._check([reply.reward])
                self.pairs += 1
            elif kind in ("batch", "cancel", "deadline"):
                n = rng.randint(1, 64)
                pairs = [
                    reward_pb2.Pair(prompt=text(rng, 0, 30), response=text(rng, 0, 50))
                    for _ in range(n)
                ]
                timeout = rng.uniform(0.001, 0.02) if kind == "deadline" else 30
                call = stub.ScoreBatch(reward_pb2.ScoreBatchRequest(pairs=pairs), timeout=timeout)
                if kind == "cancel":
                    await asyncio.sleep(rng.uniform(0, 0.05))
                    call.cancel()
                    self.codes["CANCELLED(client)"] += 1
                    return
                reply = await call
                self._check([r.reward for r in reply.results])
                self.pairs += n
            elif kind == "prefer":
                reply = await stub.Prefer(
                    reward_pb2.PreferRequest(
                        prompt=text(rng, 0, 30),
                        response_a=text(rng, 0, 40),
                        response_b=text(rng, 0, 40),
                    ),
                    timeout=30,
                )
                self._check([reply.result.probability_a, reply.result.reward_a])
                self.pairs += 2
            elif kind == "prefer_batch":
                items = [
                    reward_pb2.PreferItem(
                        prompt=text(rng, 0, 20),
                        response_a=text(rng, 0, 30),
                        response_b=text(rng, 0, 30),
                    )
                    for _ in range(rng.randint(1, 16))
                ]
                reply = await stub.PreferBatch(
                    reward_pb2.PreferBatchRequest(items=items), timeout=30
                )
                self._check([r.probability_a for r in reply.results])
                self.pairs += 2 * len(items)
            else:  # invalid: a pair without its response
                await stub.ScoreBatch(
                    reward_pb2.ScoreBatchRequest(pairs=[reward_pb2.Pair(prompt="x")]), timeout=30
                )
            self.codes["OK"] += 1
        except grpc.aio.AioRpcError as e:
            self.codes[e.code().name] += 1


async def drive(
    args: argparse.Namespace, process: subprocess.Popen[bytes], port: int
) -> dict[str, Any]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub: Any = reward_pb2_grpc.RewardServiceStub(channel)

    probe = reward_pb2.ScoreRequest(prompt=PROBE[0], response=PROBE[1])
    probe_reward = (await stub.Score(probe, timeout=30)).reward
    load = Load(stub, args.seed)
    start = time.monotonic()
    stop_at = start + args.duration
    samples: list[dict[str, Any]] = []
    probe_changes = 0

    async def worker() -> None:
        while time.monotonic() < stop_at:
            await load.one()

    workers = [asyncio.create_task(worker()) for _ in range(args.concurrency)]
    while time.monotonic() < stop_at:
        reward = (await stub.Score(probe, timeout=30)).reward
        probe_changes += reward != probe_reward
        sample = {"t_s": round(time.monotonic() - start, 2), **proc_sample(process.pid)}
        sample["requests"] = sum(load.codes.values())
        samples.append(sample)
        await asyncio.sleep(args.sample_every)
    await asyncio.gather(*workers)
    samples.append({"t_s": round(time.monotonic() - start, 2), **proc_sample(process.pid)})
    await channel.close()
    return {
        "samples": samples,
        "codes": dict(load.codes),
        "kinds": dict(load.kinds),
        "pairs_scored": load.pairs,
        "non_finite_rewards": load.non_finite,
        "probe_changes": probe_changes,
        "elapsed_s": round(time.monotonic() - start, 2),
    }


def summarise(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    samples = result["samples"]
    warm = [s for s in samples if s["t_s"] >= args.warmup]
    head, tail = warm[:3], warm[-3:]
    rss_warm = statistics.median(s["rss_bytes"] for s in head)
    rss_end = statistics.median(s["rss_bytes"] for s in tail)
    growth = (rss_end - rss_warm) / rss_warm * 100.0
    fds_warm, fds_end = max(s["fds"] for s in head), samples[-1]["fds"]
    checks = {
        "rss_growth_under_limit": growth < args.max_rss_growth,
        "no_fd_leak": fds_end <= fds_warm,
        "probe_never_changed": result["probe_changes"] == 0,
        "all_rewards_finite": result["non_finite_rewards"] == 0,
        "server_exit_0": result["exit_code"] == 0,
        "no_errors_in_server_log": not result["server_log_errors"],
    }
    return {
        "rss_after_warmup_mb": round(rss_warm / 2**20, 2),
        "rss_end_mb": round(rss_end / 2**20, 2),
        "rss_max_after_warmup_mb": round(max(s["rss_bytes"] for s in warm) / 2**20, 2),
        "rss_growth_pct": round(growth, 3),
        "fds_after_warmup": fds_warm,
        "fds_end": fds_end,
        "fds_max": max(s["fds"] for s in samples),
        "threads_end": samples[-1]["threads"],
        "requests": sum(result["codes"].values()),
        "requests_per_s": round(sum(result["codes"].values()) / result["elapsed_s"], 1),
        "checks": checks,
        "passed": all(checks.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", type=Path, required=True)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load [600]")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before baseline [60]")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sample-every", type=float, default=5.0)
    parser.add_argument("--max-rss-growth", type=float, default=5.0, help="percent [5]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/soak.json"))
    args = parser.parse_args(argv)
    if args.duration <= args.warmup + 3 * args.sample_every:
        parser.error("--duration must leave several samples after --warmup")

    log_path = args.out.with_suffix(".server.log")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    server = start_server(
        args.artifact, log_path,
        "--max-queue-pairs", "2048",
        "--max-request-pairs", "256",
        "--grace-seconds", "30",
    )  # fmt: skip
    try:
        try:
            server.wait_serving()
        except AssertionError as e:
            raise SystemExit(str(e)) from None
        result = asyncio.run(drive(args, server.process, server.port))
        result["exit_code"] = server.terminate(timeout=60)
    finally:
        server.kill()
    log_lines = log_path.read_text(errors="replace").splitlines()
    result["server_log_errors"] = [
        line for line in log_lines if "Traceback" in line or " ERROR " in line
    ]
    log_path.unlink()
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    report = {"config": config, **summarise(result, args), **result}
    report["cpu_count"] = os.cpu_count()
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in ("samples",)}))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
