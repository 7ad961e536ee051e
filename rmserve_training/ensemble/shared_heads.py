"""A shared-backbone ensemble: one backbone, K linear heads, output [B, K].

The model is an ordinary ``RewardModel`` whose head is ``nn.Linear(hidden, K)``: its forward
squeezes only a last dimension of 1, so it returns [B, K] and exports as one graph that the
ensemble serving code reads like any ensemble. Head k starts as full member k would
(``torch.manual_seed(seed + k)``, then ``RewardModel.with_new_head``'s init); with
``--bootstrap`` head k weights each pair by how often the resample seeded ``seed + k`` drew it.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

from rmserve.artifact.manifest import EnsembleMember, Normalization
from rmserve_training.model.reward_model import Pooling, RewardModel
from rmserve_training.train.bootstrap import bootstrap_counts
from rmserve_training.train.checkpoints import build_model


def member_head(hidden_size: int, seed: int) -> nn.Linear:
    """The scalar head full member ``seed`` starts from (same RNG calls as ``build_model``)."""
    torch.manual_seed(seed)
    head = RewardModel.with_new_head(nn.Identity(), hidden_size, "cls", "encoder").head
    assert isinstance(head, nn.Linear)
    return head


def stacked_heads(hidden_size: int, seed: int, heads: int) -> nn.Linear:
    """nn.Linear(hidden, K) whose row k is ``member_head(hidden, seed + k)``."""
    stacked = nn.Linear(hidden_size, heads)
    with torch.no_grad():
        for k in range(heads):
            single = member_head(hidden_size, seed + k)
            stacked.weight[k] = single.weight[0]
            stacked.bias[k] = single.bias[0]
    return stacked


def build_shared_model(
    config_dict: dict[str, Any], pooling: Pooling, seed: int, source_spec: str, heads: int
) -> RewardModel:
    """The backbone as member 0's (``seed``), then K heads."""
    model = build_model(config_dict, pooling, seed, source_spec)
    model.head = stacked_heads(int(config_dict["hidden_size"]), seed, heads)
    return model


def head_weights(pairs: int, seed: int, heads: int, bootstrap: bool) -> torch.Tensor:
    """[pairs, K] float32 loss weights: bootstrap counts drawn with seed + k, or all ones."""
    if not bootstrap:
        return torch.ones(pairs, heads)
    columns = [bootstrap_counts(pairs, seed + k) for k in range(heads)]
    return torch.tensor(columns, dtype=torch.float32).T.contiguous()


def head_versions(model: RewardModel) -> list[str]:
    """Per head, a sha256 prefix of the backbone's weights and that head's row: it changes
    whenever what scores through the head changes."""
    backbone = hashlib.sha256()
    for name, tensor in sorted(model.backbone.state_dict().items()):
        backbone.update(name.encode())
        backbone.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    head: Any = model.head
    versions = []
    for k in range(head.weight.shape[0]):
        digest = backbone.copy()
        digest.update(head.weight[k].detach().cpu().numpy().tobytes())
        digest.update(head.bias[k].detach().cpu().numpy().tobytes())
        versions.append(digest.hexdigest()[:12])
    return versions


def head_members(
    model: RewardModel,
    name: str,
    backbone: str,
    normalizations: list[Normalization],
    metrics: list[dict[str, float]],
) -> list[EnsembleMember]:
    """The manifest's ``ensemble`` list: one member per head, in output column order."""
    return [
        EnsembleMember(
            name=f"{name}-h{k}",
            version=version,
            backbone=backbone,
            pooling=model.pooling,
            normalization=normalizations[k],
            metrics=metrics[k],
        )
        for k, version in enumerate(head_versions(model))
    ]
