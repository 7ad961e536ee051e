"""Reading a JSON request body, with errors that name what is wrong."""

from __future__ import annotations

import json
import re
from typing import Any

from rmserve.errors import InvalidRequest


def json_object(raw: bytes, shape: str) -> dict[str, Any]:
    """The body as a JSON object; ``shape`` (e.g. ``{"input": ...}``) is named if it is not."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise InvalidRequest(f"body is not JSON: {e}") from None
    except RecursionError:  # json's decoder recurses once per level of [ or {
        raise InvalidRequest("body is not JSON this server reads: nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"body must be an object {shape}")
    check_text(body)
    return body


# A UTF-16 surrogate on its own: JSON can spell it ("\\ud800"), UTF-8 and the tokenizer cannot.
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(body: dict[str, Any]) -> None:
    """Every string in the body is text the tokenizer takes, or ``InvalidRequest`` naming the
    first one that is not (``query[3]``, ``messages[0].content``)."""
    stack: list[tuple[str, Any]] = [(f"key {key!r}", key) for key in body]  # checked last
    stack += [(key, value) for key, value in reversed(body.items())]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            found = _SURROGATE.search(value)
            if found is not None:
                code = ord(found.group())
                raise InvalidRequest(
                    f"{where}: not valid Unicode text (a lone surrogate \\u{code:04x} at "
                    f"character {found.start()}); send text that encodes as UTF-8"
                )
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item) for i, item in reversed(list(enumerate(value))))
        elif isinstance(value, dict):
            stack.extend((f"{where}: key {k!r}", k) for k in value)
            stack.extend((f"{where}.{k}", v) for k, v in reversed(value.items()))


def optional_bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidRequest(f"{key} must be true or false")
    return value
