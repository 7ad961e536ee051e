"""Torch scorer -> ONNX -> validated artifact folder.

The graph is traced (``dynamo=False``) from an eager-attention backbone; for BERT-family
encoders onnxruntime's transformer optimizer then fuses attention, layer norm and GELU. Each
candidate graph is written into a staging folder next to ``out`` with the artifact's own file
names (``model.onnx``, and ``model.onnx.data`` when the weights are external), checked there
against torch (parity, batch invariance; see ``export_check``), hashed, and only then renamed
into place. Nothing is written to ``out`` when the check fails. The checked pairs and their torch
rewards stay in the artifact as its golden pairs (``export_golden``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tokenizers import Tokenizer

from rmserve.artifact.folder import file_entries, write_manifest
from rmserve.artifact.golden import write_golden
from rmserve.artifact.manifest import (
    ARTIFACT_FILES,
    GOLDEN_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    EnsembleMember,
    FileEntry,
    Manifest,
    Normalization,
    ParityReport,
    Preprocessing,
    TrainingRecord,
)
from rmserve.text.preprocess import PreparedPair, Preprocessor
from rmserve_training.export.check import (
    OUTPUT_NAME,
    TOLERANCES,
    CheckResult,
    ExportError,
    check_artifact,
    check_long_pairs,
    reference_scores,
    torch_feed,
    torch_scores,
)
from rmserve_training.export.fused_attention import (
    DOMAIN,
    fused_attention,
    supports_fused_attention,
)
from rmserve_training.export.golden import GoldenExample, export_golden
from rmserve_training.export.onnx_layout import Dtype, write_model
from rmserve_training.export.shape import model_shape
from rmserve_training.model.reward_model import RewardModel, Scorer

log = logging.getLogger(__name__)

INVARIANCE_BATCH = 16
OPSET = 17
# Model types whose graphs onnxruntime's 'bert' optimizer recognises and fuses.
BERT_FAMILY = frozenset({"bert"})
FUSED_LABEL = "ort-gqa"  # decoder attention as com.microsoft.GroupQueryAttention
# Odd cases that every validation set includes: empty texts and a pair that must be truncated.
EDGE_CASE_TEXTS = (("", ""), ("", "ok"), ("context " * 600, "the response stays whole"))


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
    # Pairs far longer than the validation texts, each checked alone (check_long_pairs).
    long_texts: Sequence[tuple[str, str]] = ()
    version: str | None = None
    num_heads: int = 0
    hidden_size: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    dtype: Dtype = "fp32"
    external_data: bool = False  # weights in model.onnx.data even when they would fit inline
    fused_attention: bool = True  # decoders of FUSED_FAMILIES: GroupQueryAttention
    training: TrainingRecord | None = None  # how rmserve train fitted the weights
    # A scorer with output [B, K] (heads on one backbone): its K members, and the kind.
    ensemble: Sequence[EnsembleMember] | None = None
    ensemble_kind: Literal["shared"] | None = None


def validation_pairs(
    preprocessor: Preprocessor, texts: Sequence[tuple[str, str]]
) -> list[GoldenExample]:
    """At least 16 pairs, interleaving short and long ones so every batch is padded; each with
    its texts (they become the artifact's golden pairs)."""
    chosen = list(texts) + list(EDGE_CASE_TEXTS)
    while len(chosen) < INVARIANCE_BATCH:
        chosen.append((f"prompt number {len(chosen)}", "reply " * (len(chosen) % 7)))
    prepared = preprocessor.prepare_many([p for p, _ in chosen], [r for _, r in chosen])
    by_length = sorted(zip(chosen, prepared, strict=True), key=lambda e: e[1].num_tokens)
    mixed: list[GoldenExample] = []
    while by_length:
        mixed.append(by_length.pop(0))
        if by_length:
            mixed.append(by_length.pop())
    return mixed


def uses_fused_attention(request: ExportRequest) -> bool:
    scorer = request.scorer
    return (
        request.fused_attention
        and isinstance(scorer, RewardModel)
        and scorer.architecture == "decoder"
        and supports_fused_attention(request.model_type, scorer.backbone)
    )


@contextmanager
def tracing_mode(scorer: Scorer, fused: bool) -> Iterator[None]:
    """The scorer as traced: with fused attention, rows packed and attention switched."""
    if not fused:
        yield
        return
    assert isinstance(scorer, RewardModel)
    scorer.pack_rows = True
    try:
        with fused_attention(scorer.backbone):
            yield
    finally:
        scorer.pack_rows = False


def long_reference_scores(
    scorer: Scorer, pairs: Sequence[PreparedPair], pad_token_id: int, fused: bool
) -> np.ndarray:
    """The torch rewards of long pairs, one at a time. A backbone on eager attention would
    hold [heads, L, L] scores, so it is scored in its traced mode instead (the same attention,
    query-chunked: export/fused_attention.py), checked against eager on the short pairs."""
    eager = getattr(getattr(scorer, "backbone", None), "config", None)
    chunked = fused and getattr(eager, "_attn_implementation", "eager") == "eager"
    with tracing_mode(scorer, chunked):
        return np.concatenate([torch_scores(scorer, [pair], pad_token_id) for pair in pairs])


def trace_to_onnx(
    scorer: Scorer,
    sample: Sequence[PreparedPair],
    pad_token_id: int,
    path: Path,
    fused: bool = False,
) -> None:
    names = scorer.input_names
    feed = torch_feed(sample, pad_token_id, names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes[OUTPUT_NAME] = {0: "batch"}
    scorer.eval()
    with warnings.catch_warnings(), torch.no_grad(), tracing_mode(scorer, fused):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            scorer,
            tuple(feed[name] for name in names),
            str(path),
            input_names=names,
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=OPSET,
            custom_opsets={DOMAIN: 1} if fused else None,
            dynamo=False,
        )


def optimize_bert(raw: Path, out: Path, num_heads: int, hidden_size: int) -> str:
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(raw), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, use_gpu=False
    )
    external = any(p.name != raw.name for p in raw.parent.iterdir())  # the trace's weight files
    optimized.save_model_to_file(str(out), use_external_data_format=external)
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    log.info("onnxruntime bert optimizer fused: %s", fused)
    return "ort-bert:" + ",".join(sorted(fused)) if fused else "ort-bert"


def _check_out_folder(out: Path) -> None:
    if out.exists():
        extra = sorted(p.name for p in out.iterdir() if p.name not in ARTIFACT_FILES)
        if extra:
            raise ExportError(
                f"{out} holds files that are not part of an artifact ({', '.join(extra[:5])}); "
                "choose an empty or new folder"
            )


def default_version(entries: dict[str, FileEntry]) -> str:
    """model.onnx's sha256 prefix; with external weights, that of both files' digests (the
    graph alone does not change when only the weights do)."""
    if WEIGHTS_FILE not in entries:
        return entries[MODEL_FILE].sha256[:12]
    both = f"{entries[MODEL_FILE].sha256}\n{entries[WEIGHTS_FILE].sha256}\n"
    return hashlib.sha256(both.encode()).hexdigest()[:12]


def _move_into_place(staging: Path, out: Path, scratch: Path) -> None:
    """Rename the checked staging folder to ``out``; an old artifact there is moved aside first
    and removed after (``out`` holds only artifact files: ``_check_out_folder``)."""
    if out.exists():
        os.replace(out, scratch / "previous")
    os.replace(staging, out)


def _stage_candidates(
    request: ExportRequest,
    candidates: list[tuple[str, Path]],
    staging: Path,
    preprocessor: Preprocessor,
    pairs: Sequence[PreparedPair],
    reference: np.ndarray,
) -> tuple[str, list[str], ParityReport]:
    """Write each candidate into ``staging`` and check it there against ``reference`` (torch
    fp32); the first that passes stays. An fp16 graph onnxruntime cannot run here is kept, as
    'unchecked', only when no candidate was checked and passed."""
    pad_id = request.preprocessing.pad_token_id
    tolerance = TOLERANCES[request.dtype].describe()

    def stage(label: str, path: Path) -> tuple[list[str], CheckResult]:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        written = write_model(path, staging, request.dtype, request.external_data)
        (staging / TOKENIZER_FILE).write_text(preprocessor.tokenizer.to_str(), encoding="utf-8")
        result = check_artifact(staging / MODEL_FILE, request.dtype, reference, pairs, pad_id)
        report = result.report
        log.info(
            "export check [%s, %s, %s]: %s, max|Δ| %s, rank agreement %s, batch invariance %s "
            "(accepting %s)",
            label, request.dtype, "+".join(written), report.status, report.max_abs_diff,
            report.rank_agreement, report.batch_invariance_max_abs_diff, tolerance,
        )  # fmt: skip
        return written, result

    failed: list[ParityReport] = []
    unchecked: list[tuple[str, Path]] = []
    for label, path in candidates:
        written, result = stage(label, path)
        if result.report.status == "unchecked":
            unchecked.append((label, path))
        elif result.ok:
            return label, written, result.report
        else:
            failed.append(result.report)
    if unchecked:
        label, path = unchecked[0]
        written, result = stage(label, path)
        return label, written, result.report
    worst = failed[-1]
    raise ExportError(
        f"exported {request.dtype} graph fails validation: max|Δ| {worst.max_abs_diff:.2e}, "
        f"batch invariance {worst.batch_invariance_max_abs_diff:.2e} (accepting {tolerance})"
    )


def export_artifact(request: ExportRequest, out: Path) -> Manifest:
    """Export, check in a staging folder, then rename into ``out``: model.onnx (+ the weights
    file), tokenizer.json and manifest.json."""
    out = Path(out).resolve()
    _check_out_folder(out)
    tokenizer = Tokenizer.from_str(request.tokenizer_json)
    preprocessor = Preprocessor(tokenizer, request.preprocessing)
    pad_id = request.preprocessing.pad_token_id
    examples = validation_pairs(preprocessor, request.validation_texts)
    pairs = [pair for _, pair in examples]
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        trace_dir = scratch / "trace"  # torch writes one file per tensor beside a >2 GiB graph
        trace_dir.mkdir()
        raw = trace_dir / "raw.onnx"
        fused = uses_fused_attention(request)
        trace_to_onnx(request.scorer, [pairs[0], pairs[1]], pad_id, raw, fused)
        candidates: list[tuple[str, Path]] = []
        if request.model_type in BERT_FAMILY and request.num_heads and request.hidden_size:
            optimized_dir = scratch / "optimized"
            optimized_dir.mkdir()
            optimized = optimized_dir / "optimized.onnx"
            label = optimize_bert(raw, optimized, request.num_heads, request.hidden_size)
            candidates.append((label, optimized))
        candidates.append((FUSED_LABEL if fused else "none", raw))
        staging = scratch / "artifact"
        reference = reference_scores(request.scorer, pairs, pad_id)
        label, written, report = _stage_candidates(
            request, candidates, staging, preprocessor, pairs, reference
        )
        shutil.rmtree(trace_dir)
        write_golden(staging, export_golden(examples, reference, request.dtype))
        metrics = dict(request.metrics)
        if request.long_texts:
            long_pairs = preprocessor.prepare_many(*zip(*request.long_texts, strict=True))
            long_reference = long_reference_scores(request.scorer, long_pairs, pad_id, fused)
            long = check_long_pairs(
                staging / MODEL_FILE, request.dtype, long_reference, long_pairs, pad_id
            )
            log.info("export check at %d tokens: max|Δ| %.2e", long.tokens, long.max_abs_diff)
            metrics["export_long_parity_tokens"] = float(long.tokens)
            metrics["export_long_parity_max_abs_diff"] = long.max_abs_diff
        entries = file_entries(staging, [*written, TOKENIZER_FILE, GOLDEN_FILE])
        if report.max_abs_diff is not None:
            metrics["export_parity_max_abs_diff"] = report.max_abs_diff
        if report.batch_invariance_max_abs_diff is not None:
            metrics["export_batch_invariance_max_abs_diff"] = report.batch_invariance_max_abs_diff
        manifest = Manifest(
            name=request.name,
            version=request.version or default_version(entries),
            backbone=request.backbone,
            architecture=request.scorer.architecture,
            input_names=request.scorer.input_names,
            output_name=OUTPUT_NAME,
            pooling=request.scorer.pooling,
            preprocessing=request.preprocessing,
            normalization=request.normalization,
            optimization=label,
            metrics=metrics,
            files=entries,
            dtype=request.dtype,
            parameters=sum(p.numel() for p in request.scorer.parameters()),
            parity=report,
            training=request.training,
            ensemble=list(request.ensemble) if request.ensemble else None,
            ensemble_kind=request.ensemble_kind,
            shape=model_shape(request.scorer, fused),
        )
        write_manifest(staging, manifest)
        _move_into_place(staging, out, scratch)
        return manifest
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
