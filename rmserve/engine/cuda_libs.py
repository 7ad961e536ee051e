"""Can onnxruntime's CUDA provider load here? Answer before asking onnxruntime for it.

Asked for a CUDA provider whose libraries are missing, onnxruntime prints ERROR lines to stderr
and falls back to CPU. We load the libraries the provider links against ourselves: from the
NVIDIA pip wheels (``rmserve[cuda]``) the way ``onnxruntime.preload_dlls`` does, else through
the default search path. Once loaded, onnxruntime finds them by name.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort

log = logging.getLogger(__name__)

DRIVER_LIBRARY = "libcuda.so.1"  # installed with the NVIDIA driver, never by pip
CUDNN_LIBRARY = "libcudnn.so.9"  # loaded by the provider only when an op needs it


def build_cuda_major() -> str | None:
    """The CUDA major version onnxruntime was built with (None for a CPU-only build)."""
    try:
        from onnxruntime.capi.build_and_package_info import cuda_version
    except ImportError:
        return None
    major = str(cuda_version).split(".")[0]
    return major if major.isdigit() else None


def required_libraries(cuda_major: str) -> list[str]:
    """What ``libonnxruntime_providers_cuda.so`` links against (its ELF NEEDED entries)."""
    return [
        f"libcublasLt.so.{cuda_major}",  # before libcublas, which needs it
        f"libcublas.so.{cuda_major}",
        "libcurand.so.10",
        f"libcudart.so.{cuda_major}",
        DRIVER_LIBRARY,
    ]


def wheel_folders() -> list[Path]:
    """``lib`` folders of the nvidia-* pip packages: beside onnxruntime first, then in every
    other ``sys.path`` folder (onnxruntime-gpu installed with ``--target`` next to a torch that
    brought the CUDA wheels)."""
    roots = [Path(ort.__file__).resolve().parent.parent]
    roots += [Path(entry).resolve() for entry in sys.path if entry]
    folders: list[Path] = []
    for root in dict.fromkeys(roots):
        nvidia = root / "nvidia"
        if nvidia.is_dir():
            folders += [f for f in sorted(nvidia.glob("*/lib")) if f not in folders]
    return folders


def open_library(
    name: str, folders: Sequence[Path], cdll: Callable[[str], object]
) -> object | None:
    """``name`` loaded from the first folder holding it, else by name; None when it cannot."""
    candidates = [str(folder / name) for folder in folders if (folder / name).is_file()]
    for candidate in [*candidates, name]:
        try:
            return cdll(candidate)
        except OSError:
            continue
    return None


def load_library(name: str, folders: Sequence[Path], cdll: Callable[[str], object]) -> bool:
    """Load ``name`` from the first folder holding it, else by name; True when it loaded."""
    return open_library(name, folders, cdll) is not None


def missing_cuda_libraries(
    cuda_major: str | None = None,
    folders: Sequence[Path] | None = None,
    cdll: Callable[[str], object] = ctypes.CDLL,
) -> list[str]:
    """Libraries the CUDA provider needs that cannot be loaded; empty when it can load."""
    major = cuda_major if cuda_major is not None else build_cuda_major()
    if major is None:
        return ["a CUDA build of onnxruntime"]
    search = list(folders) if folders is not None else wheel_folders()
    missing = [name for name in required_libraries(major) if not load_library(name, search, cdll)]
    if not missing:
        load_library(CUDNN_LIBRARY, search, cdll)  # optional: preloaded so the provider finds it
    return missing


def cuda_device_count(
    cuda_major: str | None = None,
    folders: Sequence[Path] | None = None,
    cdll: Callable[[str], object] = ctypes.CDLL,
) -> int | None:
    """CUDA devices this process can see (after ``CUDA_VISIBLE_DEVICES``), asked of the CUDA
    runtime the provider links against; 0 when the runtime reports an error (no device, driver
    too old); None when the runtime cannot be loaded to ask."""
    major = cuda_major if cuda_major is not None else build_cuda_major()
    if major is None:
        return None
    search = list(folders) if folders is not None else wheel_folders()
    runtime: Any = open_library(f"libcudart.so.{major}", search, cdll)
    if runtime is None:
        return None
    count = ctypes.c_int(0)
    status = runtime.cudaGetDeviceCount(ctypes.pointer(count))
    if status != 0:
        log.info("cudaGetDeviceCount failed with CUDA error %s: no usable CUDA device", status)
        return 0
    return count.value
