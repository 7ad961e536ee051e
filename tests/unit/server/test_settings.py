"""ServerSettings: defaults, RMSERVE_ env vars, `rmserve serve` flags and range errors."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from rmserve.cli_args import settings_from_args
from rmserve.server import cli as server_cli
from rmserve.server.model_build import core_config
from rmserve.server.settings import ServerSettings


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rmserve")
    server_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def serve_settings(argv: list[str]) -> ServerSettings:
    return settings_from_args(ServerSettings, parse(["serve", *argv]))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RMSERVE_"):
            monkeypatch.delenv(name)


def test_documented_defaults() -> None:
    s = ServerSettings(artifact=Path("/models/rm"))
    assert (s.host, s.port, s.metrics_port, s.provider) == ("0.0.0.0", 50051, 9400, "auto")
    assert s.max_queue_delay_ms == 0.0
    assert s.length_correlation_window == 1024
    assert s.max_request_pairs >= 1000 and s.max_queue_pairs >= s.max_request_pairs
    assert all(field.description for field in ServerSettings.model_fields.values())


def test_env_then_flags_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RMSERVE_ARTIFACT", "/from/env")
    monkeypatch.setenv("RMSERVE_PORT", "6000")
    monkeypatch.setenv("RMSERVE_MAX_BATCH_SIZE", "8")
    s = serve_settings(["--port", "7000", "--provider", "cpu"])
    assert (s.artifact, s.port, s.max_batch_size, s.provider) == (Path("/from/env"), 7000, 8, "cpu")


@pytest.mark.parametrize(
    ("flag", "value", "env"),
    [
        ("--port", "70000", "RMSERVE_PORT"),
        ("--metrics-port", "-1", "RMSERVE_METRICS_PORT"),
        ("--max-batch-size", "0", "RMSERVE_MAX_BATCH_SIZE"),
        ("--max-batch-tokens", "0", "RMSERVE_MAX_BATCH_TOKENS"),
        ("--max-padding-ratio", "0.5", "RMSERVE_MAX_PADDING_RATIO"),
        ("--max-queue-delay-ms", "-1", "RMSERVE_MAX_QUEUE_DELAY_MS"),
        ("--grace-seconds", "-3", "RMSERVE_GRACE_SECONDS"),
        ("--max-message-bytes", "10", "RMSERVE_MAX_MESSAGE_BYTES"),
        ("--warmup-runs", "-1", "RMSERVE_WARMUP_RUNS"),
        ("--max-request-pairs", "20000", "RMSERVE_MAX_REQUEST_PAIRS"),  # over max_queue_pairs
        ("--length-correlation-window", "1", "RMSERVE_LENGTH_CORRELATION_WINDOW"),
        ("--length-correlation-window", "2000000", "RMSERVE_LENGTH_CORRELATION_WINDOW"),
    ],
)
def test_range_errors_name_the_flag_and_env_var(flag: str, value: str, env: str) -> None:
    with pytest.raises(SystemExit) as info:
        serve_settings(["--artifact", "/a", flag, value])
    message = str(info.value)
    assert flag in message and env in message


def test_artifact_is_required() -> None:
    with pytest.raises(SystemExit) as info:
        serve_settings([])
    assert "--artifact" in str(info.value) and "RMSERVE_ARTIFACT" in str(info.value)


def test_unknown_provider_is_refused() -> None:
    with pytest.raises(SystemExit):
        parse(["serve", "--artifact", "/a", "--provider", "tpu"])


def test_core_config_carries_the_batching_settings() -> None:
    s = ServerSettings(
        artifact=Path("/a"), max_batch_size=12, max_batch_tokens=999, max_queue_delay_ms=5.0
    )
    config = core_config(s)
    assert (config.limits.max_batch_size, config.limits.max_batch_tokens) == (12, 999)
    assert config.limits.max_queue_delay_s == pytest.approx(0.005)
    assert (config.max_queue_pairs, config.max_request_pairs) == (16384, 4096)


def test_the_caps_policy_with_its_caps_is_the_default_and_still_accepted() -> None:
    s = ServerSettings(artifact=Path("/a"))
    assert s.batch_policy == "caps"
    config = core_config(s)
    assert (config.limits.max_batch_tokens, config.limits.max_padding_ratio) == (1024, 1.05)
    assert serve_settings(["--artifact", "/a", "--batch-policy", "caps"]).batch_policy == "caps"


@pytest.mark.parametrize("policy", ["measured", "analytic"])
def test_the_removed_cost_policies_are_refused_by_name(
    policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit) as info:
        serve_settings(["--artifact", "/a", "--batch-policy", policy])
    message = str(info.value)
    assert "--batch-policy" in message and "RMSERVE_BATCH_POLICY" in message
    assert f"batch_policy {policy!r} was removed" in message
    monkeypatch.setenv("RMSERVE_BATCH_POLICY", policy)
    with pytest.raises(ValueError, match=f"batch_policy {policy!r} was removed"):
        ServerSettings(artifact=Path("/a"))


def test_an_unknown_batch_policy_is_refused() -> None:
    with pytest.raises(SystemExit, match="batch_policy must be 'caps', got 'fastest'"):
        serve_settings(["--artifact", "/a", "--batch-policy", "fastest"])


def test_truncation_is_cut_unless_set_to_refuse(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert core_config(ServerSettings(artifact=Path("/a"))).truncation == "cut"
    assert serve_settings(["--artifact", "/a", "--truncation", "refuse"]).truncation == "refuse"
    monkeypatch.setenv("RMSERVE_TRUNCATION", "refuse")
    assert core_config(ServerSettings(artifact=Path("/a"))).truncation == "refuse"
    with pytest.raises(SystemExit):
        serve_settings(["--artifact", "/a", "--truncation", "drop"])
    assert "--truncation: invalid choice: 'drop'" in capsys.readouterr().err


def test_long_batch_workers_and_the_warm_up_budget_reach_the_core() -> None:
    s = ServerSettings(artifact=Path("/a"))
    assert (core_config(s).long_batch_workers, core_config(s).warmup_budget_s) == (0, 60.0)
    s = serve_settings(
        ["--artifact", "/a", "--long-batch-workers", "2", "--warmup-budget-seconds", "5"]
    )
    assert (core_config(s).long_batch_workers, core_config(s).warmup_budget_s) == (2, 5.0)
