"""Checkpoints that do not depend on how the run was spread: the model as one full state dict
and the optimiser in ``torch.optim.Optimizer.state_dict()`` form (parameters numbered in
optimiser order), whatever the strategy and world size. A checkpoint written by 2 FSDP ranks
resumes on 1 process, and the other way round.

Under FSDP gathering is a collective: every rank calls these, rank 0 gets the full dicts."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rmserve_training.train.distributed import Cluster

StateDict = dict[str, Any]


def full_model_state(model: nn.Module, cluster: Cluster) -> dict[str, Any]:
    if cluster.sharded:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state: dict[str, Any] = get_model_state_dict(model, options=options)
        return state
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def parameter_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The fully qualified name of each optimiser parameter, in optimiser numbering order."""
    names = {id(p): name for name, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def full_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, cluster: Cluster
) -> StateDict:
    if not cluster.sharded:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    by_name: StateDict = get_optimizer_state_dict(model, optimizer, options=options)
    if not by_name:
        return {}  # ranks > 0: cpu_offload leaves the full dict on rank 0 only
    number = {name: i for i, name in enumerate(parameter_names(model, optimizer))}
    return {
        "state": {number[name]: state for name, state in by_name["state"].items()},
        "param_groups": [
            {**group, "params": [number[name] for name in group["params"]]}
            for group in by_name["param_groups"]
        ],
    }


def load_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: StateDict, cluster: Cluster
) -> None:
    """Load a full ``state_dict()``-form optimiser state (every rank reads the checkpoint)."""
    if not cluster.sharded:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    names = parameter_names(model, optimizer)
    by_name: dict[str, Any] = {
        "state": {names[int(i)]: s for i, s in state["state"].items()},
        "param_groups": [
            {**group, "params": [names[int(i)] for i in group["params"]]}
            for group in state["param_groups"]
        ],
    }
    # not strict: a parameter that never had a gradient (BERT's unused pooler) has no state,
    # exactly as Optimizer.load_state_dict allows
    options = StateDictOptions(full_state_dict=True, strict=False)
    set_optimizer_state_dict(model, optimizer, optim_state_dict=by_name, options=options)


def resume_layout_error(
    checkpoint: StateDict, batch_size: int, grad_accum: int, world_size: int
) -> str | None:
    """Why this run cannot resume ``checkpoint`` (None: it can). Step N must mean the same
    pairs after a resume: the micro-batch (``batch_size`` pairs per rank) and the micro-batches
    per optimiser step (``grad_accum`` x world size) must stay the same."""
    saved = checkpoint.get("settings", {})
    saved_batch = int(saved.get("batch_size", batch_size))
    saved_accum = int(saved.get("grad_accum", grad_accum))
    saved_world = int(checkpoint.get("world_size", 1))
    if saved_batch != batch_size:
        return (
            f"--batch-size {batch_size} differs from the checkpoint's {saved_batch}: "
            "resume with the same per-rank micro-batch"
        )
    per_step, wanted = saved_accum * saved_world, grad_accum * world_size
    if per_step == wanted:
        return None
    hint = (
        f"use --grad-accum {per_step // world_size} on {world_size} process(es)"
        if per_step % world_size == 0
        else f"no --grad-accum on {world_size} process(es) gives {per_step}"
    )
    return (
        f"--grad-accum {grad_accum} x world size {world_size} = {wanted} micro-batches per "
        f"step, the checkpoint has {saved_accum} x {saved_world} = {per_step}: {hint}"
    )
