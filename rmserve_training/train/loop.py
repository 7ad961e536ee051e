"""The training loop, top to bottom: data, model, optimiser, one loop with accumulation,
clipping, periodic eval and checkpoints, then normalisation stats and export."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rmserve_training.export.build import export_artifact
from rmserve_training.model.lora import merge_lora
from rmserve_training.model.memory import MemoryOptions, prepare_backbone, summary_of
from rmserve_training.model.precision import autocast, device_of
from rmserve_training.model.reward_model import Scorer
from rmserve_training.settings import TrainSettings
from rmserve_training.train.bootstrap import bootstrap_resample
from rmserve_training.train.checkpoints import (
    TrainError,
    build_model,
    export_request,
    load_checkpoint,
    model_from_checkpoint,
    rng_state,
    set_rng_state,
    validation_texts,
)
from rmserve_training.train.distributed import Cluster, join_cluster, wrap
from rmserve_training.train.encoded import (
    Encoded,
    batches_for_epoch,
    encode,
    score_all,
    score_stacked,
)
from rmserve_training.train.inputs import load_train_inputs
from rmserve_training.train.loss import bradley_terry_loss, preference_metrics
from rmserve_training.train.optim import build_optimizer
from rmserve_training.train.progress import StepProgress
from rmserve_training.train.sharding import (
    full_model_state,
    full_optimizer_state,
    load_optimizer_state,
    resume_layout_error,
)
from rmserve_training.train.steps import evaluate_sharded, train_step

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class TrainResult:
    eval_metrics: dict[str, float]
    artifact: Path | None
    checkpoint: Path
    train_seconds: float
    steps: int
    finished: bool
    world_size: int = 1
    strategy: str | None = None  # ddp / fsdp under torchrun, None for a single process
    setup: dict[str, Any] = field(default_factory=dict)  # precision, LoRA, ... (the manifest's)

    def summary(self) -> dict[str, Any]:
        return {
            "eval_accuracy": self.eval_metrics.get("accuracy"),
            "eval_loss": self.eval_metrics.get("loss"),
            "eval_margin": self.eval_metrics.get("margin"),
            "artifact": str(self.artifact) if self.artifact else None,
            "checkpoint": str(self.checkpoint),
            "train_seconds": round(self.train_seconds, 3),
            "steps": self.steps,
            "finished": self.finished,
            "world_size": self.world_size,
            "strategy": self.strategy,
            **self.setup,
        }


def evaluate(
    model: Scorer, data: Encoded, batch_size: int, pad_token_id: int, center_coef: float
) -> tuple[dict[str, float], torch.Tensor]:
    """Torch eval under no_grad; returns metrics and every eval response's reward."""
    chosen, rejected = score_all(model, data, batch_size, pad_token_id)
    loss = bradley_terry_loss(chosen, rejected, data.margins, center_coef)
    metrics = {"loss": loss.item(), **preference_metrics(chosen, rejected)}
    return metrics, torch.cat([chosen, rejected])


class MetricsLog:
    def __init__(self, path: Path, append: bool, enabled: bool = True) -> None:
        """``enabled`` False (ranks > 0): writes nothing."""
        self.path = path
        self.enabled = enabled
        if enabled and not append:
            path.write_text("", encoding="utf-8")

    def write(self, event: str, **values: Any) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"event": event, "time": time.time(), **values}) + "\n")


def train(settings: TrainSettings, cluster: Cluster | None = None) -> TrainResult:
    """Under torchrun every rank calls this (``cluster``: see ``distributed.cluster_session``;
    None joins the one torchrun describes, or runs as a single process)."""
    # --- set-up ------------------------------------------------------------------------------
    started = time.perf_counter()
    cluster = join_cluster(settings.strategy) if cluster is None else cluster
    work = settings.resolved_work_dir()
    work.mkdir(parents=True, exist_ok=True)
    checkpoint_path = work / CHECKPOINT_FILE
    if settings.threads:
        torch.set_num_threads(settings.threads)
    resume_from = (
        load_checkpoint(checkpoint_path) if settings.resume and checkpoint_path.is_file() else None
    )
    if resume_from is not None:
        layout_error = resume_layout_error(
            resume_from, settings.batch_size, settings.grad_accum, cluster.world_size
        )
        if layout_error is not None:
            raise TrainError(f"cannot resume {checkpoint_path}: {layout_error}")
    metrics_log = MetricsLog(
        work / METRICS_FILE, append=resume_from is not None, enabled=cluster.is_main
    )

    # --- data --------------------------------------------------------------------------------
    inputs = load_train_inputs(settings)
    train_set, eval_set = inputs.train_set, inputs.eval_set
    source, texts, preprocessor = inputs.source, inputs.texts, inputs.preprocessor
    pad_token_id = texts.preprocessing.pad_token_id
    train_pairs = train_set.pairs
    if settings.bootstrap:
        train_pairs = bootstrap_resample(train_pairs, settings.seed)
    train_data = encode(preprocessor, train_pairs)
    eval_data = encode(preprocessor, eval_set.pairs)
    data_info = {
        "train_pairs": len(train_data),
        "eval_pairs": len(eval_data),
        "train_skipped_lines": train_set.skipped,
        "eval_skipped_lines": eval_set.skipped,
        "train_truncated_pairs": train_data.truncated,
        "train_response_truncated_pairs": train_data.response_truncated,
        "eval_truncated_pairs": eval_data.truncated,
        "eval_response_truncated_pairs": eval_data.response_truncated,
    }
    log.info("data: %s", data_info)
    metrics_log.write("data", **data_info)

    # --- model and optimiser -----------------------------------------------------------------
    config_dict: dict[str, Any] = json.loads(source.config.to_json_string())
    model = build_model(config_dict, settings.pooling, settings.seed, settings.base_model)
    memory_options = MemoryOptions.from_settings(settings.model_dump())
    record = prepare_backbone(model, config_dict["model_type"], memory_options)
    precision, device = record.precision, device_of(model)
    log.info("training setup: %s", record.model_dump(mode="json"))
    if resume_from is not None:
        model.load_state_dict(resume_from["model"])
    engine = wrap(model, cluster)  # what the step runs: the model, a DDP replica or FSDP shards
    batches_per_epoch = math.ceil(len(train_data) / settings.batch_size)
    batches_per_step = settings.grad_accum * cluster.world_size  # global batch, in micro-batches
    steps_per_epoch = math.ceil(batches_per_epoch / batches_per_step)
    total_steps = steps_per_epoch * settings.epochs
    optimizer, scheduler = build_optimizer(model, settings, total_steps)
    step = 0
    eval_metrics: dict[str, float] = {}
    torch.manual_seed(settings.seed)
    if resume_from is not None:
        load_optimizer_state(model, optimizer, resume_from["optimizer"], cluster)
        scheduler.load_state_dict(resume_from["scheduler"])
        step = int(resume_from["step"])
        eval_metrics = dict(resume_from.get("eval_metrics", {}))
        set_rng_state(resume_from["rng"])
        log.info("resumed from %s at step %d of %d", checkpoint_path, step, total_steps)
    cluster.seed_rank_rng(settings.seed, step)

    def save_checkpoint(normalization: dict[str, float] | None = None) -> None:
        model_state = full_model_state(model, cluster)  # a collective under FSDP
        optimizer_state = full_optimizer_state(model, optimizer, cluster)
        if not cluster.is_main:
            return
        state = {
            "model": model_state,
            "optimizer": optimizer_state,
            "world_size": cluster.world_size,
            "scheduler": scheduler.state_dict(),
            "step": step,
            "rng": rng_state(),
            "settings": settings.model_dump(mode="json"),
            "backbone": settings.base_model,
            "backbone_config": config_dict,
            "pooling": model.pooling,
            "tokenizer_json": texts.tokenizer_json,
            "preprocessing": texts.preprocessing.model_dump(mode="json"),
            "eval_metrics": eval_metrics,
            "normalization": normalization,
            "training": record.model_dump(mode="json"),
        }
        scratch = checkpoint_path.with_suffix(".tmp")
        torch.save(state, scratch)
        scratch.replace(checkpoint_path)

    last_eval: tuple[int, torch.Tensor] | None = None  # (step, every eval response's reward)

    def run_eval() -> None:
        nonlocal eval_metrics, last_eval
        model.eval()
        eval_metrics, rewards = evaluate_sharded(
            lambda index: score_stacked(engine, eval_data, index, pad_token_id),
            [c.num_tokens for c in eval_data.chosen],
            eval_data.margins,
            settings.eval_batch_size,
            settings.center_coef,
            cluster,
        )
        last_eval = (step, rewards)
        metrics_log.write("eval", step=step, **eval_metrics)
        log.info("eval step %d: %s", step, {k: round(v, 4) for k, v in eval_metrics.items()})

    # --- the loop ----------------------------------------------------------------------------
    progress = StepProgress(total_steps, step) if cluster.is_main else None
    stopped = False
    for epoch in range(settings.epochs):
        if (epoch + 1) * steps_per_epoch <= step:
            continue  # a whole epoch done before the checkpoint we resumed from
        batches = batches_for_epoch(train_data.lengths, settings.batch_size, settings.seed, epoch)
        for local in range(steps_per_epoch):
            if epoch * steps_per_epoch + local < step:
                continue  # done before the checkpoint we resumed from
            model.train()
            group = batches[local * batches_per_step : (local + 1) * batches_per_step]

            def score(index: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
                with autocast(precision, device):  # the loss is computed from fp32 rewards
                    return score_stacked(engine, train_data, index, pad_token_id)

            outcome = train_step(
                engine,
                optimizer,
                scheduler,
                group,
                score,
                train_data.margins,
                settings.center_coef,
                settings.label_smoothing,
                settings.max_grad_norm,
                cluster,
            )
            step += 1
            lr = scheduler.get_last_lr()[0]
            metrics_log.write(
                "train",
                step=step,
                epoch=epoch,
                loss=outcome.loss,
                accuracy=outcome.accuracy,
                lr=lr,
                grad_norm=outcome.grad_norm,
            )
            if progress is not None:
                progress.step(step, epoch, outcome.loss, outcome.accuracy, float(lr))
            if settings.eval_every and step % settings.eval_every == 0:
                run_eval()
            if settings.checkpoint_every and step % settings.checkpoint_every == 0:
                save_checkpoint()
            if (
                settings.stop_after_steps
                and step >= settings.stop_after_steps
                and step < total_steps
            ):
                stopped = True
                break
        if stopped:
            break
        if not settings.eval_every:
            run_eval()
        if not settings.checkpoint_every:
            save_checkpoint()
    if progress is not None:
        progress.close()
    layout = (cluster.world_size, settings.strategy if cluster.distributed else None)
    if stopped:
        save_checkpoint()
        log.info("stopped after step %d as asked; resume with --resume", step)
        seconds = time.perf_counter() - started
        return TrainResult(
            eval_metrics, None, checkpoint_path, seconds, step, False, *layout, summary_of(record)
        )

    # --- normalisation stats on held-out data, final checkpoint, export ----------------------
    if last_eval is None or last_eval[0] != step:
        run_eval()
    assert last_eval is not None
    rewards = last_eval[1]
    std = float(rewards.std(unbiased=False))
    if not std > 0.0:
        raise TrainError("every eval response got the same reward (std 0): the model is degenerate")
    normalization = {"mean": float(rewards.mean()), "std": std}
    metrics_log.write("final", step=step, **eval_metrics, normalization=normalization)
    save_checkpoint(normalization)
    train_seconds = time.perf_counter() - started
    if not cluster.is_main:  # rank 0 alone exports
        return TrainResult(
            eval_metrics, None, checkpoint_path, train_seconds, step, True, *layout,
            summary_of(record),
        )  # fmt: skip
    checkpoint = load_checkpoint(checkpoint_path)
    # the full model on CPU (gathered from the checkpoint under torchrun), LoRA merged
    exported = model_from_checkpoint(checkpoint) if cluster.distributed else model
    merge_lora(exported)  # the artifact holds plain weights (a no-op once merged)
    request = export_request(
        exported,
        checkpoint,
        validation_texts(eval_set.pairs),
        settings.version,
        settings.dtype,
        settings.external_data,
    )
    manifest = export_artifact(request, settings.out)
    log.info("artifact %s version %s (%s)", settings.out, manifest.version, manifest.optimization)
    return TrainResult(
        eval_metrics, settings.out.resolve(), checkpoint_path, train_seconds, step, True,
        *layout, summary_of(record),
    )  # fmt: skip
