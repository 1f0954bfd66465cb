"""Tasks for instruct models: chat prompts that state the answer format, answers read from
chatty text, GSM8K's calculator annotations, and the `gsm8k` task with its test split held out."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sharpen.tasks import TaskDataError, TaskOptionError, get_task
from sharpen.tasks import gsm8k as gsm8k_module
from sharpen.tasks.answers import strip_calculator_annotations
from sharpen.tasks.countdown import read_chat_expression

DATA = Path(__file__).parent / "data"
GSM8K_FIXTURE = DATA / "gsm8k"  # 12 train and 6 test rows of the real files (MIT, LICENSE beside them)


def test_chat_addition_asks_in_words_and_keeps_the_terse_problems_and_splits():
    chat, terse = get_task("addition", chat=True), get_task("addition")
    for split in ("train", "eval"):
        asked, plain = chat.problems(split, 20, 3), terse.problems(split, 20, 3)
        assert [p.id for p in asked] == [p.id for p in plain]
        a, b = asked[0].metadata["operands"]
        assert asked[0].prompt == f"What is {a} + {b}? Reply with only the number."
    assert chat.max_new_tokens == 16 and terse.max_new_tokens == 5


@pytest.mark.parametrize("text", ["The answer is 22.", "7 + 15 = 22", "#### 22", "\\boxed{22}", "22 dollars",
                                  "Sure! 7 plus 15 is 22."])
def test_chat_addition_reads_chatty_answers_the_terse_task_refuses(text):
    chat, terse = get_task("addition", chat=True, max_operand=20), get_task("addition", max_operand=20)
    problem = next(p for p in chat.problems("train", 400, 0) if p.id == "addition/7+15")
    assert chat.check(problem, text).reward == 1.0
    assert terse.check(problem, text).reward == 0.0  # strict: a bare integer only
    assert chat.check(problem, "The answer is 23.").reward == 0.0


def test_max_operand_draws_every_pair_from_1_to_max_once():
    task = get_task("addition", max_operand=20)
    problems = task.problems("train", 1000, 0) + task.problems("eval", 1000, 0)
    pairs = {p.metadata["operands"] for p in problems}
    assert len(problems) == len(pairs) == 400
    assert {a for a, _ in pairs} == set(range(1, 21))
    assert task.max_new_tokens == 4  # "40" and room to stop


def test_chat_multiplication_prompt():
    problem = get_task("multiplication", chat=True).problems("train", 1, 0)[0]
    a, b = problem.metadata["operands"]
    assert problem.prompt == f"What is {a} × {b}? Reply with only the number."


@pytest.mark.parametrize("name, options, words", [
    ("addition", {"chat": True, "scratchpad": True}, ["addition", "scratchpad", "chat"]),
    ("addition", {"chat": "yes"}, ["addition", "'chat'", "true or false"]),
    ("addition", {"max_operand": 0}, ["addition", "'max_operand'", ">= 1"]),
    ("countdown", {"chat": 1}, ["countdown", "'chat'"]),
])
def test_bad_chat_options_name_task_and_option(name, options, words):
    with pytest.raises(TaskOptionError) as err:
        get_task(name, **options)
    assert all(w in str(err.value) for w in words), str(err.value)


@pytest.mark.parametrize("text, expression", [
    ("3*5+7", "3*5+7"),
    ("You can write 3*5 + 7 = 22.", "3*5+7"),
    ("The expression is $(3 + 5) * 7$", "(3+5)*7"),
    ("\\boxed{3*5+7}", "3*5+7"),
    ("First 3 - 1 = 2, so: 3*5+7", "3*5+7"),
    ("step-by-step, no numbers here", None),
    ("just 22", None),
])
def test_chat_countdown_reads_the_last_expression(text, expression):
    assert read_chat_expression(text) == expression


def test_chat_countdown_prompt_and_check():
    task = get_task("countdown", chat=True)
    problem = task.problems("train", 1, 0)[0]
    numbers, target = problem.metadata["numbers"], problem.metadata["target"]
    assert problem.prompt.startswith(f"Using the numbers {', '.join(map(str, numbers))}, each at most once")
    assert f"equal to {target}. Reply with only the expression." in problem.prompt
    assert task.check(problem, f"Sure: {problem.answer} = {target}.").reward == 1.0


def test_calculator_annotations_are_stripped_from_gsm8k_gold():
    assert strip_calculator_annotations("48/2 = <<48/2=24>>24 clips") == "48/2 = 24 clips"
    assert strip_calculator_annotations("a << b and c >> d") == "a << b and c >> d"  # not an annotation
    task = get_task("jsonl", path=str(DATA / "gsm8k_small.jsonl"))
    pencils = next(p for p in task.problems("train", 100, 0) + task.problems("eval", 100, 0)
                   if p.prompt.startswith("A school buys"))
    assert task.solution(pencils) == "1,000 + 234 = 1,234 pencils.\n#### 1,234"


def test_chat_jsonl_states_the_format_per_row_kind_and_keeps_splits():
    for name, instruction in (("gsm8k_small.jsonl", 'End your reply with "The answer is N."'),
                              ("math_small.jsonl", "Put your final answer in \\boxed{}.")):
        chat, plain = get_task("jsonl", path=str(DATA / name), chat=True), get_task("jsonl", path=str(DATA / name))
        for split in ("train", "eval"):
            asked, bare = chat.problems(split, 100, 0), plain.problems(split, 100, 0)
            assert [p.id for p in asked] == [p.id for p in bare]
            for p, q in zip(asked, bare):
                assert p.prompt.startswith(q.prompt + "\n\n") and instruction in p.prompt


def test_gsm8k_trains_on_train_and_evaluates_on_test_only():
    task = get_task("gsm8k", data_dir=str(GSM8K_FIXTURE))
    train, held_out = task.problems("train", 100, 0), task.problems("eval", 100, 0)
    assert task.name == "gsm8k" and len(train) == 12 and len(held_out) == 6
    assert all(p.id.startswith("gsm8k/train.jsonl:") for p in train)
    assert all(p.id.startswith("gsm8k/test.jsonl:") for p in held_out)
    natalia = next(p for p in train if p.prompt.startswith("Natalia sold clips"))
    assert natalia.answer == "72" and "<<" not in task.solution(natalia)
    assert task.check(natalia, "She sold 48 + 24 = 72 clips. The answer is 72.").reward == 1.0
    assert task.check(natalia, "#### 71").reward == 0.0


def test_gsm8k_drops_train_questions_that_are_in_the_test_file(tmp_path):
    copy = tmp_path / "gsm8k"
    shutil.copytree(GSM8K_FIXTURE, copy)
    test_row = (copy / "test.jsonl").read_text().splitlines()[0]
    with (copy / "train.jsonl").open("a") as f:
        f.write(test_row + "\n")
    task = get_task("gsm8k", data_dir=str(copy))
    held_out = {p.prompt for p in task.problems("eval", 100, 0)}
    train = task.problems("train", 100, 0)
    assert len(train) == 12 and not held_out & {p.prompt for p in train}


def test_gsm8k_data_dir_from_the_environment_and_the_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv(gsm8k_module.DATA_ENV, str(GSM8K_FIXTURE))
    assert len(get_task("gsm8k").problems("eval", 100, 0)) == 6
    monkeypatch.delenv(gsm8k_module.DATA_ENV)
    monkeypatch.setattr(gsm8k_module, "GSM8K_DIRS", (tmp_path / "nowhere", GSM8K_FIXTURE))
    assert len(get_task("gsm8k").problems("train", 100, 0)) == 12


def test_missing_gsm8k_data_is_a_clear_error_naming_the_paths(monkeypatch, tmp_path):
    monkeypatch.delenv(gsm8k_module.DATA_ENV, raising=False)
    monkeypatch.setattr(gsm8k_module, "GSM8K_DIRS", (tmp_path / "a", tmp_path / "b"))
    with pytest.raises(TaskDataError) as err:
        get_task("gsm8k")
    message = str(err.value)
    assert f"{tmp_path / 'a'} (default): no such folder" in message and str(tmp_path / "b") in message
    assert "data_dir=PATH" in message and gsm8k_module.DATA_ENV in message
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(GSM8K_FIXTURE / "train.jsonl", half / "train.jsonl")
    with pytest.raises(TaskDataError, match=r"half \(option 'data_dir'\): missing test.jsonl"):
        get_task("gsm8k", data_dir=str(half))
    monkeypatch.setenv(gsm8k_module.DATA_ENV, str(tmp_path / "env"))
    with pytest.raises(TaskDataError, match=rf"env \(\${gsm8k_module.DATA_ENV}\): no such folder"):
        get_task("gsm8k")


def test_cli_reports_missing_gsm8k_data_without_a_traceback(monkeypatch, tmp_path, capsys):
    from sharpen.cli import main

    assert main(["eval", "--task", "gsm8k", "--task-option", f"data_dir={tmp_path / 'gone'}"]) == 1  # sharpen's own error: exit status 1
    out = capsys.readouterr().out
    assert "no GSM8K data found" in out and "gone" in out


@pytest.mark.slow
def test_gsm8k_reads_the_shared_copy_whole():
    """The real files (wherever the defaults find them): 7,473 train and 1,319 test problems."""
    task = get_task("gsm8k")
    train, held_out = task.problems("train", 10_000, 0), task.problems("eval", 10_000, 0)
    assert len(held_out) == 1319 and 7400 < len(train) <= 7473
    assert all(task.check(p, task.solution(p)).reward == 1.0 for p in train + held_out)
