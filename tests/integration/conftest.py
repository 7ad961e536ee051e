"""Real servers on 127.0.0.1 (free ports) serving the tiny artifact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rmserve.engine.session import OrtEngine, load_artifact
from tests.support.certs import CertAuthority
from tests.support.harness import Harness, make_settings, serving
from tests.support.multi_model import Cli, import_qwen3


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


@pytest.fixture(scope="session")
def qwen_artifact(
    demo_data_dir: Path, tmp_path_factory: pytest.TempPathFactory, rmserve_cli: Cli
) -> Path:
    """A tiny Qwen3 reward model (chat template, word-level tokenizer) named ``qwen``."""
    out = tmp_path_factory.mktemp("qwen") / "artifact"
    return import_qwen3(rmserve_cli, out, demo_data_dir / "eval.jsonl", "qwen", "q1")


@pytest.fixture(scope="session")
def qwen_v2_artifact(
    demo_data_dir: Path, tmp_path_factory: pytest.TempPathFactory, rmserve_cli: Cli
) -> Path:
    """A second version of ``qwen``: other random weights, version ``q2``."""
    out = tmp_path_factory.mktemp("qwen-v2") / "artifact"
    return import_qwen3(rmserve_cli, out, demo_data_dir / "eval.jsonl", "qwen", "q2", seed=1)


@pytest.fixture(scope="session")
async def two_models(tiny_artifact: Path, qwen_artifact: Path) -> AsyncIterator[Harness]:
    """One server of the tiny encoder (``--artifact``: named ``reward-model``, the default) and
    the tiny Qwen3 (``--model qwen=...``), with the HTTP front."""
    settings = make_settings(tiny_artifact, models={"qwen": qwen_artifact}, http_port=0)
    async with serving(settings) as harness:
        yield harness
