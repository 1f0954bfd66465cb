"""The pieces of the rejection-sampling and preference learners, on made-up data."""

from __future__ import annotations

import math

import pytest
import torch

from sharpen.learners.preference.learner import PreferenceConfig, rollout_pairs
from sharpen.learners.rejection_sampling.learner import RejectionSamplingConfig, hinted, select
from sharpen.learners.sft import weighted_nll
from sharpen.models.base import Completion, SamplingParams
from sharpen.rollouts import Rollout
from sharpen.tasks import get_task
from sharpen.tasks.base import Problem


def completion(text: str, n_tokens: int = 2) -> Completion:
    return Completion(text, tuple(range(1, n_tokens + 1)), (-0.5,) * n_tokens, "stop")


def rollout(texts, rewards, correctness=None) -> Rollout:
    components = {"correctness": correctness} if correctness is not None else {}
    return Rollout(Problem("p", "2+2=", "4"), [1, 2], [completion(t) for t in texts], rewards, components)


def test_weighted_nll_by_hand():
    logprobs = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    weights = torch.tensor([2.0, 1.0])
    loss, diag = weighted_nll(logprobs, mask, weights)
    # (2·(1 + 2) + 1·0.5) / (2·2 + 1·1) = 6.5 / 5
    assert loss.item() == pytest.approx(1.3)
    assert diag["tokens"] == 3
    loss.backward()
    expected = -torch.tensor([[2.0, 2.0, 0.0], [1.0, 0.0, 0.0]]) / 5  # ∂L/∂ℓ_it = −w_i m_it / Σ w|y|
    assert torch.allclose(logprobs.grad, expected)


def test_weighted_nll_with_equal_weights_is_the_token_mean():
    logprobs = torch.tensor([[-1.0, -3.0], [-2.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    for w in (1.0, 7.0):
        loss, _ = weighted_nll(logprobs, mask, torch.tensor([w, w]))
        assert loss.item() == pytest.approx(2.0)


def test_weighted_nll_refuses_bad_shapes_and_negative_weights():
    with pytest.raises(ValueError, match=r"must be \(B, T\), \(B, T\) and \(B,\)"):
        weighted_nll(torch.zeros(2, 3), torch.ones(2, 3), torch.ones(3))
    with pytest.raises(ValueError, match="weights must be >= 0"):
        weighted_nll(torch.zeros(1, 1), torch.ones(1, 1), torch.tensor([-1.0]))


def test_threshold_selection_keeps_distinct_passing_completions():
    cfg = RejectionSamplingConfig(kind="rejection_sampling", max_per_problem=2)
    r = rollout(["4", "5", "4", "four", "04"], [1.0, 0.0, 1.0, 1.0, 1.0])
    assert select(r, cfg) == [0, 3]  # the second "4" is a duplicate; at most 2 kept
    assert select(rollout(["5", "6"], [0.0, 0.5]), cfg) == []


def test_best_selection_takes_the_highest_reward_without_labels():
    cfg = RejectionSamplingConfig(kind="rejection_sampling", select="best")
    assert select(rollout(["a", "b", "c"], [-3.0, -1.0, -1.0]), cfg) == [1]  # ties: the earliest


def test_hint_goes_into_the_last_user_turn():
    assert hinted("2+2=", "4") == "2+2= (hint: the answer is 4)"
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2="}]
    assert hinted(chat, "4")[-1] == {"role": "user", "content": "2+2= (hint: the answer is 4)"}
    assert chat[-1]["content"] == "2+2="  # the problem's prompt is not changed


def test_pairs_from_each_source():
    extract = get_task("addition").extract
    r = rollout(["4", "5", "4", "6"], [0.9, 0.1, 0.5, 0.3], correctness=[1.0, 0.0, 1.0, None])
    by_label = rollout_pairs(r, PreferenceConfig(kind="preference", pairs="correctness"), extract)
    assert [(p.chosen.text, p.rejected.text) for p in by_label] == [("4", "5")]
    by_votes = rollout_pairs(r, PreferenceConfig(kind="preference", pairs="consistency"), extract)
    assert [(p.chosen.text, p.rejected.text, p.weight) for p in by_votes] == [("4", "5", 0.25)]
    by_judge = rollout_pairs(r, PreferenceConfig(kind="preference", pairs="judge"), extract)
    assert [(p.chosen.text, p.rejected.text) for p in by_judge] == [("4", "5")]
    assert math.isclose(by_judge[0].weight, 1.0)


def test_correctness_pairs_need_the_correctness_reward(tiny_model_dir):
    from sharpen.learners.base import LearnerContext, Sampling
    from sharpen.learners.preference.learner import PreferenceLearning
    from sharpen.models import load_policy
    from sharpen.rollouts import InProcessProducer
    from sharpen.signals.reward import Reward

    task = get_task("addition")
    policy = load_policy(str(tiny_model_dir), progress=False)
    reward = Reward.from_specs([("likelihood", 1.0)], task=task, policy=policy)
    ctx = LearnerContext(policy, task, reward, InProcessProducer(policy, reward),
                         Sampling(2, 1.0, 1.0, 8, task.stop), total_steps=1, seed=0)
    with pytest.raises(ValueError, match=r"pairs 'correctness' needs the correctness signal .*\['likelihood'\]"):
        PreferenceLearning(ctx, PreferenceConfig(kind="preference", pairs="correctness"))


class HintAwareProducer:
    """Answers right only when the prompt carries the hint, like a model that reads hints."""

    def __init__(self):
        self.prompts = []

    def produce(self, problems, params):
        from sharpen.rollouts import RolloutBatch

        self.prompts += [p.prompt for p in problems]
        rollouts = []
        for p in problems:
            right = "hint" in str(p.prompt)
            texts = [p.answer if right and i == 1 else "7" for i in range(params.n)]
            rewards = [1.0 if t == p.answer else 0.0 for t in texts]
            rollouts.append(Rollout(p, [len(str(p.prompt))], [completion(t, 1 + i) for i, t in enumerate(texts)],
                                    rewards, {"correctness": rewards}))
        return RolloutBatch(rollouts, {}, 0.0, 0.0)


def test_star_rationalises_unsolved_problems_and_trains_without_the_hint():
    import types

    from sharpen.learners.base import LearnerContext, Sampling
    from sharpen.learners.rejection_sampling.learner import RejectionSampling

    producer = HintAwareProducer()
    ctx = LearnerContext(types.SimpleNamespace(model=torch.nn.Linear(1, 1)), get_task("addition"), None, producer,
                         Sampling(3, 1.0, 1.0, 8, ()), total_steps=1, seed=0)
    learner = RejectionSampling(ctx, RejectionSamplingConfig(kind="rejection_sampling", rationalize=True))
    unsolved = producer.produce([Problem("a", "2+2=", "4"), Problem("b", "3+3=", "6")], SamplingParams(n=3)).rollouts
    examples, tokens = learner.rationalize(unsolved, step=1)
    assert producer.prompts[-2:] == ["2+2= (hint: the answer is 4)", "3+3= (hint: the answer is 6)"]
    assert [e.prompt_ids for e in examples] == [(len("2+2="),), (len("3+3="),)]  # the prompt without the hint
    assert [e.completion_ids for e in examples] == [(1, 2), (1, 2)]  # the hinted group's right completion
    assert tokens == 2 * (1 + 2 + 3)  # what sampling the two hinted groups generated
    with pytest.raises(ValueError, match="rationalize needs reference answers; problem c has none"):
        learner.rationalize(producer.produce([Problem("c", "1+1=", None)], SamplingParams(n=1)).rollouts, 1)


# ---- registries: what each named entry gets from the learner ----------------------------------


def test_accepted_options_passes_only_what_a_signature_names():
    from sharpen.learners.base import accepted_options
    from sharpen.learners.policy_gradient.advantages import get_advantage_estimator, get_sample_weighting
    from sharpen.learners.preference.losses import get_preference_loss

    assert accepted_options(get_advantage_estimator("grpo"), r_min=-1.0, r_max=2.0) == {}
    assert accepted_options(get_advantage_estimator("bnpo"), r_min=-1.0, r_max=2.0) == {"r_min": -1.0, "r_max": 2.0}
    assert accepted_options(get_advantage_estimator("signed"), r_min=-1.0, r_max=2.0) == {"r_min": -1.0, "r_max": 2.0}
    assert accepted_options(get_sample_weighting("w_reinforce"), lam=0.3) == {"lam": 0.3}
    assert accepted_options(get_sample_weighting("psr"), lam=0.3) == {}
    assert accepted_options(get_preference_loss("irpo"), alpha=0.5) == {"alpha": 0.5}
    assert accepted_options(get_preference_loss("dpo"), alpha=0.5) == {}


def test_lr_schedules_by_name():
    from sharpen.learners.base import LR_SCHEDULES, lr_factor
    from sharpen.learners.policy_gradient.learner import PolicyGradientConfig
    from sharpen.learners.self_correction.rise import RiseConfig

    for config in (PolicyGradientConfig, RiseConfig):
        assert set(LR_SCHEDULES) == set(config.model_fields["schedule"].annotation.__args__)
    assert [lr_factor(s, 10, 2, "constant") for s in (0, 1, 2, 9)] == [0.5, 1.0, 1.0, 1.0]
    assert [lr_factor(s, 10, 2, "cosine") for s in (0, 2, 6, 10)] == pytest.approx([0.5, 1.0, 0.5, 0.0])


def test_rejection_selections_cover_the_config_names():
    from sharpen.learners.rejection_sampling.learner import SELECTIONS

    assert set(SELECTIONS) == set(RejectionSamplingConfig.model_fields["select"].annotation.__args__)
