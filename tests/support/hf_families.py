"""Tiny random-weight decoder reward models of the families RL jobs use (Qwen2, Qwen3, Llama-3,
Mistral, Gemma-2), each saved with save_pretrained beside a small BPE tokenizer trained here
(the family's pre-tokenizer, special tokens, BOS rule and chat template in its real format).
Nothing is downloaded."""

# ruff: noqa: E501  (chat templates are kept in their families' real line layout)

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import (
    Gemma2Config,
    Gemma2ForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
    MistralConfig,
    MistralForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForSequenceClassification,
    Qwen3Config,
    Qwen3ForSequenceClassification,
)

from rmserve.text.preprocess import PreparedPair

CORPUS = [
    "What is the capital of France? Paris is the capital of France.",
    "You are a helpful assistant. You are Qwen, created by Alibaba Cloud.",
    "Cutting Knowledge Date: December 2023. Today Date: 26 Jul 2024.",
    "system user assistant model think plan answer reasoning step one two three four five",
    "Explain photosynthesis in one sentence: plants turn light, water and CO2 into sugar.",
    "Write a haiku about the sea. Waves fold into foam, the tide goes out and comes back.",
    "Say hello! Hello, how can I help you today? I am fine, thank you very much.",
    "add them: 2 + 2 = 4. The answer is 4 because two and two make four.",
]

# Qwen's ChatML with its default system message (Qwen2.5).
QWEN2_TEMPLATE = r"""{%- if messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
{%- else %}
    {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant") %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

# Qwen3's template (tools left out): an assistant turn after the last query gets a <think>
# block, reasoning before </think> is lifted out of the content, the answer loses leading \n.
QWEN3_TEMPLATE = r"""{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}
"""

# Llama 3.1 (tools left out): BOS in the text, a system header with the knowledge dates,
# every message trimmed.
LLAMA_TEMPLATE = r"""{{- bos_token }}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

# Mistral-7B-Instruct-v0.3: [INST] control tokens, the answer trimmed and closed by EOS.
MISTRAL_TEMPLATE = r"""{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message["role"] == "user" %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\n\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token}}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}
"""

# Gemma-2: no system role, <start_of_turn>/<end_of_turn>, the assistant is 'model', trimmed.
GEMMA2_TEMPLATE = r"""{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"""


@dataclass(frozen=True)
class Family:
    """One decoder family: how its tokenizer splits text and which tokens it adds."""

    name: str
    special: list[str]  # ids 0.. in this order
    bos: str | None
    eos: str
    pad: str
    chat_template: str
    adds_bos: bool  # the tokenizer's post-processor puts BOS in front
    kind: str  # "byte-level" | "metaspace" | "gemma"
    build_model: Callable[[dict[str, Any]], PreTrainedModel]
    added: tuple[str, ...] = ()  # non-special added tokens (Qwen3's <think> markers)


COMMON: dict[str, Any] = {
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
    "num_labels": 1, "initializer_range": 0.1, "tie_word_embeddings": False,
}  # fmt: skip


# Llama 3.1's RoPE scaling, its original context shrunk so the scaled frequencies matter here.
LLAMA3_ROPE = {
    "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}  # fmt: skip


def _qwen2(ids: dict[str, Any]) -> PreTrainedModel:
    return Qwen2ForSequenceClassification(Qwen2Config(**{**COMMON, **ids}))


def _qwen3(ids: dict[str, Any]) -> PreTrainedModel:
    return Qwen3ForSequenceClassification(Qwen3Config(**{**COMMON, **ids}, head_dim=8))


def _llama(ids: dict[str, Any]) -> PreTrainedModel:
    config = LlamaConfig(**{**COMMON, **ids}, rope_scaling=LLAMA3_ROPE)
    return LlamaForSequenceClassification(config)


def _mistral(ids: dict[str, Any]) -> PreTrainedModel:
    # A window shorter than the longest test text, so the sliding mask is exercised.
    config = MistralConfig(**{**COMMON, **ids}, sliding_window=16)
    return MistralForSequenceClassification(config)


def _gemma2(ids: dict[str, Any]) -> PreTrainedModel:
    # Attention soft-capping low enough to bite on these random weights; sliding layers too.
    config = Gemma2Config(
        **{**COMMON, **ids}, head_dim=8, query_pre_attn_scalar=8, sliding_window=16,
        attn_logit_softcapping=0.5, final_logit_softcapping=30.0,
    )  # fmt: skip
    return Gemma2ForSequenceClassification(config)


FAMILIES = {
    f.name: f
    for f in (
        Family(
            "qwen2", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, "<|im_end|>",
            "<|endoftext|>", QWEN2_TEMPLATE, False, "byte-level", _qwen2,
        ),
        Family(
            "qwen3", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, "<|im_end|>",
            "<|endoftext|>", QWEN3_TEMPLATE, False, "byte-level", _qwen3,
            added=("<think>", "</think>"),
        ),
        Family(
            "llama",
            ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
             "<|eot_id|>", "<|finetune_right_pad_id|>"],
            "<|begin_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>", LLAMA_TEMPLATE, True,
            "byte-level", _llama,
        ),
        # pad == EOS, as many Mistral RMs are set up: HF pools before the template's final EOS.
        Family(
            "mistral", ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"], "<s>", "</s>", "</s>",
            MISTRAL_TEMPLATE, True, "metaspace", _mistral,
        ),
        Family(
            "gemma2", ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
            "<bos>", "<eos>", "<pad>", GEMMA2_TEMPLATE, True, "gemma", _gemma2,
        ),
    )
}  # fmt: skip


def _tokenizer(family: Family) -> Tokenizer:
    unk = "<unk>" if "<unk>" in family.special else None
    tokenizer = Tokenizer(models.BPE(unk_token=unk, byte_fallback=False))
    alphabet: list[str] = []
    if family.kind == "byte-level":
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    elif family.kind == "metaspace":
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=False)
        tokenizer.decoder = decoders.Metaspace(prepend_scheme="first", split=False)
    else:  # Gemma: spaces become ▁ in the normaliser, no pre-tokenizer, no dummy prefix
        tokenizer.normalizer = normalizers.Replace(" ", "▁")
        tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " ")])
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=family.special, initial_alphabet=alphabet, min_frequency=1
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in family.added])
    if family.adds_bos:
        assert family.bos is not None
        bos_id = family.special.index(family.bos)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{family.bos} $A", pair=f"{family.bos} $A $B:1",
            special_tokens=[(family.bos, bos_id)],
        )  # fmt: skip
    elif family.kind == "byte-level":
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def build(family: Family, folder: Path, seed: int = 0, positions: int = 512) -> Path:
    """Save the family's tiny tokenizer and reward model (``positions`` long) into ``folder``."""
    tokenizer = _tokenizer(family)
    extra = {"unk_token": "<unk>"} if "<unk>" in family.special else {}
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=family.bos, eos_token=family.eos,
        pad_token=family.pad, **extra,
    )  # fmt: skip
    hf_tokenizer.chat_template = family.chat_template
    hf_tokenizer.save_pretrained(folder)
    ids = {
        "vocab_size": tokenizer.get_vocab_size(),
        "pad_token_id": tokenizer.token_to_id(family.pad),
        "bos_token_id": tokenizer.token_to_id(family.bos) if family.bos else None,
        "eos_token_id": tokenizer.token_to_id(family.eos),
        "max_position_embeddings": positions,
    }
    torch.manual_seed(seed)
    model = family.build_model(ids)
    model.eval()
    model.save_pretrained(folder)
    return folder


def left_padded(pairs: list[PreparedPair], pad_id: int) -> dict[str, np.ndarray]:
    """The pairs as one left-padded ``input_ids``/``attention_mask`` feed for the ONNX graph
    (the engine itself pads on the right)."""
    width = max(p.num_tokens for p in pairs)
    ids = np.full((len(pairs), width), pad_id, dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, pair in enumerate(pairs):
        ids[row, width - pair.num_tokens :] = pair.input_ids
        mask[row, width - pair.num_tokens :] = 1
    return {"input_ids": ids, "attention_mask": mask}
