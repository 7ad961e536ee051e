"""Peak training memory of one optimiser step on a random Qwen3-shaped decoder (CPU): full
fine-tuning vs LoRA, gradient checkpointing and bf16 autocast (rmserve_training/model/memory.py).

Each configuration runs in its own process; the figure is the growth of peak RSS from just
before the first step (model built and prepared) to its end: gradients, optimiser state and
activations. The baseline is full fine-tuning in fp32, measured in the same run; the script
prints each configuration's ratio to it and writes bench/results/lora-memory-cpu.json.

    .venv/bin/python bench/lora_memory.py
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

CONFIGS: dict[str, dict[str, Any]] = {
    "full-fp32": {"precision": "fp32", "gradient_checkpointing": False, "lora_rank": 0},
    "lora16-fp32": {"precision": "fp32", "gradient_checkpointing": False, "lora_rank": 16},
    "lora16-gc-fp32": {"precision": "fp32", "gradient_checkpointing": True, "lora_rank": 16},
    "lora16-gc-bf16": {"precision": "bf16", "gradient_checkpointing": True, "lora_rank": 16},
}
SHAPE = {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8, "vocab_size": 8192}
BATCH, LENGTH = 8, 512


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def one_step(name: str) -> dict[str, Any]:
    import torch
    from transformers import AutoModel, Qwen3Config

    from rmserve_training.model.memory import MemoryOptions, prepare_backbone
    from rmserve_training.model.precision import autocast
    from rmserve_training.model.reward_model import RewardModel
    from rmserve_training.train.loss import bradley_terry_loss

    torch.set_num_threads(2)
    config = Qwen3Config(
        **SHAPE, num_attention_heads=8, num_key_value_heads=4, head_dim=64,
        max_position_embeddings=LENGTH,
    )  # fmt: skip
    torch.manual_seed(0)
    backbone = AutoModel.from_config(config, attn_implementation="eager")
    model = RewardModel.with_new_head(backbone, SHAPE["hidden_size"], "last", "decoder")
    options = MemoryOptions.from_settings({**CONFIGS[name], "lora_dropout": 0.0})
    record = prepare_backbone(model, "qwen3", options)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    ids = torch.randint(0, SHAPE["vocab_size"], (2 * BATCH, LENGTH))
    mask = torch.ones_like(ids)
    model.train()
    before = peak_rss_bytes()
    with autocast(record.precision, torch.device("cpu")):
        rewards = model(input_ids=ids, attention_mask=mask)
    loss = bradley_terry_loss(rewards[:BATCH], rewards[BATCH:])
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    return {
        "config": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": record.trainable_parameters,
        "step_peak_growth_mib": round((peak_rss_bytes() - before) / 2**20, 1),
        "loss_dtype": str(loss.dtype),
    }


def main() -> None:
    if len(sys.argv) == 2:
        print(json.dumps(one_step(sys.argv[1])))
        return
    rows = []
    for name in CONFIGS:
        out = subprocess.run(
            [sys.executable, __file__, name], capture_output=True, text=True, check=True
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    baseline = rows[0]["step_peak_growth_mib"]
    for row in rows:
        row["ratio_to_full_fp32"] = round(row["step_peak_growth_mib"] / baseline, 3)
    result = {
        "what": "peak RSS growth over one training step (forward, backward, AdamW step), CPU",
        "shape": {**SHAPE, "pairs": BATCH, "tokens_per_sequence": LENGTH},
        "machine": f"{platform.machine()}, shared 2-core CPU machine (memory is not load-bound)",
        "rows": rows,
    }
    path = Path(__file__).parent / "results" / "lora-memory-cpu.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for row in rows:
        print(f"{row['config']:>16}: {row['step_peak_growth_mib']:8.1f} MiB "
              f"x{row['ratio_to_full_fp32']}")  # fmt: skip


if __name__ == "__main__":
    main()
