"""A real `rmserve serve` process on 127.0.0.1 (what the container's ENTRYPOINT runs), and
bounded load for it."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from rmserve import testing
from rmserve.testing import ServerProcess
from rmserve.v1 import reward_pb2, reward_pb2_grpc

__all__ = ["LiveServer", "drive_load", "run_entry_point", "start_server"]


LiveServer = ServerProcess


def start_server(artifact: Path, log: Path, *extra: str, hold_engine: bool = False) -> LiveServer:
    """`rmserve serve` as the container runs it (flags only, no RMSERVE_* inherited)."""
    return testing.start_server(
        artifact, log, "--grace-seconds", "10", *extra, hold_engine=hold_engine
    )


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
        [sys.executable, "-m", "rmserve.server.healthcheck", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
