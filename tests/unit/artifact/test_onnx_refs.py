"""The wire-format scan finds exactly the external-data files onnx itself would load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from rmserve.artifact.onnx_refs import OnnxFormatError, external_data_locations


def array(value: float) -> np.ndarray:
    return np.full(512, value, dtype=np.float32)


def model_with_tensors_everywhere() -> onnx.ModelProto:
    """An initializer, a Constant node's tensor, and a tensor inside each If branch."""
    info = helper.make_tensor_value_info
    then_branch, else_branch = (
        helper.make_graph(
            [helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(array(3), n))],
            n,
            [],
            [info("b", onnx.TensorProto.FLOAT, [512])],
        )
        for n in ("then", "else")
    )
    nodes = [
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(array(2), "cv")),
        helper.make_node("Add", ["x", "w"], ["s"]),
        helper.make_node("Add", ["s", "c"], ["t"]),
        helper.make_node("If", ["flag"], ["u"], then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Add", ["t", "u"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [info("x", onnx.TensorProto.FLOAT, [512]), info("flag", onnx.TensorProto.BOOL, [])],
        [info("y", onnx.TensorProto.FLOAT, [512])], [numpy_helper.from_array(array(1), "w")],
    )  # fmt: skip
    return helper.make_model(graph)


def onnx_locations(path: Path) -> set[str]:
    model = onnx.load(str(path), load_external_data=False)
    from onnx.external_data_helper import _get_all_tensors

    return {ExternalDataInfo(t).location for t in _get_all_tensors(model) if uses_external_data(t)}


def test_one_file_for_all_tensors(tmp_path: Path) -> None:
    onnx.save_model(
        model_with_tensors_everywhere(), str(tmp_path / "m.onnx"), save_as_external_data=True,
        location="weights.bin", size_threshold=0, convert_attribute=True,
    )  # fmt: skip
    assert external_data_locations(tmp_path / "m.onnx") == {"weights.bin"}
    assert onnx_locations(tmp_path / "m.onnx") == {"weights.bin"}


def test_one_file_per_tensor_attributes_and_subgraphs_included(tmp_path: Path) -> None:
    onnx.save_model(
        model_with_tensors_everywhere(), str(tmp_path / "m.onnx"), save_as_external_data=True,
        all_tensors_to_one_file=False, size_threshold=0, convert_attribute=True,
    )  # fmt: skip
    expected = onnx_locations(tmp_path / "m.onnx")
    assert expected == {"w", "cv", "then", "else"}
    assert external_data_locations(tmp_path / "m.onnx") == expected


def test_inline_model_loads_nothing(tmp_path: Path) -> None:
    onnx.save_model(model_with_tensors_everywhere(), str(tmp_path / "m.onnx"))
    assert external_data_locations(tmp_path / "m.onnx") == set()


@pytest.mark.parametrize("data", [b"\x3a\xff\x01", b"\x3a\x05ab", b"\xff"])
def test_malformed_bytes_raise(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "m.onnx").write_bytes(data)
    with pytest.raises(OnnxFormatError):
        external_data_locations(tmp_path / "m.onnx")
