"""A K=3 ensemble of the tiny model, built: trained (``rmserve train --ensemble 3
--bootstrap``), rebuilt from its members (``rmserve ensemble``, inline and external weights),
and incompatible members refused naming the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rmserve.artifact.folder import read_manifest, write_manifest
from rmserve.engine.session import OrtEngine, load_artifact
from tests.support.ensemble_texts import (
    OFFLINE_TOL,
    TEXTS,
    TRAINING_BOUND_S,
    offline_member_rewards,
)

pytestmark = pytest.mark.timeout(TRAINING_BOUND_S)


@pytest.fixture(scope="module")
def offline_raw(tiny_ensemble: Any) -> np.ndarray:
    return offline_member_rewards(tiny_ensemble.members)


def test_training_wrote_three_different_members(
    tiny_ensemble: Any, offline_raw: np.ndarray
) -> None:
    manifest = read_manifest(tiny_ensemble.artifact)
    members = [read_manifest(m) for m in tiny_ensemble.members]
    assert manifest.ensemble is not None
    assert [m.version for m in manifest.ensemble] == [m.version for m in members]
    assert [m.normalization for m in manifest.ensemble] == [m.normalization for m in members]
    assert len(tiny_ensemble.summary["members"]) == 3 and tiny_ensemble.summary["finished"]
    assert 0.0 <= tiny_ensemble.summary["eval_accuracy"] <= 1.0
    assert manifest.parity is not None and manifest.parity.status == "checked"
    assert manifest.parity.max_abs_diff is not None and manifest.parity.max_abs_diff <= 1e-4
    # different seeds and resamples: no two members agree on every text
    for a in range(3):
        for b in range(a + 1, 3):
            assert np.max(np.abs(offline_raw[:, a] - offline_raw[:, b])) > 1e-3


def test_the_one_graph_scores_every_member(tiny_ensemble: Any, offline_raw: np.ndarray) -> None:
    engine = OrtEngine(load_artifact(tiny_ensemble.artifact), provider="cpu")
    together = engine.score_texts([p for p, _ in TEXTS], [r for _, r in TEXTS])
    assert together.shape == (len(TEXTS), 3)
    np.testing.assert_allclose(together, offline_raw, atol=OFFLINE_TOL, rtol=0)


def test_ensemble_command_rebuilds_the_trained_artifact(
    tiny_ensemble: Any, tmp_path: Path, rmserve_cli: Any
) -> None:
    members = [arg for m in tiny_ensemble.members for arg in ("--member", str(m))]
    code, lines = rmserve_cli(["ensemble", *members, "--out", str(tmp_path / "e")])
    assert code == 0, lines
    result = json.loads(lines[-1])
    trained = read_manifest(tiny_ensemble.artifact)
    assert result["version"] == read_manifest(tmp_path / "e").version
    assert result["members"] == [m.version for m in trained.ensemble or ()]
    assert read_manifest(tmp_path / "e").files == trained.files  # same graph, byte for byte


def test_external_data_members_combine(
    tiny_ensemble: Any, tmp_path: Path, rmserve_cli: Any
) -> None:
    members = [arg for m in tiny_ensemble.members for arg in ("--member", str(m))]
    out = tmp_path / "external"
    code, lines = rmserve_cli(["ensemble", *members, "--out", str(out), "--external-data"])
    assert code == 0, lines
    assert "model.onnx.data" in read_manifest(out).files
    prompts, responses = [p for p, _ in TEXTS], [r for _, r in TEXTS]
    a = OrtEngine(load_artifact(out), provider="cpu").score_texts(prompts, responses)
    b = OrtEngine(load_artifact(tiny_ensemble.artifact), provider="cpu").score_texts(
        prompts, responses
    )
    np.testing.assert_array_equal(a, b)


def test_incompatible_members_are_refused_naming_the_field(
    tiny_ensemble: Any, tmp_path: Path, rmserve_cli: Any
) -> None:
    odd = tmp_path / "odd"
    shutil.copytree(tiny_ensemble.members[1], odd)
    manifest = read_manifest(odd)
    shorter = manifest.preprocessing.model_copy(update={"max_length": 64})
    write_manifest(odd, manifest.model_copy(update={"preprocessing": shorter}))
    argv = ["ensemble", "--member", str(tiny_ensemble.members[0]), "--member", str(odd)]
    with pytest.raises(SystemExit, match=r"differs from .* in preprocessing\.max_length: 64 vs"):
        rmserve_cli([*argv, "--out", str(tmp_path / "e")])
    argv = ["ensemble", "--member", str(tiny_ensemble.artifact), "--member", str(odd)]
    with pytest.raises(SystemExit, match="is already an ensemble"):
        rmserve_cli([*argv, "--out", str(tmp_path / "e")])
    assert not (tmp_path / "e").exists()
