"""Golden pairs: a few dozen (prompt, response) pairs an artifact carries with the rewards its
source model gave them (torch fp32), so every load, and a canary while serving, can check that
the model as it runs here still scores like the model that was exported.

``golden.json`` sits beside ``model.onnx`` and is hashed in the manifest's ``files`` like every
other file. Each pair keeps its texts *and* the token ids the preprocessor produced at export:
re-tokenising the texts at load catches a changed tokenizer (or ``tokenizers`` library) before
any reward is compared. The tolerance is the artifact dtype's (``GoldenTolerance``), written out
so the server needs no table of its own. Artifacts written before golden pairs existed have no
``golden.json`` and load as before. The checks themselves live in ``rmserve.serving.golden``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rmserve.artifact.manifest import GOLDEN_FILE as GOLDEN_FILE
from rmserve.artifact.manifest import MANIFEST_FILE, ArtifactError, Manifest

GOLDEN_FORMAT: Final = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GoldenTolerance(_Strict):
    """A pair drifts when |reward − reference| > atol + rtol·|reference| (any member of an
    ensemble)."""

    atol: float = Field(ge=0.0)
    rtol: float = Field(default=0.0, ge=0.0)
    basis: str = Field(description="Where the bound comes from, in words.")

    def describe(self) -> str:
        bound = f"{self.atol:.1e}" + (f" + {self.rtol:.0e}·|reference|" if self.rtol else "")
        return f"every |Δ| ≤ {bound} ({self.basis})"


class GoldenPair(_Strict):
    prompt: str
    response: str
    input_ids: list[int] = Field(min_length=1)
    token_type_ids: list[int]
    truncated: bool
    response_truncated: bool
    reward: float | list[float] = Field(
        description="The reference reward; one per member ([K]) for an ensemble."
    )

    @model_validator(mode="after")
    def _ids_line_up(self) -> GoldenPair:
        if len(self.token_type_ids) != len(self.input_ids):
            raise ValueError(
                f"{len(self.token_type_ids)} token_type_ids for {len(self.input_ids)} input_ids"
            )
        return self


class GoldenSet(_Strict):
    format_version: Literal[1] = GOLDEN_FORMAT
    reference: str = Field(description="What gave the reference rewards, e.g. 'torch fp32'.")
    dtype: Literal["fp32", "fp16", "int8"] = Field(description="The dtype the tolerance is for.")
    tolerance: GoldenTolerance
    pairs: list[GoldenPair] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_reward_shape(self) -> GoldenSet:
        shapes = {len(p.reward) if isinstance(p.reward, list) else 0 for p in self.pairs}
        if len(shapes) > 1:
            raise ValueError("every pair's reward has the same shape (a number, or K numbers)")
        return self

    @property
    def members(self) -> int:
        """Rewards per pair: 0 for a single model (one number), K for an ensemble."""
        first = self.pairs[0].reward
        return len(first) if isinstance(first, list) else 0


def write_golden(folder: Path, golden: GoldenSet) -> Path:
    """One pair a line (token ids included), the rest indented: readable and diffable."""
    path = Path(folder) / GOLDEN_FILE
    head = golden.model_dump(mode="json", exclude={"pairs"})
    lines = json.dumps(head, indent=1, ensure_ascii=False)[:-2]  # without the closing "\n}"
    pairs = ",\n  ".join(
        json.dumps(p.model_dump(mode="json"), ensure_ascii=False) for p in golden.pairs
    )
    path.write_text(f'{lines},\n "pairs": [\n  {pairs}\n ]\n}}\n', encoding="utf-8")
    return path


def read_golden(folder: Path, manifest: Manifest) -> GoldenSet | None:
    """The artifact's golden pairs; None when it has none. Call after ``read_manifest`` (which
    checked the file's size and sha256). A ``golden.json`` the manifest does not list is
    refused: the file would be unverified."""
    folder = Path(folder)
    path = folder / GOLDEN_FILE
    if GOLDEN_FILE not in manifest.files:
        if path.exists():
            raise ArtifactError(
                f"{path}: not listed in {MANIFEST_FILE} (added after export, or an incomplete "
                "export?)"
            )
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ArtifactError(f"{path}: not valid JSON ({e})") from e
    try:
        golden = GoldenSet.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        field = f"field '{where}'" if where else "golden set"
        raise ArtifactError(f"{path}: invalid {field}: {first['msg']}") from e
    if golden.members != manifest.members:
        raise ArtifactError(
            f"{path}: {golden.members or 1} reward(s) per pair, the model has "
            f"{manifest.members or 1}"
        )
    if golden.dtype != manifest.dtype:
        raise ArtifactError(
            f"{path}: tolerance for {golden.dtype}, the weights are {manifest.dtype}"
        )
    return golden
