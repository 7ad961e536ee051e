"""``--precision bf16|fp32``: mixed precision for the training forward passes.

bf16 is autocast over fp32 weights: matmuls run in bf16, the optimiser steps fp32 master weights,
and the rewards leave the model as fp32 (``RewardModel.forward``) so the Bradley–Terry loss is
computed in fp32. Evaluation, the normalisation stats and the export stay fp32: they describe
the fp32 graph that is served.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Literal

import torch
from torch import nn

log = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16"]


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def supports_bf16(device: torch.device) -> bool:
    """CPU autocast always offers bf16 (fast with AVX-512 BF16 / AMX, emulated otherwise);
    a GPU needs compute capability 8.0+ (Ampere and newer)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu"


def effective_precision(requested: Precision, device: torch.device) -> Precision:
    """What the run will use: bf16 only where the device supports it, else fp32 (warned)."""
    if requested == "bf16" and not supports_bf16(device):
        log.warning("--precision bf16: %s does not support bf16 autocast; using fp32", device)
        return "fp32"
    return requested


@contextlib.contextmanager
def autocast(precision: Precision, device: torch.device) -> Iterator[None]:
    """bf16 autocast for the forward pass inside the block; a no-op for fp32."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        yield
