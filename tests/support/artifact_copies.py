"""Copies of an exported artifact with one edit made after export: the manifest's sizes and
sha256s re-written to match the edited files where a test wants only its intended defect left."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import onnx
from onnx import numpy_helper

from rmserve.artifact.folder import artifact_files, file_entries
from rmserve.artifact.manifest import MODEL_FILE


def rewrite_digests(folder: Path) -> None:
    """Record the folder's files as they are now in its manifest.json (sizes and sha256s)."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    entries = file_entries(folder, artifact_files(folder))
    manifest["files"] = {name: entry.model_dump() for name, entry in entries.items()}
    path.write_text(json.dumps(manifest, indent=2))


def edited_copy(source: Path, folder: Path, edit: Callable[[Path], None]) -> Path:
    """Copy the artifact at ``source`` to ``folder`` and apply ``edit`` to the copy."""
    shutil.copytree(source, folder)
    edit(folder)
    return folder


def move_a_head_weight(folder: Path) -> None:
    """Move one weight of the reward head; every check but the golden pairs still passes."""
    model = onnx.load(str(folder / MODEL_FILE))
    (head,) = [i for i in model.graph.initializer if i.name == "head.weight"]
    weights = numpy_helper.to_array(head).copy()
    weights.flat[0] += 0.05
    head.CopyFrom(numpy_helper.from_array(weights, head.name))
    onnx.save(model, str(folder / MODEL_FILE))
    rewrite_digests(folder)
