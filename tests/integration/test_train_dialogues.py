"""Training on long dialogues with the recipe's knobs: the head's own learning rate reaches the
optimiser, and the default window shrinks to a backbone with fewer positions (an explicit
--max-length over them is refused)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from rmserve.artifact.folder import read_manifest
from rmserve_training.demo.dialogues import write_dialogue_data
from rmserve_training.model.backbones import minilm_folder, tiny_config
from rmserve_training.settings import TrainSettings
from rmserve_training.train.checkpoints import TrainError, load_checkpoint
from rmserve_training.train.loop import train

POSITIONS = 128


@pytest.fixture(scope="module")
def short_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("short-backbone")
    torch.manual_seed(0)
    BertModel(
        BertConfig(**{**tiny_config().to_dict(), "max_position_embeddings": POSITIONS})
    ).save_pretrained(folder)
    (folder / "tokenizer.json").write_bytes((minilm_folder() / "tokenizer.json").read_bytes())
    return folder


def settings(data: Path, out: Path, backbone: Path, **extra: object) -> TrainSettings:
    return TrainSettings(
        train_data=data / "train.jsonl",
        eval_data=data / "eval.jsonl",
        out=out,
        base_model=str(backbone),
        batch_size=8,
        seed=0,
        **extra,  # type: ignore[arg-type]
    )


def test_dialogues_train_with_head_lr_and_a_window_capped_at_the_backbone(
    tmp_path: Path, short_backbone: Path
) -> None:
    data = tmp_path / "data"
    write_dialogue_data(data, n_train=16, n_eval=8, seed=0)
    result = train(settings(data, tmp_path / "art", short_backbone, lr=1e-4, head_lr=5e-3))
    assert result.finished and result.steps == 2
    assert read_manifest(tmp_path / "art").preprocessing.max_length == POSITIONS
    events = [json.loads(line) for line in (tmp_path / "art.work" / "metrics.jsonl").open()]
    data_event = next(e for e in events if e["event"] == "data")
    assert data_event["train_truncated_pairs"] == 16  # every dialogue is longer than 128 tokens
    groups = load_checkpoint(result.checkpoint)["optimizer"]["param_groups"]
    peaks = {g["name"]: g["initial_lr"] for g in groups}
    assert peaks == {
        "backbone": 1e-4,
        "backbone_no_decay": 1e-4,
        "head": 5e-3,
        "head_no_decay": 5e-3,
    }


def test_explicit_max_length_over_the_backbone_is_refused(
    tmp_path: Path, short_backbone: Path
) -> None:
    data = tmp_path / "data"
    write_dialogue_data(data, n_train=4, n_eval=2, seed=0)
    with pytest.raises(TrainError, match=f"--max-length 512 exceeds the backbone's {POSITIONS}"):
        train(settings(data, tmp_path / "art", short_backbone, max_length=512))
