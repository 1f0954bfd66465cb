"""Strategies, driven by a scripted policy: exact tokens, stopping rules, prompts and picks."""

from __future__ import annotations

import re
from typing import Callable, Optional

import pytest

from sharpen.models.base import Completion, SamplingParams
from sharpen.models.formats import EMBEDDED, as_messages, question_text, retry_messages
from sharpen.strategies import (
    SPEC_ARGS,
    STRATEGIES,
    BestOfN,
    SelfConsistency,
    StrategyOptionError,
    StrategySpecError,
    UnknownStrategyError,
    build_strategy,
    parse_strategy_spec,
    reread_prompt,
)
from sharpen.tasks import get_task
from sharpen.tasks.base import Problem, Task, Verdict

# ---- a tiny task and a scripted policy ------------------------------------------------------


def last_number(text: str) -> Optional[str]:
    found = re.findall(r"-?\d+", text)
    return found[-1] if found else None


def check(problem: Problem, text: str) -> Verdict:
    got = last_number(text)
    return Verdict(got == problem.answer if got is not None else False, got)


TASK = Task(name="tiny", problems=lambda split, n, seed: [], check=check, extract=last_number, max_new_tokens=8)
A = Problem(id="a", prompt="37+58=", answer="95")
B = Problem(id="b", prompt="1+1=", answer="2")


class Scripted:
    """A policy whose completions come from script(prompt, call, sample); one token per character.

    Records every generate call (prompts, params) so tests can count calls and read prompts.
    """

    def __init__(self, script: Callable[[object, int, int], str]) -> None:
        self.script = script
        self.calls: list[tuple[list, SamplingParams]] = []
        self.tokens = 0

    def generate(self, prompts, params):
        call = len(self.calls)
        self.calls.append((list(prompts), params))
        out = []
        for prompt in prompts:
            group = []
            for j in range(params.n):
                text = self.script(prompt, call, j)
                self.tokens += len(text)
                group.append(Completion(text, tuple(range(len(text))), (0.0,) * len(text), "stop"))
            out.append(group)
        return out


def attempts_so_far(prompt) -> int:
    return 0 if isinstance(prompt, str) else sum(m["role"] == "assistant" for m in prompt)


# ---- single, self-consistency ---------------------------------------------------------------


def test_single_counts_tokens_exactly_and_reads_the_answer():
    policy = Scripted(lambda p, c, j: "95" if question_text(p) == "37+58=" else "11")
    results = build_strategy("single", policy=policy, task=TASK)([A, B])
    assert [r.answer for r in results] == ["95", "11"]
    assert [r.tokens for r in results] == [2, 2]
    assert len(policy.calls) == 1 and policy.calls[0][1].n == 1
    assert policy.calls[0][1].max_new_tokens == 8  # the task's budget by default
    assert results[0].trace[0].prompts == ["37+58="]


def test_self_consistency_picks_the_majority_answer():
    answers = ["96", "95", "7", "95", "95"]
    policy = Scripted(lambda p, c, j: f"x{answers[j]}")
    (result,) = SelfConsistency(policy, TASK, n=5)([A])
    assert result.answer == "95" and result.text == "x95"
    assert result.tokens == sum(len(f"x{a}") for a in answers) == 14
    assert len(policy.calls) == 1


def test_early_stopping_stops_at_the_first_unanimous_window_and_samples_less():
    # problem a: unanimous at once; problem b: window 0 splits, window 1 is unanimous
    def script(p, call, j):
        if question_text(p) == "37+58=":
            return "95"
        return ["1", "2"][j] if call == 0 else "3"

    policy = Scripted(script)
    a, b = SelfConsistency(policy, TASK, n=8, window=2)([A, B])
    assert len(policy.calls) == 2
    assert len(policy.calls[0][0]) == 2 and policy.calls[0][1].n == 2  # both problems, window 2
    assert policy.calls[1][0] == ["1+1="]                               # only b goes on
    assert (len(a.trace), len(b.trace)) == (1, 2)
    assert a.answer == "95" and b.answer == "3"  # b's vote: 1, 2, 3, 3
    assert (a.tokens, b.tokens) == (4, 4)
    assert policy.tokens == a.tokens + b.tokens

    full = Scripted(lambda p, c, j: "95")
    (everything,) = SelfConsistency(full, TASK, n=8)([A])
    assert everything.tokens == 16 > a.tokens


def test_early_stopping_draws_at_most_n_with_a_short_last_window():
    policy = Scripted(lambda p, c, j: str(c * 10 + j))  # never unanimous
    (result,) = SelfConsistency(policy, TASK, n=5, window=2)([A])
    assert [params.n for _, params in policy.calls] == [2, 2, 1]
    assert sum(len(call.completions[0]) for call in result.trace) == 5


# ---- best-of-N ------------------------------------------------------------------------------


class Fixed:
    """A signal with given scores for each problem's group."""

    def __init__(self, rows, name="fixed"):
        self.rows, self.name = rows, name

    def __call__(self, problems, groups):
        return [list(r) for r in self.rows]


def test_best_of_n_picks_the_highest_scored_completion():
    policy = Scripted(lambda p, c, j: f"{90 + j}")
    (result,) = BestOfN(policy, TASK, signal=Fixed([[0.1, None, 0.9, 0.9]]), n=4)([A])
    assert result.text == "92" and result.answer == "92"  # ties go to the earliest, None never wins
    assert result.trace[0].scores == [[0.1, None, 0.9, 0.9]]
    assert result.tokens == 8


def test_best_of_n_refuses_the_oracle_signal_unless_allowed():
    policy = Scripted(lambda p, c, j: ["94", "95", "96"][j])
    with pytest.raises(StrategyOptionError, match="reads the reference answers.*allow_oracle=True"):
        build_strategy("best_of_n", policy=policy, task=TASK, n=3, signal="correctness")
    with pytest.raises(StrategyOptionError, match="allow_oracle"):
        BestOfN(policy, TASK, signal=Fixed([[]], name="correctness"))
    strategy = build_strategy("best_of_n", policy=policy, task=TASK, n=3, signal="correctness", allow_oracle=True)
    (result,) = strategy([A])
    assert result.answer == "95"


def test_best_of_n_names_itself_when_its_signal_needs_what_the_policy_lacks():
    policy = Scripted(lambda p, c, j: "95")  # samples only, like a policy behind an HTTP server
    with pytest.raises(StrategyOptionError,
                       match="strategy 'best_of_n': signal 'self_certainty'.*has no tokenizer, encode, score_tokens"):
        build_strategy("best_of_n", policy=policy, task=TASK, n=3, signal="self_certainty")
    assert policy.calls == []


def test_best_of_n_with_a_label_free_signal_by_name():
    policy = Scripted(lambda p, c, j: ["94", "95", "95"][j])
    (result,) = build_strategy("best_of_n", policy=policy, task=TASK, n=3, signal="majority_vote")([A])
    assert result.answer == "95" and result.trace[0].scores == [[0.0, 1.0, 1.0]]


# ---- retry ----------------------------------------------------------------------------------


def test_retry_with_binary_feedback_stops_at_the_first_correct_turn():
    # a is right at its second attempt; b is never right
    def script(p, call, j):
        if as_messages(p)[0]["content"] == "37+58=":
            return ["90", "95"][attempts_so_far(p)]
        return f"{attempts_so_far(p)}0"

    policy = Scripted(script)
    a, b = build_strategy("retry", policy=policy, task=TASK, turns=4)([A, B])
    assert a.answer == "95" and len(a.trace) == 2
    assert b.answer == "30" and len(b.trace) == 4
    assert [len(prompts) for prompts, _ in policy.calls] == [2, 2, 1, 1]
    assert a.trace[1].prompts == [retry_messages("37+58=", ["90"], [EMBEDDED.retry_feedback])]
    assert b.trace[3].prompts == [retry_messages("1+1=", ["00", "10", "20"], [EMBEDDED.retry_feedback] * 3)]
    assert [c.scores for c in a.trace] == [[[0.0]], [[1.0]]]
    assert (a.tokens, b.tokens) == (4, 8)


def test_retry_without_feedback_runs_every_turn_with_a_neutral_message_and_can_vote():
    policy = Scripted(lambda p, c, j: ["95", "96", "95"][attempts_so_far(p)])
    (last,) = build_strategy("retry", policy=policy, task=TASK, turns=3, feedback="none")([A])
    assert len(last.trace) == 3 and last.trace[0].scores is None
    assert last.trace[2].prompts == [retry_messages("37+58=", ["95", "96"], [EMBEDDED.neutral_feedback] * 2)]
    policy = Scripted(lambda p, c, j: ["95", "95", "96"][attempts_so_far(p)])
    (voted,) = build_strategy("retry", policy=policy, task=TASK, turns=3, feedback="none", final="majority")([A])
    assert voted.answer == "95" and voted.tokens == 6
    with pytest.raises(StrategyOptionError, match="feedback must be one of"):
        build_strategy("retry", policy=policy, task=TASK, feedback="hint")


def test_retry_with_binary_feedback_stops_when_the_checker_cannot_score():
    unscorable = Task(name="unscorable", problems=lambda split, n, seed: [], check=lambda p, t: Verdict(None),
                      extract=last_number, max_new_tokens=8)
    policy = Scripted(lambda p, c, j: "90")
    (result,) = build_strategy("retry", policy=policy, task=unscorable, turns=3)([A])
    assert len(result.trace) == 1 and result.trace[0].scores == [[None]]
    (result,) = build_strategy("retry", policy=policy, task=unscorable, turns=3, feedback="none")([A])
    assert len(result.trace) == 3 and result.trace[0].scores is None


def test_retry_seeds_move_on_with_the_turn():
    policy = Scripted(lambda p, c, j: "90")
    build_strategy("retry", policy=policy, task=TASK, turns=3, params=SamplingParams(seed=5, n=4))([A])
    assert [(params.seed, params.n) for _, params in policy.calls] == [(5, 1), (6, 1), (7, 1)]
    policy = Scripted(lambda p, c, j: "90")
    build_strategy("retry", policy=policy, task=TASK, turns=2)([A])
    assert [params.seed for _, params in policy.calls] == [None, None]


# ---- self-refine ----------------------------------------------------------------------------


class Judging(Scripted):
    """Scripted generation plus a judge that says yes exactly when the judged answer is 95."""

    def __init__(self, script):
        super().__init__(script)
        self.judged: list = []

    def choice_logprobs(self, prompts, choices):
        assert tuple(choices) == (EMBEDDED.judge_yes, EMBEDDED.judge_no)
        self.judged.extend(prompts)
        return [[-0.1, -3.0] if "95 right?" in p[-1]["content"] else [-3.0, -0.1] for p in prompts]


def test_self_refine_stops_when_the_model_judges_itself_right():
    policy = Judging(lambda p, c, j: ["90", "91", "95", "99"][attempts_so_far(p)])
    (result,) = build_strategy("self_refine", policy=policy, task=TASK, rounds=4)([A])
    assert result.answer == "95"
    assert len(policy.calls) == 3  # attempts 90, 91, 95; the judge said yes to 95
    assert [c.kind for c in result.trace] == ["sample", "judge"] * 3
    assert policy.judged[0] == [{"role": "user", "content": "37+58=90 right?"}]
    assert result.trace[4].prompts == [retry_messages("37+58=", ["90", "91"], [EMBEDDED.refine_feedback] * 2)]
    assert result.trace[1].scores[0][0] < 0.5 < result.trace[5].scores[0][0]
    assert result.tokens == 6  # judging generates nothing


def test_self_refine_needs_choice_logprobs():
    with pytest.raises(StrategyOptionError, match="choice_logprobs"):
        build_strategy("self_refine", policy=Scripted(lambda p, c, j: "1"), task=TASK)


# ---- debate ---------------------------------------------------------------------------------


def test_debate_shows_each_agent_the_others_answers_and_votes_the_last_round():
    # round 0: agents answer 95, 96, 95 (by call order); round 1: everyone says 95 but agent 1 says 96
    order = iter(["95", "96", "95", "95", "96", "95"])
    policy = Scripted(lambda p, c, j: next(order))
    (result,) = build_strategy("debate", policy=policy, task=TASK, agents=3, rounds=2)([A])
    assert len(policy.calls) == 2 and len(policy.calls[0][0]) == 3
    round1 = result.trace[1].prompts
    assert round1[0] == [
        {"role": "user", "content": "37+58="},
        {"role": "assistant", "content": "95"},
        {"role": "user", "content": "others: 96, 95"},
    ]
    assert round1[1][-1]["content"] == "others: 95, 95"
    assert result.answer == "95" and result.tokens == 12


# ---- re-reading -----------------------------------------------------------------------------


def test_reread_repeats_the_question_around_any_strategy():
    policy = Scripted(lambda p, c, j: "95")
    strategy = build_strategy("reread", policy=policy, task=TASK, inner="self_consistency", n=2)
    (result,) = strategy([A])
    assert policy.calls[0][0] == ["37+58=\nRead the question again: 37+58="]
    assert result.problem is A and result.answer == "95" and result.tokens == 4
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Q?"}]
    assert reread_prompt(chat) == [chat[0], {"role": "user", "content": "Q?\nRead the question again: Q?"}]


def test_strategies_run_on_a_registered_task():
    task = get_task("addition")
    problems = task.problems("eval", 3, 0)
    policy = Scripted(lambda p, c, j: "12")
    results = build_strategy("self_consistency", policy=policy, task=task, n=3)(problems)
    assert [r.answer for r in results] == ["12"] * 3 and all(r.tokens == 6 for r in results)


# ---- registry and specs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("single", ("single", {})),
        ("self_consistency-8", ("self_consistency", {"n": 8})),
        ("self_consistency-16x4", ("self_consistency", {"n": 16, "window": 4})),
        ("debate-3x2", ("debate", {"agents": 3, "rounds": 2})),
        ("best_of_n-8:self_certainty", ("best_of_n", {"n": 8, "signal": "self_certainty"})),
        ("retry-3", ("retry", {"turns": 3})),
        ("retry-3:none", ("retry", {"turns": 3, "feedback": "none"})),
        ("self_refine-2", ("self_refine", {"rounds": 2})),
        ("reread+self_consistency-8", ("reread", {"inner": "self_consistency", "n": 8})),
    ],
)
def test_parse_strategy_spec(spec, expected):
    assert parse_strategy_spec(spec) == expected
    assert expected[0] in STRATEGIES


def test_every_strategy_has_a_spec_and_bare_reread_reads():
    assert list(SPEC_ARGS) == list(STRATEGIES)
    assert parse_strategy_spec("reread") == ("reread", {})


def test_user_code_in_a_spec_needs_permission():
    with pytest.raises(StrategySpecError, match="names user code, which only a config file or the command line"):
        parse_strategy_spec("best_of_n-4:rewards.py:short")
    with pytest.raises(StrategySpecError, match="names user code"):
        parse_strategy_spec("reread+best_of_n-4:/some/file.py:f")
    assert parse_strategy_spec("best_of_n-4:rewards.py:short", user_code=True) == (
        "best_of_n", {"n": 4, "signal": "rewards.py:short", "user_code": True})


@pytest.mark.parametrize(
    "spec, message",
    [
        ("majority-8", "unknown strategy 'majority'; known strategies: single, best_of_n"),
        ("debate-3x2x1", "takes at most 2 number"),
        ("single:x", "takes no ':word'"),
        ("self_consistency-", "does not read as"),
        ("self_consistency-8.5", "does not read as"),
        ("reread+reread+single", "only once"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(StrategySpecError, match=re.escape(message)):
        parse_strategy_spec(spec)


def test_build_strategy_errors_list_names_and_options():
    policy = Scripted(lambda p, c, j: "1")
    with pytest.raises(UnknownStrategyError, match="known strategies: single, best_of_n, self_consistency"):
        build_strategy("beam", policy=policy, task=TASK)
    with pytest.raises(StrategyOptionError, match="has no option 'k'; its options are: n, window, params"):
        build_strategy("self_consistency", policy=policy, task=TASK, k=3)
    with pytest.raises(StrategyOptionError, match="'n' must be an integer >= 1"):
        build_strategy("self_consistency", policy=policy, task=TASK, n=0)
