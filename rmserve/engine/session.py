"""The scoring engine: an onnxruntime session over an artifact. No torch, no protocol."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from rmserve.artifact.folder import read_manifest
from rmserve.artifact.golden import GoldenSet, read_golden
from rmserve.artifact.manifest import MODEL_FILE, TOKENIZER_FILE, ArtifactError, Manifest
from rmserve.engine.padding import pad_batch
from rmserve.engine.providers import CPU as CPU  # re-exported: the engine's callers name providers
from rmserve.engine.providers import CUDA as CUDA
from rmserve.engine.providers import CudaHost, probe_cuda_host, providers_for
from rmserve.engine.providers import ProviderChoice as ProviderChoice
from rmserve.text.preprocess import PreparedPair, Preprocessor, load_tokenizer

log = logging.getLogger(__name__)


class EngineError(Exception):
    """The engine could not score a batch."""


class Engine(Protocol):
    """What the serving core needs from an engine (tests inject failing or slow ones)."""

    @property
    def provider(self) -> str:
        """The execution provider that really runs, e.g. ``CPUExecutionProvider``."""
        ...

    @property
    def device(self) -> str:
        """Where the session computes: ``cpu``, or ``cuda:N`` (N: the CUDA device index)."""
        ...

    def score(self, pairs: Sequence[PreparedPair]) -> np.ndarray:
        """Blocking: float32 rewards in pair order, [B] for a single model or [B, K] for an
        ensemble of K members. Called from up to ``engine_workers`` threads at once."""
        ...


@dataclass(frozen=True)
class LoadedArtifact:
    folder: Path
    manifest: Manifest
    preprocessor: Preprocessor
    golden: GoldenSet | None = None  # its golden pairs (rmserve.serving.golden checks them)


def load_artifact(folder: Path | str) -> LoadedArtifact:
    folder = Path(folder)
    manifest = read_manifest(folder)
    tokenizer = load_tokenizer(folder / TOKENIZER_FILE)
    preprocessor = Preprocessor(tokenizer, manifest.preprocessing)
    return LoadedArtifact(folder, manifest, preprocessor, read_golden(folder, manifest))


SessionFactory = Callable[..., Any]  # onnxruntime.InferenceSession, or a test double


def reward_shape(pairs: int, members: int) -> tuple[int, ...]:
    """The engine's output shape: [B] for a single model (``members`` 0), else [B, K]."""
    return (pairs,) if members == 0 else (pairs, members)


class OrtEngine:
    """Scores prepared pairs; ``score`` is blocking and thread-safe (ORT releases the GIL).

    Every run goes through an IO binding, on the CPU as on CUDA (one code path, so the CPU
    tests run the one a GPU uses): the padded inputs are bound from numpy (``bind_cpu_input``:
    on CUDA the one host-to-device copy they need, made before the run; on the CPU no copy),
    and the reward output is allocated by onnxruntime on the session's device and copied to
    the host once, [B] floats, after the run (``copy_outputs_to_cpu``).
    """

    def __init__(
        self,
        artifact: LoadedArtifact,
        provider: ProviderChoice = "auto",
        intra_op_threads: int = 0,
        gpu_device_id: int = 0,
        session_factory: SessionFactory = ort.InferenceSession,
        probe: Callable[[], CudaHost] = probe_cuda_host,
    ) -> None:
        self.artifact = artifact
        manifest = artifact.manifest
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = providers_for(provider, gpu_device_id, probe)
        self.session = session_factory(
            str(artifact.folder / MODEL_FILE), options, providers=providers
        )
        self.provider: str = self.session.get_providers()[0]
        if provider == "cuda" and self.provider != CUDA:
            raise ArtifactError(
                f"provider 'cuda' requested but the CUDA provider did not load "
                f"(session runs on {self.provider}; are the CUDA 13 / cuDNN 9 libraries installed?)"
            )
        on_cuda = self.provider == CUDA
        self._device_type, self._device_id = ("cuda", gpu_device_id) if on_cuda else ("cpu", 0)
        self.device = f"cuda:{gpu_device_id}" if on_cuda else "cpu"
        log.info(
            "onnxruntime session on %s, device %s (requested %s); %s weights",
            self.provider, self.device, provider, manifest.dtype,
        )  # fmt: skip
        if on_cuda:
            log.info("CUDA provider options: %s", self.session.get_provider_options().get(CUDA))
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
        binding = self.session.io_binding()
        for name, array in feed.items():
            binding.bind_cpu_input(name, array)
        binding.bind_output(manifest.output_name, self._device_type, self._device_id)
        self.session.run_with_iobinding(binding)
        (rewards,) = binding.copy_outputs_to_cpu()
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
