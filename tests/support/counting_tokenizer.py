"""A tokenizer that records every text it encodes (to count tokenising passes, not time them)."""

from __future__ import annotations

from typing import Any

from tokenizers import Encoding, Tokenizer


class CountingTokenizer:
    """Wraps ``inner``; ``texts`` holds every text encoded, in order, through any encode call."""

    def __init__(self, inner: Tokenizer) -> None:
        self.inner = inner
        self.texts: list[str] = []

    def encode(self, text: str, *args: Any, **kwargs: Any) -> Encoding:
        self.texts.append(text)
        return self.inner.encode(text, *args, **kwargs)

    def encode_batch_fast(self, texts: list[str], *args: Any, **kwargs: Any) -> list[Encoding]:
        self.texts += texts
        return self.inner.encode_batch_fast(texts, *args, **kwargs)

    def encode_batch(self, texts: list[str], *args: Any, **kwargs: Any) -> list[Encoding]:
        self.texts += texts
        return self.inner.encode_batch(texts, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
