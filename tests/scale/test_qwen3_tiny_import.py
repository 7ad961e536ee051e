"""The real-size test's Qwen3 builder at a tiny shape, in the default run: ``import-hf`` with
``--external-data`` (fp32: rewards equal HF's to 1e-4) and with ``--dtype fp16`` (a checked
parity report within the fp16 tolerance)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rmserve.artifact.folder import read_manifest
from rmserve.artifact.manifest import (
    GOLDEN_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
)
from rmserve.engine.session import OrtEngine, load_artifact
from tests.support.qwen3_rm import write_qwen3_rm

TINY = {
    "vocab_size": 1000, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
    "max_position_embeddings": 512,
}  # fmt: skip
PAIRS = [
    ("what is the capital of france ?", "paris ."),
    ("", ""),
    ("write a haiku about the sea " * 6, "waves fold into foam"),
    ("one two", "three four five six seven eight " * 3),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("qwen3-tiny")
    write_qwen3_rm(folder, **TINY)
    return folder


def import_hf(model_dir: Path, out: Path, *flags: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "rmserve.cli", "import-hf", "--model", str(model_dir),
         "--out", str(out), *flags],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def hf_and_onnx(model_dir: Path, artifact: Path) -> tuple[np.ndarray, np.ndarray]:
    loaded = load_artifact(artifact)
    prepared = loaded.preprocessor.prepare_many([p for p, _ in PAIRS], [r for _, r in PAIRS])
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, attn_implementation="eager"
    )
    model.eval()
    with torch.no_grad():
        hf = [
            model(input_ids=torch.from_numpy(p.input_ids)[None]).logits[0, 0].item()
            for p in prepared
        ]
    onnx = OrtEngine(loaded, provider="cpu").score(prepared)
    return np.array(hf, dtype=np.float32), onnx


def test_external_data_fp32(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "artifact"
    result = import_hf(model_dir, out, "--external-data")
    assert result["dtype"] == "fp32" and result["join"] == "template"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MODEL_FILE, WEIGHTS_FILE, TOKENIZER_FILE, GOLDEN_FILE, MANIFEST_FILE]
    )
    hf, onnx = hf_and_onnx(model_dir, out)
    assert np.abs(onnx - hf).max() <= 1e-4


def test_fp16(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "artifact"
    assert import_hf(model_dir, out, "--dtype", "fp16", "--external-data")["dtype"] == "fp16"
    manifest = read_manifest(out)
    assert manifest.dtype == "fp16" and manifest.parity is not None
    assert manifest.parity.status == "checked"
    hf, onnx = hf_and_onnx(model_dir, out)
    assert np.all(np.abs(onnx - hf) <= 1e-2 + 1e-2 * np.abs(hf))
