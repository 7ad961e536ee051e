"""The network's shape recorded in the manifest, for the server's memory bound
(``rmserve.serving.activations``): read from the backbone's Hugging Face config."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from rmserve.artifact.manifest import ModelShape


def _config_of(scorer: Any) -> Any:
    for name in ("backbone", "classifier"):
        model = getattr(scorer, name, None)
        config = getattr(model, "config", None)
        if config is not None:
            return config.get_text_config() if hasattr(config, "get_text_config") else config
    return None


def model_shape(scorer: Any, fused_attention: bool) -> ModelShape | None:
    """``fused_attention``: the graph's attention is GroupQueryAttention (no [L, L] scores);
    otherwise it holds them. None when the config does not say (the server then estimates)."""
    config = _config_of(scorer)
    if config is None:
        return None
    try:
        return ModelShape(
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            num_key_value_heads=getattr(config, "num_key_value_heads", None),
            head_dim=getattr(config, "head_dim", None),
            attention="fused" if fused_attention else "materialized",
        )
    except (AttributeError, ValidationError):
        return None
