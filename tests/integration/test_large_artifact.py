"""Weights as ONNX external data (forced on the tiny model): the artifact is model.onnx plus one
model.onnx.data, the export check ran on exactly the bytes that are served, and a real
`rmserve serve` process scores what the torch model scores."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from rmserve.artifact.folder import read_manifest
from rmserve.artifact.manifest import (
    GOLDEN_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
)
from rmserve.engine.session import load_artifact
from rmserve.testing import start_server
from rmserve.v1 import reward_pb2, reward_pb2_grpc

PAIRS = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("", ""),
    ("Say something kind. " * 40, "You are doing well."),
    ("short", "a longer answer that goes on for a while " * 3),
]


def torch_rewards(tiny_run: Any, artifact: Path, pairs: list[tuple[str, str]]) -> np.ndarray:
    from rmserve_training.export.check import torch_scores
    from rmserve_training.train.checkpoints import load_checkpoint, model_from_checkpoint

    model = model_from_checkpoint(load_checkpoint(tiny_run.work_dir / "checkpoint.pt"))
    prepared = load_artifact(artifact).preprocessor.prepare_many(
        [p for p, _ in pairs], [r for _, r in pairs]
    )
    return np.concatenate([torch_scores(model, [pair], 0) for pair in prepared])


def test_external_artifact_is_model_plus_one_weights_file(
    tiny_external_artifact: Path, tiny_artifact: Path
) -> None:
    folder = tiny_external_artifact
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [MODEL_FILE, WEIGHTS_FILE, TOKENIZER_FILE, GOLDEN_FILE, MANIFEST_FILE]
    )
    manifest = read_manifest(folder)
    assert sorted(manifest.files) == sorted([MODEL_FILE, WEIGHTS_FILE, TOKENIZER_FILE, GOLDEN_FILE])
    for name, entry in manifest.files.items():
        assert entry.bytes == (folder / name).stat().st_size
        assert entry.sha256 == hashlib.sha256((folder / name).read_bytes()).hexdigest()
    assert manifest.parameters is not None
    weights = manifest.files[WEIGHTS_FILE].bytes
    assert weights is not None and weights >= manifest.parameters * 4 * 0.9  # fp32, all outside
    assert (folder / MODEL_FILE).stat().st_size < weights / 10
    inline = read_manifest(tiny_artifact)
    assert manifest.version != inline.version  # the graph's hash alone is not the version


def test_external_artifact_serves_torch_rewards(
    tiny_run: Any, tiny_external_artifact: Path, tmp_path: Path
) -> None:
    expected = torch_rewards(tiny_run, tiny_external_artifact, PAIRS)
    server = start_server(tiny_external_artifact, tmp_path / "serve.log", "--warmup-runs", "0")
    try:
        server.wait_serving()
        with grpc.insecure_channel(server.target) as channel:
            stub = reward_pb2_grpc.RewardServiceStub(channel)
            pairs = [reward_pb2.Pair(prompt=p, response=r) for p, r in PAIRS]
            reply = stub.ScoreBatch(reward_pb2.ScoreBatchRequest(pairs=pairs), timeout=60)
            info = stub.GetModelInfo(reward_pb2.GetModelInfoRequest(), timeout=60)
    finally:
        assert server.terminate() == 0
    served = np.array([r.reward for r in reply.results], dtype=np.float32)
    assert np.abs(served - expected).max() <= 1e-4
    manifest = read_manifest(tiny_external_artifact)
    assert info.dtype == "fp32" and info.parameters == manifest.parameters
    assert info.parity.status == "checked"
    assert info.parity.provider == "CPUExecutionProvider"
    assert info.parity.max_abs_diff == pytest.approx(manifest.parity.max_abs_diff)
    assert info.parity.rank_agreement == pytest.approx(manifest.parity.rank_agreement)
    assert "checked against the torch fp32 model on CPUExecutionProvider" in server.output()


def test_export_check_runs_on_the_bytes_that_are_served(
    tiny_run: Any, tmp_path: Path, rmserve_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checked folder holds the final file names, and the artifact's files are byte for
    byte the ones the check scored."""
    from rmserve_training.export import build as export

    seen: dict[str, str] = {}
    real_check = export.check_artifact

    def recording_check(onnx_path: Path, *args: Any) -> Any:
        seen.clear()
        for file in onnx_path.parent.iterdir():
            seen[file.name] = hashlib.sha256(file.read_bytes()).hexdigest()
        return real_check(onnx_path, *args)

    monkeypatch.setattr(export, "check_artifact", recording_check)
    out = tmp_path / "artifact"
    checkpoint = str(tiny_run.work_dir / "checkpoint.pt")
    code, _ = rmserve_cli(["export", "--checkpoint", checkpoint, "--out", str(out),
                           "--external-data"])  # fmt: skip
    assert code == 0
    assert sorted(seen) == sorted([MODEL_FILE, WEIGHTS_FILE, TOKENIZER_FILE])
    for name, digest in seen.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]  # no staging left behind
