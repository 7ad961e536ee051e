"""(prompt, response) -> token ids. Training and serving both call this, so a pair scored at
serve time sees exactly the tokens it saw in training.

Truncation: over ``max_length`` the prompt is cut from the left and the response kept whole.
If the response alone does not fit, the prompt is dropped and the response is cut from the
right; both cases set ``truncated`` and the second also sets ``response_truncated``.

Chat-template models ('template' join) get the whole rendered conversation tokenised in one
piece, exactly as ``tokenizer(apply_chat_template(conv, tokenize=False))`` does (with a leading
BOS the tokenizer adds itself taken out of the template text, so it is never doubled): that half
lives in ``rmserve.text.template_pairs``.

A group's prompt is tokenised once there too where the template can be cut before an added
token (``rmserve.text.template_split``), verified at start-up against whole renderings of check
texts; where it cannot, every conversation is tokenised whole.

Every request is tokenised in chunks of about ``TOKENIZE_CHUNK_CHARS`` (``iter_many``,
``iter_group``), so a caller can stop between chunks.

Token ids are int64 numpy arrays from tokenisation on, so padding a batch is a few vector
operations (``padding.pad_batch``), not a Python loop over rows. A text that appears several
times in one call (the prompt of a Prefer, a group of responses to one prompt) is tokenised once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tokenizers import Encoding, Tokenizer

from rmserve.artifact.manifest import Preprocessing
from rmserve.text.chat_render import render
from rmserve.text.pair_layout import PairLayout
from rmserve.text.prepared import PreparedPair as PreparedPair
from rmserve.text.prepared import encode_one, int64
from rmserve.text.template_pairs import TemplatePairs
from rmserve.text.template_split import TemplateSplit
from rmserve.text.windows import (
    CUT_MARGIN_TOKENS,
    WHOLE_TEXT_MAX_CHARS,
    UncuttableText,
    Window,
    check_margin,
    head,
    sample_text,
    tail,
    window_chars,
)

log = logging.getLogger(__name__)

# Texts are tokenised in chunks of about this many characters: the tokenizer's intermediate
# encodings (offsets, token strings) take tens of bytes per token until they are assembled into
# (truncated) ids, so a big request costs one chunk of them at a time, not its whole size.
TOKENIZE_CHUNK_CHARS = 256 * 1024

# Up to this many distinct texts are encoded one by one on the calling thread: for a handful
# the batch encoder's hand-off to its thread pool costs more than it saves.
SEQUENTIAL_ENCODE_TEXTS = 8


def _cuts_exactly(tokenizer: Tokenizer) -> bool:
    """Whether windows of a text keep the tokens of the whole text (start-up self-check)."""
    text = sample_text(200)
    whole = tokenizer.encode(text, add_special_tokens=False).ids
    for chars in (300, 701, 1302):
        for cut, keep_end in ((tail, True), (head, False)):
            window = cut(text, chars)
            ids = tokenizer.encode(window.text, add_special_tokens=False).ids
            kept = len(ids) - CUT_MARGIN_TOKENS
            same = ids[-kept:] == whole[-kept:] if keep_end else ids[:kept] == whole[:kept]
            if not window.cut or kept <= 0 or not same:
                log.warning(
                    "this tokenizer does not keep its tokens when a text is cut at a space: "
                    "long texts are tokenised whole (memory per request byte is then higher "
                    "than docs/guides/operations.md#the-memory-formula bounds)"
                )
                return False
    return True


def load_tokenizer(path: Path | str) -> Tokenizer:
    """Load a tokenizer.json with its own padding and truncation switched off: we do both."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


class Preprocessor(TemplatePairs):
    def __init__(self, tokenizer: Tokenizer, config: Preprocessing, windows: bool = True) -> None:
        """``windows=False`` tokenises every text whole (the reference the windows are tested
        against)."""
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokenizer = tokenizer
        self.config = config
        if config.join == "template" and config.template is None:
            raise ValueError("preprocessing.join is 'template' but preprocessing.template is unset")
        self._template = config.template
        if self._template is not None:
            empty = render(self._template, "", "").text
            self._overhead = len(tokenizer.encode(empty, add_special_tokens=True).ids)
        else:
            self._overhead = tokenizer.num_special_tokens_to_add(True)
        if self._overhead >= config.max_length:
            raise ValueError(
                f"preprocessing.max_length={config.max_length} leaves no room for text "
                f"({self._overhead} tokens go to special tokens and the template)"
            )
        # Pair join tokenises prompt and response apart, so very long ones can be windowed
        # (rmserve.text.windows); a chat template is tokenised as one rendered text, whole.
        self._windows = windows and self._template is None and _cuts_exactly(tokenizer)
        self._layout = PairLayout.read(tokenizer) if self._template is None else None
        self._split = (
            None
            if self._template is None
            else self._verified_split(TemplateSplit.find(tokenizer, self._template))
        )

    @property
    def splits_template(self) -> bool:
        """Whether a group's prompt is tokenised once on this chat-template artifact."""
        return self._split is not None

    @property
    def pad_token_id(self) -> int:
        return self.config.pad_token_id

    def prepare(self, prompt: str, response: str) -> PreparedPair:
        return self.prepare_many([prompt], [response])[0]

    def prepare_many(self, prompts: Sequence[str], responses: Sequence[str]) -> list[PreparedPair]:
        return [pair for chunk in self.iter_many(prompts, responses) for pair in chunk]

    def iter_many(
        self, prompts: Sequence[str], responses: Sequence[str]
    ) -> Iterator[list[PreparedPair]]:
        """``prepare_many``'s pairs, a chunk of about TOKENIZE_CHUNK_CHARS at a time (each
        chunk is tokenised when it is asked for)."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        for start, end in _chunks(prompts, responses):
            try:
                chunk = self._prepare_chunk(prompts[start:end], responses[start:end])
            except UncuttableText as e:
                raise e.located(start + e.row, e.part) from None
            yield chunk

    def prepare_group(self, prompt: str, responses: Sequence[str]) -> list[PreparedPair]:
        """``prepare_many([prompt] * len(responses), responses)``, with the prompt tokenised
        once for the whole group: each pair then cuts its own copy of the prompt's tokens from
        the left, exactly as ``prepare`` would. A chat-template artifact does so where its
        template splits (``rmserve.text.template_split``); where it does not, every rendered
        conversation is tokenised whole, as ``Score`` does."""
        return [pair for chunk in self.iter_group(prompt, responses) for pair in chunk]

    def iter_group(self, prompt: str, responses: Sequence[str]) -> Iterator[list[PreparedPair]]:
        """``prepare_group``'s pairs, a chunk at a time; the prompt with the first chunk."""
        if self._template is not None:
            if self._split is None:
                yield from self.iter_many([prompt] * len(responses), responses)
            else:
                yield from self._split_group(prompt, responses, self._split, self.config.max_length)
            return
        chars = window_chars(self.config.max_length) if self._windows else None
        prompt_window = _cut(tail, prompt, chars, 0, "prompt")
        (prompt_encoding,) = self._encode_once([prompt_window.text], add_special_tokens=False)
        for start, end in _chunks([""] * len(responses), responses):
            group = responses[start:end]
            try:
                response_windows = [
                    _cut(head, r, chars, row, "response") for row, r in enumerate(group)
                ]
                encodings = self._encode_once([w.text for w in response_windows], False)
                chunk = self._assemble_rows(
                    [prompt] * len(group),
                    group,
                    [prompt_window] * len(group),
                    response_windows,
                    [prompt_encoding] * len(group),
                    encodings,
                )
            except UncuttableText as e:
                raise e.located(start + e.row, e.part) from None
            yield chunk

    def _chunk_spans(
        self, prompts: Sequence[str], responses: Sequence[str]
    ) -> list[tuple[int, int]]:
        return _chunks(prompts, responses)

    def _prepare_chunk(
        self, prompts: Sequence[str], responses: Sequence[str]
    ) -> list[PreparedPair]:
        if self._template is not None:
            return self._prepare_rendered(prompts, responses, self._template)
        chars = window_chars(self.config.max_length) if self._windows else None
        prompt_windows, response_windows = [], []
        for row, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
            prompt_windows.append(_cut(tail, prompt, chars, row, "prompt"))
            response_windows.append(_cut(head, response, chars, row, "response"))
        texts = [w.text for w in prompt_windows] + [w.text for w in response_windows]
        encodings = self._encode_once(texts, add_special_tokens=False)
        n = len(prompts)
        return self._assemble_rows(
            prompts, responses, prompt_windows, response_windows, encodings[:n], encodings[n:]
        )

    def _assemble_rows(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        prompt_windows: Sequence[Window],
        response_windows: Sequence[Window],
        prompt_encodings: Sequence[Encoding],
        response_encodings: Sequence[Encoding],
    ) -> list[PreparedPair]:
        """Pairs from encoded windows; a window too thin to cut falls back to whole texts."""
        pairs = []
        for row in range(len(prompts)):
            windows = (prompt_windows[row], response_windows[row])
            try:
                pairs.append(
                    self._assemble_pair(prompt_encodings[row], response_encodings[row], windows)
                )
            except UncuttableText as e:
                text = (prompts if e.part == "prompt" else responses)[row]
                if len(text) > WHOLE_TEXT_MAX_CHARS:
                    raise e.located(row, e.part) from None
                pairs.append(self._prepare_whole(prompts[row], responses[row], row))
        return pairs

    def _encode_once(
        self, texts: Sequence[str], add_special_tokens: bool, offsets: bool = False
    ) -> list[Encoding]:
        """One encoding per text, each distinct text encoded once (equal texts share the same
        ``Encoding`` object: it must not be mutated). A few texts are encoded one by one.
        ``offsets``: with character offsets (``encode_batch_fast`` leaves them out)."""
        slot_of: dict[str, int] = {}
        slots = [slot_of.setdefault(text, len(slot_of)) for text in texts]
        unique = list(slot_of)
        if len(unique) <= SEQUENTIAL_ENCODE_TEXTS:
            encoded = [encode_one(self.tokenizer, t, add_special_tokens) for t in unique]
        elif offsets:
            encoded = self.tokenizer.encode_batch(unique, add_special_tokens=add_special_tokens)
        else:
            encoded = self.tokenizer.encode_batch_fast(
                unique, add_special_tokens=add_special_tokens
            )
        return [encoded[slot] for slot in slots]

    def _prepare_whole(self, prompt: str, response: str, row: int) -> PreparedPair:
        """A pair with a window too thin to cut: texts up to WHOLE_TEXT_MAX_CHARS whole."""
        chars = window_chars(self.config.max_length)
        windows = (
            _cut(
                tail, prompt, chars if len(prompt) > WHOLE_TEXT_MAX_CHARS else None, row, "prompt"
            ),
            _cut(
                head,
                response,
                chars if len(response) > WHOLE_TEXT_MAX_CHARS else None,
                row,
                "response",
            ),
        )
        encoded = self.tokenizer.encode_batch_fast(
            [w.text for w in windows], add_special_tokens=False
        )
        try:
            return self._assemble_pair(encoded[0], encoded[1], windows)
        except UncuttableText as e:
            raise e.located(row, e.part) from None

    def _assemble_pair(
        self, prompt: Encoding, response: Encoding, windows: tuple[Window, Window] | None = None
    ) -> PreparedPair:
        """Never mutates ``prompt`` or ``response`` (another pair may share them)."""
        budget = self.config.max_length - self._overhead
        prompt_window, response_window = windows or (Window("", False), Window("", False))
        try:
            check_margin(response_window, len(response.ids), budget)
        except UncuttableText as e:
            raise e.located(-1, "response") from None
        prompt_ids, response_ids = prompt.ids, response.ids
        if len(response_ids) <= budget:
            try:
                check_margin(prompt_window, len(prompt_ids), budget - len(response_ids))
            except UncuttableText as e:
                raise e.located(-1, "prompt") from None
        truncated = response_truncated = False
        untruncated = self._overhead + len(prompt_ids) + len(response_ids)
        at_least = prompt_window.cut or response_window.cut
        if len(response_ids) > budget:
            prompt_ids, response_ids = [], response_ids[:budget]
            truncated = response_truncated = True
        elif len(prompt_ids) + len(response_ids) > budget:
            prompt_ids = prompt_ids[len(prompt_ids) + len(response_ids) - budget :]
            truncated = True
        if self._layout is not None:
            ids, types = self._layout.assemble(prompt_ids, response_ids)
            return PreparedPair(
                int64(ids), int64(types), truncated, response_truncated, untruncated, at_least
            )
        # A post-processor that is no fixed template: cut copies of the encodings.
        if response_truncated:
            response = _copy(response)
            response.truncate(budget, direction="right")
            prompt = _copy(prompt)
            prompt.truncate(0)
        elif truncated:
            prompt = _copy(prompt)
            prompt.truncate(len(prompt_ids), direction="left")
        merged = self.tokenizer.post_process(prompt, response, add_special_tokens=True)
        return PreparedPair(
            int64(merged.ids),
            int64(merged.type_ids),
            truncated,
            response_truncated,
            untruncated,
            at_least,
        )


def _cut(
    cut: Callable[[str, int], Window], text: str, chars: int | None, row: int, part: str
) -> Window:
    if chars is None:
        return Window(text, False)
    try:
        return cut(text, chars)
    except UncuttableText as e:
        if len(text) <= WHOLE_TEXT_MAX_CHARS:
            return Window(text, False)
        raise e.located(row, part) from None


def _chunks(prompts: Sequence[str], responses: Sequence[str]) -> list[tuple[int, int]]:
    """(start, end) rows of about TOKENIZE_CHUNK_CHARS characters each (at least one row)."""
    spans = []
    start = 0
    while start < len(prompts):
        end, chars = start, 0
        while end < len(prompts) and (end == start or chars < TOKENIZE_CHUNK_CHARS):
            chars += len(prompts[end]) + len(responses[end])
            end += 1
        spans.append((start, end))
        start = end
    return spans


def _copy(encoding: Encoding) -> Encoding:
    return Encoding.merge([encoding], growing_offsets=False)
