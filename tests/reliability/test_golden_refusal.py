"""An artifact changed after export with its manifest's sizes and sha256s re-written to match,
so that every other load check passes, is refused by its golden pairs: `rmserve serve` exits 1
with one line that names the drift and its figures. One copy has one weight of the reward head
moved, another has two tokens' ids swapped in tokenizer.json."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from rmserve.artifact.manifest import TOKENIZER_FILE
from rmserve.engine.session import OrtEngine, load_artifact
from tests.reliability.test_bad_artifact import BOUND_S, serve_argv
from tests.support.artifact_copies import edited_copy, move_a_head_weight, rewrite_digests


def swap_two_token_ids(folder: Path) -> None:
    tokenizer = json.loads((folder / TOKENIZER_FILE).read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["context"], vocab["response"] = vocab["response"], vocab["context"]
    (folder / TOKENIZER_FILE).write_text(json.dumps(tokenizer))
    rewrite_digests(folder)


CHANGES: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "weights": (
        move_a_head_weight,
        (
            "golden pairs drifted on CPUExecutionProvider: ",
            " beyond tolerance; worst pair ",
            "against the torch fp32 reference",
            "where 1.0e-04 is allowed; max |Δ| ",
            "(every |Δ| ≤ 1.0e-04 (the fp32 export check's bound))",
        ),
    ),
    "tokenizer": (
        swap_two_token_ids,
        ("tokenises differently than at export (input_ids[", "tokenizer.json"),
    ),
}


@pytest.fixture(scope="module")
def changed(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folders = {}
    for name, (change, _) in CHANGES.items():
        folders[name] = edited_copy(
            tiny_artifact, tmp_path_factory.mktemp("changed") / "artifact", change
        )
    return folders


def test_only_the_golden_pairs_can_tell(changed: dict[str, Path]) -> None:
    """The changed copies pass every other check: digests, sizes, the model's signature."""
    for folder in changed.values():
        artifact = load_artifact(folder)
        assert artifact.golden is not None
        OrtEngine(artifact, provider="cpu", intra_op_threads=1)


def test_serve_refuses_with_the_figures(changed: dict[str, Path]) -> None:
    processes = {
        name: subprocess.Popen(
            serve_argv(folder), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name, folder in changed.items()
    }
    for name, process in processes.items():
        try:
            _, err = process.communicate(timeout=BOUND_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 1, (name, err)
        assert "Traceback" not in err and "SERVING" not in err, (name, err)
        reason = err.strip().splitlines()[-1]
        assert reason.startswith(f"rmserve serve: {changed[name]}: "), (name, reason)
        for part in CHANGES[name][1]:
            assert part in reason, (name, part, reason)
