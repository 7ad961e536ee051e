"""``--lora-rank R``: peft LoRA adapters on the backbone, merged into plain weights for export.

Only the adapters train inside the backbone (peft freezes the rest); the scalar head sits
outside the backbone and is trained in full. Adapters go on every linear layer of attention
and MLP, as the QLoRA study found best (attention alone trains measurably worse):

- Llama, Mistral, Qwen2, Qwen3, Gemma, Gemma-2: q_proj, k_proj, v_proj, o_proj, gate_proj,
  up_proj, down_proj
- BERT (MiniLM, ``tiny``): query, key, value, intermediate.dense, output.dense (the pooler,
  which the reward head does not use, is left alone)
- any other family: peft's ``all-linear`` (every linear layer of the backbone)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from rmserve.artifact.manifest import LoraRecord
from rmserve_training.model.reward_model import RewardModel

DECODER_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
FAMILY_TARGETS: dict[str, list[str]] = {
    **{family: DECODER_TARGETS for family in ("llama", "mistral", "qwen2", "qwen3")},
    **{family: DECODER_TARGETS for family in ("gemma", "gemma2")},
    "bert": ["query", "key", "value", "intermediate.dense", "output.dense"],
}
ALL_LINEAR = "all-linear"


@dataclass(frozen=True)
class LoraOptions:
    rank: int
    alpha: int
    dropout: float

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> LoraOptions | None:
        """From TrainSettings as a dict (a run's, or a checkpoint's); None: no LoRA."""
        rank = int(settings.get("lora_rank") or 0)
        if rank == 0:
            return None
        alpha = settings.get("lora_alpha")
        return cls(
            rank, int(alpha) if alpha else 2 * rank, float(settings.get("lora_dropout") or 0.0)
        )


def target_modules(model_type: str) -> list[str] | str:
    return FAMILY_TARGETS.get(model_type, ALL_LINEAR)


def add_lora(model: RewardModel, model_type: str, options: LoraOptions) -> LoraRecord:
    """Wrap ``model.backbone`` with fresh adapters (in place) and freeze the rest of it."""
    config = LoraConfig(
        r=options.rank,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=target_modules(model_type),
        bias="none",
    )
    wrapped = get_peft_model(model.backbone, config)
    model.backbone = wrapped
    matched = getattr(wrapped.peft_config["default"], "target_modules", None) or ALL_LINEAR
    return LoraRecord(
        rank=options.rank,
        alpha=options.alpha,
        dropout=options.dropout,
        target_modules=sorted(matched) if not isinstance(matched, str) else [matched],
    )


def has_lora(model: RewardModel) -> bool:
    return isinstance(model.backbone, PeftModel)


def merge_lora(model: RewardModel) -> None:
    """Fold the adapters into the backbone's weights (W + B·A·alpha/r) and drop peft's
    wrappers, so the model traces to a plain graph. A no-op without LoRA."""
    if has_lora(model):
        wrapped: Any = model.backbone
        merged: nn.Module = wrapped.merge_and_unload()
        model.backbone = merged


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
