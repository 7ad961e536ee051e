"""The training loop, top to bottom: data, model, optimiser, one loop with accumulation,
clipping, periodic eval and checkpoints, then normalisation stats and export."""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from rmserve.artifact import Normalization, Preprocessing
from rmserve.preference_data import PreferencePair, load_preferences
from rmserve.preprocess import PreparedPair, Preprocessor

from .backbones import architecture_of, backbone_from_config, build_backbone, resolve_backbone
from .export import ExportRequest, export_artifact
from .export_check import torch_feed
from .loss import bradley_terry_loss, preference_metrics
from .model import Pooling, RewardModel, Scorer
from .onnx_layout import Dtype
from .progress import StepProgress
from .settings import TrainSettings

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.jsonl"


class TrainError(Exception):
    """Training cannot produce a valid reward model; the message says why."""


@dataclass(frozen=True)
class TrainResult:
    eval_metrics: dict[str, float]
    artifact: Path | None
    checkpoint: Path
    train_seconds: float
    steps: int
    finished: bool

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
        }


@dataclass(frozen=True)
class Encoded:
    """A preference set tokenised once with the shared preprocessor."""

    chosen: list[PreparedPair]
    rejected: list[PreparedPair]
    margins: torch.Tensor
    truncated: int
    response_truncated: int

    def __len__(self) -> int:
        return len(self.chosen)

    @property
    def lengths(self) -> list[int]:
        return [
            max(w.num_tokens, r.num_tokens) for w, r in zip(self.chosen, self.rejected, strict=True)
        ]


def encode(preprocessor: Preprocessor, pairs: Sequence[PreferencePair]) -> Encoded:
    prompts = [p.prompt for p in pairs]
    chosen = preprocessor.prepare_many(prompts, [p.chosen for p in pairs])
    rejected = preprocessor.prepare_many(prompts, [p.rejected for p in pairs])
    both = list(zip(chosen, rejected, strict=True))
    return Encoded(
        chosen=chosen,
        rejected=rejected,
        margins=torch.tensor([float(p.margin or 0.0) for p in pairs], dtype=torch.float32),
        truncated=sum(w.truncated or r.truncated for w, r in both),
        response_truncated=sum(w.response_truncated or r.response_truncated for w, r in both),
    )


def score_stacked(
    model: Scorer, data: Encoded, index: Sequence[int], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass for both sides: chosen stacked on top of rejected, split after."""
    sequences = [data.chosen[i] for i in index] + [data.rejected[i] for i in index]
    rewards = model(**torch_feed(sequences, pad_token_id, model.input_names))
    return rewards[: len(index)], rewards[len(index) :]


def evaluate(
    model: Scorer, data: Encoded, batch_size: int, pad_token_id: int, center_coef: float
) -> tuple[dict[str, float], torch.Tensor]:
    """Torch eval under no_grad; returns metrics and every eval response's reward."""
    model.eval()
    order = sorted(range(len(data)), key=lambda i: data.chosen[i].num_tokens)
    chosen = torch.empty(len(data))
    rejected = torch.empty(len(data))
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            chosen[index], rejected[index] = score_stacked(model, data, index, pad_token_id)
    loss = bradley_terry_loss(chosen, rejected, data.margins, center_coef)
    metrics = {"loss": loss.item(), **preference_metrics(chosen, rejected)}
    return metrics, torch.cat([chosen, rejected])


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up, then cosine decay down to ``min_ratio`` of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


LENGTH_GROUP_BATCHES = 16


def batches_for_epoch(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int
) -> list[list[int]]:
    """Shuffled batches of similar lengths (less padding, faster steps): shuffle, sort windows
    of 16 batches by length, cut, shuffle the batches. Depends only on (seed, epoch), so a
    resumed run sees the same batches."""
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    window = batch_size * LENGTH_GROUP_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


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


def model_from_checkpoint(checkpoint: dict[str, Any]) -> RewardModel:
    model = build_model(checkpoint["backbone_config"], checkpoint["pooling"], 0)
    model.load_state_dict(checkpoint["model"])
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
    )


def validation_texts(pairs: Sequence[PreferencePair], count: int = 24) -> list[tuple[str, str]]:
    step = max(1, len(pairs) // count)
    picked = pairs[::step][:count]
    return [(p.prompt, p.chosen) for p in picked[::2]] + [
        (p.prompt, p.rejected) for p in picked[1::2]
    ]


class MetricsLog:
    def __init__(self, path: Path, append: bool) -> None:
        self.path = path
        if not append:
            path.write_text("", encoding="utf-8")

    def write(self, event: str, **values: Any) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"event": event, "time": time.time(), **values}) + "\n")


def train(settings: TrainSettings) -> TrainResult:
    # --- set-up ------------------------------------------------------------------------------
    started = time.perf_counter()
    work = settings.resolved_work_dir()
    work.mkdir(parents=True, exist_ok=True)
    checkpoint_path = work / CHECKPOINT_FILE
    if settings.threads:
        torch.set_num_threads(settings.threads)
    resume_from = (
        load_checkpoint(checkpoint_path) if settings.resume and checkpoint_path.is_file() else None
    )
    metrics_log = MetricsLog(work / METRICS_FILE, append=resume_from is not None)

    # --- data --------------------------------------------------------------------------------
    train_set = load_preferences(settings.train_data, skip_bad=settings.skip_bad_lines)
    eval_set = load_preferences(settings.eval_data, skip_bad=settings.skip_bad_lines)
    if not train_set.pairs or not eval_set.pairs:
        raise TrainError("training and eval data must each hold at least one pair")
    source = resolve_backbone(settings.base_model)
    positions = getattr(source.config, "max_position_embeddings", None)
    if isinstance(positions, int) and settings.max_length > positions:
        raise TrainError(
            f"--max-length {settings.max_length} exceeds the backbone's {positions} positions"
        )
    tokenizer = Tokenizer.from_str(source.tokenizer_json)
    pad_token_id = source.config.pad_token_id
    if pad_token_id is None:
        pad_token_id = tokenizer.token_to_id("[PAD]") or 0
    preprocessing = Preprocessing(
        join="pair", max_length=settings.max_length, pad_token_id=int(pad_token_id)
    )
    preprocessor = Preprocessor(tokenizer, preprocessing)
    train_pairs = train_set.pairs
    if settings.bootstrap:
        draw = random.Random(settings.seed)
        train_pairs = [draw.choice(train_pairs) for _ in range(len(train_pairs))]
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
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": settings.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=settings.lr,
        fused=True,  # one kernel over all parameters: ~4x faster steps on CPU than foreach
    )
    batches_per_epoch = math.ceil(len(train_data) / settings.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / settings.grad_accum)
    total_steps = steps_per_epoch * settings.epochs
    warmup = int(settings.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup, settings.min_lr_ratio)
    )
    step = 0
    eval_metrics: dict[str, float] = {}
    torch.manual_seed(settings.seed)
    if resume_from is not None:
        model.load_state_dict(resume_from["model"])
        optimizer.load_state_dict(resume_from["optimizer"])
        scheduler.load_state_dict(resume_from["scheduler"])
        step = int(resume_from["step"])
        eval_metrics = dict(resume_from.get("eval_metrics", {}))
        set_rng_state(resume_from["rng"])
        log.info("resumed from %s at step %d of %d", checkpoint_path, step, total_steps)

    def save_checkpoint(normalization: dict[str, float] | None = None) -> None:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "rng": rng_state(),
            "settings": settings.model_dump(mode="json"),
            "backbone": settings.base_model,
            "backbone_config": config_dict,
            "pooling": model.pooling,
            "tokenizer_json": source.tokenizer_json,
            "preprocessing": preprocessing.model_dump(mode="json"),
            "eval_metrics": eval_metrics,
            "normalization": normalization,
        }
        scratch = checkpoint_path.with_suffix(".tmp")
        torch.save(state, scratch)
        scratch.replace(checkpoint_path)

    last_eval: tuple[int, torch.Tensor] | None = None  # (step, every eval response's reward)

    def run_eval() -> None:
        nonlocal eval_metrics, last_eval
        eval_metrics, rewards = evaluate(
            model, eval_data, settings.eval_batch_size, pad_token_id, settings.center_coef
        )
        last_eval = (step, rewards)
        metrics_log.write("eval", step=step, **eval_metrics)
        log.info("eval step %d: %s", step, {k: round(v, 4) for k, v in eval_metrics.items()})

    # --- the loop ----------------------------------------------------------------------------
    progress = StepProgress(total_steps, step)
    stopped = False
    for epoch in range(settings.epochs):
        if (epoch + 1) * steps_per_epoch <= step:
            continue  # a whole epoch done before the checkpoint we resumed from
        batches = batches_for_epoch(train_data.lengths, settings.batch_size, settings.seed, epoch)
        for local in range(steps_per_epoch):
            if epoch * steps_per_epoch + local < step:
                continue  # done before the checkpoint we resumed from
            model.train()
            group = batches[local * settings.grad_accum : (local + 1) * settings.grad_accum]
            pairs_in_step = sum(len(b) for b in group)
            step_loss = 0.0
            chosen_all, rejected_all = [], []
            for index in group:
                chosen, rejected = score_stacked(model, train_data, index, pad_token_id)
                loss = bradley_terry_loss(
                    chosen, rejected, train_data.margins[index], settings.center_coef
                )
                (loss * len(index) / pairs_in_step).backward()  # type: ignore[no-untyped-call]
                step_loss += loss.item() * len(index) / pairs_in_step
                chosen_all.append(chosen.detach())
                rejected_all.append(rejected.detach())
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            batch_metrics = preference_metrics(torch.cat(chosen_all), torch.cat(rejected_all))
            lr = scheduler.get_last_lr()[0]
            metrics_log.write(
                "train",
                step=step,
                epoch=epoch,
                loss=step_loss,
                accuracy=batch_metrics["accuracy"],
                lr=lr,
                grad_norm=float(grad_norm),
            )
            progress.step(step, epoch, step_loss, batch_metrics["accuracy"], float(lr))
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
    progress.close()
    if stopped:
        save_checkpoint()
        log.info("stopped after step %d as asked; resume with --resume", step)
        seconds = time.perf_counter() - started
        return TrainResult(eval_metrics, None, checkpoint_path, seconds, step, finished=False)

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
    checkpoint = load_checkpoint(checkpoint_path)
    request = export_request(
        model,
        checkpoint,
        validation_texts(eval_set.pairs),
        settings.version,
        settings.dtype,
        settings.external_data,
    )
    manifest = export_artifact(request, settings.out)
    log.info("artifact %s version %s (%s)", settings.out, manifest.version, manifest.optimization)
    return TrainResult(
        eval_metrics, settings.out.resolve(), checkpoint_path, train_seconds, step, finished=True
    )
