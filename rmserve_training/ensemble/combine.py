"""``rmserve ensemble``: K member artifacts -> one artifact whose single ONNX graph scores every
member at once (output [B, K]).

Members must share everything that turns (prompt, response) into the graph's inputs: the
tokenizer file, every preprocessing field (join, template, max_length, truncation, pad id), the
input names and the dtype. Each member's graph is copied in whole with its names prefixed
(``m0/``, ``m1/``, ...), all members read the same graph inputs, and their [B] rewards are
stacked into one [B, K] output. The result is checked against the members' own graphs, and
against the golden pairs they share (``ensemble_golden``), before it is moved into place, like an
export.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper

from rmserve.artifact.folder import file_entries, read_manifest, write_manifest
from rmserve.artifact.golden import read_golden, write_golden
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
)
from rmserve.engine.session import OrtEngine, load_artifact
from rmserve.serving.golden import GoldenDrift, verify_golden
from rmserve_training.ensemble.golden import ensemble_golden
from rmserve_training.export.onnx_layout import AUTO_EXTERNAL_BYTES, write_model

PARITY_TOLERANCE = 1e-4  # the combined graph runs each member's own nodes: only fp noise
CHECK_TEXTS = (
    ("", ""),
    ("What is the capital of France?", "Paris."),
    ("What is the capital of France?", "I will not help with that."),
    ("How do I boil an egg?", "Put it in boiling water for eight minutes, then cool it."),
    ("Translate 'cat' into French.", "Chat."),
    ("context " * 600, "the response stays whole"),
)


class EnsembleError(Exception):
    """The members cannot be combined; the message says which member and field."""


def _fields(manifest: Manifest, tokenizer_sha: str) -> dict[str, Any]:
    """What must be equal across members, by the name an error reports."""
    fields: dict[str, Any] = {
        "tokenizer.json": tokenizer_sha,
        "input_names": sorted(manifest.input_names),
        "dtype": manifest.dtype,
    }
    for name in Preprocessing.model_fields:
        fields[f"preprocessing.{name}"] = getattr(manifest.preprocessing, name)
    return fields


def check_compatible(folders: Sequence[Path], manifests: Sequence[Manifest]) -> None:
    """Refuse members that are ensembles or that preprocess differently, naming the field."""
    if len(manifests) < 2:
        raise EnsembleError(f"an ensemble needs at least 2 members, got {len(manifests)}")
    for folder, manifest in zip(folders, manifests, strict=True):
        if manifest.ensemble is not None:
            raise EnsembleError(f"member {folder} is already an ensemble; list its members")
    first = _fields(manifests[0], manifests[0].files[TOKENIZER_FILE].sha256)
    for folder, manifest in zip(folders[1:], manifests[1:], strict=True):
        other = _fields(manifest, manifest.files[TOKENIZER_FILE].sha256)
        for name, value in first.items():
            if other[name] != value:
                raise EnsembleError(
                    f"member {folder} differs from {folders[0]} in {name}: "
                    f"{other[name]!r} vs {value!r} (members must share preprocessing)"
                )


def _merged_opsets(models: Sequence[onnx.ModelProto]) -> dict[str, int]:
    opsets: dict[str, int] = {}
    for model in models:
        for entry in model.opset_import:
            known = opsets.setdefault(entry.domain, entry.version)
            if known != entry.version:
                raise EnsembleError(
                    f"members use opset {known} and {entry.version} of domain "
                    f"'{entry.domain or 'ai.onnx'}'; re-export them with one opset"
                )
    return opsets


def combine_graphs(models: Sequence[onnx.ModelProto], output_name: str) -> onnx.ModelProto:
    """One graph: each member's nodes under its own prefix, shared inputs, output [B, K]."""
    opsets = _merged_opsets(models)
    first = models[0].graph
    batch = first.output[0].type.tensor_type.shape.dim[0].dim_param or "batch"
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = [
        numpy_helper.from_array(np.array([1], dtype=np.int64), "ensemble/axes")
    ]
    value_info: list[onnx.ValueInfoProto] = []
    columns: list[str] = []
    for k, model in enumerate(models):
        if model.functions:
            raise EnsembleError("members with ONNX local functions are not supported")
        outputs = [o.name for o in model.graph.output]
        if outputs != [output_name]:
            raise EnsembleError(f"member {k} has outputs {outputs}, expected [{output_name!r}]")
        prefixed = compose.add_prefix(
            model, f"m{k}/", rename_inputs=False, rename_outputs=True, inplace=False
        )
        graph = prefixed.graph
        nodes += graph.node
        initializers += graph.initializer
        value_info += graph.value_info
        column = f"m{k}/{output_name}/column"
        nodes.append(
            helper.make_node(
                "Unsqueeze", [f"m{k}/{output_name}", "ensemble/axes"], [column], f"m{k}/stack"
            )
        )
        columns.append(column)
    nodes.append(helper.make_node("Concat", columns, [output_name], "ensemble/concat", axis=1))
    output = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, len(models)])
    graph = helper.make_graph(
        nodes, "rmserve-ensemble", list(first.input), [output], initializers, value_info=value_info
    )
    combined = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(domain, version) for domain, version in opsets.items()],
        producer_name="rmserve ensemble",
    )
    combined.ir_version = max(m.ir_version for m in models)
    return combined


def _write_graph(model: onnx.ModelProto, staging: Path, scratch: Path, external: bool) -> list[str]:
    if not external and model.ByteSize() < AUTO_EXTERNAL_BYTES:
        onnx.save_model(model, str(staging / MODEL_FILE))
        return [MODEL_FILE]
    source = scratch / "combined" / "combined.onnx"
    source.parent.mkdir()
    onnx.save_model(model, str(source), save_as_external_data=True, location="combined.onnx.data")
    return write_model(source, staging, "fp32", external_data=True)  # fp32: no conversion


def _version(entries: dict[str, FileEntry]) -> str:
    digests = "".join(f"{name}:{entries[name].sha256}\n" for name in sorted(entries))
    return hashlib.sha256(digests.encode()).hexdigest()[:12]


def _parity(staging: Path, members: Sequence[Path]) -> ParityReport:
    """Score fixed texts with the combined graph and with each member's own graph; also alone
    vs inside a batch, for batch invariance."""
    combined = OrtEngine(load_artifact(staging), provider="cpu")
    prompts = [p for p, _ in CHECK_TEXTS]
    responses = [r for _, r in CHECK_TEXTS]
    prepared = combined.artifact.preprocessor.prepare_many(prompts, responses)
    together = combined.score(prepared)
    alone = np.stack([combined.score([pair])[0] for pair in prepared])
    columns = [
        OrtEngine(load_artifact(folder), provider="cpu").score(prepared) for folder in members
    ]
    reference = np.stack(columns, axis=1)
    max_diff = float(np.max(np.abs(together - reference)))
    invariance = float(np.max(np.abs(together - alone)))
    tolerance = f"max|Δ| <= {PARITY_TOLERANCE:g} against each member's own graph, in and out "
    if max_diff > PARITY_TOLERANCE or invariance > PARITY_TOLERANCE:
        raise EnsembleError(
            f"combined graph disagrees with its members: max|Δ| {max_diff:.2e}, "
            f"batch invariance {invariance:.2e} (accepting {PARITY_TOLERANCE:g})"
        )
    return ParityReport(
        status="checked",
        reference="member artifacts (onnxruntime)",
        provider=combined.provider,
        pairs=len(prepared),
        max_abs_diff=max_diff,
        batch_invariance_max_abs_diff=invariance,
        tolerance=tolerance + "of a batch",
    )


def _check_golden(staging: Path) -> None:
    """The combined graph against the members' golden pairs (their torch fp32 rewards)."""
    loaded = load_artifact(staging)
    try:
        verify_golden(OrtEngine(loaded, provider="cpu"), loaded)
    except GoldenDrift as e:
        raise EnsembleError(f"combined graph: {e}") from e


def _ensemble_manifest(
    manifests: Sequence[Manifest],
    entries: dict[str, FileEntry],
    name: str | None,
    parity: ParityReport,
    version: str | None = None,
) -> Manifest:
    first = manifests[0]
    backbones = sorted({m.backbone for m in manifests})
    parameters = [m.parameters for m in manifests]
    return Manifest(
        name=name or f"{first.name}-ensemble",
        version=version or _version(entries),
        backbone=backbones[0] if len(backbones) == 1 else "+".join(backbones),
        architecture=first.architecture,
        input_names=first.input_names,
        output_name=first.output_name,
        pooling=first.pooling,
        preprocessing=first.preprocessing,
        normalization=Normalization(mean=0.0, std=1.0),
        optimization="ensemble:" + ",".join(sorted({m.optimization for m in manifests})),
        metrics={},
        files=entries,
        dtype=first.dtype,
        parameters=None if None in parameters else sum(p or 0 for p in parameters),
        parity=parity,
        ensemble=[
            EnsembleMember(
                name=m.name,
                version=m.version,
                backbone=m.backbone,
                pooling=m.pooling,
                normalization=m.normalization,
                metrics=m.metrics,
            )
            for m in manifests
        ],
    )


def combine(
    members: Sequence[Path],
    out: Path,
    name: str | None = None,
    external_data: bool = False,
    version: str | None = None,
) -> Manifest:
    """Write the ensemble artifact of ``members`` (in this order) to ``out``; the weights go
    to model.onnx.data when asked for or when any member keeps its weights there."""
    folders = [Path(m).resolve() for m in members]
    manifests = [read_manifest(folder) for folder in folders]
    check_compatible(folders, manifests)
    out = Path(out).resolve()
    if out.exists() and any(p.name not in ARTIFACT_FILES for p in out.iterdir()):
        raise EnsembleError(f"{out} holds files that are not part of an artifact")
    external = external_data or any(WEIGHTS_FILE in m.files for m in manifests)
    output_name = manifests[0].output_name
    models = [onnx.load(str(folder / MODEL_FILE), load_external_data=True) for folder in folders]
    combined = combine_graphs(models, output_name)
    del models
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.ensemble-", dir=out.parent))
    try:
        staging = scratch / "artifact"
        staging.mkdir()
        written = _write_graph(combined, staging, scratch, external)
        del combined
        shutil.copyfile(folders[0] / TOKENIZER_FILE, staging / TOKENIZER_FILE)
        golden = ensemble_golden(
            [read_golden(f, m) for f, m in zip(folders, manifests, strict=True)]
        )
        if golden is not None:
            write_golden(staging, golden)
        golden_files = [] if golden is None else [GOLDEN_FILE]
        entries = file_entries(staging, [*written, TOKENIZER_FILE, *golden_files])
        # Written unchecked first so the check can load the folder, then with its report.
        unchecked = ParityReport(
            status="unchecked", reference="", provider=None, pairs=0, tolerance=""
        )
        write_manifest(staging, _ensemble_manifest(manifests, entries, name, unchecked, version))
        parity = _parity(staging, folders)
        _check_golden(staging)
        manifest = _ensemble_manifest(manifests, entries, name, parity, version)
        write_manifest(staging, manifest)
        if out.exists():
            os.replace(out, scratch / "previous")
        os.replace(staging, out)
        return manifest
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
