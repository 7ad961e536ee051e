"""Admission by memory and the documented memory formula."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from rmserve.errors import Overloaded
from rmserve.serving.memory_budget import (
    MIB,
    REQUEST_BYTES_FACTOR,
    SMALL_REQUEST_BYTES,
    SMALL_REQUEST_RESERVE_BYTES,
    MemoryTooSmall,
    RequestBytesBudget,
    cgroup_memory_limit,
    default_inflight_bytes,
    inflight_bytes_for,
    required_memory_bytes,
    resolve_inflight_bytes,
)

LIMIT = 8 * MIB


def budget() -> tuple[RequestBytesBudget, list[int]]:
    seen: list[int] = []
    return RequestBytesBudget(LIMIT, seen.append), seen


def test_requests_are_admitted_up_to_the_limit_and_released_after() -> None:
    b, seen = budget()
    with b.admit(3 * MIB, lambda: 5), b.admit(3 * MIB, lambda: 5):
        assert b.in_use == 6 * MIB
        with pytest.raises(Overloaded) as refused, b.admit(2 * MIB, lambda: 250):
            pass
        assert refused.value.retry_after_ms == 250
        assert "max_inflight_bytes=8388608" in str(refused.value)
    assert b.in_use == 0
    assert seen == [3 * MIB, 6 * MIB, 3 * MIB, 0]


def test_the_reserve_keeps_room_for_small_requests() -> None:
    b, _ = budget()
    big = LIMIT - SMALL_REQUEST_RESERVE_BYTES
    with b.admit(big, lambda: 5):
        with pytest.raises(Overloaded), b.admit(SMALL_REQUEST_BYTES + 1, lambda: 5):
            pass
        with contextlib.ExitStack() as smalls:  # small calls fill the reserve side by side
            for _ in range(SMALL_REQUEST_RESERVE_BYTES // SMALL_REQUEST_BYTES):
                smalls.enter_context(b.admit(SMALL_REQUEST_BYTES, lambda: 5))
            assert b.in_use == LIMIT
            with pytest.raises(Overloaded), b.admit(1, lambda: 5):
                pass


def test_one_request_alone_is_always_admitted() -> None:
    b, _ = budget()
    with b.admit(3 * LIMIT, lambda: 5):
        assert b.in_use == 3 * LIMIT


def test_an_error_inside_releases_the_bytes() -> None:
    b, _ = budget()
    with pytest.raises(RuntimeError), b.admit(MIB, lambda: 5):
        raise RuntimeError("boom")
    assert b.in_use == 0


def test_the_budget_derived_from_memory_fits_the_formula() -> None:
    model, queue, length = 90 * MIB, 16384, 512
    memory = 2048 * MIB
    derived = inflight_bytes_for(memory, model, queue, length)
    assert required_memory_bytes(model, derived, queue, length) <= memory
    assert required_memory_bytes(model, derived + 1024, queue, length) > memory
    assert resolve_inflight_bytes(None, memory, 64 * MIB, model, queue, length) == derived


def test_activations_come_out_of_the_request_budget() -> None:
    model, queue, length, activations = 90 * MIB, 16384, 512, 300 * MIB
    memory = 2048 * MIB
    without = inflight_bytes_for(memory, model, queue, length)
    derived = inflight_bytes_for(memory, model, queue, length, activations)
    assert without - derived == pytest.approx(activations / REQUEST_BYTES_FACTOR, abs=1)
    assert required_memory_bytes(model, derived, queue, length, activations) <= memory
    assert required_memory_bytes(model, derived + 1024, queue, length, activations) > memory
    assert resolve_inflight_bytes(None, memory, 64 * MIB, model, queue, length, activations) == (
        derived
    )
    with pytest.raises(MemoryTooSmall, match=f"activations \\({2048 * MIB} bytes\\)"):
        resolve_inflight_bytes(None, memory, 64 * MIB, model, queue, length, 2048 * MIB)


def test_a_set_budget_wins_and_no_limit_means_the_default() -> None:
    assert resolve_inflight_bytes(5 * MIB, 1 << 40, 4 * MIB, 0, 1, 8) == 5 * MIB
    assert resolve_inflight_bytes(None, None, 4 * MIB, 0, 1, 8) == default_inflight_bytes(4 * MIB)


def test_memory_too_small_for_one_request_refuses_to_start() -> None:
    with pytest.raises(MemoryTooSmall, match="raise the limit or lower"):
        resolve_inflight_bytes(None, 512 * MIB, 64 * MIB, 90 * MIB, 16384, 512)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2147483648\n", 2 * 1024 * MIB), ("max\n", None), ("9223372036854771712\n", None)],
)
def test_cgroup_limits_are_read(tmp_path: Path, text: str, expected: int | None) -> None:
    file = tmp_path / "memory.max"
    file.write_text(text)
    assert cgroup_memory_limit((tmp_path / "absent", file)) == expected


def test_no_cgroup_file_means_no_limit(tmp_path: Path) -> None:
    assert cgroup_memory_limit((tmp_path / "absent",)) is None


def test_a_reservation_grows_as_bytes_arrive_and_releases_all() -> None:
    b, seen = budget()
    held = b.admit(LIMIT - 2 * MIB, lambda: 5)
    held.__enter__()
    with b.reservation(lambda: 5) as growing:
        assert b.in_use == LIMIT - 2 * MIB  # nothing charged before a byte arrives
        growing.grow(SMALL_REQUEST_BYTES)
        with pytest.raises(Overloaded):  # past the small-request reserve once it is big
            growing.grow(MIB)
        assert growing.size == SMALL_REQUEST_BYTES  # the refused step is not charged
    assert b.in_use == LIMIT - 2 * MIB and seen[-1] == LIMIT - 2 * MIB
    held.__exit__(None, None, None)
    with b.reservation(lambda: 5) as alone:
        alone.grow(2 * LIMIT)  # one request alone always runs
    assert b.in_use == 0
