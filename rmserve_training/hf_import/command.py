"""``rmserve import-hf``: a local Hugging Face ``...ForSequenceClassification`` with one label
(an existing reward model) -> a validated artifact.

Encoders (BERT, DeBERTa, ...) keep their own pooler and classifier and use the tokenizer's pair
encoding. Decoders (Llama, Qwen, ...) are re-wired as base model -> last real token -> their
``score`` head, with position ids from the mask, so the graph is right under any padding, and
pool where HF pools (the last real token that is not ``pad_token_id``). When the tokenizer has
a chat template it is modelled once as text around prompt and response
(``rmserve_training/model/chat_template.py``), proven to render and tokenise like HF on probe
conversations.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from rmserve.artifact.manifest import ChatTemplate, Manifest, Normalization, Preprocessing
from rmserve.text.preference_data import load_preferences
from rmserve.text.preprocess import Preprocessor
from rmserve_training.export.build import ExportRequest, export_artifact
from rmserve_training.export.onnx_layout import Dtype
from rmserve_training.model.backbones import architecture_of
from rmserve_training.model.chat_template import (
    PROBES,
    ChatTemplateError,
    analyse_chat_template,
    check_renders_like_hf,
    hf_render,
)
from rmserve_training.model.reward_model import ClassifierRewardModel, RewardModel, Scorer
from rmserve_training.model.text_setup import pad_token_id_of
from rmserve_training.train.encoded import encode
from rmserve_training.train.loop import evaluate

log = logging.getLogger(__name__)

HF_PARITY_ATOL = 1e-4
# A model longer than this gets one parity pair of up to LONG_PARITY_TOKENS (see export/check.py).
LONG_MODEL_TOKENS = 4096
LONG_PARITY_TOKENS = 16384
# Tokenizers without a real limit report a huge sentinel as model_max_length.
SENTINEL_MAX_LENGTH = 10_000_000
SAMPLE_TEXTS = (
    ("What is the capital of France?", "Paris."),
    ("Explain photosynthesis in one sentence.", "Plants turn light, water and CO2 into sugar."),
    ("Say hello.", "Hello! How can I help you today? " * 4),
    ("Write a haiku about the sea. " * 3, "Waves fold into foam"),
)


class HfImportError(Exception):
    """The folder is not a model rmserve can import; the message says why."""


def template_of(hf_tokenizer: Any) -> ChatTemplate:
    try:
        return analyse_chat_template(hf_tokenizer)
    except ChatTemplateError as e:
        raise HfImportError(str(e)) from e


def check_token_ids(
    hf_tokenizer: Any, preprocessor: Preprocessor, texts: Sequence[tuple[str, str]]
) -> None:
    """rmserve renders each pair as HF does, and its ids for each untruncated pair are HF's
    tokenisation of the rendered text."""
    template = preprocessor.config.template
    assert template is not None
    try:
        check_renders_like_hf(template, hf_tokenizer, texts)
    except ChatTemplateError as e:
        raise HfImportError(str(e)) from e
    for prompt, response in texts:
        ours = preprocessor.prepare(prompt, response)
        if ours.truncated:
            continue
        text = hf_render(hf_tokenizer, prompt, response)
        theirs = hf_tokenizer(text, add_special_tokens=True)["input_ids"]
        ids = ours.input_ids.tolist()
        if ids != list(theirs):
            raise HfImportError(
                f"rmserve tokenises the rendered conversation {text!r} as {ids}, "
                f"the model's tokenizer as {theirs}"
            )


def default_max_length(config: Any, hf_tokenizer: Any) -> int:
    """The model's own context: its position embeddings (what RoPE scaling extends them to),
    else the tokenizer's limit when it states a real one."""
    positions = getattr(config.get_text_config(), "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        return positions
    stated = int(getattr(hf_tokenizer, "model_max_length", 0) or 0)
    if 0 < stated < SENTINEL_MAX_LENGTH:
        return stated
    raise HfImportError(
        "the model states no context length (no max_position_embeddings, no tokenizer "
        "model_max_length); pass --max-length"
    )


def long_parity_texts(preprocessor: Preprocessor) -> list[tuple[str, str]]:
    """For a long model, one pair just under min(max_length, LONG_PARITY_TOKENS) tokens."""
    limit = preprocessor.config.max_length
    if limit <= LONG_MODEL_TOKENS:
        return []
    target = min(limit, LONG_PARITY_TOKENS) - 64
    unit = "The answer is four, because two and two make four. "
    per_unit = max(1, preprocessor.prepare("", unit * 64).num_tokens // 64)
    return [("Check the reasoning below.", unit * (target // per_unit))]


def load_hf_model(model_dir: Path) -> Any:
    """fp32, with PyTorch's fused attention (SDPA) where the family supports it, so checks on
    one long sequence take memory linear in its length; eager otherwise (Gemma-2)."""
    for attention in ("sdpa", "eager"):
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                model_dir, local_files_only=True, attn_implementation=attention, dtype=torch.float32
            )
        except (ValueError, ImportError) as e:
            log.info("%s attention unavailable for %s: %s", attention, model_dir, e)
            continue
        model.eval()
        return model
    raise HfImportError(f"{model_dir}: cannot load the model with sdpa or eager attention")


def build_scorer(hf_model: Any, architecture: str) -> Scorer:
    if architecture == "encoder":
        return ClassifierRewardModel(hf_model)
    head = getattr(hf_model, "score", None)
    if head is None:
        raise HfImportError(f"{type(hf_model).__name__} has no 'score' head to pool into")
    # HF pools at the last token that is not pad_token_id, even inside the text.
    pad = getattr(hf_model.config.get_text_config(), "pad_token_id", None)
    skip = pad if isinstance(pad, int) else None
    return RewardModel(hf_model.base_model, head, "last", "decoder", skip_token_id=skip)


def hf_parity(
    scorer: Scorer, hf_model: Any, preprocessor: Preprocessor, texts: Sequence[tuple[str, str]]
) -> float:
    """Max |scorer − the HF model's own logits| on single unpadded sequences."""
    worst = 0.0
    with torch.no_grad():
        for prompt, response in texts:
            pair = preprocessor.prepare(prompt, response)
            ids = torch.from_numpy(pair.input_ids)[None]
            mask = torch.ones_like(ids)
            types = torch.from_numpy(pair.token_type_ids)[None]
            ours = scorer(ids, mask, types)
            extra = {"token_type_ids": types} if scorer.uses_token_type_ids else {}
            theirs = hf_model(input_ids=ids, attention_mask=mask, **extra).logits.squeeze(-1)
            worst = max(worst, float((ours - theirs).abs().max()))
    return worst


def import_hf(
    model_dir: Path,
    out: Path,
    eval_data: Path | None = None,
    max_length: int | None = None,
    name: str | None = None,
    version: str | None = None,
    dtype: Dtype = "fp32",
    external_data: bool = False,
    fused_attention: bool = True,
) -> Manifest:
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise HfImportError(f"{model_dir}: no config.json (expected a save_pretrained folder)")
    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    if config.num_labels != 1:
        raise HfImportError(
            f"{model_dir}: num_labels is {config.num_labels}; a reward model has exactly 1"
        )
    hf_model = load_hf_model(model_dir)
    hf_tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if not getattr(hf_tokenizer, "is_fast", False):
        raise HfImportError(f"{model_dir}: rmserve needs a fast tokenizer (tokenizer.json)")
    tokenizer = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())
    architecture = architecture_of(config)
    scorer = build_scorer(hf_model, architecture)
    template = None
    if architecture == "decoder" and getattr(hf_tokenizer, "chat_template", None):
        template = template_of(hf_tokenizer)
    preprocessing = Preprocessing(
        join="template" if template else "pair",
        template=template,
        max_length=max_length or default_max_length(config, hf_tokenizer),
        pad_token_id=pad_token_id_of(config, hf_tokenizer),
    )
    preprocessor = Preprocessor(tokenizer, preprocessing)
    log.info(
        "importing %s as %s, join=%s, max_length=%d",
        model_dir, architecture, preprocessing.join, preprocessing.max_length,
    )  # fmt: skip

    texts: list[tuple[str, str]] = list(SAMPLE_TEXTS)
    metrics: dict[str, float] = {}
    normalization = Normalization(mean=0.0, std=1.0)
    if eval_data is not None:
        pairs = load_preferences(eval_data).pairs
        eval_metrics, rewards = evaluate(
            scorer, encode(preprocessor, pairs), 16, preprocessing.pad_token_id, 0.0
        )
        std = float(rewards.std(unbiased=False))
        if not std > 0.0:
            raise HfImportError("every eval response got the same reward (std 0)")
        normalization = Normalization(mean=float(rewards.mean()), std=std)
        metrics.update({f"eval_{k}": v for k, v in eval_metrics.items()})
        texts += [(p.prompt, p.chosen) for p in pairs[:12]]
    if template is not None:
        check_token_ids(hf_tokenizer, preprocessor, [*texts, *PROBES])
    metrics["hf_parity_max_abs_diff"] = hf_parity(scorer, hf_model, preprocessor, texts[:4])
    if metrics["hf_parity_max_abs_diff"] > HF_PARITY_ATOL:
        raise HfImportError(
            f"rewards differ from the HF model's own forward by "
            f"{metrics['hf_parity_max_abs_diff']:.2e} on unpadded inputs "
            f"(limit {HF_PARITY_ATOL:.0e}); nothing written to {out}"
        )
    request = ExportRequest(
        scorer=scorer,
        tokenizer_json=tokenizer.to_str(),
        preprocessing=preprocessing,
        name=name or model_dir.resolve().name,
        backbone=str(model_dir.resolve()),
        model_type=config.model_type,
        normalization=normalization,
        validation_texts=texts,
        long_texts=long_parity_texts(preprocessor) if architecture == "decoder" else [],
        version=version,
        num_heads=int(getattr(config, "num_attention_heads", 0) or 0),
        hidden_size=int(getattr(config, "hidden_size", 0) or 0),
        metrics=metrics,
        dtype=dtype,
        external_data=external_data,
        fused_attention=fused_attention,
    )
    return export_artifact(request, out)
