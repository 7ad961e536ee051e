"""Real servers on 127.0.0.1 (free ports) serving the tiny artifact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rmserve.engine.session import OrtEngine, load_artifact
from tests.support.certs import CertAuthority
from tests.support.harness import Harness, make_settings, serving


@pytest.fixture(scope="session")
def offline_engine(tiny_artifact: Path) -> OrtEngine:
    """What `rmserve eval` scores with: the artifact's ONNX model, offline."""
    return OrtEngine(load_artifact(tiny_artifact), provider="cpu", intra_op_threads=1)


@pytest.fixture(scope="session")
async def shared(tiny_artifact: Path) -> AsyncIterator[Harness]:
    """One server for the tests that only read results (small limits to test them too)."""
    settings = make_settings(
        tiny_artifact, max_batch_size=16, max_request_pairs=2000, max_message_bytes=1024 * 1024
    )
    async with serving(settings) as harness:
        yield harness


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    """A test certificate authority, new for each module that uses it."""
    return CertAuthority(tmp_path_factory.mktemp("pki"))
