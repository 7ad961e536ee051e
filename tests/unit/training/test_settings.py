"""TrainSettings: ranges checked, flags override env vars override defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from pydantic import ValidationError

from rmserve.cli_args import add_settings_arguments, settings_from_args
from rmserve_training.settings import TrainSettings

REQUIRED = ["--train-data", "t.jsonl", "--eval-data", "e.jsonl", "--out", "art"]


def parse(argv: list[str]) -> TrainSettings:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, TrainSettings)
    return settings_from_args(TrainSettings, parser.parse_args(argv))


def test_defaults_and_work_dir_sibling() -> None:
    settings = parse(REQUIRED)
    assert settings.base_model == "minilm"
    assert settings.resolved_work_dir() == Path("art.work")


def test_flag_overrides_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RMSERVE_TRAIN_EPOCHS", "7")
    monkeypatch.setenv("RMSERVE_TRAIN_LR", "0.01")
    settings = parse([*REQUIRED, "--lr", "0.002"])
    assert settings.epochs == 7
    assert settings.lr == 0.002


def test_range_error_names_flag_and_env() -> None:
    with pytest.raises(SystemExit, match="--batch-size / RMSERVE_TRAIN_BATCH_SIZE"):
        parse([*REQUIRED, "--batch-size", "0"])


def test_work_dir_must_differ_from_out() -> None:
    with pytest.raises(SystemExit, match="work_dir must differ from out"):
        parse([*REQUIRED, "--work-dir", "art"])


def test_recipe_defaults_and_head_lr_flag() -> None:
    settings = parse(REQUIRED)
    assert settings.max_length == 512  # all of MiniLM's positions: long dialogues keep turn one
    assert settings.head_lr is None and settings.resolved_head_lr() == settings.lr == 1e-4
    tuned = parse([*REQUIRED, "--lr", "2e-5", "--head-lr", "1e-3"])
    assert (tuned.lr, tuned.resolved_head_lr()) == (2e-5, 1e-3)
    with pytest.raises(SystemExit, match="--head-lr / RMSERVE_TRAIN_HEAD_LR"):
        parse([*REQUIRED, "--head-lr", "0"])


def test_label_smoothing_flag_env_and_range(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse(REQUIRED).label_smoothing == 0.0
    assert parse([*REQUIRED, "--label-smoothing", "0.1"]).label_smoothing == 0.1
    monkeypatch.setenv("RMSERVE_TRAIN_LABEL_SMOOTHING", "0.2")
    assert parse(REQUIRED).label_smoothing == 0.2
    for bad in ("0.5", "-0.1"):
        with pytest.raises(SystemExit, match="--label-smoothing / RMSERVE_TRAIN_LABEL_SMOOTHING"):
            parse([*REQUIRED, "--label-smoothing", bad])
    paths = {"train_data": "t.jsonl", "eval_data": "e.jsonl", "out": "art"}
    for value in (0.5, -0.1):
        with pytest.raises(ValidationError, match="label_smoothing"):
            TrainSettings.model_validate({**paths, "label_smoothing": value})
