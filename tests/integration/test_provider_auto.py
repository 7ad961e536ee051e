"""`rmserve serve` with the default provider on a machine without CUDA: one clear INFO line,
no onnxruntime ERROR output on stderr."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rmserve.engine.cuda_libs import missing_cuda_libraries

BOUND_S = 120.0  # "must not hang" bound; never a performance assertion


def serve_until_serving(artifact: Path) -> list[str]:
    """Start `rmserve serve --provider auto`, stop it once SERVING; its stderr lines."""
    env = {
        **os.environ,
        "RMSERVE_ARTIFACT": str(artifact),
        "RMSERVE_HOST": "127.0.0.1",
        "RMSERVE_PORT": "0",  # any free port: the test reads only stderr
        "RMSERVE_METRICS_PORT": "0",
        "RMSERVE_PROVIDER": "auto",
        "RMSERVE_INTRA_OP_THREADS": "1",
        "RMSERVE_WARMUP_RUNS": "0",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "rmserve.cli", "serve"],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert process.stderr is not None
    lines: list[str] = []
    try:
        for line in process.stderr:
            lines.append(line)
            if " SERVING " in line:
                process.send_signal(signal.SIGTERM)
                break
        _, rest = process.communicate(timeout=BOUND_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines += rest.splitlines(keepends=True)
    assert process.returncode == 0, "".join(lines)[-3000:]
    return lines


def test_auto_on_a_machine_without_cuda_says_so_once(tiny_artifact: Path) -> None:
    if not missing_cuda_libraries():
        pytest.skip("the CUDA libraries load here")
    lines = serve_until_serving(tiny_artifact)
    text = "".join(lines)
    assert any(" SERVING " in line for line in lines), text[-3000:]
    notes = [line for line in lines if "CUDA not available" in line]
    assert len(notes) == 1, text[-3000:]
    assert " INFO " in notes[0] and "using CPU" in notes[0]
    assert "[E:onnxruntime" not in text and "[W:onnxruntime" not in text, text[-3000:]
    assert not [line for line in lines if " ERROR " in line], text[-3000:]
