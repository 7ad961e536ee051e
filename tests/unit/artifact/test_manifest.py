"""Manifest round trip, format 1 still read, and refusal of missing, truncated or tampered files
and of external data the manifest does not list."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from rmserve.artifact.folder import file_entries, read_manifest, write_manifest
from rmserve.artifact.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    EnsembleMember,
    Manifest,
    ModelShape,
    Normalization,
    ParityReport,
    Preprocessing,
)

PARITY = ParityReport(
    status="checked", reference="torch fp32", provider="CPUExecutionProvider", pairs=16,
    max_abs_diff=3e-6, rank_agreement=1.0, batch_invariance_max_abs_diff=0.0,
    tolerance="every |Δ| ≤ 1e-04; batch invariance ≤ 1e-05",
)  # fmt: skip


def external_model(folder: Path, location: str = WEIGHTS_FILE) -> None:
    """A one-node ONNX model whose only initializer lives in ``location``."""
    weight = numpy_helper.from_array(np.full(256, 0.5, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [256])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [256])], [weight],
    )  # fmt: skip
    onnx.save_model(
        helper.make_model(graph), str(folder / MODEL_FILE), save_as_external_data=True,
        location=location, size_threshold=0,
    )  # fmt: skip


def write_artifact(folder: Path, names: list[str]) -> Manifest:
    (folder / TOKENIZER_FILE).write_text('{"version": "1.0"}', encoding="utf-8")
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
        files=file_entries(folder, names),
        parameters=256,
        parity=PARITY,
    )
    write_manifest(folder, manifest)
    return manifest


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / MODEL_FILE).write_bytes(b"\x08\x07")  # ModelProto: ir_version 7, nothing else
    write_artifact(tmp_path, [MODEL_FILE, TOKENIZER_FILE])
    return tmp_path


@pytest.fixture
def external(tmp_path: Path) -> Path:
    external_model(tmp_path)
    write_artifact(tmp_path, [MODEL_FILE, WEIGHTS_FILE, TOKENIZER_FILE])
    return tmp_path


def test_round_trip(folder: Path) -> None:
    manifest = read_manifest(folder)
    assert manifest == Manifest.model_validate_json((folder / MANIFEST_FILE).read_text())
    assert manifest.metrics == {"eval_accuracy": 0.93}
    assert manifest.normalize(4.5) == 2.0
    assert manifest.files[MODEL_FILE].bytes == 2
    assert manifest.dtype == "fp32" and manifest.parity == PARITY


def test_a_single_model_manifest_has_no_ensemble_key(folder: Path) -> None:
    """Written exactly as before ensembles existed, so older servers still read it."""
    raw = json.loads((folder / MANIFEST_FILE).read_text())
    assert "ensemble" not in raw and "ensemble_kind" not in raw
    assert read_manifest(folder).ensemble is None and read_manifest(folder).members == 0


def test_the_model_shape_is_optional_and_written_only_when_known(folder: Path) -> None:
    """Older artifacts have no shape (the server estimates one); an export that knows it
    records it, and it reads back with its defaults filled."""
    plain = read_manifest(folder)
    assert plain.shape is None and "shape" not in json.loads((folder / MANIFEST_FILE).read_text())
    shape = ModelShape(
        hidden_size=1024, intermediate_size=3072, num_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, attention="fused",
    )  # fmt: skip
    write_manifest(folder, plain.model_copy(update={"shape": shape}))
    assert json.loads((folder / MANIFEST_FILE).read_text())["shape"]["attention"] == "fused"
    assert read_manifest(folder).shape == shape
    assert (shape.kv_heads, shape.head_dim_or_default) == (8, 128)
    bert = ModelShape(
        hidden_size=384, intermediate_size=1536, num_layers=6, num_attention_heads=12,
        attention="materialized",
    )  # fmt: skip
    assert (bert.kv_heads, bert.head_dim_or_default) == (12, 32)
    with pytest.raises(ValueError, match="attention"):
        ModelShape.model_validate({**bert.model_dump(), "attention": "flash"})


def test_ensemble_kind_is_written_only_for_shared_backbone_ensembles(folder: Path) -> None:
    """A full members' ensemble is written as before (no key); 'shared' is recorded."""
    single = read_manifest(folder)
    members = [
        EnsembleMember(
            name=f"h{k}", version=f"v{k}", backbone="tiny", pooling="cls",
            normalization=Normalization(mean=0.1 * k, std=1.0 + k),
        )
        for k in range(2)
    ]  # fmt: skip
    full = Manifest.model_validate(
        {**single.model_dump(), "ensemble": members, "normalization": {"mean": 0.0, "std": 1.0}}
    )
    shared = Manifest.model_validate({**full.model_dump(), "ensemble_kind": "shared"})
    for manifest, kind in ((full, None), (shared, "shared")):
        write_manifest(folder, manifest)
        raw = json.loads((folder / MANIFEST_FILE).read_text())
        assert ("ensemble_kind" in raw) == (kind is not None) and raw.get("ensemble_kind") == kind
        assert read_manifest(folder).ensemble_kind == kind
    with pytest.raises(ValueError, match="ensemble_kind is for ensembles only"):
        Manifest.model_validate({**single.model_dump(), "ensemble_kind": "shared"})


def test_external_weights_are_verified(external: Path) -> None:
    manifest = read_manifest(external)
    assert manifest.files[WEIGHTS_FILE].bytes == 256 * 4


@pytest.mark.parametrize("name", [MODEL_FILE, TOKENIZER_FILE])
def test_one_changed_byte_is_detected(folder: Path, name: str) -> None:
    data = bytearray((folder / name).read_bytes())
    data[1] ^= 0x01
    (folder / name).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=f"{name}: sha256 .* does not match"):
        read_manifest(folder)


def test_tampered_weights_are_refused(external: Path) -> None:
    data = bytearray((external / WEIGHTS_FILE).read_bytes())
    data[100] ^= 0x01
    (external / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=f"{WEIGHTS_FILE}: sha256 .* does not match"):
        read_manifest(external)


def test_truncated_weights_are_refused_by_size(
    external: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (external / WEIGHTS_FILE).open("r+b") as f:
        f.truncate(1000)

    def no_hashing(path: Path) -> str:
        raise AssertionError(f"hashed {path} although its size is wrong")

    monkeypatch.setattr("rmserve.artifact.folder.sha256_file", no_hashing)
    with pytest.raises(ArtifactError, match=f"{WEIGHTS_FILE}: 1000 bytes, the manifest says 1024"):
        read_manifest(external)


def test_missing_weights_are_named(external: Path) -> None:
    (external / WEIGHTS_FILE).unlink()
    with pytest.raises(ArtifactError, match=f"missing file {WEIGHTS_FILE}"):
        read_manifest(external)


def test_unlisted_external_data_is_refused(tmp_path: Path) -> None:
    """What the old exporter wrote: model.onnx pointing at weights the manifest never listed."""
    external_model(tmp_path, location="backbone.embed_tokens.weight")
    write_artifact(tmp_path, [MODEL_FILE, TOKENIZER_FILE])
    with pytest.raises(ArtifactError, match=r"loads external data from backbone\.embed_tokens"):
        read_manifest(tmp_path)


def test_missing_file_is_named(folder: Path) -> None:
    (folder / TOKENIZER_FILE).unlink()
    with pytest.raises(ArtifactError, match=f"missing file {TOKENIZER_FILE}"):
        read_manifest(folder)


def test_invalid_field_is_named(folder: Path) -> None:
    path = folder / MANIFEST_FILE
    path.write_text(path.read_text().replace('"std": 2.0', '"std": 0.0'))
    with pytest.raises(ArtifactError, match=r"normalization\.std"):
        read_manifest(folder)


def test_format_2_needs_sizes(folder: Path) -> None:
    path = folder / MANIFEST_FILE
    raw = json.loads(path.read_text())
    del raw["files"][TOKENIZER_FILE]["bytes"]
    path.write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match=f"no size recorded for {TOKENIZER_FILE}"):
        read_manifest(folder)


def test_format_1_is_still_read(folder: Path) -> None:
    path = folder / MANIFEST_FILE
    raw = json.loads(path.read_text())
    raw["format_version"] = 1
    raw["files"] = {name: entry["sha256"] for name, entry in raw["files"].items()}
    for field in ("dtype", "parameters", "parity"):
        del raw[field]
    path.write_text(json.dumps(raw))
    manifest = read_manifest(folder)
    assert manifest.files[MODEL_FILE].bytes is None
    assert manifest.dtype == "fp32" and manifest.parity is None


def test_unknown_format_is_named(folder: Path) -> None:
    path = folder / MANIFEST_FILE
    path.write_text(path.read_text().replace('"format_version": 2', '"format_version": 3'))
    with pytest.raises(ArtifactError, match="format_version 3 is not supported"):
        read_manifest(folder)
