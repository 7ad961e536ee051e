"""A tiny Qwen3 and a tiny Llama backbone (tests/support/hf_families.py) trained through
``rmserve train`` with LoRA + gradient checkpointing (Llama in bf16), exported with the adapters
merged, and served: the plain-weights ONNX graph scores what the trained, unmerged torch model
scores, truncated pairs included."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from transformers import AutoTokenizer

from rmserve.artifact.folder import read_manifest
from rmserve.artifact.manifest import MODEL_FILE
from rmserve.engine.session import OrtEngine, load_artifact
from rmserve.text.preprocess import PreparedPair
from rmserve.v1 import reward_pb2
from rmserve_training.demo.data import write_demo_data
from rmserve_training.export.check import torch_feed
from rmserve_training.train.checkpoints import load_checkpoint, model_from_checkpoint
from tests.support.harness import make_settings, serving
from tests.support.hf_families import FAMILIES, build

Cli = Callable[[list[str]], tuple[int, list[str]]]
MAX_LENGTH = 96
LORA_RANK = 4
PRECISION = {"qwen3": "fp32", "llama": "bf16"}
PAIRS = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("Say hello!", "Hello, how can I help you today?"),
    ("", ""),
    ("What is 2 + 2?", "<think>\nadd them\n</think>\n\nThe answer is 4."),
    ("Write a haiku about the sea. " * 40, "Waves fold into foam."),  # prompt cut from the left
    ("Say hello!", "one two three four five " * 60),  # response alone too long
]
TRUNCATED = {4, 5}


@dataclass
class LoraRun:
    family: str
    hf_dir: Path
    artifact: Path
    checkpoint: dict[str, Any]
    summary: dict[str, Any]
    engine: OrtEngine
    prepared: list[PreparedPair]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lora-data")
    write_demo_data(folder, n_train=24, n_eval=16, seed=0)
    return folder


def train_argv(family: str, hf_dir: Path, data_dir: Path, out: Path) -> list[str]:
    return [
        "train",
        "--train-data", str(data_dir / "train.jsonl"),
        "--eval-data", str(data_dir / "eval.jsonl"),
        "--out", str(out),
        "--base-model", str(hf_dir),
        "--max-length", str(MAX_LENGTH),
        "--batch-size", "8",
        "--lr", "2e-2",
        "--warmup-ratio", "0",
        "--lora-rank", str(LORA_RANK),
        "--gradient-checkpointing",
        "--precision", PRECISION[family],
    ]  # fmt: skip


@pytest.fixture(scope="module", params=sorted(PRECISION))
def lora_run(
    request: pytest.FixtureRequest,
    data_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    rmserve_cli: Cli,
) -> LoraRun:
    family = request.param
    root = tmp_path_factory.mktemp(f"lora-{family}")
    hf_dir = build(FAMILIES[family], root / "hf")
    artifact = root / "artifact"
    code, lines = rmserve_cli(train_argv(family, hf_dir, data_dir, artifact))
    assert code == 0, lines
    checkpoint = load_checkpoint(root / "artifact.work" / "checkpoint.pt")
    engine = OrtEngine(load_artifact(artifact), provider="cpu", intra_op_threads=1)
    prepared = engine.artifact.preprocessor.prepare_many(*zip(*PAIRS, strict=True))
    return LoraRun(family, hf_dir, artifact, checkpoint, json.loads(lines[-1]), engine, prepared)


@pytest.fixture(scope="module")
def torch_rewards(lora_run: LoraRun) -> np.ndarray:
    """The model as trained: LoRA adapters NOT merged, fp32, one padded batch."""
    model = model_from_checkpoint(lora_run.checkpoint, merge=False)
    assert any("lora_B" in name for name, _ in model.named_parameters())
    pad = lora_run.engine.artifact.manifest.preprocessing.pad_token_id
    with torch.no_grad():
        rewards: np.ndarray = model(**torch_feed(lora_run.prepared, pad, model.input_names)).numpy()
    return rewards


def test_summary_and_manifest_record_the_setup(lora_run: LoraRun) -> None:
    precision = PRECISION[lora_run.family]
    summary = lora_run.summary
    assert summary["finished"] and summary["steps"] == 3
    assert summary["lora_rank"] == LORA_RANK and summary["gradient_checkpointing"] is True
    assert summary["precision"] == precision
    manifest = read_manifest(lora_run.artifact)
    assert manifest.architecture == "decoder" and manifest.pooling == "last"
    assert manifest.preprocessing.join == "template"
    assert manifest.training is not None and manifest.training.lora is not None
    assert manifest.training.precision == precision
    assert manifest.training.gradient_checkpointing is True
    lora = manifest.training.lora
    assert (lora.rank, lora.alpha, lora.merged) == (LORA_RANK, 2 * LORA_RANK, True)
    assert set(lora.target_modules) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
    }  # fmt: skip
    assert manifest.training.trainable_parameters == summary["trainable_parameters"]
    assert 0 < summary["trainable_parameters"] < (manifest.parameters or 0) // 4


def test_artifact_holds_plain_weights(lora_run: LoraRun) -> None:
    graph = onnx.load(str(lora_run.artifact / MODEL_FILE), load_external_data=False).graph
    names = [t.name for t in graph.initializer] + [n.name for n in graph.node]
    assert names and not [n for n in names if "lora" in n.lower()]
    merged = model_from_checkpoint(lora_run.checkpoint)
    manifest = read_manifest(lora_run.artifact)
    assert manifest.parameters == sum(p.numel() for p in merged.parameters())


def test_merged_onnx_equals_trained_torch(lora_run: LoraRun, torch_rewards: np.ndarray) -> None:
    assert [p.truncated for p in lora_run.prepared] == [i in TRUNCATED for i in range(len(PAIRS))]
    onnx_rewards = lora_run.engine.score(lora_run.prepared)
    assert np.abs(onnx_rewards - torch_rewards).max() <= 1e-4
    alone = np.concatenate([lora_run.engine.score([pair]) for pair in lora_run.prepared])
    assert np.abs(alone - torch_rewards).max() <= 1e-4


def test_the_adapters_change_the_rewards(lora_run: LoraRun, torch_rewards: np.ndarray) -> None:
    """Training moved the adapters far enough that merging them matters."""
    model = model_from_checkpoint(lora_run.checkpoint, merge=False)
    pad = lora_run.engine.artifact.manifest.preprocessing.pad_token_id
    with torch.no_grad(), model.backbone.disable_adapter():
        base = model(**torch_feed(lora_run.prepared, pad, model.input_names)).numpy()
    assert np.abs(base - torch_rewards).max() > 1e-3


def test_tokenises_like_the_chat_template(lora_run: LoraRun) -> None:
    tokenizer = AutoTokenizer.from_pretrained(lora_run.hf_dir)
    for pair, (prompt, response) in zip(lora_run.prepared, PAIRS, strict=True):
        if pair.truncated:
            continue
        conv = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        templated = tokenizer.apply_chat_template(conv, tokenize=True)
        if hasattr(templated, "keys"):  # a BatchEncoding
            templated = templated["input_ids"]
        assert pair.input_ids.tolist() == list(templated)


@pytest.mark.asyncio
async def test_served_rewards_equal_trained_torch(
    lora_run: LoraRun, torch_rewards: np.ndarray
) -> None:
    request = reward_pb2.ScoreBatchRequest(
        pairs=[reward_pb2.Pair(prompt=p, response=r) for p, r in PAIRS]
    )
    async with serving(make_settings(lora_run.artifact, max_batch_size=4)) as harness:
        reply = await harness.stub.ScoreBatch(request, timeout=60)
    served = np.array([result.reward for result in reply.results], dtype=np.float32)
    assert np.abs(served - torch_rewards).max() <= 1e-4
    assert [r.truncated for r in reply.results] == [i in TRUNCATED for i in range(len(PAIRS))]


def test_export_command_merges_the_checkpoint_again(
    lora_run: LoraRun, rmserve_cli: Cli, tmp_path: Path
) -> None:
    checkpoint = lora_run.artifact.with_name("artifact.work") / "checkpoint.pt"
    out = tmp_path / "again"
    code, lines = rmserve_cli(["export", "--checkpoint", str(checkpoint), "--out", str(out)])
    assert code == 0, lines
    assert read_manifest(out).training == read_manifest(lora_run.artifact).training
    again = OrtEngine(load_artifact(out), provider="cpu", intra_op_threads=1)
    assert (
        np.abs(again.score(lora_run.prepared) - lora_run.engine.score(lora_run.prepared)).max()
        <= 1e-5
    )


@pytest.mark.parametrize("lora_run", ["qwen3"], indirect=True)
def test_resume_continues_the_adapters(
    lora_run: LoraRun, data_dir: Path, rmserve_cli: Cli, tmp_path: Path
) -> None:
    argv = train_argv(lora_run.family, lora_run.hf_dir, data_dir, tmp_path / "split")
    code, _ = rmserve_cli([*argv, "--stop-after-steps", "1"])
    assert code == 3
    code, lines = rmserve_cli([*argv, "--resume"])
    assert code == 0 and json.loads(lines[-1])["steps"] == 3
    resumed = load_checkpoint(tmp_path / "split.work" / "checkpoint.pt")["model"]
    whole = lora_run.checkpoint["model"]
    assert resumed.keys() == whole.keys() and any("lora_B" in k for k in whole)
    assert max((resumed[k] - whole[k]).abs().max().item() for k in whole) <= 1e-6
