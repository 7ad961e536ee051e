"""The Dockerfile's install step, run for real: docker/install-venv.sh (the very script the image
build runs) installs the CPU variant into a fresh venv, which then has to serve-start-ready:
the CLI works, onnxruntime imports, and torch is absent. Needs PyPI (or pip's cache)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.k8s_render import ROOT


@pytest.mark.slow
def test_cpu_variant_installs_into_a_fresh_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    env = {**os.environ, "PYTHON": sys.executable, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("VIRTUAL_ENV", None)
    install = subprocess.run(
        ["sh", str(ROOT / "docker" / "install-venv.sh"), str(ROOT), str(venv), "cpu"],
        capture_output=True,
        text=True,
        timeout=540,
        env=env,
    )
    assert install.returncode == 0, install.stdout[-4000:] + install.stderr[-4000:]
    python = venv / "bin" / "python"

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    probe = run(
        str(python),
        "-c",
        "import importlib.util as u, onnxruntime, rmserve.server.healthcheck; "
        "print(onnxruntime.__version__, u.find_spec('torch') is None, "
        "u.find_spec('transformers') is None, u.find_spec('pip') is None)",
    )
    assert probe.returncode == 0, probe.stderr
    version, no_torch, no_transformers, no_pip = probe.stdout.split()
    assert version.startswith("1.31."), version
    assert (no_torch, no_transformers, no_pip) == ("True", "True", "True")
    cli = run(str(venv / "bin" / "rmserve"), "serve", "--help")
    assert cli.returncode == 0, cli.stderr
    assert "--artifact" in cli.stdout and "--metrics-port" in cli.stdout
    health = run(str(python), "-m", "rmserve.server.healthcheck", "--target", "127.0.0.1:1")
    assert health.returncode == 1, health.stdout + health.stderr
