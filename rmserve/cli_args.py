"""CLI flags built from a pydantic-settings class: one field is a flag, an env var, a default
and a doc. Flags given on the command line override the environment, which overrides defaults."""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Collection
from typing import Any, Literal, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _field_flag(settings_cls: type[BaseSettings], name: str) -> str:
    """The flag of a field: its name, or the ``cli_flag`` its ``json_schema_extra`` gives."""
    extra = settings_cls.model_fields[name].json_schema_extra
    return _flag(str(extra.get("cli_flag", name)) if isinstance(extra, dict) else name)


def add_settings_arguments(
    parser: argparse.ArgumentParser,
    settings_cls: type[BaseSettings],
    only: Collection[str] | None = None,
) -> None:
    """One flag per field of ``settings_cls`` (only the fields named in ``only``, if given)."""
    prefix = str(settings_cls.model_config.get("env_prefix", ""))
    for name, field in settings_cls.model_fields.items():
        if only is not None and name not in only:
            continue
        annotation = field.annotation
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0] if len(args) == 1 else str
            origin = typing.get_origin(annotation)
        env = f"{prefix}{name}".upper()
        if field.is_required():
            given = "required"
        else:
            given = f"default {field.get_default(call_default_factory=True)!r}"
        doc = f"{field.description or ''} [env {env}; {given}]"
        kwargs: dict[str, Any] = {
            "help": doc.replace("%", "%%"),
            "default": argparse.SUPPRESS,
            "dest": name,
        }
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        flag = _field_flag(settings_cls, name)
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is Literal:
            kwargs["choices"] = list(typing.get_args(annotation))
        elif origin is dict:  # repeated KEY=VALUE flags collected into one mapping
            kwargs["action"] = KeyValueAction
            kwargs["metavar"] = str(extra.get("cli_metavar", "KEY=VALUE"))
        parser.add_argument(flag, **kwargs)


class KeyValueAction(argparse.Action):
    """``--model a=/x --model b=/y`` → ``{"a": "/x", "b": "/y"}``; a key given twice is an
    error, not a silent overwrite."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        key, sep, value = str(values).partition("=")
        if not sep or not key or not value:
            parser.error(f"{option_string} takes {self.metavar}, got {values!r}")
        collected = dict(getattr(namespace, self.dest, None) or {})
        if key in collected:
            parser.error(f"{option_string} {key}= given twice")
        collected[key] = value
        setattr(namespace, self.dest, collected)


def settings_from_args(settings_cls: type[S], args: argparse.Namespace) -> S:
    given = {k: v for k, v in vars(args).items() if k in settings_cls.model_fields}
    try:
        return settings_cls(**given)
    except ValidationError as e:
        lines = []
        prefix = str(settings_cls.model_config.get("env_prefix", ""))
        for err in e.errors():
            if not err["loc"]:  # a rule across several settings
                lines.append(f"invalid settings: {err['msg']}")
                continue
            name = str(err["loc"][0])
            flag = _field_flag(settings_cls, name)
            lines.append(
                f"invalid setting {flag} / {prefix}{name.upper()}: {err['msg']} "
                f"(got {err.get('input')!r})"
            )
        raise SystemExit("\n".join(lines)) from None
