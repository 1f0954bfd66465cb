"""Iterative preference learning: the model's own pairs, a DPO-family loss, round after round.

One loop step is one round (METHODS.md §3):

    groups     = G completions per problem from the current model, scored by the run's reward
    pairs      correctness: correct ≻ incorrect (IRPO; the correctness reward must be present)
               consistency: most-voted ≻ least-voted answer, weighted by the vote margin (ScPO,
                            no labels)
               judge:       highest ≻ lowest total reward, e.g. the model's own pairwise_judge
                            (both orders) or self_judge score (Self-Rewarding, no labels)
    reference  round: the model at the start of the round (each round's model makes the next
               round's pairs and reference, as in Iterative RPO and Self-Rewarding); base: the
               initial model throughout
    update     `epochs` passes of the loss (dpo, ipo, irpo) over the round's pairs

The reference log-probs are computed once per round, before the first update, so no second
copy of the model is held for reference "round".
"""

from __future__ import annotations

import random
import time
from contextlib import nullcontext
from typing import Literal

import torch
from pydantic import Field

from sharpen.learners.base import (
    LearnerContext, ReferenceModel, StepOutput, accepted_options, accumulated_step, adamw, batch_metrics,
    batch_records, step_seed,
)
from sharpen.learners.preference.pairs import PAIR_BUILDERS, PreferencePair
from sharpen.learners.preference.losses import get_preference_loss
from sharpen.learners.training import TrainingConfig
from sharpen.rollouts import Rollout
from sharpen.tasks.base import Problem


class PreferenceConfig(TrainingConfig):
    """Settings of iterative preference learning (DPO, IPO, IRPO; ScPO; Self-Rewarding)."""

    kind: Literal["preference"] = Field(..., description="Which learner this is.")
    loss: Literal["dpo", "ipo", "irpo"] = Field("dpo", description="Preference loss.")
    pairs: Literal["correctness", "consistency", "judge"] = Field(
        "correctness", description="Where preferences come from: correctness (labels), consistency "
                                   "(majority votes, ScPO) or judge (highest vs lowest reward, Self-Rewarding)."
    )
    beta: float = Field(0.1, gt=0, description="β: strength of the implicit KL to the reference.")
    alpha: float = Field(1.0, ge=0, description="irpo only: weight of the length-normalised NLL of y_w.")
    pairs_per_problem: int = Field(2, ge=1, description="Pairs per problem at most (consistency and judge make one).")
    reference: Literal["round", "base"] = Field(
        "round", description="round: the model at the start of each round; base: the initial model."
    )
    lr: float = Field(5e-5, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    epochs: int = Field(1, ge=1, description="Passes over each round's pairs.")
    batch_size: int = Field(16, ge=1, description="Pairs per optimizer step.")
    grad_clip: float = Field(1.0, gt=0, description="Maximum global gradient norm.")


PAIR_VALUES = {
    "correctness": lambda rollout, extract: [None if v is None else v == 1.0 for v in rollout.components["correctness"]],
    "consistency": lambda rollout, extract: [extract(c.text) for c in rollout.completions],
    "judge": lambda rollout, extract: [None if j in rollout.unscorable else r for j, r in enumerate(rollout.rewards)],
}
"""pair source → what its builder in `pairs.PAIR_BUILDERS` reads of a scored group: verdicts,
label-free extracted answers, or the total rewards (None for an unscorable completion, which
takes no side)."""


def rollout_pairs(rollout: Rollout, cfg: PreferenceConfig, extract) -> list[PreferencePair]:
    """The preference pairs of one scored group, from the source `cfg.pairs` names."""
    values = PAIR_VALUES[cfg.pairs](rollout, extract)
    return PAIR_BUILDERS[cfg.pairs](rollout.problem, rollout.completions, values)[: cfg.pairs_per_problem]


class PreferenceLearning:
    """Sample, pair, optimise a preference loss: one round per loop step."""

    def __init__(self, ctx: LearnerContext, cfg: PreferenceConfig) -> None:
        if cfg.pairs == "correctness" and "correctness" not in ctx.reward.weights:
            raise ValueError(
                "preference learner: pairs 'correctness' needs the correctness signal among the rewards "
                f"(rewards are {sorted(ctx.reward.weights)})"
            )
        self.ctx, self.cfg, self.policy = ctx, cfg, ctx.policy
        self.loss = get_preference_loss(cfg.loss)
        self.optimizer = adamw(self.policy.model, cfg.lr, cfg.weight_decay)
        self.base = None
        if cfg.reference == "base":
            self.base = ReferenceModel(self.policy)

    def step(self, step: int, problems: list[Problem]) -> StepOutput:
        ctx, cfg = self.ctx, self.cfg
        batch = ctx.producer.produce(problems, ctx.sampling.params(step_seed(ctx.seed, step)))
        pairs = [p for r in batch.rollouts for p in rollout_pairs(r, cfg, ctx.task.extract)]
        pairs = [p for p in pairs if p.chosen.token_ids and p.rejected.token_ids and p.weight > 0]
        metrics = batch_metrics(batch)
        metrics["pairs/count"] = float(len(pairs))
        metrics["pairs/problems_with_pair"] = len({p.problem.id for p in pairs}) / len(problems)
        if pairs:
            metrics["pairs/weight_mean"] = sum(p.weight for p in pairs) / len(pairs)
            metrics.update(self.train(pairs, step))
        return StepOutput(metrics, batch_records(batch, ctx.log_completions))

    def sequence_logprobs(self, pairs: list[PreferencePair]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-probs (P,) of the chosen and of the rejected completions under the
        policy's model as it is now."""
        prompts = [self.policy.encode(p.problem.prompt) for p in pairs] * 2
        completions = [p.chosen.token_ids for p in pairs] + [p.rejected.token_ids for p in pairs]
        scores = self.policy.score_tokens(prompts, completions)
        summed = (scores.logprobs * scores.mask).sum(-1)  # (2P,)
        return summed[: len(pairs)], summed[len(pairs) :]

    def micro_batch_losses(self, pairs: list[PreferencePair], ref_chosen: torch.Tensor, ref_rejected: torch.Tensor):
        """The loss of each micro-batch of `pairs` (a pair's two completions in the same one),
        with the denominators of all `pairs` (`batch_weights`): shares of their loss."""
        cfg, P = self.cfg, len(pairs)
        batch_weights = torch.tensor([p.weight for p in pairs])  # (P,)
        prompts = [self.policy.encode(p.problem.prompt) for p in pairs] * 2
        completions = [p.chosen.token_ids for p in pairs] + [p.rejected.token_ids for p in pairs]
        for rows in self.policy.micro_batches(prompts, completions, units=[[i, P + i] for i in range(P)]):
            idx = [i for i in rows if i < P]  # the pairs of this micro-batch
            chosen, rejected = self.sequence_logprobs([pairs[i] for i in idx])
            device = chosen.device
            yield self.loss(
                chosen, rejected, ref_chosen[idx].to(device), ref_rejected[idx].to(device), beta=cfg.beta,
                weights=batch_weights[idx].to(device), batch_weights=batch_weights.to(device),
                chosen_lengths=torch.tensor([len(pairs[i].chosen.token_ids) for i in idx], device=device),
                **accepted_options(self.loss, alpha=cfg.alpha),
            )

    def train(self, pairs: list[PreferencePair], step: int) -> dict[str, float]:
        cfg = self.cfg
        start = time.perf_counter()
        with torch.no_grad(), self.base.using(self.policy) if self.base is not None else nullcontext():
            ref = [self.sequence_logprobs(pairs[lo : lo + cfg.batch_size])
                   for lo in range(0, len(pairs), cfg.batch_size)]
        ref_chosen, ref_rejected = torch.cat([r[0] for r in ref]), torch.cat([r[1] for r in ref])
        order = list(range(len(pairs)))
        rng = random.Random(step_seed(self.ctx.seed, step))
        sums: dict[str, float] = {}
        updates = 0
        self.policy.model.train()
        try:
            for _ in range(cfg.epochs):
                rng.shuffle(order)
                for lo in range(0, len(order), cfg.batch_size):
                    idx = order[lo : lo + cfg.batch_size]
                    losses = self.micro_batch_losses([pairs[i] for i in idx], ref_chosen[idx], ref_rejected[idx])
                    grad_norm, diag = accumulated_step(self.policy.model, self.optimizer, losses, cfg.grad_clip, cfg.lr)
                    diag["grad_norm"] = grad_norm
                    for k, v in diag.items():
                        sums[k] = sums.get(k, 0.0) + v
                    updates += 1
        finally:
            self.policy.model.eval()
        out = {k if k == "grad_norm" else f"{cfg.loss}/{k}": v / updates for k, v in sums.items()}
        out.update({"pairs/updates": float(updates), "pairs/seconds": time.perf_counter() - start})
        return out

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
