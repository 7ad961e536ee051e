"""Rank agreement and the per-dtype tolerances of the export check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from rmserve_training.export.check import TOLERANCES, cpu_session, rank_agreement


def test_same_order_agrees_fully() -> None:
    reference = np.array([0.1, 0.5, -2.0, 3.0])
    assert rank_agreement(reference * 2 + 1, reference) == 1.0


def test_one_swap_among_six_pairs() -> None:
    reference = np.array([1.0, 2.0, 3.0, 4.0])
    ours = np.array([1.0, 2.0, 4.0, 3.0])  # only (2, 3) is out of order
    assert rank_agreement(ours, reference) == pytest.approx(5 / 6)


def test_reversed_order_disagrees_fully() -> None:
    reference = np.array([1.0, 2.0, 3.0])
    assert rank_agreement(-reference, reference) == 0.0


def test_reference_ties_are_left_out_and_our_ties_disagree() -> None:
    reference = np.array([1.0, 1.0, 2.0])  # (0, 1) tied: only (0, 2) and (1, 2) count
    assert rank_agreement(np.array([5.0, -5.0, 9.0]), reference) == 1.0
    assert rank_agreement(np.array([1.0, 2.0, 2.0]), reference) == 0.5


def test_no_decided_pair_is_full_agreement() -> None:
    assert rank_agreement(np.array([1.0, 2.0]), np.array([0.0, 0.0])) == 1.0


def test_fp32_tolerance_is_absolute() -> None:
    fp32 = TOLERANCES["fp32"]
    reference = np.array([100.0, 0.0])
    assert fp32.parity_ok(reference + 9e-5, reference)
    assert not fp32.parity_ok(reference + 2e-4, reference)


def test_fp16_tolerance_scales_with_the_reward() -> None:
    fp16 = TOLERANCES["fp16"]
    assert fp16.parity_ok(np.array([10.1, 0.009]), np.array([10.0, 0.0]))  # 0.1 ≤ 0.01 + 0.1
    assert not fp16.parity_ok(np.array([10.15]), np.array([10.0]))
    assert not fp16.parity_ok(np.array([0.011]), np.array([0.0]))
    assert "1e-02·|reference|" in fp16.describe()


def test_check_sessions_keep_no_memory_arena(tmp_path: Path) -> None:
    """The checks run many batch shapes once each; an arena would keep every one's memory."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])
    graph = helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "neg", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "neg.onnx"
    onnx.save_model(model, str(path))
    session = cpu_session(path)
    options = session.get_session_options()
    assert options.enable_cpu_mem_arena is False
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    (out,) = session.run(None, {"x": np.array([1.0, -2.0], dtype=np.float32)})
    assert out.tolist() == [-1.0, 2.0]
