"""The artifact: the only thing that crosses from training to serving.

An artifact folder holds ``model.onnx``, ``tokenizer.json``, ``manifest.json`` and, for models
whose weights are kept outside the protobuf, one ONNX external-data file ``model.onnx.data``. The
manifest is defined here, once, and training imports it; ``rmserve.artifact.folder`` writes it
and reads it back with every file's size and sha256 checked.

Format 2 records each file's size and sha256, the weights' dtype, the parameter count and the
export's parity report. Format 1 manifests (a bare sha256 per file, fp32, no parity report) are
still read.

Since golden pairs exist, ``golden.json`` (``rmserve.artifact.golden``) is one more hashed file;
artifacts without it load as before.

An optional ``training`` section (``TrainingRecord``) says how ``rmserve train`` fitted the
weights (precision, gradient checkpointing, merged LoRA); manifests without it read as before.
So does an optional ``shape`` (``ModelShape``: hidden size, layers, heads, MLP width, whether the
attention is one fused kernel), which sizes the server's memory bound.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FORMAT_VERSION: Final = 2
READABLE_FORMATS = (1, 2)
MODEL_FILE = "model.onnx"
WEIGHTS_FILE = "model.onnx.data"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "manifest.json"
GOLDEN_FILE = "golden.json"  # golden pairs with reference rewards (rmserve.artifact.golden)
SERVED_FILES = (MODEL_FILE, TOKENIZER_FILE)
ARTIFACT_FILES = (MODEL_FILE, WEIGHTS_FILE, TOKENIZER_FILE, GOLDEN_FILE, MANIFEST_FILE)


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
    message first stripped as the template strips it (see ``rmserve.text.chat_render``)."""

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
    """How (prompt, response) becomes token ids; see ``rmserve.text.preprocess``."""

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


class EnsembleMember(_Strict):
    """One member of an ensemble artifact, in the order of the graph's output columns."""

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    backbone: str
    pooling: Literal["cls", "mean", "last"]
    normalization: Normalization = Field(
        description="The member's own held-out stats: z_k = (r_k - mean) / std."
    )
    metrics: dict[str, float] = Field(default_factory=dict)


class FileEntry(_Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int | None = Field(
        default=None, ge=0, description="File size; absent only in format 1 manifests."
    )


class ParityReport(_Strict):
    """How the written artifact scored the export's sample pairs against the fp32 torch model.

    ``rank_agreement``: over every two sample pairs whose reference rewards differ, the fraction
    the artifact puts in the same order (a tie in the artifact counts as disagreement).
    """

    status: Literal["checked", "unchecked"]
    reference: str = Field(description="What the artifact was compared with.")
    provider: str | None = Field(description="onnxruntime provider that ran the check.")
    pairs: int = Field(ge=0, description="Sample pairs scored.")
    max_abs_diff: float | None = None
    rank_agreement: float | None = Field(default=None, ge=0.0, le=1.0)
    batch_invariance_max_abs_diff: float | None = None
    tolerance: str = Field(description="What the export accepted, in words.")
    reason: str = Field(default="", description="Why the check did not run, when unchecked.")
    accuracy: float | None = Field(
        default=None, ge=0.0, le=1.0, description="int8: pairwise accuracy on the check's data."
    )
    reference_accuracy: float | None = Field(
        default=None, ge=0.0, le=1.0, description="int8: the fp32 source's accuracy on it."
    )
    spearman: float | None = Field(
        default=None, ge=-1.0, le=1.0, description="int8: Spearman of rewards vs the fp32 source."
    )


class LoraRecord(_Strict):
    """LoRA adapters the backbone was trained with; merged into the weights before export."""

    rank: int = Field(ge=1)
    alpha: float = Field(gt=0.0)
    dropout: float = Field(ge=0.0, lt=1.0)
    target_modules: list[str] = Field(min_length=1)
    merged: bool = Field(default=True, description="Always true: artifacts hold plain weights.")


class TrainingRecord(_Strict):
    """How ``rmserve train`` fitted the weights (absent from imported and older artifacts)."""

    precision: Literal["fp32", "bf16"] = Field(
        description="Compute precision of the training forward passes (bf16: autocast over "
        "fp32 weights, loss in fp32); the artifact's weights are ``dtype``."
    )
    gradient_checkpointing: bool
    lora: LoraRecord | None = Field(default=None, description="None: full fine-tuning.")
    trainable_parameters: int | None = Field(default=None, ge=0)


# How a graph computes attention, for the memory bound (``ModelShape.attention``).
Attention = Literal["fused", "materialized"]


class ModelShape(_Strict):
    """The network's shape, for the server's memory bound (its activations per token,
    ``rmserve.serving.memory_budget``). Optional: artifacts without it get an estimate."""

    hidden_size: int = Field(ge=1)
    intermediate_size: int = Field(ge=1, description="The MLP's inner width.")
    num_layers: int = Field(ge=1)
    num_attention_heads: int = Field(ge=1)
    num_key_value_heads: int | None = Field(
        default=None, ge=1, description="Grouped-query attention's K/V heads (absent: as many "
        "as the attention heads)."
    )  # fmt: skip
    head_dim: int | None = Field(
        default=None, ge=1, description="Absent: hidden_size / num_attention_heads."
    )
    attention: Attention = Field(
        description="'fused': one onnxruntime GroupQueryAttention kernel per layer (the "
        "'ort-gqa' export), which holds no [length, length] scores on the CPU or CUDA: memory "
        "linear in length; 'materialized': the graph holds the [batch, heads, length, length] "
        "scores and probabilities (an eager MatMul + Softmax export): quadratic in length."
    )
    attention_query_chunk: int | None = Field(
        default=None,
        ge=1,
        description="The export computes attention for at most this many queries at a time "
        "(chunked prefill): the scores held are heads x chunk x length, linear in length. "
        "Absent: every query at once.",
    )

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def head_dim_or_default(self) -> int:
        return self.head_dim or max(1, self.hidden_size // self.num_attention_heads)


class Manifest(_Strict):
    format_version: Literal[1, 2] = FORMAT_VERSION
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
    files: dict[str, FileEntry] = Field(
        description="Every file of the artifact but the manifest: size and sha256."
    )
    dtype: Literal["fp32", "fp16", "int8"] = Field(
        default="fp32",
        description="Weights and compute; inputs and rewards are fp32 always. 'int8': static "
        "QDQ quantisation by ``rmserve quantize`` (scales fixed at calibration).",
    )
    parameters: int | None = Field(default=None, ge=0, description="Model parameter count.")
    parity: ParityReport | None = Field(
        default=None, description="The export check's report; absent only in format 1."
    )
    training: TrainingRecord | None = Field(
        default=None, description="How the weights were trained; absent when not trained here."
    )
    shape: ModelShape | None = Field(
        default=None,
        description="The network's shape, for the server's memory bound; absent in older "
        "artifacts (the server then estimates it from the parameter count). Not written at all "
        "when absent.",
    )
    ensemble: list[EnsembleMember] | None = Field(
        default=None,
        min_length=2,
        description="Ensemble artifacts only: the members, one per column of the [B, K] output. "
        "Absent (not written at all) for a single model, so older readers still read those.",
    )
    ensemble_kind: Literal["shared"] | None = Field(
        default=None,
        description="How an ensemble's members were built: absent for full models (one "
        "backbone each), 'shared' for K linear heads on one backbone trained jointly. Not "
        "written at all when absent.",
    )

    @model_validator(mode="before")
    @classmethod
    def _format_1_digests(cls, data: Any) -> Any:
        """Format 1 recorded a bare sha256 per file."""
        if isinstance(data, dict) and data.get("format_version") == 1:
            files = data.get("files")
            if isinstance(files, dict):
                entries = {n: {"sha256": v} if isinstance(v, str) else v for n, v in files.items()}
                data = {**data, "files": entries}
        return data

    @model_validator(mode="after")
    def _format_2_complete(self) -> Manifest:
        if self.format_version >= 2:
            unsized = sorted(name for name, entry in self.files.items() if entry.bytes is None)
            if unsized:
                raise ValueError(f"no size recorded for {', '.join(unsized)}")
            if self.parity is None:
                raise ValueError("format 2 records the export's parity report")
        return self

    @model_validator(mode="after")
    def _ensemble_normalization_is_identity(self) -> Manifest:
        # An ensemble's served reward is already in normalised units (members are normalised
        # with their own stats before aggregation), so its top-level stats are the identity.
        if self.ensemble is not None and (
            self.normalization.mean != 0.0 or self.normalization.std != 1.0
        ):
            raise ValueError("an ensemble's normalization is mean 0, std 1 (members carry theirs)")
        return self

    @model_validator(mode="after")
    def _kind_needs_an_ensemble(self) -> Manifest:
        if self.ensemble_kind is not None and self.ensemble is None:
            raise ValueError("ensemble_kind is for ensembles only (no ensemble list given)")
        return self

    @property
    def members(self) -> int:
        """Output columns: K for an ensemble, 0 for a single model (output [B])."""
        return 0 if self.ensemble is None else len(self.ensemble)

    def normalize(self, reward: float) -> float:
        return (reward - self.normalization.mean) / self.normalization.std
