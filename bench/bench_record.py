"""What every benchmark in bench/ records besides its figures: the machine, its load before and
after, the run's flags, and where the raw JSON goes."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Record:
    started: float
    load_average_before: tuple[float, float, float]


def add_record_arguments(parser: argparse.ArgumentParser, duration: float) -> None:
    parser.add_argument("--duration", type=float, default=duration, help="seconds per server run")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", default="", help="the machine's condition, for the record")
    parser.add_argument("--out", type=Path)


def start_record(args: argparse.Namespace) -> Record:
    del args  # the flags are read when the record is written
    return Record(time.time(), os.getloadavg())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def finish_record(record: Record, args: argparse.Namespace, figures: dict[str, Any]) -> None:
    """Write ``figures`` with the machine and the run's conditions to ``args.out`` (if set)."""
    summary = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "system": platform.platform()},
        "threads": args.threads,
        "duration_s_per_server_run": args.duration,
        "seed": args.seed,
        "wall_s": time.time() - record.started,
        "load_average_before": record.load_average_before,
        "load_average_after": os.getloadavg(),
        "note": args.note,
        **figures,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
