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


def test_demo_data_dialogue_format_writes_hh_dialogues(rmserve_cli: Cli, tmp_path: Path) -> None:
    code, lines = rmserve_cli(
        [
            "demo-data",
            "--out",
            str(tmp_path),
            "--train",
            "12",
            "--eval",
            "4",
            "--format",
            "dialogue",
        ]
    )
    assert code == 0
    text = Path(json.loads(lines[-1])["train"]).read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines()]
    assert len(rows) == 12
    for row in rows:
        assert "prompt" not in row and row["chosen"].startswith("\n\nHuman: ")
        assert row["chosen"].count("\n\nHuman: ") == row["turns"]


def test_demo_data_unknown_format_names_the_flag(
    rmserve_cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        rmserve_cli(["demo-data", "--out", str(tmp_path), "--format", "chat"])
    assert "--format: invalid choice: 'chat'" in capsys.readouterr().err
