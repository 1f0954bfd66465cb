"""Turn metrics on made-up matrices and episodes; every value computed by hand."""

import numpy as np
import pytest

from sharpen.episodes import Episode, Turn
from sharpen.evaluation.evaluate import Metric
from sharpen.evaluation.turns import (
    change_t1_tT,
    episode_matrices,
    evaluate_turns,
    majority_over_turns,
    per_problem_means,
    per_problem_turn_values,
    right_to_wrong,
    turn_metrics,
    wrong_to_right,
)
from sharpen.models.base import Completion
from sharpen.seeds import derive_seed
from sharpen.tasks.base import Problem

T, F = True, False
CORRECT = [
    [F, T, T],  # wrong → right
    [T, F, F],  # right → wrong
    [T, T, T],
    [F, F, F],
    [F, F, T],  # wrong → right at the last turn
]
ANSWERS = [
    ["4", "5", "5"],  # "5" has 2 votes, first at turn 2 (right) → 1
    ["3", "4", "4"],  # "4" wins, turn 2 wrong → 0
    ["7", "7", "7"],  # → 1
    [None, None, None],  # nothing votes → 0
    ["1", "2", "9"],  # three-way tie → the first, "1", wrong → 0
]
HAND = {
    "turn1/accuracy": 2 / 5,
    "turn2/accuracy": 2 / 5,
    "turn3/accuracy": 3 / 5,
    "m1@t1": 2 / 5,
    "m1@tT": 3 / 5,
    "p1@tT": 4 / 5,
    "maj@turns": 2 / 5,
    "delta_t1_tT": 1 / 5,
    "delta_i_to_c": 2 / 5,
    "delta_c_to_i": 1 / 5,
}


def test_hand_values_from_a_matrix():
    metrics = turn_metrics(CORRECT, answers=ANSWERS)
    assert list(metrics) == list(HAND)
    for name, value in HAND.items():
        assert metrics[name].value == pytest.approx(value), name
        lo, hi = metrics[name].ci
        assert lo <= metrics[name].value <= hi, name
    # Δ(t1,tT) = Δi→c − Δc→i = acc(T) − acc(1)
    assert metrics["delta_t1_tT"].value == pytest.approx(
        metrics["delta_i_to_c"].value - metrics["delta_c_to_i"].value)


def test_per_problem_values():
    assert change_t1_tT(CORRECT).tolist() == [1, -1, 0, 0, 1]
    assert wrong_to_right(CORRECT).tolist() == [1, 0, 0, 0, 1]
    assert right_to_wrong(CORRECT).tolist() == [0, 1, 0, 0, 0]
    assert majority_over_turns(ANSWERS, CORRECT).tolist() == [1, 0, 1, 0, 0]
    assert "maj@turns" not in per_problem_turn_values(CORRECT)  # needs answers
    # unscorable (None) counts as not right; numpy input works too
    assert per_problem_turn_values([[None, T]])["delta_i_to_c"].tolist() == [1.0]
    assert per_problem_turn_values(np.array(CORRECT))["p1@tT"].tolist() == [1, 1, 1, 0, 1]


def test_majority_over_turns_ties_and_none():
    assert majority_over_turns([["9", "1"]], [[T, F]]).tolist() == [1.0]  # tie → first turn's answer
    assert majority_over_turns([["1", "9"]], [[F, T]]).tolist() == [0.0]
    assert majority_over_turns([[None, None, "9"]], [[F, F, T]]).tolist() == [1.0]  # None does not vote
    assert majority_over_turns([["1", "9", "9", "1"]], [[F, T, T, F]]).tolist() == [0.0]  # 2–2: "1" first
    with pytest.raises(ValueError, match="shape"):
        majority_over_turns([["1"]], [[F, T]])


def test_ci_is_a_bootstrap_over_problems():
    same = turn_metrics([[T, T]] * 4)  # no spread: a point interval
    assert same["m1@t1"] == Metric(1.0, (1.0, 1.0))
    assert same["delta_t1_tT"] == Metric(0.0, (0.0, 0.0))
    big = turn_metrics(CORRECT * 20, seed=3)
    lo, hi = big["delta_i_to_c"].ci
    assert lo < 0.4 < hi and hi - lo < 0.4
    assert turn_metrics(CORRECT, seed=3) == turn_metrics(CORRECT, seed=3)  # deterministic


def turn(answer, correct, tokens=2):
    return Turn(Completion(answer or "x", tuple(range(tokens)), (0.0,) * tokens, "stop"), answer, correct, None)


def test_episodes_that_stopped_early_keep_their_last_answer():
    p = Problem(id="p", prompt="q")
    episodes = [
        Episode(p, (turn("41", F), turn("42", T, 3))),  # stopped at turn 2
        Episode(p, (turn("22", T),)),  # stopped at turn 1
        Episode(p, (turn(None, F, 1), turn("39", F), turn("40", T))),
    ]
    correct, answers = episode_matrices(episodes, turns=3)
    assert correct.tolist() == [[F, T, T], [T, T, T], [F, F, T]]
    assert answers == [["41", "42", "42"], ["22", "22", "22"], [None, "39", "40"]]

    m = turn_metrics(episodes, turns=3)
    assert m["turn2/accuracy"].value == pytest.approx(2 / 3)
    assert m["m1@t1"].value == pytest.approx(1 / 3)
    assert m["m1@tT"].value == pytest.approx(1.0)
    assert m["p1@tT"].value == pytest.approx(1.0)
    assert m["maj@turns"].value == pytest.approx(2 / 3)  # "39"/"40" tie → "39", wrong
    assert m["delta_i_to_c"].value == pytest.approx(2 / 3)
    assert m["delta_c_to_i"].value == 0.0
    assert m["tokens_per_problem"].value == pytest.approx((5 + 2 + 5) / 3)
    assert list(turn_metrics(episodes)) == list(m)  # T defaults to the longest episode

    with pytest.raises(ValueError, match="turns=2"):
        episode_matrices(episodes, turns=2)
    with pytest.raises(ValueError, match="answers"):
        turn_metrics(episodes, answers=answers)


def test_bad_matrices():
    for bad in ([], [[]], [[T, F], [T]]):
        with pytest.raises(ValueError, match="rectangular"):
            turn_metrics(bad)


def test_several_episodes_per_problem_average_before_the_bootstrap():
    # two problems × two episodes each, rows in problem order
    rows = [[F, T], [T, T],  # problem 1: turn-1 accuracy 1/2, turn 2 1, Δi→c 1/2
            [T, F], [F, F]]  # problem 2: turn-1 accuracy 1/2, turn 2 0, Δc→i 1/2
    m = turn_metrics(rows, episodes_per_problem=2)
    assert m["turn1/accuracy"].value == pytest.approx(0.5)
    assert m["turn1/accuracy"].ci == (0.5, 0.5)  # both problems score 1/2: nothing to resample
    assert m["turn2/accuracy"].value == pytest.approx(0.5)
    assert m["turn2/accuracy"].ci == (0.0, 1.0)  # per-problem values 1 and 0
    assert m["delta_i_to_c"].value == pytest.approx(0.25)
    assert m["delta_c_to_i"].value == pytest.approx(0.25)
    assert per_problem_means(np.array([1.0, 0.0, 0.5, 0.5, 1.0, 1.0]), 3).tolist() == pytest.approx([0.5, 2.5 / 3])
    with pytest.raises(ValueError, match="groups of episodes_per_problem=2"):
        turn_metrics(rows[:3], episodes_per_problem=2)


class RetryingPolicy:
    """Answers a problem wrong ("0") at turn 1 and right at every later turn, token ids one per
    character: after it, every turn-2 answer fixes turn 1."""

    def __init__(self, task):
        self.task, self.calls = task, []

    def generate(self, prompts, params):
        self.calls.append((list(prompts), params))
        out = []
        for prompt in prompts:
            if isinstance(prompt, str):
                text = "0"
            else:
                problem = prompt[0]["content"]
                a, b = problem.rstrip("=").split("+")
                text = str(int(a) + int(b))
            out.append([Completion(text, tuple(range(len(text))), (0.0,) * len(text), "stop")])
        return out


def test_evaluate_turns_rolls_out_episodes_on_held_out_problems():
    from sharpen.tasks import get_task

    task = get_task("addition")
    policy = RetryingPolicy(task)
    result = evaluate_turns(policy, task, turns=3, n_problems=5, episodes_per_problem=2, feedback="binary", seed=4)
    held_out = task.problems("eval", 5, 4)
    assert policy.calls[0][0] == [p.prompt for p in held_out for _ in range(2)]  # S episodes per problem, in order
    first = derive_seed(4, "eval_turns")
    assert [params.seed for _, params in policy.calls] == [first, first + 1, first + 2]
    assert all(params.n == 1 and params.max_new_tokens == task.max_new_tokens for _, params in policy.calls)
    m = result.metrics
    assert [m[f"turn{t}/accuracy"].value for t in (1, 2, 3)] == [0.0, 1.0, 1.0]
    assert m["delta_i_to_c"].value == 1.0 and m["delta_c_to_i"].value == 0.0 and m["p1@tT"].value == 1.0
    assert result.n_problems == 5 and result.episodes_per_problem == 2 and result.turns == 3
    report = result.to_json()
    assert report["feedback"] == "binary" and report["metrics"]["m1@tT"] == {"value": 1.0, "ci": [1.0, 1.0]}
    assert "turn3/accuracy" in list(result.table().columns[0].cells)

    stopped = evaluate_turns(RetryingPolicy(task), task, turns=3, n_problems=5, stop_when_correct=True)
    assert stopped.metrics["turn3/accuracy"].value == 1.0  # carried forward from turn 2
    assert stopped.metrics["tokens_per_problem"].value < m["tokens_per_problem"].value
    with pytest.raises(ValueError, match="turns >= 1"):
        evaluate_turns(policy, task, turns=0)
