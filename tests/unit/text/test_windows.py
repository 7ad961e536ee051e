"""Windows of very long texts: cut at a space, far enough from the tokens truncation keeps."""

from __future__ import annotations

import pytest

from rmserve.text.windows import (
    CUT_MARGIN_TOKENS,
    SPACE_SEARCH_CHARS,
    UncuttableText,
    Window,
    check_margin,
    head,
    tail,
)

LONG = " ".join(f"word{i}" for i in range(4000))  # ~36k characters


def test_texts_within_reach_are_not_cut() -> None:
    text = "a b " * 100
    assert head(text, 10) == Window(text, False)
    assert tail(text, 10) == Window(text, False)


def test_head_keeps_the_start_and_ends_before_a_space() -> None:
    window = head(LONG, 1000)
    assert window.cut and LONG.startswith(window.text)
    assert len(window.text) >= 1000 and LONG[len(window.text)] == " "


def test_tail_keeps_the_end_and_starts_at_a_space() -> None:
    window = tail(LONG, 1000)
    assert window.cut and LONG.endswith(window.text)
    assert len(window.text) > 1000 and window.text[0] == " "


@pytest.mark.parametrize("cut", [head, tail])
def test_a_text_with_no_space_near_the_cut_is_uncuttable(cut: object) -> None:
    text = "x" * (3 * SPACE_SEARCH_CHARS) + " tail"
    with pytest.raises(UncuttableText, match="no space"):
        cut(text if cut is head else text[::-1], 10)  # type: ignore[operator]


def test_a_cut_window_must_give_the_margin_beyond_what_is_kept() -> None:
    cut = Window("some text", True)
    check_margin(cut, 10 + CUT_MARGIN_TOKENS, 10)
    with pytest.raises(UncuttableText, match="under the 18 needed"):
        check_margin(cut, 10 + CUT_MARGIN_TOKENS - 1, 10)
    check_margin(Window("whole", False), 0, 10)  # a whole text needs no margin


def test_uncuttable_errors_say_which_text() -> None:
    error = UncuttableText("reason").located(3, "prompt")
    assert (error.row, error.part, str(error)) == (3, "prompt", "reason")
