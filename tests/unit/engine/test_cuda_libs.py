"""Whether the CUDA provider can load is decided by loading its libraries, never by asking
onnxruntime (which prints ERROR lines before it falls back)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmserve.engine import cuda_libs
from rmserve.engine.cuda_libs import (
    CUDNN_LIBRARY,
    DRIVER_LIBRARY,
    missing_cuda_libraries,
    required_libraries,
)


class FakeLoader:
    """``ctypes.CDLL`` over a set of loadable names or paths; records every attempt."""

    def __init__(self, loadable: set[str]) -> None:
        self.loadable = loadable
        self.attempts: list[str] = []

    def __call__(self, name: str) -> object:
        self.attempts.append(name)
        if name not in self.loadable:
            raise OSError(f"{name}: cannot open shared object file")
        return object()


def test_all_libraries_loadable_means_nothing_missing() -> None:
    loader = FakeLoader(set(required_libraries("13")) | {CUDNN_LIBRARY})
    assert missing_cuda_libraries("13", [], loader) == []
    assert CUDNN_LIBRARY in loader.attempts  # preloaded for the provider


def test_missing_libraries_are_named_in_order() -> None:
    loader = FakeLoader({"libcudart.so.13", DRIVER_LIBRARY})
    missing = missing_cuda_libraries("13", [], loader)
    assert missing == ["libcublasLt.so.13", "libcublas.so.13", "libcurand.so.10"]
    assert CUDNN_LIBRARY not in loader.attempts


def test_cudnn_is_optional() -> None:
    loader = FakeLoader(set(required_libraries("12")))
    assert missing_cuda_libraries("12", [], loader) == []


def test_pip_wheel_folders_are_tried_before_the_default_path(tmp_path: Path) -> None:
    folder = tmp_path / "nvidia" / "cu13" / "lib"
    folder.mkdir(parents=True)
    (folder / "libcublasLt.so.13").write_bytes(b"")
    in_wheel = str(folder / "libcublasLt.so.13")
    loader = FakeLoader((set(required_libraries("13")) - {"libcublasLt.so.13"}) | {in_wheel})
    assert missing_cuda_libraries("13", [folder], loader) == []
    assert loader.attempts[0] == in_wheel


def test_a_cpu_only_onnxruntime_build_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda_libs, "build_cuda_major", lambda: None)
    loader = FakeLoader(set(required_libraries("13")))
    assert missing_cuda_libraries(None, [], loader) == ["a CUDA build of onnxruntime"]
    assert loader.attempts == []


def test_wheel_folders_are_found_on_any_sys_path_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "site"  # e.g. torch's site-packages, onnxruntime-gpu in a --target
    for name in ("cublas", "cu13"):
        (elsewhere / "nvidia" / name / "lib").mkdir(parents=True)
    monkeypatch.syspath_prepend(str(elsewhere))
    found = cuda_libs.wheel_folders()
    assert elsewhere / "nvidia" / "cu13" / "lib" in found
    assert elsewhere / "nvidia" / "cublas" / "lib" in found
    assert len(found) == len(set(found))
