"""import-hf: tiny encoder and decoder reward models built and saved here, no downloads."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

from rmserve.artifact.folder import read_manifest
from rmserve.engine.session import OrtEngine, load_artifact
from rmserve_training.model.backbones import minilm_folder

Cli = Callable[[list[str]], tuple[int, list[str]]]
SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>"]
VOCAB_TEXT = (
    "what is the capital of france paris say hello explain how can i help you today "
    "write a haiku about sea waves fold into foam . ? ! , one two three four five six seven eight"
)
WORDS = VOCAB_TEXT.split()
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} </s> {% endfor %}"
)
PAIRS = [
    ("what is the capital of france ?", "paris ."),
    ("say hello", "hello ! how can i help you today ?"),
    ("", ""),
    ("write a haiku about the sea " * 6, "waves fold into foam"),
    ("one two", "three four five six seven eight " * 3),
]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hf-encoder")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=1,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(folder)
    PreTrainedTokenizerFast(
        tokenizer_file=str(minilm_folder() / "tokenizer.json"),
        cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]",
        mask_token="[MASK]",
    ).save_pretrained(folder)  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def decoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hf-decoder")
    vocab = {token: i for i, token in enumerate(SPECIAL + WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(SPECIAL)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B:1", special_tokens=[("<s>", 1)]
    )
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>",
    )  # fmt: skip
    hf_tokenizer.chat_template = CHAT_TEMPLATE
    hf_tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, num_labels=1, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, max_position_embeddings=256,
    )  # fmt: skip
    LlamaForSequenceClassification(config).save_pretrained(folder)
    return folder


def _hf_rewards(folder: Path, input_ids: list[list[int]], type_ids: list[list[int]]) -> np.ndarray:
    """The HF model's own forward, one unpadded sequence at a time: the reference."""
    model = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="eager")
    model.eval()
    out = []
    with torch.no_grad():
        for ids, types in zip(input_ids, type_ids, strict=True):
            is_bert = model.config.model_type == "bert"
            kwargs = {"token_type_ids": torch.tensor([types])} if is_bert else {}
            out.append(model(input_ids=torch.tensor([ids]), **kwargs).logits[0, 0].item())
    return np.array(out, dtype=np.float32)


def _import(cli: Cli, model: Path, out: Path, *extra: str) -> dict[str, object]:
    code, lines = cli(["import-hf", "--model", str(model), "--out", str(out), *extra])
    assert code == 0
    result: dict[str, object] = json.loads(lines[-1])
    return result


def _check_artifact(artifact: Path, model: Path) -> None:
    loaded = load_artifact(artifact)
    engine = OrtEngine(loaded, provider="cpu")
    prepared = loaded.preprocessor.prepare_many([p for p, _ in PAIRS], [r for _, r in PAIRS])
    batch = (prepared * 4)[:16]
    together = engine.score(batch)
    alone = np.concatenate([engine.score([pair]) for pair in batch])
    assert np.abs(together - alone).max() <= 1e-5  # batch invariance
    reference = _hf_rewards(
        model,
        [p.input_ids.tolist() for p in prepared],
        [p.token_type_ids.tolist() for p in prepared],
    )
    assert np.abs(engine.score(prepared) - reference).max() <= 1e-4  # scores what HF scores


def test_import_encoder(encoder_dir: Path, tmp_path: Path, rmserve_cli: Cli) -> None:
    result = _import(rmserve_cli, encoder_dir, tmp_path / "enc", "--max-length", "64")
    assert result["architecture"] == "encoder" and result["join"] == "pair"
    manifest = read_manifest(tmp_path / "enc")
    assert manifest.pooling == "cls"
    assert manifest.preprocessing.max_length == 64
    assert "token_type_ids" in manifest.input_names
    assert manifest.optimization.startswith("ort-bert")
    _check_artifact(tmp_path / "enc", encoder_dir)


def test_import_decoder_with_chat_template(
    decoder_dir: Path, tmp_path: Path, rmserve_cli: Cli, demo_data_dir: Path
) -> None:
    result = _import(
        rmserve_cli, decoder_dir, tmp_path / "dec", "--eval-data", str(demo_data_dir / "eval.jsonl")
    )
    assert result["architecture"] == "decoder" and result["join"] == "template"
    manifest = read_manifest(tmp_path / "dec")
    assert manifest.pooling == "last"
    assert manifest.input_names == ["input_ids", "attention_mask"]
    template = manifest.preprocessing.template
    assert template is not None
    # BOS comes from the tokenizer's post-processor, so the template text must not repeat it.
    assert (template.prefix, template.separator, template.suffix) == (
        "<|user|> ",
        " </s> <|assistant|> ",
        " </s> ",
    )
    assert manifest.metrics["eval_accuracy"] >= 0.0 and manifest.normalization.std > 0
    pair = load_artifact(tmp_path / "dec").preprocessor.prepare("say hello", "hello !")
    vocab = {token: i for i, token in enumerate(SPECIAL + WORDS)}
    assert pair.input_ids.tolist() == [
        vocab[t]
        for t in ["<s>", "<|user|>", "say", "hello", "</s>", "<|assistant|>", "hello", "!", "</s>"]
    ]
    _check_artifact(tmp_path / "dec", decoder_dir)


def test_rejects_multi_label_model(tmp_path: Path) -> None:
    from rmserve_training.hf_import.command import HfImportError, import_hf

    config = BertConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=2,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(tmp_path / "two")
    with pytest.raises(HfImportError, match="num_labels is 2"):
        import_hf(tmp_path / "two", tmp_path / "out")


def test_import_records_golden_pairs_with_the_hf_models_rewards(
    decoder_dir: Path, tmp_path: Path, rmserve_cli: Cli
) -> None:
    """The golden pairs' references are the source model's own rewards (HF's forward, one
    unpadded pair at a time), on the token ids the chat template gave; the artifact scores them
    within the fp32 bound."""
    from rmserve.serving.golden import verify_golden

    _import(rmserve_cli, decoder_dir, tmp_path / "dec")
    loaded = load_artifact(tmp_path / "dec")
    golden = loaded.golden
    assert golden is not None and golden.reference == "torch fp32" and golden.dtype == "fp32"
    assert len(golden.pairs) >= 16 and golden.tolerance.atol == 1e-4
    ids = [p.input_ids for p in golden.pairs]
    assert min(map(len, ids)) < 8 and any(p.truncated for p in golden.pairs)  # short and long
    reference = _hf_rewards(decoder_dir, ids, [p.token_type_ids for p in golden.pairs])
    rewards = np.array([p.reward for p in golden.pairs])
    assert np.abs(rewards - reference).max() <= 1e-4
    report = verify_golden(OrtEngine(loaded, provider="cpu"), loaded)
    assert report is not None and report.ok and report.pairs == len(golden.pairs)
