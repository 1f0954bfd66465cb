"""The diagnostics behind TRL's names: clip_ratio/low_mean, …/high_mean and completions/clipped_ratio."""

import math

import torch

from sharpen.learners.policy_gradient.losses import clipped_surrogate


def test_clipped_tokens_split_into_low_and_high_as_trl_does():
    # 4 tokens of one sequence can't carry two advantages, so use 4 sequences of 1 token:
    # ρ = 1.5, A > 0 → high-clipped; ρ = 0.5, A < 0 → low-clipped; ρ = 1.5, A < 0 and
    # ρ = 0.5, A > 0 → not clipped (the unclipped branch is the minimum)
    lp = torch.log(torch.tensor([[1.5], [0.5], [1.5], [0.5]])).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0])
    _, diag = clipped_surrogate(lp, torch.zeros(4, 1), adv, torch.ones(4, 1), eps_low=0.2, eps_high=0.2,
                                aggregation="token_mean", max_len=1)
    assert diag["clip_frac_high"] == 0.25 and diag["clip_frac_low"] == 0.25
    assert math.isclose(diag["clip_frac"], diag["clip_frac_low"] + diag["clip_frac_high"])


def test_truncated_completions_are_counted(tiny_policy):
    from sharpen.learners.base import batch_metrics
    from sharpen.rollouts import InProcessProducer
    from sharpen.models.base import SamplingParams
    from sharpen.signals.reward import Reward
    from sharpen.tasks import get_task

    task = get_task("addition")
    reward = Reward.from_specs([{"name": "correctness"}], task=task, policy=tiny_policy)
    problems = task.problems("train", 2, 0)
    batch = InProcessProducer(tiny_policy, reward).produce(problems, SamplingParams(n=3, max_new_tokens=1, seed=0))
    cut = [c.finish_reason == "length" for r in batch.rollouts for c in r.completions]
    assert batch_metrics(batch)["completion_truncated_frac"] == sum(cut) / 6
    assert any(cut)  # one token is too few for an answer and its end-of-text


def test_report_legends_show_the_trl_name_next_to_sharpens():
    from sharpen.reports.plots import legend_name

    assert legend_name("reward/mean") == "reward/mean (TRL: reward)"
    assert legend_name("clip_frac_high") == "clip_frac_high (TRL: clip_ratio/high_mean)"
    assert legend_name("entropy") == "entropy"
