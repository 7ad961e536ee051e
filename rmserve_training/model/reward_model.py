"""The reward model: a transformer backbone plus a scalar head. ``forward`` returns rewards of
shape [B] and nothing else, so the exported ONNX graph is just the scorer; the loss lives in
``loss.py``."""

from __future__ import annotations

import inspect
from typing import Literal

import torch
from torch import nn

Pooling = Literal["cls", "mean", "last"]
Architecture = Literal["encoder", "decoder"]


def last_token_index(
    attention_mask: torch.Tensor,
    input_ids: torch.Tensor | None = None,
    skip_token_id: int | None = None,
) -> torch.Tensor:
    """Index of the last non-padding token of each row, right for left AND right padding
    (the largest position whose mask is 1). With ``skip_token_id`` that token is passed over
    too, as Hugging Face's ``...ForSequenceClassification`` passes over ``pad_token_id`` even
    inside the text (a template that ends with EOS when pad == EOS pools one token earlier).
    Rows without any such token give 0."""
    keep = attention_mask.long()
    if skip_token_id is not None and input_ids is not None:
        keep = keep * (input_ids != skip_token_id).long()
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * keep).argmax(dim=-1)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... counted over real tokens only, so left padding does not shift positions."""
    mask = attention_mask.long()
    return (mask.cumsum(dim=-1) - 1).clamp(min=0) * mask


def pack_real_tokens_first(
    input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's real tokens moved to its front, in order, pads after them: any padding becomes
    right padding, under which causal attention needs no mask (see export/fused_attention.py)."""
    length = input_ids.shape[1]
    positions = torch.arange(length, device=input_ids.device)
    order = torch.argsort((1 - attention_mask.long()) * length + positions, dim=1)
    return input_ids.gather(1, order), attention_mask.gather(1, order)


def pool(
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    pooling: Pooling,
    last_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """[B, T, H] token states -> [B, H]. ``last_index`` overrides where 'last' pools."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    index = last_token_index(attention_mask) if last_index is None else last_index
    return hidden[rows, index]


def accepts(module: nn.Module, argument: str) -> bool:
    return argument in inspect.signature(module.forward).parameters


def input_names(uses_token_type_ids: bool) -> list[str]:
    names = ["input_ids", "attention_mask"]
    return [*names, "token_type_ids"] if uses_token_type_ids else names


def backbone_kwargs(
    attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None, uses_token_type_ids: bool
) -> dict[str, torch.Tensor]:
    kwargs = {"attention_mask": attention_mask}
    if uses_token_type_ids and token_type_ids is not None:
        kwargs["token_type_ids"] = token_type_ids
    return kwargs


class RewardModel(nn.Module):
    """backbone (token states) -> pooling -> head (one number per sequence)."""

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        pooling: Pooling,
        architecture: Architecture,
        skip_token_id: int | None = None,
    ) -> None:
        """``skip_token_id``: a token 'last' pooling passes over (see ``last_token_index``)."""
        super().__init__()
        if architecture == "decoder" and pooling != "last":
            raise ValueError("decoders attend causally: only 'last' pooling sees the whole text")
        self.backbone = backbone
        self.head = head
        self.pooling: Pooling = pooling
        self.architecture: Architecture = architecture
        self.skip_token_id = skip_token_id
        # Set while tracing a fused-attention graph (export/fused_attention.py).
        self.pack_rows = False
        self.uses_token_type_ids = architecture == "encoder" and accepts(backbone, "token_type_ids")

    @classmethod
    def with_new_head(
        cls, backbone: nn.Module, hidden_size: int, pooling: Pooling, architecture: Architecture
    ) -> RewardModel:
        head = nn.Linear(hidden_size, 1)
        nn.init.normal_(head.weight, std=1.0 / (hidden_size + 1) ** 0.5)
        nn.init.zeros_(head.bias)
        return cls(backbone, head, pooling, architecture)

    @property
    def input_names(self) -> list[str]:
        return input_names(self.uses_token_type_ids)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.pack_rows:
            input_ids, attention_mask = pack_real_tokens_first(input_ids, attention_mask)
        kwargs = backbone_kwargs(attention_mask, token_type_ids, self.uses_token_type_ids)
        if self.architecture == "decoder":
            kwargs["position_ids"] = position_ids_from_mask(attention_mask)
        hidden = self.backbone(input_ids=input_ids, **kwargs).last_hidden_state
        last = None
        if self.pooling == "last":
            last = last_token_index(attention_mask, input_ids, self.skip_token_id)
        pooled = pool(hidden, attention_mask, self.pooling, last)
        rewards: torch.Tensor = self.head(pooled).squeeze(-1).float()
        return rewards


class ClassifierRewardModel(nn.Module):
    """An encoder ``...ForSequenceClassification`` with one label, used as it is: its own
    pooler and classifier (first token) produce the reward."""

    pooling: Pooling = "cls"
    architecture: Architecture = "encoder"

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self.uses_token_type_ids = accepts(classifier, "token_type_ids")

    @property
    def input_names(self) -> list[str]:
        return input_names(self.uses_token_type_ids)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kwargs = backbone_kwargs(attention_mask, token_type_ids, self.uses_token_type_ids)
        logits: torch.Tensor = self.classifier(input_ids=input_ids, **kwargs).logits
        return logits.squeeze(-1).float()


Scorer = RewardModel | ClassifierRewardModel
