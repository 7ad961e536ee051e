"""golden.json: written and read back unchanged, hashed like every artifact file, and refused
with the field named when it is malformed, unlisted, or does not fit the model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rmserve.artifact.folder import artifact_files, read_manifest
from rmserve.artifact.golden import (
    GOLDEN_FILE,
    GoldenPair,
    GoldenSet,
    GoldenTolerance,
    read_golden,
    write_golden,
)
from rmserve.artifact.manifest import MODEL_FILE, TOKENIZER_FILE, ArtifactError, Manifest
from tests.unit.artifact.test_manifest import write_artifact

TOLERANCE = GoldenTolerance(atol=1e-4, basis="the fp32 export check's bound")


def pair(reward: float | list[float] = 1.5, prompt: str = "q", response: str = "é ✓") -> GoldenPair:
    return GoldenPair(
        prompt=prompt, response=response, input_ids=[101, 7, 102, 9, 102],
        token_type_ids=[0, 0, 0, 1, 1], truncated=False, response_truncated=False, reward=reward,
    )  # fmt: skip


GOLDEN = GoldenSet(
    reference="torch fp32",
    dtype="fp32",
    tolerance=TOLERANCE,
    pairs=[pair(1.5), pair(-0.25, "", ""), pair(3.0, "context " * 50, "kept")],
)


def golden_artifact(folder: Path, golden: GoldenSet = GOLDEN) -> Manifest:
    (folder / MODEL_FILE).write_bytes(b"\x08\x07")  # ModelProto: ir_version 7, nothing else
    (folder / TOKENIZER_FILE).write_text('{"version": "1.0"}', encoding="utf-8")
    write_golden(folder, golden)
    return write_artifact(folder, artifact_files(folder))


def test_round_trip_is_hashed_in_the_manifest(tmp_path: Path) -> None:
    golden_artifact(tmp_path)
    manifest = read_manifest(tmp_path)
    assert set(manifest.files) == {MODEL_FILE, TOKENIZER_FILE, GOLDEN_FILE}
    assert read_golden(tmp_path, manifest) == GOLDEN
    assert GOLDEN.members == 0
    lines = (tmp_path / GOLDEN_FILE).read_text(encoding="utf-8").splitlines()
    assert sum(line.lstrip().startswith('{"prompt"') for line in lines) == 3  # a pair a line


def test_a_changed_golden_file_fails_its_sha256(tmp_path: Path) -> None:
    golden_artifact(tmp_path)
    path = tmp_path / GOLDEN_FILE
    path.write_text(path.read_text().replace("1.5", "1.6"))
    with pytest.raises(ArtifactError, match=f"{GOLDEN_FILE}: sha256 .* does not match"):
        read_manifest(tmp_path)


def test_without_golden_pairs_there_is_none(tmp_path: Path) -> None:
    (tmp_path / MODEL_FILE).write_bytes(b"\x08\x07")
    manifest = write_artifact(tmp_path, [MODEL_FILE, TOKENIZER_FILE])
    assert read_golden(tmp_path, manifest) is None


def test_an_unlisted_golden_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / MODEL_FILE).write_bytes(b"\x08\x07")
    manifest = write_artifact(tmp_path, [MODEL_FILE, TOKENIZER_FILE])
    write_golden(tmp_path, GOLDEN)
    with pytest.raises(ArtifactError, match=f"{GOLDEN_FILE}: not listed in manifest.json"):
        read_golden(tmp_path, manifest)


def rewrite(folder: Path, edit: dict[str, object], where: int | None = None) -> Manifest:
    raw = json.loads((folder / GOLDEN_FILE).read_text())
    (raw if where is None else raw["pairs"][where]).update(edit)
    (folder / GOLDEN_FILE).write_text(json.dumps(raw))
    return write_artifact(folder, artifact_files(folder))


@pytest.mark.parametrize(
    ("edit", "where", "message"),
    [
        ({"token_type_ids": [0, 0]}, 1, "'pairs.1': Value error, 2 token_type_ids for 5 input_ids"),
        ({"input_ids": []}, 0, "'pairs.0.input_ids': List should have at least 1 item"),
        ({"reward": [1.0, 2.0]}, 2, "invalid golden set: Value error, every pair's reward has"),
        ({"tolerance": {"atol": -1.0, "basis": "x"}}, None, "'tolerance.atol'"),
        ({"format_version": 2}, None, "'format_version'"),
        ({"pairs": []}, None, "'pairs': List should have at least 1 item"),
    ],
)
def test_malformed_fields_are_named(
    tmp_path: Path, edit: dict[str, object], where: int | None, message: str
) -> None:
    golden_artifact(tmp_path)
    manifest = rewrite(tmp_path, edit, where)
    with pytest.raises(ArtifactError, match=f"{GOLDEN_FILE}: invalid ") as caught:
        read_golden(tmp_path, manifest)
    assert message in str(caught.value)


def test_golden_pairs_must_fit_the_model(tmp_path: Path) -> None:
    ensemble = GOLDEN.model_copy(update={"pairs": [pair([1.0, 2.0, 3.0])]})
    manifest = golden_artifact(tmp_path, ensemble)
    with pytest.raises(ArtifactError, match="3 reward\\(s\\) per pair, the model has 1"):
        read_golden(tmp_path, manifest)
    manifest = golden_artifact(tmp_path, GOLDEN.model_copy(update={"dtype": "int8"}))
    with pytest.raises(ArtifactError, match="tolerance for int8, the weights are fp32"):
        read_golden(tmp_path, manifest)


def test_not_json_is_refused(tmp_path: Path) -> None:
    golden_artifact(tmp_path)
    (tmp_path / GOLDEN_FILE).write_text("{not json")
    manifest = write_artifact(tmp_path, artifact_files(tmp_path))
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_golden(tmp_path, manifest)


def test_tolerance_in_words() -> None:
    assert TOLERANCE.describe() == "every |Δ| ≤ 1.0e-04 (the fp32 export check's bound)"
    fp16 = GoldenTolerance(atol=1e-2, rtol=1e-2, basis="fp16")
    assert fp16.describe() == "every |Δ| ≤ 1.0e-02 + 1e-02·|reference| (fp16)"
