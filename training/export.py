"""Torch scorer -> ONNX -> validated artifact folder.

The graph is traced (``dynamo=False``) from an eager-attention backbone; for BERT-family
encoders onnxruntime's transformer optimizer then fuses attention, layer norm and GELU. The
graph is validated against torch (parity) and against itself (batch invariance) BEFORE anything
is written to the artifact folder.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from tokenizers import Tokenizer

from rmserve.artifact import (
    MANIFEST_FILE,
    MODEL_FILE,
    SERVED_FILES,
    TOKENIZER_FILE,
    Manifest,
    Normalization,
    Preprocessing,
    file_digests,
    write_manifest,
)
from rmserve.preprocess import PreparedPair, Preprocessor, pad_batch

from .model import Scorer

log = logging.getLogger(__name__)

PARITY_ATOL = 1e-4
INVARIANCE_ATOL = 1e-5
INVARIANCE_BATCH = 16
OPSET = 17
OUTPUT_NAME = "rewards"
# Model types whose graphs onnxruntime's 'bert' optimizer recognises and fuses.
BERT_FAMILY = frozenset({"bert"})
# Odd cases that every validation set includes: empty texts and a pair that must be truncated.
EDGE_CASE_TEXTS = (("", ""), ("", "ok"), ("context " * 600, "the response stays whole"))


class ExportError(Exception):
    """The exported graph does not score like the torch model; nothing was written."""


@dataclass(frozen=True)
class ExportRequest:
    scorer: Scorer
    tokenizer_json: str
    preprocessing: Preprocessing
    name: str
    backbone: str
    model_type: str
    normalization: Normalization
    validation_texts: Sequence[tuple[str, str]]
    version: str | None = None
    num_heads: int = 0
    hidden_size: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Validation:
    parity_max_abs_diff: float
    invariance_max_abs_diff: float

    @property
    def ok(self) -> bool:
        return (
            self.parity_max_abs_diff <= PARITY_ATOL
            and self.invariance_max_abs_diff <= INVARIANCE_ATOL
        )


def torch_feed(
    pairs: Sequence[PreparedPair], pad_token_id: int, names: Sequence[str]
) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in pad_batch(pairs, pad_token_id, names).items()}


def torch_scores(scorer: Scorer, pairs: Sequence[PreparedPair], pad_token_id: int) -> np.ndarray:
    scorer.eval()
    with torch.no_grad():
        rewards = scorer(**torch_feed(pairs, pad_token_id, scorer.input_names))
    scores: np.ndarray = rewards.numpy().astype(np.float32)
    return scores


def cpu_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_scores(
    session: ort.InferenceSession, pairs: Sequence[PreparedPair], pad_token_id: int
) -> np.ndarray:
    names = [i.name for i in session.get_inputs()]
    (rewards,) = session.run([OUTPUT_NAME], pad_batch(pairs, pad_token_id, names))
    return np.asarray(rewards, dtype=np.float32)


def validate(
    scorer: Scorer, onnx_path: Path, pairs: Sequence[PreparedPair], pad_token_id: int
) -> Validation:
    """Parity: ORT vs torch on padded batches of mixed lengths. Invariance: each pair scored
    alone vs inside a padded batch of 16."""
    session = cpu_session(onnx_path)
    parity = 0.0
    for start in range(0, len(pairs), INVARIANCE_BATCH):
        chunk = pairs[start : start + INVARIANCE_BATCH]
        expected = torch_scores(scorer, chunk, pad_token_id)
        parity = max(
            parity, float(np.abs(ort_scores(session, chunk, pad_token_id) - expected).max())
        )
    batch = list(pairs[:INVARIANCE_BATCH])
    together = ort_scores(session, batch, pad_token_id)
    alone = np.concatenate([ort_scores(session, [pair], pad_token_id) for pair in batch])
    return Validation(parity, float(np.abs(together - alone).max()))


def validation_pairs(
    preprocessor: Preprocessor, texts: Sequence[tuple[str, str]]
) -> list[PreparedPair]:
    """At least 16 pairs, interleaving short and long ones so every batch is padded."""
    chosen = list(texts) + list(EDGE_CASE_TEXTS)
    while len(chosen) < INVARIANCE_BATCH:
        chosen.append((f"prompt number {len(chosen)}", "reply " * (len(chosen) % 7)))
    prepared = preprocessor.prepare_many([p for p, _ in chosen], [r for _, r in chosen])
    by_length = sorted(prepared, key=lambda p: p.num_tokens)
    mixed: list[PreparedPair] = []
    while by_length:
        mixed.append(by_length.pop(0))
        if by_length:
            mixed.append(by_length.pop())
    return mixed


def trace_to_onnx(
    scorer: Scorer, sample: Sequence[PreparedPair], pad_token_id: int, path: Path
) -> None:
    names = scorer.input_names
    feed = torch_feed(sample, pad_token_id, names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes[OUTPUT_NAME] = {0: "batch"}
    scorer.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            scorer,
            tuple(feed[name] for name in names),
            str(path),
            input_names=names,
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def optimize_bert(raw: Path, out: Path, num_heads: int, hidden_size: int) -> str:
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(raw), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, use_gpu=False
    )
    optimized.save_model_to_file(str(out))
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    log.info("onnxruntime bert optimizer fused: %s", fused)
    return "ort-bert:" + ",".join(sorted(fused)) if fused else "ort-bert"


def _check_out_folder(out: Path) -> None:
    if out.exists():
        extra = sorted(
            p.name for p in out.iterdir() if p.name not in (*SERVED_FILES, MANIFEST_FILE)
        )
        if extra:
            raise ExportError(
                f"{out} holds files that are not part of an artifact ({', '.join(extra[:5])}); "
                "choose an empty or new folder"
            )


def export_artifact(request: ExportRequest, out: Path) -> Manifest:
    """Export, validate, then write model.onnx, tokenizer.json and manifest.json into ``out``."""
    out = Path(out).resolve()
    _check_out_folder(out)
    tokenizer = Tokenizer.from_str(request.tokenizer_json)
    preprocessor = Preprocessor(tokenizer, request.preprocessing)
    pad_id = request.preprocessing.pad_token_id
    pairs = validation_pairs(preprocessor, request.validation_texts)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        raw = scratch / "raw.onnx"
        trace_to_onnx(request.scorer, [pairs[0], pairs[1]], pad_id, raw)
        candidates: list[tuple[str, Path]] = []
        if request.model_type in BERT_FAMILY and request.num_heads and request.hidden_size:
            optimized = scratch / "optimized.onnx"
            label = optimize_bert(raw, optimized, request.num_heads, request.hidden_size)
            candidates.append((label, optimized))
        candidates.append(("none", raw))
        chosen: tuple[str, Path, Validation] | None = None
        for label, path in candidates:
            result = validate(request.scorer, path, pairs, pad_id)
            log.info(
                "export check [%s]: parity max|diff| %.2e (limit %.0e), batch invariance %.2e "
                "(limit %.0e)",
                label,
                result.parity_max_abs_diff,
                PARITY_ATOL,
                result.invariance_max_abs_diff,
                INVARIANCE_ATOL,
            )
            if result.ok:
                chosen = (label, path, result)
                break
        if chosen is None:
            raise ExportError(
                f"exported graph fails validation: parity {result.parity_max_abs_diff:.2e} "
                f"(limit {PARITY_ATOL:.0e}), batch invariance {result.invariance_max_abs_diff:.2e} "
                f"(limit {INVARIANCE_ATOL:.0e}); nothing written to {out}"
            )
        label, path, result = chosen
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / MODEL_FILE)
        (out / TOKENIZER_FILE).write_text(preprocessor.tokenizer.to_str(), encoding="utf-8")
        digests = file_digests(out)
        metrics = {
            **request.metrics,
            "export_parity_max_abs_diff": result.parity_max_abs_diff,
            "export_batch_invariance_max_abs_diff": result.invariance_max_abs_diff,
        }
        manifest = Manifest(
            name=request.name,
            version=request.version or digests[MODEL_FILE][:12],
            backbone=request.backbone,
            architecture=request.scorer.architecture,
            input_names=request.scorer.input_names,
            output_name=OUTPUT_NAME,
            pooling=request.scorer.pooling,
            preprocessing=request.preprocessing,
            normalization=request.normalization,
            optimization=label,
            metrics=metrics,
            files=digests,
        )
        write_manifest(out, manifest)
        return manifest
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
