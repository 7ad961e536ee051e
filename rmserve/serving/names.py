"""Names of served models: what requests, metrics labels and the CLI call a model."""

from __future__ import annotations

import re

# Short enough for a metrics label and a URL query, plain enough to need no quoting anywhere.
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_model_name(name: str) -> str:
    """``name`` when it is a valid model name, else ``ValueError`` saying what is allowed."""
    if not MODEL_NAME.fullmatch(name):
        raise ValueError(
            f"model name {name!r}: use 1 to 64 letters, digits, '.', '_' or '-', starting with "
            "a letter or digit"
        )
    return name
