"""A pair's token ids as the engine takes them, and the one way a long text is encoded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Encoding, Tokenizer


@dataclass(frozen=True, slots=True, eq=False)
class PreparedPair:
    input_ids: np.ndarray  # int64, [num_tokens]
    token_type_ids: np.ndarray  # int64, [num_tokens]
    truncated: bool
    response_truncated: bool
    # Tokens the pair had before truncation (0: it was not cut, ``num_tokens``). A lower bound
    # when ``untruncated_at_least``: a very long text was tokenised from a window of it
    # (``rmserve.text.windows``), so its tokens past the window were never counted.
    untruncated: int = 0
    untruncated_at_least: bool = False

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def untruncated_tokens(self) -> int:
        """The pair's tokens before truncation (a lower bound if ``untruncated_at_least``)."""
        return max(self.untruncated, self.num_tokens)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PreparedPair):
            return NotImplemented
        return (
            (self.truncated, self.response_truncated) == (other.truncated, other.response_truncated)
            and np.array_equal(self.input_ids, other.input_ids)
            and np.array_equal(self.token_type_ids, other.token_type_ids)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside: not hashable


def encode_one(tokenizer: Tokenizer, text: str, add_special_tokens: bool) -> Encoding:
    """``tokenizer.encode(text)`` through ``encode_batch``, which lets go of the GIL while it
    works: a long text tokenised by ``encode`` on a tokenizer thread held the GIL and stalled
    the event loop (~0.17 s for a 255 KB prompt, seen with py-spy --gil)."""
    (encoding,) = tokenizer.encode_batch([text], add_special_tokens=add_special_tokens)
    return encoding


def int64(values: Sequence[int]) -> np.ndarray:
    return np.array(values, dtype=np.int64)
