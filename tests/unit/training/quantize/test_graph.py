"""Pure pieces of ``rmserve quantize``: Spearman with ties, and the rewiring that gives
unquantised consumers their fp32 tensor back."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from rmserve_training.quantize.graph import fp32_for_unquantized_consumers
from rmserve_training.quantize.measure import average_ranks, spearman


def test_average_ranks_share_ties() -> None:
    assert average_ranks(np.array([10.0, 20.0, 20.0, 30.0])).tolist() == [1.0, 2.5, 2.5, 4.0]


def test_spearman_by_hand() -> None:
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(a, a**3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    # ranks of b: 1, 2, 3.5, 5, 3.5 -> Σ da·db = 8, Σ da² = 10, Σ db² = 9.5
    b = np.array([5.0, 6.0, 7.0, 8.0, 7.0])
    assert spearman(a, b) == pytest.approx(8 / np.sqrt(95.0))


def test_unquantized_consumer_reads_fp32_and_the_matmul_keeps_its_pair() -> None:
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.uint8), "z")
    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["x_q"], name="q"),
        helper.make_node("DequantizeLinear", ["x_q", "s", "z"], ["x_dq"], name="dq"),
        helper.make_node("MatMul", ["x_dq", "w"], ["m"], name="matmul"),
        helper.make_node("Add", ["x_dq", "m"], ["y"], name="residual"),
        helper.make_node("QuantizeLinear", ["y", "s", "z"], ["y_q"], name="unused_q"),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[scale, zero, weight],
    )  # fmt: skip
    model = helper.make_model(graph)
    assert fp32_for_unquantized_consumers(model, ["MatMul"]) == 1
    by_name = {n.name: n for n in model.graph.node}
    assert list(by_name["residual"].input) == ["x", "m"]
    assert list(by_name["matmul"].input) == ["x_dq", "w"]
    assert "unused_q" not in by_name and {"q", "dq"} <= by_name.keys()
