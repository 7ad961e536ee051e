"""A trained model's checkpoint and what is built from it: the model (LoRA merged), the export
request, and the fresh model a run starts from."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rmserve.artifact.manifest import Normalization, Preprocessing, TrainingRecord
from rmserve.text.preference_data import PreferencePair
from rmserve_training.export.build import ExportRequest
from rmserve_training.export.onnx_layout import Dtype
from rmserve_training.model.backbones import (
    architecture_of,
    backbone_from_config,
    build_backbone,
    resolve_backbone,
)
from rmserve_training.model.lora import merge_lora
from rmserve_training.model.memory import MemoryOptions, prepare_backbone
from rmserve_training.model.reward_model import Pooling, RewardModel


class TrainError(Exception):
    """Training cannot produce a valid reward model; the message says why."""


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])


def build_model(
    config_dict: dict[str, Any], pooling: Pooling, seed: int, source_spec: str | None = None
) -> RewardModel:
    """A fresh model: backbone weights from ``source_spec`` (None: structure only) + new head."""
    if source_spec is not None:
        source = resolve_backbone(source_spec)
        backbone = build_backbone(source, seed)
        config = source.config
    else:
        backbone = backbone_from_config(config_dict)
        config = backbone.config
    architecture = architecture_of(config)
    torch.manual_seed(seed)
    return RewardModel.with_new_head(
        backbone, config.hidden_size, "last" if architecture == "decoder" else pooling, architecture
    )


def load_checkpoint(path: Path) -> dict[str, Any]:
    checkpoint: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint


def model_from_checkpoint(checkpoint: dict[str, Any], merge: bool = True) -> RewardModel:
    """The checkpoint's model in eval mode; LoRA adapters merged into plain weights unless
    ``merge`` is False (then it is the very model that was trained)."""
    config = checkpoint["backbone_config"]
    model = build_model(config, checkpoint["pooling"], 0)
    options = MemoryOptions.from_settings(checkpoint["settings"])
    prepare_backbone(model, config["model_type"], options, for_training=False)
    model.load_state_dict(checkpoint["model"])
    if merge:
        merge_lora(model)
    model.eval()
    return model


def export_request(
    model: RewardModel,
    checkpoint: dict[str, Any],
    validation_texts: Sequence[tuple[str, str]],
    version: str | None = None,
    dtype: Dtype = "fp32",
    external_data: bool = False,
) -> ExportRequest:
    config = checkpoint["backbone_config"]
    normalization = checkpoint.get("normalization")
    training = checkpoint.get("training")  # absent from checkpoints older than the record
    if normalization is None:
        raise TrainError("checkpoint has no normalisation stats: it is not from a finished run")
    return ExportRequest(
        scorer=model,
        tokenizer_json=checkpoint["tokenizer_json"],
        preprocessing=Preprocessing.model_validate(checkpoint["preprocessing"]),
        name=checkpoint["settings"]["name"],
        backbone=checkpoint["backbone"],
        model_type=config["model_type"],
        normalization=Normalization.model_validate(normalization),
        validation_texts=validation_texts,
        version=version,
        num_heads=int(config.get("num_attention_heads", 0)),
        hidden_size=int(config.get("hidden_size", 0)),
        metrics={f"eval_{k}": v for k, v in checkpoint.get("eval_metrics", {}).items()},
        dtype=dtype,
        external_data=external_data,
        training=TrainingRecord.model_validate(training) if training else None,
    )


def validation_texts(pairs: Sequence[PreferencePair], count: int = 24) -> list[tuple[str, str]]:
    step = max(1, len(pairs) // count)
    picked = pairs[::step][:count]
    return [(p.prompt, p.chosen) for p in picked[::2]] + [
        (p.prompt, p.rejected) for p in picked[1::2]
    ]
