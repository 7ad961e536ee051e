"""A random-weight Qwen3 sequence-classification reward model with a ChatML-style template and
a word-level tokenizer, built offline (no downloads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForSequenceClassification

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>", "user", "assistant"]
VOCAB_TEXT = (
    "what is the capital of france paris say hello explain how can i help you today write a "
    "haiku about sea waves fold into foam . ? ! , one two three four five six seven eight"
)
WORDS = VOCAB_TEXT.split()
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
)
QWEN3_0_6B: dict[str, Any] = {
    "vocab_size": 151936, "hidden_size": 1024, "intermediate_size": 3072,
    "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8,
    "head_dim": 128, "max_position_embeddings": 40960, "tie_word_embeddings": True,
}  # fmt: skip


def write_qwen3_rm(folder: Path, seed: int = 0, **shape: Any) -> None:
    vocab = {token: i for i, token in enumerate(SPECIAL + WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(SPECIAL[:3])
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        unk_token="<unk>", model_max_length=512,
    )  # fmt: skip
    hf_tokenizer.chat_template = CHATML
    hf_tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = Qwen3Config(num_labels=1, pad_token_id=0, eos_token_id=2, **shape)
    model = Qwen3ForSequenceClassification(config)
    model.save_pretrained(folder)
