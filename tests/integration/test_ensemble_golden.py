"""Ensemble artifacts carry golden pairs too: `rmserve train --ensemble` combines its members'
(each column the member's own torch fp32 reward), shared heads export theirs as [K] rewards;
both pass their load check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rmserve.engine.session import OrtEngine, load_artifact
from rmserve.serving.golden import verify_golden


def test_combined_ensemble_has_its_members_golden_pairs(tiny_ensemble: Any) -> None:
    loaded = load_artifact(tiny_ensemble.artifact)
    golden = loaded.golden
    assert golden is not None and golden.members == len(tiny_ensemble.members) == 3
    assert len(golden.pairs) >= 16
    for k, member in enumerate(tiny_ensemble.members):
        own = load_artifact(Path(member)).golden
        assert own is not None
        rewards = {(p.prompt, p.response): p.reward for p in own.pairs}
        for pair in golden.pairs:
            assert isinstance(pair.reward, list)
            assert pair.reward[k] == rewards[(pair.prompt, pair.response)]
    report = verify_golden(OrtEngine(loaded, provider="cpu", intra_op_threads=1), loaded)
    assert report is not None and report.ok


def test_shared_heads_export_golden_pairs_per_member(tiny_shared_ensemble: Any) -> None:
    loaded = load_artifact(tiny_shared_ensemble.artifact)
    golden = loaded.golden
    assert golden is not None and golden.members == loaded.manifest.members >= 2
    report = verify_golden(OrtEngine(loaded, provider="cpu", intra_op_threads=1), loaded)
    assert report is not None and report.ok
