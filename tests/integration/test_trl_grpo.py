"""TRL's own GRPOTrainer trains a tiny random policy for a few steps with
``reward_funcs=[client.as_trl_reward_func()]`` against a live ``rmserve serve`` process.

GRPO passes each prompt ``num_generations`` times in a row; the adapter scores those runs with
``ScoreGroup`` (one per group, counted on the server), and every reward the trainer got equals
what ``RewardClient.score`` gives for the same (prompt, completion), to float32 rounding.
Nothing is downloaded: the policy and its tokenizer are built here.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rmserve import testing
from rmserve.client import RewardClient
from rmserve.client.trl import to_pairs

pytestmark = pytest.mark.trl

WORDS = ("the", "a", "reward", "policy", "answer", "good", "bad", "yes", "no", "paris", "why")
VOCAB = ["<pad>", "<eos>", "<unk>", *WORDS]
NUM_GENERATIONS = 4
PROMPTS = ["why the answer", "the policy", "a reward", "paris why"]


@pytest.fixture(scope="module")
def server(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    log = tmp_path_factory.mktemp("trl") / "server.log"
    process = testing.start_server(tiny_artifact, log)
    try:
        process.wait_serving()
        yield process
    finally:
        process.kill()


def tiny_policy() -> tuple[Any, Any]:
    """A random one-layer Llama and a word-level tokenizer over VOCAB, built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=words, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    config = LlamaConfig(
        vocab_size=len(VOCAB), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
        pad_token_id=0, eos_token_id=1, bos_token_id=None,
    )  # fmt: skip
    return LlamaForCausalLM(config), tokenizer


def score_group_calls(server: Any) -> float:
    page = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=60)
    text = page.read().decode()
    match = re.search(r'rmserve_requests_total\{code="OK",method="ScoreGroup"\} (\S+)', text)
    return float(match.group(1)) if match else 0.0


def test_grpo_trainer_steps_with_rmserve_rewards(server: Any, tmp_path: Path) -> None:
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    model, tokenizer = tiny_policy()
    calls: list[tuple[list[Any], list[Any], list[float]]] = []
    with RewardClient(server.target) as client:
        reward = client.as_trl_reward_func()

        def recorded(prompts: Sequence[Any], completions: Sequence[Any], **kw: Any) -> list[float]:
            rewards = reward(prompts, completions, **kw)
            calls.append((list(prompts), list(completions), rewards))
            return rewards

        recorded.__name__ = "rmserve"
        args = GRPOConfig(
            output_dir=str(tmp_path / "out"),
            per_device_train_batch_size=NUM_GENERATIONS * 2,
            num_generations=NUM_GENERATIONS,
            max_completion_length=6,
            max_steps=2,
            learning_rate=1e-3,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            bf16=False,
            seed=0,
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[recorded],
            args=args,
            train_dataset=Dataset.from_dict({"prompt": PROMPTS * 4}),
            processing_class=tokenizer,
        )
        before = score_group_calls(server)
        trainer.train()
        assert calls, "the trainer never asked for rewards"
        for prompts, completions, rewards in calls:
            runs = [
                prompts[i : i + NUM_GENERATIONS] for i in range(0, len(prompts), NUM_GENERATIONS)
            ]
            assert all(len(set(run)) == 1 for run in runs)  # GRPO's shape: repeats in a row
            p, r = to_pairs(prompts, completions)
            # Score's rewards, to the float32 rounding of a different batch (ScoreGroup vs Batch)
            np.testing.assert_allclose(rewards, client.score(p, r), atol=1e-6, rtol=0)
    assert score_group_calls(server) - before >= len(calls) * 2  # one call per group
    logged = [entry for entry in trainer.state.log_history if "reward" in entry]
    assert len(logged) == 2
