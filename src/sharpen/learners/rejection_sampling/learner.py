"""Rejection-sampling fine-tuning: sample K, keep what the reward selects, fine-tune on it.

One loop step is one iteration (METHODS.md §3):

    groups   = K completions per problem from the current model, scored by the run's reward
    select   threshold: every distinct completion with reward ≥ threshold
                        (RFT, ReST-EM, STaR: the correctness reward, threshold 1)
             best:      the group's highest-reward completion, no labels needed
                        (sharpening: reward = likelihood or self_judge)
    STaR     problems with nothing kept are sampled again with the reference answer as a
             hint; kept rationales are trained on *without* the hint
    ReST-EM  `restart_from_base`: each iteration fine-tunes the base model, not the last one
    update   `epochs` passes of SFT over the kept completions (`sft.fine_tune`)

Papers: Zelikman et al. (2022) "STaR"; Yuan et al. (2023) "Scaling Relationship on Learning
Mathematical Reasoning with Large Language Models" (RFT); Singh et al. (2023) "Beyond Human
Data" (ReST-EM); Huang et al. (2024) "Self-Improvement in Language Models: The Sharpening
Mechanism"; B-STaR's monitoring (Zeng et al., 2024) is logged when correctness is among the
reward's components.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Literal, Optional

from pydantic import Field

from sharpen.learners.base import LearnerContext, StepOutput, adamw, batch_metrics, batch_records, step_seed
from sharpen.learners.rejection_sampling.selection import best_by_score, bstar_stats, keep_correct
from sharpen.learners.sft import Example, fine_tune
from sharpen.learners.training import TrainingConfig
from sharpen.models.formats import as_messages
from sharpen.rollouts import Rollout
from sharpen.tasks.base import Problem, Prompt


class RejectionSamplingConfig(TrainingConfig):
    """Settings of rejection-sampling fine-tuning (RFT, ReST-EM, STaR, sharpening)."""

    kind: Literal["rejection_sampling"] = Field(..., description="Which learner this is.")
    select: Literal["threshold", "best"] = Field(
        "threshold", description="threshold: keep completions with reward ≥ threshold (RFT, STaR); "
                                 "best: keep each group's highest-reward completion (sharpening, label-free)."
    )
    threshold: float = Field(1.0, description="Reward a completion needs to be kept (select: threshold).")
    max_per_problem: Optional[int] = Field(4, ge=1, description="Distinct completions kept per problem at most.")
    rationalize: bool = Field(
        False, description="STaR: sample unsolved problems again with the reference answer as a hint."
    )
    restart_from_base: bool = Field(False, description="ReST-EM: fine-tune the base model each iteration.")
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate of the fine-tuning.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    epochs: int = Field(1, ge=1, description="Passes over each iteration's kept completions.")
    batch_size: int = Field(32, ge=1, description="Sequences per optimizer step.")
    grad_clip: float = Field(1.0, gt=0, description="Maximum global gradient norm.")


def hinted(prompt: Prompt, answer: str) -> Prompt:
    """STaR's rationalisation prompt: the question with the reference answer as a hint."""
    messages = as_messages(prompt)
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    messages[last] = {**messages[last], "content": f"{messages[last]['content']} (hint: the answer is {answer})"}
    return messages if not isinstance(prompt, str) else messages[last]["content"]


def select_threshold(rollout: Rollout, cfg: RejectionSamplingConfig) -> list[int]:
    """Every distinct scorable completion with reward ≥ `cfg.threshold`, at most `cfg.max_per_problem`."""
    passed = [j not in rollout.unscorable and r >= cfg.threshold for j, r in enumerate(rollout.rewards)]
    return keep_correct(passed, [c.text for c in rollout.completions], cfg.max_per_problem)


def select_best(rollout: Rollout, cfg: RejectionSamplingConfig) -> list[int]:
    """The group's highest-reward scorable completion (the earliest of equals); none if nothing scored."""
    best = best_by_score([None if j in rollout.unscorable else r for j, r in enumerate(rollout.rewards)])
    return [] if best is None else [best]


SELECTIONS: dict[str, Callable[[Rollout, RejectionSamplingConfig], list[int]]] = {
    "threshold": select_threshold,
    "best": select_best,
}
"""`select` name → selection(scored group, config) -> indices of the completions to fine-tune on."""


def select(rollout: Rollout, cfg: RejectionSamplingConfig) -> list[int]:
    """Indices of the completions of one group to fine-tune on."""
    return SELECTIONS[cfg.select](rollout, cfg)


class RejectionSampling:
    """Sample, select, fine-tune: one iteration per loop step."""

    def __init__(self, ctx: LearnerContext, cfg: RejectionSamplingConfig) -> None:
        self.ctx, self.cfg, self.policy = ctx, cfg, ctx.policy
        self.optimizer = adamw(self.policy.model, cfg.lr, cfg.weight_decay)
        self.base_state = None
        if cfg.restart_from_base:  # kept on the CPU: one more copy of the weights
            self.base_state = {k: v.detach().to("cpu", copy=True) for k, v in self.policy.model.state_dict().items()}

    def step(self, step: int, problems: list[Problem]) -> StepOutput:
        ctx, cfg = self.ctx, self.cfg
        batch = ctx.producer.produce(problems, ctx.sampling.params(step_seed(ctx.seed, step)))
        chosen = [select(r, cfg) for r in batch.rollouts]
        examples = [
            Example(tuple(r.prompt_ids), tuple(r.completions[i].token_ids)) for r, kept in zip(batch.rollouts, chosen)
            for i in kept
        ]
        metrics = batch_metrics(batch)
        metrics["select/kept"] = float(len(examples))
        metrics["select/problems_with_kept"] = sum(bool(k) for k in chosen) / len(chosen)
        if "correctness" in batch.rollouts[0].components:
            metrics.update(self.monitoring(batch.rollouts, chosen, step))
        if cfg.rationalize:
            unsolved = [r for r, kept in zip(batch.rollouts, chosen) if not kept]
            rationales, tokens = self.rationalize(unsolved, step)
            metrics["star/rationalized"] = float(len(rationales))
            metrics["gen_tokens"] += tokens
            examples += rationales
        if self.base_state is not None:
            self.policy.model.load_state_dict(self.base_state)
            self.optimizer = adamw(self.policy.model, cfg.lr, cfg.weight_decay)
        metrics.update(fine_tune(
            self.policy, self.optimizer, examples, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
            grad_clip=cfg.grad_clip, seed=step_seed(ctx.seed, step),
        ))
        return StepOutput(metrics, batch_records(batch, ctx.log_completions))

    def monitoring(self, rollouts: list[Rollout], chosen: list[list[int]], step: int) -> dict[str, float]:
        """B-STaR's exploration (pass@K, distinct correct) and exploitation (selection accuracy)."""
        verdicts = [[None if v is None else v == 1.0 for v in r.components["correctness"]] for r in rollouts]
        stats = bstar_stats(verdicts, [[c.text for c in r.completions] for r in rollouts], chosen, step)
        out = {"bstar/pass@k": stats.pass_at_k, "bstar/distinct_correct": stats.distinct_correct}
        if stats.selection_accuracy is not None:
            out["bstar/selection_accuracy"] = stats.selection_accuracy
        return out

    def rationalize(self, unsolved: list[Rollout], step: int) -> tuple[list[Example], int]:
        """STaR: sample the unsolved problems with a hint; keep what the reward accepts,
        trained on with the original prompt (the hint is not in the training data).
        Returns the examples and the tokens generated."""
        if not unsolved:
            return [], 0
        missing = [r.problem.id for r in unsolved if r.problem.answer is None]
        if missing:
            raise ValueError(f"rationalize needs reference answers; problem {missing[0]} has none")
        hint_problems = [dataclasses.replace(r.problem, prompt=hinted(r.problem.prompt, r.problem.answer))
                         for r in unsolved]
        params = self.ctx.sampling.params(step_seed(self.ctx.seed, step) + 500_009)
        batch = self.ctx.producer.produce(hint_problems, params)
        out = []
        for original, hinted_rollout in zip(unsolved, batch.rollouts):
            for i in select(hinted_rollout, self.cfg):
                out.append(Example(tuple(original.prompt_ids), tuple(hinted_rollout.completions[i].token_ids)))
        return out, batch.generated_tokens

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
