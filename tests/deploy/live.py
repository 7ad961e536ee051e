"""A real `rmserve serve` process on 127.0.0.1 (what the container's ENTRYPOINT runs), and
bounded load for it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc

from rmserve import healthcheck
from rmserve.v1 import reward_pb2, reward_pb2_grpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def scrape(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            return str(reply.read().decode())

    def wait_serving(self, timeout: float = 180.0) -> None:
        end = time.monotonic() + timeout
        while healthcheck.check(self.target, timeout_s=1.0)[0] != healthcheck.SERVING:
            if self.process.poll() is not None:
                raise AssertionError(f"rmserve serve exited early:\n{self.log_tail()}")
            if time.monotonic() > end:
                raise AssertionError(f"not SERVING after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def terminate(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise AssertionError(f"rmserve did not exit {timeout}s after SIGTERM") from None


def start_server(artifact: Path, log: Path, *extra: str) -> LiveServer:
    port, metrics_port = free_port(), free_port()
    argv = [
        sys.executable, "-m", "rmserve.cli", "serve",
        "--artifact", str(artifact),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--metrics-port", str(metrics_port),
        "--provider", "cpu",
        "--intra-op-threads", "1",
        "--grace-seconds", "10",
        *extra,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("RMSERVE_")}
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    return LiveServer(process, port, metrics_port, log)


PROMPTS = ["What is 2+2?", "Name a colour.", "", "Summarise the plot of Hamlet in one line."]
RESPONSES = ["4", "Blue, like the sky on a clear day.", "", "A prince avenges his father."]


def drive_load(target: str, rounds: int = 10, callers: int = 4) -> dict[str, int]:
    """Score, ScoreBatch and Prefer from concurrent callers plus one bad request; returns
    how many RPCs of each kind succeeded (the bad one is counted as INVALID_ARGUMENT)."""
    done = {"Score": 0, "ScoreBatch": 0, "Prefer": 0, "INVALID_ARGUMENT": 0}
    with grpc.insecure_channel(target) as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)

        def one_round(i: int) -> None:
            p, r = PROMPTS[i % len(PROMPTS)], RESPONSES[i % len(RESPONSES)]
            stub.Score(reward_pb2.ScoreRequest(prompt=p, response=r * (i % 5 + 1)), timeout=30)
            pairs = [
                reward_pb2.Pair(prompt=PROMPTS[j % 4], response=RESPONSES[(i + j) % 4] * (j + 1))
                for j in range(8)
            ]
            stub.ScoreBatch(reward_pb2.ScoreBatchRequest(pairs=pairs), timeout=30)
            stub.Prefer(
                reward_pb2.PreferRequest(prompt=p, response_a=r, response_b=RESPONSES[0]),
                timeout=30,
            )

        with ThreadPoolExecutor(max_workers=callers) as pool:
            list(pool.map(one_round, range(rounds * callers)))
        for kind in ("Score", "ScoreBatch", "Prefer"):
            done[kind] = rounds * callers
        try:
            stub.Score(reward_pb2.ScoreRequest(prompt="no response field"), timeout=30)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
            done["INVALID_ARGUMENT"] = 1
    return done


def run_entry_point(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the module exactly as the HEALTHCHECK does, in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "rmserve.healthcheck", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
