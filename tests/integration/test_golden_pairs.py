"""Golden pairs written by `rmserve train` and `rmserve export`, checked when a server loads the
artifact (their figures on the gauges at SERVING), and an artifact exported before golden pairs
existed still served, saying it has none."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from rmserve.artifact.folder import read_manifest
from rmserve.artifact.golden import GOLDEN_FILE
from rmserve.engine.session import OrtEngine, load_artifact
from rmserve.serving.golden import verify_golden
from rmserve.v1 import reward_pb2
from tests.support.artifact_copies import edited_copy, rewrite_digests
from tests.support.harness import make_settings, serving

ASYNC = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize("which", ["train", "export --external-data"])
def test_exports_carry_golden_pairs(
    which: str, tiny_artifact: Path, tiny_external_artifact: Path
) -> None:
    folder = tiny_artifact if which == "train" else tiny_external_artifact
    manifest = read_manifest(folder)
    assert GOLDEN_FILE in manifest.files  # hashed like every file
    loaded = load_artifact(folder)
    golden = loaded.golden
    assert golden is not None and golden.reference == "torch fp32" and golden.dtype == "fp32"
    assert golden.tolerance.atol == 1e-4 and golden.tolerance.rtol == 0.0
    assert 16 <= len(golden.pairs) <= 64
    lengths = [len(p.input_ids) for p in golden.pairs]
    assert min(lengths) <= 4 and max(lengths) == manifest.preprocessing.max_length
    assert any(p.truncated for p in golden.pairs) and ("", "") in {
        (p.prompt, p.response) for p in golden.pairs
    }
    for pair in golden.pairs:  # the recorded tokens are what the preprocessor gives the texts
        again = loaded.preprocessor.prepare(pair.prompt, pair.response)
        assert again.input_ids.tolist() == pair.input_ids
    report = verify_golden(OrtEngine(loaded, provider="cpu", intra_op_threads=1), loaded)
    assert report is not None and report.ok and report.max_abs_diff <= 1e-4
    assert manifest.parity is not None and manifest.parity.max_abs_diff is not None
    assert report.max_abs_diff <= max(manifest.parity.max_abs_diff, 1e-5)


@ASYNC
async def test_load_check_figures_are_on_the_gauges(tiny_artifact: Path) -> None:
    model = read_manifest(tiny_artifact).name
    async with serving(make_settings(tiny_artifact)) as h:
        assert h.metric("rmserve_golden_checks_total", model=model, result="ok") == 1
        sample = h.server.metrics.registry.get_sample_value
        ratio = sample("rmserve_golden_drift_ratio", {"model": model})
        max_abs_diff = sample("rmserve_golden_max_abs_diff", {"model": model})
        assert ratio is not None and 0.0 <= ratio < 1.0
        assert max_abs_diff is not None and max_abs_diff == pytest.approx(ratio * 1e-4)
        assert h.server.golden is not None and h.server.golden.running  # the canary is on


@ASYNC
async def test_an_artifact_without_golden_pairs_still_serves(
    tiny_artifact: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def drop_golden_pairs(folder: Path) -> None:
        (folder / GOLDEN_FILE).unlink()
        rewrite_digests(folder)

    folder = edited_copy(tiny_artifact, tmp_path / "artifact", drop_golden_pairs)
    manifest = json.loads((folder / "manifest.json").read_text())
    with caplog.at_level(logging.INFO, logger="rmserve.serving.golden"):
        async with serving(make_settings(folder)) as h:
            reply = await h.stub.Score(reward_pb2.ScoreRequest(prompt="q", response="a"))
            assert h.server.golden is not None and h.server.golden.canary is None
            assert h.metric("rmserve_golden_checks_total", model=manifest["name"], result="ok") == 0
    assert reply.reward != 0.0
    assert "carries no golden pairs (exported before rmserve recorded them)" in caplog.text
