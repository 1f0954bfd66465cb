"""The quickstart's policy-gradient recipe: several optimizer steps per batch of rollouts, on
the groups that carry a signal (benchmarks/README.md measures it against TRL's GRPOTrainer)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sharpen.learners.base import LearnerContext, Sampling
from sharpen.learners.policy_gradient.learner import PolicyGradient, PolicyGradientConfig, trained_groups
from sharpen.loop import LEARNERS, RunConfig
from sharpen.models.base import SamplingParams
from sharpen.rollouts import InProcessProducer
from sharpen.signals.reward import Component, Reward
from sharpen.tasks import get_task


def test_the_quickstart_takes_three_whole_batch_optimizer_steps_per_batch(tiny_policy):
    cfg = RunConfig()
    config_class = LEARNERS["policy_gradient"][0]
    assert cfg.learner == config_class() and (cfg.learner.epochs, cfg.learner.minibatches, cfg.learner.lr) == (3, 1, 3e-4)
    task = get_task("addition")
    reward, rollouts = uniform_and_mixed_batch(tiny_policy, task)
    learner = pg_learner(tiny_policy, task, reward)
    seen = []
    step = learner.minibatch_step

    def spy(rollouts, *args):
        seen.append([r.problem.id for r in rollouts])
        return step(rollouts, *args)

    learner.minibatch_step = spy
    learner.update(rollouts)
    assert learner.updates == 3
    assert next(iter(learner.optimizer.state.values()))["step"].item() == 3  # three AdamW steps
    mixed = [rollouts[2].problem.id, rollouts[3].problem.id]
    assert seen == [mixed] * 3  # each on the whole batch of groups with a signal


def test_trained_groups_leave_out_groups_whose_advantages_are_all_zero():
    advantages = torch.tensor([[0.0, 0.0, 0.0], [0.5, -0.5, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, -1.0]])
    keep = torch.tensor([[True, True, True], [True, True, False], [False, False, False], [True, False, True]])
    assert trained_groups(advantages, keep, skip_zero_advantage=True) == [1, 3]
    assert trained_groups(advantages, keep, skip_zero_advantage=False) == [0, 1, 3]  # group 2 has no kept one
    # a non-zero advantage on a left-out completion does not make its group trained
    assert trained_groups(torch.tensor([[0.0, 2.0]]), torch.tensor([[True, False]]), True) == []


def uniform_and_mixed_batch(policy, task):
    """Rollouts of 4 problems, rewarded 1.0 for all of group 0, 0.0 for all of group 1, and
    mixed in groups 2 and 3."""
    reward = Reward([Component("fixed", ByGroup({0: [1.0] * 4, 1: [0.0] * 4, 2: [1.0, 0.0, 0.0, 1.0],
                                                 3: [0.0, 1.0, 0.0, 0.0]}), 1.0)])
    problems = task.problems("train", 4, 0)
    rollouts = InProcessProducer(policy, reward).produce(problems, SamplingParams(n=4, max_new_tokens=6, seed=1)).rollouts
    return reward, rollouts


@dataclass
class ByGroup:
    """Scores given per group index of the batch."""

    table: dict
    name: str = "fixed"
    score_range: tuple = (0.0, 1.0)

    def __call__(self, problems, groups):
        return [self.table[i] for i in range(len(groups))]


def scored_groups(pg, policy, rollouts) -> set[int]:
    """The groups whose completions the update scores (forward and backward)."""
    seen = []
    score = policy.score_tokens

    def spy(prompt_ids, completion_ids, **kw):
        seen.extend(map(tuple, completion_ids))
        return score(prompt_ids, completion_ids, **kw)

    policy.score_tokens = spy
    try:
        pg.update(rollouts)
    finally:
        policy.score_tokens = score
    return {i for i, r in enumerate(rollouts) for c in r.completions if tuple(c.token_ids) in seen}


def pg_learner(policy, task, reward, **cfg) -> PolicyGradient:
    ctx = LearnerContext(policy, task, reward, None, Sampling(4, 1.0, 1.0, 6, ()), total_steps=1, seed=0)
    return PolicyGradient(ctx, PolicyGradientConfig(**cfg))


def test_the_update_skips_the_compute_of_groups_with_no_signal(tiny_policy):
    task = get_task("addition")
    reward, rollouts = uniform_and_mixed_batch(tiny_policy, task)
    assert scored_groups(pg_learner(tiny_policy, task, reward), tiny_policy, rollouts) == {2, 3}
    # the switch off, and a KL term (every group carries it): all four
    assert scored_groups(pg_learner(tiny_policy, task, reward, skip_zero_advantage=False), tiny_policy,
                         rollouts) == {0, 1, 2, 3}
    assert scored_groups(pg_learner(tiny_policy, task, reward, kl_coef=0.1), tiny_policy, rollouts) == {0, 1, 2, 3}
    # no baseline: an all-right group has advantage +1 and trains
    assert scored_groups(pg_learner(tiny_policy, task, reward, advantage="signed"), tiny_policy,
                         rollouts) == {0, 1, 2, 3}
