"""evaluate() with a scripted policy and a tiny task; every number checked by hand."""

import json
from typing import Optional

import pytest
from rich.console import Console

from sharpen.evaluation import EvalResult, evaluate
from sharpen.models.base import Completion, SamplingParams
from sharpen.seeds import derive_seed
from sharpen.tasks.base import Problem, Task, Verdict

PROBLEMS = [
    Problem(id="a", prompt="A?", answer="1"),
    Problem(id="b", prompt="B?", answer="5"),
    Problem(id="c", prompt="C?", answer="7"),
]
SCRIPT = {  # prompt -> the 4 completion texts the fake policy returns
    "A?": ["1", "1", "2", "1"],
    "B?": ["3", "5", "3", ""],
    "C?": ["?", "7", "?", "?"],  # "?" is unscorable and unreadable
}


def extract(text: str) -> Optional[str]:
    return text.strip() if text.strip() not in ("", "?") else None


def check(problem: Problem, text: str) -> Verdict:
    if text == "?":
        return Verdict(correct=None, note="cannot tell")
    answer = extract(text)
    return Verdict(correct=answer == problem.answer, answer=answer)


class FakeTask:
    """Builds a Task whose problems() call is recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.task = Task(
            name="fake", problems=self.problems, check=check, extract=extract, max_new_tokens=5, stop=("\n",)
        )

    def problems(self, split: str, n: int, seed: int) -> list[Problem]:
        self.calls.append((split, n, seed))
        return PROBLEMS[:n]


class ScriptedPolicy:
    """Returns SCRIPT's texts; one token per character; records every call."""

    def __init__(self, per_prompt: Optional[int] = None) -> None:
        self.calls: list[tuple[list, SamplingParams]] = []
        self.per_prompt = per_prompt

    def generate(self, prompts, params: SamplingParams) -> list[list[Completion]]:
        self.calls.append((list(prompts), params))
        groups = []
        for p in prompts:
            texts = SCRIPT[p][: self.per_prompt or params.n]
            groups.append(
                [Completion(t, tuple(range(len(t))), tuple(0.0 for _ in t), "stop") for t in texts]
            )
        return groups


def run(**kwargs) -> tuple[EvalResult, ScriptedPolicy, FakeTask]:
    policy, fake = ScriptedPolicy(), FakeTask()
    args = dict(n_problems=3, samples=4, ks=(1, 2, 4, 8), seed=10, batch_size=2, progress=False)
    args.update(kwargs)
    return evaluate(policy, fake.task, **args), policy, fake


def test_metric_values_by_hand():
    result, _, _ = run()
    values = {name: m.value for name, m in result.metrics.items()}
    # k=8 > samples=4 is skipped; maj@k only for k > 1
    assert list(values) == ["accuracy", "pass@1", "pass@2", "pass@4", "maj@2", "maj@4"]
    # per problem accuracy: a 3/4, b 1/4, c 1/4 (unscorable counts as not correct)
    assert values["accuracy"] == pytest.approx((0.75 + 0.25 + 0.25) / 3)
    assert values["pass@1"] == pytest.approx(values["accuracy"])
    # pass@2: a 1 - C(1,2)/C(4,2) = 1; b, c 1 - C(3,2)/C(4,2) = 1/2
    assert values["pass@2"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert values["pass@4"] == pytest.approx(1.0)
    # maj@2 chunks: a [1,1]✓ [2,1] tie→"2"✗; b [3,5] tie→"3"✗ [3,None]→"3"✗;
    #               c [None,7]→"7"✓ [None,None]✗
    assert values["maj@2"] == pytest.approx((0.5 + 0.0 + 0.5) / 3)
    # maj@4: a "1"✓, b "3"✗, c "7"✓
    assert values["maj@4"] == pytest.approx(2 / 3)
    assert result.tokens_per_problem == pytest.approx((4 + 3 + 4) / 3)
    assert result.unscorable == 3
    assert (result.n_problems, result.samples) == (3, 4)
    for m in result.metrics.values():
        assert m.ci[0] <= m.value <= m.ci[1]


def test_calls_task_and_policy_as_documented():
    _, policy, fake = run()
    assert fake.calls == [("eval", 3, 10)]
    assert [prompts for prompts, _ in policy.calls] == [["A?", "B?"], ["C?"]]
    first, second = policy.calls[0][1], policy.calls[1][1]
    seed = derive_seed(10, "eval", 0)
    assert first == SamplingParams(n=4, temperature=1.0, top_p=1.0, max_new_tokens=5, stop=("\n",), seed=seed,
                                   prompt_seeds=(derive_seed(seed, "prompt", 0), derive_seed(seed, "prompt", 1)))
    assert second.seed == derive_seed(10, "eval", 1)
    assert second.prompt_seeds == (derive_seed(second.seed, "prompt", 0),)  # each problem's group, its own seed
    _, policy, _ = run(max_new_tokens=9, temperature=0.5, top_p=0.9, split="train")
    params = policy.calls[0][1]
    assert (params.max_new_tokens, params.temperature, params.top_p) == (9, 0.5, 0.9)


def test_problem_records():
    result, _, _ = run()
    b = result.problems[1]
    assert b.problem_id == "b" and b.prompt == "B?"
    assert b.completions == ("3", "5", "3", "")
    assert b.answers == ("3", "5", "3", None)
    assert b.correct == (False, True, False, False)
    assert b.tokens == 3
    assert result.problems[2].correct == (None, True, None, None)


def test_to_json_and_table():
    result, _, _ = run(progress=True)
    out = result.to_json()
    assert out["metrics"]["maj@4"]["value"] == pytest.approx(2 / 3)
    assert len(out["metrics"]["pass@2"]["ci"]) == 2
    assert out["tokens_per_problem"] == pytest.approx(11 / 3)
    assert out["unscorable"] == 3 and out["n_problems"] == 3 and out["samples"] == 4
    assert "problems" not in out
    full = json.loads(json.dumps(result.to_json(include_problems=True)))
    assert full["problems"][2]["correct"] == [None, True, None, None]

    console = Console(record=True, width=100)
    console.print(result.table("fake task"))
    text = console.export_text()
    for word in ("fake task", "accuracy", "maj@4", "95% CI", "tokens / problem", "3.7", "3 unscorable"):
        assert word in text


def test_wrong_group_size_is_an_error():
    fake = FakeTask()
    with pytest.raises(ValueError, match="3 completions for prompt 0, asked for n=4"):
        evaluate(ScriptedPolicy(per_prompt=3), fake.task, n_problems=3, samples=4, progress=False)


def test_no_problems_is_an_error():
    fake = FakeTask()
    with pytest.raises(ValueError, match="no problems"):
        evaluate(ScriptedPolicy(), fake.task, n_problems=0, progress=False)
