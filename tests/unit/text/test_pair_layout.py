"""The post-processor's layout, applied to id lists, equals ``Tokenizer.post_process``."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, processors

from rmserve.text.pair_layout import PairLayout
from rmserve.text.preprocess import load_tokenizer
from rmserve_training.model.backbones import minilm_folder

WORDS = st.lists(st.sampled_from(["the", "reward", "model", "42", "naïve", "!", ""]), max_size=12)


def minilm() -> Tokenizer:
    return load_tokenizer(minilm_folder() / "tokenizer.json")


def roberta_like() -> Tokenizer:
    tokenizer = minilm()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 101), ("[SEP]", 102)],
    )
    return tokenizer


@pytest.mark.parametrize("make", [minilm, roberta_like])
@settings(max_examples=40, deadline=None)
@given(prompt=WORDS, response=WORDS)
def test_layout_equals_post_process(make: object, prompt: list[str], response: list[str]) -> None:
    tokenizer = make()  # type: ignore[operator]
    layout = PairLayout.read(tokenizer)
    assert layout is not None
    a, b = (tokenizer.encode(" ".join(t), add_special_tokens=False) for t in (prompt, response))
    merged = tokenizer.post_process(a, b, add_special_tokens=True)
    assert layout.assemble(a.ids, b.ids) == (merged.ids, merged.type_ids)


def test_a_post_processor_that_is_not_a_template_is_refused() -> None:
    tokenizer = minilm()
    # The response placed before the prompt: not a layout of prompt, then response.
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A", pair="$B:1 [SEP] $A", special_tokens=[("[SEP]", 102)]
    )
    assert PairLayout.read(tokenizer) is None
