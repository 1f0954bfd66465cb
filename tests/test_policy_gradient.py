"""The policy-gradient glue: ranges and weights of the reward, unscorable completions,
behaviour log-probs and importance ratios (issue 12, points 9-12)."""

from __future__ import annotations

import copy
import math
import types
from dataclasses import dataclass

import pytest
import torch

from sharpen.learners.base import LearnerContext, Sampling, behaviour_logprobs
from sharpen.learners.policy_gradient.advantages import (
    bnpo_advantages, grpo_advantages, rloo_advantages, signed_reward_advantages,
)
from sharpen.learners.policy_gradient.learner import PolicyGradient, PolicyGradientConfig, scorable_mask
from sharpen.models.base import Completion, SamplingParams
from sharpen.models.hf import HFPolicy
from sharpen.rollouts import InProcessProducer, Rollout
from sharpen.signals.reward import Component, Reward, composite_range
from sharpen.tasks import get_task
from sharpen.tasks.base import Problem


@dataclass
class Fixed:
    """A signal that returns given scores (by completion text), with a declared range."""

    table: dict
    name: str = "fixed"
    score_range: tuple = (0.0, 1.0)

    def __call__(self, problems, groups):
        return [[self.table.get(c.text) for c in g] for g in groups]


@dataclass
class Unranged(Fixed):
    score_range: tuple = None


def completion(text: str, n: int = 2) -> Completion:
    return Completion(text, tuple(range(1, n + 1)), (-0.5,) * n, "stop", (-0.4,) * n)


def rollout(texts, components: dict, unscorable=()) -> Rollout:
    return Rollout(Problem("p", "2+2=", "4"), [1, 2], [completion(t) for t in texts], [0.0] * len(texts),
                   components, tuple(unscorable))


def learner(reward: Reward, policy=None, temperature: float = 1.0, top_p: float = 1.0, **cfg) -> PolicyGradient:
    policy = policy or types.SimpleNamespace(model=torch.nn.Linear(1, 1))
    ctx = LearnerContext(policy, get_task("addition"), reward, None,
                         Sampling(4, temperature, top_p, 6, ()), total_steps=1, seed=0)
    return PolicyGradient(ctx, PolicyGradientConfig(**{"minibatches": 1, **cfg}))  # one step unless asked


def with_totals(reward: Reward, rollouts: list[Rollout]) -> list[Rollout]:
    """Fill each rollout's totals from its components and the reward's weights."""
    for r in rollouts:
        r.rewards = [sum(w * (r.components[n][j] or 0.0) for n, w in reward.weights.items())
                     for j in range(len(r.completions))]
    return rollouts


# ---- 9. ranges come from the signals, weights enter the decomposition -------------------------


def test_composite_range_follows_the_weights():
    assert composite_range([(1.0, (0.0, 1.0)), (0.2, (0.0, 1.0))]) == (0.0, pytest.approx(1.2))
    assert composite_range([(1.0, (0.0, 1.0)), (-0.5, (0.0, 1.0))]) == (-0.5, 1.0)  # a penalty lowers the floor
    assert composite_range([(1.0, (0.0, 1.0)), (0.0, None)]) == (0.0, 1.0)  # weight 0: a logged metric only
    assert composite_range([(1.0, (0.0, 1.0)), (2.0, None)]) is None  # unknown stays unknown
    reward = Reward.from_specs([("correctness", 1.0), ("format", 0.2)], task=get_task("addition"))
    assert reward.range == (0.0, pytest.approx(1.2))


def test_bnpo_decomposition_weighs_each_component_by_its_weight():
    """examples/bnpo.yaml: format at 0.2 counts a fifth of correctness, not as much."""
    corr = [[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]]
    fmt = [[0.0, 1.0, 1.0, 1.0], [1.0, 0.0, 1.0, 1.0]]
    reward = Reward([Component("correctness", Fixed({}), 1.0), Component("format", Fixed({}), 0.2)])
    rows = with_totals(reward, [rollout("abcd", {"correctness": c, "format": f}) for c, f in zip(corr, fmt)])
    got = learner(reward, advantage="bnpo").advantages(rows)
    a_corr = bnpo_advantages(torch.tensor(corr, dtype=torch.float64))
    a_fmt = bnpo_advantages(torch.tensor(fmt, dtype=torch.float64))
    torch.testing.assert_close(got, (a_corr + 0.2 * a_fmt) / 1.2)


def test_a_penalty_with_negative_weight_is_pushed_down():
    """Equal correctness, one completion penalised: its advantage is the lowest, not the highest."""
    reward = Reward([Component("correctness", Fixed({}), 1.0), Component("penalty", Fixed({}), -0.5)])
    rows = with_totals(reward, [
        rollout("abcd", {"correctness": [1.0, 1.0, 0.0, 0.0], "penalty": [1.0, 0.0, 0.0, 0.0]}),
        rollout("abcd", {"correctness": [1.0, 0.0, 0.0, 0.0], "penalty": [0.0, 0.0, 1.0, 0.0]}),
    ])
    got = learner(reward, advantage="bnpo").advantages(rows)
    assert got[0, 0] < got[0, 1]  # both right, the penalised one lower
    assert got[1, 2] < got[1, 1] == got[1, 3]  # both wrong, the penalised one lower


def test_ranged_estimators_rescale_by_the_known_range_not_the_batch():
    reward = Reward([Component("correctness", Fixed({}), 1.0), Component("format", Fixed({}), 0.2)])
    rows = with_totals(reward, [
        rollout("abcd", {"correctness": [1.0, 0.0, 0.0, 0.0], "format": [0.0, 0.0, 0.0, 0.0]}),
        rollout("abcd", {"correctness": [1.0, 1.0, 0.0, 0.0], "format": [0.0, 0.0, 0.0, 0.0]}),
    ])
    totals = torch.tensor([r.rewards for r in rows], dtype=torch.float64)  # max 1.0 in this batch
    got = learner(reward, advantage="bnpo", decompose=False).advantages(rows)
    torch.testing.assert_close(got, bnpo_advantages(totals, 0.0, 1.2))  # [0, 1.2] from the weights
    got = learner(reward, advantage="signed").advantages(rows)
    torch.testing.assert_close(got, signed_reward_advantages(totals, 0.0, 1.2))


def test_a_ranged_estimator_needs_a_known_range():
    reward = Reward([Component("mine", Unranged({}), 1.0)])
    with pytest.raises(ValueError, match=r"no known finite range .*\(range: \[lowest, highest\]\)"):
        learner(reward, advantage="bnpo")
    with pytest.raises(ValueError, match="no known finite range"):
        learner(reward, weighting="topr")
    learner(reward, advantage="grpo")  # needs none
    declared = Reward([Component("mine", Unranged({}), 1.0, (0.0, 2.0))])
    assert declared.range == (0.0, 2.0)
    learner(declared, advantage="bnpo")


# ---- 10. unscorable completions are left out --------------------------------------------------


def test_reward_marks_completions_a_weighted_component_cannot_score():
    reward = Reward([Component("correctness", Fixed({"a": 1.0, "b": 0.0, "c": None}), 1.0),
                     Component("format", Fixed({"a": 1.0, "b": 1.0, "c": 1.0}), 0.2),
                     Component("metric", Fixed({"a": None}), 0.0)])  # weight 0: never makes one unscorable
    result = reward([Problem("p", "x")], [[completion("a"), completion("b"), completion("c")]])
    assert result.scorable == [[True, True, False]]
    summary = result.summary()
    assert summary["reward/frac_unscorable"] == pytest.approx(1 / 3)
    assert summary["reward/mean"] == pytest.approx((1.2 + 0.2) / 2)  # the unscorable 0.2 is not a reward
    producer = InProcessProducer(types.SimpleNamespace(generate=lambda prompts, params: [
        [completion("a"), completion("b"), completion("c")]], encode=lambda prompt: [1]), reward)
    assert producer.produce([Problem("p", "x")], SamplingParams(n=3)).rollouts[0].unscorable == (2,)


def test_unscorable_completions_take_no_part_in_advantages():
    reward = Reward([Component("correctness", Fixed({}), 1.0)])
    rows = with_totals(reward, [
        rollout("abcd", {"correctness": [1.0, 0.0, None, 0.0]}, unscorable=[2]),
        rollout("abcd", {"correctness": [1.0, None, None, None]}, unscorable=[1, 2, 3]),  # too few scorable
    ])
    assert scorable_mask(rows).tolist() == [[True, True, False, True], [False] * 4]
    for name, estimator in (("grpo", grpo_advantages), ("rloo", rloo_advantages)):
        got = learner(reward, advantage=name).advantages(rows)
        expected = estimator(torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64))[0]
        torch.testing.assert_close(got[0, [0, 1, 3]], expected)  # as if the group had 3 completions
        assert got[0, 2] == 0 and bool((got[1] == 0).all())
    got = learner(reward, advantage="bnpo").advantages(rows)
    torch.testing.assert_close(got[0, [0, 1, 3]], bnpo_advantages(torch.tensor([[1.0, 0.0, 0.0]],
                                                                            dtype=torch.float64))[0])
    assert got[0, 2] == 0 and bool((got[1] == 0).all())


def test_the_rejection_and_preference_builders_skip_unscorable_completions():
    from sharpen.learners.preference.learner import PreferenceConfig, rollout_pairs
    from sharpen.learners.rejection_sampling.learner import RejectionSamplingConfig, select

    r = rollout(["4", "5", "6"], {"correctness": [None, 0.0, 1.0]}, unscorable=[0])
    r.rewards = [5.0, 0.0, 1.0]  # the unscorable one's partial total is the highest
    assert select(r, RejectionSamplingConfig(kind="rejection_sampling", select="best")) == [2]
    assert select(r, RejectionSamplingConfig(kind="rejection_sampling", threshold=1.0)) == [2]
    pairs = rollout_pairs(r, PreferenceConfig(kind="preference", pairs="judge"), get_task("addition").extract)
    assert [(p.chosen.text, p.rejected.text) for p in pairs] == [("6", "5")]


def test_the_update_never_scores_an_unscorable_completion(tiny_policy):
    task = get_task("addition")
    reward = Reward([Component("parity", ParityScore(), 1.0)])
    pg = learner(reward, tiny_policy, advantage="grpo", epochs=1, skip_zero_advantage=False)  # each kept one once
    problems = task.problems("train", 3, 0)
    rollouts = InProcessProducer(tiny_policy, reward).produce(problems, SamplingParams(n=4, max_new_tokens=6, seed=3)).rollouts
    rollouts[0].unscorable = (1,)
    rollouts[1].unscorable = (0, 1, 2)  # one scorable left: the group gives no signal
    seen = []
    score = tiny_policy.score_tokens

    def spy(prompt_ids, completion_ids, **kw):
        seen.extend(tuple(c) for c in completion_ids)
        return score(prompt_ids, completion_ids, **kw)

    tiny_policy.score_tokens = spy
    diag = pg.update(rollouts)
    expected = [c.token_ids for i, r in enumerate(rollouts) if i != 1 for j, c in enumerate(r.completions)
                if (i, j) != (0, 1)]
    assert seen == expected
    assert diag["unscorable"] == 4.0 and diag["left_out_frac"] == pytest.approx(5 / 12)


@dataclass
class ParityScore:
    """1.0 for a completion whose token ids sum to an even number, else 0.0: a fixed, known
    reward that varies within groups."""

    name: str = "parity"
    score_range: tuple = (0.0, 1.0)

    def __call__(self, problems, groups):
        return [[float(sum(c.token_ids) % 2 == 0) for c in g] for g in groups]


# ---- 11. behaviour log-probs and TOPR ---------------------------------------------------------


def test_the_sampler_records_the_distribution_it_sampled_from(tiny_policy):
    prompts = ["12+7=", "40+3="]
    prompt_ids = [tiny_policy.encode(p) for p in prompts]
    for temperature, top_p in ((0.5, 1.0), (1.3, 0.7)):
        groups = tiny_policy.generate(prompts, SamplingParams(n=3, temperature=temperature, top_p=top_p,
                                                              max_new_tokens=5, seed=2))
        for ids, group in zip(prompt_ids, groups):
            for c in group:
                full = torch.tensor(list(ids) + list(c.token_ids))
                with torch.no_grad():
                    logits = tiny_policy.model(input_ids=full[None]).logits[0, len(ids) - 1 : -1] / temperature
                probs = logits.softmax(-1)  # (n, V) at the temperature
                ranked, _ = probs.sort(-1, descending=True)
                before = ranked.cumsum(-1) - ranked  # mass of strictly likelier tokens
                nucleus = (ranked * (before < top_p)).sum(-1)  # (n,) mass the sampler kept
                picked = probs.gather(-1, full[len(ids):, None]).squeeze(-1)
                expected = (picked / nucleus).log()
                torch.testing.assert_close(torch.tensor(c.sampling_logprobs), expected, atol=1e-4, rtol=0)
                plain = logits.mul(temperature).log_softmax(-1).gather(-1, full[len(ids):, None]).squeeze(-1)
                torch.testing.assert_close(torch.tensor(c.logprobs), plain, atol=1e-4, rtol=0)  # still at T = 1
    greedy = tiny_policy.generate(prompts[:1], SamplingParams(n=1, temperature=0, max_new_tokens=4))[0][0]
    assert greedy.sampling_logprobs == (0.0,) * len(greedy.token_ids)  # a point mass


def test_behaviour_logprobs_align_with_the_tokens():
    cs = [Completion("a", (5, 6, 7), (-1.0,) * 3, "stop", (-0.1, -0.2, -0.3)),
          Completion("b", (8,), (-1.0,), "stop", (-0.4,))]
    torch.testing.assert_close(behaviour_logprobs(cs, 3), torch.tensor([[-0.1, -0.2, -0.3], [-0.4, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="carries 0 sampling log-probs for 1 tokens"):
        behaviour_logprobs([Completion("c", (1,), (-1.0,), "stop")], 1)


def perturbed(policy: HFPolicy, scale: float, seed: int) -> HFPolicy:
    """A copy of `policy` with noise on every weight: rollouts from 'older weights'."""
    model = copy.deepcopy(policy.model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale * p.std().clamp(min=1e-3))
    return HFPolicy(model, policy.tokenizer)


def test_topr_tapers_negative_samples_drawn_off_policy(tiny_policy):
    """Samples from perturbed weights at temperature 0.7: TOPR weighs each negative sample by
    clamp(π(y)/μ(y), 0, 1) with π and μ both the distributions at the sampling temperature."""
    task, T = get_task("addition"), 0.7
    reward = Reward([Component("parity", ParityScore(), 1.0)])
    behaviour = perturbed(tiny_policy, 0.5, seed=1)
    problems = task.problems("train", 8, 0)
    rollouts = InProcessProducer(behaviour, reward).produce(
        problems, SamplingParams(n=4, temperature=T, max_new_tokens=6, seed=5)).rollouts
    rows = [(r.prompt_ids, c, v) for r in rollouts for c, v in zip(r.completions, r.rewards)]
    with torch.no_grad():
        now = tiny_policy.score_tokens([p for p, _, _ in rows], [c.token_ids for _, c, _ in rows], temperature=T)
        then = behaviour.score_tokens([p for p, _, _ in rows], [c.token_ids for _, c, _ in rows], temperature=T)
    log_ratio = ((now.logprobs - then.logprobs) * now.mask).sum(-1)  # (B,) log π(y)/μ(y)
    positive = torch.tensor([v >= 0.5 for _, _, v in rows])
    expected = torch.where(positive, 1.0, log_ratio.clamp(max=0).exp())  # (B,)
    assert bool((expected[~positive] < 0.99).any())  # the samples are off-policy: truncation acts
    pg = learner(reward, tiny_policy, temperature=T, advantage="grpo", weighting="topr", epochs=1,
                 skip_zero_advantage=False)  # every group's weights, all-equal ones too, before any step
    diag = pg.update(rollouts)
    assert diag["sample_weight_mean"] == pytest.approx(expected.mean().item(), abs=1e-4)
    assert diag["ratio_mean"] != pytest.approx(1.0, abs=1e-3)  # the PPO ratio sees the staleness too


# ---- 12. the update itself --------------------------------------------------------------------


def test_the_ratio_is_one_on_the_first_epoch_of_on_policy_data(tiny_policy):
    task = get_task("addition")
    reward = Reward([Component("parity", ParityScore(), 1.0)])
    for temperature in (1.0, 0.6):
        rollouts = InProcessProducer(tiny_policy, reward).produce(
            task.problems("train", 4, 0), SamplingParams(n=4, temperature=temperature, max_new_tokens=6, seed=9)).rollouts
        pg = learner(copy.deepcopy(reward), tiny_policy, temperature=temperature, advantage="grpo", lr=1e-3,
                     epochs=1)
        state = copy.deepcopy(tiny_policy.model.state_dict())
        diag = pg.update(rollouts)
        tiny_policy.model.load_state_dict(state)
        # the sampler's cached decoding and the scoring pass agree to float rounding only
        assert diag["ratio_mean"] == pytest.approx(1.0, abs=1e-5)
        assert diag["approx_kl"] < 1e-9 and diag["clip_frac"] == 0.0


def test_later_epochs_see_the_ratio_move_and_clip(tiny_policy):
    task = get_task("addition")
    reward = Reward([Component("parity", ParityScore(), 1.0)])
    rollouts = InProcessProducer(tiny_policy, reward).produce(
        task.problems("train", 4, 0), SamplingParams(n=4, max_new_tokens=6, seed=9)).rollouts
    state = copy.deepcopy(tiny_policy.model.state_dict())
    one = learner(reward, tiny_policy, advantage="grpo", lr=3e-2).update(rollouts)
    tiny_policy.model.load_state_dict(state)
    many = learner(reward, tiny_policy, advantage="grpo", lr=3e-2, epochs=4).update(rollouts)
    tiny_policy.model.load_state_dict(state)
    assert many["approx_kl"] > one["approx_kl"] + 1e-6  # averaged over epochs 1..4: the policy moved


def test_weighting_gets_its_lambda_and_the_reward_range():
    reward = Reward([Component("correctness", Fixed({}), 1.0), Component("format", Fixed({}), 0.2)])
    pg = learner(reward, advantage="signed", weighting="w_reinforce", weighting_lambda=0.3)
    captured = {}

    def fake_step(rollouts, advantages, rewards, keep, weighting, weight_args, prox=None):
        w = weighting(rewards[keep], policy_logprobs=None, behaviour_logprobs=None, **weight_args)
        captured.update(weight_args=weight_args, w=w.tolist(), advantages=advantages[keep].tolist())
        return {"tokens": 0.0}

    pg.minibatch_step = fake_step
    rows = with_totals(reward, [rollout("abc", {"correctness": [1.0, 0.0, 0.0], "format": [1.0, 1.0, 0.0]})])
    pg.update(rows)
    assert captured["weight_args"] == {"lam": 0.3, "r_min": 0.0, "r_max": pytest.approx(1.2)}
    # totals 1.2, 0.2, 0.0 on [0, 1.2]: signed 1, −2/3, −1; only the first is positive
    assert captured["w"] == pytest.approx([0.3, 1.0, 1.0])
    assert captured["advantages"] == pytest.approx([1.0, 0.2 / 0.6 - 1, -1.0])
