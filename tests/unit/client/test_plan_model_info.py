"""The client's ModelInfo carries dtype, parameters and the parity report as sent."""

from __future__ import annotations

from rmserve.client import ModelInfo
from rmserve.v1 import reward_pb2


def test_parity_report_becomes_a_dict_of_the_fields_sent() -> None:
    parity = reward_pb2.ParityReport(
        status="checked", reference="torch fp32", provider="CPUExecutionProvider", pairs=16,
        max_abs_diff=2e-3, rank_agreement=0.99, tolerance="every |Δ| ≤ 1e-02",
    )  # fmt: skip
    info = ModelInfo.from_pb(reward_pb2.ModelInfo(dtype="fp16", parameters=1234, parity=parity))
    assert (info.dtype, info.parameters) == ("fp16", 1234)
    assert info.parity["status"] == "checked" and info.parity["max_abs_diff"] == 2e-3
    assert info.parity["rank_agreement"] == 0.99 and "reason" not in info.parity


def test_no_parity_report_is_an_empty_dict() -> None:
    info = ModelInfo.from_pb(reward_pb2.ModelInfo(dtype="fp32"))
    assert info.parity == {} and info.parameters == 0
