"""The shared preprocessing: truncation keeps the response, cuts the prompt from the left."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from rmserve.artifact.manifest import ChatTemplate, Preprocessing
from rmserve.text.preprocess import Preprocessor, load_tokenizer
from rmserve_training.model.backbones import minilm_folder

CLS, SEP = 101, 102


@pytest.fixture(scope="module")
def pre() -> Preprocessor:
    tokenizer = load_tokenizer(minilm_folder() / "tokenizer.json")
    return Preprocessor(tokenizer, Preprocessing(join="pair", max_length=16, pad_token_id=0))


def words(pre: Preprocessor, text: str) -> list[int]:
    return pre.tokenizer.encode(text, add_special_tokens=False).ids


def test_short_pair_is_untouched(pre: Preprocessor) -> None:
    prompt, response = words(pre, "hello there"), words(pre, "general kenobi")
    pair = pre.prepare("hello there", "general kenobi")
    assert pair.input_ids.tolist() == [CLS, *prompt, SEP, *response, SEP]
    assert pair.token_type_ids.tolist() == [0] * (len(prompt) + 2) + [1] * (len(response) + 1)
    assert not pair.truncated and not pair.response_truncated


def test_long_prompt_is_cut_from_the_left_and_response_kept(pre: Preprocessor) -> None:
    prompt = " ".join(f"w{i}" for i in range(40))
    response = "the answer is forty two"
    pair = pre.prepare(prompt, response)
    assert pair.num_tokens == 16
    assert pair.truncated and not pair.response_truncated
    kept_response = words(pre, response)
    assert pair.input_ids[-len(kept_response) - 1 : -1].tolist() == kept_response
    prompt_ids = words(pre, prompt)
    kept_prompt = pair.input_ids[1 : pair.input_ids.tolist().index(SEP)].tolist()
    assert kept_prompt == prompt_ids[-len(kept_prompt) :]  # the end of the prompt survives


def test_response_alone_too_long_is_reported(pre: Preprocessor) -> None:
    response = " ".join(f"r{i}" for i in range(40))
    pair = pre.prepare("question", response)
    assert pair.truncated and pair.response_truncated
    assert pair.num_tokens == 16
    assert pair.input_ids[:2].tolist() == [CLS, SEP]  # prompt dropped
    assert pair.input_ids[2:-1].tolist() == words(pre, response)[:13]  # response cut from the right


def test_empty_strings_are_valid(pre: Preprocessor) -> None:
    assert pre.prepare("", "").input_ids.tolist() == [CLS, SEP, SEP]
    assert pre.prepare("", "yes").input_ids.tolist() == [CLS, SEP, *words(pre, "yes"), SEP]


def test_prepare_many_matches_prepare(pre: Preprocessor) -> None:
    prompts, responses = ["a b c", "", "x " * 30], ["d", "", "y"]
    assert pre.prepare_many(prompts, responses) == [
        pre.prepare(p, r) for p, r in zip(prompts, responses, strict=True)
    ]


@pytest.fixture(scope="module")
def templated() -> Preprocessor:
    """A chat template around the messages; BOS comes from the tokenizer's post-processor."""
    special = ["<s>", "<u>", "<a>", "</s>"]
    vocab = {t: i for i, t in enumerate([*special, "x", "y", "z", *(f"w{i}" for i in range(40))])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="x"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(special)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", 0)]
    )
    template = ChatTemplate(prefix="<u> ", separator=" <a> ", suffix=" </s>")
    config = Preprocessing(join="template", template=template, max_length=12, pad_token_id=3)
    return Preprocessor(tokenizer, config)


def tokens(pre: Preprocessor, ids: list[int]) -> str:
    return " ".join(pre.tokenizer.id_to_token(i) for i in ids)


def test_template_pair_that_fits_is_the_rendered_text_tokenised(templated: Preprocessor) -> None:
    pair = templated.prepare("w1 w2", "x y")
    assert tokens(templated, pair.input_ids) == "<s> <u> w1 w2 <a> x y </s>"
    assert not pair.truncated


def test_template_prompt_is_cut_from_the_left(templated: Preprocessor) -> None:
    pair = templated.prepare(" ".join(f"w{i}" for i in range(10)), "x y")
    assert tokens(templated, pair.input_ids) == "<s> <u> w4 w5 w6 w7 w8 w9 <a> x y </s>"
    assert pair.truncated and not pair.response_truncated


def test_template_long_response_drops_prompt_and_is_cut_right(templated: Preprocessor) -> None:
    pair = templated.prepare("w1 w2", "x y z " * 4)
    assert tokens(templated, pair.input_ids) == "<s> <u> <a> x y z x y z x y </s>"
    assert pair.truncated and pair.response_truncated


def test_a_cut_pair_keeps_its_whole_length(pre: Preprocessor) -> None:
    """``untruncated_tokens``: what the pair had before it was cut (truncation=refuse names it)."""
    prompt, response = " ".join(f"w{i}" for i in range(40)), "the answer is forty two"
    whole = 3 + len(words(pre, prompt)) + len(words(pre, response))
    for pair in (pre.prepare(prompt, response), pre.prepare("question", prompt)):
        assert pair.truncated and pair.num_tokens == 16
    assert pre.prepare(prompt, response).untruncated_tokens == whole
    assert pre.prepare("question", prompt).untruncated_tokens == 3 + 1 + len(words(pre, prompt))
    fits = pre.prepare("hello", "there")
    assert fits.untruncated_tokens == fits.num_tokens and not fits.untruncated_at_least


def test_a_windowed_text_counts_at_least_its_window(pre: Preprocessor) -> None:
    """A text tokenised from a window: its count is a lower bound, and says so."""
    huge = " ".join(f"w{i % 40}" for i in range(20_000))
    pair = pre.prepare("q", huge)
    assert pair.response_truncated and pair.untruncated_at_least
    whole = Preprocessor(pre.tokenizer, pre.config, windows=False).prepare("q", huge)
    assert not whole.untruncated_at_least
    assert pre.config.max_length < pair.untruncated_tokens < whole.untruncated_tokens
    assert pair == whole  # the same tokens either way


def test_template_pairs_keep_their_whole_length(templated: Preprocessor) -> None:
    cut = templated.prepare(" ".join(f"w{i}" for i in range(10)), "x y")
    assert cut.untruncated_tokens == 16  # <s> <u> w0..w9 <a> x y </s>
    group = templated.prepare_group(" ".join(f"w{i}" for i in range(10)), ["x y", "z"])
    assert [p.untruncated_tokens for p in group] == [16, 15]
