"""bench/gpu_check.py end to end on the CPU with tiny models (``--provider cpu --size tiny``), so
the script a GPU machine runs is the script this suite runs: every stage completes, the served
provider and device are reported, and the figures it records hold together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BOUND_S = 1800  # "must not hang" bound on a loaded 2-core machine; never a performance target


def test_gpu_check_runs_end_to_end_on_cpu(tiny_artifact: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RMSERVE_")}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--out", str(out),
         "--provider", "cpu", "--size", "tiny", "--encoder-artifact", str(tiny_artifact),
         "--max-length", "64", "--pairs", "48", "--seconds", "0.5", "--callers", "8",
         "--long-lengths", "1024,2048",
         "--budget-s", str(BOUND_S)],
        capture_output=True, text=True, timeout=BOUND_S, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["complete"] and not result["skipped"] and not result["errors"]
    for name in ("minilm-fp32", "qwen3-fp32", "qwen3-fp16"):
        stage = result["stages"][name]
        raw, served = stage["raw"], stage["served"]
        assert (raw["provider"], raw["device"]) == ("CPUExecutionProvider", "cpu")
        info = served["model_info"]
        assert (info["provider"], info["device"]) == ("CPUExecutionProvider", "cpu")
        assert info["dtype"] == name.split("-")[1]
        assert served["exit_code"] == 0
        assert str(raw["best_batch"]) in raw["pairs_per_second_by_batch"]
        assert raw["best_pairs_per_second"] == max(raw["pairs_per_second_by_batch"].values())
        assert stage["ratios_to_raw_best"]["score"] > 0
        # the server's rewards for pairs alone are the bare engine's, bit for bit on the CPU
        assert served["rewards_alone"] == raw["rewards_alone"]
        if name.endswith("fp32"):
            assert raw["batch_invariance_max_abs_diff"] <= 1e-5
    for name in ("qwen3-fp32", "qwen3-fp16"):  # the long pairs, far past max_length 64
        long = result["stages"][name]["long"]
        assert [row["tokens"] for row in long["pairs"]] == [1024, 2048]
        assert all(
            row["tokens_per_s"] > 0 and row["process_peak_rss_mib"] > 0 for row in long["pairs"]
        )
    parity = result["fp16_vs_fp32"]
    assert parity["pairs"] == 16 and parity["within_export_bound"]
    built = result["stages"]["build_qwen3"]
    assert built["fp16"]["artifact_bytes"] < built["fp32"]["artifact_bytes"]
