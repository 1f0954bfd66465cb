"""Policy-gradient learner: group advantages → clipped token surrogate → AdamW step.

One `update` per batch of rollouts (METHODS.md §1):
    kept        scorable completions, in groups with ≥ MIN_SCORABLE of them    (P, G) bool
    advantages  A = estimator(rewards, mask=kept) · weighting(rewards)         (P, G), pure functions
    trained     the groups with a non-zero advantage (`trained_groups`; all kept ones with a KL term)
                (a token-level estimator, `process_grpo`: the reward's spans on tokens → (P, G, T))
    for each epoch, for each minibatch of the trained groups (kept completions only):
        ℓ = log π_T(y_t | x, y_<t)   at the sampling temperature T            (B, T)
        ℓ_μ = log μ(y_t | x, y_<t)   recorded at sampling (temperature, top-p) (B, T)
        loss = clipped_surrogate(ℓ, ℓ_μ, A, mask, …) [+ β·k3 KL to π_ref]
               with tis_cap C: clipped_surrogate(ℓ, ℓ_prox, A, mask, is_weights=min(π_prox/μ, C)),
               ℓ_prox = log π at the update's start (one extra scoring pass, no gradient)
        backward (micro-batch by micro-batch, the minibatch's denominators) → clip grad norm → AdamW step
Unscorable completions (a weighted reward component gave None) are left out of the
advantages and the loss, never trained as wrong (DESIGN.md rule 3); `unscorable` counts them.
A non-finite loss or gradient stops the update before the weights change.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Literal, Optional

import torch
from pydantic import Field, field_validator

from sharpen.learners.policy_gradient.advantages import (
    DECOMPOSED_ESTIMATORS, MIN_GROUP_SIZE, TOKEN_ADVANTAGE_ESTIMATORS, get_advantage_estimator,
    get_sample_weighting, get_token_advantage_estimator,
)
from sharpen.learners.policy_gradient.token_rewards import step_reward_tensors
from sharpen.learners.base import (
    LearnerContext, ReferenceModel, StepOutput, accepted_options, accumulated_step, adamw, batch_metrics,
    batch_records, behaviour_logprobs, lr_factor, reference_logprobs, step_seed,
)
from sharpen.learners.policy_gradient.losses import (
    clipped_surrogate, get_loss_aggregation, truncated_importance_weights,
)
from sharpen.learners.training import TrainingConfig
from sharpen.models.scoring import padded_rows
from sharpen.rollouts import Rollout
from sharpen.signals.base import ScoreRange
from sharpen.tasks.base import Problem

MIN_SCORABLE = 2
"""Scorable completions a group needs to give a signal: with one, any group baseline is that
completion's own reward (and a std is undefined), so the group is left out."""


class PolicyGradientConfig(TrainingConfig):
    """Settings of the policy-gradient learner."""

    kind: Literal["policy_gradient"] = Field("policy_gradient", description="Which learner this is.")
    advantage: str = Field(
        "grpo", description="Advantage estimator: reinforce, rloo, grpo, dr_grpo, bnpo or signed (one per completion), "
                            "or process_grpo (per token, from the reward's spans: RLFH, process rewards)."
    )
    weighting: str = Field("none", description="Sample weighting on top: none, psr, nsr, w_reinforce or topr.")
    weighting_lambda: float = Field(0.1, description="λ of w_reinforce (weight of positive samples).")
    decompose: bool = Field(
        True, description="bnpo only: with several weighted reward components, average their BNPO advantages."
    )
    lr: float = Field(3e-4, description="Peak AdamW learning rate (of each optimizer step).")
    weight_decay: float = Field(0.0, description="AdamW weight decay.")
    warmup_steps: int = Field(0, description="Linear warm-up steps of the learning rate.")
    schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="Learning-rate decay after warm-up, over the run's steps (cosine: the quickstart ended at "
                              "pass@1 0.99 with it, 0.75-0.92 with a constant rate at 4 minibatches; README)."
    )
    epochs: int = Field(
        3, ge=1, description="Passes over each batch of rollouts, each an optimizer step per minibatch (PPO's epochs, "
                             "the clipped ratio bounding how far they move; 3 whole-batch passes reached the "
                             "quickstart's held-out target in fewer steps than 4 minibatches, benchmarks/README.md)."
    )
    minibatches: int = Field(
        1, ge=1, description="Optimizer steps per epoch, each on its share of the groups (PPO/DAPO minibatches)."
    )
    eps_low: float = Field(0.2, description="Lower clip range ε_low of the ratio.")
    eps_high: float = Field(0.2, description="Upper clip range ε_high (0.28 = DAPO's clip-higher).")
    aggregation: Literal["token_mean", "seq_mean", "constant"] = Field(
        "token_mean", description="Token-loss aggregation: token_mean (DAPO), seq_mean (GRPO), constant (Dr. GRPO)."
    )
    skip_zero_advantage: bool = Field(
        True, description="Leave groups whose advantages are all 0 out of the update (they add nothing to the policy "
                          "gradient; the token mean is then over the groups that do, as with DAPO's dynamic sampling). "
                          "Ignored with kl_coef > 0, where every group carries the KL term."
    )
    kl_coef: float = Field(0.0, ge=0, description="β of the k3 KL penalty to the frozen initial model (0 = none).")
    tis_cap: Optional[float] = Field(
        None, gt=0, description="C of truncated importance sampling (TIS, METHODS §9; e.g. 2): clip the ratio to the "
                                "policy at the update's start and weight each token by min(π/μ, C) to the behaviour "
                                "policy μ (off-policy rollouts: rollouts.max_staleness ≥ 1). None: the ratio is π/μ.",
    )
    grad_clip: float = Field(1.0, gt=0, description="Maximum global gradient norm.")

    @field_validator("advantage")
    @classmethod
    def known_advantage(cls, name: str) -> str:
        if name not in TOKEN_ADVANTAGE_ESTIMATORS:
            get_advantage_estimator(name)  # a ValueError that lists the registered names
        return name

    @field_validator("weighting")
    @classmethod
    def known_weighting(cls, name: str) -> str:
        get_sample_weighting(name)
        return name

    def min_group_size(self) -> int:
        """The fewest completions per group (sampling.group_size) the advantage estimator needs."""
        return MIN_GROUP_SIZE.get(self.advantage, 1)


def reward_range(score_range: Optional[ScoreRange], what: str) -> dict[str, float]:
    """The known range [r_min, r_max] the ranged estimators and weightings rescale by
    (METHODS.md §1 step 1: the reward's range, never the batch's), as their keywords.

    `score_range` is a signal's declared range or a reward's (`Reward.range`, which follows
    from the weights); `what` names it in the error when it is unknown or unbounded.
    """
    if score_range is None or not all(math.isfinite(v) for v in score_range):
        raise ValueError(
            f"{what} has no known finite range (got {score_range}), but the advantage or weighting rescales by it; "
            "declare the signal's range in its reward component (range: [lowest, highest]) or choose an "
            "estimator that needs none (grpo, rloo, reinforce, dr_grpo)."
        )
    return {"r_min": float(score_range[0]), "r_max": float(score_range[1])}


def takes_range(fn: Callable) -> bool:
    """Whether a registry entry (estimator or weighting) rescales by the reward's range: its
    signature names r_min."""
    return "r_min" in accepted_options(fn, r_min=0.0)


def scorable_mask(rollouts: list[Rollout], min_scorable: int = MIN_SCORABLE) -> torch.Tensor:
    """(P, G) bool: True for a scorable completion in a group with ≥ `min_scorable` of them."""
    keep = torch.ones((len(rollouts), len(rollouts[0].completions)), dtype=torch.bool)  # (P, G)
    for i, r in enumerate(rollouts):
        keep[i, list(r.unscorable)] = False
    return keep & (keep.sum(dim=1, keepdim=True) >= min_scorable)  # (P, G)


def trained_groups(advantages: torch.Tensor, keep: torch.Tensor, skip_zero_advantage: bool) -> list[int]:
    """Indices of the groups an update trains on: those with a kept completion and, with
    `skip_zero_advantage`, a non-zero advantage among them (a group whose advantages are all 0,
    e.g. all right or all wrong under a group baseline, adds exactly 0 to the policy-gradient
    term, so leaving it out saves its forward and backward pass)."""
    trained = keep.any(dim=1)  # (P,)
    if skip_zero_advantage:
        nonzero = advantages != 0  # (P, G), or (P, G, T) per token
        if nonzero.dim() == 3:
            nonzero = nonzero.any(dim=2)  # (P, G)
        trained &= (nonzero & keep).any(dim=1)  # (P,)
    return trained.nonzero().flatten().tolist()


class PolicyGradient:
    """Updates an HFPolicy's model from scored rollouts."""

    def __init__(self, ctx: LearnerContext, cfg: PolicyGradientConfig) -> None:
        self.token_level = cfg.advantage in TOKEN_ADVANTAGE_ESTIMATORS
        """Advantages per token ((P, G, T), from the reward's spans) instead of per completion."""
        if not self.token_level:
            get_advantage_estimator(cfg.advantage)  # fail at set-up on bad names, not mid-run
        get_sample_weighting(cfg.weighting)
        get_loss_aggregation(cfg.aggregation)
        self.ctx = ctx
        self.policy = ctx.policy
        self.cfg = cfg
        self.total_updates = ctx.total_steps * cfg.epochs * cfg.minibatches
        self.max_new_tokens = ctx.sampling.max_new_tokens
        self.temperature = ctx.sampling.temperature or 1.0
        """π is scored at the temperature rollouts are sampled at, so that π/μ = 1 on-policy."""
        self.reward = ctx.reward
        """Its weights and known ranges: the rescaling range, and what BNPO decomposes over."""
        self.check_ranges()
        self.optimizer = adamw(self.policy.model, cfg.lr, cfg.weight_decay)
        self.updates = 0
        self.reference = None
        if cfg.kl_coef > 0:
            self.reference = ReferenceModel(self.policy)

    def step(self, step: int, problems: list[Problem]) -> StepOutput:
        """Sample a group per problem, score it, and update once on the batch."""
        params = self.ctx.sampling.params(step_seed(self.ctx.seed, step))
        batch = self.ctx.producer.produce(problems, params)
        diag = self.update(batch.rollouts)
        return StepOutput({**batch_metrics(batch), **diag}, batch_records(batch, self.ctx.log_completions))

    # ---- advantages ----------------------------------------------------------------------

    def decomposed_names(self) -> list[str]:
        """The weighted components BNPO decomposes over (none: use the total)."""
        names = [n for n, w in self.reward.weights.items() if w != 0]
        decomposes = self.cfg.decompose and self.cfg.advantage in DECOMPOSED_ESTIMATORS
        return names if decomposes and len(names) > 1 else []

    def check_ranges(self) -> None:
        """Fail at set-up, not mid-run, when a ranged estimator or weighting lacks a known range."""
        weighting = get_sample_weighting(self.cfg.weighting)
        ranged = not self.token_level and takes_range(get_advantage_estimator(self.cfg.advantage))
        for name in self.decomposed_names():
            reward_range(self.reward.ranges[name], f"reward component {name!r}")
        if (ranged and not self.decomposed_names()) or takes_range(weighting):
            reward_range(self.reward.range, f"the reward {self.reward.weights}")

    def advantages(self, rollouts: list[Rollout]) -> torch.Tensor:
        """(P, G) advantages of the batch, or (P, G, T) from a token-level estimator, before
        sample weighting; 0 for completions left out (`scorable_mask`)."""
        keep = scorable_mask(rollouts)  # (P, G)
        if self.token_level:
            placed = step_reward_tensors(rollouts, self.policy.tokenizer)
            return get_token_advantage_estimator(self.cfg.advantage)(
                placed.rewards, placed.steps, mask=keep, outcomes=placed.outcomes, lengths=placed.lengths)  # (P, G, T)
        rewards = torch.tensor([r.rewards for r in rollouts], dtype=torch.float64)  # (P, G)
        names = self.decomposed_names()
        if names:
            parts = torch.tensor(
                [[[0.0 if v is None else v for v in r.components[n]] for r in rollouts] for n in names],
                dtype=torch.float64,
            )  # (C, P, G)  a None makes its completion unscorable, so it is never read
            ranges = [tuple(reward_range(self.reward.ranges[n], n).values()) for n in names]
            weights = [self.reward.weights[n] for n in names]
            return DECOMPOSED_ESTIMATORS[self.cfg.advantage](parts, ranges, weights, mask=keep)
        estimator = get_advantage_estimator(self.cfg.advantage)
        options = {}
        if takes_range(estimator):
            options = reward_range(self.reward.range, f"the reward {self.reward.weights}")
        return estimator(rewards, mask=keep, **options)

    # ---- update --------------------------------------------------------------------------

    def update(self, rollouts: list[Rollout]) -> dict[str, float]:
        """One batch of rollouts → epochs × minibatches optimizer steps; returns diagnostics."""
        start = time.perf_counter()
        keep = scorable_mask(rollouts)  # (P, G)
        advantages = self.advantages(rollouts).float()  # (P, G) or (P, G, T)
        rewards = torch.tensor([r.rewards for r in rollouts], dtype=torch.float64)  # (P, G)
        weighting = get_sample_weighting(self.cfg.weighting)
        weight_args = accepted_options(weighting, lam=self.cfg.weighting_lambda)
        if takes_range(weighting):
            weight_args.update(reward_range(self.reward.range, f"the reward {self.reward.weights}"))
        groups = trained_groups(advantages, keep, self.cfg.skip_zero_advantage and self.reference is None)
        chunks = [groups[i :: self.cfg.minibatches] for i in range(self.cfg.minibatches)]
        chunks = [c for c in chunks if c]
        sums: dict[str, float] = {}
        tokens = 0
        prox = [self.proximal_logprobs([rollouts[i] for i in c], keep[c]) for c in chunks] if self.cfg.tis_cap else None
        self.policy.model.train()
        for _ in range(self.cfg.epochs):
            for k, chunk in enumerate(chunks):
                diag = self.minibatch_step(
                    [rollouts[i] for i in chunk], advantages[chunk], rewards[chunk], keep[chunk], weighting,
                    weight_args, None if prox is None else prox[k],
                )
                tokens += int(diag.pop("tokens"))
                for name, v in diag.items():
                    sums[name] = sums.get(name, 0.0) + v
        self.policy.model.eval()
        n = max(1, len(chunks) * self.cfg.epochs)
        out = {k: v / n for k, v in sums.items()}
        seconds = time.perf_counter() - start
        out.update(advantage_abs_mean=advantages[keep].abs().mean().item() if bool(keep.any()) else 0.0,
                   unscorable=float(sum(len(r.unscorable) for r in rollouts)),
                   left_out_frac=1.0 - keep.float().mean().item(),
                   trained_group_frac=len(groups) / max(1, len(rollouts)), update_seconds=seconds,
                   train_tokens_per_s=tokens / seconds if seconds > 0 else 0.0)
        return out

    @staticmethod
    def kept(rollouts, keep) -> tuple[list, list, list]:
        """The kept completions of some groups (keep (p, G)), their prompt ids and token ids."""
        where = keep.nonzero().tolist()  # (B, 2) the kept completions' (group, index)
        completions = [rollouts[i].completions[j] for i, j in where]
        return completions, [rollouts[i].prompt_ids for i, _ in where], [c.token_ids for c in completions]

    @torch.no_grad()
    def proximal_logprobs(self, rollouts, keep) -> torch.Tensor:
        """log π_prox of the kept completions of some groups under the weights before the update, (B, T)."""
        _, prompt_ids, completion_ids = self.kept(rollouts, keep)
        return self.policy.score_tokens(prompt_ids, completion_ids, temperature=self.temperature).logprobs

    def minibatch_step(self, rollouts, advantages, rewards, keep, weighting, weight_args,
                       prox: Optional[torch.Tensor] = None) -> dict[str, float]:
        """One optimizer step on the kept completions of some groups: advantages, rewards, keep
        (p, G); the importance ratios are to the behaviour policy μ the tokens were drawn from
        (with `prox`, log π_prox (B, T): clipped to π_prox and weighted by TIS to μ).
        The completions are scored in micro-batches (`policy.micro_batches`), each loss with the
        minibatch's denominators (`batch_mask`), so the step is the one of a single pass."""
        completions, prompt_ids, completion_ids = self.kept(rollouts, keep)
        adv, r = advantages[keep], rewards[keep]  # (B,) each
        _, batch_mask = padded_rows(completion_ids, torch.long)  # (B, T) the minibatch's tokens: the loss's denominators

        def micro_losses():
            for rows in self.policy.micro_batches(prompt_ids, completion_ids):
                yield self.micro_batch_loss([prompt_ids[i] for i in rows], [completions[i] for i in rows],
                                            adv[rows], r[rows], batch_mask, weighting, weight_args,
                                            None if prox is None else prox[rows])

        factor = lr_factor(self.updates, self.total_updates, self.cfg.warmup_steps, self.cfg.schedule)
        grad_norm, diag = accumulated_step(self.policy.model, self.optimizer, micro_losses(), self.cfg.grad_clip,
                                           self.cfg.lr * factor)
        self.updates += 1
        rows = float(len(completions))
        return {**diag, "entropy": diag["entropy"] / max(diag["tokens"], 1.0), "grad_norm": grad_norm,
                "lr": self.cfg.lr * factor, "sample_weight_mean": diag["sample_weight_mean"] / rows}

    def micro_batch_loss(self, prompt_ids, completions, advantages, rewards, batch_mask, weighting,
                         weight_args, prox: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict[str, float]]:
        """The clipped surrogate (+ β·KL) of some rows of a minibatch, its share of the
        minibatch's loss; diagnostics are shares too, and `entropy` and `sample_weight_mean`
        the sums over the rows' tokens and rows (divided by the minibatch's in `minibatch_step`).
        `prox`: these rows' log π_prox (b, T') when TIS is on."""
        completion_ids = [c.token_ids for c in completions]
        scores = self.policy.score_tokens(prompt_ids, completion_ids, temperature=self.temperature, extras=True)
        logp, mask = scores.logprobs, scores.mask  # (b, T)  log π_T
        T = logp.shape[1]
        old = behaviour_logprobs(completions, T).to(logp.device)  # (b, T)  log μ
        seq_now = (logp.detach() * mask).sum(-1)  # (b,) log π(y)
        seq_old = (old * mask).sum(-1)  # (b,) log μ(y)
        is_weights = None
        if prox is not None:
            prox = prox[:, :T].to(logp.device)  # (b, T)
            is_weights = truncated_importance_weights(prox, old, mask, self.cfg.tis_cap)  # (b, T)
            old = prox
        w = weighting(rewards, policy_logprobs=seq_now, behaviour_logprobs=seq_old, **weight_args)  # (b,)
        w = w.to(advantages.dtype)
        adv = advantages[:, :T] * w[:, None] if advantages.dim() == 2 else advantages * w  # (b,) or (b, T) per token
        ref = None
        if self.reference is not None:
            ref = reference_logprobs(self.policy, self.reference, prompt_ids, completion_ids)[:, :T]
        loss, diag = clipped_surrogate(
            logp, old, adv, mask, eps_low=self.cfg.eps_low, eps_high=self.cfg.eps_high,
            aggregation=self.cfg.aggregation, max_len=max(self.max_new_tokens, batch_mask.shape[1]),
            ref_logprobs=ref, kl_coef=self.cfg.kl_coef, batch_mask=batch_mask.to(logp.device), is_weights=is_weights,
        )
        return loss, {**diag, "entropy": (scores.entropy * mask).sum().item(),
                      "sample_weight_mean": w.sum().item(), "tokens": mask.sum().item()}

    # ---- resume --------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = state["updates"]
