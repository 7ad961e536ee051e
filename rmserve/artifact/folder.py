"""An artifact folder on disk: which of its files the manifest must list, each file's size and
sha256, writing ``manifest.json``, and reading it back verified (every listed file present with
its recorded size and sha256, every external-data file of ``model.onnx`` listed). The manifest
itself: ``rmserve.artifact.manifest``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import ValidationError

from rmserve.artifact.manifest import (
    GOLDEN_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    READABLE_FORMATS,
    SERVED_FILES,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    FileEntry,
    Manifest,
)
from rmserve.artifact.onnx_refs import OnnxFormatError, external_data_locations


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entries(folder: Path, names: tuple[str, ...] | list[str]) -> dict[str, FileEntry]:
    return {
        name: FileEntry(sha256=sha256_file(folder / name), bytes=(folder / name).stat().st_size)
        for name in names
    }


def artifact_files(folder: Path) -> list[str]:
    """The artifact's files in ``folder`` (the manifest aside): what the manifest must list."""
    names = (MODEL_FILE, WEIGHTS_FILE, TOKENIZER_FILE, GOLDEN_FILE)
    return [name for name in names if (folder / name).exists()]


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    path = folder / MANIFEST_FILE
    # A single model's manifest is written exactly as before ensembles existed, and a full
    # members' ensemble exactly as before shared-backbone ones.
    exclude = {
        name for name in ("ensemble", "ensemble_kind", "shape") if getattr(manifest, name) is None
    }
    path.write_text(manifest.model_dump_json(indent=2, exclude=exclude) + "\n", encoding="utf-8")
    return path


def read_manifest(folder: Path) -> Manifest:
    """Read and verify an artifact folder: every listed file present with its recorded size and
    sha256 (sizes first, so a truncated weights file is refused before anything is hashed), and
    every external-data file ``model.onnx`` would load listed."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise ArtifactError(f"{folder}: no {MANIFEST_FILE} (is this an rmserve artifact folder?)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ArtifactError(f"{path}: not valid JSON ({e})") from e
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version not in READABLE_FORMATS:
        raise ArtifactError(
            f"{path}: format_version {version} is not supported "
            f"(this rmserve reads {', '.join(map(str, READABLE_FORMATS))})"
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ArtifactError(f"{path}: invalid manifest field '{where}': {first['msg']}") from e
    for name in SERVED_FILES:
        if name not in manifest.files:
            raise ArtifactError(f"{path}: no sha256 recorded for {name}")
    _check_files(folder, manifest.files)
    _check_external_data(folder, manifest.files)
    return manifest


def _check_files(folder: Path, files: dict[str, FileEntry]) -> None:
    for name, entry in files.items():
        file = folder / name
        if Path(name).name != name or name in (".", ".."):
            raise ArtifactError(
                f"{folder / MANIFEST_FILE}: file name {name!r} is not in the folder"
            )
        if not file.is_file():
            raise ArtifactError(f"{folder}: missing file {name}")
        size = file.stat().st_size
        if entry.bytes is not None and size != entry.bytes:
            raise ArtifactError(
                f"{file}: {size} bytes, the manifest says {entry.bytes} "
                "(truncated or replaced after export?)"
            )
    for name, entry in files.items():
        actual = sha256_file(folder / name)
        if actual != entry.sha256:
            raise ArtifactError(
                f"{folder / name}: sha256 {actual[:12]}… does not match the manifest's "
                f"{entry.sha256[:12]}… (file changed after export?)"
            )


def _check_external_data(folder: Path, files: dict[str, FileEntry]) -> None:
    try:
        locations = external_data_locations(folder / MODEL_FILE)
    except OnnxFormatError as e:
        raise ArtifactError(f"{folder / MODEL_FILE}: not a readable ONNX file ({e})") from e
    unlisted = sorted(loc for loc in locations if loc not in files)
    if unlisted:
        more = f" and {len(unlisted) - 1} more" if len(unlisted) > 1 else ""
        raise ArtifactError(
            f"{folder / MODEL_FILE} loads external data from {unlisted[0]}{more}, which the "
            "manifest does not list (incomplete export?)"
        )
