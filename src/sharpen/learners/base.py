"""What every learner shares with the loop: the context it is built from, what a step
returns, and the one guarded optimizer step.

A learner is any object with

    step(step, problems) -> StepOutput        sample, judge and update for one loop step
    state_dict() / load_state_dict(state)     what a checkpoint must hold besides the weights:
                                              tensors and plain types only (an optimizer's
                                              state_dict is fine), read back with weights_only=True

The loop owns the step counter, the problems of each step (a function of seed and step),
evaluation, checkpoints and the run store; a learner owns everything between the problems
and the new weights. Learners share functions, never base classes.
"""

from __future__ import annotations

import copy
import inspect
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol, Sequence, runtime_checkable

import torch

from sharpen.episodes import Episode, next_prompt
from sharpen.models.base import Completion, SamplingParams
from sharpen.models.lora import is_lora
from sharpen.rollouts import RolloutBatch, RolloutProducer
from sharpen.runs import CompletionRecord
from sharpen.seeds import derive_seed
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


@dataclass(frozen=True)
class EpisodeSettings:
    """The multi-turn episodes a learner trains on (`sharpen.episodes.run_episodes`)."""

    turns: int
    """Attempts per episode (T)."""
    feedback: str
    """What the model is told between attempts: none, binary or verifier."""
    neutral: Optional[str]
    """The re-ask after an attempt not called wrong (every attempt with feedback none); None:
    the policy's template set's."""
    stop_when_correct: bool = False
    """End an episode at its first right attempt (the checker as an oracle)."""


@runtime_checkable
class MultiTurnConfig(Protocol):
    """A learner config whose learner trains on multi-turn episodes (rise, score). The loop's
    held-out turn evaluation uses the same episodes unless the run's `eval` section overrides them."""

    def episodes(self) -> EpisodeSettings: ...


class Learner(Protocol):
    def step(self, step: int, problems: list[Problem]) -> StepOutput: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def accepted_options(fn: Callable, **options: Any) -> dict[str, Any]:
    """The `options` that `fn`'s signature names: how a learner passes a registry entry the
    settings only some entries take (e.g. BNPO's reward range, W-REINFORCE's λ, IRPO's α)
    without naming the entries."""
    params = inspect.signature(fn).parameters
    return {k: v for k, v in options.items() if k in params}


LR_SCHEDULES: dict[str, Callable[[float], float]] = {
    "constant": lambda progress: 1.0,
    "cosine": lambda progress: 0.5 * (1 + math.cos(math.pi * min(1.0, progress))),
}
"""schedule name → multiplier of the peak learning rate at `progress` ∈ [0, 1] of the steps after warm-up."""


def lr_factor(step: int, total_steps: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    return LR_SCHEDULES[schedule]((step - warmup) / max(1, total_steps - warmup))


def step_seed(seed: int, step: int) -> int:
    """The sampling seed of a loop step: a function of (run seed, step) only, a stream of its
    own (`sharpen.seeds`), never the seed of a held-out evaluation batch."""
    return derive_seed(seed, "train", step)


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
        "completion_truncated_frac": sum(c.finish_reason == "length" for r in batch.rollouts
                                         for c in r.completions) / max(n, 1),
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


def episode_metrics(episodes: Sequence[Episode], turns: int) -> dict[str, float]:
    """train/turn<k>/accuracy of the step's rollouts for k = 1..`turns` (an episode that
    stopped early keeps its last verdict, as in `evaluation.turns`); train/accuracy is the
    last turn's."""
    out = {}
    for k in range(1, turns + 1):
        right = [e.turns[min(k, len(e.turns)) - 1].correct is True for e in episodes]
        out[f"train/turn{k}/accuracy"] = sum(right) / len(right)
    out["train/accuracy"] = out[f"train/turn{turns}/accuracy"]
    return out


def episode_records(episodes: Sequence[Episode], rewards: Sequence[Sequence[float]]) -> list[CompletionRecord]:
    """Every attempt of the given episodes for the run store, with the history it answered;
    rewards[i][t] is the reward of episode i's attempt t."""
    records = []
    for e, episode_rewards in zip(episodes, rewards):
        for t, (turn, reward) in enumerate(zip(e.turns, episode_rewards)):
            records.append(CompletionRecord(
                problem_id=e.problem.id, prompt=str(next_prompt(e.problem, e.turns[:t])),
                completion=turn.completion.text, reward=reward,
                extras={"turn": t + 1, "feedback": turn.feedback, "tokens": turn.tokens},
            ))
    return records


def accumulated_step(model, optimizer, micro_losses: Iterable[tuple[torch.Tensor, dict[str, float]]],
                     grad_clip: float, lr: float) -> tuple[float, dict[str, float]]:
    """One optimizer step on a batch scored in micro-batches (gradient accumulation):
    zero the gradients → for each micro-batch, backward its loss as it comes (its graph is
    freed before the next micro-batch is scored) → clip the summed gradient → step at `lr` →
    free the gradients.

    Each loss must be its micro-batch's share of the batch's loss (the batch's denominators,
    e.g. `clipped_surrogate(..., batch_mask=)`), so that the summed gradient, and the step, are
    the same whatever the micro-batches; the diagnostics, shares too, are summed. Returns the
    gradient norm and the summed diagnostics. A non-finite loss or gradient raises
    NonFiniteLossError before the weights change.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}
    for loss, diagnostics in micro_losses:
        if not torch.isfinite(loss):
            optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(f"the loss is {loss.item()} (diagnostics: {diagnostics})")
        loss.backward()
        for k, v in diagnostics.items():
            sums[k] = sums.get(k, 0.0) + v
    params = [p for p in model.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if not torch.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLossError(f"the gradient norm is {grad_norm.item()} (diagnostics: {sums})")
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)  # the gradients' memory is free until the next step
    return grad_norm.item(), sums


class ReferenceModel:
    """The policy's initial model, frozen: what KL terms anchor to and what base samples come
    from. A copy of the initial weights; or, when the policy trains a LoRA adapter, the same
    model with its adapter switched off (`disable_adapter`), which costs no memory."""

    def __init__(self, policy) -> None:
        self.copy = None if is_lora(policy.model) else copy.deepcopy(policy.model).eval().requires_grad_(False)

    @contextmanager
    def using(self, policy) -> Iterator[None]:
        """Within the block, `policy` samples and scores with the reference model."""
        if self.copy is None:
            with policy.model.disable_adapter():
                yield
            return
        live = policy.model
        policy.model = self.copy
        try:
            yield
        finally:
            policy.model = live


@torch.no_grad()
def reference_logprobs(policy, reference: ReferenceModel, prompt_ids: Sequence[Sequence[int]],
                       completion_ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """log π_ref(y_t | x, y_<t) of given completions, (B, T), under the reference model."""
    with reference.using(policy):
        return policy.score_tokens(prompt_ids, completion_ids).logprobs


def behaviour_logprobs(completions: Sequence[Completion], T: int) -> torch.Tensor:
    """log μ(y_t | x, y_<t) of each completion's tokens under the distribution they were
    sampled from (`Completion.sampling_logprobs`: temperature and top-p applied), (B, T),
    0 on padding: the denominator of every importance ratio (PPO's clip, TOPR).

    A completion that carries none (a backend that does not record them) is a ValueError:
    the temperature-1 `logprobs` are not the behaviour policy once sampling used another
    temperature or top-p, and using them makes π/μ wrong.
    """
    for i, c in enumerate(completions):
        if len(c.sampling_logprobs) != len(c.token_ids):
            raise ValueError(
                f"completion {i} ({c.text[:40]!r}) carries {len(c.sampling_logprobs)} sampling log-probs for "
                f"{len(c.token_ids)} tokens; a policy-gradient learner needs the behaviour policy's log-probs of "
                "every sampled token (HFPolicy.generate records them)."
            )
    rows = [list(c.sampling_logprobs) + [0.0] * (T - len(c.sampling_logprobs)) for c in completions]
    return torch.tensor(rows, dtype=torch.float32).reshape(len(completions), T)  # (B, T)


def adamw(model, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The optimizer every learner uses (β₂ = 0.99, as the policy-gradient learner), with
    torch's fused kernel: one call per step instead of a dozen small ones per parameter
    tensor, which is what a small model on CPU pays for (TRL's default `adamw_torch_fused`)."""
    params = [p for p in model.parameters() if p.requires_grad]  # a LoRA adapter's only, when there is one
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.99), fused=fused)
