"""Training settings: one pydantic-settings class, env prefix ``RMSERVE_TRAIN_``; the
``rmserve train`` flags are built from the same fields. Torch-free so the CLI can import it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RMSERVE_TRAIN_", extra="forbid")

    train_data: Path = Field(description="Preference JSONL (.jsonl or .jsonl.gz) to train on.")
    eval_data: Path = Field(
        description="Held-out preference JSONL: periodic eval, final metrics, reward normalisation."
    )
    out: Path = Field(
        description="Artifact folder to write (model.onnx, tokenizer.json, manifest)."
    )
    work_dir: Path | None = Field(
        default=None,
        description="Checkpoints and metrics.jsonl go here (default: sibling folder OUT.work).",
    )
    base_model: str = Field(
        default="minilm",
        min_length=1,
        description="'minilm' (bundled all-MiniLM-L6-v2), 'tiny' (random small BERT) or a local "
        "Hugging Face model folder.",
    )
    pooling: Literal["cls", "mean"] = Field(
        default="mean", description="How an encoder's token states become one vector."
    )
    epochs: int = Field(default=1, ge=1, le=1000, description="Passes over the training data.")
    batch_size: int = Field(
        default=16, ge=1, le=4096, description="Pairs per micro-batch (each pair = 2 sequences)."
    )
    grad_accum: int = Field(
        default=1, ge=1, le=1024, description="Micro-batches accumulated per optimiser step."
    )
    lr: float = Field(
        default=1e-4, gt=0.0, le=1.0, description="Peak AdamW learning rate of the backbone."
    )
    head_lr: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="Peak learning rate of the new scalar head (default: the same as --lr).",
    )
    weight_decay: float = Field(default=0.01, ge=0.0, le=1.0, description="AdamW weight decay.")
    warmup_ratio: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="Fraction of steps spent warming the lr up."
    )
    min_lr_ratio: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="Final lr as a fraction of the peak (cosine decay).",
    )
    max_grad_norm: float = Field(
        default=1.0, gt=0.0, le=1e6, description="Gradient clipping threshold (global L2 norm)."
    )
    center_coef: float = Field(
        default=0.0,
        ge=0.0,
        le=10.0,
        description="Weight of the centring term coef*mean((r_w + r_l)^2); 0 switches it off.",
    )
    label_smoothing: float = Field(
        default=0.0,
        ge=0.0,
        lt=0.5,
        description="Conservative Bradley-Terry: trust each label with probability 1-eps, "
        "loss -(1-eps)*logsigmoid(d) - eps*logsigmoid(-d), d = r_w - r_l - margin, so margins "
        "stop growing at d = log((1-eps)/eps); 0 switches it off. Training loss only: the "
        "eval loss stays plain Bradley-Terry, comparable across runs.",
    )
    max_length: int = Field(
        default=512,
        ge=8,
        le=8192,
        description="Most tokens per (prompt, response) sequence; over it the prompt is cut "
        "from the left, so a dialogue keeps its last turns.",
    )
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="Seeds init, shuffling, dropout.")
    eval_every: int = Field(
        default=0, ge=0, le=10**7, description="Evaluate every N optimiser steps (0: each epoch)."
    )
    eval_batch_size: int = Field(
        default=64, ge=1, le=4096, description="Pairs per batch during evaluation."
    )
    checkpoint_every: int = Field(
        default=0,
        ge=0,
        le=10**7,
        description="Save a checkpoint every N optimiser steps (0: each epoch and at the end).",
    )
    stop_after_steps: int = Field(
        default=0,
        ge=0,
        le=10**9,
        description="Stop (checkpointing) after this many optimiser steps, as if interrupted; "
        "0 runs to the end. Resume with --resume.",
    )
    strategy: Literal["ddp", "fsdp"] = Field(
        default="ddp",
        description="Under torchrun: 'ddp' keeps a full replica on every rank, 'fsdp' shards "
        "parameters, gradients and optimiser state across ranks (FSDP2 fully_shard). "
        "--batch-size is per rank: the global batch is batch_size x grad_accum x world size.",
    )
    resume: bool = Field(
        default=False, description="Continue from WORK_DIR/checkpoint.pt if it exists."
    )
    skip_bad_lines: bool = Field(
        default=False, description="Skip (and count) malformed data lines instead of failing."
    )
    threads: int = Field(
        default=0, ge=0, le=1024, description="Torch CPU threads (0: torch's default)."
    )
    name: str = Field(
        default="reward-model", min_length=1, description="Model name in the manifest."
    )
    version: str | None = Field(
        default=None, description="Model version (default: sha256 prefix of the model files)."
    )
    dtype: Literal["fp32", "fp16"] = Field(
        default="fp32",
        description="Artifact weights: fp16 halves them and keeps fp32 inputs and rewards.",
    )
    external_data: bool = Field(
        default=False,
        description="Weights in model.onnx.data beside model.onnx even when they would fit "
        "inside it (always so above 1 GiB).",
    )

    # --- big backbones on small memory (rmserve_training/model/memory.py) ------------------------
    precision: Literal["fp32", "bf16"] = Field(
        default="fp32",
        description="Training compute: bf16 autocasts the forward passes over fp32 weights where "
        "the device supports it (loss, eval and export stay fp32).",
    )
    gradient_checkpointing: bool = Field(
        default=False,
        description="Recompute each layer's activations in the backward pass: far less memory, "
        "~30% more compute.",
    )
    lora_rank: int = Field(
        default=0,
        ge=0,
        le=4096,
        description="Train LoRA adapters of this rank on the backbone (plus the full head), "
        "merged into the weights at export; 0 fine-tunes every weight.",
    )
    lora_alpha: int | None = Field(
        default=None, ge=1, le=10**6, description="LoRA scaling alpha (default: 2 x lora_rank)."
    )
    lora_dropout: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA adapters' input."
    )
    ensemble: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Train this many members (seeds seed, seed+1, ...; each in WORK_DIR/member-k) "
        "and write one ensemble artifact scoring all of them at once (output [B, K]).",
    )
    bootstrap: bool = Field(
        default=False,
        description="Train on a bootstrap resample of the training pairs (drawn with "
        "replacement, seeded by --seed): ensemble members then see different data.",
    )
    ensemble_kind: Literal["members", "shared"] = Field(
        default="members",
        description="With --ensemble K: 'members' trains K full models one after another; "
        "'shared' trains K linear heads on one backbone jointly (one process; with "
        "--bootstrap each head weights the pairs by its own resample's counts).",
    )

    @model_validator(mode="after")
    def _paths_differ(self) -> TrainSettings:
        if self.work_dir is not None and self.work_dir.resolve() == self.out.resolve():
            raise ValueError("work_dir must differ from out: the artifact holds only served files")
        return self

    @model_validator(mode="after")
    def _shared_kind_needs_an_ensemble(self) -> TrainSettings:
        if self.ensemble_kind == "shared" and self.ensemble < 2:
            raise ValueError("ensemble_kind 'shared' needs ensemble >= 2 (the number of heads)")
        return self

    @model_validator(mode="after")
    def _lora_options_need_a_rank(self) -> TrainSettings:
        if self.lora_rank == 0 and (self.lora_alpha is not None or self.lora_dropout > 0.0):
            raise ValueError("lora_alpha and lora_dropout need lora_rank > 0")
        return self

    def resolved_head_lr(self) -> float:
        return self.lr if self.head_lr is None else self.head_lr

    def resolved_work_dir(self) -> Path:
        if self.work_dir is not None:
            return self.work_dir
        return self.out.with_name(self.out.name + ".work")
