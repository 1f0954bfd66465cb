"""`compare_strategies` and `sharpen compare`: hand-computed accuracy and tokens, the paired
significance test, budget marking, JSON, the plot, and the command line on the tiny model."""

from __future__ import annotations

import json
import re
from typing import Optional

import pytest
from rich.console import Console

from sharpen.evaluation.compare import CompareError, Comparison, compare_strategies, paired_bootstrap
from sharpen.evaluation.metrics import bootstrap_ci
from sharpen.models.base import Completion
from sharpen.models.formats import question_text
from sharpen.strategies import StrategySpecError
from sharpen.tasks.base import Problem, Task, Verdict


def last_number(text: str) -> Optional[str]:
    found = re.findall(r"-?\d+", text)
    return found[-1] if found else None


def check(problem: Problem, text: str) -> Verdict:
    got = last_number(text)
    return Verdict(got == problem.answer if got is not None else False, got)


def make_task(problems: list[Problem], drawn: Optional[list] = None) -> Task:
    def source(split, n, seed):
        if drawn is not None:
            drawn.append((split, n, seed))
        return problems[:n]

    return Task(name="tiny", problems=source, check=check, extract=last_number, max_new_tokens=8)


class Scripted:
    """completion text = samples[question][j] for the j-th sample of a call; one token per character."""

    def __init__(self, samples: dict[str, list[str]]) -> None:
        self.samples = samples
        self.calls: list = []  # the SamplingParams of every generate call

    def generate(self, prompts, params):
        self.calls.append(params)
        out = []
        for prompt in prompts:
            texts = self.samples[question_text(prompt)]
            group = []
            for j in range(params.n):
                text = texts[j % len(texts)]
                group.append(Completion(text, tuple(range(len(text))), (0.0,) * len(text), "stop"))
            out.append(group)
        return out


# four problems, answers 1..4; the first sample is what `single` says
PROBLEMS = [Problem(id=f"p{i}", prompt=f"q{i}=", answer=str(i)) for i in range(1, 5)]
SAMPLES = {
    "q1=": ["1", "1", "1"],     # single ✓, vote 1 ✓       tokens 1 | 3
    "q2=": ["9", "2", "2"],     # single ✗, vote 2 ✓       tokens 1 | 3
    "q3=": ["9", "9", "3"],     # single ✗, vote 9 ✗       tokens 1 | 3
    "q4=": ["99", "4", "4"],    # single ✗, vote 4 ✓       tokens 2 | 4
}


def compare(specs, **kwargs) -> Comparison:
    return compare_strategies(Scripted(SAMPLES), make_task(PROBLEMS), specs, **kwargs)


def test_accuracy_tokens_and_intervals_by_hand():
    drawn: list = []
    c = compare_strategies(Scripted(SAMPLES), make_task(PROBLEMS, drawn), ["single", "self_consistency-3"],
                           problems=4, seed=7)
    assert drawn == [("eval", 4, 7)]  # one draw, shared by every strategy
    single, sc = c.strategies
    assert single.spec == "single" and sc.spec == "self_consistency-3"
    assert single.correct == (True, False, False, False) and single.accuracy == 0.25
    assert sc.correct == (True, True, False, True) and sc.accuracy == 0.75
    assert single.tokens == (1, 1, 1, 2) and single.tokens_per_problem == 1.25
    assert sc.tokens == (3, 3, 3, 4) and sc.tokens_per_problem == 3.25
    assert single.ci == bootstrap_ci([1, 0, 0, 0], n_boot=1000, seed=7)
    assert sc.ci == bootstrap_ci([1, 1, 0, 1], n_boot=1000, seed=7)
    assert sc.ci[0] <= 0.75 <= sc.ci[1]
    assert c.n_problems == 4 and c.task == "tiny" and single.unscorable == 0
    (pair,) = c.pairs
    assert (pair.a, pair.b) == ("single", "self_consistency-3")
    assert pair.difference == pytest.approx(-0.5)
    assert c.pair("self_consistency-3", "single").difference == pytest.approx(0.5)


def test_clearly_better_strategy_is_significant_and_identical_ones_are_not():
    problems = [Problem(id=f"p{i}", prompt=f"q{i}=", answer=str(i)) for i in range(30)]
    samples = {f"q{i}=": [str(i + 1000), str(i), str(i)] for i in range(30)}  # first sample always wrong
    c = compare_strategies(Scripted(samples), make_task(problems), ["single", "self_consistency-3", "self_consistency-1"],
                           problems=30)
    assert [s.accuracy for s in c.strategies] == [0.0, 1.0, 0.0]
    better = c.pair("self_consistency-3", "single")
    assert better.significant and better.winner == "self_consistency-3" and better.ci[0] > 0
    same = c.pair("single", "self_consistency-1")  # the same answers on every problem
    assert same.difference == 0 and not same.significant and same.winner is None
    assert c.beats("self_consistency-3") == ["single", "self_consistency-1"]
    assert c.beats("single") == [] and c.beats("self_consistency-1") == []


def test_paired_bootstrap_uses_the_pairing():
    # b is right exactly where a is, plus 4 more of 40 problems: unpaired intervals overlap,
    # but every problem's difference is >= 0, so the paired interval stays above 0
    a = [1] * 16 + [0] * 24
    b = [1] * 20 + [0] * 20
    diff, (lo, hi) = paired_bootstrap(b, a, seed=0)
    assert diff == pytest.approx(0.1) and lo > 0 and hi <= 0.25
    a_lo, a_hi = bootstrap_ci(a, seed=0)
    b_lo, b_hi = bootstrap_ci(b, seed=0)
    assert b_lo < a_hi  # the unpaired intervals overlap
    assert paired_bootstrap(a, a) == (0.0, (0.0, 0.0))
    with pytest.raises(ValueError):
        paired_bootstrap([1, 0], [1])


def test_budget_marks_but_keeps_strategies_over_it():
    c = compare(["single", "self_consistency-3"], problems=4, budget=2)
    assert [s.spec for s in c.strategies] == ["single", "self_consistency-3"]
    assert [s.over_budget for s in c.strategies] == [False, True]
    console = Console(record=True, width=200)
    console.print(c.table())
    text = console.export_text()
    assert "over budget" in text and "self_consistency-3" in text and "single" in text
    assert [s.over_budget for s in compare(["single"], problems=4).strategies] == [False]  # no budget, no marks


def test_table_has_the_beats_column():
    problems = [Problem(id=f"p{i}", prompt=f"q{i}=", answer=str(i)) for i in range(30)]
    samples = {f"q{i}=": [str(i + 1000), str(i), str(i)] for i in range(30)}
    c = compare_strategies(Scripted(samples), make_task(problems), ["single", "self_consistency-3"], problems=30)
    console = Console(record=True, width=200)
    console.print(c.table())
    rows = {line.split("│")[2].strip(): line for line in console.export_text().splitlines() if line.count("│") >= 5}
    assert rows["single"].split("│")[1].strip() == "1" and rows["self_consistency-3"].split("│")[1].strip() == "2"
    assert rows["self_consistency-3"].split("│")[5].strip() == "1"  # beats #1, single
    assert rows["single"].split("│")[5].strip() == "—"
    assert "1.000 [1.000, 1.000]" in rows["self_consistency-3"]


def test_json_shape():
    c = compare(["single", "self_consistency-3"], problems=4, seed=3, budget=2)
    data = json.loads(json.dumps(c.to_json()))
    assert set(data) >= {"task", "n_problems", "seed", "budget", "confidence", "n_boot", "strategies", "pairs"}
    assert (data["n_problems"], data["seed"], data["budget"], data["n_boot"]) == (4, 3, 2, 1000)
    first, second = data["strategies"]
    assert set(first) >= {"spec", "accuracy", "ci", "tokens_per_problem", "over_budget", "beats", "correct", "tokens"}
    assert second["accuracy"] == 0.75 and second["tokens_per_problem"] == 3.25 and second["over_budget"] is True
    assert len(first["ci"]) == 2 and first["correct"] == [True, False, False, False]
    (pair,) = data["pairs"]
    assert set(pair) == {"a", "b", "difference", "ci", "significant", "winner"}


def test_plot_writes_a_png(tmp_path):
    c = compare(["single", "self_consistency-3"], problems=4, budget=2)
    out = c.plot(tmp_path / "sub" / "frontier.png")
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_temperature_reaches_every_strategy_with_the_task_budget():
    policy = Scripted(SAMPLES)
    task = make_task(PROBLEMS)
    compare_strategies(policy, task, ["single", "self_consistency-3"], problems=4, temperature=0.7)
    assert [p.temperature for p in policy.calls] == [0.7, 0.7]
    assert {(p.max_new_tokens, p.stop) for p in policy.calls} == {(task.max_new_tokens, task.stop)}
    default = Scripted(SAMPLES)
    compare_strategies(default, task, ["single"], problems=4)
    assert [p.temperature for p in default.calls] == [1.0]  # the strategies' own


def test_bad_arguments_fail_before_generating():
    with pytest.raises(CompareError, match="more than once"):
        compare(["single", "single"])
    with pytest.raises(CompareError):
        compare([])
    with pytest.raises(CompareError):
        compare(["single"], problems=0)
    with pytest.raises(CompareError, match="temperature"):
        compare(["single"], temperature=-1)
    with pytest.raises(StrategySpecError):
        compare(["single", "self_consistency-x"])


def test_cli_compare_end_to_end(tmp_path, tiny_model_dir, capsys):
    from sharpen.cli import main

    out, png = tmp_path / "cmp.json", tmp_path / "cmp.png"
    code = main(["compare", "--model", str(tiny_model_dir), "--task", "addition",
                 "--strategies", "single,self_consistency-4", "--problems", "4", "--budget", "1",
                 "--temperature", "0.7", "--json", str(out), "--plot", str(png)])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["task"] == "addition" and data["n_problems"] == 4
    assert [s["spec"] for s in data["strategies"]] == ["single", "self_consistency-4"]
    for s in data["strategies"]:
        assert len(s["correct"]) == 4 and s["accuracy"] == pytest.approx(sum(s["correct"]) / 4)
        assert s["tokens_per_problem"] == pytest.approx(sum(s["tokens"]) / 4) and s["tokens_per_problem"] > 0
        assert s["over_budget"] == (s["tokens_per_problem"] > 1)
    sc = data["strategies"][1]
    assert sc["tokens_per_problem"] > data["strategies"][0]["tokens_per_problem"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "single" in printed and "wrote" in printed


def test_cli_compare_bad_spec_is_a_clear_error(tiny_model_dir, capsys):
    from sharpen.cli import main

    code = main(["compare", "--model", str(tiny_model_dir), "--task", "addition",
                 "--strategies", "single,nonsense-3", "--problems", "2"])
    assert code == 1
    assert "unknown strategy" in capsys.readouterr().out
