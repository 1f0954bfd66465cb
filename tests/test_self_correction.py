"""RISE and SCoRe: their pure pieces by hand, their steps on the tiny model with scripted answers."""

from __future__ import annotations

import math

import pytest
import torch

from sharpen.config import ConfigError, load_config
from sharpen.learners.policy_gradient.advantages import reinforce_advantages
from sharpen.learners.base import LearnerContext, Sampling
from sharpen.learners.self_correction.rise import Rise, RiseConfig, filter_candidates, rwr_weights
from sharpen.learners.self_correction.score import Score, ScoreConfig, attempt_advantages, shaped_second_reward
from sharpen.loop import RunConfig
from sharpen.models.base import Completion
from sharpen.models.formats import EMBEDDED, retry_messages
from sharpen.rollouts import InProcessProducer
from sharpen.signals.reward import Reward
from sharpen.tasks import get_task

TASK = get_task("addition")


# ---- RISE: weights and filters ---------------------------------------------------------


def test_rwr_weights_by_hand():
    assert rwr_weights([0.0, 1.0, 0.5], tau=0.5) == pytest.approx([math.exp(-2), 1.0, math.exp(-1)])
    assert rwr_weights([3.0, 3.0], tau=0.1) == [1.0, 1.0]
    assert rwr_weights([0.0, 200.0], tau=0.01) == [0.0, 1.0]  # no overflow at a small τ
    assert rwr_weights([], tau=1.0) == []
    with pytest.raises(ValueError, match="tau > 0"):
        rwr_weights([1.0], tau=0.0)


def test_filters_on_made_up_candidates():
    rewards = [0.0, 1.0, 1.0, 0.5]
    assert filter_candidates("all", rewards, replaced=0.5, success_reward=1.0) == [0, 1, 2, 3]
    assert filter_candidates("better", rewards, replaced=0.5, success_reward=1.0) == [1, 2]  # strictly better
    assert filter_candidates("better", rewards, replaced=1.0, success_reward=1.0) == []
    assert filter_candidates("best", rewards, replaced=0.5, success_reward=1.0) == [1]  # the first of equals
    assert filter_candidates("success", rewards, replaced=0.5, success_reward=1.0) == [1]
    nothing_right = [0.0, 0.5]
    assert filter_candidates("best", nothing_right, replaced=0.0, success_reward=1.0) == [1]
    assert filter_candidates("success", nothing_right, replaced=0.0, success_reward=1.0) == []
    assert filter_candidates("success", nothing_right, replaced=0.0, success_reward=0.5) == [1]
    assert filter_candidates("best", [], replaced=0.0, success_reward=1.0) == []
    with pytest.raises(ValueError, match="unknown RISE filter 'top'; use one of all, better, best, success"):
        filter_candidates("top", rewards, 0.0, 1.0)


def test_rise_filters_cover_the_config_names():
    from sharpen.learners.self_correction.rise import FILTERS

    assert set(FILTERS) == set(RiseConfig.model_fields["filter"].annotation.__args__)


# ---- RISE: one step with scripted answers ----------------------------------------------


def answer(problem_text: str) -> str:
    a, b = problem_text.rstrip("=").split("+")
    return str(int(a) + int(b))


class Script:
    """Replaces a policy's sampling: turn 1 answers "0" (wrong), a rollout's later turn "1"
    (wrong), and the N candidates at a state are ["9", right, right, "6", …]; the frozen base
    model (sampling while it stands in for the live model) answers "0" every time."""

    def __init__(self, policy):
        self.policy, self.calls = policy, []
        self.live = policy.model

    def ids(self, text: str) -> tuple[int, ...]:
        tok = self.policy.tokenizer
        return tuple(tok(text, add_special_tokens=False)["input_ids"]) + (tok.eos_token_id,)

    def __call__(self, prompts, params):
        self.calls.append((list(prompts), params.n))
        out = []
        for prompt in prompts:
            question = prompt if isinstance(prompt, str) else prompt[0]["content"]
            if self.policy.model is not self.live:
                texts = ["0"] * params.n
            elif params.n == 1:
                texts = ["0" if isinstance(prompt, str) else "1"]
            else:
                texts = ([str(9 - i) if i % 3 == 0 else answer(question) for i in range(params.n)])
            out.append([Completion(t, self.ids(t), (-1.0,) * len(self.ids(t)), "stop") for t in texts])
        return out


def rise_context(policy, candidates: int = 4) -> LearnerContext:
    reward = Reward.from_specs([("correctness", 1.0)], task=TASK, policy=policy)
    return LearnerContext(policy, TASK, reward, InProcessProducer(policy, reward),
                          Sampling(candidates, 1.0, 1.0, TASK.max_new_tokens, TASK.stop), total_steps=2, seed=0,
                          log_completions=1)


def run_rise_step(policy, monkeypatch, step: int = 1, **options):
    """Loop step `step` of RISE on three problems; returns (examples it fine-tuned on, step
    output, script, problems)."""
    script = Script(policy)
    monkeypatch.setattr(policy, "generate", script)
    trained = []

    def fake_fine_tune(policy_, optimizer, examples, **kwargs):
        trained.extend(examples)
        return {"sft/updates": 1.0}

    monkeypatch.setattr("sharpen.learners.self_correction.rise.fine_tune", fake_fine_tune)
    learner = Rise(rise_context(policy), RiseConfig(kind="rise", **options))
    problems = TASK.problems("train", 3, 0)
    return trained, learner.step(step, problems), script, problems


def test_rise_trains_each_history_on_its_improved_turn(tiny_policy, monkeypatch):
    trained, out, script, problems = run_rise_step(tiny_policy, monkeypatch, first_turn="base", base_samples=1)
    encode = tiny_policy.encode
    improved, anchors = trained[:3], trained[3:]
    for p, example in zip(problems, improved):
        assert example.prompt_ids == tuple(encode(retry_messages(p.prompt, ["0"], [EMBEDDED.retry_feedback])))
        assert example.completion_ids == script.ids(answer(p.prompt))  # the first right candidate
        assert example.weight == 1.0
    # first_turn base: one first attempt per problem from the frozen base model, weight 1
    assert [(a.prompt_ids, a.completion_ids, a.weight) for a in anchors] == [
        (tuple(encode(p.prompt)), script.ids("0"), 1.0) for p in problems]
    assert out.metrics["rise/states"] == 3 and out.metrics["rise/examples"] == 3
    assert out.metrics["rise/base_examples"] == 3 and out.metrics["rise/improved_states"] == 1.0
    assert out.metrics["train/turn1/accuracy"] == 0.0 and out.metrics["train/turn2/accuracy"] == 0.0
    assert out.metrics["rise/candidate_reward_mean"] == pytest.approx(0.5)  # 2 of 4 candidates right
    # rollouts: 3 first attempts, 3 second; candidates: 4 at each of the 3 states; base: 3 first attempts
    assert [(len(prompts), n) for prompts, n in script.calls] == [(3, 1), (3, 1), (3, 4), (3, 1)]
    # the store gets the first episode's attempts with the history each answered
    assert [(r.completion, r.extras["turn"], r.reward) for r in out.records] == [("0", 1, 0.0), ("1", 2, 0.0)]


def test_rise_anchors_turn_one_with_several_base_samples_per_problem(tiny_policy, monkeypatch):
    trained, out, script, problems = run_rise_step(tiny_policy, monkeypatch)  # the defaults: first_turn base, 4
    anchors = trained[3:]
    assert [(a.prompt_ids, a.completion_ids, a.weight) for a in anchors] == [
        (tuple(tiny_policy.encode(p.prompt)), script.ids("0"), 1.0) for p in problems for _ in range(4)]
    assert out.metrics["rise/base_examples"] == 12
    assert [(len(prompts), n) for prompts, n in script.calls][-1] == (3, 4)  # one base call, 4 per problem


def test_rise_rate_follows_its_schedule_over_the_run(tiny_policy, monkeypatch):
    rates = []
    monkeypatch.setattr("sharpen.learners.self_correction.rise.fine_tune",
                        lambda policy, optimizer, examples, **kwargs: rates.append(kwargs["lr"]) or {})
    monkeypatch.setattr(tiny_policy, "generate", Script(tiny_policy))
    problems = TASK.problems("train", 3, 0)
    for schedule in ("cosine", "constant"):
        learner = Rise(rise_context(tiny_policy), RiseConfig(kind="rise", lr=1e-3, schedule=schedule))  # 2 steps
        assert [learner.step(s, problems).metrics["lr"] for s in (1, 2)] == pytest.approx(rates[-2:])
    # cosine over 2 steps: the full rate at step 1, half of it at step 2; constant: the full rate
    assert rates == pytest.approx([1e-3, 5e-4, 1e-3, 1e-3])
    assert RiseConfig(kind="rise").schedule == "cosine"


def test_rise_filters_and_first_turn_options(tiny_policy, monkeypatch):
    trained, out, *_ = run_rise_step(tiny_policy, monkeypatch, filter="all", tau=0.5, first_turn="skip")
    assert len(trained) == 3 * 4  # every candidate, no turn-1 example
    assert [e.weight for e in trained[:4]] == pytest.approx([math.exp(-2), 1.0, 1.0, math.exp(-2)])

    trained, out, *_ = run_rise_step(tiny_policy, monkeypatch, filter="better", first_turn="skip")
    assert len(trained) == 3 * 2  # the two right candidates beat the rollout's wrong "1"

    trained, out, script, problems = run_rise_step(tiny_policy, monkeypatch, first_turn="improved")
    assert out.metrics["rise/states"] == 6  # turn 1 and turn 2 of each episode
    assert [e.prompt_ids for e in trained[:2]] == [tuple(tiny_policy.encode(problems[0].prompt)),
                                                  tuple(tiny_policy.encode(retry_messages(
                                                      problems[0].prompt, ["0"], [EMBEDDED.retry_feedback])))]


def test_rise_stops_rollouts_at_the_first_right_attempt(tiny_policy, monkeypatch):
    script = Script(tiny_policy)
    right_first = lambda prompts, params: [  # noqa: E731 - every first attempt right
        [Completion(answer(p), script.ids(answer(p)), (-1.0,), "stop")] if isinstance(p, str) else g
        for p, g in zip(prompts, script(prompts, params))]
    monkeypatch.setattr(tiny_policy, "generate", right_first)
    monkeypatch.setattr("sharpen.learners.self_correction.rise.fine_tune", lambda *a, **k: {})
    learner = Rise(rise_context(tiny_policy), RiseConfig(kind="rise", stop_when_correct=True, first_turn="skip"))
    out = learner.step(1, TASK.problems("train", 3, 0))
    assert out.metrics["rise/states"] == 0 and out.metrics["rise/examples"] == 0
    assert out.metrics["train/turn2/accuracy"] == 1.0  # the right first answer stands


def test_rise_candidates_from_a_teacher_are_tokenized_for_the_student(tiny_policy, tiny_model_dir, monkeypatch):
    monkeypatch.setattr("sharpen.learners.self_correction.rise.fine_tune", lambda *a, **k: {})
    learner = Rise(rise_context(tiny_policy, candidates=2), RiseConfig(kind="rise", teacher=str(tiny_model_dir),
                                                                       first_turn="skip"))
    student = Script(tiny_policy)
    monkeypatch.setattr(tiny_policy, "generate", student)
    teacher_calls = []

    def teacher(prompts, params):
        teacher_calls.append(params.n)
        # a teacher with another vocabulary: its token ids mean nothing to the student
        return [[Completion(answer(p[0]["content"]), (999,), (-1.0,), "stop")] * params.n for p in prompts]

    monkeypatch.setattr(learner.teacher, "generate", teacher)
    trained = []
    monkeypatch.setattr("sharpen.learners.self_correction.rise.fine_tune", lambda p, o, examples, **k: trained.extend(examples) or {})
    problems = TASK.problems("train", 2, 0)
    learner.step(1, problems)
    assert teacher_calls == [2]  # the candidates came from the teacher ...
    assert [n for _, n in student.calls] == [1, 1]  # ... the student only rolled out
    assert [e.completion_ids for e in trained] == [student.ids(answer(p.prompt)) for p in problems]


# ---- SCoRe -----------------------------------------------------------------------------


def test_shaped_reward_and_advantages_by_hand():
    r1 = torch.tensor([[1.0, 0.0, 1.0, 0.0]], dtype=torch.float64)  # (P=1, G=4)
    r2 = torch.tensor([[1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    # kept right, fixed, broken, stayed wrong: r̂2 = r2 + 2 (r2 − r1)
    assert shaped_second_reward(r1, r2, 2.0).tolist() == [[1.0, 3.0, -2.0, 0.0]]
    a1, a2 = attempt_advantages(r1, r2, 1, 2.0, reinforce_advantages)
    assert a1.tolist() == [[0.0] * 4] and a2.tolist() == [[0.5, 0.5, -0.5, -0.5]]
    a1, a2 = attempt_advantages(r1, r2, 2, 2.0, reinforce_advantages)
    assert a1.tolist() == [[0.5, -0.5, 0.5, -0.5]] and a2.tolist() == [[0.5, 2.5, -2.5, -0.5]]
    with pytest.raises(ValueError, match="stages 1 and 2"):
        attempt_advantages(r1, r2, 3, 2.0, reinforce_advantages)
    with pytest.raises(ValueError, match=r"both be \(P, G\)"):
        attempt_advantages(r1, r2[:, :2], 1, 2.0, reinforce_advantages)



def test_score_leaves_unscorable_episodes_out_of_both_attempts():
    r1 = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    r2 = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    keep = torch.tensor([[True, False, True]])  # episode 2 has an unscorable attempt
    a1, a2 = attempt_advantages(r1, r2, 2, 0.0, reinforce_advantages, keep)
    assert a1.tolist() == [[0.5, 0.0, -0.5]] and a2.tolist() == [[0.5, 0.0, -0.5]]  # baseline over episodes 1, 3


def score_learner(policy, **options) -> Score:
    reward = Reward.from_specs([("correctness", 1.0)], task=TASK, policy=policy)
    ctx = LearnerContext(policy, TASK, reward, InProcessProducer(policy, reward),
                         Sampling(2, 1.0, 1.0, TASK.max_new_tokens, TASK.stop), total_steps=3, seed=0)
    return Score(ctx, ScoreConfig(kind="score", **options))


def alternating(policy):
    """Scripted sampling whose answers are right at some rows and wrong at others, so that
    every group of two episodes has a reward spread at each attempt; each completion carries
    its log-probs under the model, as if the model had sampled it."""
    ids = Script(policy).ids

    def generate(prompts, params):
        out = []
        for row, prompt in enumerate(prompts):
            first = isinstance(prompt, str)
            right = row % 2 == 0 if first else row % 4 in (0, 3)
            text = answer(prompt if first else prompt[0]["content"]) if right else "1"
            with torch.no_grad():
                logprobs = policy.score_tokens([policy.encode(prompt)], [ids(text)]).logprobs[0].tolist()
            out.append([Completion(text, ids(text), tuple(logprobs), "stop", tuple(logprobs))])  # T = 1
        return out
    return generate


def test_score_stage_one_holds_attempt_one_then_stage_two_trains_both(tiny_policy, monkeypatch):
    monkeypatch.setattr(tiny_policy, "generate", alternating(tiny_policy))
    learner = score_learner(tiny_policy, stage1_steps=1, stage1_kl=1.0, kl_coef=0.1, lr=1e-2)
    problems = TASK.problems("train", 4, 0)
    before = [p.detach().clone() for p in tiny_policy.model.parameters()]
    first = learner.step(1, problems)
    assert first.metrics["score/stage"] == 1.0
    # stage I, first step: attempt 1 has no advantage and is still the base model (KL 0)
    assert first.metrics["attempt1/pg_loss"] == 0.0 and first.metrics["attempt1/kl_ref"] == 0.0
    assert any(not torch.equal(a, b) for a, b in zip(before, tiny_policy.model.parameters()))
    second = learner.step(2, problems)
    assert second.metrics["score/stage"] == 2.0
    assert second.metrics["attempt1/kl_ref"] > 0.0  # the model moved away from the base
    assert {"train/turn1/accuracy", "train/turn2/accuracy", "reward/mean", "attempt2/reward/mean",
            "update_seconds"} <= set(second.metrics)
    assert len(second.records) == 2 * 2 * 2  # log_completions problems × G episodes × 2 attempts
    assert learner.reference is not None
    assert score_learner(tiny_policy, kl_coef=0.0, stage1_kl=0.0).reference is None  # no KL, no copy
    twice = score_learner(tiny_policy, epochs=2)
    twice.step(1, problems)
    assert {int(state["step"]) for state in twice.optimizer.state.values()} == {2}  # two updates on one batch


@pytest.mark.parametrize("section,key,problem", [
    ("{kind: score, advantage: bnpo}", "learner.advantage", "Input should be 'reinforce', 'rloo', 'grpo' or 'dr_grpo'"),
    ("{kind: score, alpha: -1}", "learner.alpha", "greater than or equal to 0"),
    ("{kind: rise, turns: 1}", "learner.turns", "greater than or equal to 2"),
    ("{kind: rise, filter: top}", "learner.filter", "'all', 'better', 'best' or 'success'"),
    ("{kind: rise, tau: 0}", "learner.tau", "greater than 0"),
    ("{kind: rise, first_turn: yes}", "learner.first_turn", "'skip', 'base' or 'improved'"),
    ("{kind: rise, feedback: oracle}", "learner.feedback", "'none', 'binary' or 'verifier'"),
])
def test_config_errors_name_the_key(tmp_path, section, key, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(f"steps: 3\nlearner: {section}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, RunConfig)
    assert f"{path}:2: {key}" in str(info.value) and problem in str(info.value)
