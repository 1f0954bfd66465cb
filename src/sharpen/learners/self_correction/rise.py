"""RISE: multi-turn self-correction by best-of-N improved turns and reward-weighted regression.

Qu, Zhang, Kumar, Wang (2024), "Recursive Introspection: Teaching Language Model Agents How
to Self-Improve". One loop step is one iteration (METHODS.md §5):

    rollouts   one episode of up to T attempts per problem from the current model
               (`episodes.run_episodes`: after each attempt but the last the model is told
               the feedback, "wrong" with binary feedback, and answers again), sampled
               through the rollout producer (`producer.sampler()`: in process or on workers)
    states     s_t = the history before attempt t (the problem, attempts 1..t−1 and what the
               model was told after each), for every attempt t ≥ 2 of every rollout
               (t ≥ 1 with first_turn "improved"); a_t is the rollout's own attempt at s_t
    improve    at each state, a group of N = `sampling.group_size` candidate attempts
               y_1..y_N ~ π(· | s_t) (or from a stronger `teacher` policy), each scored by the
               run's reward: r_i; r(a_t) likewise
    filter     which candidates become (s_t → y_i) training examples:
                 all      every candidate (reward-weighted regression over all N)
                 better   the candidates with r_i > r(a_t): they improve on the attempt they replace
                 best     the highest-reward candidate (the first of equals), whatever its reward
                 success  the highest-reward candidate if r_i ≥ success_reward (a right turn,
                          with the correctness reward); states with none give no example
    turn 1     first_turn: "improved" trains turn 1 like every later turn (the paper);
               "base" adds `base_samples` first attempts per problem sampled from the frozen
               base model (weight 1 each), holding turn 1 near the base, so that what improves
               is the later turns and not the first answer; "skip" trains no turn-1 example
    update     SFT with weights w_i = exp((r_i − r_max)/τ) (`rwr_weights`; the shift by the
               step's highest kept reward r_max only rescales, the loss normalises weights),
               at the rate lr · f((s − 1)/S) at loop step s of S (`schedule`: cosine decays
               to 0, as the policy-gradient recipe; constant keeps lr)

Why four base samples and a cosine decay (examples/rise.yaml, run seeds 0, 1, 2; turn-1
accuracy after 40 steps minus the base's 0.405, on 1,000 held-out problems × 8 episodes; runs
under load): the improved turns teach the sums, which lifts turn 1 too, while the base samples
pull it back, and at a constant rate turn 1 keeps moving by several points within ten steps.
One base sample per problem at a constant rate ended at −0.026, −0.030, −0.005; a cosine decay
ends every seed at the same place, short of the base (+0.031, +0.027, +0.025); four base
samples per problem with it end at +0.006, +0.012, +0.001, turn 2 at 0.93 (0.93-0.95 before).

With binary feedback the history carries "wrong" after each wrong attempt, so the improved
turn learns to fix what was called wrong; after a right attempt the episode goes on with the
neutral re-ask (unless `stop_when_correct`), and its improved turn is one that stays right.
Signals that read the model (likelihood, self_judge) score a candidate against the problem's
own prompt, not the history. The rollouts read the task's checker whatever the reward: it
decides the feedback and the logged turn accuracies.
"""

from __future__ import annotations

import math
from typing import Callable, Literal, Optional, Sequence

from pydantic import Field, field_validator

from sharpen.config import ConfigModel
from sharpen.episodes import next_prompt, run_episodes
from sharpen.learners.base import (
    EpisodeSettings, LearnerContext, ReferenceModel, StepOutput, adamw, episode_metrics, episode_records, lr_factor,
    step_seed,
)
from sharpen.learners.sft import Example, fine_tune
from sharpen.learners.training import TrainingConfig
from sharpen.models import check_model_spec
from sharpen.models.base import Completion
from sharpen.tasks.base import Problem

CANDIDATE_SEED_OFFSET = 7_000_003
"""Added to a step's seed for the candidates (the rollouts' turns use seed + t, t < T)."""
BASE_SEED_OFFSET = 9_000_011
"""Added to a step's seed for the base model's first attempts (first_turn base)."""


class RiseConfig(TrainingConfig):
    """Settings of RISE (recursive introspection)."""

    kind: Literal["rise"] = Field(..., description="Which learner this is.")
    turns: int = Field(2, ge=2, description="Attempts per rollout episode (T).")
    feedback: Literal["none", "binary", "verifier"] = Field(
        "binary", description="What the model is told after an attempt: binary (the templates' retry feedback "
                              "after a wrong one), "
                              "verifier (the checker's note) or none (always the neutral re-ask)."
    )
    neutral: Optional[str] = Field(None, description="The re-ask after an attempt not called wrong (default: the "
                                                     "model's template set's).")
    stop_when_correct: bool = Field(
        False, description="End a rollout episode at its first right attempt (RISE's oracle termination)."
    )
    filter: Literal["all", "better", "best", "success"] = Field(
        "success", description="Which candidates are trained on: all, better (than the replaced attempt), "
                               "best (of N), success (best of N if right); see the module doc."
    )
    success_reward: float = Field(1.0, description="Reward a candidate needs to count as a success (filter success).")
    tau: float = Field(1.0, gt=0, description="τ of the reward-weighted regression weights exp(r/τ).")
    first_turn: Literal["skip", "base", "improved"] = Field(
        "base", description="What turn 1 is trained on: skip (nothing), base (samples of the frozen base model, "
                            "holding turn 1 near the base) or improved (its own states, like every later turn)."
    )
    teacher: Optional[str] = Field(
        None, description="Model spec of a stronger policy that proposes the candidates (default: the model itself)."
    )
    base_samples: int = Field(
        4, ge=1, description="First attempts sampled from the frozen base model per problem (first_turn base); "
                             "more hold turn 1 closer to the base (module doc)."
    )
    lr: float = Field(1e-4, gt=0, description="Peak AdamW learning rate of the fine-tuning.")
    schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="Learning-rate decay over the run's steps (cosine ends every seed's turn 1 at the same "
                              "place; a constant rate leaves it wandering, module doc)."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    epochs: int = Field(1, ge=1, description="Passes over each iteration's examples.")
    batch_size: int = Field(32, ge=1, description="Sequences per optimizer step.")
    grad_clip: float = Field(1.0, gt=0, description="Maximum global gradient norm.")

    @field_validator("teacher")
    @classmethod
    def known_model_form(cls, spec: Optional[str]) -> Optional[str]:
        if spec is not None:
            check_model_spec(spec)  # a ModelSpecError (a ValueError) that lists the accepted forms
        return spec

    def episodes(self) -> EpisodeSettings:
        return EpisodeSettings(self.turns, self.feedback, self.neutral, self.stop_when_correct)


def rwr_weights(rewards: Sequence[float], tau: float) -> list[float]:
    """Reward-weighted regression weights w_i = exp((r_i − max_j r_j)/τ) ∈ (0, 1].

    Peters & Schaal (2007), "Reinforcement Learning by Reward-Weighted Regression", as RISE
    uses it. Proportional to exp(r_i/τ); the shift keeps exp from overflowing at small τ.
    """
    if tau <= 0:
        raise ValueError(f"rwr_weights needs tau > 0, got {tau}")
    if not rewards:
        return []
    top = max(rewards)
    return [math.exp((r - top) / tau) for r in rewards]


def _first_best(rewards: Sequence[float]) -> Optional[int]:
    """Index of the highest reward, the first of equals; None for no candidates."""
    return max(range(len(rewards)), key=lambda i: (rewards[i], -i)) if rewards else None


def keep_all(rewards: Sequence[float], replaced: float, success_reward: float) -> list[int]:
    """Every candidate (reward-weighted regression over all N)."""
    return list(range(len(rewards)))


def keep_better(rewards: Sequence[float], replaced: float, success_reward: float) -> list[int]:
    """The candidates strictly better than the attempt they replace: r_i > r(a_t)."""
    return [i for i, r in enumerate(rewards) if r > replaced]


def keep_best(rewards: Sequence[float], replaced: float, success_reward: float) -> list[int]:
    """The highest-reward candidate (the first of equals), whatever its reward."""
    best = _first_best(rewards)
    return [] if best is None else [best]


def keep_success(rewards: Sequence[float], replaced: float, success_reward: float) -> list[int]:
    """The highest-reward candidate if its reward reaches `success_reward`, else none."""
    best = _first_best(rewards)
    return [] if best is None or rewards[best] < success_reward else [best]


CandidateFilter = Callable[[Sequence[float], float, float], list[int]]

FILTERS: dict[str, CandidateFilter] = {
    "all": keep_all,
    "better": keep_better,
    "best": keep_best,
    "success": keep_success,
}
"""name → filter(rewards r_1..r_N at one state, r(a_t) of the replaced attempt, success_reward)
-> indices of the candidates that become training examples."""


def filter_candidates(name: str, rewards: Sequence[float], replaced: float, success_reward: float) -> list[int]:
    """Indices of the candidates (rewards r_1..r_N at one state) that become training examples;
    `replaced` is r(a_t), the reward of the rollout's own attempt. Rules in the module doc."""
    if name not in FILTERS:
        raise ValueError(f"unknown RISE filter {name!r}; use one of {', '.join(FILTERS)}")
    return FILTERS[name](rewards, replaced, success_reward)


class Rise:
    """Roll out, improve each turn by best-of-N, fine-tune by reward-weighted regression."""

    def __init__(self, ctx: LearnerContext, cfg: RiseConfig) -> None:
        self.ctx, self.cfg, self.policy = ctx, cfg, ctx.policy
        self.optimizer = adamw(self.policy.model, cfg.lr, cfg.weight_decay)
        self.base = None
        """The frozen initial model whose first attempts anchor turn 1 (first_turn base)."""
        if cfg.first_turn == "base":
            self.base = ReferenceModel(self.policy)
        self.teacher = None
        if cfg.teacher is not None:
            from sharpen.models import load_policy

            self.teacher = load_policy(cfg.teacher, seed=ctx.seed, progress=False)

    def step(self, step: int, problems: list[Problem]) -> StepOutput:
        ctx, cfg = self.ctx, self.cfg
        seed = step_seed(ctx.seed, step)
        params = ctx.sampling.params(seed, n=1)
        episodes = run_episodes(
            ctx.producer.sampler(), ctx.task, problems, turns=cfg.turns, feedback=cfg.feedback, params=params,
            stop_when_correct=cfg.stop_when_correct, seed=seed, neutral=cfg.neutral,
        )
        scored = ctx.reward([e.problem for e in episodes for _ in e.turns],
                            [[t.completion] for e in episodes for t in e.turns])
        flat_rewards = iter(row[0] for row in scored.total)
        attempt_rewards = [[next(flat_rewards) for _ in e.turns] for e in episodes]  # [episode][turn]
        flat_scorable = iter(row[0] for row in scored.scorable)
        attempt_scorable = [[next(flat_scorable) for _ in e.turns] for e in episodes]  # [episode][turn]

        first = 0 if cfg.first_turn == "improved" else 1
        # a state whose own attempt is unscorable has no reward to improve on: left out
        states = [(i, t) for i, e in enumerate(episodes) for t in range(first, len(e.turns)) if attempt_scorable[i][t]]
        prompts = [next_prompt(episodes[i].problem, episodes[i].turns[:t]) for i, t in states]
        sampler = self.teacher or ctx.producer.sampler()
        groups = sampler.generate(prompts, ctx.sampling.params(seed + CANDIDATE_SEED_OFFSET)) if states else []
        judged = ctx.reward([episodes[i].problem for i, _ in states], groups) if states else None
        candidate_rewards = judged.total if states else []

        kept: list[tuple[tuple[int, ...], Completion, float]] = []
        improved = 0
        for (i, t), prompt, group, rewards, scorable in zip(states, prompts, groups, candidate_rewards,
                                                            judged.scorable if states else []):
            among = [j for j, ok in enumerate(scorable) if ok]  # unscorable candidates are never kept
            picked = filter_candidates(cfg.filter, [rewards[j] for j in among], attempt_rewards[i][t],
                                       cfg.success_reward)
            chosen = [among[k] for k in picked]
            improved += bool(chosen)
            prompt_ids = tuple(self.policy.encode(prompt))
            kept += [(prompt_ids, group[j], rewards[j]) for j in chosen]
        weights = rwr_weights([r for _, _, r in kept], cfg.tau)
        examples = [Example(p, self.training_ids(c), w) for (p, c, _), w in zip(kept, weights)]
        anchors = self.base_first_attempts(problems, seed) if self.base is not None else []

        metrics = {**scored.summary(), **episode_metrics(episodes, cfg.turns)}
        flat = [r for rewards, oks in zip(candidate_rewards, judged.scorable if states else []) for r, ok in
                zip(rewards, oks) if ok]
        metrics.update({
            "rise/states": float(len(states)),
            "unscorable": float(sum(not ok for row in attempt_scorable for ok in row)),
            "rise/examples": float(len(examples)),
            "rise/base_examples": float(len(anchors)),
            "rise/improved_states": improved / len(states) if states else 0.0,
            "gen_tokens": float(sum(e.tokens for e in episodes) + sum(c.n_tokens for g in groups for c in g)
                                + sum(len(a.completion_ids) for a in anchors)),
        })
        if flat:
            metrics["rise/candidate_reward_mean"] = sum(flat) / len(flat)
        lr = cfg.lr * lr_factor(step - 1, ctx.total_steps, 0, cfg.schedule)
        metrics["lr"] = lr
        metrics.update(fine_tune(
            self.policy, self.optimizer, examples + anchors, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=lr,
            grad_clip=cfg.grad_clip, seed=seed,
        ))
        return StepOutput(metrics, episode_records(episodes[: ctx.log_completions], attempt_rewards))

    def base_first_attempts(self, problems: list[Problem], seed: int) -> list[Example]:
        """`base_samples` first attempts per problem sampled from the frozen base model, as
        turn-1 examples of weight 1 (the largest RWR weight): SFT on them pulls turn 1 back to
        the base."""
        with self.base.using(self.policy):
            groups = self.policy.generate([p.prompt for p in problems],
                                          self.ctx.sampling.params(seed + BASE_SEED_OFFSET, n=self.cfg.base_samples))
        return [Example(tuple(self.policy.encode(p.prompt)), tuple(c.token_ids))
                for p, group in zip(problems, groups) for c in group]

    def training_ids(self, completion: Completion) -> tuple[int, ...]:
        """The student's token ids of a candidate: as sampled from the model itself; a teacher's
        text is tokenized with the student's tokenizer and ended with its end-of-sequence token."""
        if self.teacher is None:
            return tuple(completion.token_ids)
        tokenizer = self.policy.tokenizer
        return tuple(tokenizer(completion.text, add_special_tokens=False)["input_ids"]) + (tokenizer.eos_token_id,)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


__all__ = ["FILTERS", "Rise", "RiseConfig", "filter_candidates", "rwr_weights"]
