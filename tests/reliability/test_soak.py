"""Soak (``pytest -m soak``, 10 minutes, not in the default run): bench/soak.py against a real
`rmserve serve`; it writes its raw figures to bench/results/soak.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench" / "results" / "soak.json"
DURATION_S = 600


@pytest.mark.soak
@pytest.mark.timeout(DURATION_S + 600)
def test_soak_memory_and_descriptors_stay_flat(tiny_artifact: Path) -> None:
    result = subprocess.run(
        [sys.executable, "bench/soak.py", "--artifact", str(tiny_artifact), "--out", str(OUT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=DURATION_S + 300,
        check=False,
    )
    assert OUT.is_file(), result.stderr[-3000:]
    report = json.loads(OUT.read_text())
    figures = {k: v for k, v in report.items() if k not in ("samples", "config")}
    assert report["passed"], figures
    assert report["rss_growth_pct"] < 5.0, figures
    assert report["fds_end"] <= report["fds_after_warmup"], figures
    assert report["codes"].get("OK", 0) > 1000, figures
    assert result.returncode == 0, result.stderr[-3000:]
