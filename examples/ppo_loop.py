"""A PPO-style policy-optimisation loop that gets its rewards from a running rmserve server.

The policy is deliberately small so the example runs anywhere in seconds: for each prompt it is
a softmax over a fixed set of candidate responses (logits θ[prompt, candidate], numpy only).
Each step it samples a group of completions per prompt, scores them through
``rmserve.client.RewardClient`` (one chunked, concurrent ``score`` call per step, exactly as a
trainer scores a rollout batch), computes group-normalised advantages, and takes a few epochs of
PPO clipped-objective gradient steps. The mean sampled reward rises as the policy learns to
prefer what the reward model prefers. Deterministic for a given seed and server.

    rmserve serve --artifact demo/artifact &
    python examples/ppo_loop.py --target localhost:50051 --seed 0 --steps 30
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict, dataclass, field

import numpy as np

from rmserve.client import RewardClient


@dataclass(frozen=True)
class PPOConfig:
    seed: int = 0
    prompts: int = 8  # distinct prompts in the demo task
    group_size: int = 8  # completions sampled per prompt per step
    steps: int = 30
    epochs: int = 4  # PPO epochs per rollout batch
    learning_rate: float = 1.0
    clip: float = 0.2  # PPO ratio clip ε


@dataclass
class DemoTask:
    prompts: list[str]
    candidates: list[list[str]]  # candidates[p][k]: response k to prompt p


@dataclass
class StepLog:
    step: int
    mean_reward: float  # mean reward of this step's sampled completions
    clip_fraction: float  # share of samples whose ratio left [1-ε, 1+ε] in the last epoch
    entropy: float  # mean policy entropy (nats) after the update


@dataclass
class PPOResult:
    history: list[StepLog] = field(default_factory=list)
    uniform_reward: float = 0.0  # expected reward of the initial (uniform) policy
    best_reward: float = 0.0  # expected reward of always picking each prompt's best candidate
    final_policy: list[list[float]] = field(default_factory=list)


def demo_task(n_prompts: int, seed: int) -> DemoTask:
    """Four candidates per prompt from the demo preference generator: the preferred reply, the
    flawed one, a flawed reply to another question and an on-topic answer to another question."""
    from rmserve_training.demo.data import generate_demo_pairs

    rows = generate_demo_pairs(n_prompts + 2, seed, "ppo-example")
    rng = random.Random(seed)
    prompts, candidates = [], []
    for i in range(n_prompts):
        options = [
            rows[i]["chosen"],
            rows[i]["rejected"],
            rows[i + 1]["rejected"],
            rows[i + 2]["chosen"],
        ]
        rng.shuffle(options)
        prompts.append(rows[i]["prompt"])
        candidates.append(options)
    return DemoTask(prompts, candidates)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


def ppo_update(
    logits: np.ndarray,
    rows: np.ndarray,
    actions: np.ndarray,
    advantages: np.ndarray,
    config: PPOConfig,
) -> tuple[np.ndarray, float]:
    """``epochs`` gradient-ascent steps on the clipped surrogate
    L = mean(min(ρ·A, clip(ρ, 1-ε, 1+ε)·A)), ρ = π(a|p) / π_old(a|p). Returns the new logits and
    the clip fraction of the last epoch."""
    old = softmax(logits)[rows, actions]
    clipped = 0.0
    for _ in range(config.epochs):
        probs = softmax(logits)
        ratio = probs[rows, actions] / old
        # The min picks the clipped term (zero gradient) when the ratio has moved past the clip
        # in the direction the advantage pushes it.
        active = ~(
            ((advantages > 0) & (ratio > 1 + config.clip))
            | ((advantages < 0) & (ratio < 1 - config.clip))
        )
        clipped = float(1.0 - active.mean())
        # d ρ / d θ[p] = ρ · (onehot(a) - π[p]) for the sampled prompt p.
        weight = np.where(active, advantages * ratio, 0.0) / len(actions)
        grad = np.zeros_like(logits)
        np.add.at(grad, (rows, actions), weight)
        np.add.at(grad, rows, -weight[:, None] * probs[rows])
        logits = logits + config.learning_rate * grad
    return logits, clipped


def run(client: RewardClient, config: PPOConfig, task: DemoTask | None = None) -> PPOResult:
    task = task or demo_task(config.prompts, config.seed)
    n_prompts, n_candidates = len(task.prompts), len(task.candidates[0])
    rng = np.random.default_rng(config.seed)
    logits = np.zeros((n_prompts, n_candidates))

    # For reporting only: every candidate's reward, to place the learning curve.
    flat_prompts = [
        p for p, cands in zip(task.prompts, task.candidates, strict=True) for _ in cands
    ]
    all_rewards = client.score(flat_prompts, [c for cands in task.candidates for c in cands])
    table = all_rewards.reshape(n_prompts, n_candidates).astype(np.float64)
    result = PPOResult(
        uniform_reward=float(table.mean()), best_reward=float(table.max(axis=1).mean())
    )

    rows = np.repeat(np.arange(n_prompts), config.group_size)
    for step in range(config.steps):
        probs = softmax(logits)
        actions = np.array([rng.choice(n_candidates, p=probs[p]) for p in rows])
        completions = [task.candidates[p][a] for p, a in zip(rows, actions, strict=True)]
        prompts = [task.prompts[p] for p in rows]
        rewards = client.score(prompts, completions).astype(np.float64)
        grouped = rewards.reshape(n_prompts, config.group_size)
        advantages = (grouped - grouped.mean(axis=1, keepdims=True)) / (
            grouped.std(axis=1, keepdims=True) + 1e-6
        )
        logits, clip_fraction = ppo_update(logits, rows, actions, advantages.ravel(), config)
        after = softmax(logits)
        entropy = float(-(after * np.log(after + 1e-12)).sum(axis=1).mean())
        result.history.append(StepLog(step, float(rewards.mean()), clip_fraction, entropy))
    result.final_policy = softmax(logits).round(4).tolist()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default=None, help="server (default RMSERVE_CLIENT_TARGET)")
    defaults = PPOConfig()
    for name, value in asdict(defaults).items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = parser.parse_args()
    config = PPOConfig(**{k: getattr(args, k) for k in asdict(defaults)})
    with RewardClient(args.target) as client:
        result = run(client, config)
    for log in result.history:
        print(
            f"step {log.step:3d}  mean reward {log.mean_reward:+.3f}  "
            f"clip {log.clip_fraction:.2f}  entropy {log.entropy:.3f}"
        )
    first = np.mean([h.mean_reward for h in result.history[:5]])
    last = np.mean([h.mean_reward for h in result.history[-5:]])
    print(
        json.dumps(
            {
                "first_steps_mean_reward": float(first),
                "last_steps_mean_reward": float(last),
                "uniform_policy_reward": result.uniform_reward,
                "best_policy_reward": result.best_reward,
            }
        )
    )


if __name__ == "__main__":
    main()
