"""The ``ServerSettings`` fields that name what a server serves: one artifact, more models by
name, or a models file, and which is the default (resolved by ``rmserve.server.model_set``).
Never built alone: ``ServerSettings`` takes these fields, flags and ``RMSERVE_*`` variables."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from rmserve.serving.names import check_model_name


class ServedModelSettings(BaseModel):
    artifact: Path | None = Field(
        default=None,
        description="Artifact folder to serve (model.onnx [+ model.onnx.data], tokenizer.json, "
        "manifest.json), named by its manifest's name and the default model. Required unless "
        "models or models_file names the models.",
    )
    models: dict[str, Path] = Field(
        default_factory=dict,
        json_schema_extra={"cli_flag": "model", "cli_metavar": "NAME=PATH"},
        description="More models to serve in this server, by name: repeat --model NAME=PATH "
        '(env: a JSON object, {"helpful": "/models/helpful"}). Each has its own session, '
        "tokenizer and batcher; requests name one (unnamed ones go to default_model). Names: "
        "letters, digits, '.', '_', '-' (docs/guides/serving.md#several-models).",
    )
    models_file: Path | None = Field(
        default=None,
        description="A TOML file naming models to serve, as models does: a [models] table of "
        'NAME = "PATH" (relative paths are read from the file\'s folder) and an optional '
        "default = NAME.",
    )
    default_model: str | None = Field(
        default=None,
        description="The model a request that names none is scored with (unset: the artifact "
        "model, else the first of models, else models_file's default or its first model).",
    )

    @field_validator("models", mode="before")
    @classmethod
    def _models_from_json(cls, value: object) -> object:
        """A JSON object given as text (a ConfigMap value), as the environment variable is."""
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError as e:
                raise ValueError(f'models: not a JSON object of NAME: "PATH" ({e})') from None
        return value

    @field_validator("models")
    @classmethod
    def _model_names(cls, value: dict[str, Path]) -> dict[str, Path]:
        for name in value:
            check_model_name(name)
        return value
