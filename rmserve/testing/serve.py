"""``python -m rmserve.testing.serve [serve flags]``: ``rmserve serve`` whose engine holds
every batch, warm-up included, until the process receives SIGUSR1. Tests of a real process use
it to see NOT_SERVING for exactly as long as they need, on a machine of any speed; the hold is
injected here, through the Python API, never by a switch the real server reads."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from rmserve.cli_args import add_settings_arguments, settings_from_args
from rmserve.engine.session import Engine, LoadedArtifact
from rmserve.server.app import RewardServer
from rmserve.server.cli import run_server
from rmserve.server.model_build import ort_engine
from rmserve.server.settings import ServerSettings
from rmserve.testing import ScriptedEngine

RELEASE_SIGNAL = signal.SIGUSR1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rmserve.testing.serve")
    add_settings_arguments(parser, ServerSettings)
    settings = settings_from_args(ServerSettings, parser.parse_args(argv))
    release = threading.Event()
    signal.signal(RELEASE_SIGNAL, lambda *_: release.set())

    def held_engine(artifact: LoadedArtifact, s: ServerSettings) -> Engine:
        engine = ScriptedEngine(ort_engine(artifact, s))
        engine.gate = release
        return engine

    return run_server(RewardServer(settings, held_engine))


if __name__ == "__main__":
    sys.exit(main())
