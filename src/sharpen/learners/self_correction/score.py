"""SCoRe: two-attempt self-correction trained by policy gradient in two stages.

Kumar et al. (2024), "Training Language Models to Self-Correct via Reinforcement Learning".
Each loop step (METHODS.md §5):

    episodes   G = `sampling.group_size` two-attempt episodes per problem from the current
               model: y1 ~ π(·|x), then the feedback f (by default none: the neutral re-ask, no
               correctness signal) and y2 ~ π(·|x, y1, f)              (`episodes.run_episodes`,
               sampled through the rollout producer: `producer.sampler()`)
    rewards    r1 = R(y1), r2 = R(y2) by the run's reward                            (P, G) each
    stage I    (steps 1..stage1_steps) train attempt 2, keep attempt 1 at the base model:
                 A2 = estimator(r2) over each problem's G episodes
                 loss = L(y2; A2, β) + L(y1; 0, β_I)
    stage II   (later steps) train both attempts, attempt 2 with the improvement bonus:
                 r̂2 = r2 + α (r2 − r1)
                 A1 = estimator(r1),  A2 = estimator(r̂2)
                 loss = L(y1; A1, β) + L(y2; A2, β)

where L(y; A, β) is `policy_gradient.losses.clipped_surrogate` over one attempt's tokens (token mean) with
the k3 KL to the frozen base model weighted by β: with A = 0 it is β·KL alone, so stage I
holds attempt 1 near the base (β_I = `stage1_kl`, large) while attempt 2 learns to correct it.
`epochs` optimizer steps per loop step on the same episodes (the first is on-policy, ratio 1;
later ones are held near the sampling policy by the clip).

Each attempt's advantage comes from its own reward (r1, or r̂2), not from the episode's
summed return: with the sum, attempt 1 would get (1 − α)·r1 + …, a reward for being wrong
first whenever α > 1, which is the collapse the bonus is meant to prevent. The episodes read
the task's checker whatever the reward (for the feedback and the logged turn accuracies).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Literal, Optional

import torch
from pydantic import Field

from sharpen.config import ConfigModel
from sharpen.episodes import next_prompt, run_episodes
from sharpen.learners.policy_gradient.advantages import MIN_GROUP_SIZE, get_advantage_estimator
from sharpen.learners.base import (
    EpisodeSettings, LearnerContext, ReferenceModel, StepOutput, accumulated_step, adamw, behaviour_logprobs,
    episode_metrics, episode_records, reference_logprobs, step_seed,
)
from sharpen.learners.policy_gradient.learner import MIN_SCORABLE
from sharpen.learners.policy_gradient.losses import clipped_surrogate
from sharpen.learners.training import TrainingConfig
from sharpen.models.base import Completion
from sharpen.tasks.base import Problem


class ScoreConfig(TrainingConfig):
    """Settings of SCoRe (two attempts, two stages)."""

    kind: Literal["score"] = Field(..., description="Which learner this is.")
    feedback: Literal["none", "binary", "verifier"] = Field(
        "none", description="What the model is told after attempt 1: none (the neutral re-ask, SCoRe's "
                            "intrinsic setting), binary (the templates' retry feedback after a wrong attempt) or verifier."
    )
    neutral: Optional[str] = Field(None, description="The re-ask after an attempt not called wrong (always, with "
                                                     "feedback none); default the model's template set's.")
    stage1_steps: int = Field(20, ge=0, description="Steps of stage I (attempt 2 trained, attempt 1 held at the base).")
    stage1_kl: float = Field(1.0, ge=0, description="β_I: weight of attempt 1's KL to the base model in stage I.")
    kl_coef: float = Field(0.05, ge=0, description="β: weight of the KL to the base model on trained attempts.")
    alpha: float = Field(1.0, ge=0, description="α of stage II's improvement bonus α·(r2 − r1) on attempt 2.")
    advantage: Literal["reinforce", "rloo", "grpo", "dr_grpo"] = Field(
        "rloo", description="Advantage estimator over each problem's G episodes, per attempt."
    )
    epochs: int = Field(1, ge=1, description="Optimizer steps on each step's episodes (PPO-style reuse).")
    lr: float = Field(2e-4, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, gt=0, description="Maximum global gradient norm.")

    def min_group_size(self) -> int:
        """The fewest episodes per problem (sampling.group_size) the advantage estimator needs."""
        return MIN_GROUP_SIZE.get(self.advantage, 1)

    def episodes(self) -> EpisodeSettings:
        return EpisodeSettings(2, self.feedback, self.neutral)


def shaped_second_reward(r1: torch.Tensor, r2: torch.Tensor, alpha: float) -> torch.Tensor:
    """SCoRe's stage II reward of attempt 2: r̂2 = r2 + α (r2 − r1), elementwise (any shape).

    The bonus pays for turning a wrong first attempt into a right one (+α) and charges for
    the reverse (−α), so that changing nothing is not the best policy."""
    return r2 + alpha * (r2 - r1)


def attempt_advantages(r1: torch.Tensor, r2: torch.Tensor, stage: int, alpha: float,
                       estimator: Callable[..., torch.Tensor],
                       mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(A1, A2), each (P, G), from the rewards of the two attempts, (P, G) each (G episodes
    per problem): stage 1 → (0, estimator(r2)); stage 2 → (estimator(r1), estimator(r̂2)).
    `mask` (P, G), True for episodes whose attempts are both scorable: the others get A = 0
    and take no part in the group statistics."""
    if r1.shape != r2.shape:
        raise ValueError(f"r1 and r2 must both be (P, G), got {tuple(r1.shape)} and {tuple(r2.shape)}")
    if stage == 1:
        return torch.zeros_like(r1), estimator(r2, mask=mask)
    if stage == 2:
        return estimator(r1, mask=mask), estimator(shaped_second_reward(r1, r2, alpha), mask=mask)
    raise ValueError(f"SCoRe has stages 1 and 2, got {stage}")


@dataclass
class Attempt:
    """One attempt's rows of a step, ready for the loss."""

    prompt_ids: list[list[int]]
    """What the model saw: the problem (attempt 1) or the history with the feedback (attempt 2)."""
    completions: list[Completion]
    advantages: torch.Tensor
    """(B,) one per completion."""
    kl_coef: float
    """Weight of this attempt's KL to the base model."""


class Score:
    """Two attempts per episode, stage I then stage II policy gradient."""

    def __init__(self, ctx: LearnerContext, cfg: ScoreConfig) -> None:
        self.ctx, self.cfg, self.policy = ctx, cfg, ctx.policy
        self.estimator = get_advantage_estimator(cfg.advantage)
        self.optimizer = adamw(self.policy.model, cfg.lr, cfg.weight_decay)
        self.reference = None
        """The base model, which the KL terms anchor to (kept only when a KL weight is > 0)."""
        if cfg.kl_coef > 0 or (cfg.stage1_kl > 0 and cfg.stage1_steps > 0):
            self.reference = ReferenceModel(self.policy)

    def step(self, step: int, problems: list[Problem]) -> StepOutput:
        ctx, cfg = self.ctx, self.cfg
        G = ctx.sampling.group_size
        seed = step_seed(ctx.seed, step)
        rows = [p for p in problems for _ in range(G)]  # problem i's G episodes at rows i*G..i*G+G-1
        episodes = run_episodes(
            ctx.producer.sampler(), ctx.task, rows, turns=2, feedback=cfg.feedback, params=ctx.sampling.params(seed, n=1),
            seed=seed, neutral=cfg.neutral,
        )
        first = [e.turns[0].completion for e in episodes]
        second = [e.turns[1].completion for e in episodes]
        scored1 = ctx.reward(problems, [first[i : i + G] for i in range(0, len(first), G)])  # a group per problem
        scored2 = ctx.reward(problems, [second[i : i + G] for i in range(0, len(second), G)])
        r1 = torch.tensor(scored1.total, dtype=torch.float64)  # (P, G)
        r2 = torch.tensor(scored2.total, dtype=torch.float64)  # (P, G)

        stage = 1 if step <= cfg.stage1_steps else 2
        scorable = torch.tensor(scored1.scorable) & torch.tensor(scored2.scorable)  # (P, G) both attempts
        keep = scorable & (scorable.sum(dim=1, keepdim=True) >= MIN_SCORABLE)  # (P, G)
        a1, a2 = attempt_advantages(r1, r2, stage, cfg.alpha, self.estimator, keep)  # (P, G) each, 0 where left out
        prompts1 = [self.policy.encode(p.prompt) for p in rows]
        prompts2 = [self.policy.encode(next_prompt(e.problem, e.turns[:1])) for e in episodes]
        metrics = self.update([
            Attempt(prompts1, first, a1.reshape(-1), cfg.stage1_kl if stage == 1 else cfg.kl_coef),
            Attempt(prompts2, second, a2.reshape(-1), cfg.kl_coef),
        ])
        metrics.update({f"attempt2/{k}": v for k, v in scored2.summary().items()})
        metrics.update(scored1.summary())
        metrics.update(episode_metrics(episodes, 2))
        metrics.update({"score/stage": float(stage), "unscorable": float((~scorable).sum()),
                        "gen_tokens": float(sum(e.tokens for e in episodes))})
        rewards = list(zip(r1.reshape(-1).tolist(), r2.reshape(-1).tolist()))  # [episode][attempt]
        return StepOutput(metrics, episode_records(episodes[: ctx.log_completions * G], rewards))

    def update(self, attempts: list[Attempt]) -> dict[str, float]:
        """`epochs` optimizer steps on Σ_attempts L(y; A, β), the same batch each epoch (PPO's
        clipped ratio to the sampling policy keeps later epochs near it); returns the last
        epoch's diagnostics, attempt by attempt."""
        start = time.perf_counter()
        refs = [self.reference_logprobs(a) if a.kl_coef > 0 else None for a in attempts]
        self.policy.model.train()
        try:
            for _ in range(self.cfg.epochs):
                grad_norm, out = accumulated_step(self.policy.model, self.optimizer, self.micro_losses(attempts, refs),
                                                  self.cfg.grad_clip, self.cfg.lr)
        finally:
            self.policy.model.eval()
        out.update(loss=sum(out[f"attempt{i + 1}/loss"] for i in range(len(attempts))), grad_norm=grad_norm,
                   update_seconds=time.perf_counter() - start,
                   kl_ref=sum(out.get(f"attempt{i + 1}/kl_ref", 0.0) for i in range(len(attempts))))
        return out

    def micro_losses(self, attempts: list[Attempt], refs: list[Optional[torch.Tensor]]):
        """L(y; A, β) of each attempt, micro-batch by micro-batch (`policy.micro_batches`), each
        with its attempt's denominators: shares that sum to Σ_attempts L; diagnostics prefixed
        attempt<k>/."""
        for k, (attempt, ref) in enumerate(zip(attempts, refs), start=1):
            ids = [c.token_ids for c in attempt.completions]
            batch_mask = torch.zeros((len(ids), max((len(i) for i in ids), default=0)))  # (B, T) the attempt's tokens
            for row, i in enumerate(ids):
                batch_mask[row, : len(i)] = 1
            for rows in self.policy.micro_batches(attempt.prompt_ids, ids):
                part = Attempt([attempt.prompt_ids[i] for i in rows], [attempt.completions[i] for i in rows],
                               attempt.advantages[rows], attempt.kl_coef)
                loss, diag = self.attempt_loss(part, None if ref is None else ref[rows], batch_mask)
                yield loss, {f"attempt{k}/{name}": v for name, v in diag.items()}

    def attempt_loss(self, attempt: Attempt, ref: Optional[torch.Tensor],
                     batch_mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict[str, float]]:
        """L(y; A, β): the clipped surrogate of one attempt's completions (B rows) with advantages
        (B,), plus β times the k3 KL to the base model (`ref`: its log-probs, None when β = 0);
        with `batch_mask`, these rows' share of the loss of the attempt whose mask it is."""
        completions = attempt.completions
        scores = self.policy.score_tokens(attempt.prompt_ids, [c.token_ids for c in completions],
                                          temperature=self.ctx.sampling.temperature or 1.0)
        logp, mask = scores.logprobs, scores.mask  # (B, T)  log π at the sampling temperature
        T = logp.shape[1]
        old = behaviour_logprobs(completions, T).to(logp.device)  # (B, T)  log μ of the sampler
        return clipped_surrogate(logp, old, attempt.advantages.to(logp.dtype), mask,
                                 ref_logprobs=None if ref is None else ref[:, :T].to(logp.device),
                                 kl_coef=attempt.kl_coef,
                                 batch_mask=None if batch_mask is None else batch_mask.to(logp.device))

    def reference_logprobs(self, attempt: Attempt) -> torch.Tensor:
        """log π_base of one attempt's completions, (B, T)."""
        return reference_logprobs(self.policy, self.reference, attempt.prompt_ids,
                                  [c.token_ids for c in attempt.completions])

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
