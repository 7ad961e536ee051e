"""Long contexts, per decoder family (Qwen2, Qwen3, Llama with llama3 RoPE scaling, Mistral with
a sliding window, Gemma-2 with soft-capping and sliding layers): ``import-hf`` with default flags
takes the model's own context, exports attention as onnxruntime's GroupQueryAttention, checks a
pair near that length itself, and the graph scores a >4k-token pair as HF does under right and
left padding, alone or in a batch, also through a real server."""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rmserve.artifact.manifest import MODEL_FILE, Manifest
from rmserve.engine.session import OrtEngine, load_artifact
from rmserve.text.preprocess import PreparedPair
from rmserve.v1 import reward_pb2
from tests.support.harness import make_settings, serving
from tests.support.hf_families import FAMILIES, build, left_padded

Cli = Callable[[list[str]], tuple[int, list[str]]]
POSITIONS = 8192
PAIRS = [
    ("Say hello!", "one two three four five " * 900),  # > 4k tokens in every family
    ("What is the capital of France?", "Paris is the capital of France."),
    ("", ""),
]


@dataclass
class LongImport:
    artifact: Path
    manifest: Manifest
    engine: OrtEngine
    prepared: list[PreparedPair]
    reference: np.ndarray  # HF's own forward (eager, fp32), each pair alone and unpadded


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def long_import(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, rmserve_cli: Cli
) -> LongImport:
    folder = tmp_path_factory.mktemp(f"{request.param}-long")
    hf_dir = build(FAMILIES[request.param], folder / "hf", positions=POSITIONS)
    artifact = folder / "artifact"
    code, lines = rmserve_cli(["import-hf", "--model", str(hf_dir), "--out", str(artifact)])
    assert code == 0, lines
    engine = OrtEngine(load_artifact(artifact), provider="cpu", intra_op_threads=1)
    prepared = engine.artifact.preprocessor.prepare_many(*zip(*PAIRS, strict=True))
    model = AutoModelForSequenceClassification.from_pretrained(hf_dir, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        reference = [
            model(input_ids=torch.from_numpy(pair.input_ids)[None]).logits[0, 0].item()
            for pair in prepared
        ]
    return LongImport(
        artifact, engine.artifact.manifest, engine, prepared, np.array(reference, np.float32)
    )


def test_default_import_takes_the_models_context_with_fused_attention(
    long_import: LongImport,
) -> None:
    manifest = long_import.manifest
    assert manifest.preprocessing.max_length == POSITIONS
    assert manifest.optimization == "ort-gqa"
    ops = collections.Counter(
        n.op_type for n in onnx.load(long_import.artifact / MODEL_FILE).graph.node
    )
    assert ops["GroupQueryAttention"] == 2 and ops["Softmax"] == 0
    assert manifest.shape is not None and manifest.shape.attention == "fused"
    assert (manifest.shape.num_layers, manifest.shape.num_key_value_heads) == (2, 2)
    # The import checked one pair near the model's length against torch, and recorded it.
    assert manifest.metrics["export_long_parity_tokens"] >= POSITIONS - 128
    assert manifest.metrics["export_long_parity_max_abs_diff"] <= 1e-4


def test_long_pair_equals_hf_right_padded(long_import: LongImport) -> None:
    prepared = long_import.prepared
    assert prepared[0].num_tokens > 4096 and not prepared[0].truncated
    batch = long_import.engine.score(prepared)  # one right-padded batch
    alone = np.concatenate([long_import.engine.score([pair]) for pair in prepared])
    assert np.abs(batch - long_import.reference).max() <= 1e-4
    assert np.abs(batch - alone).max() <= 1e-5


def test_long_pair_equals_hfleft_padded(long_import: LongImport) -> None:
    session = ort.InferenceSession(
        str(long_import.artifact / MODEL_FILE), providers=["CPUExecutionProvider"]
    )
    pad_id = long_import.manifest.preprocessing.pad_token_id
    (left,) = session.run(["rewards"], left_padded(long_import.prepared, pad_id))
    assert np.abs(np.asarray(left) - long_import.reference).max() <= 1e-4


@pytest.mark.asyncio
async def test_served_long_pair_is_batch_invariant(long_import: LongImport) -> None:
    settings = make_settings(long_import.artifact, max_batch_size=4)
    pairs = [reward_pb2.Pair(prompt=p, response=r) for p, r in PAIRS]
    async with serving(settings) as harness:
        together = await harness.stub.ScoreBatch(
            reward_pb2.ScoreBatchRequest(pairs=pairs), timeout=600
        )
        alone = [
            await harness.stub.Score(reward_pb2.ScoreRequest(prompt=p, response=r), timeout=600)
            for p, r in PAIRS
        ]
    batch = np.array([result.reward for result in together.results], dtype=np.float32)
    single = np.array([reply.reward for reply in alone], dtype=np.float32)
    assert np.abs(batch - single).max() <= 1e-5
    assert np.abs(batch - long_import.reference).max() <= 1e-4


@pytest.mark.asyncio
async def test_a_40k_context_model_warms_up_and_serves(tmp_path: Path, rmserve_cli: Cli) -> None:
    """Warm-up builds its max-length shape from token ids: a 40,960-token model's max_length in
    text would pass the preprocessor's per-text character limit (the server refused to start)."""
    hf_dir = build(FAMILIES["qwen3"], tmp_path / "hf", positions=40960)
    artifact = tmp_path / "artifact"
    code, lines = rmserve_cli(["import-hf", "--model", str(hf_dir), "--out", str(artifact)])
    assert code == 0, lines
    async with serving(make_settings(artifact, warmup_runs=1)) as harness:
        info = await harness.stub.GetModelInfo(reward_pb2.GetModelInfoRequest(), timeout=60)
        reply = await harness.stub.Score(
            reward_pb2.ScoreRequest(prompt=PAIRS[1][0], response=PAIRS[1][1]), timeout=600
        )
    assert info.max_length == 40960
    assert np.isfinite(reply.reward) and not reply.truncated
