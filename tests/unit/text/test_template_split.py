"""A chat-template conversation tokenised in two parts equals the whole rendering tokenised;
a template that does not split that way is tokenised whole, conversation by conversation."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from rmserve.artifact.manifest import ChatTemplate, Preprocessing
from rmserve.text.chat_render import render
from rmserve.text.preprocess import Preprocessor
from rmserve.text.template_split import SequenceLayout, TemplateSplit
from rmserve.text.windows import UncuttableText
from tests.support.counting_tokenizer import CountingTokenizer

SPECIAL = ["<s>", "<u>", "<a>", "</s>"]
WORDS = [f"w{i}" for i in range(40)]


def tokenizer(post: str = "<s> $A") -> Tokenizer:
    vocab = {t: i for i, t in enumerate([*SPECIAL, "x", "y", "z", "A", ":", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="x"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIAL)
    tok.post_processor = processors.TemplateProcessing(
        single=post, special_tokens=[("<s>", 0), ("</s>", 3)]
    )
    return tok


def preprocessor(
    separator: str = " <a> ", max_length: int = 12, post: str = "<s> $A"
) -> Preprocessor:
    template = ChatTemplate(prefix="<u> ", separator=separator, suffix=" </s>")
    config = Preprocessing(
        join="template", template=template, max_length=max_length, pad_token_id=3
    )
    return Preprocessor(tokenizer(post), config)


PROMPTS = ["", "w1 w2", " ".join(WORDS[:10]), "  w3  "]
RESPONSES = ["", "x y", "x y z " * 4, "w1", " ".join(WORDS)]


@pytest.mark.parametrize("post", ["<s> $A", "$A </s>", "<s> $A:1 </s>"])
def test_layout_is_read_from_the_post_processor(post: str) -> None:
    tok = tokenizer(post)
    layout = SequenceLayout.read(tok)
    assert layout is not None
    plain = tok.encode("w1 w2 x", add_special_tokens=False)
    full = tok.encode("w1 w2 x", add_special_tokens=True)
    assert layout.assemble(plain.ids) == (full.ids, full.type_ids)


def test_parts_put_together_are_the_rendering() -> None:
    template = ChatTemplate(prefix="<u> ", separator=" <a> ", suffix=" </s>")
    split = TemplateSplit.find(tokenizer(), template)
    assert split is not None and template.separator[split.at :].startswith("<a>")
    prompt, response = split.prompt_part("w1 w2"), split.response_part("x y")
    whole = render(template, "w1 w2", "x y")
    assert prompt.text + response.text == whole.text
    assert prompt.text[slice(*prompt.span)] == "w1 w2"
    assert response.text[slice(*response.span)] == "x y"


def test_no_added_token_in_the_separator_proposes_no_split() -> None:
    template = ChatTemplate(prefix="<u> ", separator=" A : ", suffix=" </s>")
    assert TemplateSplit.find(tokenizer(), template) is None


@pytest.mark.parametrize("max_length", [8, 12, 64])
@pytest.mark.parametrize("post", ["<s> $A", "<s> $A </s>"])
def test_split_group_equals_each_conversation_whole(max_length: int, post: str) -> None:
    pre = preprocessor(max_length=max_length, post=post)
    assert pre.splits_template
    for prompt in PROMPTS:
        assert pre.prepare_group(prompt, RESPONSES) == [pre.prepare(prompt, r) for r in RESPONSES]


def test_split_group_of_many_cuts_as_each_conversation_whole() -> None:
    """Over SEQUENTIAL_ENCODE_TEXTS responses are encoded as a batch, with their offsets."""
    pre = preprocessor()
    prompt = " ".join(WORDS[:10])
    responses = [" ".join(WORDS[: i % 12]) for i in range(20)]
    got = pre.prepare_group(prompt, responses)
    assert got == [pre.prepare(prompt, r) for r in responses]
    assert any(p.truncated and not p.response_truncated for p in got)
    assert any(p.response_truncated for p in got)


def test_split_group_tokenises_the_prompt_once() -> None:
    pre = preprocessor()
    counting = CountingTokenizer(pre.tokenizer)
    pre.tokenizer = counting  # type: ignore[assignment]
    prompt = " ".join(WORDS * 50)
    pre.prepare_group(prompt, [f"x {w}" for w in WORDS])
    assert sum(prompt in text for text in counting.texts) == 1
    assert len(counting.texts) == 1 + len(WORDS)


def test_a_split_that_changes_the_tokens_is_refused_and_groups_go_whole() -> None:
    pre = preprocessor()
    split = TemplateSplit.find(pre.tokenizer, pre.config.template)  # type: ignore[arg-type]
    assert split is not None
    bad = TemplateSplit(split.template, split.at + 1, split.layout)  # cuts "<a>" in two
    assert pre.prepare_split(bad, "w1", ["x"], 12) != [pre.prepare("w1", "x")]
    assert pre._verified_split(bad) is None


def test_without_a_split_every_conversation_is_tokenised_whole() -> None:
    pre = preprocessor(separator=" A : ")
    assert not pre.splits_template
    counting = CountingTokenizer(pre.tokenizer)
    pre.tokenizer = counting  # type: ignore[assignment]
    got = pre.prepare_group("w1 w2", RESPONSES)
    pre.tokenizer = counting.inner
    assert got == [pre.prepare("w1 w2", r) for r in RESPONSES]
    assert sum("w1 w2" in text for text in counting.texts) >= len(RESPONSES)


def test_split_group_names_the_text_too_long_to_tokenise_whole() -> None:
    pre = preprocessor()
    with pytest.raises(UncuttableText) as info:
        pre.prepare_group("x" * (300 * 1024), ["y"])
    assert (info.value.row, info.value.part) == (0, "prompt")
    with pytest.raises(UncuttableText) as info:
        pre.prepare_group("w1", ["y", "x" * (300 * 1024)])
    assert (info.value.row, info.value.part) == (1, "response")


def test_groups_come_a_chunk_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import rmserve.text.preprocess as preprocess

    monkeypatch.setattr(preprocess, "TOKENIZE_CHUNK_CHARS", 10)
    pre = preprocessor()
    chunks = list(pre.iter_group("w1 w2", ["x y z w1 w2"] * 4))
    assert [len(c) for c in chunks] == [1, 1, 1, 1]
    many = list(pre.iter_many(["w1"] * 3, ["x y z w1 w2"] * 3))
    assert [len(c) for c in many] == [1, 1, 1]
