"""Policy-gradient learner: group advantages → clipped token surrogate → AdamW step.

One `update` per batch of rollouts (METHODS.md §1):
    advantages  A = estimator(rewards) · weighting(rewards)          (P, G), pure functions
    for each epoch, for each minibatch of whole groups:
        ℓ = log π(y_t | x, y_<t)                                       (B, T)
        loss = clipped_surrogate(ℓ, ℓ_old, A, mask, …) [+ β·k3 KL to π_ref]
        backward → clip grad norm → AdamW step
A non-finite loss or gradient stops the update before the weights change.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Literal

import torch
from pydantic import Field

from sharpen.config import ConfigModel
from sharpen.learners.advantages import bnpo_decomposed, get_advantage_estimator, get_sample_weighting
from sharpen.learners.base import (
    LearnerContext, StepOutput, adamw, batch_metrics, batch_records, optimizer_step, reference_logprobs, step_seed,
)
from sharpen.learners.losses import clipped_surrogate, get_loss_aggregation
from sharpen.rollouts import Rollout
from sharpen.tasks.base import Problem


class PolicyGradientConfig(ConfigModel):
    """Settings of the policy-gradient learner."""

    kind: Literal["policy_gradient"] = Field("policy_gradient", description="Which learner this is.")
    advantage: str = Field(
        "grpo", description="Advantage estimator: reinforce, rloo, grpo, dr_grpo, bnpo or signed."
    )
    weighting: str = Field("none", description="Sample weighting on top: none, psr, nsr, w_reinforce or topr.")
    weighting_lambda: float = Field(0.1, description="λ of w_reinforce (weight of positive samples).")
    decompose: bool = Field(
        True, description="bnpo only: with several weighted reward components, average their BNPO advantages."
    )
    lr: float = Field(3e-4, description="Peak AdamW learning rate (of each optimizer step).")
    weight_decay: float = Field(0.0, description="AdamW weight decay.")
    warmup_steps: int = Field(0, description="Linear warm-up steps of the learning rate.")
    schedule: Literal["constant", "cosine"] = Field("constant", description="Learning-rate decay after warm-up.")
    epochs: int = Field(1, ge=1, description="Passes over each batch of rollouts.")
    minibatches: int = Field(
        4, ge=1, description="Optimizer steps per epoch, each on its share of the groups (PPO/DAPO minibatches; "
                             "4 reached the quickstart's held-out target in fewer steps than 1, benchmarks/README.md)."
    )
    eps_low: float = Field(0.2, description="Lower clip range ε_low of the ratio.")
    eps_high: float = Field(0.2, description="Upper clip range ε_high (0.28 = DAPO's clip-higher).")
    aggregation: Literal["token_mean", "seq_mean", "constant"] = Field(
        "token_mean", description="Token-loss aggregation: token_mean (DAPO), seq_mean (GRPO), constant (Dr. GRPO)."
    )
    kl_coef: float = Field(0.0, ge=0, description="β of the k3 KL penalty to the frozen initial model (0 = none).")
    grad_clip: float = Field(1.0, gt=0, description="Maximum global gradient norm.")


def lr_factor(step: int, total_steps: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


class PolicyGradient:
    """Updates an HFPolicy's model from scored rollouts."""

    def __init__(self, ctx: LearnerContext, cfg: PolicyGradientConfig) -> None:
        get_advantage_estimator(cfg.advantage)  # fail at set-up on bad names, not mid-run
        get_sample_weighting(cfg.weighting)
        get_loss_aggregation(cfg.aggregation)
        self.ctx = ctx
        self.policy = ctx.policy
        self.cfg = cfg
        self.total_updates = ctx.total_steps * cfg.epochs * cfg.minibatches
        self.max_new_tokens = ctx.sampling.max_new_tokens
        self.reward_weights = ctx.reward.weights
        """Weights of the reward components, so BNPO can decompose over the weighted ones."""
        self.optimizer = adamw(self.policy.model, cfg.lr, cfg.weight_decay)
        self.updates = 0
        self.reference = None
        if cfg.kl_coef > 0:
            self.reference = copy.deepcopy(self.policy.model).eval().requires_grad_(False)

    def step(self, step: int, problems: list[Problem]) -> StepOutput:
        """Sample a group per problem, score it, and update once on the batch."""
        params = self.ctx.sampling.params(step_seed(self.ctx.seed, step))
        batch = self.ctx.producer.produce(problems, params)
        diag = self.update(batch.rollouts)
        return StepOutput({**batch_metrics(batch), **diag}, batch_records(batch, self.ctx.log_completions))

    # ---- advantages ----------------------------------------------------------------------

    def advantages(self, rollouts: list[Rollout]) -> torch.Tensor:
        """(P, G) advantages of the batch, before sample weighting."""
        rewards = torch.tensor([r.rewards for r in rollouts], dtype=torch.float64)  # (P, G)
        names = [n for n in rollouts[0].components if self.reward_weights.get(n, 0) != 0]
        if self.cfg.advantage == "bnpo" and self.cfg.decompose and len(names) > 1:
            parts = torch.tensor(
                [[[0.0 if v is None else v for v in r.components[n]] for r in rollouts] for n in names],
                dtype=torch.float64,
            )  # (C, P, G)
            # each component's range: [0, 1], widened to what was observed
            ranges = [(min(0.0, parts[c].min().item()), max(1.0, parts[c].max().item())) for c in range(len(names))]
            return bnpo_decomposed(parts, ranges)
        estimator = get_advantage_estimator(self.cfg.advantage)
        if self.cfg.advantage in ("bnpo", "signed"):
            return estimator(rewards, r_min=min(0.0, rewards.min().item()), r_max=max(1.0, rewards.max().item()))
        return estimator(rewards)

    # ---- update --------------------------------------------------------------------------

    def update(self, rollouts: list[Rollout]) -> dict[str, float]:
        """One batch of rollouts → epochs × minibatches optimizer steps; returns diagnostics."""
        start = time.perf_counter()
        advantages = self.advantages(rollouts).float()  # (P, G)
        rewards = torch.tensor([r.rewards for r in rollouts])  # (P, G)
        r_min, r_max = min(0.0, rewards.min().item()), max(1.0, rewards.max().item())
        weighting = get_sample_weighting(self.cfg.weighting)
        extra = {"lam": self.cfg.weighting_lambda} if self.cfg.weighting == "w_reinforce" else {}
        P = len(rollouts)
        chunks = [list(range(P))[i :: self.cfg.minibatches] for i in range(self.cfg.minibatches)]
        chunks = [c for c in chunks if c]
        sums: dict[str, float] = {}
        tokens = 0
        self.policy.model.train()
        for _ in range(self.cfg.epochs):
            for chunk in chunks:
                diag = self.minibatch_step(
                    [rollouts[i] for i in chunk], advantages[chunk], rewards[chunk], weighting,
                    dict(r_min=r_min, r_max=r_max, **extra),
                )
                tokens += int(diag.pop("tokens"))
                for k, v in diag.items():
                    sums[k] = sums.get(k, 0.0) + v
        self.policy.model.eval()
        n = len(chunks) * self.cfg.epochs
        out = {k: v / n for k, v in sums.items()}
        seconds = time.perf_counter() - start
        out.update(advantage_abs_mean=advantages.abs().mean().item(), update_seconds=seconds,
                   train_tokens_per_s=tokens / seconds if seconds > 0 else 0.0)
        return out

    def minibatch_step(self, rollouts, advantages, rewards, weighting, weight_args) -> dict[str, float]:
        rows = [(r.prompt_ids, c) for r in rollouts for c in r.completions]
        prompt_ids = [p for p, _ in rows]
        completion_ids = [c.token_ids for _, c in rows]
        scores = self.policy.score_tokens(prompt_ids, completion_ids, extras=True)
        logp, mask = scores.logprobs, scores.mask  # (B, T)
        T = logp.shape[1]
        old = torch.zeros_like(logp)  # (B, T) log-probs of the sampling policy
        for i, (_, c) in enumerate(rows):
            old[i, : len(c.logprobs)] = torch.tensor(c.logprobs)
        G = advantages.shape[1]
        seq_now = (logp.detach() * mask).sum(-1).view(-1, G)  # (P, G) log π(y)
        seq_old = (old * mask).sum(-1).view(-1, G)  # (P, G) log μ(y)
        w = weighting(rewards, policy_logprobs=seq_now, behaviour_logprobs=seq_old, **weight_args)  # (P, G)
        adv = (advantages * w).reshape(-1)  # (B,)
        ref = None
        if self.reference is not None:
            ref = reference_logprobs(self.policy, self.reference, prompt_ids, completion_ids)[:, :T]
        loss, diag = clipped_surrogate(
            logp, old, adv, mask, eps_low=self.cfg.eps_low, eps_high=self.cfg.eps_high,
            aggregation=self.cfg.aggregation, max_len=max(self.max_new_tokens, T),
            ref_logprobs=ref, kl_coef=self.cfg.kl_coef,
        )
        factor = lr_factor(self.updates, self.total_updates, self.cfg.warmup_steps, self.cfg.schedule)
        grad_norm = optimizer_step(self.policy.model, self.optimizer, loss, self.cfg.grad_clip,
                                   self.cfg.lr * factor, diag)
        self.updates += 1
        entropy = ((scores.entropy * mask).sum() / mask.sum().clamp(min=1)).item()
        return {**diag, "entropy": entropy, "grad_norm": grad_norm, "lr": self.cfg.lr * factor,
                "tokens": mask.sum().item()}

    # ---- resume --------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = state["updates"]
