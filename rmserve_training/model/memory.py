"""Big backbones on small memory: gradient checkpointing and LoRA applied to a freshly built
model, bf16 resolved for its device, all of it recorded for the manifest (``TrainingRecord``).

Memory per parameter with AdamW: full fine-tuning in fp32 keeps weights, gradients and two
moments (16 bytes); with LoRA the frozen backbone keeps only its fp32 weights (4 bytes) and the
adapters and head are all that carry gradients and moments. Gradient checkpointing keeps one
activation per layer boundary and recomputes the rest in the backward pass (~30% more compute);
bf16 autocast halves the activations that remain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rmserve.artifact.manifest import LoraRecord, TrainingRecord
from rmserve_training.model.lora import LoraOptions, add_lora, trainable_parameters
from rmserve_training.model.precision import Precision, device_of, effective_precision
from rmserve_training.model.reward_model import RewardModel


@dataclass(frozen=True)
class MemoryOptions:
    precision: Precision
    gradient_checkpointing: bool
    lora: LoraOptions | None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> MemoryOptions:
        """From TrainSettings as a dict; a checkpoint from before these options gets the
        defaults (fp32, no checkpointing, no LoRA)."""
        return cls(
            precision=settings.get("precision") or "fp32",
            gradient_checkpointing=bool(settings.get("gradient_checkpointing")),
            lora=LoraOptions.from_settings(settings),
        )


def enable_gradient_checkpointing(model: RewardModel) -> None:
    """Hugging Face's per-layer checkpointing, non-reentrant: it needs no input that requires
    grad, so it works under a frozen (LoRA) embedding, and it recomputes under the same autocast.
    Active only in train mode; eval and export run the plain forward."""
    backbone: Any = model.backbone  # a Hugging Face PreTrainedModel
    if getattr(backbone.config, "use_cache", None):
        backbone.config.use_cache = False  # a KV cache is for generation; it would warn here
    backbone.activation_checkpointing_enable(
        activation_checkpointing_kwargs={"use_reentrant": False}
    )


def prepare_backbone(
    model: RewardModel, model_type: str, options: MemoryOptions, for_training: bool = True
) -> TrainingRecord:
    """Apply the options to ``model`` in place (before its weights are loaded from a checkpoint,
    if they are: LoRA changes the state's keys) and return what the manifest records."""
    if options.gradient_checkpointing and for_training:
        enable_gradient_checkpointing(model)
    lora: LoraRecord | None = None
    if options.lora is not None:
        lora = add_lora(model, model_type, options.lora)
    return TrainingRecord(
        precision=effective_precision(options.precision, device_of(model)),
        gradient_checkpointing=options.gradient_checkpointing,
        lora=lora,
        trainable_parameters=trainable_parameters(model),
    )


def summary_of(record: TrainingRecord) -> dict[str, Any]:
    """The record's fields as the run's JSON summary reports them."""
    return {
        "precision": record.precision,
        "gradient_checkpointing": record.gradient_checkpointing,
        "lora_rank": record.lora.rank if record.lora else 0,
        "trainable_parameters": record.trainable_parameters,
    }
