"""``rmserve score``, ``prefer`` and ``loadtest`` are built on ``RewardClient``: against a real
TLS + bearer-token server on 127.0.0.1 they work with the ``RMSERVE_CLIENT_*`` environment and
fail clearly without the token; ``--timeout`` bounds every command."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rmserve import cli
from rmserve.engine.session import OrtEngine
from tests.support.certs import CertAuthority
from tests.support.harness import Harness, make_settings, scripted_factory, serving

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOKEN = "cli-test-token"


@pytest.fixture
async def secured(tiny_artifact: Path, ca: CertAuthority) -> AsyncIterator[Harness]:
    server = ca.issue("cli-server", "rmserve", server=True)
    settings = make_settings(
        tiny_artifact, tls_cert_file=server.cert, tls_key_file=server.key, auth_token=TOKEN
    )
    async with serving(settings) as harness:
        yield harness


@pytest.fixture
def client_env(monkeypatch: pytest.MonkeyPatch, ca: CertAuthority) -> pytest.MonkeyPatch:
    """The client environment of a trainer pod: CA and token, nothing on the command line."""
    monkeypatch.setenv("RMSERVE_CLIENT_TLS_CA_FILE", str(ca.pair.cert))
    monkeypatch.setenv("RMSERVE_CLIENT_TOKEN", TOKEN)
    monkeypatch.setenv("RMSERVE_CLIENT_MAX_ATTEMPTS", "1")
    return monkeypatch


async def rmserve(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = await asyncio.to_thread(cli.main, argv)
    out, err = capsys.readouterr()
    return code, out, err


def commands(harness: Harness, data: Path) -> dict[str, list[str]]:
    target = ["--target", f"127.0.0.1:{harness.server.port}"]
    return {
        "score": ["score", *target, "--prompt", "2+2?", "--response", "4"],
        "prefer": ["prefer", *target, "--prompt", "2+2?", "--response-a", "4", "--response-b", "5"],
        "loadtest": [
            "loadtest", *target, "--data", str(data), "--requests", "12", "--concurrency", "2",
        ],
    }  # fmt: skip


async def test_client_commands_reach_a_tls_token_server(
    secured: Harness,
    client_env: pytest.MonkeyPatch,
    demo_data_dir: Path,
    offline_engine: OrtEngine,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = commands(secured, demo_data_dir / "eval.jsonl")
    code, out, err = await rmserve(argv["score"], capsys)
    assert code == 0, err
    score = json.loads(out.strip().splitlines()[-1])
    (offline,) = offline_engine.score_texts(["2+2?"], ["4"])
    assert score["reward"] == pytest.approx(float(offline), abs=1e-5)
    assert score["truncated"] is False and score["num_tokens"] > 0

    code, out, err = await rmserve(argv["prefer"], capsys)
    assert code == 0, err
    prefer = json.loads(out.strip().splitlines()[-1])
    expected = 1 / (1 + math.exp(prefer["reward_b"] - prefer["reward_a"]))
    assert prefer["probability_a"] == pytest.approx(expected, abs=1e-6)
    assert prefer["reward_a"] == pytest.approx(score["reward"], abs=1e-5)

    code, out, err = await rmserve(argv["loadtest"], capsys)
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["codes"] == {"OK": 12} and summary["pairs"] == 12


@pytest.mark.parametrize("command", ["score", "prefer", "loadtest"])
async def test_client_commands_fail_clearly_without_the_token(
    command: str,
    secured: Harness,
    client_env: pytest.MonkeyPatch,
    demo_data_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client_env.delenv("RMSERVE_CLIENT_TOKEN")
    code, out, err = await rmserve(commands(secured, demo_data_dir / "eval.jsonl")[command], capsys)
    assert code == 1 and out == ""
    assert err.startswith(f"rmserve {command}: UNAUTHENTICATED") and "bearer token" in err
    assert secured.metric("rmserve_pairs_total") == 0  # nothing reached the model
    # and one refused call, not a load of them
    assert secured.metric("rmserve_unauthenticated_total") == 1


@pytest.mark.parametrize("command", ["score", "prefer", "loadtest"])
async def test_timeout_flag_bounds_every_command(
    command: str, tiny_artifact: Path, demo_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    built, factory = scripted_factory(gate_open=False)  # the engine holds every batch
    async with serving(make_settings(tiny_artifact), factory) as harness:
        try:
            argv = [*commands(harness, demo_data_dir / "eval.jsonl")[command], "--timeout", "0.5"]
            if command == "loadtest":
                argv += ["--requests", "1", "--concurrency", "1"]
            code, out, err = await rmserve(argv, capsys)
        finally:
            built[0].gate.set()
    if command == "loadtest":  # counted, not raised: a load test reports what the server did
        assert code == 0, err
        assert json.loads(out.strip().splitlines()[-1])["codes"] == {"DEADLINE_EXCEEDED": 1}
    else:
        assert code == 1 and err.startswith(f"rmserve {command}: DEADLINE_EXCEEDED"), err
