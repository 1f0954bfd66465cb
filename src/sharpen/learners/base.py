"""What every learner shares with the loop: the context it is built from, what a step
returns, and the one guarded optimizer step.

A learner is any object with

    step(step, problems) -> StepOutput        sample, judge and update for one loop step
    state_dict() / load_state_dict(state)     what a checkpoint must hold besides the weights

The loop owns the step counter, the problems of each step (a function of seed and step),
evaluation, checkpoints and the run store; a learner owns everything between the problems
and the new weights. Learners share functions, never base classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

import torch

from sharpen.models.base import SamplingParams
from sharpen.rollouts import RolloutBatch, RolloutProducer
from sharpen.runs import CompletionRecord
from sharpen.signals.reward import Reward
from sharpen.tasks.base import Problem, Task


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient became NaN or infinite; the weights were not changed."""


@dataclass
class Sampling:
    """How a learner samples its rollouts (the run config's `sampling` section, resolved)."""

    group_size: int
    temperature: float
    top_p: float
    max_new_tokens: int
    stop: tuple[str, ...]

    def params(self, seed: int, n: Optional[int] = None) -> SamplingParams:
        return SamplingParams(
            n=n or self.group_size, temperature=self.temperature, top_p=self.top_p,
            max_new_tokens=self.max_new_tokens, stop=self.stop, seed=seed,
        )


@dataclass
class LearnerContext:
    """Everything of a run a learner may use."""

    policy: Any
    """The HFPolicy being trained."""
    task: Task
    reward: Reward
    producer: RolloutProducer
    sampling: Sampling
    total_steps: int
    seed: int
    log_completions: int = 2
    """Groups per step whose completions go to the run store."""


@dataclass
class StepOutput:
    """What one learner step did: metrics to log and completions to keep."""

    metrics: dict[str, float]
    records: list[CompletionRecord] = field(default_factory=list)


class Learner(Protocol):
    def step(self, step: int, problems: list[Problem]) -> StepOutput: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def step_seed(seed: int, step: int) -> int:
    """The sampling seed of a loop step: a function of (run seed, step) only."""
    return seed * 1_000_003 + step


def batch_metrics(batch: RolloutBatch) -> dict[str, float]:
    """Reward summary and generation cost of a batch; train/accuracy only when correctness is
    one of the reward's components (a learner never reads a reference its reward did not)."""
    n = sum(len(r.completions) for r in batch.rollouts)
    metrics = {
        **batch.reward_summary,
        "gen_seconds": batch.generation_seconds,
        "gen_tokens_per_s": batch.generated_tokens / max(batch.generation_seconds, 1e-9),
        "completion_tokens_mean": batch.generated_tokens / max(n, 1),
        "gen_tokens": float(batch.generated_tokens),
    }
    if batch.rollouts and "correctness" in batch.rollouts[0].components:
        hits = [v == 1.0 for r in batch.rollouts for v in r.components["correctness"]]
        metrics["train/accuracy"] = sum(hits) / n
    return metrics


def batch_records(batch: RolloutBatch, groups: int) -> list[CompletionRecord]:
    """The completions of the first `groups` rollouts, for the run store."""
    records = []
    for r in batch.rollouts[:groups]:
        for c, reward in zip(r.completions, r.rewards):
            records.append(CompletionRecord(
                problem_id=r.problem.id, prompt=str(r.problem.prompt), completion=c.text, reward=reward,
                extras={"finish_reason": c.finish_reason, "tokens": c.n_tokens},
            ))
    return records


def optimizer_step(model, optimizer, loss: torch.Tensor, grad_clip: float, lr: float,
                   diagnostics: Optional[dict] = None) -> float:
    """backward → clip → step at learning rate `lr`; returns the gradient norm.

    A non-finite loss or gradient raises NonFiniteLossError before the weights change.
    """
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"the loss is {loss.item()} (diagnostics: {diagnostics or {}})")
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if not torch.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLossError(f"the gradient norm is {grad_norm.item()} (loss {loss.item()})")
    optimizer.step()
    return grad_norm.item()


def adamw(model, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The optimizer every learner uses (β₂ = 0.99, as the policy-gradient learner)."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.99))
