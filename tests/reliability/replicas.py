"""`rmserve serve` replicas as real processes on free 127.0.0.1 ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

BOUND_S = 120.0  # "must not hang" bound; never a performance assertion


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_serving(self) -> None:
        end = time.monotonic() + BOUND_S
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < end:
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"replica exited {self.process.returncode}:\n{self.output()}"
                    )
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        raise AssertionError(f"replica on {self.target} never reported SERVING")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def start_replica(artifact: Path, log: Path, **env: str) -> Replica:
    port = free_port()
    environment = {
        **os.environ,
        "RMSERVE_ARTIFACT": str(artifact),
        "RMSERVE_HOST": "127.0.0.1",
        "RMSERVE_PORT": str(port),
        "RMSERVE_METRICS_PORT": "0",
        "RMSERVE_PROVIDER": "cpu",
        "RMSERVE_INTRA_OP_THREADS": "1",
        "RMSERVE_WARMUP_RUNS": "0",
        **env,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "rmserve.cli", "serve"],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Replica(process, port, log)
