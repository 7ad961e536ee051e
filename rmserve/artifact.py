"""The artifact: the only thing that crosses from training to serving.

An artifact folder holds ``model.onnx``, ``tokenizer.json`` and ``manifest.json``. The manifest
is defined here, once, and training imports it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

FORMAT_VERSION = 1
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "manifest.json"
SERVED_FILES = (MODEL_FILE, TOKENIZER_FILE)


class ArtifactError(Exception):
    """The artifact folder cannot be served as it is; the message says why in one line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Strip = Literal["none", "whitespace", "newlines"]
"""What a chat template strips from one end of a message: nothing, all whitespace (Jinja's
``trim``, Python's ``str.strip()``) or newlines only (``lstrip('\\n')``)."""


class ReasoningSplit(_Strict):
    """A template that lifts reasoning out of the response (Qwen3): when the response holds
    ``end``, the text before the first ``end`` (after its last ``start``), stripped of newlines,
    is rendered just before ``close`` and the text after the last ``end`` follows ``close``.
    ``close`` is the tail of ``separator``: an empty reasoning renders as the separator itself."""

    start: str = Field(min_length=1)
    end: str = Field(min_length=1)
    close: str = Field(min_length=1)


class ChatTemplate(_Strict):
    """Rendered once at export: text = prefix + prompt + separator + response + suffix, each
    message first stripped as the template strips it (see ``rmserve.chat_render``)."""

    prefix: str = ""
    separator: str = ""
    suffix: str = ""
    prompt_lstrip: Strip = "none"
    prompt_rstrip: Strip = "none"
    response_lstrip: Strip = "none"
    response_rstrip: Strip = "none"
    reasoning: ReasoningSplit | None = None

    @model_validator(mode="after")
    def _separator_holds_empty_reasoning(self) -> ChatTemplate:
        if self.reasoning is not None and not self.separator.endswith(self.reasoning.close):
            raise ValueError("separator must end with reasoning.close (an empty reasoning block)")
        return self


class Preprocessing(_Strict):
    """How (prompt, response) becomes token ids; see ``rmserve.preprocess``."""

    join: Literal["pair", "template"] = Field(
        description="'pair': the tokenizer's pair encoding ([CLS] x [SEP] y [SEP] for BERT); "
        "'template': chat-template text pieces around prompt and response."
    )
    template: ChatTemplate | None = None
    max_length: int = Field(
        gt=4, description="Most tokens the model sees, special tokens included."
    )
    truncation: Literal["prompt_left_then_response_right"] = Field(
        default="prompt_left_then_response_right",
        description="Over max_length the prompt is cut from the left; if the response alone does "
        "not fit, the prompt is dropped and the response is cut from the right (reported).",
    )
    pad_token_id: int = Field(ge=0)


class Normalization(_Strict):
    """Mean and std of rewards over all held-out responses (chosen and rejected)."""

    mean: float
    std: float = Field(gt=0.0)


class Manifest(_Strict):
    format_version: int = FORMAT_VERSION
    name: str = Field(min_length=1)
    version: str = Field(min_length=1, description="Changes whenever the weights change.")
    backbone: str
    architecture: Literal["encoder", "decoder"]
    input_names: list[str] = Field(min_length=1)
    output_name: str = "rewards"
    pooling: Literal["cls", "mean", "last"]
    preprocessing: Preprocessing
    normalization: Normalization
    optimization: str = Field(description="Graph optimisation applied at export, e.g. 'ort-bert'.")
    metrics: dict[str, float] = Field(default_factory=dict)
    files: dict[str, str] = Field(description="sha256 hex digest of each served file.")

    def normalize(self, reward: float) -> float:
        return (reward - self.normalization.mean) / self.normalization.std


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digests(folder: Path) -> dict[str, str]:
    return {name: sha256_file(folder / name) for name in SERVED_FILES}


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    path = folder / MANIFEST_FILE
    path.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


def read_manifest(folder: Path) -> Manifest:
    """Read and verify an artifact folder: every file present and matching its sha256."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise ArtifactError(f"{folder}: no {MANIFEST_FILE} (is this an rmserve artifact folder?)")
    try:
        manifest = Manifest.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ArtifactError(f"{path}: invalid manifest field '{where}': {first['msg']}") from e
    if manifest.format_version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format_version {manifest.format_version} is not supported "
            f"(this rmserve reads {FORMAT_VERSION})"
        )
    for name in SERVED_FILES:
        file = folder / name
        if not file.is_file():
            raise ArtifactError(f"{folder}: missing file {name}")
        expected = manifest.files.get(name)
        if expected is None:
            raise ArtifactError(f"{path}: no sha256 recorded for {name}")
        actual = sha256_file(file)
        if actual != expected:
            raise ArtifactError(
                f"{file}: sha256 {actual[:12]}… does not match the manifest's {expected[:12]}… "
                "(file changed after export?)"
            )
    return manifest
