"""Which artifacts a server serves, by name, from its settings: ``artifact`` (named by its
manifest), ``models`` (``--model NAME=PATH``) and ``models_file``, in that order, and which of
them is the default (docs/guides/serving.md#several-models).

A models file is TOML::

    default = "helpful"            # optional: else the first model
    [models]
    helpful = "/models/helpful"
    safe = "safe-rm"               # relative: read from the file's folder
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from rmserve.artifact.manifest import ArtifactError
from rmserve.server.settings import ServerSettings
from rmserve.serving.names import check_model_name


@dataclass(frozen=True)
class ModelSource:
    name: str | None  # None: the artifact's manifest name
    folder: Path


@dataclass(frozen=True)
class ModelSet:
    sources: list[ModelSource]
    default: str | None  # None: the first source's name


def read_models_file(path: Path) -> tuple[dict[str, Path], str | None]:
    """The models a TOML models file names and its default; ``ArtifactError`` saying what is
    wrong with it."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ArtifactError(f"models_file {path}: {e}") from None
    unknown = set(data) - {"models", "default"}
    if unknown:
        raise ArtifactError(f"models_file {path}: unknown keys {sorted(unknown)}")
    table = data.get("models")
    if not isinstance(table, dict) or not table:
        raise ArtifactError(f'models_file {path}: needs a [models] table of NAME = "PATH"')
    models = {}
    for name, folder in table.items():
        if not isinstance(folder, str):
            raise ArtifactError(f"models_file {path}: models.{name} must be a path string")
        try:
            models[check_model_name(name)] = path.parent / folder
        except ValueError as e:
            raise ArtifactError(f"models_file {path}: {e}") from None
    default = data.get("default")
    if default is not None and not isinstance(default, str):
        raise ArtifactError(f"models_file {path}: default must be a model name")
    return models, default


def model_set(settings: ServerSettings) -> ModelSet:
    sources = []
    if settings.artifact is not None:
        sources.append(ModelSource(None, settings.artifact))
    sources += [ModelSource(name, Path(folder)) for name, folder in settings.models.items()]
    default = settings.default_model
    if settings.models_file is not None:
        from_file, file_default = read_models_file(settings.models_file)
        sources += [ModelSource(name, folder) for name, folder in from_file.items()]
        if default is None and not sources[: -len(from_file)]:
            default = file_default
    return ModelSet(sources, default)


def check_names(names: list[str], default: str) -> None:
    """Each served name once, and the default among them (``ArtifactError`` otherwise)."""
    seen = set()
    for name in names:
        if name in seen:
            raise ArtifactError(
                f"model {name!r} is named twice (an --artifact is named by its manifest's name; "
                "give the other a different --model NAME)"
            )
        seen.add(name)
    if default not in seen:
        raise ArtifactError(
            f"default_model {default!r} is not one of the served models: {', '.join(names)}"
        )
