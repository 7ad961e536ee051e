"""The chat-template half of the Preprocessor ('template' join): the whole rendered conversation
tokenised in one piece and cut by its messages' character spans, and a group's prompt tokenised
once through a template split that was verified against whole renderings on check texts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from functools import partial

import numpy as np
from tokenizers import Encoding, Tokenizer

from rmserve.artifact.manifest import ChatTemplate, Preprocessing
from rmserve.text.chat_render import Rendered, render
from rmserve.text.prepared import PreparedPair, encode_one, int64
from rmserve.text.template_split import EncodedPart, TemplateSplit, assemble
from rmserve.text.windows import WHOLE_TEXT_MAX_CHARS, UncuttableText, sample_text

log = logging.getLogger(__name__)

# A template split is also checked cut to this many tokens more than the template takes.
SPLIT_CHECK_ROOM_TOKENS = 6


class TemplatePairs:
    """Mixed into ``rmserve.text.preprocess.Preprocessor``, which provides what is declared
    here: its tokenizer and config, the template's overhead in tokens, how it encodes texts
    and how it splits rows into chunks."""

    tokenizer: Tokenizer
    config: Preprocessing
    _overhead: int

    def _encode_once(
        self, texts: Sequence[str], add_special_tokens: bool, offsets: bool = False
    ) -> list[Encoding]:
        raise NotImplementedError

    def _chunk_spans(
        self, prompts: Sequence[str], responses: Sequence[str]
    ) -> list[tuple[int, int]]:
        raise NotImplementedError

    def _split_group(
        self, prompt: str, responses: Sequence[str], split: TemplateSplit, max_length: int
    ) -> Iterator[list[PreparedPair]]:
        """A template group from its prompt part, tokenised once, and each response's part."""
        _check_whole(prompt, 0, "prompt")
        prompt_part = split.prompt_part(prompt)
        encoded = encode_one(self.tokenizer, prompt_part.text, add_special_tokens=False)
        prompt_side = EncodedPart.of(prompt_part, encoded)
        del encoded
        layout = split.layout
        fixed_tokens = len(layout.before) + len(prompt_side.ids) + len(layout.after)
        for start, end in self._chunk_spans([""] * len(responses), responses):
            group = responses[start:end]
            for row, response in enumerate(group, start):
                _check_whole(response, row, "response")
            parts = [split.response_part(r) for r in group]
            texts = [p.text for p in parts]
            encodings = self._encode_once(texts, add_special_tokens=False, offsets=True)
            chunk = []
            for part, encoding in zip(parts, encodings, strict=True):
                ids, types, truncated, response_truncated = assemble(
                    split.layout, prompt_side, EncodedPart.of(part, encoding), max_length
                )
                untruncated = fixed_tokens + len(encoding.ids)
                chunk.append(PreparedPair(ids, types, truncated, response_truncated, untruncated))
            yield chunk

    def _verified_split(self, split: TemplateSplit | None) -> TemplateSplit | None:
        """``split`` if its conversations equal whole renderings tokenised on the check texts
        (fitting and cut to a small max_length), else None: every conversation whole."""
        if split is None:
            return None
        small = min(self.config.max_length, self._overhead + SPLIT_CHECK_ROOM_TOKENS)
        for max_length in sorted({small, self.config.max_length}):
            for prompt, response in _check_pairs(split.template):
                whole = _outcome(
                    partial(
                        self._prepare_rendered, [prompt], [response], split.template, max_length
                    )
                )
                parts = _outcome(partial(self.prepare_split, split, prompt, [response], max_length))
                if whole != parts:
                    log.info(
                        "this chat template's conversations do not tokenise the same in two "
                        "parts: a group's prompt is tokenised with each response"
                    )
                    return None
        return split

    def prepare_split(
        self, split: TemplateSplit, prompt: str, responses: Sequence[str], max_length: int
    ) -> list[PreparedPair]:
        """A template group through ``split`` (its check, and tests)."""
        return [
            p for chunk in self._split_group(prompt, responses, split, max_length) for p in chunk
        ]

    def _prepare_rendered(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        template: ChatTemplate,
        max_length: int | None = None,
    ) -> list[PreparedPair]:
        """The whole rendered conversation is tokenised in one piece, as the model's own
        training code tokenised it (pieces tokenised apart can merge differently at their
        edges). Only texts over max_length are tokenised again, with offsets, to be cut.
        Texts are not windowed here, so each may have at most WHOLE_TEXT_MAX_CHARS."""
        limit = self.config.max_length if max_length is None else max_length
        for row, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
            _check_whole(prompt, row, "prompt")
            _check_whole(response, row, "response")
        rendered = [render(template, p, r) for p, r in zip(prompts, responses, strict=True)]
        encodings = self._encode_once([r.text for r in rendered], add_special_tokens=True)
        pairs = []
        for text, encoding in zip(rendered, encodings, strict=True):
            if len(encoding.ids) <= limit:
                pairs.append(
                    PreparedPair(int64(encoding.ids), int64(encoding.type_ids), False, False)
                )
            else:
                pairs.append(self._truncate_rendered(text, limit, len(encoding.ids)))
        return pairs

    def _truncate_rendered(
        self, rendered: Rendered, max_length: int, untruncated: int
    ) -> PreparedPair:
        """Cut the prompt's tokens from the left; if the response alone does not fit, drop the
        prompt and cut the response's tokens from the right. A token belongs to a message when
        its characters overlap the message's span; template and special tokens always stay."""
        encoding = encode_one(self.tokenizer, rendered.text, add_special_tokens=True)
        prompt_tokens: list[int] = []
        response_tokens: list[int] = []
        for index, (sequence, (start, end)) in enumerate(
            zip(encoding.sequence_ids, encoding.offsets, strict=True)
        ):
            if sequence is None:
                continue
            if _overlaps(start, end, rendered.prompt):
                prompt_tokens.append(index)
            elif _overlaps(start, end, rendered.response):
                response_tokens.append(index)
        fixed = len(encoding.ids) - len(prompt_tokens) - len(response_tokens)
        budget = max_length - fixed
        response_truncated = len(response_tokens) > budget
        if response_truncated:
            dropped = set(prompt_tokens) | set(response_tokens[max(budget, 0) :])
        else:
            dropped = set(prompt_tokens[: len(prompt_tokens) + len(response_tokens) - budget])
        kept = [i for i in range(len(encoding.ids)) if i not in dropped]
        if len(kept) > max_length:
            raise ValueError(
                f"{len(kept)} tokens remain after cutting prompt and response to fit "
                f"max_length={max_length}: the template alone does not fit"
            )
        rows = np.array(kept, dtype=np.intp)
        return PreparedPair(
            int64(encoding.ids)[rows],
            int64(encoding.type_ids)[rows],
            True,
            response_truncated,
            untruncated,
        )


def _check_whole(text: str, row: int, part: str) -> None:
    """A chat-template conversation is tokenised whole: each text up to WHOLE_TEXT_MAX_CHARS."""
    if len(text) > WHOLE_TEXT_MAX_CHARS:
        raise UncuttableText(
            f"{len(text)} characters; a chat-template model's conversation is "
            f"tokenised whole, with at most {WHOLE_TEXT_MAX_CHARS} per text",
            row,
            part,
        )


def _check_pairs(template: ChatTemplate) -> list[tuple[str, str]]:
    """(prompt, response) texts a template split must tokenise as whole renderings do: empty,
    short, long enough to cut, padded with spaces and newlines, holding the template's own text."""
    words = sample_text(12)
    own = template.prefix + template.separator + template.suffix
    pairs = [
        ("", ""),
        ("Hi", "Hello."),
        (words, "Fine."),
        (sample_text(3), words),
        ("  spaced prompt \n\n", "\n\n spaced response  "),
        (f"ends with the template {own}", f"{own} starts with it"),
    ]
    rule = template.reasoning
    if rule is not None:
        pairs.append(("Why?", f"{rule.start}\nThinking it over.\n{rule.end}\n\nBecause."))
    return pairs


def _outcome(prepare: Callable[[], list[PreparedPair]]) -> list[PreparedPair] | str:
    """The pairs, or the error's type (a check compares what happened, not its wording)."""
    try:
        return prepare()
    except ValueError as e:
        return type(e).__name__


def _overlaps(start: int, end: int, span: tuple[int, int]) -> bool:
    return start < span[1] and end > span[0]
