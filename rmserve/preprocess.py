"""(prompt, response) -> token ids. Training and serving both call this, so a pair scored at
serve time sees exactly the tokens it saw in training.

Truncation: over ``max_length`` the prompt is cut from the left and the response kept whole.
If the response alone does not fit, the prompt is dropped and the response is cut from the
right; both cases set ``truncated`` and the second also sets ``response_truncated``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from rmserve.artifact import Preprocessing

# Texts are tokenised in chunks of about this many characters: the tokenizer's intermediate
# encodings (offsets, token strings) take tens of bytes per token until they are assembled into
# (truncated) ids, so a big request costs one chunk of them at a time, not its whole size.
TOKENIZE_CHUNK_CHARS = 256 * 1024


@dataclass(frozen=True, slots=True)
class PreparedPair:
    input_ids: list[int]
    token_type_ids: list[int]
    truncated: bool
    response_truncated: bool

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)


def load_tokenizer(path: Path | str) -> Tokenizer:
    """Load a tokenizer.json with its own padding and truncation switched off: we do both."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


class Preprocessor:
    def __init__(self, tokenizer: Tokenizer, config: Preprocessing) -> None:
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokenizer = tokenizer
        self.config = config
        if config.join == "template" and config.template is None:
            raise ValueError("preprocessing.join is 'template' but preprocessing.template is unset")
        template = config.template
        pieces = (
            (template.prefix, template.separator, template.suffix) if template else ("", "", "")
        )
        self._prefix, self._separator, self._suffix = (self._encode(p) for p in pieces)
        if config.join == "pair":
            self._overhead = tokenizer.num_special_tokens_to_add(True)
        else:
            fixed = len(self._prefix.ids) + len(self._separator.ids) + len(self._suffix.ids)
            self._overhead = fixed + tokenizer.num_special_tokens_to_add(False)
        if self._overhead >= config.max_length:
            raise ValueError(
                f"preprocessing.max_length={config.max_length} leaves no room for text "
                f"({self._overhead} tokens go to special tokens and the template)"
            )

    @property
    def pad_token_id(self) -> int:
        return self.config.pad_token_id

    def _encode(self, text: str) -> Encoding:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def prepare(self, prompt: str, response: str) -> PreparedPair:
        return self._assemble(self._encode(prompt), self._encode(response))

    def prepare_many(self, prompts: Sequence[str], responses: Sequence[str]) -> list[PreparedPair]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        prepared: list[PreparedPair] = []
        start = 0
        while start < len(prompts):
            end, chars = start, 0
            while end < len(prompts) and (end == start or chars < TOKENIZE_CHUNK_CHARS):
                chars += len(prompts[end]) + len(responses[end])
                end += 1
            texts = [*prompts[start:end], *responses[start:end]]
            encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
            n = end - start
            prepared += [self._assemble(encodings[i], encodings[n + i]) for i in range(n)]
            start = end
        return prepared

    def _assemble(self, prompt: Encoding, response: Encoding) -> PreparedPair:
        budget = self.config.max_length - self._overhead
        truncated = response_truncated = False
        if len(response.ids) > budget:
            response.truncate(budget, direction="right")
            prompt.truncate(0)
            truncated = response_truncated = True
        elif len(prompt.ids) + len(response.ids) > budget:
            prompt.truncate(budget - len(response.ids), direction="left")
            truncated = True
        if self.config.join == "pair":
            merged = self.tokenizer.post_process(prompt, response, add_special_tokens=True)
        else:
            pieces = [self._prefix, prompt, self._separator, response, self._suffix]
            joined = Encoding.merge(pieces, growing_offsets=True)
            merged = self.tokenizer.post_process(joined, None, add_special_tokens=True)
        return PreparedPair(list(merged.ids), list(merged.type_ids), truncated, response_truncated)


def pad_batch(
    pairs: Sequence[PreparedPair], pad_token_id: int, input_names: Sequence[str]
) -> dict[str, np.ndarray]:
    """Right-pad a batch into the ONNX feed. Padded cost is longest x count."""
    if not pairs:
        raise ValueError("cannot pad an empty batch")
    width = max(p.num_tokens for p in pairs)
    ids = np.full((len(pairs), width), pad_token_id, dtype=np.int64)
    types = np.zeros((len(pairs), width), dtype=np.int64)
    mask = np.zeros((len(pairs), width), dtype=np.int64)
    for row, pair in enumerate(pairs):
        n = pair.num_tokens
        ids[row, :n] = pair.input_ids
        types[row, :n] = pair.token_type_ids
        mask[row, :n] = 1
    available = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    unknown = [name for name in input_names if name not in available]
    if unknown:
        raise ValueError(f"model inputs {unknown} are not produced by rmserve preprocessing")
    return {name: available[name] for name in input_names}
