"""A preference set tokenised once (``Encoded``), the batches an epoch takes from it, and how a
model scores its pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rmserve.text.preference_data import PreferencePair
from rmserve.text.preprocess import PreparedPair, Preprocessor
from rmserve_training.export.check import torch_feed
from rmserve_training.model.reward_model import Scorer
from rmserve_training.train.distributed import RewardDDP


@dataclass(frozen=True)
class Encoded:
    """A preference set tokenised once with the shared preprocessor."""

    chosen: list[PreparedPair]
    rejected: list[PreparedPair]
    margins: torch.Tensor
    truncated: int
    response_truncated: int

    def __len__(self) -> int:
        return len(self.chosen)

    @property
    def lengths(self) -> list[int]:
        return [
            max(w.num_tokens, r.num_tokens) for w, r in zip(self.chosen, self.rejected, strict=True)
        ]


def encode(preprocessor: Preprocessor, pairs: Sequence[PreferencePair]) -> Encoded:
    prompts = [p.prompt for p in pairs]
    chosen = preprocessor.prepare_many(prompts, [p.chosen for p in pairs])
    rejected = preprocessor.prepare_many(prompts, [p.rejected for p in pairs])
    both = list(zip(chosen, rejected, strict=True))
    return Encoded(
        chosen=chosen,
        rejected=rejected,
        margins=torch.tensor([float(p.margin or 0.0) for p in pairs], dtype=torch.float32),
        truncated=sum(w.truncated or r.truncated for w, r in both),
        response_truncated=sum(w.response_truncated or r.response_truncated for w, r in both),
    )


def score_stacked(
    model: Scorer | RewardDDP, data: Encoded, index: Sequence[int], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass for both sides: chosen stacked on top of rejected, split after."""
    sequences = [data.chosen[i] for i in index] + [data.rejected[i] for i in index]
    device = next(model.parameters()).device
    feed = torch_feed(sequences, pad_token_id, model.input_names)
    rewards = model(**{k: v.to(device) for k, v in feed.items()})
    return rewards[: len(index)], rewards[len(index) :]


def score_all(
    model: Scorer, data: Encoded, batch_size: int, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pair's chosen and rejected rewards in data order ([N], or [N, K] for K heads),
    scored in length order under no_grad (less padding)."""
    model.eval()
    order = sorted(range(len(data)), key=lambda i: data.chosen[i].num_tokens)
    chosen: list[torch.Tensor] = []
    rejected: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            w, r = score_stacked(model, data, order[start : start + batch_size], pad_token_id)
            chosen.append(w.float().cpu())
            rejected.append(r.float().cpu())
    back = torch.argsort(torch.tensor(order))  # from length order back to data order
    return torch.cat(chosen)[back], torch.cat(rejected)[back]


LENGTH_GROUP_BATCHES = 16


def batches_for_epoch(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int
) -> list[list[int]]:
    """Shuffled batches of similar lengths (less padding, faster steps): shuffle, sort windows
    of 16 batches by length, cut, shuffle the batches. Depends only on (seed, epoch), so a
    resumed run sees the same batches."""
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    window = batch_size * LENGTH_GROUP_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]
