"""Read pairwise preference data in the JSONL formats TRL users already have.

One JSON object per line (blank lines are ignored), plain or gzip-compressed:

- explicit prompt: ``{"prompt": str, "chosen": str, "rejected": str}``;
- implicit prompt (Anthropic HH-RLHF): ``{"chosen": str, "rejected": str}``, two whole dialogues
  that share a prefix; see ``rmserve.text.conversation.split_dialogue``;
- conversational: the same fields as lists of ``{"role", "content"}`` messages, with or without
  ``prompt``; rendered with ``rmserve.text.conversation`` so they match their HH-text spelling;
- an optional numeric ``margin`` (null means absent). Other keys are ignored.

Responses never carry the separating space after the prompt's ``\\n\\nAssistant:`` marker.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rmserve.text.conversation import (
    MessageError,
    render_messages,
    render_prompt,
    render_response,
    split_dialogue,
    validate_messages,
)

logger = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
TEXT_FIELDS = ("prompt", "chosen", "rejected")


@dataclass(frozen=True, slots=True)
class PreferencePair:
    prompt: str
    chosen: str  # response text only (prompt removed)
    rejected: str
    margin: float = 0.0


class DataError(ValueError):
    """A preference file cannot be read; the message names the file, line and field."""


@dataclass(frozen=True)
class LoadResult:
    pairs: list[PreferencePair]
    skipped: int = 0  # only non-zero when skip_bad=True
    skipped_lines: list[int] = field(default_factory=list)


class _FieldError(ValueError):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"field {name!r}: {reason}")


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def parse_record(record: object) -> PreferencePair:
    """One decoded JSON line -> a pair; raises ValueError naming the field."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {_type_name(record)}")
    for name in ("chosen", "rejected"):
        if name not in record:
            raise _FieldError(name, "missing")
    present = [name for name in TEXT_FIELDS if name in record]
    values = {name: record[name] for name in present}
    for name, value in values.items():
        if not isinstance(value, str | list):
            raise _FieldError(
                name, f"expected a string or a list of messages, got {_type_name(value)}"
            )
    first = present[0]
    conversational = isinstance(values[first], list)
    for name in present[1:]:
        if isinstance(values[name], list) != conversational:
            expected = "a list of messages" if conversational else "a string"
            raise _FieldError(
                name, f"expected {expected} like {first!r}, got {_type_name(values[name])}"
            )
    margin = _parse_margin(record.get("margin"))
    if conversational:
        return PreferencePair(*_conversational_texts(values), margin)
    texts = {name: str(value) for name, value in values.items()}
    if "prompt" not in texts:
        return PreferencePair(*split_dialogue(texts["chosen"], texts["rejected"]), margin)
    return PreferencePair(texts["prompt"], texts["chosen"], texts["rejected"], margin)


def _parse_margin(value: object) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _FieldError("margin", f"expected a number, got {_type_name(value)}")
    if not math.isfinite(value):
        raise _FieldError("margin", f"expected a finite number, got {value}")
    return float(value)


def _conversational_texts(values: dict[str, object]) -> tuple[str, str, str]:
    messages = {}
    for name, value in values.items():
        try:
            messages[name] = validate_messages(value)
        except MessageError as error:
            raise _FieldError(f"{name}{error.location}", error.reason) from None
    if "prompt" not in messages:
        return split_dialogue(
            render_messages(messages["chosen"]), render_messages(messages["rejected"])
        )
    responses = []
    for name in ("chosen", "rejected"):
        try:
            responses.append(render_response(messages[name]))
        except MessageError as error:
            raise _FieldError(f"{name}{error.location}", error.reason) from None
    return render_prompt(messages["prompt"]), responses[0], responses[1]


def _open(path: Path) -> gzip.GzipFile | io.BufferedReader:
    with path.open("rb") as probe:
        compressed = probe.read(2) == GZIP_MAGIC
    return gzip.open(path, "rb") if compressed else path.open("rb")


def _numbered_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with _open(path) as stream:
        number = 0
        try:
            for number, line in enumerate(stream, start=1):
                yield number, line
        except (OSError, EOFError) as error:
            raise DataError(f"{path}:{number + 1}: cannot decompress: {error}") from error


def load_preferences(path: Path | str, skip_bad: bool = False) -> LoadResult:
    """Read a ``.jsonl`` or ``.jsonl.gz`` preference file.

    A malformed line raises DataError, unless ``skip_bad``: then it is counted, logged and its
    line number returned. A file without any pair is an error either way.
    """
    path = Path(path)
    pairs: list[PreferencePair] = []
    skipped_lines: list[int] = []
    first_error = ""
    for number, raw in _numbered_lines(path):
        try:
            text = raw.decode("utf-8")
            if not text.strip():
                continue
            pair = parse_record(json.loads(text))
        except UnicodeDecodeError as error:
            message = f"{path}:{number}: not valid UTF-8 ({error.reason})"
        except json.JSONDecodeError as error:
            message = f"{path}:{number}: invalid JSON: {error.msg} at column {error.colno}"
        except ValueError as error:
            message = f"{path}:{number}: {error}"
        else:
            pairs.append(pair)
            continue
        if not skip_bad:
            raise DataError(message)
        skipped_lines.append(number)
        first_error = first_error or message
    if skipped_lines:
        logger.warning(
            "%s: skipped %d malformed line(s) (lines %s); first error: %s",
            path,
            len(skipped_lines),
            ", ".join(map(str, skipped_lines[:10])) + (", …" if len(skipped_lines) > 10 else ""),
            first_error,
        )
    if not pairs:
        raise DataError(f"{path}: no preference pairs")
    return LoadResult(pairs, len(skipped_lines), skipped_lines)
