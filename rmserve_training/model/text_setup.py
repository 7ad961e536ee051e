"""How a backbone's texts are tokenised for training, and so in the artifact.

Encoders (BERT, MiniLM) use the tokenizer's pair encoding. Decoders (Llama, Qwen, ...) see
each (prompt, response) as a one-turn conversation rendered with their chat template, as
``import-hf`` renders it (``rmserve_training/model/chat_template.py``), and pool at its last
token; a decoder without a chat template (a base model) gets ``PLAIN`` text:
``User: …\\n\\nAssistant: …`` closed by its EOS token, so the pooled token is the same in every
sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenizers import Tokenizer

from rmserve.artifact.manifest import ChatTemplate, Preprocessing
from rmserve_training.model.backbones import BackboneSource, architecture_of
from rmserve_training.model.chat_template import ChatTemplateError, analyse_chat_template


class TextSetupError(Exception):
    """The backbone's tokenizer cannot be used as it is; the message says why."""


@dataclass(frozen=True)
class TextSetup:
    tokenizer_json: str
    preprocessing: Preprocessing


def pad_token_id_of(config: Any, hf_tokenizer: Any) -> int:
    for candidate in (config.pad_token_id, hf_tokenizer.pad_token_id, hf_tokenizer.eos_token_id):
        if isinstance(candidate, int):
            return candidate
    return 0  # any id works: padding is masked out and pooling uses the mask


def plain_template(eos_token: str | None) -> ChatTemplate:
    return ChatTemplate(prefix="User: ", separator="\n\nAssistant: ", suffix=eos_token or "")


def encoder_setup(source: BackboneSource, max_length: int) -> TextSetup:
    tokenizer = Tokenizer.from_str(source.tokenizer_json)
    pad_token_id = source.config.pad_token_id
    if pad_token_id is None:
        pad_token_id = tokenizer.token_to_id("[PAD]") or 0
    preprocessing = Preprocessing(join="pair", max_length=max_length, pad_token_id=pad_token_id)
    return TextSetup(source.tokenizer_json, preprocessing)


def decoder_setup(source: BackboneSource, max_length: int) -> TextSetup:
    from transformers import AutoTokenizer

    hf_tokenizer = AutoTokenizer.from_pretrained(source.weights_folder, local_files_only=True)
    if not getattr(hf_tokenizer, "is_fast", False):
        raise TextSetupError(f"--base-model {source.spec!r}: needs a fast tokenizer.json")
    if getattr(hf_tokenizer, "chat_template", None):
        try:
            template = analyse_chat_template(hf_tokenizer)
        except ChatTemplateError as e:
            raise TextSetupError(f"--base-model {source.spec!r}: {e}") from e
    else:
        template = plain_template(hf_tokenizer.eos_token)
    preprocessing = Preprocessing(
        join="template",
        template=template,
        max_length=max_length,
        pad_token_id=pad_token_id_of(source.config, hf_tokenizer),
    )
    return TextSetup(hf_tokenizer.backend_tokenizer.to_str(), preprocessing)


def text_setup(source: BackboneSource, max_length: int) -> TextSetup:
    if architecture_of(source.config) == "decoder" and source.weights_folder is not None:
        return decoder_setup(source, max_length)
    return encoder_setup(source, max_length)
