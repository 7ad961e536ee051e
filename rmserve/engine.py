"""The scoring engine: an onnxruntime session over an artifact. No torch, no protocol."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import onnxruntime as ort

from rmserve.artifact import MODEL_FILE, TOKENIZER_FILE, ArtifactError, Manifest, read_manifest
from rmserve.cuda_libs import missing_cuda_libraries
from rmserve.preprocess import PreparedPair, Preprocessor, load_tokenizer, pad_batch

log = logging.getLogger(__name__)

ProviderChoice = Literal["auto", "cuda", "cpu"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class EngineError(Exception):
    """The engine could not score a batch."""


class Engine(Protocol):
    """What the serving core needs from an engine (tests inject failing or slow ones)."""

    @property
    def provider(self) -> str:
        """The execution provider that really runs, e.g. ``CPUExecutionProvider``."""
        ...

    def score(self, pairs: Sequence[PreparedPair]) -> np.ndarray:
        """Blocking: float32 rewards in pair order, [B] for a single model or [B, K] for an
        ensemble of K members. Called from one thread at a time."""
        ...


def _providers_for(choice: ProviderChoice) -> list[str]:
    available = ort.get_available_providers()
    if choice == "cpu":
        return [CPU]
    if CUDA not in available:
        if choice == "cuda":
            raise ArtifactError(
                f"provider 'cuda' requested but onnxruntime offers only {available} "
                "(install rmserve[cuda] and onnxruntime-gpu, or use --provider auto/cpu)"
            )
        return [CPU]
    missing = missing_cuda_libraries()
    if not missing:
        return [CUDA, CPU]
    reason = f"{', '.join(missing)} not found"
    if choice == "cuda":
        raise ArtifactError(
            f"provider 'cuda' requested but CUDA cannot load ({reason}; install rmserve[cuda] "
            "and an NVIDIA driver, or use --provider auto/cpu)"
        )
    log.info("CUDA not available (%s); using CPU", reason)
    return [CPU]


@dataclass(frozen=True)
class LoadedArtifact:
    folder: Path
    manifest: Manifest
    preprocessor: Preprocessor


def load_artifact(folder: Path | str) -> LoadedArtifact:
    folder = Path(folder)
    manifest = read_manifest(folder)
    tokenizer = load_tokenizer(folder / TOKENIZER_FILE)
    return LoadedArtifact(folder, manifest, Preprocessor(tokenizer, manifest.preprocessing))


def reward_shape(pairs: int, members: int) -> tuple[int, ...]:
    """The engine's output shape: [B] for a single model (``members`` 0), else [B, K]."""
    return (pairs,) if members == 0 else (pairs, members)


class OrtEngine:
    """Scores prepared pairs; ``score`` is blocking and thread-safe (ORT releases the GIL)."""

    def __init__(
        self,
        artifact: LoadedArtifact,
        provider: ProviderChoice = "auto",
        intra_op_threads: int = 0,
    ) -> None:
        self.artifact = artifact
        manifest = artifact.manifest
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(artifact.folder / MODEL_FILE), options, providers=_providers_for(provider)
        )
        self.provider = self.session.get_providers()[0]
        if provider == "cuda" and self.provider != CUDA:
            raise ArtifactError(
                f"provider 'cuda' requested but the CUDA provider did not load "
                f"(session runs on {self.provider}; are the CUDA 13 / cuDNN 9 libraries installed?)"
            )
        log.info("onnxruntime session on %s (requested %s)", self.provider, provider)
        self._check_signature(manifest)

    def _check_signature(self, manifest: Manifest) -> None:
        inputs = [i.name for i in self.session.get_inputs()]
        if sorted(inputs) != sorted(manifest.input_names):
            raise ArtifactError(
                f"model.onnx inputs {inputs} do not match manifest input_names "
                f"{manifest.input_names}"
            )
        outputs = self.session.get_outputs()
        names = [o.name for o in outputs]
        if manifest.output_name not in names:
            raise ArtifactError(
                f"model.onnx has no output '{manifest.output_name}' (outputs: {names})"
            )
        shape = next(o.shape for o in outputs if o.name == manifest.output_name)
        members = manifest.members
        if members == 0 and len(shape) != 1:
            raise ArtifactError(
                f"model.onnx output '{manifest.output_name}' has shape {shape}; rewards must be [B]"
            )
        columns = shape[1] if len(shape) == 2 else None
        if members and (len(shape) != 2 or (isinstance(columns, int) and columns != members)):
            raise ArtifactError(
                f"model.onnx output '{manifest.output_name}' has shape {shape}; the manifest's "
                f"{members} ensemble members need [B, {members}]"
            )

    def score(self, pairs: Sequence[PreparedPair]) -> np.ndarray:
        manifest = self.artifact.manifest
        feed = pad_batch(pairs, manifest.preprocessing.pad_token_id, manifest.input_names)
        (rewards,) = self.session.run([manifest.output_name], feed)
        rewards = np.asarray(rewards, dtype=np.float32)
        if rewards.shape != reward_shape(len(pairs), manifest.members):
            raise EngineError(
                f"engine returned rewards of shape {rewards.shape} for {len(pairs)} pairs"
            )
        return rewards

    def score_texts(
        self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 32
    ) -> np.ndarray:
        """Offline scoring (eval, tests): sorted by length in batches, returned in input order."""
        prepared = self.artifact.preprocessor.prepare_many(prompts, responses)
        return self.score_prepared(prepared, batch_size)

    def score_prepared(self, prepared: Sequence[PreparedPair], batch_size: int = 32) -> np.ndarray:
        """Offline scoring of tokenised pairs in batches sorted by length; input order back."""
        order = sorted(range(len(prepared)), key=lambda i: prepared[i].num_tokens)
        out = np.empty(reward_shape(len(prepared), self.artifact.manifest.members), np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            out[chunk] = self.score([prepared[i] for i in chunk])
        return out
