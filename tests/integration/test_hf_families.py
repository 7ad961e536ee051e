"""Decoder reward models of each family (Qwen2, Qwen3, Llama-3, Mistral, Gemma-2) import with
their own chat template and BOS rule, and the ONNX graph scores exactly what HF scores."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rmserve.artifact.manifest import MODEL_FILE
from rmserve.engine.session import OrtEngine, load_artifact
from rmserve.text.preprocess import PreparedPair
from rmserve.v1 import reward_pb2
from rmserve_training.hf_import.command import import_hf
from rmserve_training.model.chat_template import analyse_chat_template
from tests.support.harness import make_settings, serving
from tests.support.hf_families import FAMILIES, Family, build, left_padded

Cli = Callable[[list[str]], tuple[int, list[str]]]
MAX_LENGTH = 128
PAIRS = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("Say hello!", "Hello, how can I help you today?"),
    ("", ""),
    ("  Explain photosynthesis in one sentence.\n", "\n\nPlants turn light into sugar.  "),
    ("What is 2 + 2?", "<think>\nadd them: 2 + 2\n</think>\n\nThe answer is 4."),
    ("Write a haiku about the sea. " * 40, "Waves fold into foam."),  # prompt cut from the left
    ("Say hello!", "one two three four five " * 60),  # response alone too long
]
TRUNCATED = {5, 6}


@dataclass
class Imported:
    family: Family
    hf_dir: Path
    artifact: Path
    tokenizer: Any
    model: Any
    engine: OrtEngine
    prepared: list[PreparedPair]
    hf_ids: list[list[int]]  # what HF feeds the model: its tokenisation, or rmserve's if cut


def skywork_ids(tokenizer: Any, prompt: str, response: str) -> list[int]:
    """Skywork-Reward-V2's recipe: render, drop a leading BOS, tokenise with special tokens."""
    conv = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    text = tokenizer.apply_chat_template(conv, tokenize=False)
    if tokenizer.bos_token is not None and text.startswith(tokenizer.bos_token):
        text = text[len(tokenizer.bos_token) :]
    ids: list[int] = tokenizer(text)["input_ids"]
    return ids


def hf_rewards(model: Any, sequences: list[list[int]]) -> np.ndarray:
    """The HF model's own forward, one unpadded sequence at a time: the reference."""
    with torch.no_grad():
        out = [model(input_ids=torch.tensor([ids])).logits[0, 0].item() for ids in sequences]
    return np.array(out, dtype=np.float32)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def imported(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, rmserve_cli: Cli
) -> Imported:
    family = FAMILIES[request.param]
    folder = tmp_path_factory.mktemp(family.name)
    hf_dir = build(family, folder / "hf")
    artifact = folder / "artifact"
    argv = ["import-hf", "--model", str(hf_dir), "--out", str(artifact), "--external-data"]
    code, lines = rmserve_cli([*argv, "--max-length", str(MAX_LENGTH)])
    assert code == 0 and json.loads(lines[-1])["join"] == "template"
    assert (artifact / "model.onnx.data").is_file()  # weights beside the graph, as big RMs have
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForSequenceClassification.from_pretrained(hf_dir, attn_implementation="eager")
    model.eval()
    engine = OrtEngine(load_artifact(artifact), provider="cpu", intra_op_threads=1)
    prepared = engine.artifact.preprocessor.prepare_many(*zip(*PAIRS, strict=True))
    hf_ids = [
        prepared[i].input_ids.tolist() if i in TRUNCATED else skywork_ids(tokenizer, *pair)
        for i, pair in enumerate(PAIRS)
    ]
    return Imported(family, hf_dir, artifact, tokenizer, model, engine, prepared, hf_ids)


@pytest.fixture(scope="module")
def reference(imported: Imported) -> np.ndarray:
    return hf_rewards(imported.model, imported.hf_ids)


def test_token_ids_are_hfs_with_one_bos(imported: Imported) -> None:
    tokenizer = imported.tokenizer
    for i, (prompt, response) in enumerate(PAIRS):
        if i in TRUNCATED:
            continue
        ours = imported.prepared[i].input_ids.tolist()
        assert ours == imported.hf_ids[i], (prompt, response)
        conv = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        templated = tokenizer.apply_chat_template(conv, tokenize=True)
        if hasattr(templated, "keys"):  # a BatchEncoding
            templated = templated["input_ids"]
        assert ours == list(templated)  # the template's own BOS, not a second one
        if imported.family.bos is not None:
            bos = tokenizer.convert_tokens_to_ids(imported.family.bos)
            assert ours[0] == bos and ours.count(bos) == 1


def test_truncation_cuts_prompt_left_then_response_right(imported: Imported) -> None:
    cut_prompt, cut_response = (imported.prepared[i] for i in sorted(TRUNCATED))
    assert cut_prompt.truncated and not cut_prompt.response_truncated
    assert cut_response.truncated and cut_response.response_truncated
    assert cut_prompt.num_tokens == cut_response.num_tokens == MAX_LENGTH
    tokenizer = imported.tokenizer
    kept = tokenizer.decode(cut_prompt.input_ids.tolist())
    assert kept.count("Waves fold into foam") == 1  # the response is whole
    dropped = tokenizer.decode(cut_response.input_ids.tolist())
    assert dropped.count("Say hello") == 0  # prompt dropped
    untruncated = skywork_ids(tokenizer, "Say hello!", "one")
    assert cut_prompt.input_ids[:2].tolist() == untruncated[:2]  # the template's head stays
    assert cut_prompt.input_ids[-1] == untruncated[-1]  # and so does its tail


def test_onnx_rewards_equal_hf(imported: Imported, reference: np.ndarray) -> None:
    rewards = imported.engine.score(imported.prepared)  # one right-padded batch, mixed lengths
    delta = float(np.abs(rewards - reference).max())
    print(f"{imported.family.name}: max |ONNX - HF| = {delta:.2e}")
    assert delta <= 1e-4


def test_padding_invariance_left_and_right(imported: Imported) -> None:
    engine, pairs = imported.engine, imported.prepared
    alone = np.concatenate([engine.score([pair]) for pair in pairs])
    right = engine.score(pairs)
    session = ort.InferenceSession(
        str(imported.artifact / MODEL_FILE), providers=["CPUExecutionProvider"]
    )
    pad_id = engine.artifact.manifest.preprocessing.pad_token_id
    (left,) = session.run(["rewards"], left_padded(pairs, pad_id))
    assert np.abs(right - alone).max() <= 1e-5
    assert np.abs(np.asarray(left) - alone).max() <= 1e-5


@pytest.mark.asyncio
async def test_served_rewards_equal_hf(imported: Imported, reference: np.ndarray) -> None:
    settings = make_settings(imported.artifact, max_batch_size=4)
    request = reward_pb2.ScoreBatchRequest(
        pairs=[reward_pb2.Pair(prompt=p, response=r) for p, r in PAIRS]
    )
    async with serving(settings) as harness:
        reply = await harness.stub.ScoreBatch(request, timeout=60)
    served = np.array([result.reward for result in reply.results], dtype=np.float32)
    assert np.abs(served - reference).max() <= 1e-4
    assert [result.truncated for result in reply.results] == [i in TRUNCATED for i in range(7)]


def _family(name: str) -> pytest.MarkDecorator:
    """Run a test on one family's imported model (the module's fixture, that parameter)."""
    return pytest.mark.parametrize("imported", [name], indirect=True)


@_family("qwen3")
def test_qwen3_think_block_and_lifted_reasoning(imported: Imported) -> None:
    template = imported.engine.artifact.manifest.preprocessing.template
    assert template is not None and template.reasoning is not None
    assert template.response_lstrip == "newlines"
    decode = imported.tokenizer.decode
    first = decode(imported.prepared[0].input_ids.tolist())
    assert "assistant\n<think>\n\n</think>\n\nParis" in first
    lifted = "<think>\nadd them: 2 + 2\n</think>\n\nThe answer is 4.<|im_end|>"
    assert lifted in decode(imported.prepared[4].input_ids.tolist())


@_family("qwen3")
def test_qwen3_tool_response_prompt_is_warned(
    imported: Imported, caplog: pytest.LogCaptureFixture
) -> None:
    """A prompt that is wholly a tool response loses the think block in Qwen3's template."""
    with caplog.at_level(logging.WARNING, logger="rmserve_training.model.chat_template"):
        analyse_chat_template(imported.tokenizer)
    assert "<tool_response>result</tool_response>" in caplog.text


@_family("gemma2")
def test_gemma2_attention_softcapping_is_in_the_graph(
    imported: Imported, reference: np.ndarray
) -> None:
    template = imported.engine.artifact.manifest.preprocessing.template
    assert template is not None and template.prefix == "<start_of_turn>user\n"
    uncapped = AutoModelForSequenceClassification.from_pretrained(
        imported.hf_dir, attn_implementation="eager", attn_logit_softcapping=None
    )
    uncapped.eval()
    rewards = imported.engine.score(imported.prepared)
    assert np.abs(rewards - reference).max() <= 1e-4
    assert np.abs(rewards - hf_rewards(uncapped, imported.hf_ids)).max() > 1e-3


@_family("mistral")
def test_mistral_pad_equal_to_eos_pools_where_hf_pools(
    imported: Imported, reference: np.ndarray
) -> None:
    """pad == EOS and the template ends with EOS: HF pools at the token before it."""
    model = imported.model
    assert model.config.pad_token_id == model.config.eos_token_id
    assert all(ids[-1] == model.config.eos_token_id for ids in imported.hf_ids)
    with torch.no_grad():
        at_eos = [
            model.score(model.model(input_ids=torch.tensor([ids])).last_hidden_state)[0, -1, 0]
            for ids in imported.hf_ids
        ]
    assert np.abs(np.array(at_eos) - reference).max() > 1e-3  # the last token would be wrong
    assert np.abs(imported.engine.score(imported.prepared) - reference).max() <= 1e-4


@pytest.mark.parametrize(
    "template",
    [
        "{% for m in messages %}{{ m['content'] | upper }}|{% endfor %}",
        "{% for m in messages %}{{ m['content'][:40] }}|{% endfor %}",
    ],
)
def test_template_rmserve_cannot_replay_is_refused(template: str, tmp_path: Path) -> None:
    from rmserve_training.hf_import.command import HfImportError

    family = dataclasses.replace(FAMILIES["qwen2"], chat_template=template)
    hf_dir = build(family, tmp_path / "hf")
    with pytest.raises(HfImportError, match="cannot replay"):
        import_hf(hf_dir, tmp_path / "artifact", max_length=MAX_LENGTH)
    assert not (tmp_path / "artifact").exists()
