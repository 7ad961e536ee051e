"""``rmserve loadtest``: capacity planning against a running server.

Prints a table, then one JSON line (the last line of stdout) for scripts. Progress goes to
stderr: a bar when it is a terminal, log lines otherwise. ``--target``, ``--timeout`` (each
request's deadline) and ``--tls*`` are the client's flags; they and the bearer token read
``RMSERVE_CLIENT_*`` like every client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from rmserve.cli_args import add_settings_arguments, settings_from_args
from rmserve.client import RewardClientError
from rmserve.client.cli import add_client_arguments, client_settings
from rmserve.tools.loadtest import LoadPair, LoadtestResult, run_async
from rmserve.tools.loadtest_progress import LogLines, Progress, TerminalBar

DEFAULT_DURATION_S = 10.0
MAX_DURATION_S = 3600.0  # the time bound when only --requests is given


class LoadtestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RMSERVE_LOADTEST_", extra="forbid", frozen=True)

    data: Path = Field(
        description="Preference JSONL (prompt/chosen/rejected, HH or conversational; .gz ok): "
        "chosen is scored, rejected is the second Prefer response."
    )
    mode: Literal["score", "score-batch", "prefer", "group"] = Field(
        default="score",
        description="score: one pair per Score; score-batch: --batch-size pairs per ScoreBatch; "
        "prefer: one Prefer (two responses) per request; group: one ScoreGroup of "
        "--group-size responses to one prompt (a GRPO group).",
    )
    concurrency: int = Field(
        default=16,
        ge=1,
        le=10_000,
        description="Closed loop: callers, each with one request out (ignored with --rate).",
    )
    duration: float | None = Field(
        default=None,
        gt=0.0,
        le=MAX_DURATION_S,
        description=f"Seconds to run (default {DEFAULT_DURATION_S:g}; with --requests only, "
        f"at most {MAX_DURATION_S:g}).",
    )
    requests: int | None = Field(
        default=None, ge=1, le=100_000_000, description="Stop after this many requests."
    )
    batch_size: int = Field(default=64, ge=1, le=1_000_000, description="Pairs per ScoreBatch.")
    group_size: int = Field(
        default=8, ge=1, le=1_000_000, description="Responses per ScoreGroup (--mode group)."
    )
    rate: float | None = Field(
        default=None,
        gt=0.0,
        le=1_000_000.0,
        description="Open loop: start this many requests per second whatever the server does "
        "(latency counts from the scheduled start; use it to measure p99).",
    )
    progress: bool | None = Field(
        default=None,
        description="A live progress bar on stderr; without it, a log line every few seconds "
        "(default: a bar when stderr is a terminal).",
    )

    def duration_s(self) -> float:
        if self.duration is not None:
            return self.duration
        return MAX_DURATION_S if self.requests is not None else DEFAULT_DURATION_S


def load_pairs(path: Path) -> list[LoadPair]:
    """Preference pairs through the training reader (torch-free), as load items."""
    from rmserve.text.preference_data import load_preferences

    return [LoadPair(p.prompt, p.chosen, p.rejected) for p in load_preferences(path).pairs]


def table(result: LoadtestResult, target: str) -> str:
    codes = ", ".join(f"{code}={n}" for code, n in sorted(result.codes.items())) or "-"
    rows = [
        ("target", target),
        ("mode", result.mode),
        ("duration", f"{result.duration_s:.2f} s"),
        ("requests", f"{result.requests}  ({result.requests_per_s:.1f}/s)"),
        ("pairs", f"{result.pairs}  ({result.pairs_per_s:.1f}/s)"),
        ("tokens", f"{result.tokens}  ({result.tokens_per_s:.0f}/s)"),
        (
            "latency ms",
            f"p50 {result.p50_ms:.1f}  p90 {result.p90_ms:.1f}  p99 {result.p99_ms:.1f}  "
            f"max {result.max_ms:.1f}",
        ),
        ("codes", codes),
        ("client cpu", f"{result.client_cpu_s:.2f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def progress_for(settings: LoadtestSettings) -> Progress:
    bar = settings.progress if settings.progress is not None else sys.stderr.isatty()
    return TerminalBar(sys.stderr) if bar else LogLines()


def loadtest(args: argparse.Namespace) -> int:
    settings = settings_from_args(LoadtestSettings, args)
    client = client_settings(args)
    try:
        data = load_pairs(settings.data)
        result = asyncio.run(
            run_async(
                client.target,
                data,
                mode=settings.mode,
                concurrency=settings.concurrency,
                duration_s=settings.duration_s(),
                requests=settings.requests,
                batch_size=settings.batch_size,
                group_size=settings.group_size,
                rate=settings.rate,
                deadline_s=client.timeout,
                progress=progress_for(settings),
                client=client,
            )
        )
    except (OSError, ValueError, RewardClientError) as e:
        print(f"rmserve loadtest: {e}", file=sys.stderr)
        return 1
    print(table(result, client.target))
    print(json.dumps(result.summary()), flush=True)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "loadtest",
        help="load-test a running server; prints a table and a final JSON line",
        description="Closed-loop (--concurrency) or open-loop (--rate) load against a running "
        "server, bounded by --duration and/or --requests. The last stdout line is JSON with "
        "pairs_per_s, tokens_per_s, requests_per_s, p50_ms, p90_ms, p99_ms, max_ms, codes and "
        "duration_s. Every flag also reads its RMSERVE_LOADTEST_* variable; --target, "
        "--timeout (each request's deadline) and --tls* read RMSERVE_CLIENT_*, and so does the "
        "bearer token (RMSERVE_CLIENT_TOKEN).",
    )
    add_client_arguments(p)
    add_settings_arguments(p, LoadtestSettings)
    p.set_defaults(handler=loadtest)
