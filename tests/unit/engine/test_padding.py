"""Tokenising many pairs at once (shared texts tokenised once, never mutated by another pair's
truncation) and padding a batch into the ONNX feed with vector operations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmserve.artifact.manifest import Preprocessing
from rmserve.engine.padding import pad_batch
from rmserve.text.preprocess import (
    SEQUENTIAL_ENCODE_TEXTS,
    PreparedPair,
    Preprocessor,
    load_tokenizer,
)
from rmserve_training.model.backbones import minilm_folder

NAMES = ["input_ids", "attention_mask", "token_type_ids"]


@pytest.fixture(scope="module")
def pre() -> Preprocessor:
    tokenizer = load_tokenizer(minilm_folder() / "tokenizer.json")
    return Preprocessor(tokenizer, Preprocessing(join="pair", max_length=16, pad_token_id=0))


@pytest.mark.parametrize("copies", [1, SEQUENTIAL_ENCODE_TEXTS + 1])  # one by one, batch encoder
def test_a_shared_prompt_is_truncated_per_pair_not_once_for_all(
    pre: Preprocessor, copies: int
) -> None:
    """One prompt, responses of every length: each pair cuts its own copy of the prompt (the
    long response drops it entirely, the middle one cuts it, the short ones after them still
    get it whole)."""
    prompt = "one two three four five six seven eight nine ten"
    responses = ["yes", "a b c d e f g h", "a " * 20, "", "yes"] * copies
    together = pre.prepare_many([prompt] * len(responses), responses)
    alone = [pre.prepare(prompt, response) for response in responses]
    assert together == alone
    assert [(p.truncated, p.response_truncated) for p in together[:5]] == [
        (False, False),
        (True, False),
        (True, True),
        (False, False),
        (False, False),
    ]


def test_prefer_like_requests_match_one_pair_at_a_time(pre: Preprocessor) -> None:
    prompts = [p for p in ("q one", "q two two two two two two two two two") for _ in range(2)]
    responses = ["a", "b b b b b b b b b b b b b b", "c", "d d"]
    together = pre.prepare_many(prompts, responses)
    assert together == [pre.prepare(p, r) for p, r in zip(prompts, responses, strict=True)]
    assert together[0] != together[1]


def test_ids_are_int64_arrays(pre: Preprocessor) -> None:
    pair = pre.prepare("hello", "there")
    assert pair.input_ids.dtype == np.int64 and pair.token_type_ids.dtype == np.int64
    assert pair.num_tokens == len(pair.input_ids) == len(pair.token_type_ids)


def row_by_row(pairs: list[PreparedPair], pad: int) -> dict[str, np.ndarray]:
    """The feed built the obvious way, for comparison."""
    width = max(p.num_tokens for p in pairs)
    ids = np.full((len(pairs), width), pad, dtype=np.int64)
    types = np.zeros((len(pairs), width), dtype=np.int64)
    mask = np.zeros((len(pairs), width), dtype=np.int64)
    for row, pair in enumerate(pairs):
        ids[row, : pair.num_tokens] = pair.input_ids
        types[row, : pair.num_tokens] = pair.token_type_ids
        mask[row, : pair.num_tokens] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(
        st.lists(st.tuples(st.integers(1, 30000), st.integers(0, 1)), min_size=1, max_size=40),
        min_size=1,
        max_size=12,
    ),
    pad=st.integers(0, 3),
)
def test_pad_batch_equals_row_by_row_padding(rows: list[list[tuple[int, int]]], pad: int) -> None:
    pairs = [
        PreparedPair(
            np.array([i for i, _ in r], dtype=np.int64),
            np.array([t for _, t in r], dtype=np.int64),
            False,
            False,
        )
        for r in rows
    ]
    got = pad_batch(pairs, pad, NAMES)
    want = row_by_row(pairs, pad)
    assert list(got) == NAMES
    for name in NAMES:
        assert got[name].dtype == np.int64
        np.testing.assert_array_equal(got[name], want[name])
    decoder = pad_batch(pairs, pad, ["input_ids", "attention_mask"])
    assert list(decoder) == ["input_ids", "attention_mask"]


def test_pad_batch_refuses_empty_batches_and_unknown_inputs(pre: Preprocessor) -> None:
    with pytest.raises(ValueError, match="empty"):
        pad_batch([], 0, NAMES)
    with pytest.raises(ValueError, match="position_ids"):
        pad_batch([pre.prepare("a", "b")], 0, ["input_ids", "position_ids"])
