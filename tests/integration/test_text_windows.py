"""Windowed tokenisation of very long texts gives exactly the tokens of whole texts, for the
tokenizer kinds rmserve serves (WordPiece, byte-level BPE, Metaspace, Gemma-style BPE)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from rmserve.artifact.manifest import Preprocessing
from rmserve.text.preprocess import Preprocessor, load_tokenizer
from rmserve.text.windows import window_chars
from rmserve_training.model.backbones import minilm_folder
from tests.support.hf_families import FAMILIES, _tokenizer

MAX_LENGTH = 24
PIECES = [
    "the", "reward", "model", "Paris", "42", "3.14", "naïve", "東京", "don't", "x**2", "!",
    "\n", "  ", "\t", "...", "ünïcödé", "supercalifragilisticexpialidocious", "a", "I",
]  # fmt: skip


def tokenizers() -> dict[str, Tokenizer]:
    found = {"minilm": load_tokenizer(minilm_folder() / "tokenizer.json")}
    found.update({name: _tokenizer(family) for name, family in FAMILIES.items()})
    return found


TOKENIZERS = tokenizers()


def preprocessors(tokenizer: Tokenizer) -> tuple[Preprocessor, Preprocessor]:
    config = Preprocessing(join="pair", max_length=MAX_LENGTH, pad_token_id=0)
    return Preprocessor(tokenizer, config), Preprocessor(tokenizer, config, windows=False)


def long_text(min_chars: int) -> st.SearchStrategy[str]:
    words = st.lists(st.sampled_from(PIECES), min_size=1, max_size=40).map(" ".join)
    repeats = st.integers(min_value=1, max_value=4)
    return st.tuples(words, repeats, words).map(
        lambda t: (t[0] + " ") * (min_chars // max(1, len(t[0])) * t[1] + 1) + t[2]
    )


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prompt=st.one_of(st.sampled_from(["", "short question"]), long_text(20_000)),
    response=st.one_of(st.sampled_from(["", "ok"]), long_text(20_000)),
)
def test_windows_give_the_tokens_of_whole_texts(name: str, prompt: str, response: str) -> None:
    windowed, whole = preprocessors(TOKENIZERS[name])
    assert windowed.prepare(prompt, response) == whole.prepare(prompt, response)


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_every_tokenizer_kind_here_is_windowed(name: str) -> None:
    windowed, _ = preprocessors(TOKENIZERS[name])
    text = "word " * (4 * window_chars(MAX_LENGTH))
    assert windowed._windows  # the start-up self-check passed
    assert windowed.prepare(text, "ok") == preprocessors(TOKENIZERS[name])[1].prepare(text, "ok")
