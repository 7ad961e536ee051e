"""Refresh the committed lock (``locks/*.txt``) from ``pyproject.toml`` with uv.

    python scripts/lock.py            # re-resolve, keeping today's pins where they still fit
    python scripts/lock.py --upgrade  # move every pin to the newest release the ranges allow

Each locked set is one environment the project creates (see ``SETS``): exact versions and
sha256 hashes of every package, for linux x86_64 and the set's Python. Installers run
``pip install --require-hashes --no-deps -r locks/<set>.txt``; ``pyproject.toml`` keeps the
compatible ranges for people who install rmserve into their own environment.
tests/project/test_lock.py fails when a requirement in ``pyproject.toml`` has no fitting pin here.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "locks"
PLATFORM = "x86_64-manylinux_2_28"
# torch==2.13.0's CPU build lies on this disk (pip finds it through its find-links setting);
# PyPI's torch is a multi-GB CUDA build.
FIND_LINKS = "/opt/wheels"


@dataclass(frozen=True)
class LockSet:
    """One environment: ``pyproject.toml`` with ``extras`` plus the ``inputs`` files."""

    name: str
    python: str
    extras: tuple[str, ...]
    inputs: tuple[str, ...]
    used_by: str

    @property
    def path(self) -> Path:
        return LOCKS / f"{self.name}-py{self.python}.txt"


SETS = (
    LockSet("serve", "3.11", (), ("build.in",), "Dockerfile, CPU variant"),
    LockSet("cuda", "3.11", ("cuda",), ("build.in",), "Dockerfile, GPU variant"),
    LockSet("train", "3.11", ("train",), ("build.in",), "scripts/demo.sh"),
    LockSet("dev", "3.11", ("train", "dev"), ("build.in",), "scripts/test.sh, .ci/run"),
    LockSet("gpu", "3.12", (), ("gpu.in",), "bench/gpu_prepare.sh (the GPU machine)"),
)


def compile_set(lock: LockSet, upgrade: bool) -> None:
    command = [
        sys.executable, "-m", "uv", "pip", "compile", "--quiet",
        str(ROOT / "pyproject.toml"), *(str(LOCKS / i) for i in lock.inputs),
        *(f"--extra={e}" for e in lock.extras),
        f"--python-version={lock.python}", f"--python-platform={PLATFORM}",
        "--generate-hashes", f"--find-links={FIND_LINKS}",
        "--custom-compile-command=python scripts/lock.py",
        f"--output-file={lock.path}",
        *(["--upgrade"] if upgrade else []),
    ]  # fmt: skip
    subprocess.run(command, check=True, cwd=ROOT)
    # uv names the input files by absolute path in its "via" notes; keep the lock machine-free
    text = lock.path.read_text().replace(f"{ROOT}/", "")
    lock.path.write_text(f"# {lock.name}: {lock.used_by}\n{text}")
    print(f"wrote {lock.path.relative_to(ROOT)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--upgrade", action="store_true", help="newest releases the ranges allow")
    args = parser.parse_args()
    for lock in SETS:
        compile_set(lock, args.upgrade)
    return 0


if __name__ == "__main__":
    sys.exit(main())
