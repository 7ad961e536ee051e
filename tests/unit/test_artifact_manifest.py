"""Manifest round trip and tamper detection."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmserve.artifact import (
    MANIFEST_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    ArtifactError,
    Manifest,
    Normalization,
    Preprocessing,
    file_digests,
    read_manifest,
    write_manifest,
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / MODEL_FILE).write_bytes(b"\x08\x07onnx-bytes" * 10)
    (tmp_path / TOKENIZER_FILE).write_text('{"version": "1.0"}', encoding="utf-8")
    manifest = Manifest(
        name="rm",
        version="v1",
        backbone="tiny",
        architecture="encoder",
        input_names=["input_ids", "attention_mask"],
        pooling="mean",
        preprocessing=Preprocessing(join="pair", max_length=64, pad_token_id=0),
        normalization=Normalization(mean=0.5, std=2.0),
        optimization="none",
        metrics={"eval_accuracy": 0.93},
        files=file_digests(tmp_path),
    )
    write_manifest(tmp_path, manifest)
    return tmp_path


def test_round_trip(folder: Path) -> None:
    manifest = read_manifest(folder)
    assert manifest == Manifest.model_validate_json((folder / MANIFEST_FILE).read_text())
    assert manifest.metrics == {"eval_accuracy": 0.93}
    assert manifest.normalize(4.5) == 2.0


@pytest.mark.parametrize("name", [MODEL_FILE, TOKENIZER_FILE])
def test_one_changed_byte_is_detected(folder: Path, name: str) -> None:
    data = bytearray((folder / name).read_bytes())
    data[3] ^= 0x01
    (folder / name).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=f"{name}: sha256 .* does not match"):
        read_manifest(folder)


def test_missing_file_is_named(folder: Path) -> None:
    (folder / TOKENIZER_FILE).unlink()
    with pytest.raises(ArtifactError, match=f"missing file {TOKENIZER_FILE}"):
        read_manifest(folder)


def test_invalid_field_is_named(folder: Path) -> None:
    path = folder / MANIFEST_FILE
    path.write_text(path.read_text().replace('"std": 2.0', '"std": 0.0'))
    with pytest.raises(ArtifactError, match=r"normalization\.std"):
        read_manifest(folder)
