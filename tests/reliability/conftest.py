"""Fault, storm and fuzz tests against real servers on 127.0.0.1 (the integration harness)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmserve.engine.session import OrtEngine, load_artifact


@pytest.fixture(scope="session")
def offline_engine(tiny_artifact: Path) -> OrtEngine:
    """The artifact's ONNX model scored offline (what `rmserve eval` uses): the reference."""
    return OrtEngine(load_artifact(tiny_artifact), provider="cpu", intra_op_threads=1)
