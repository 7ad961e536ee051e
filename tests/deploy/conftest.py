"""Fixtures for the deployment checks: rendered k8s manifests and a live `rmserve serve`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.k8s_render import VARIANTS, Manifest, render
from tests.support.live import LiveServer, start_server


@pytest.fixture(scope="session", params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest) -> tuple[str, list[Manifest]]:
    name = str(request.param)
    return name, render(VARIANTS[name])


@pytest.fixture(scope="session")
def gpu_manifests() -> list[Manifest]:
    return render(VARIANTS["gpu"])


@pytest.fixture(scope="session")
def cpu_manifests() -> list[Manifest]:
    return render(VARIANTS["cpu"])


@pytest.fixture(scope="session")
def long_context_manifests() -> list[Manifest]:
    return render(VARIANTS["long-context"])


@pytest.fixture(scope="session")
def long_context_cpu_manifests() -> list[Manifest]:
    return render(VARIANTS["long-context-cpu"])


@pytest.fixture(scope="session")
def live_server(
    tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """`rmserve serve` as the container runs it, on free loopback ports, SERVING."""
    log = tmp_path_factory.mktemp("live-server") / "rmserve.log"
    server = start_server(tiny_artifact, log)
    try:
        server.wait_serving()
        yield server
    finally:
        server.terminate()
