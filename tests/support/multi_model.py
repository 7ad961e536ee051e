"""Artifacts for servers of several models: a tiny Qwen3 reward model (a decoder with a chat
template and a word-level tokenizer, unlike the tiny BERT-like encoder's WordPiece pairs)
imported with ``rmserve import-hf``, its normalisation stats measured on the demo eval data."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.qwen3_rm import write_qwen3_rm

Cli = Callable[[list[str]], tuple[int, list[str]]]
TINY_QWEN3 = {
    "vocab_size": 1000, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
    "max_position_embeddings": 512,
}  # fmt: skip


def import_qwen3(
    cli: Cli, out: Path, eval_data: Path, name: str, version: str, seed: int = 0, **shape: Any
) -> Path:
    """A tiny Qwen3 RM (random weights from ``seed``) as an artifact in ``out``; ``cli`` runs
    ``rmserve import-hf`` (the ``rmserve_cli`` fixture)."""
    hf = out.with_name(out.name + "-hf")
    write_qwen3_rm(hf, seed=seed, **{**TINY_QWEN3, **shape})
    code, lines = cli(
        ["import-hf", "--model", str(hf), "--out", str(out), "--eval-data", str(eval_data),
         "--name", name, "--version", version, "--max-length", "128"]
    )  # fmt: skip
    assert code == 0, lines
    assert json.loads(lines[-1])["version"] == version
    return out
