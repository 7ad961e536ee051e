"""A broken artifact never serves: `rmserve serve` refuses to start with a clear one-line reason
and a non-zero exit. Each broken artifact is a copy of the tiny one (weights inside model.onnx,
or in model.onnx.data for the weight-file defects) with exactly one defect (the manifest's sizes
and sha256s are re-written after a graph edit, so only the intended defect remains)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from onnx import helper

from rmserve.artifact.manifest import MODEL_FILE, TOKENIZER_FILE, WEIGHTS_FILE
from rmserve.engine.session import OrtEngine, load_artifact
from tests.support.artifact_copies import edited_copy, rewrite_digests

BOUND_S = 120.0


def remove_tokenizer(folder: Path) -> None:
    (folder / TOKENIZER_FILE).unlink()


def tamper_model(folder: Path) -> None:
    data = bytearray((folder / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the weights
    (folder / MODEL_FILE).write_bytes(bytes(data))


def tamper_weights(folder: Path) -> None:
    with (folder / WEIGHTS_FILE).open("r+b") as f:
        f.seek(f.seek(0, 2) // 2)
        byte = f.read(1)[0]
        f.seek(-1, 1)
        f.write(bytes([byte ^ 0x01]))


def truncate_weights(folder: Path) -> None:
    with (folder / WEIGHTS_FILE).open("r+b") as f:
        f.truncate(f.seek(0, 2) - 4096)


def remove_weights(folder: Path) -> None:
    (folder / WEIGHTS_FILE).unlink()


def rename_input(folder: Path) -> None:
    model = onnx.load(str(folder / MODEL_FILE))
    for graph_input in model.graph.input:
        if graph_input.name == "token_type_ids":
            graph_input.name = "segment_ids"
    for node in model.graph.node:
        node.input[:] = ["segment_ids" if n == "token_type_ids" else n for n in node.input]
    onnx.save(model, str(folder / MODEL_FILE))
    rewrite_digests(folder)


def output_b_by_1(folder: Path) -> None:
    model = onnx.load(str(folder / MODEL_FILE))
    (output,) = model.graph.output
    inner = "rewards_flat"
    for node in model.graph.node:
        node.output[:] = [inner if n == output.name else n for n in node.output]
    axes = helper.make_tensor("unsqueeze_axes", onnx.TensorProto.INT64, [1], [1])
    model.graph.initializer.append(axes)
    model.graph.node.append(helper.make_node("Unsqueeze", [inner, "unsqueeze_axes"], [output.name]))
    model.graph.output.pop()
    model.graph.output.append(
        helper.make_tensor_value_info(output.name, onnx.TensorProto.FLOAT, ["batch", 1])
    )
    onnx.save(model, str(folder / MODEL_FILE))
    rewrite_digests(folder)


DEFECTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing file": (remove_tokenizer, "missing file tokenizer.json"),
    "tampered sha256": (tamper_model, "does not match the manifest"),
    "wrong input name": (rename_input, "do not match manifest input_names"),
    "output not [B]": (output_b_by_1, "rewards must be [B]"),
    "tampered weights": (tamper_weights, f"{WEIGHTS_FILE}: sha256"),
    "truncated weights": (truncate_weights, "bytes, the manifest says"),
    "missing weights": (remove_weights, f"missing file {WEIGHTS_FILE}"),
}
WEIGHT_FILE_DEFECTS = {"tampered weights", "truncated weights", "missing weights"}


@pytest.fixture(scope="module")
def broken(
    tiny_artifact: Path, tiny_external_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    folders = {}
    for name, (defect, _) in DEFECTS.items():
        source = tiny_external_artifact if name in WEIGHT_FILE_DEFECTS else tiny_artifact
        folders[name] = edited_copy(source, tmp_path_factory.mktemp("broken") / "artifact", defect)
    return folders


def test_graph_edits_leave_a_loadable_model(broken: dict[str, Path]) -> None:
    """The edited graphs are valid ONNX with good digests: only the intended defect remains."""
    for name in ("wrong input name", "output not [B]"):
        folder = broken[name]
        onnx.checker.check_model(str(folder / MODEL_FILE))
        with pytest.raises(Exception, match=DEFECTS[name][1].replace("[B]", r"\[B\]")):
            OrtEngine(load_artifact(folder), provider="cpu")


def serve_argv(folder: Path) -> list[str]:
    return [
        sys.executable, "-m", "rmserve.cli", "serve", "--artifact", str(folder),
        "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--provider", "cpu",
    ]  # fmt: skip


def test_serve_refuses_each_broken_artifact(broken: dict[str, Path]) -> None:
    processes = {  # in parallel: each start-up imports onnxruntime
        name: subprocess.Popen(
            serve_argv(folder), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name, folder in broken.items()
    }
    for name, process in processes.items():
        try:
            _, err = process.communicate(timeout=BOUND_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode != 0, (name, err)
        assert "Traceback" not in err, (name, err)
        assert "SERVING" not in err, (name, err)  # it never reported SERVING
        reason = err.strip().splitlines()[-1]
        assert reason.startswith("rmserve serve: "), (name, reason)
        assert DEFECTS[name][1] in reason, (name, reason)


def test_serve_refuses_a_memory_limit_too_small_for_one_request(tiny_artifact: Path) -> None:
    """64 MiB cannot hold the runtime, the model and one request of max_message_bytes."""
    argv = [*serve_argv(tiny_artifact), "--memory-limit-bytes", str(64 * 1024 * 1024)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = process.communicate(timeout=BOUND_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 1, err
    assert "Traceback" not in err and "SERVING" not in err, err
    reason = err.strip().splitlines()[-1]
    assert reason.startswith("rmserve serve: memory limit 67108864 bytes is under"), reason
    assert "raise the limit or lower those settings" in reason, reason
