"""A hostile GRPO group on a chat-template artifact: one ScoreGroup of 256 responses to a ~255 KB
prompt against one Score of that prompt, in one run, and how long HTTP ``/health`` takes while
the group runs (issue: a group re-tokenised its prompt per response and tokenising blocked the
event loop).

Each round times one ``Score`` of the prompt, then one ``ScoreGroup`` sent by a separate client
process (so the measuring process's GIL does not delay its own ``/health`` polls) while this
process polls ``GET /health`` back to back. Reports the median of each, their ratio, and the
/health latencies seen during the groups.

    .venv/bin/python bench/hostile_group.py --out bench/results/hostile-group-cpu.json

Without ``--artifact`` it builds the tiny Llama-3-style decoder of the tests
(tests/support/hf_families.py) and imports it with ``rmserve import-hf --max-length 64``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_record import add_record_arguments, finish_record, start_record

from rmserve.testing import start_server
from rmserve.v1 import reward_pb2, reward_pb2_grpc

PROMPT = "Summarise this: " + "word " * 51_000  # about 255 KB
GROUP = [f"answer {i}: " + "fine " * (i % 9) for i in range(256)]
GROUP_CLIENT = """
import sys, time, grpc
from rmserve.v1 import reward_pb2, reward_pb2_grpc
prompt = "Summarise this: " + "word " * 51_000
group = [f"answer {i}: " + "fine " * (i % 9) for i in range(256)]
stub = reward_pb2_grpc.RewardServiceStub(
    grpc.insecure_channel(sys.argv[1], options=[("grpc.max_send_message_length", 64 << 20)]))
request = reward_pb2.ScoreGroupRequest(prompt=prompt, responses=group)
for line in sys.stdin:
    start = time.perf_counter(); stub.ScoreGroup(request, timeout=600)
    print(time.perf_counter() - start, flush=True)
"""


def template_artifact(folder: Path) -> Path:
    from tests.support.hf_families import FAMILIES, build

    hf = build(FAMILIES["llama"], folder / "hf")
    artifact = folder / "artifact"
    command = [sys.executable, "-m", "rmserve", "import-hf", "--model", str(hf), "--out",
               str(artifact), "--max-length", "64"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    return artifact


def health_ms(port: int) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=60) as reply:
        reply.read()
    return (time.perf_counter() - start) * 1000


def measure(artifact: Path, rounds: int, log: Path) -> dict[str, Any]:
    server = start_server(artifact, log, "--http-port", "0")
    try:
        server.wait_serving()
        channel = grpc.insecure_channel(
            server.target, options=[("grpc.max_send_message_length", 64 << 20)]
        )
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        score = reward_pb2.ScoreRequest(prompt=PROMPT, response="ok")
        client = subprocess.Popen(
            [sys.executable, "-c", GROUP_CLIENT, server.target],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert client.stdin is not None and client.stdout is not None
        scores: list[float] = []
        groups: list[float] = []
        health: list[float] = []
        for round_ in range(rounds + 1):  # round 0 warms both paths up
            start = time.perf_counter()
            stub.Score(score, timeout=600)
            single = time.perf_counter() - start
            done = threading.Event()
            seconds: list[float] = []

            def wait_group(done: threading.Event = done, seconds: list[float] = seconds) -> None:
                seconds.append(float(client.stdout.readline()))  # type: ignore[union-attr]
                done.set()

            waiter = threading.Thread(target=wait_group)
            waiter.start()
            client.stdin.write("go\n")
            client.stdin.flush()
            polls = []
            while not done.is_set():
                polls.append(health_ms(server.http_port))
            waiter.join()
            if round_:
                scores.append(single)
                groups.append(seconds[0])
                health += polls
        client.stdin.close()
        client.wait(timeout=60)
        channel.close()
    finally:
        server.terminate()
    health.sort()
    return {
        "rounds": rounds,
        "prompt_chars": len(PROMPT),
        "group_size": len(GROUP),
        "score_s_median": statistics.median(scores),
        "group_s_median": statistics.median(groups),
        "group_over_score": statistics.median(groups) / statistics.median(scores),
        "health_during_group_ms": {
            "polls": len(health),
            "median": statistics.median(health),
            "p99": health[int(0.99 * (len(health) - 1))],
            "max": health[-1],
        },
        "score_s": scores,
        "group_s": groups,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", type=Path, help="a chat-template artifact (default: tiny)")
    parser.add_argument("--rounds", type=int, default=5)
    add_record_arguments(parser, duration=0.0)
    args = parser.parse_args()
    record = start_record(args)
    with tempfile.TemporaryDirectory() as tmp:
        artifact = args.artifact or template_artifact(Path(tmp))
        figures = measure(artifact, args.rounds, Path(tmp) / "serve.log")
    finish_record(record, args, figures)
    print(json.dumps({k: v for k, v in figures.items() if k not in ("score_s", "group_s")}))
    print(f"ScoreGroup(256) / Score: {figures['group_over_score']:.2f}x; /health during the "
          f"group: max {figures['health_during_group_ms']['max']:.0f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
