"""``rmserve ensemble`` refuses members that would not see the same inputs, naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rmserve.artifact.manifest import Manifest
from rmserve_training.ensemble.combine import EnsembleError, check_compatible

BASE: dict[str, Any] = {
    "format_version": 1,
    "name": "m",
    "version": "v",
    "backbone": "tiny",
    "architecture": "encoder",
    "input_names": ["input_ids", "attention_mask"],
    "pooling": "cls",
    "preprocessing": {"join": "pair", "max_length": 128, "pad_token_id": 0},
    "normalization": {"mean": 1.0, "std": 2.0},
    "optimization": "none",
    "files": {"model.onnx": "0" * 64, "tokenizer.json": "1" * 64},
}


def manifest(**changes: Any) -> Manifest:
    return Manifest.model_validate({**BASE, **changes})


FOLDERS = [Path("/a"), Path("/b")]


def test_members_that_differ_only_in_weights_and_stats_combine() -> None:
    other = manifest(version="w", normalization={"mean": -3.0, "std": 0.5}, pooling="mean")
    check_compatible(FOLDERS, [manifest(), other])


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"files": {"model.onnx": "0" * 64, "tokenizer.json": "2" * 64}}, "tokenizer.json"),
        ({"input_names": ["input_ids"]}, "input_names"),
        ({"preprocessing": {"join": "pair", "max_length": 64, "pad_token_id": 0}}, "max_length"),
        ({"preprocessing": {"join": "pair", "max_length": 128, "pad_token_id": 3}}, "pad_token_id"),
        (
            {
                "preprocessing": {
                    "join": "template",
                    "template": {"prefix": "<s>"},
                    "max_length": 128,
                    "pad_token_id": 0,
                }
            },
            "preprocessing.join",
        ),
    ],
)
def test_a_differing_field_is_named(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(EnsembleError, match=rf"member /b differs from /a in .*{field}"):
        check_compatible(FOLDERS, [manifest(), manifest(**changes)])


def test_one_member_or_an_ensemble_member_is_refused() -> None:
    with pytest.raises(EnsembleError, match="at least 2 members"):
        check_compatible(FOLDERS[:1], [manifest()])
    member = {"name": "x", "version": "x", "backbone": "t", "pooling": "cls"}
    stats = {"mean": 0.0, "std": 1.0}
    ensemble = manifest(
        normalization=stats,
        ensemble=[{**member, "normalization": stats}, {**member, "normalization": stats}],
    )
    with pytest.raises(EnsembleError, match="/b is already an ensemble"):
        check_compatible(FOLDERS, [manifest(), ensemble])
