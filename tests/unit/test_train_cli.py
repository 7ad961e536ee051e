"""The training subcommands' user-facing behaviour: JSON last line, one-line errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

Cli = Callable[[list[str]], tuple[int, list[str]]]


def test_demo_data_prints_paths(rmserve_cli: Cli, tmp_path: Path) -> None:
    code, lines = rmserve_cli(
        ["demo-data", "--out", str(tmp_path), "--train", "20", "--eval", "10"]
    )
    assert code == 0
    result = json.loads(lines[-1])
    assert Path(result["train"]) == (tmp_path / "train.jsonl").resolve()
    assert len(Path(result["eval"]).read_text().splitlines()) == 10


def test_malformed_training_data_is_one_line_error(rmserve_cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": 3}\n'
    )
    argv = [
        "train",
        "--train-data",
        str(bad),
        "--eval-data",
        str(bad),
        "--out",
        str(tmp_path / "a"),
    ]
    with pytest.raises(SystemExit) as exc:
        rmserve_cli([*argv, "--base-model", "tiny"])
    message = str(exc.value)
    assert message.startswith("rmserve train: error:")
    assert "bad.jsonl" in message and ":2" in message
    assert not (tmp_path / "a").exists()


def test_unknown_base_model_is_one_line_error(rmserve_cli: Cli, tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    argv = ["train", "--train-data", str(data), "--eval-data", str(data), "--out", str(tmp_path)]
    with pytest.raises(SystemExit, match="rmserve train: error: --base-model 'nope'"):
        rmserve_cli([*argv, "--base-model", "nope"])
