"""The committed lock agrees with pyproject.toml: every requirement of every locked set has a
pin that satisfies it (scripts/lock.py refreshes the lock when this fails)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.scripts_loader import ROOT, load_script

lock_script = load_script("lock")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", re.M)


def pins(lock_file: Path) -> dict[str, str]:
    text = lock_file.read_text()
    assert "--hash=sha256:" in text, f"{lock_file.name} has no hashes"
    return {canonicalize_name(name): version for name, version in PIN.findall(text)}


def requirements(lock: object, pyproject: dict[str, object]) -> list[Requirement]:
    """What the set asks for: pyproject's dependencies, its extras, its input files."""
    project = pyproject["project"]
    assert isinstance(project, dict)
    lines = list(project["dependencies"])
    for extra in lock.extras:  # type: ignore[attr-defined]
        lines += project["optional-dependencies"][extra]
    for name in lock.inputs:  # type: ignore[attr-defined]
        text = (lock_script.LOCKS / name).read_text()
        lines += [line for line in text.splitlines() if line and not line.startswith("#")]
    return [Requirement(line) for line in lines]


def unmet(lock: object, pyproject: dict[str, object]) -> list[str]:
    locked = pins(lock.path)  # type: ignore[attr-defined]
    environment = {
        "python_version": lock.python,  # type: ignore[attr-defined]
        "python_full_version": f"{lock.python}.0",  # type: ignore[attr-defined]
        "sys_platform": "linux",
        "platform_machine": "x86_64",
        "platform_system": "Linux",
        "extra": "",
    }
    problems = []
    for requirement in requirements(lock, pyproject):
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        version = locked.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"{requirement}: not in the lock")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement}: the lock has {version}")
    return problems


@pytest.mark.parametrize("lock", lock_script.SETS, ids=lambda s: s.name)
def test_every_requirement_has_a_fitting_pin(lock: object) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert unmet(lock, pyproject) == [], "run `python scripts/lock.py`"


def test_a_dependency_added_without_refreshing_the_lock_is_caught() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pyproject["project"]["dependencies"].append("flask>=3")
    dev = next(s for s in lock_script.SETS if s.name == "dev")
    assert unmet(dev, pyproject) == ["flask>=3: not in the lock"]


def test_a_range_the_pin_left_is_caught() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = pyproject["project"]["dependencies"]
    deps[:] = [d for d in deps if not d.startswith("numpy")] + ["numpy<1"]
    serve = next(s for s in lock_script.SETS if s.name == "serve")
    assert [p.split(":")[0] for p in unmet(serve, pyproject)] == ["numpy<1"]


def test_the_lock_folder_holds_exactly_the_sets_and_the_installers_use_them() -> None:
    assert sorted(p.name for p in lock_script.LOCKS.glob("*.txt")) == sorted(
        s.path.name for s in lock_script.SETS
    )
    for lock in lock_script.SETS:
        assert "/work/" not in lock.path.read_text(), "a machine path leaked into the lock"
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "--require-hashes --no-deps -r" in setup
    install_venv = (ROOT / "docker" / "install-venv.sh").read_text()
    assert "--require-hashes --no-deps -r" in install_venv
    assert "gpu-py3.12.txt" in (ROOT / "bench" / "gpu_prepare.sh").read_text()
