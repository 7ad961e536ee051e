"""Fault, storm and fuzz tests against real servers on 127.0.0.1 (the integration harness)."""

from __future__ import annotations

import sys
from pathlib import Path

# The integration tests' server harness (make_settings, serving, scripted_factory, eventually).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

import pytest

from rmserve.engine.session import OrtEngine, load_artifact


@pytest.fixture(scope="session")
def offline_engine(tiny_artifact: Path) -> OrtEngine:
    """The artifact's ONNX model scored offline (what `rmserve eval` uses): the reference."""
    return OrtEngine(load_artifact(tiny_artifact), provider="cpu", intra_op_threads=1)
