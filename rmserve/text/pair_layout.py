"""Where the tokenizer's post-processor puts its special tokens around a pair's two texts.

``Tokenizer.post_process`` adds them (``[CLS] A [SEP] B [SEP]`` for BERT), but only on
``Encoding`` objects, and cutting an ``Encoding`` with ``truncate`` keeps every cut-off part as
an "overflowing" encoding that ``post_process`` then pairs with each part of the other text:
a long prompt against a long response made millions of encodings and gigabytes. The layout is
read once from the post-processor (on probe texts) and applied to plain id lists, cut by
slicing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Encoding, Tokenizer

PROMPT, RESPONSE = 0, 1


@dataclass(frozen=True, slots=True)
class Piece:
    """Special tokens (``sequence`` None, with their ids) or one of the texts (0 or 1)."""

    sequence: int | None
    ids: tuple[int, ...]
    type_ids: tuple[int, ...]  # one per special token, or the text's single type id


@dataclass(frozen=True, slots=True)
class PairLayout:
    pieces: tuple[Piece, ...]

    @classmethod
    def read(cls, tokenizer: Tokenizer) -> PairLayout | None:
        """The layout, or None if the post-processor is not a fixed template around the texts
        (checked on two pairs of probe texts of different lengths)."""
        probes = (("alpha", "beta gamma"), ("alpha beta gamma delta", "epsilon"))
        layouts = set()
        for prompt, response in probes:
            a, b = (tokenizer.encode(t, add_special_tokens=False) for t in (prompt, response))
            merged = tokenizer.post_process(a, b, add_special_tokens=True)
            layout = _layout_of(merged, len(a.ids))
            if layout is None or layout.assemble(a.ids, b.ids) != (merged.ids, merged.type_ids):
                return None
            layouts.add(layout)
        return layouts.pop() if len(layouts) == 1 else None

    def assemble(self, prompt: Sequence[int], response: Sequence[int]) -> tuple[list[int], ...]:
        """(input ids, token type ids) of the pair, special tokens included."""
        ids: list[int] = []
        types: list[int] = []
        for piece in self.pieces:
            if piece.sequence is None:
                ids += piece.ids
                types += piece.type_ids
            else:
                text = prompt if piece.sequence == PROMPT else response
                ids += text
                types += piece.type_ids * len(text)
        return ids, types


def _layout_of(merged: Encoding, prompt_tokens: int) -> PairLayout | None:
    """Special tokens by the mask; the other tokens are the prompt's first, then the
    response's (``sequence_ids`` is not filled in for the first text by every tokenizer)."""
    runs: list[tuple[int | None, list[int]]] = []
    texts_seen = 0
    for index, special in enumerate(merged.special_tokens_mask):
        sequence = None if special else (PROMPT if texts_seen < prompt_tokens else RESPONSE)
        texts_seen += not special
        if runs and runs[-1][0] == sequence:
            runs[-1][1].append(index)
        else:
            runs.append((sequence, [index]))
    if [sequence for sequence, _ in runs if sequence is not None] != [PROMPT, RESPONSE]:
        return None
    pieces = []
    for sequence, indexes in runs:
        type_ids = tuple(merged.type_ids[i] for i in indexes)
        if sequence is None:
            pieces.append(Piece(None, tuple(merged.ids[i] for i in indexes), type_ids))
        elif len(set(type_ids)) == 1:
            pieces.append(Piece(sequence, (), type_ids[:1]))
        else:
            return None
    return PairLayout(tuple(pieces))
