"""Signals and the reward composite, checked against hand computations.

Policy-based signals run on a tiny randomly initialised char-level Llama; the expected
values come from separate, unbatched forward passes written out here.
"""

from __future__ import annotations

import math
import re
import textwrap
from types import SimpleNamespace
from typing import Optional

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sharpen.models.base import Completion, SamplingParams
from sharpen.models.formats import EMBEDDED
from sharpen.models.hf import HFPolicy
from sharpen.signals.judge import pairwise_preferences, round_robin_scores
from sharpen.signals import (
    SIGNALS,
    Component,
    Reward,
    RewardFunctionError,
    RewardSpec,
    SignalOptionError,
    UnknownSignalError,
    build_signal,
    majority_answer,
)
from sharpen.specs import UserCodeError
from sharpen.tasks.base import Problem, Task, Verdict

# ---- a tiny task, built by hand from the records ------------------------------------------


def last_number(text: str) -> Optional[str]:
    found = re.findall(r"-?\d+", text)
    return found[-1] if found else None


def check(problem: Problem, text: str) -> Verdict:
    if problem.answer is None or problem.answer == "??":
        return Verdict(None, last_number(text), note="reference unparsable")
    got = last_number(text)
    if got is None:
        return Verdict(False, None, note="no number found")
    return Verdict(got == problem.answer, got)


TASK = Task(name="tiny", problems=lambda split, n, seed: [], check=check, extract=last_number)


def comp(text: str, token_ids=(), logprobs=()) -> Completion:
    return Completion(text=text, token_ids=tuple(token_ids), logprobs=tuple(logprobs), finish_reason="stop")


def texts(*group: str) -> list[Completion]:
    return [comp(t) for t in group]


# ---- a tiny policy ------------------------------------------------------------------------


def tiny_tokenizer():
    try:
        from sharpen.models.embedded import build_tokenizer
    except ImportError:  # sharpen.tasks not importable yet: build the same char-level tokenizer
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        special = ("<pad>", "<unk>", "<s>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>")
        chars = tuple(chr(i) for i in range(32, 127)) + ("\n",)
        core = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(special + chars)}, unk_token="<unk>"))
        core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
        core.decoder = decoders.Fuse()
        core.add_special_tokens(list(special))
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=core, bos_token="<s>", eos_token="<|end|>", pad_token="<pad>", unk_token="<unk>"
        )
        tokenizer.chat_template = (
            "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
            "{% if m['role'] == 'assistant' %}<|end|>{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}"
        )
        return tokenizer
    return build_tokenizer()


@pytest.fixture(scope="module")
def policy() -> HFPolicy:
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
        initializer_range=0.5,  # peaked, non-uniform next-token distributions
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    return HFPolicy(model, tokenizer, seed=0)


PROBLEMS = [Problem("p0", "12+30=", answer="42"), Problem("p1", "3+4=", answer="7")]


def hand_token_logprobs(policy: HFPolicy, prompt, completion_ids) -> torch.Tensor:
    """log-softmax rows (T, V) that predict each completion token, from one unpadded forward."""
    p = policy.encode(prompt)
    ids = torch.tensor([p + list(completion_ids)])
    with torch.no_grad():
        logits = policy.model(input_ids=ids).logits[0]  # (S, V)
    return logits[len(p) - 1 : len(p) - 1 + len(completion_ids)].log_softmax(-1)  # (T, V)


# ---- majority vote ------------------------------------------------------------------------


def test_majority_answer_counts_skips_none_and_breaks_ties_by_first_occurrence():
    assert majority_answer(["4", "3", "3", None, "4", "5"]) == "4"  # 4 and 3 have 2 votes; 4 came first
    assert majority_answer([None, "3", "4", "4"]) == "4"
    assert majority_answer([None, None]) is None
    assert majority_answer([]) is None


def test_majority_vote_scores_agreement_with_the_group():
    signal = build_signal("majority_vote", task=TASK)
    groups = [
        texts("it is 3", "4", "maybe 4", "3", "no idea"),  # tie 3 vs 4 → 3 (first)
        texts("no", "idea"),  # nobody answers → no majority → 0
        texts("7", "8", "8"),
    ]
    problems = [Problem("a", "q", answer="4"), Problem("b", "q", answer="1"), Problem("c", "q", answer="7")]
    assert signal(problems, groups) == [[1.0, 0.0, 0.0, 1.0, 0.0], [0.0, 0.0], [0.0, 1.0, 1.0]]


def test_majority_vote_never_reads_the_reference_answer():
    class Sentinel(str):
        def __eq__(self, other):
            raise AssertionError("majority_vote read problem.answer")

        __hash__ = str.__hash__

    def no_check(problem, text):
        raise AssertionError("majority_vote called the checker")

    task = Task(name="t", problems=lambda s, n, seed: [], check=no_check, extract=last_number)
    signal = build_signal("majority_vote", task=task)
    groups = [texts("1", "2", "2"), texts("5", "x")]
    labelled = [Problem("a", "q", answer=Sentinel("1")), Problem("b", "q", answer=Sentinel("x"))]
    unlabelled = [Problem("a", "q", answer=None), Problem("b", "q", answer=None)]
    expected = [[0.0, 1.0, 1.0], [1.0, 0.0]]
    assert signal(labelled, groups) == expected
    assert signal(unlabelled, groups) == expected


# ---- correctness and format ---------------------------------------------------------------


def test_correctness_gives_none_for_unscorable_and_counts_it():
    signal = build_signal("correctness", task=TASK)
    problems = [Problem("a", "q", answer="42"), Problem("b", "q", answer="??")]
    groups = [texts("42", "41", "nothing"), texts("42", "7")]
    assert signal(problems, groups) == [[1.0, 0.0, 0.0], [None, None]]
    assert (signal.checked, signal.unscorable) == (5, 2)
    assert signal.notes == {"reference unparsable": 2}


def test_a_checker_that_raises_on_one_completion_makes_it_unscorable():
    def fussy(problem, text):
        if text == "boom":
            raise ZeroDivisionError("oops")
        return Verdict(correct=text == problem.answer)

    task = Task(name="fussy", problems=lambda s, n, seed: [], check=fussy, extract=last_number)
    signal = build_signal("correctness", task=task)
    assert signal([Problem("a", "q", "1")], [texts("1", "boom", "2")]) == [[1.0, None, 0.0]]
    assert signal.unscorable == 1 and signal.notes == {"the checker raised ZeroDivisionError: oops": 1}


def test_a_checker_that_raises_on_every_completion_names_itself_its_file_and_the_problem():
    def broken(problem, text):
        raise ZeroDivisionError("oops")

    task = Task(name="broken", problems=lambda s, n, seed: [], check=broken, extract=last_number)
    signal = build_signal("correctness", task=task)
    with pytest.raises(UserCodeError, match=r"task 'broken': its checker '.*broken' \(.*test_signals.py:\d+\) "
                                            r"raised on every one of the 16 .* problem 'b': ZeroDivisionError: oops"):
        signal([Problem("a", "q", "1"), Problem("b", "q", "1")], [texts(*"1" * 8), texts(*"1" * 8)])


def test_format_reads_an_answer_or_fullmatches_a_pattern():
    groups = [texts("the answer is 12", "twelve", "  <answer>12</answer>\n", "<answer>12</answer> extra")]
    problems = [Problem("a", "q", answer="12")]
    assert build_signal("format", task=TASK)(problems, groups) == [[1.0, 0.0, 1.0, 1.0]]
    tagged = build_signal("format", task=TASK, pattern=r"<answer>.*</answer>")
    assert tagged(problems, groups) == [[0.0, 0.0, 1.0, 0.0]]
    with pytest.raises(SignalOptionError, match="not a regex"):
        build_signal("format", task=TASK, pattern="(")


# ---- self-certainty, likelihood, self-judge ----------------------------------------------


def test_self_certainty_equals_the_hand_computation(policy):
    ids = lambda s: policy.tokenizer(s, add_special_tokens=False)["input_ids"]
    groups = [
        [comp("42", ids("42")), comp("4", ids("4") + [policy.tokenizer.eos_token_id]), comp("", ())],
        [comp("7", ids("7")), comp("seven", ())],  # no token ids: the text is tokenized
    ]
    V = len(policy.tokenizer)
    expected = []
    for problem, group in zip(PROBLEMS, groups):
        row = []
        for c in group:
            token_ids = list(c.token_ids) or ids(c.text)
            if not token_ids:
                row.append(None)  # an empty completion: the mean does not apply
                continue
            logp = hand_token_logprobs(policy, problem.prompt, token_ids)  # (T, V)
            per_token = -math.log(V) - logp.mean(-1)  # (T,) KL(U ‖ p_t)
            row.append(per_token.mean().item())
        expected.append(row)
    assert expected[0][0] > 0.05  # the tiny model is far from uniform: a real test

    for batch_size in (64, 2):  # one forward, and chunks of two
        got = build_signal("self_certainty", task=TASK, policy=policy, batch_size=batch_size)(PROBLEMS, groups)
        assert got[0][2] is None
        for got_row, want_row in zip(got, expected):
            assert got_row == pytest.approx(want_row, abs=1e-5)


def test_likelihood_is_the_mean_token_logprob(policy):
    groups = policy.generate([p.prompt for p in PROBLEMS], SamplingParams(n=3, max_new_tokens=5, seed=1))
    recorded = build_signal("likelihood", task=TASK)(PROBLEMS, groups)
    rescored = build_signal("likelihood", task=TASK, policy=policy, source="policy", batch_size=4)(PROBLEMS, groups)
    for problem, group, rec_row, res_row in zip(PROBLEMS, groups, recorded, rescored):
        for c, rec, res in zip(group, rec_row, res_row):
            assert rec == pytest.approx(sum(c.logprobs) / len(c.logprobs), abs=1e-9)
            logp = hand_token_logprobs(policy, problem.prompt, c.token_ids)  # (T, V)
            by_hand = logp.gather(-1, torch.tensor(c.token_ids)[:, None]).mean().item()
            assert res == pytest.approx(by_hand, abs=1e-5)
            assert rec == pytest.approx(by_hand, abs=1e-4)  # sampling recorded the same numbers

    # a hand-made completion: the mean of what it carries
    assert build_signal("likelihood", task=TASK)(PROBLEMS[:1], [[comp("ab", (1, 2), (-1.0, -2.5))]]) == [[-1.75]]


def test_likelihood_refuses_completions_without_logprobs():
    with pytest.raises(SignalOptionError, match="source='policy'"):
        build_signal("likelihood", task=TASK)(PROBLEMS[:1], [texts("42")])
    assert build_signal("likelihood", task=TASK)(PROBLEMS[:1], [texts("")]) == [[None]]
    with pytest.raises(SignalOptionError, match="no policy"):
        build_signal("likelihood", task=TASK, source="policy")
    with pytest.raises(SignalOptionError, match="'source'"):
        build_signal("likelihood", task=TASK, source="judge")


def test_self_judge_is_the_normalised_yes_probability(policy):
    groups = [texts("42", "41"), texts("7")]
    got = build_signal("self_judge", task=TASK, policy=policy)(PROBLEMS, groups)
    yes, no = policy.choice_token_ids((EMBEDDED.judge_yes, EMBEDDED.judge_no))  # every spelling's first token: y and Y, n and N
    assert len(yes) == len(no) == 2
    for problem, group, row in zip(PROBLEMS, groups, got):
        for c, score in zip(group, row):
            ids = torch.tensor([policy.encode(EMBEDDED.judge_messages(problem.prompt, c.text))])
            with torch.no_grad():
                logits = policy.model(input_ids=ids).logits[0, -1]  # (V,)
            p = logits.softmax(-1)
            assert 0.0 <= score <= 1.0
            assert score == pytest.approx((p[yes].sum() / (p[yes].sum() + p[no].sum())).item(), abs=1e-5)
    assert len({round(s, 6) for row in got for s in row}) > 1  # not a constant


def test_pairwise_preferences_average_both_orders_by_hand():
    # first_wins[i, j]: P(judge picks the first shown) with i first and j second
    wins = torch.tensor([[0.0, 0.9, 0.6],
                         [0.7, 0.0, 0.2],
                         [0.5, 0.4, 0.0]])
    pref = pairwise_preferences(wins)
    # P(0 ≻ 1) = ½(0.9 + 1 − 0.7) = 0.6; P(0 ≻ 2) = ½(0.6 + 1 − 0.5) = 0.55; P(1 ≻ 2) = ½(0.2 + 1 − 0.4) = 0.4
    want = torch.tensor([[0.5, 0.6, 0.55],
                         [0.4, 0.5, 0.4],
                         [0.45, 0.6, 0.5]])
    assert torch.allclose(pref, want)
    assert torch.allclose(pref + pref.T, torch.ones(3, 3))
    # a judge that always picks the first position (or always the second) prefers nothing
    assert torch.equal(pairwise_preferences(torch.ones(3, 3)), torch.full((3, 3), 0.5))
    assert torch.equal(pairwise_preferences(torch.zeros(2, 2)), torch.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="square"):
        pairwise_preferences(torch.zeros(2, 3))


def test_round_robin_scores_by_hand():
    pref = torch.tensor([[0.5, 0.6, 0.55],
                         [0.4, 0.5, 0.4],
                         [0.45, 0.6, 0.5]])
    # completions carry answers 0, 1, 0, 2: completion 0 meets its rivals 1 (0.6) and 2 (0.55),
    # completion 1 meets 0 twice (0.4, 0.4) and 2 (0.4), completion 3 meets 0 twice and 1
    got = round_robin_scores(pref, [0, 1, 0, 2])
    want = [(0.6 + 0.55) / 2, (0.4 + 0.4 + 0.4) / 3, (0.6 + 0.55) / 2, (0.45 + 0.6 + 0.45) / 3]
    assert got == pytest.approx(want)
    assert round_robin_scores(pref, [2]) == [None]  # nothing to compare with
    assert round_robin_scores(pref, [1, 1, 1]) == [None, None, None]  # the whole group agrees
    assert round_robin_scores(pref, [1, 1, 0]) == pytest.approx([0.4, 0.4, 0.6])


def test_pairwise_judge_asks_both_orders_of_every_distinct_pair(policy):
    groups = [texts("42", "41", "42", "40"), texts("7"), texts("8", "9")]
    problems = PROBLEMS + [Problem("p2", "5+4=", answer="9")]
    got = build_signal("pairwise_judge", task=TASK, policy=policy)(problems, groups)
    first, second = policy.choice_token_ids((EMBEDDED.compare_first, EMBEDDED.compare_second))  # A and a, B and b

    def first_wins(problem, a, b):  # one unbatched forward pass per ordered pair
        ids = torch.tensor([policy.encode(EMBEDDED.compare_messages(problem.prompt, a, b))])
        with torch.no_grad():
            p = policy.model(input_ids=ids).logits[0, -1].softmax(-1)  # (V,)
        return (p[first].sum() / (p[first].sum() + p[second].sum())).item()

    def prefer(problem, a, b):
        return 0.5 * (first_wins(problem, a, b) + 1 - first_wins(problem, b, a))

    for problem, group, row in zip(problems, groups, got):
        if len(group) == 1:
            assert row == [None]
            continue
        for c, score in zip(group, row):
            rivals = [prefer(problem, c.text, d.text) for d in group if d.text != c.text]
            assert score == pytest.approx(sum(rivals) / len(rivals), abs=1e-5)
    assert got[0][0] == got[0][2]  # equal texts, equal scores
    assert got[2][0] == pytest.approx(1 - got[2][1], abs=1e-6)  # two answers: the preferences sum to 1
    assert len({round(s, 6) for s in got[0]}) > 1  # not a constant


def test_pairwise_judge_replies_must_differ():
    with pytest.raises(SignalOptionError, match="different"):
        scorer = SimpleNamespace(tokenizer=None, choice_logprobs=None)  # never called
        build_signal("pairwise_judge", task=TASK, policy=scorer, first="A", second="A")


def test_policy_signals_need_a_policy():
    for name in ("self_certainty", "self_judge", "pairwise_judge"):
        with pytest.raises(SignalOptionError, match=rf"{name}.*no policy was given"):
            build_signal(name, task=TASK)


def test_policy_signals_refuse_a_policy_that_only_samples():
    class SamplesOnly:  # like OpenAIPolicy: generate, no forward pass of its own
        def generate(self, prompts, params):
            raise AssertionError("building a signal generates nothing")

    for name, options, missing in [("self_certainty", {}, "tokenizer, encode, score_tokens"),
                                   ("likelihood", {"source": "policy"}, "tokenizer, encode, score_tokens"),
                                   ("self_judge", {}, "tokenizer, choice_logprobs"),
                                   ("pairwise_judge", {}, "tokenizer, choice_logprobs")]:
        with pytest.raises(SignalOptionError, match=rf"{name}.*SamplesOnly has no {missing}"):
            build_signal(name, task=TASK, policy=SamplesOnly(), **options)
    # likelihood from the logprobs that came with the samples needs nothing more
    likelihood = build_signal("likelihood", task=TASK, policy=SamplesOnly())
    assert likelihood(PROBLEMS[:1], [[comp("ab", (), (-1.0, -2.0))]]) == [[-1.5]]


# ---- the reward composite -----------------------------------------------------------------


class Fixed:
    """A signal that returns fixed scores."""

    def __init__(self, name, scores):
        self.name, self.scores = name, scores

    def __call__(self, problems, groups):
        return self.scores


def test_reward_sums_weighted_scores_skips_none_and_weight_zero():
    groups = [texts("a", "b"), texts("c", "d")]
    reward = Reward([
        Component("a", Fixed("a", [[1.0, 0.0], [1.0, None]]), 2.0),
        Component("b", Fixed("b", [[0.5, None], [0.5, 1.0]]), -1.0),
        Component("m", Fixed("m", [[100.0, 100.0], [None, None]]), 0.0),
    ])
    result = reward(PROBLEMS, groups)
    # totals: 2·1 − 0.5 = 1.5;  2·0 (b None) = 0;  2·1 − 0.5 = 1.5;  (a None) −1·1 = −1; m never summed
    # (m's None never makes a completion unscorable: weight 0)
    assert result.total == [[1.5, 0.0], [1.5, -1.0]]
    assert result.components["m"] == [[100.0, 100.0], [None, None]]
    assert result.weights == {"a": 2.0, "b": -1.0, "m": 0.0}

    # a weighted None makes a completion unscorable: its partial total is not a reward
    assert result.scorable == [[True, False], [True, False]]
    s = result.summary()
    assert s["reward/mean"] == pytest.approx(1.5) and s["reward/std"] == 0.0  # over 1.5 and 1.5 only
    assert s["reward/frac_unscorable"] == 0.5
    assert s["reward/frac_zero_std"] == 1.0  # one scorable completion per group: no spread
    assert s["rewards/a/mean"] == pytest.approx(2 / 3)  # None left out: (1 + 0 + 1) / 3
    assert s["rewards/a/std"] == pytest.approx(math.sqrt(2 / 9))
    assert s["rewards/a/frac_none"] == pytest.approx(0.25)
    assert s["rewards/b/mean"] == pytest.approx(2 / 3)  # (0.5 + 0.5 + 1) / 3
    assert s["rewards/m/mean"] == 100.0 and s["rewards/m/std"] == 0.0
    assert s["rewards/m/frac_none"] == 0.5

    flat = Reward([Component("a", Fixed("a", [[1.0, 1.0], [0.0, 1.0], [None, None]]), 1.0)])
    s = flat(PROBLEMS + [Problem("x", "q")], groups + [texts("e", "f")]).summary()
    assert s["reward/frac_zero_std"] == pytest.approx(2 / 3)  # [1, 1] and [0, 0] (all None) are flat
    assert "rewards/a/mean" in s


def test_reward_from_specs_with_builtin_signals():
    reward = Reward.from_specs(
        [("correctness", 1.0), RewardSpec("format", 0.0, {"pattern": r"\d+"}), {"name": "majority_vote", "weight": 0.5}],
        task=TASK,
    )
    problems = [Problem("a", "q", answer="42")]
    result = reward(problems, [texts("42", "x 42", "41")])
    # correctness [1, 1, 0]; format (weight 0) [1, 0, 1]; majority "42" → [1, 1, 0]
    assert result.components["format"] == [[1.0, 0.0, 1.0]]
    assert result.total == [[1.5, 1.5, 0.0]]


def test_reward_rejects_bad_shapes_and_duplicates():
    groups = [texts("a", "b")]
    with pytest.raises(ValueError, match=r"'short'.*\[1\].*\[2\]"):
        Reward([Component("short", Fixed("short", [[1.0]]), 1.0)])(PROBLEMS[:1], groups)
    with pytest.raises(ValueError, match="'nan'"):
        Reward([Component("nan", Fixed("nan", [[1.0, float("nan")]]), 1.0)])(PROBLEMS[:1], groups)
    with pytest.raises(SignalOptionError, match="more than once"):
        Reward.from_specs(["correctness", "correctness"], task=TASK)


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_reward_refuses_non_finite_scores_naming_the_signal(bad):
    groups = [texts("a", "b")]
    with pytest.raises(ValueError, match=rf"signal 'wild' returned {bad!r} for completion 1 of group 0.*finite"):
        Reward([Component("wild", Fixed("wild", [[1.0, bad]]), 1.0)])(PROBLEMS[:1], groups)


def test_reward_refuses_a_weighted_sum_that_overflows():
    groups = [texts("a")]
    huge = [Component("big", Fixed("big", [[1e308]]), 1.0), Component("bigger", Fixed("bigger", [[1e308]]), 1.0)]
    with pytest.raises(ValueError, match=r"'big': 1e\+308, 'bigger': 1e\+308.*overflowed to inf"):
        Reward(huge)(PROBLEMS[:1], groups)


# ---- user reward functions ----------------------------------------------------------------

USER_FILE = textwrap.dedent(
    """
    SEEN = {}

    def closeness(prompts, completions, answer, problem_id, level, scale=1.0, **kwargs):
        SEEN.update(prompts=prompts, completions=completions, answer=answer,
                    problem_id=problem_id, level=level, kwargs=sorted(kwargs))
        out = []
        for text, ref, lv in zip(completions, answer, level):
            if lv is None:
                out.append(None)
            else:
                out.append(scale * (1.0 if text == ref else 0.0) + lv)
        return out

    def too_short(prompts, completions, **kwargs):
        return [1.0]

    def strings(prompts, completions, **kwargs):
        return ["1.0"] * len(completions)

    def narrow(prompts, completions):
        return [0.0] * len(completions)

    def unbounded(prompts, completions, **kwargs):
        return [float("-inf")] * len(completions)
    """
)


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(USER_FILE)
    return path


def test_user_function_gets_flat_lists_and_columns(user_file):
    spec = f"{user_file}:closeness"
    signal = build_signal(spec, task=TASK, user_code=True, scale=10.0)
    problems = [
        Problem("p0", "12+30=", answer="42", metadata={"level": 1}),
        Problem("p1", "3+4=", answer="7", metadata={}),
    ]
    groups = [texts("42", "41"), texts("7")]
    assert signal(problems, groups) == [[11.0, 1.0], [None]]

    seen = signal.function.__globals__["SEEN"]
    assert seen["prompts"] == ["12+30=", "12+30=", "3+4="]
    assert seen["completions"] == ["42", "41", "7"]
    assert seen["answer"] == ["42", "42", "7"]
    assert seen["problem_id"] == ["p0", "p0", "p1"]
    assert seen["level"] == [1, 1, None]
    assert seen["kwargs"] == ["completion_ids"]

    reward = Reward.from_specs([(spec, 1.0, {"scale": 2.0}), ("correctness", 0.0)], task=TASK, user_code=True)
    assert reward(problems, groups).total == [[3.0, 1.0], [0.0]]


def test_user_function_errors_name_the_function(user_file):
    problems, groups = PROBLEMS[:1], [texts("42", "41")]
    with pytest.raises(RewardFunctionError, match=r"too_short.*returned 1 rewards for 2 completions"):
        build_signal(f"{user_file}:too_short", task=TASK, user_code=True)(problems, groups)
    with pytest.raises(RewardFunctionError, match=r"strings.*returned str"):
        build_signal(f"{user_file}:strings", task=TASK, user_code=True)(problems, groups)
    with pytest.raises(RewardFunctionError, match=r"'[^']*unbounded' returned -inf at index 0; rewards must be finite"):
        build_signal(f"{user_file}:unbounded", task=TASK, user_code=True)(problems, groups)
    with pytest.raises(RewardFunctionError, match=r"narrow.*\*\*kwargs"):
        build_signal(f"{user_file}:narrow", task=TASK, user_code=True)(problems, groups)
    with pytest.raises(RewardFunctionError, match="has no attribute 'missing'"):
        build_signal(f"{user_file}:missing", task=TASK, user_code=True)
    with pytest.raises(RewardFunctionError, match="nope.py' not found"):
        build_signal(f"{user_file.parent / 'nope.py'}:f", task=TASK, user_code=True)
    with pytest.raises(RewardFunctionError, match="no module 'no_such_module_xyz'"):
        build_signal("no_such_module_xyz:f", task=TASK, user_code=True)


def test_user_code_needs_explicit_permission(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.py"
    path.write_text(f"open({str(marker)!r}, 'w').close()\ndef f(prompts, completions, **kwargs):\n    return [0.0] * len(completions)\n")
    with pytest.raises(UnknownSignalError, match="names user code, which only a config file or the command line"):
        build_signal(f"{path}:f", task=TASK)
    with pytest.raises(UnknownSignalError, match="names user code"):
        Reward.from_specs([(f"{path}:f", 1.0)], task=TASK)
    assert not marker.exists()
    build_signal(f"{path}:f", task=TASK, user_code=True)
    assert marker.exists()  # the check above can tell


def test_user_function_from_a_module(tmp_path, monkeypatch):
    (tmp_path / "signals_test_rewards.py").write_text(
        "def length(prompts, completions, **kwargs):\n    return [float(len(c)) for c in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    signal = build_signal("signals_test_rewards:length", task=TASK, user_code=True)
    assert signal.name == "signals_test_rewards:length"
    assert signal(PROBLEMS, [texts("abc", ""), texts("de")]) == [[3.0, 0.0], [2.0]]


# ---- the registry -------------------------------------------------------------------------


def test_unknown_signal_lists_the_known_ones():
    with pytest.raises(UnknownSignalError) as error:
        build_signal("corectness", task=TASK)
    message = str(error.value)
    assert "'corectness'" in message and all(name in message for name in SIGNALS)


def test_unknown_option_lists_the_options():
    with pytest.raises(SignalOptionError, match=r"no option 'patern'.*pattern"):
        build_signal("format", task=TASK, patern="x")
    with pytest.raises(SignalOptionError, match=r"'batch_size'"):
        scorer = SimpleNamespace(tokenizer=None, encode=None, score_tokens=None)  # never called
        build_signal("self_certainty", task=TASK, policy=scorer, batch_size=0)
