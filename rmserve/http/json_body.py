"""Reading a JSON request body, with errors that name what is wrong."""

from __future__ import annotations

import json
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
    return body


def optional_bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidRequest(f"{key} must be true or false")
    return value
