"""Windows of very long texts, so tokenising one costs memory in proportion to max_length.

The tokenizer keeps tens of bytes per character of a text while it works (alignments, offsets,
token strings): a single 64 MB response would take gigabytes, to keep its first few hundred
tokens. A text longer than ``WINDOW_CHARS_PER_TOKEN`` x max_length characters is therefore
tokenised from a window at the end that truncation keeps: the prompt's tail, the response's
head, cut at a space.

Exact, not approximate: tokenizers split text at spaces before they map it to tokens, so a cut
at a space changes at most the few tokens beside it. The window must yield at least
``CUT_MARGIN_TOKENS`` more tokens than truncation keeps, so the tokens beside the cut are
always among those cut off. A text whose window does not (no space near the cut, or under one
token per ``WINDOW_CHARS_PER_TOKEN`` characters: mostly whitespace, say) is tokenised whole if
it has at most ``WHOLE_TEXT_MAX_CHARS`` characters, and is ``UncuttableText`` beyond that.
``Preprocessor`` checks at start-up that its tokenizer cuts this way and tokenises whole texts
where it does not.
"""

from __future__ import annotations

from dataclasses import dataclass

WINDOW_CHARS_PER_TOKEN = 64
CUT_MARGIN_TOKENS = 8
# How far before the window's nominal edge a space is looked for.
SPACE_SEARCH_CHARS = 4096
# Texts that cannot be windowed are tokenised whole up to this length.
WHOLE_TEXT_MAX_CHARS = 256 * 1024


class UncuttableText(ValueError):
    """A text too long to tokenise whole that cannot be cut exactly; the message says why.
    ``row`` and ``part`` ("prompt" or "response") say which text, once known."""

    def __init__(self, reason: str, row: int = -1, part: str = "") -> None:
        super().__init__(reason)
        self.reason, self.row, self.part = reason, row, part

    def located(self, row: int, part: str) -> UncuttableText:
        return UncuttableText(self.reason, row, part)


@dataclass(frozen=True, slots=True)
class Window:
    text: str
    cut: bool  # True: ``text`` is part of the original, to be checked with ``check_margin``


def window_chars(max_length: int) -> int:
    return max_length * WINDOW_CHARS_PER_TOKEN


# Start-up self-check text: words, punctuation, digits, runs of spaces, newlines, accents, CJK.
SAMPLE_SENTENCES = (
    "The quick brown fox, 42 times, jumped over  the lazy dog's back.",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 -- \u201cquoted\u201d text\u2026",
    "\u6771\u4eac\u306f\u65e5\u672c\u306e\u9996\u90fd\u3067\u3059 and so on.",
    "def f(x):\n    return x**2  # code\n",
    "Numbers 3.14159 and 1,000,000 and 2026-11-30;   spaces.",
)


def sample_text(sentences: int) -> str:
    return " ".join(SAMPLE_SENTENCES[i % len(SAMPLE_SENTENCES)] for i in range(sentences))


def head(text: str, chars: int) -> Window:
    """The start of ``text`` (what right truncation keeps), ending before a space."""
    if len(text) <= chars + SPACE_SEARCH_CHARS:
        return Window(text, False)
    end = text.find(" ", chars, chars + SPACE_SEARCH_CHARS)
    if end < 0:
        raise UncuttableText(
            f"{len(text)} characters with no space within {SPACE_SEARCH_CHARS} characters of "
            "where they must be cut to max_length"
        )
    return Window(text[:end], True)


def tail(text: str, chars: int) -> Window:
    """The end of ``text`` (what left truncation keeps), starting at a space."""
    if len(text) <= chars + SPACE_SEARCH_CHARS:
        return Window(text, False)
    start = text.rfind(" ", len(text) - chars - SPACE_SEARCH_CHARS, len(text) - chars)
    if start < 0:
        raise UncuttableText(
            f"{len(text)} characters with no space within {SPACE_SEARCH_CHARS} characters of "
            "where they must be cut to max_length"
        )
    return Window(text[start:], True)


def check_margin(window: Window, tokens: int, kept: int) -> None:
    """A cut window's ``tokens`` must exceed the ``kept`` ones by the margin."""
    if window.cut and tokens < kept + CUT_MARGIN_TOKENS:
        raise UncuttableText(
            f"a window of {len(window.text)} characters gave {tokens} tokens, under the "
            f"{kept + CUT_MARGIN_TOKENS} needed to cut it exactly (fewer than one token per "
            f"{WINDOW_CHARS_PER_TOKEN} characters)"
        )
