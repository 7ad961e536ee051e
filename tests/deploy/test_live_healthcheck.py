"""The HEALTHCHECK entry point against a live `rmserve serve`: non-zero while the model warms up
(NOT_SERVING), 0 once SERVING, non-zero after SIGTERM; and SIGTERM ends the process with 0."""

from __future__ import annotations

import time
from pathlib import Path

from rmserve.server import healthcheck
from tests.support.live import run_entry_point, start_server

SERVICE = "rmserve.v1.RewardService"


def test_healthcheck_follows_a_live_server(tiny_artifact: Path, tmp_path: Path) -> None:
    server = start_server(tiny_artifact, tmp_path / "rmserve.log", hold_engine=True)
    try:
        end = time.monotonic() + 120
        while "NOT_SERVING" not in healthcheck.check(server.target, timeout_s=1.0)[1]:
            assert server.process.poll() is None, server.log_tail()
            assert time.monotonic() < end, f"never saw NOT_SERVING:\n{server.log_tail()}"
            time.sleep(0.02)
        warming = run_entry_point("--target", server.target)
        assert warming.returncode == 1, warming.stdout + warming.stderr
        assert "NOT_SERVING" in warming.stderr

        server.release_engine()  # the warm-up was held until now
        server.wait_serving()
        for service in ("", SERVICE):
            serving = run_entry_point("--target", server.target, "--service", service)
            assert serving.returncode == 0, serving.stdout + serving.stderr
            assert "SERVING" in serving.stdout
    finally:
        exit_code = server.terminate()
    assert exit_code == 0, server.log_tail()
    stopped = run_entry_point("--target", server.target, "--timeout", "2")
    assert stopped.returncode == 1
