"""``rmserve loadtest`` (the command, in its own process) and ``rmserve.tools.loadtest.run_async``
against a real local server: bounded runs whose JSON has the fields with sane values."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from rmserve.tools.loadtest import LoadPair, run_async
from tests.support.harness import Harness, eventually, make_settings, scripted_factory, serving

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


BOUND_S = 120.0  # "must not hang" bound; never a performance assertion


def served(h: Harness, method: str) -> tuple[float, float]:
    """What the server itself counted: (OK calls of ``method``, pairs computed)."""
    return (
        h.metric("rmserve_requests_total", method=method, code="OK"),
        h.metric("rmserve_pairs_total"),
    )


def check_sane(summary: dict[str, Any], calls: float, pairs: float) -> None:
    """The summary agrees with what the server counted (``calls`` OK calls, ``pairs`` pairs)."""
    for name in FIELDS:
        assert name in summary, name
    assert 0 < summary["p50_ms"] <= summary["p90_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    assert summary["max_ms"] < BOUND_S * 1000
    assert summary["codes"] == {"OK": calls} and summary["requests"] == calls
    assert summary["pairs"] == pairs
    # the rates are the server's counts over the run's duration
    assert summary["requests_per_s"] * summary["duration_s"] == pytest.approx(calls, rel=1e-9)
    assert summary["pairs_per_s"] * summary["duration_s"] == pytest.approx(pairs, rel=1e-9)


async def test_loadtest_command_runs_a_few_seconds(shared: Harness, demo_data_dir: Path) -> None:
    target = f"127.0.0.1:{shared.server.port}"
    data = demo_data_dir / "eval.jsonl"
    calls0, pairs0 = served(shared, "Score")
    code, out, err = await run_cli(
        "--target", target, "--data", str(data), "--duration", "3", "--concurrency", "8"
    )  # fmt: skip
    assert code == 0, err
    lines = out.strip().splitlines()
    summary = json.loads(lines[-1])
    calls, pairs = served(shared, "Score")
    check_sane(summary, calls - calls0, pairs - pairs0)  # mode score: one pair per request
    assert 3.0 <= summary["duration_s"] < BOUND_S  # no new call starts after 3 s
    assert summary["tokens_per_s"] > summary["pairs_per_s"]  # several tokens per pair
    assert any(line.startswith("latency ms") for line in lines[:-1])  # the table came first
    assert "\r" not in err  # no progress bar when stderr is not a terminal: log lines
    assert "loadtest: score requests to" in err and "pairs/s" in err


async def test_loadtest_command_stops_after_n_requests(
    shared: Harness, demo_data_dir: Path
) -> None:
    target = f"127.0.0.1:{shared.server.port}"
    calls0, pairs0 = served(shared, "ScoreBatch")
    code, out, err = await run_cli(
        "--target", target, "--data", str(demo_data_dir / "eval.jsonl"),
        "--requests", "40", "--mode", "score-batch", "--batch-size", "8", "--concurrency", "4",
        "--progress",
    )  # fmt: skip
    assert code == 0, err
    assert "\r[" in err and "100%" in err  # the bar (asked for; on a terminal by default)
    summary = json.loads(out.strip().splitlines()[-1])
    calls, pairs = served(shared, "ScoreBatch")
    assert (calls - calls0, pairs - pairs0) == (40, 320)
    check_sane(summary, 40, 320)


async def test_loadtest_command_rejects_bad_settings(demo_data_dir: Path) -> None:
    code, _, err = await run_cli("--data", str(demo_data_dir / "eval.jsonl"), "--concurrency", "0")
    assert code != 0 and "--concurrency" in err and "RMSERVE_LOADTEST_CONCURRENCY" in err


async def test_open_loop_keeps_its_rate_and_prefer_counts_two_pairs(tiny_artifact: Path) -> None:
    """Open loop: requests start on schedule whatever the server does. With the engine held,
    a closed loop would stall; the open loop still sends all 40 calls, no faster than 50/s."""
    built, factory = scripted_factory(gate_open=False)
    async with serving(make_settings(tiny_artifact), factory) as h:
        engine = built[0]
        data = [LoadPair(f"q{i}", f"good answer {i}", f"bad {i}") for i in range(50)]
        target = f"127.0.0.1:{h.server.port}"
        run = asyncio.ensure_future(
            run_async(target, data, mode="prefer", rate=50.0, requests=40, duration_s=BOUND_S)
        )
        try:
            # every call was sent while none could be answered
            await eventually(
                lambda: h.metric("rmserve_inflight_requests") == 40 or run.done(), "40 calls sent"
            )
            assert not run.done(), run.result()
            assert engine.scored_pairs == 0
        finally:
            engine.gate.set()
        result = await asyncio.wait_for(run, timeout=BOUND_S)
        summary = result.summary()
        check_sane(summary, *served(h, "Prefer"))
        assert result.requests == 40 and result.pairs == 80  # Prefer counts two pairs
        # 40 starts spaced 1/50 s apart: a rate limiter that lets calls out early fails this
        assert result.duration_s >= 39 / 50.0


async def test_loadtest_group_mode_sends_score_groups(shared: Harness, demo_data_dir: Path) -> None:
    target = f"127.0.0.1:{shared.server.port}"
    calls0, pairs0 = served(shared, "ScoreGroup")
    code, out, err = await run_cli(
        "--target", target, "--data", str(demo_data_dir / "eval.jsonl"),
        "--requests", "10", "--mode", "group", "--group-size", "6", "--concurrency", "2",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    calls, pairs = served(shared, "ScoreGroup")
    assert (calls - calls0, pairs - pairs0) == (10, 60)
    check_sane(summary, 10, 60)
