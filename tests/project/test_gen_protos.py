"""scripts/gen_protos.py --check: stale only when the proto or the generated code changed, not
when another patch release of the generator writes another version number."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.scripts_loader import ROOT, load_script

gen_protos = load_script("gen_protos")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of protos/ and the committed generated code."""
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copytree(ROOT / "rmserve" / "v1", tmp_path / "rmserve" / "v1")
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def test_committed_code_is_current(tree: Path) -> None:
    assert gen_protos.stale_files(tree) == []


def test_another_generator_patch_release_is_not_stale(tree: Path) -> None:
    v1 = tree / "rmserve" / "v1"
    grpc_stub = (v1 / "reward_pb2_grpc.py").read_text()
    version = grpc_stub.split("GRPC_GENERATED_VERSION = '")[1].split("'")[0]
    edit(v1 / "reward_pb2_grpc.py", f"= '{version}'", "= '1.85.99'")
    edit(v1 / "reward_pb2.py", "# Protobuf Python Version: ", "# Protobuf Python Version: 9")
    edit(v1 / "reward_pb2.py", "Domain.PUBLIC,\n    ", "Domain.PUBLIC,\n    1")
    assert gen_protos.stale_files(tree) == []


def test_a_changed_proto_is_stale(tree: Path) -> None:
    edit(
        tree / "protos" / "rmserve" / "v1" / "reward.proto",
        "message Pair {",
        "message Pair {\n  bool x = 99;",
    )
    assert set(gen_protos.stale_files(tree)) >= {
        "rmserve/v1/reward_pb2.py",
        "rmserve/v1/reward_pb2.pyi",
    }


def test_an_edit_to_generated_code_is_stale(tree: Path) -> None:
    edit(
        tree / "rmserve" / "v1" / "reward_pb2_grpc.py",
        "GRPC_VERSION = grpc.__version__",
        "GRPC_VERSION = '9'",
    )
    assert gen_protos.stale_files(tree) == ["rmserve/v1/reward_pb2_grpc.py"]
