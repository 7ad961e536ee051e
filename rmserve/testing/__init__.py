"""Test doubles and a real-server launcher that ship with the package (used by the tests and
the benchmarks, usable by others).

May import: anything in rmserve (it is the top layer).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rmserve.engine.session import Engine, EngineError
from rmserve.text.preprocess import PreparedPair

GATE_TIMEOUT_S = 120.0  # a forgotten gate fails the batch instead of hanging the test run


class ScriptedEngine:
    """Wraps a real engine: holds batches while ``gate`` is closed and fails chosen calls.

    ``calls`` counts ``score`` calls (warm-up included); ``fail_calls`` holds the 0-based call
    numbers that raise ``EngineError`` instead of scoring; ``batch_sizes[i]`` is the number of
    pairs engine call ``i`` received; ``running`` counts the calls inside ``score`` now (held
    by the gate included) and ``most_running`` the most there ever were at once.
    ``gate_over_tokens``: only batches holding a pair of more tokens wait for the gate (0: every
    batch); ``at_gate`` counts the calls held there now.
    """

    def __init__(self, inner: Engine, gate_open: bool = True, gate_over_tokens: int = 0) -> None:
        self.inner = inner
        self.gate = threading.Event()
        if gate_open:
            self.gate.set()
        self.gate_over_tokens = gate_over_tokens
        self.at_gate = 0
        self.fail_calls: set[int] = set()
        self.calls = 0
        self.scored_pairs = 0
        self.batch_sizes: list[int] = []
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    @property
    def provider(self) -> str:
        return self.inner.provider

    @property
    def device(self) -> str:
        return self.inner.device

    def score(self, pairs: Sequence[PreparedPair]) -> np.ndarray:
        with self._lock:
            call = self.calls
            self.calls += 1
            self.batch_sizes.append(len(pairs))
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            if max(p.num_tokens for p in pairs) > self.gate_over_tokens:
                self._wait_at_gate()
            if call in self.fail_calls:
                raise EngineError(f"scripted failure of engine call {call}")
            rewards = self.inner.score(pairs)
        finally:
            with self._lock:
                self.running -= 1
        with self._lock:
            self.scored_pairs += len(pairs)
        return rewards

    def _wait_at_gate(self) -> None:
        with self._lock:
            self.at_gate += 1
        try:
            if not self.gate.wait(timeout=GATE_TIMEOUT_S):
                raise EngineError(f"ScriptedEngine gate stayed closed for {GATE_TIMEOUT_S}s")
        finally:
            with self._lock:
                self.at_gate -= 1


# Real `rmserve serve` processes on 127.0.0.1, for tests and benchmarks ----------------------

SERVER_BOUND_S = 180.0  # "must not hang" bound on start-up and exit; never a performance target
PORT_FILE_POLL_S = 0.01


@dataclass
class ServerProcess:
    """A running ``rmserve serve`` process (see :func:`start_server`).

    Its ports are those the server bound and wrote to ``port_file``: reading one waits for the
    file (bounded by ``SERVER_BOUND_S``; failing with the log tail if the process exits
    first), then keeps them all. ``own_folder``: the file's folder is this object's, removed
    once the ports are read."""

    process: subprocess.Popen[bytes]
    port_file: Path
    log: Path | None
    own_folder: bool = False
    _ports: dict[str, int | None] | None = field(default=None, init=False, repr=False)

    @property
    def port(self) -> int:
        """The gRPC port."""
        return self._bound("grpc")

    @property
    def metrics_port(self) -> int:
        return self._bound("metrics")

    @property
    def http_port(self) -> int:
        """The HTTP front's port (start the server with ``--http-port 0``)."""
        return self._bound("http")

    @property
    def health_port(self) -> int:
        """The plaintext health port (start the server with ``--health-port 0``)."""
        return self._bound("health")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ports(self, timeout: float = SERVER_BOUND_S) -> dict[str, int | None]:
        """The port file's listeners (None: off), once the server has bound them all."""
        if self._ports is None:
            end = time.monotonic() + timeout
            while not self.port_file.exists():
                if self.process.poll() is not None and not self.port_file.exists():
                    raise AssertionError(
                        f"rmserve serve exited {self.process.returncode} before binding its "
                        f"ports:\n{self.log_tail()}"
                    )
                if time.monotonic() > end:
                    raise AssertionError(f"no port file after {timeout}s:\n{self.log_tail()}")
                time.sleep(PORT_FILE_POLL_S)
            written = json.loads(self.port_file.read_text())
            if written.pop("pid") != self.process.pid:
                raise AssertionError(f"{self.port_file} is another process's: {written}")
            self._ports = written
            if self.own_folder:
                shutil.rmtree(self.port_file.parent, ignore_errors=True)
        return self._ports

    def _bound(self, listener: str) -> int:
        port = self.ports()[listener]
        if port is None:
            raise AssertionError(f"the server's {listener} listener is off")
        return port

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far ("" without a log)."""
        return self.log.read_text(errors="replace") if self.log is not None else ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.output()[-chars:]

    def health(self, service: str = "", timeout: float = 2.0) -> int | None:
        """grpc.health.v1 status, or None while nothing answers on the port."""
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
            except grpc.RpcError:
                return None
        return int(reply.status)

    def wait_serving(self, timeout: float = SERVER_BOUND_S) -> None:
        """Poll health until SERVING; fail (with the log) if the process exits or never does."""
        end = time.monotonic() + timeout
        while self.health(timeout=1.0) != health_pb2.HealthCheckResponse.SERVING:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"rmserve serve exited {self.process.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() > end:
                raise AssertionError(f"not SERVING after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def scrape(self) -> str:
        """The /metrics page."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            return str(reply.read().decode())

    def terminate(self, timeout: float = SERVER_BOUND_S) -> int:
        """SIGTERM and wait for the exit code; kill and fail if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"rmserve did not exit {timeout}s after SIGTERM") from None

    def release_engine(self) -> None:
        """Let a ``hold_engine`` server's engine run (SIGUSR1)."""
        self.process.send_signal(signal.SIGUSR1)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def start_server(
    artifact: Path, log: Path | None, *flags: str, hold_engine: bool = False, **env: str
) -> ServerProcess:
    """Start ``rmserve serve`` on 127.0.0.1 (CPU, one intra-op thread) without waiting for
    it. Every port is 0 (the server binds any free one, so nothing can take it first) unless
    ``flags`` give one; the server writes them to a port file that ``ServerProcess.port`` and
    its kin read (so ``flags`` must not set ``--port-file``). ``flags`` are extra command-line
    flags (a later flag wins), ``env`` extra ``RMSERVE_*`` variables; ``RMSERVE_*`` variables
    of this process are not inherited.
    Output goes to ``log`` (nowhere when None). ``hold_engine``: the engine holds every batch,
    warm-up included, until ``ServerProcess.release_engine`` (``rmserve.testing.serve``)."""
    port_file = Path(tempfile.mkdtemp(prefix="rmserve-ports-")) / "ports.json"
    command = ["rmserve.testing.serve"] if hold_engine else ["rmserve.cli", "serve"]
    argv = [
        sys.executable, "-m", *command,
        "--artifact", str(artifact),
        "--host", "127.0.0.1",
        "--port", "0",
        "--metrics-port", "0",
        "--port-file", str(port_file),
        "--provider", "cpu",
        "--intra-op-threads", "1",
        *flags,
    ]  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RMSERVE_")}
    environment.update(env)
    if log is None:
        process = subprocess.Popen(argv, env=environment, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)  # fmt: skip
    else:
        with log.open("wb") as out:
            process = subprocess.Popen(argv, env=environment, stdout=out, stderr=subprocess.STDOUT)
    return ServerProcess(process, port_file, log, own_folder=True)
