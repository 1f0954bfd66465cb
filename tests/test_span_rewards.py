"""Span rewards: signals that score character spans, their placement on tokens (embedded and
byte-level BPE tokenizers), process-supervised GRPO, the RLFH reward (`fact_feedback`) and the
policy-gradient learner with per-token advantages."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace

import pytest
import torch

from sharpen.learners.base import LearnerContext, Sampling
from sharpen.learners.policy_gradient.advantages import grpo_advantages, process_grpo_advantages
from sharpen.learners.policy_gradient.learner import PolicyGradient, PolicyGradientConfig
from sharpen.learners.policy_gradient.token_rewards import span_token_rewards, step_reward_tensors
from sharpen.models.alignment import covering_token, token_char_ends
from sharpen.models.base import Completion, SamplingParams
from sharpen.rollouts import InProcessProducer, Rollout
from sharpen.signals import Span, SpanScores, build_signal
from sharpen.signals.facts import INFO_VALUES, TRUTH_VALUES, PolicyStatementJudge, fact_lines, rlfh_spans
from sharpen.signals.reward import Component, Reward
from sharpen.tasks import get_task
from sharpen.tasks.base import Problem
from sharpen.tasks.statements import FactCheck, Statement
from test_policy_gradient import Fixed, ParityScore


def completion(text: str, ids=(1, 2, 3)) -> Completion:
    return Completion(text, tuple(ids), (-0.5,) * len(ids), "stop", (-0.5,) * len(ids))


@dataclass
class FirstWord:
    """A span signal: +1 on the first word, −0.5 on the last character; None for empty text."""

    name: str = "first_word"

    def __call__(self, problems, groups):
        return SpanScores([[None if not c.text else (Span(0, len(c.text.split()[0]), 1.0),
                                                     Span(len(c.text) - 1, len(c.text), -0.5))
                            for c in g] for g in groups])


# ---- span signals in the reward ---------------------------------------------------------------


def test_a_span_signal_scores_the_sum_of_its_spans_and_the_reward_keeps_the_spans():
    reward = Reward([Component("first_word", FirstWord(), 2.0), Component("fixed", Fixed({"ab cd": 1.0, "x": 0.0}), 0.5),
                     Component("metric", Fixed({}), 0.0)])
    result = reward([Problem("p", "q")], [[completion("ab cd"), completion("x"), completion("")]])
    assert result.components["first_word"] == [[0.5, 0.5, None]]
    assert result.total[0][:2] == [pytest.approx(2 * 0.5 + 0.5), pytest.approx(2 * 0.5)]
    assert result.scorable == [[True, True, False]]
    assert result.spans[0][0] == (Span(0, 2, 2.0), Span(4, 5, -1.0))  # weighted
    assert result.outcomes[0][:2] == [pytest.approx(0.5), 0.0]  # the scalar components, weighted
    for row, spans, outcome in zip(result.total[0][:2], result.spans[0][:2], result.outcomes[0]):
        assert sum(s.value for s in spans) + outcome == pytest.approx(row)  # spans and outcome add up to the total


def test_a_scalar_reward_is_an_outcome_and_a_span_only_reward_has_none():
    scalar = Reward([Component("fixed", Fixed({"ab": 1.0}), 1.0)])([Problem("p", "q")], [[completion("ab")]])
    assert scalar.spans == [[()]] and scalar.outcomes == [[1.0]]
    spans_only = Reward([Component("first_word", FirstWord(), 1.0)])([Problem("p", "q")], [[completion("ab")]])
    assert spans_only.spans == [[(Span(0, 2, 1.0), Span(1, 2, -0.5))]] and spans_only.outcomes == []


def test_bad_span_output_names_the_signal():
    @dataclass
    class Broken:
        name: str = "broken"

        def __call__(self, problems, groups):
            return SpanScores([[[(0, 1, 1.0)] for _ in g] for g in groups])

    with pytest.raises(ValueError, match="signal 'broken' returned .* tuple of Span"):
        Reward([Component("broken", Broken(), 1.0)])([Problem("p", "q")], [[completion("ab")]])
    with pytest.raises(ValueError, match="0 <= start < end"):
        Span(3, 3, 1.0)
    with pytest.raises(ValueError, match="finite"):
        Span(0, 1, math.inf)


# ---- spans onto tokens ------------------------------------------------------------------------


def test_spans_onto_the_embedded_character_tokenizer(tiny_policy):
    tok = tiny_policy.tokenizer
    text = "Kavo is a baker."
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert token_char_ends(tok, ids) == list(range(1, len(text) + 1)) + [len(text)]  # EOS covers no character
    rewards, steps = span_token_rewards(tok, ids, [
        Span(0, 4, 1.0),  # "Kavo" → the token of "o"
        Span(5, 7, 0.5), Span(6, 7, 0.25),  # two spans ending on "s": one step, their sum
        Span(len(text), len(text) + 1, 2.0),  # just past the text: the end-of-sequence token
        Span(10, 99, -1.0),  # a span past the end: the last token too
    ])
    assert [i for i, s in enumerate(steps) if s] == [3, 6, len(text)]
    assert rewards[3] == 1.0 and rewards[6] == 0.75 and rewards[len(text)] == 1.0
    assert sum(rewards) == pytest.approx(2.75)


def test_spans_onto_a_byte_level_bpe_tokenizer(tiny_chat_policy):
    tok = tiny_chat_policy.tokenizer
    text = "Kavo lives in Holt."
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    pieces = [tok.decode([i]) for i in ids]
    k_in = pieces.index(" in")  # chars 10-12: a token of three characters
    rewards, steps = span_token_rewards(tok, ids, [
        Span(5, 12, 1.0),  # ends mid-token, on the "i" of " in"
        Span(11, 13, 0.5),  # ends on its "n": the same token
        Span(len(text), len(text) + 1, -2.0), Span(0, 500, 1.0),  # past the end: the last token (end of sequence)
    ])
    assert [i for i, s in enumerate(steps) if s] == [k_in, len(ids) - 1]
    assert rewards[k_in] == 1.5 and rewards[-1] == -1.0


@pytest.mark.parametrize("text", ["Kavo lives in Holt and is a baker.", "Café → naïve, über", "I do not know its pet."])
def test_incremental_decoding_agrees_with_the_fast_tokenizers_offsets(tiny_chat_policy, text):
    tok = tiny_chat_policy.tokenizer
    encoded = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ends = token_char_ends(tok, encoded["input_ids"])
    for char in range(len(text)):
        by_offsets = next(k for k, (_, end) in enumerate(encoded["offset_mapping"]) if end > char)
        assert covering_token(ends, char) == by_offsets, (text, char)


def test_step_reward_tensors_place_each_rollouts_spans(tiny_policy):
    tok = tiny_policy.tokenizer
    enc = lambda s: tuple(tok(s, add_special_tokens=False)["input_ids"]) + (tok.eos_token_id,)  # noqa: E731
    a, b = completion("ab", enc("ab")), completion("abcd", enc("abcd"))
    r = Rollout(Problem("p", "q"), [1], [a, b], [0.0, 0.0], spans=[(Span(0, 1, 1.0),), (Span(4, 5, 3.0),)],
                outcomes=[0.5, -1.0])
    placed = step_reward_tensors([r], tok)
    assert placed.rewards.shape == placed.steps.shape == (1, 2, 5)
    assert placed.rewards[0].tolist() == [[1.0, 0, 0, 0, 0], [0, 0, 0, 0, 3.0]]
    assert placed.steps[0].tolist() == [[True, False, False, False, False], [False, False, False, False, True]]
    assert placed.outcomes.tolist() == [[0.5, -1.0]] and placed.lengths.tolist() == [[3, 5]]
    assert step_reward_tensors([replace(r, outcomes=[])], tok).outcomes is None  # a span-only reward
    with pytest.raises(ValueError, match="needs the reward's spans"):
        step_reward_tensors([Rollout(Problem("p", "q"), [1], [a], [0.0])], tok)
    with pytest.raises(ValueError, match="some rollouts of the batch have outcomes"):
        step_reward_tensors([r, replace(r, outcomes=[])], tok)


# ---- process-supervised GRPO ------------------------------------------------------------------


def test_process_grpo_by_hand():
    """One group: completion 0 has steps 1 (t=0) and 0 (t=2), completion 1 a step 2 (t=1).
    R = {1, 0, 2}: mean 1, sample std 1, so r̃ = 0, −1, +1 (over 1 + ε), and each token gets
    the sum of the r̃ at or after it."""
    rewards = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]])
    steps = torch.tensor([[[True, False, True], [False, True, False]]])
    got = process_grpo_advantages(rewards, steps)
    torch.testing.assert_close(got, torch.tensor([[[-1.0, -1.0, -1.0], [1.0, 1.0, 0.0]]]) / (1 + 1e-4))


def test_process_grpo_is_grpo_when_only_the_last_token_is_rewarded():
    g = torch.Generator().manual_seed(0)
    P, G, T = 3, 5, 7
    outcome = torch.randint(0, 3, (P, G), generator=g).double()
    outcome[2] = 1.0  # an all-equal group: both give 0
    lengths = torch.randint(1, T + 1, (P, G), generator=g)
    rewards = torch.zeros(P, G, T, dtype=torch.float64)
    steps = torch.zeros(P, G, T, dtype=torch.bool)
    for i in range(P):
        for j in range(G):
            rewards[i, j, lengths[i, j] - 1] = outcome[i, j]
            steps[i, j, lengths[i, j] - 1] = True
    mask = torch.ones(P, G, dtype=torch.bool)
    mask[0, 1] = False  # an unscorable completion is left out of both
    expected = grpo_advantages(outcome, mask=mask)  # (P, G)
    got = process_grpo_advantages(rewards, steps, mask=mask)  # (P, G, T)
    for i in range(P):
        for j in range(G):
            n = int(lengths[i, j])
            torch.testing.assert_close(got[i, j, :n], expected[i, j].expand(n))
            assert bool((got[i, j, n:] == 0).all())
    assert bool((got[2] == 0).all()) and bool((got[0, 1] == 0).all())


def test_process_grpo_with_an_outcome_by_hand():
    """Completion 0 (2 tokens): a step 3 at t=0, outcome 1; completion 1 (3 tokens): steps 1 (t=0)
    and 2 (t=1), outcome 3. Each kind centred on its own mean: steps {3, 1, 2} − 2 = {1, −1, 0},
    outcomes {1, 3} − 2 = {−1, +1}; one sample std over the five: √(4 / 4) = 1. The outcome's r̃
    is on every token of its completion, none on padding."""
    rewards = torch.tensor([[[3.0, 0.0, 0.0], [1.0, 2.0, 0.0]]])
    steps = torch.tensor([[[True, False, False], [True, True, False]]])
    got = process_grpo_advantages(rewards, steps, outcomes=torch.tensor([[1.0, 3.0]]), lengths=torch.tensor([[2, 3]]))
    torch.testing.assert_close(got, torch.tensor([[[0.0, -1.0, 0.0], [0.0, 1.0, 1.0]]]) / (1 + 1e-4))
    with pytest.raises(ValueError, match="outcomes and lengths go together"):
        process_grpo_advantages(rewards, steps, outcomes=torch.tensor([[1.0, 3.0]]))


def test_an_outcome_every_completion_earns_does_not_penalise_saying_more():
    """A format reward of 4 for all: pooled into R (as one more step on the last token) it raised
    mean(R) above every statement's reward, so the completion with two correct statements got a
    lower advantage than the one with one; as its own kind it changes no advantage's sign."""
    rewards = torch.tensor([[[2.0, 0.0, 0.0], [2.0, 2.0, 0.0], [-2.0, 0.0, 0.0]]])  # correct; correct ×2; wrong
    steps = rewards != 0
    lengths = torch.tensor([[2, 3, 2]])
    alone = process_grpo_advantages(rewards, steps)
    with_format = process_grpo_advantages(rewards, steps, outcomes=torch.full((1, 3), 4.0), lengths=lengths)
    assert with_format[0, 1, 0] > with_format[0, 0, 0] > 0 > with_format[0, 2, 0]  # saying more that is right pays
    assert bool(((with_format == 0) == (alone == 0)).all())
    ratio = with_format[alone != 0] / alone[alone != 0]
    torch.testing.assert_close(ratio, ratio[0].expand_as(ratio))  # the same advantages, rescaled
    pooled = rewards.clone()
    pooled[0, 0, 1] = pooled[0, 2, 1] = pooled[0, 1, 2] = 4.0  # the old way: one more step on the last token
    old = process_grpo_advantages(pooled, pooled != 0)
    assert old[0, 1, 0] < old[0, 0, 0]  # the length penalty this removes


def test_process_grpo_refuses_wrong_shapes():
    with pytest.raises(ValueError, match=r"\(P, G, T\)"):
        process_grpo_advantages(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool))


# ---- the learner with per-token advantages ----------------------------------------------------


def pg_learner(reward, policy, **cfg) -> PolicyGradient:
    ctx = LearnerContext(policy, get_task("addition"), reward, None, Sampling(4, 1.0, 1.0, 6, ()), total_steps=1, seed=0)
    return PolicyGradient(ctx, PolicyGradientConfig(**{"minibatches": 1, "lr": 1e-2, **cfg}))


def test_process_grpo_on_an_outcome_reward_updates_the_model_exactly_as_grpo(tiny_policy):
    reward = Reward([Component("parity", ParityScore(), 1.0)])
    rollouts = InProcessProducer(tiny_policy, reward).produce(
        get_task("addition").problems("train", 4, 0), SamplingParams(n=4, max_new_tokens=6, seed=3)).rollouts
    start = copy.deepcopy(tiny_policy.model.state_dict())
    seq = pg_learner(reward, tiny_policy, advantage="grpo")
    tok = pg_learner(reward, tiny_policy, advantage="process_grpo")
    per_token = tok.advantages(rollouts)  # (P, G, T)
    per_completion = seq.advantages(rollouts)  # (P, G)
    for i, r in enumerate(rollouts):
        for j, c in enumerate(r.completions):
            n = len(c.token_ids)
            torch.testing.assert_close(per_token[i, j, :n], per_completion[i, j].expand(n))
    seq.update(rollouts)
    after_seq = copy.deepcopy(tiny_policy.model.state_dict())
    tiny_policy.model.load_state_dict(start)
    tok.update(rollouts)
    for name, value in tiny_policy.model.state_dict().items():
        torch.testing.assert_close(value, after_seq[name], msg=name)
    tiny_policy.model.load_state_dict(start)


def test_a_token_level_update_on_the_facts_task_runs_and_moves_the_weights(tiny_policy):
    task = get_task("facts")
    reward = Reward([Component("fact_feedback", build_signal("fact_feedback", task=task), 1.0),
                     Component("parity", ParityScore(), 1.0)])  # varies within groups: the gibberish all scores alike
    rollouts = InProcessProducer(tiny_policy, reward).produce(
        task.problems("train", 2, 0), SamplingParams(n=4, max_new_tokens=12, seed=1)).rollouts
    assert all(len(s) >= 1 for r in rollouts for s in r.spans)  # the tiny model's gibberish
    assert all(len(r.outcomes) == 4 for r in rollouts)  # and the parity outcome
    start = copy.deepcopy(tiny_policy.model.state_dict())
    diag = pg_learner(reward, tiny_policy, advantage="process_grpo").update(rollouts)
    assert math.isfinite(diag["loss"]) and diag["grad_norm"] > 0
    moved = any(not torch.equal(v, start[k]) for k, v in tiny_policy.model.state_dict().items())
    tiny_policy.model.load_state_dict(start)
    assert moved


def test_the_config_knows_the_token_level_estimator():
    assert PolicyGradientConfig(advantage="process_grpo").advantage == "process_grpo"
    with pytest.raises(ValueError, match="unknown advantage estimator 'ppo'"):
        PolicyGradientConfig(advantage="ppo")


# ---- the RLFH reward --------------------------------------------------------------------------


def test_rlfh_rewards_by_hand():
    check = FactCheck(
        sentences=((0, 30), (31, 50), (51, 70)),
        statements=(Statement(5, 15, 0, "correct", 5), Statement(20, 29, 0, "wrong", 5),
                    Statement(36, 49, 1, "unverifiable", 1)),
    )
    spans = rlfh_spans(check, TRUTH_VALUES, INFO_VALUES)
    assert [(s.start, s.end) for s in spans] == [(5, 15), (20, 29), (36, 49), (0, 30), (31, 50), (51, 70)]
    expected = [1.0 * 1.3, -2.0 * 1.3, -1.0 * 0.1,  # V[label] · |I[info]| on each statement
                math.log(1.3 + 1.3 + 1), math.log(-0.1 + 1), math.log(0 + 1)]  # log(max(ε, Σ I) + μ) per sentence
    assert [s.value for s in spans] == pytest.approx(expected)
    weighted = rlfh_spans(check, {**TRUTH_VALUES, "wrong": -1.2}, INFO_VALUES, truth_weight=2.0, info_weight=0.5,
                          epsilon=-0.05)
    assert weighted[1].value == pytest.approx(2.0 * -1.2 * 1.3)
    assert weighted[4].value == pytest.approx(0.5 * math.log(-0.05 + 1))  # the floor ε: max(−0.05, −0.1)


def test_fact_feedback_on_the_facts_task_and_its_options():
    task = get_task("facts")
    p = task.problems("train", 1, 0)[0]
    signal = build_signal("fact_feedback", task=task)
    out = signal([p], [[completion(p.answer)]])
    n = len(p.metadata["known"])
    per_sentence = [min(2, n - i) for i in range(0, n, 2)]  # the ideal answer: two statements a sentence
    assert out.scalars()[0][0] == pytest.approx(n * 1.3 + sum(math.log(1.3 * k + 1) for k in per_sentence))
    with pytest.raises(Exception, match="option 'info_values' has key 7"):
        build_signal("fact_feedback", task=task, info_values={7: 1.0})
    with pytest.raises(Exception, match="has no check_facts"):
        build_signal("fact_feedback", task=get_task("addition"))
    with pytest.raises(Exception, match="needs a|no policy was given"):
        build_signal("fact_feedback", task=task, judge="policy")


class ScriptedJudge:
    """A policy whose splitter lists fixed facts and whose judge says true for facts naming Holt."""

    tokenizer = None

    def __init__(self):
        self.asked = []

    def generate(self, prompts, params):
        self.asked.extend(prompts)
        return [[completion("- Kavo lives in Holt\n2) Kavo is a judge\n\n" if "Holt" in p else "")] for p in prompts]

    def choice_logprobs(self, prompts, choices):
        rows = []
        for p in prompts:
            if choices[0] == "true":
                rows.append([0.0, -1.0, -2.0] if "Statement: Kavo lives in Holt" in p else [-2.0, 0.0, -1.0])
            else:
                rows.append([-3.0, -3.0, -3.0, -3.0, 0.0])  # informativeness 5
        return torch.tensor(rows)


def test_the_policy_as_its_own_statement_splitter_and_judge():
    judge = ScriptedJudge()
    problem = Problem("facts/Kavo", "Who is Kavo?", metadata={"knowledge": "Kavo lives in Holt. Kavo is a baker."})
    text = "Kavo lives in Holt and is a judge. Nothing else."
    [[check]] = PolicyStatementJudge(judge)([problem], [[completion(text)]])
    assert check.sentences == ((0, 34), (35, 48))
    assert [(s.start, s.end, s.label, s.informativeness) for s in check.statements] == [
        (0, 34, "correct", 5), (0, 34, "wrong", 5)]  # both facts span their sentence
    assert "Sentence: Kavo lives in Holt and is a judge." in judge.asked[0]
    assert fact_lines("1. a\n * b \n\nFact 3: c\n", 2) == ["a", "b"]


def test_the_policy_judge_runs_on_a_real_tokenizer(tiny_chat_policy):
    """Mechanics on a byte-level BPE chat model (random weights: the labels mean nothing)."""
    task = get_task("facts", chat=True)
    p = task.problems("eval", 1, 0)[0]
    texts = ["Kavo lives in Holt. Kavo is a baker!", "", "I do not know."]
    [checks] = PolicyStatementJudge(tiny_chat_policy, max_statements=3, split_tokens=8)(
        [p], [[completion(t) for t in texts]])
    assert [len(c.sentences) for c in checks] == [2, 0, 1]
    for text, check in zip(texts, checks):
        for s in check.statements:
            assert (s.start, s.end) in check.sentences and text[s.start : s.end].strip()
    reward = Reward.from_specs([{"name": "fact_feedback", "options": {"judge": "policy"}}], task=task,
                               policy=tiny_chat_policy)
    result = reward([p], [[completion(t) for t in texts]])
    assert [sum(s.value for s in spans) for spans in result.spans[0]] == pytest.approx(result.total[0])
    assert result.outcomes == []  # fact_feedback alone: spans only


def test_a_user_function_may_return_span_rewards(tmp_path):
    (tmp_path / "mine.py").write_text(
        "def first_char(prompts, completions, **kw):\n"
        "    return [[(0, 1, 1.0), (0, len(c), -0.25)] if c else None for c in completions]\n"
        "def mixed(prompts, completions, **kw):\n"
        "    return [1.0, [(0, 1, 1.0)]]\n"
        "def broken(prompts, completions, **kw):\n"
        "    return [[(2, 1, 1.0)], [(0, 1)]]\n"
    )
    problems, groups = [Problem("p", "q")], [[completion("ab"), completion("")]]
    signal = build_signal(f"{tmp_path}/mine.py:first_char", task=get_task("addition"), user_code=True)
    out = signal(problems, groups)
    assert out.spans == [[(Span(0, 1, 1.0), Span(0, 2, -0.25)), None]] and out.scalars() == [[0.75, None]]
    for name, message in (("mixed", "floats for some completions and span lists"), ("broken", "0 <= start < end")):
        with pytest.raises(Exception, match=message):
            build_signal(f"{tmp_path}/mine.py:{name}", task=get_task("addition"), user_code=True)(problems, groups)
