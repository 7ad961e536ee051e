"""``rmserve train --ensemble K --ensemble-kind shared``: one backbone and K linear heads trained
jointly, exported as one graph with output [B, K] and a manifest listing each head's held-out
normalisation stats, so it serves exactly like an ensemble of full members.

The loop reads top to bottom like ``train.py``'s, for one process: every step scores each
pair once (chosen stacked on rejected) and the loss is the mean over heads of each head's
Bradley–Terry loss weighted by its bootstrap counts (``loss.weighted_bradley_terry_loss``).
It checkpoints nothing: ``--resume`` and ``--stop-after-steps`` are for full members.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rmserve.artifact.manifest import Normalization
from rmserve.engine.session import load_artifact
from rmserve.tools.evaluate import evaluate_file
from rmserve_training.ensemble.shared_heads import build_shared_model, head_members, head_weights
from rmserve_training.export.build import ExportRequest, export_artifact
from rmserve_training.model.lora import merge_lora
from rmserve_training.model.memory import MemoryOptions, prepare_backbone, summary_of
from rmserve_training.model.precision import autocast, device_of
from rmserve_training.settings import TrainSettings
from rmserve_training.train.checkpoints import TrainError, validation_texts
from rmserve_training.train.distributed import Cluster
from rmserve_training.train.encoded import batches_for_epoch, encode, score_all, score_stacked
from rmserve_training.train.inputs import load_train_inputs
from rmserve_training.train.loop import METRICS_FILE, MetricsLog
from rmserve_training.train.loss import (
    bradley_terry_loss,
    preference_metrics,
    weighted_bradley_terry_loss,
)
from rmserve_training.train.optim import build_optimizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SharedEnsembleResult:
    head_metrics: list[dict[str, float]]  # each head's held-out metrics, in output order
    artifact: Path
    version: str
    eval_metrics: dict[str, float]  # the artifact's: mean of the normalised heads
    train_seconds: float
    steps: int
    setup: dict[str, Any]
    finished: bool = True

    def summary(self) -> dict[str, Any]:
        return {
            "artifact": str(self.artifact),
            "version": self.version,
            "ensemble_kind": "shared",
            "eval_accuracy": self.eval_metrics.get("accuracy"),
            "heads": [{f"eval_{k}": v for k, v in m.items()} for m in self.head_metrics],
            "train_seconds": round(self.train_seconds, 3),
            "steps": self.steps,
            "finished": self.finished,
            **self.setup,
        }


def refuse_unsupported(settings: TrainSettings, cluster: Cluster | None) -> None:
    if cluster is not None and cluster.distributed:
        raise TrainError("--ensemble-kind shared trains in one process; run it without torchrun")
    if settings.resume or settings.stop_after_steps:
        raise TrainError(
            "--ensemble-kind shared does not checkpoint: --resume and --stop-after-steps are "
            "for --ensemble-kind members"
        )


def head_metrics(
    chosen: torch.Tensor, rejected: torch.Tensor, margins: torch.Tensor, center_coef: float
) -> list[dict[str, float]]:
    """Each head's held-out loss (plain Bradley–Terry, no label smoothing), accuracy, margin and
    reward mean/std, like a full member's."""
    return [
        {
            "loss": bradley_terry_loss(chosen[:, k], rejected[:, k], margins, center_coef).item(),
            **preference_metrics(chosen[:, k], rejected[:, k]),
        }
        for k in range(chosen.shape[1])
    ]


def head_normalizations(chosen: torch.Tensor, rejected: torch.Tensor) -> list[Normalization]:
    """Each head's mean and std over every held-out response (chosen and rejected)."""
    stats = []
    for k in range(chosen.shape[1]):
        rewards = torch.cat([chosen[:, k], rejected[:, k]])
        std = float(rewards.std(unbiased=False))
        if not std > 0.0:
            raise TrainError(f"head {k} gave every eval response the same reward (std 0)")
        stats.append(Normalization(mean=float(rewards.mean()), std=std))
    return stats


def train_shared(settings: TrainSettings, cluster: Cluster | None = None) -> SharedEnsembleResult:
    # --- set-up ------------------------------------------------------------------------------
    refuse_unsupported(settings, cluster)
    started = time.perf_counter()
    heads = settings.ensemble
    work = settings.resolved_work_dir()
    work.mkdir(parents=True, exist_ok=True)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    metrics_log = MetricsLog(work / METRICS_FILE, append=False)

    # --- data --------------------------------------------------------------------------------
    inputs = load_train_inputs(settings)
    train_set, eval_set = inputs.train_set, inputs.eval_set
    source, texts, preprocessor = inputs.source, inputs.texts, inputs.preprocessor
    preprocessing = texts.preprocessing
    pad_token_id = preprocessing.pad_token_id
    train_data = encode(preprocessor, train_set.pairs)  # every pair once; weights resample
    eval_data = encode(preprocessor, eval_set.pairs)
    weights = head_weights(len(train_data), settings.seed, heads, settings.bootstrap)
    metrics_log.write("data", train_pairs=len(train_data), eval_pairs=len(eval_data), heads=heads)

    # --- model and optimiser -----------------------------------------------------------------
    config_dict: dict[str, Any] = json.loads(source.config.to_json_string())
    model = build_shared_model(
        config_dict, settings.pooling, settings.seed, settings.base_model, heads
    )
    record = prepare_backbone(
        model, config_dict["model_type"], MemoryOptions.from_settings(settings.model_dump())
    )
    precision, device = record.precision, device_of(model)
    steps_per_epoch = math.ceil(
        math.ceil(len(train_data) / settings.batch_size) / settings.grad_accum
    )
    total_steps = steps_per_epoch * settings.epochs
    optimizer, scheduler = build_optimizer(model, settings, total_steps)
    torch.manual_seed(settings.seed)

    # --- the loop ----------------------------------------------------------------------------
    step = 0
    for epoch in range(settings.epochs):
        batches = batches_for_epoch(train_data.lengths, settings.batch_size, settings.seed, epoch)
        for local in range(steps_per_epoch):
            model.train()
            group = batches[local * settings.grad_accum : (local + 1) * settings.grad_accum]
            pairs_in_step = sum(len(b) for b in group)
            total = 0.0
            for index in group:
                with autocast(precision, device):  # the loss is computed from fp32 rewards
                    chosen, rejected = score_stacked(model, train_data, index, pad_token_id)
                loss = weighted_bradley_terry_loss(
                    chosen,
                    rejected,
                    weights[index].to(chosen.device),
                    train_data.margins[index].to(chosen.device),
                    settings.center_coef,
                    label_smoothing=settings.label_smoothing,
                )
                (loss * len(index) / pairs_in_step).backward()  # type: ignore[no-untyped-call]
                total += loss.item() * len(index) / pairs_in_step
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            metrics_log.write(
                "train", step=step, epoch=epoch, loss=total, grad_norm=float(grad_norm)
            )

    # --- per-head held-out metrics and normalisation stats, export ---------------------------
    chosen, rejected = score_all(model, eval_data, settings.eval_batch_size, pad_token_id)
    metrics = head_metrics(chosen, rejected, eval_data.margins, settings.center_coef)
    normalizations = head_normalizations(chosen, rejected)
    metrics_log.write("final", step=step, heads=metrics)
    train_seconds = time.perf_counter() - started
    log.info("shared ensemble: %d heads, %d steps, %.1f s", heads, step, train_seconds)
    merge_lora(model)
    model.cpu()
    request = ExportRequest(
        scorer=model,
        tokenizer_json=texts.tokenizer_json,
        preprocessing=preprocessing,
        name=settings.name,
        backbone=settings.base_model,
        model_type=config_dict["model_type"],
        normalization=Normalization(mean=0.0, std=1.0),  # an ensemble's: members carry theirs
        validation_texts=validation_texts(eval_set.pairs),
        version=settings.version,
        num_heads=int(config_dict.get("num_attention_heads", 0)),
        hidden_size=int(config_dict.get("hidden_size", 0)),
        dtype=settings.dtype,
        external_data=settings.external_data,
        training=record,
        ensemble=head_members(
            model,
            settings.name,
            settings.base_model,
            normalizations,
            [{f"eval_{k}": v for k, v in m.items()} for m in metrics],
        ),
        ensemble_kind="shared",
    )
    manifest = export_artifact(request, settings.out)
    report = evaluate_file(load_artifact(settings.out), settings.eval_data)
    return SharedEnsembleResult(
        head_metrics=metrics,
        artifact=settings.out.resolve(),
        version=manifest.version,
        eval_metrics={k: float(v) for k, v in report.items() if isinstance(v, float)},
        train_seconds=train_seconds,
        steps=step,
        setup=summary_of(record),
    )
