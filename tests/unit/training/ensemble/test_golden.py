"""A combined ensemble's golden pairs: those every member carries, with each member's reference
in output order, at the widest of the members' tolerances; none when a member has none."""

from __future__ import annotations

from rmserve.artifact.golden import GoldenPair, GoldenSet, GoldenTolerance
from rmserve_training.ensemble.golden import ensemble_golden

FP32 = GoldenTolerance(atol=1e-4, basis="the fp32 export check's bound")


def pair(prompt: str, reward: float, ids: list[int] | None = None) -> GoldenPair:
    ids = ids or [1, 2, 3]
    return GoldenPair(
        prompt=prompt, response="r", input_ids=ids, token_type_ids=[0] * len(ids),
        truncated=False, response_truncated=False, reward=reward,
    )  # fmt: skip


def golden(*pairs: GoldenPair, tolerance: GoldenTolerance = FP32) -> GoldenSet:
    return GoldenSet(reference="torch fp32", dtype="fp32", tolerance=tolerance, pairs=list(pairs))


def test_shared_pairs_get_every_members_reference_in_order() -> None:
    a = golden(pair("x", 1.0), pair("y", 2.0), pair("only a", 3.0))
    b = golden(pair("y", -2.0), pair("x", -1.0))
    c = golden(pair("x", 10.0), pair("y", 20.0), pair("y", 9.0, ids=[1, 2, 4]))  # other tokens
    combined = ensemble_golden([a, b, c])
    assert combined is not None and combined.members == 3 and combined.tolerance == FP32
    assert [(p.prompt, p.reward) for p in combined.pairs] == [
        ("x", [1.0, -1.0, 10.0]),
        ("y", [2.0, -2.0, 20.0]),
    ]


def test_the_widest_tolerance_is_kept() -> None:
    wide = GoldenTolerance(atol=1e-2, rtol=1e-2, basis="fp16")
    combined = ensemble_golden([golden(pair("x", 1.0)), golden(pair("x", 2.0), tolerance=wide)])
    assert combined is not None
    assert (combined.tolerance.atol, combined.tolerance.rtol) == (1e-2, 1e-2)
    assert combined.tolerance.basis == "the widest of the members' bounds"


def test_no_golden_pairs_when_a_member_has_none_or_none_are_shared() -> None:
    assert ensemble_golden([golden(pair("x", 1.0)), None]) is None
    assert ensemble_golden([golden(pair("x", 1.0)), golden(pair("y", 1.0))]) is None
    assert ensemble_golden([]) is None
