"""``rmserve loadtest`` (the command, in its own process) and ``rmserve.loadtest.run_async``
against a real local server: bounded runs whose JSON has the fields with sane values."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from harness import Harness

from rmserve.loadtest import LoadPair, run_async

pytestmark = pytest.mark.asyncio(loop_scope="session")

FIELDS = (
    "pairs_per_s", "tokens_per_s", "requests_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms",
    "codes", "duration_s",
)  # fmt: skip


async def run_cli(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RMSERVE_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rmserve.cli", "loadtest", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def check_sane(summary: dict[str, Any]) -> None:
    for name in FIELDS:
        assert name in summary, name
    assert summary["requests_per_s"] > 0 and summary["pairs_per_s"] > 0
    assert 0 < summary["p50_ms"] <= summary["p90_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    assert summary["max_ms"] < 60_000
    assert set(summary["codes"]) == {"OK"}
    assert summary["codes"]["OK"] == summary["requests"]
    rate = summary["requests"] / summary["duration_s"]
    assert summary["requests_per_s"] == pytest.approx(rate, rel=1e-6)


async def test_loadtest_command_runs_a_few_seconds(shared: Harness, demo_data_dir: Path) -> None:
    target = f"127.0.0.1:{shared.server.port}"
    data = demo_data_dir / "eval.jsonl"
    code, out, err = await run_cli(
        "--target", target, "--data", str(data), "--duration", "3", "--concurrency", "8"
    )  # fmt: skip
    assert code == 0, err
    lines = out.strip().splitlines()
    summary = json.loads(lines[-1])
    check_sane(summary)
    assert 2.5 <= summary["duration_s"] < 30
    assert summary["tokens_per_s"] > summary["pairs_per_s"]  # several tokens per pair
    assert summary["pairs"] == summary["requests"]  # mode score: one pair per request
    assert any(line.startswith("latency ms") for line in lines[:-1])  # the table came first
    assert "\r" not in err  # no progress bar when stderr is not a terminal: log lines
    assert "loadtest: score requests to" in err and "pairs/s" in err


async def test_loadtest_command_stops_after_n_requests(
    shared: Harness, demo_data_dir: Path
) -> None:
    target = f"127.0.0.1:{shared.server.port}"
    code, out, err = await run_cli(
        "--target", target, "--data", str(demo_data_dir / "eval.jsonl"),
        "--requests", "40", "--mode", "score-batch", "--batch-size", "8", "--concurrency", "4",
        "--progress",
    )  # fmt: skip
    assert code == 0, err
    assert "\r[" in err and "100%" in err  # the bar (asked for; on a terminal by default)
    summary = json.loads(out.strip().splitlines()[-1])
    check_sane(summary)
    assert summary["requests"] == 40 and summary["pairs"] == 320


async def test_loadtest_command_rejects_bad_settings(demo_data_dir: Path) -> None:
    code, _, err = await run_cli("--data", str(demo_data_dir / "eval.jsonl"), "--concurrency", "0")
    assert code != 0 and "--concurrency" in err and "RMSERVE_LOADTEST_CONCURRENCY" in err


async def test_open_loop_keeps_its_rate_and_prefer_counts_two_pairs(shared: Harness) -> None:
    data = [LoadPair(f"q{i}", f"good answer {i}", f"bad {i}") for i in range(50)]
    target = f"127.0.0.1:{shared.server.port}"
    result = await run_async(target, data, mode="prefer", rate=50.0, duration_s=2.0)
    summary = result.summary()
    check_sane(summary)
    assert 80 <= result.requests <= 101  # 50/s for 2 s, scheduled whatever the server does
    assert result.pairs == 2 * result.requests
