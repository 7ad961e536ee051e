"""The loadtest's progress output: the bar's text and its in-place redraw."""

from __future__ import annotations

import io

from rmserve.tools.loadtest_progress import TerminalBar, bar_text, status_text


def test_bar_text_fills_by_fraction_and_clamps() -> None:
    assert bar_text(0.5, "s") == "[" + "#" * 12 + "-" * 12 + "]  50%  s"
    assert bar_text(1.7, "s").startswith("[" + "#" * 24 + "] 100%")
    assert bar_text(-1.0, "s").startswith("[" + "-" * 24 + "]   0%")


def test_status_text_counts_rate_and_codes() -> None:
    text = status_text(2.0, 10, 50, {"UNAVAILABLE": 1, "OK": 9})
    assert "10 requests" in text and "25.0 pairs/s" in text and text.endswith("OK=9 UNAVAILABLE=1")
    assert status_text(0.0, 0, 0, {}).endswith("-")


def test_terminal_bar_redraws_one_line_over_a_longer_one() -> None:
    stream = io.StringIO()
    bar = TerminalBar(stream)
    bar.update(0.1, 1.0, 1000, 1000, {"OK": 1000, "UNAVAILABLE": 7})
    bar.update(0.2, 2.0, 1, 1, {"OK": 1})
    bar.close()
    first, second = stream.getvalue().split("\r")[1:]
    assert len(second.rstrip("\n")) == len(first)  # padded: no stale tail on the terminal
    assert "OK=1" in second and stream.getvalue().endswith("\n")
