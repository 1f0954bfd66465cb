"""The reasoning-gym adapter: entries, scoring by the dataset, splits, extraction, missing package."""

from __future__ import annotations

import sys

import pytest

from sharpen.tasks import get_task, split_of
from sharpen.tasks.reasoning_gym import read_final_answer


def test_leg_counting_entries_and_scoring() -> None:
    task = get_task("reasoning_gym", dataset="leg_counting", size=40, seed=3)
    assert task.name == "reasoning_gym/leg_counting"
    train, held_out = task.problems("train", 100, 0), task.problems("eval", 100, 0)
    assert len(train) + len(held_out) == 40 and held_out
    assert not {p.prompt for p in train} & {p.prompt for p in held_out}
    assert all(split_of(p.prompt) == "eval" for p in held_out)
    problem = train[0]
    entry = problem.metadata["entry"]
    assert entry["question"] == problem.prompt and entry["answer"] == problem.answer
    assert problem.answer == str(entry["metadata"]["total_legs"])
    assert task.check(problem, f"Counting legs...\nAnswer: {problem.answer}").reward == 1.0
    assert task.check(problem, f"<answer>{int(problem.answer) + 2}</answer>").reward == 0.0
    assert task.problems("train", 5, 1) == task.problems("train", 5, 1)


def test_dataset_config_is_passed_through() -> None:
    task = get_task("reasoning_gym", dataset="basic_arithmetic", size=20, config={"min_terms": 2, "max_terms": 2})
    for problem in task.problems("train", 20, 0):
        assert problem.metadata["entry"]["metadata"]["num_terms"] == 2


@pytest.mark.parametrize(
    "text, expected",
    [
        ("I think\n<answer>42</answer>\nbye", "42"),
        ("<answer>1</answer> no wait <answer>\n 2 \n</answer>", "2"),
        ("<answer>a\nb</answer>", "a\nb"),
        ("Working...\nFinal answer: 17\n", "17"),
        ("thinking\n\n   12  \n\n", "12"),
        ("   ", None),
    ],
)
def test_read_final_answer(text: str, expected: str | None) -> None:
    assert read_final_answer(text) == expected


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # makes `import reasoning_gym` fail
    with pytest.raises(ImportError, match=r"pip install 'sharpen\[reasoning-gym\]'"):
        get_task("reasoning_gym", dataset="leg_counting")
