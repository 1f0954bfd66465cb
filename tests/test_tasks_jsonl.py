"""The JSONL task: references, gold completions, splits, and errors that name file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sharpen.tasks import TaskDataError, TaskOptionError, get_task, split_of

DATA = Path(__file__).parent / "data"


def everything(task) -> list:
    return task.problems("train", 1000, 0) + task.problems("eval", 1000, 0)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows))
    return path


def test_gsm8k_references_and_gold() -> None:
    task = get_task("jsonl", path=str(DATA / "gsm8k_small.jsonl"))
    by_line = {p.id: p for p in everything(task)}
    assert task.name == "gsm8k_small" and len(by_line) == 6  # the blank line 3 is skipped
    assert sorted(by_line) == [f"gsm8k_small/gsm8k_small.jsonl:{n}" for n in (1, 2, 4, 5, 6, 7)]
    pencils = by_line["gsm8k_small/gsm8k_small.jsonl:2"]
    assert pencils.prompt.startswith("A school buys 1,000 pencils")
    assert pencils.answer == "1234"
    assert task.solution(pencils).endswith("#### 1,234")
    assert [by_line[f"gsm8k_small/gsm8k_small.jsonl:{n}"].answer for n in (5, 6, 7)] == ["-7", "3.75", "42"]
    assert task.solution(by_line["gsm8k_small/gsm8k_small.jsonl:7"]) == "\\boxed{42}"
    assert task.check(pencils, "1,000 + 234 = 1,234 pencils.").reward == 1.0
    assert task.check(pencils, "The answer is $1,235.").reward == 0.0


def test_math_references_and_gold() -> None:
    task = get_task("jsonl", path=str(DATA / "math_small.jsonl"), format="math")
    answers = {int(p.id.rsplit(":", 1)[1]): p.answer for p in everything(task)}
    assert answers == {1: "1/2", 2: "7", 3: "x^2+1", 4: "90", 5: "\\left( 3, \\frac{\\pi}{2} \\right)", 6: "3/2"}
    by_line = {int(p.id.rsplit(":", 1)[1]): p for p in everything(task)}
    assert task.solution(by_line[4]) == "Half of $180$ degrees is $90$.\n\\boxed{90}"
    assert task.check(by_line[1], "so it is \\boxed{0.5}").reward == 1.0
    assert task.check(by_line[3], "\\boxed{1 + x^{2}}").reward == 1.0
    assert task.check(by_line[5], "\\boxed{(3, \\pi/2)}").reward == 1.0
    assert task.check(by_line[5], "\\boxed{(3, \\pi)}").reward == 0.0


def test_one_file_is_split_by_question_hash() -> None:
    task = get_task("jsonl", path=str(DATA / "gsm8k_small.jsonl"))
    for split in ("train", "eval"):
        assert all(split_of(p.prompt) == split for p in task.problems(split, 100, 0))
    assert task.problems("train", 3, 5) == task.problems("train", 3, 5)
    assert len(task.problems("train", 3, 5)) == min(3, len(task.problems("train", 100, 0)))


def test_two_files_are_the_splits_and_never_overlap(tmp_path: Path) -> None:
    shared = {"question": "What is 2+2?", "answer": "#### 4"}
    train = write_jsonl(tmp_path / "train.jsonl", [shared, {"question": "What is 3+3?", "answer": "#### 6"}, shared])
    held_out = write_jsonl(tmp_path / "test.jsonl", [shared, {"problem": "What is $1+1$?", "solution": "$\\boxed{2}$"}])
    task = get_task("jsonl", train_path=str(train), eval_path=str(held_out))
    assert task.name == "train"
    assert [p.prompt for p in task.problems("train", 10, 0)] == ["What is 3+3?"]
    assert sorted(p.answer for p in task.problems("eval", 10, 0)) == ["2", "4"]  # formats mixed per line


def test_repeated_questions_are_kept_once(tmp_path: Path) -> None:
    row = {"question": "What is 2+2?", "answer": "#### 4"}
    task = get_task("jsonl", path=str(write_jsonl(tmp_path / "dup.jsonl", [row, row, row])))
    assert len(everything(task)) == 1


@pytest.mark.parametrize(
    "rows, line, what",
    [
        ([{"question": "q", "answer": "#### 1"}, "\n", "{not json\n"], 3, "not valid JSON"),
        (["[1, 2]\n"], 1, "expected a JSON object"),
        ([{"question": "q", "answer": "#### 1"}, {"question": "q2"}], 2, "missing field 'answer'"),
        ([{"question": "", "answer": "#### 1"}], 1, "field 'question' must be a non-empty string"),
        ([{"question": "q", "answer": "step one\nstep two"}], 1, "no final '#### <answer>' line"),
        ([{"question": "q", "answer": "so\n####  "}], 1, "nothing after '####'"),
        ([{"problem": "p", "solution": "no box here"}], 1, "no \\boxed{...} answer"),
        ([{"problem": "p"}], 1, "needs an 'answer' field"),
        ([{"text": "hello"}], 1, "cannot tell the format"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path: Path, rows: list, line: int, what: str) -> None:
    path = write_jsonl(tmp_path / "broken.jsonl", rows)
    with pytest.raises(TaskDataError) as info:
        get_task("jsonl", path=str(path))
    message = str(info.value)
    assert f"broken.jsonl, line {line}:" in message and what in message, message


def test_fixed_format_is_enforced(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "gsm.jsonl", [{"question": "q", "answer": "#### 1"}])
    with pytest.raises(TaskDataError, match=r"gsm.jsonl, line 1: missing field 'problem'"):
        get_task("jsonl", path=str(path), format="math")
    with pytest.raises(TaskOptionError, match="'format'"):
        get_task("jsonl", path=str(path), format="csv")
    with pytest.raises(TaskOptionError, match="either option 'path', or both"):
        get_task("jsonl", path=str(path), eval_path=str(path))
