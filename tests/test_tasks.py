"""Tasks: every task validates itself; splits, difficulty knobs, countdown, registry, user tasks."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from sharpen.tasks import (
    Problem,
    Task,
    TaskOptionError,
    UnknownTaskError,
    get_task,
    list_tasks,
    parse_number,
    register_task,
    registry,
    split_of,
)
from sharpen.tasks.arithmetic import column_sums, read_final
from sharpen.tasks.countdown import ExpressionError, check_expression, parse_expression, read_expression

DATA = Path(__file__).parent / "data"

SELF_CHECKS: dict[str, tuple[str, dict[str, Any]]] = {
    "addition": ("addition", {}),
    "addition-1digit": ("addition", {"digits": 1}),
    "addition-scratchpad-3digit": ("addition", {"digits": 3, "scratchpad": True}),
    "multiplication": ("multiplication", {}),
    "multiplication-3digit": ("multiplication", {"digits": 3}),
    "countdown": ("countdown", {}),
    "countdown-5numbers": ("countdown", {"numbers": 5, "max_number": 25}),
    "jsonl-gsm8k": ("jsonl", {"path": str(DATA / "gsm8k_small.jsonl")}),
    "jsonl-math": ("jsonl", {"path": str(DATA / "math_small.jsonl")}),
    "reasoning_gym-leg_counting": ("reasoning_gym", {"dataset": "leg_counting", "size": 30}),
    "reasoning_gym-basic_arithmetic": ("reasoning_gym", {"dataset": "basic_arithmetic", "size": 30}),
    "addition-chat-max20": ("addition", {"chat": True, "max_operand": 20}),
    "multiplication-chat": ("multiplication", {"digits": 2, "chat": True}),
    "countdown-chat": ("countdown", {"chat": True}),
    "jsonl-gsm8k-chat": ("jsonl", {"path": str(DATA / "gsm8k_small.jsonl"), "chat": True}),
    "jsonl-math-chat": ("jsonl", {"path": str(DATA / "math_small.jsonl"), "chat": True}),
    "gsm8k": ("gsm8k", {"data_dir": str(DATA / "gsm8k")}),
    "gsm8k-chat": ("gsm8k", {"data_dir": str(DATA / "gsm8k"), "chat": True}),
    "reasoning_gym-leg_counting-chat": ("reasoning_gym", {"dataset": "leg_counting", "size": 30, "chat": True}),
    "facts": ("facts", {}),
    "facts-chat": ("facts", {"chat": True, "people": 50, "seed": 3}),
}
PROCEDURAL = [("addition", {}), ("multiplication", {"digits": 3}), ("countdown", {"numbers": 4})]


def wrong_completion(problem: Problem) -> str:
    """A completion that cannot be right: the reference number plus one, or the expression plus one
    (a `facts` answer: its first known value replaced by another)."""
    assert problem.answer is not None
    if "values" in problem.metadata:
        from sharpen.tasks.facts import ATTRIBUTES

        first = problem.metadata["known"][0]
        true = problem.metadata["values"][first]
        other = next(v for v in ATTRIBUTES[first][1] if v != true)
        return problem.answer.replace(f"{ATTRIBUTES[first][0]} {true}", f"{ATTRIBUTES[first][0]} {other}", 1)
    number = parse_number(problem.answer)
    return str(number[0] + 1) if number else f"({problem.answer})+1"


def test_every_registered_task_is_self_checked() -> None:
    assert set(list_tasks()) == {name for name, _ in SELF_CHECKS.values()}


@pytest.mark.parametrize("case", sorted(SELF_CHECKS))
def test_task_validates_itself(case: str) -> None:
    name, options = SELF_CHECKS[case]
    task = get_task(name, **options)
    problems = task.problems("train", 25, 1) + task.problems("eval", 25, 1)
    assert problems
    assert task.solution is not None
    for problem in problems:
        gold = task.solution(problem)
        assert task.check(problem, gold).reward == 1.0, (problem, gold, task.check(problem, gold))
        assert task.extract(gold) is not None
        assert task.check(problem, str(problem.answer)).reward == 1.0, problem
        assert task.check(problem, wrong_completion(problem)).reward == 0.0, problem
        assert task.check(problem, "").reward == 0.0


@pytest.mark.parametrize("name, options", PROCEDURAL)
def test_splits_are_disjoint_deterministic_and_distinct(name: str, options: dict[str, Any]) -> None:
    task = get_task(name, **options)
    train, again = task.problems("train", 300, 7), task.problems("train", 300, 7)
    held_out = task.problems("eval", 100, 7)
    assert train == again
    assert [p.id for p in task.problems("train", 300, 8)] != [p.id for p in train]
    assert len({p.id for p in train}) == 300 and len({p.id for p in held_out}) == 100
    assert not {p.id for p in train} & {p.id for p in held_out}
    assert not {p.prompt for p in train} & {p.prompt for p in held_out}
    assert all(split_of(p.id) == "train" for p in train) and all(split_of(p.id) == "eval" for p in held_out)
    assert all(p.id == f"{name}/{p.prompt.rstrip('=:')}" for p in train)


def test_small_space_returns_every_problem_once() -> None:
    task = get_task("addition", digits=1)
    every = [f"addition/{a}+{b}" for a in range(1, 10) for b in range(1, 10)]
    for split in ("train", "eval"):
        got = [p.id for p in task.problems(split, 1000, 0)]
        assert sorted(got) == sorted(i for i in every if split_of(i) == split)
    assert len(task.problems("train", 1000, 0)) + len(task.problems("eval", 1000, 0)) == 81
    # countdown's space is unknown to it; sampling stops when draws bring nothing new.
    # From {1,1}: 1+1, 1*1 (=1/1); {1,2}: 1+2, 1*2 (=2/1), 2-1; {2,2}: 2+2 (=2*2), 2/2.
    tiny = get_task("countdown", numbers=2, max_number=2)
    found = {p.id for split in ("train", "eval") for p in tiny.problems(split, 10**6, 0)}
    assert found == {f"countdown/{c}" for c in ("1,1>2", "1,1>1", "1,2>3", "1,2>2", "1,2>1", "2,2>4", "2,2>1")}


def test_bad_split_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown split 'test'"):
        get_task("addition").problems("test", 5, 0)


def operands(prompt: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", prompt)]


def test_difficulty_knobs_change_operand_sizes() -> None:
    for digits in (1, 2, 3):
        for p in get_task("addition", digits=digits).problems("train", 50, 0):
            a, b = operands(p.prompt)
            assert re.fullmatch(rf"\d{{{digits}}}\+\d{{{digits}}}=", p.prompt)
            assert 10 ** (digits - 1) <= min(a, b) and max(a, b) < 10**digits
            assert p.answer == str(a + b)
    for p in get_task("multiplication", digits=3).problems("train", 50, 0):
        a, b = operands(p.prompt)
        assert re.fullmatch(r"\d{3}\*\d=", p.prompt) and 1 <= b <= 9 and p.answer == str(a * b)
    for p in get_task("countdown", numbers=5, max_number=25).problems("train", 50, 0):
        *given, target = operands(p.prompt)
        assert re.fullmatch(r"(\d+,){4}\d+>\d+:", p.prompt)
        assert len(given) == 5 and all(1 <= x <= 25 for x in given) and given == sorted(given) and target > 0


def test_addition_formats() -> None:
    problem = Problem(id="addition/37+58", prompt="37+58=", answer="95", metadata={"operands": (37, 58)})
    assert get_task("addition").solution(problem) == "95"
    assert get_task("addition", scratchpad=True).solution(problem) == "7+8=15,3+5+1=9|95"
    assert column_sums(99, 99) == "9+9=18,9+9+1=19"
    assert column_sums(40, 51) == "0+1=1,4+5=9"
    assert read_final("7+8=15,3+5+1=9|95") == "95"
    assert read_final("7+8=15,3+5+1=9|") is None
    assert read_final("the sum is 95") == "95"
    task = get_task("addition", scratchpad=True)
    assert task.check(problem, "7+8=15,3+5+1=9|96").reward == 0.0
    assert task.max_new_tokens >= len("7+8=15,3+5+1=9|95") and task.stop == ("\n",)


def test_multiplication_format() -> None:
    task = get_task("multiplication", digits=2)
    every = task.problems("train", 10**4, 0) + task.problems("eval", 10**4, 0)
    problem = next(p for p in every if p.id == "multiplication/37*8")
    assert (problem.prompt, problem.answer, task.solution(problem)) == ("37*8=", "296", "296")


COUNTDOWN = Problem(
    id="countdown/3,5,7>22", prompt="3,5,7>22:", answer="3*5+7", metadata={"numbers": [3, 5, 7], "target": 22}
)


@pytest.mark.parametrize(
    "text, correct",
    [
        ("3*5+7", True),
        (" 7 + 5*3 ", True),
        ("3*5+7=22", True),
        ("(7+5)*3-14", False),  # 14 is not given
        ("3*5+7+7-7", False),  # 7 is given once
        ("7*3+1", False),  # 1 is not given
        ("3*(5+7)", False),  # 36
        ("22", False),
        ("", False),
    ],
)
def test_countdown_checker(text: str, correct: bool) -> None:
    assert check_expression(COUNTDOWN, text).correct is correct


def test_countdown_uses_exact_fractions() -> None:
    problem = Problem(id="countdown/1,3,4,6>24", prompt="1,3,4,6>24:", metadata={"numbers": [1, 3, 4, 6], "target": 24})
    assert check_expression(problem, "6/(1-3/4)").correct is True
    assert parse_expression("7/2") == (Fraction(7, 2), [7, 2])
    assert parse_expression("2*(3+4)-1") == (Fraction(13), [2, 3, 4, 1])


def test_countdown_reuse_note_names_the_number() -> None:
    verdict = check_expression(COUNTDOWN, "3*5+7+7-7")
    assert verdict.note == "uses numbers not given: [7, 7]"


@pytest.mark.parametrize("text", ["__import__('os').system('touch pwned')", "7/0", "((3+5)", "3+-5", "3**5", "1e3"])
def test_countdown_rejects_what_does_not_parse(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExpressionError):
        parse_expression(text)
    assert read_expression(text) is None
    verdict = check_expression(COUNTDOWN, text)
    assert verdict.correct is False and verdict.answer is None
    assert not (tmp_path / "pwned").exists()


def test_unknown_task_lists_known_names() -> None:
    with pytest.raises(UnknownTaskError) as info:
        get_task("additoin")
    assert isinstance(info.value, KeyError)
    message = str(info.value)
    assert "'additoin'" in message and all(name in message for name in list_tasks())


@pytest.mark.parametrize(
    "name, options, words",
    [
        ("addition", {"digit": 3}, ["'addition'", "'digit'", "digits, scratchpad"]),
        ("addition", {"digits": 0}, ["'addition'", "'digits'", ">= 1"]),
        ("countdown", {"numbers": "3"}, ["'countdown'", "'numbers'"]),
        ("jsonl", {}, ["'jsonl'", "'path'"]),
        ("jsonl", {"path": "no/such/file.jsonl"}, ["'jsonl'", "'path'", "no/such/file.jsonl"]),
        ("reasoning_gym", {}, ["'reasoning_gym'", "'dataset'"]),
        ("reasoning_gym", {"dataset": "leg_countin"}, ["'reasoning_gym'", "'leg_countin'", "leg_counting"]),
    ],
)
def test_bad_option_names_task_and_option(name: str, options: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(TaskOptionError) as info:
        get_task(name, **options)
    assert all(word in str(info.value) for word in words), str(info.value)


def test_register_task_as_function_and_decorator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    fixed = get_task("addition", digits=1)

    @register_task("tiny")
    def tiny(digits: int = 1) -> Task:
        return get_task("addition", digits=digits)

    register_task("fixed", lambda: fixed)
    assert {"tiny", "fixed"} <= set(list_tasks())
    assert get_task("tiny").problems("train", 3, 0) == fixed.problems("train", 3, 0)
    assert get_task("fixed") is fixed
    with pytest.raises(ValueError, match="already registered"):
        register_task("tiny", lambda: fixed)


def docstring_example() -> str:
    import sharpen.tasks

    doc = sharpen.tasks.__doc__ or ""
    return doc.split("```python\n", 1)[1].split("```", 1)[0]


def test_user_task_from_a_file_and_a_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = docstring_example()
    assert 10 <= len(source.strip().splitlines()) <= 20
    (tmp_path / "my_task.py").write_text(source + "\nTASK = make_task(10)\n")

    task = get_task(f"{tmp_path / 'my_task.py'}:make_task", max_value=30)
    assert task.name == "double"
    train, held_out = task.problems("train", 100, 0), task.problems("eval", 100, 0)
    assert len(train) + len(held_out) == 30 and not {p.id for p in train} & {p.id for p in held_out}
    problem = train[0]
    assert task.check(problem, str(problem.answer)).reward == 1.0
    assert task.check(problem, f"so 2 times it is {int(str(problem.answer)) + 2}").reward == 0.0

    fixed = get_task(f"{tmp_path / 'my_task.py'}:TASK")
    assert len(fixed.problems("train", 100, 0) + fixed.problems("eval", 100, 0)) == 10
    with pytest.raises(TaskOptionError, match="takes no options"):
        get_task(f"{tmp_path / 'my_task.py'}:TASK", max_value=3)
    with pytest.raises(TaskOptionError, match="has no option 'maximum'"):
        get_task(f"{tmp_path / 'my_task.py'}:make_task", maximum=3)

    monkeypatch.syspath_prepend(str(tmp_path))
    assert get_task("my_task:make_task", max_value=5).name == "double"


@pytest.mark.parametrize(
    "spec, words",
    [
        ("missing_dir/my_task.py:make_task", ["not found", "missing_dir/my_task.py"]),
        ("sharpen_no_such_module:make_task", ["no module", "sharpen_no_such_module"]),
        ("sharpen.tasks.arithmetic:no_such_factory", ["no attribute", "no_such_factory"]),
    ],
)
def test_bad_user_task_spec(spec: str, words: list[str]) -> None:
    with pytest.raises(UnknownTaskError) as info:
        get_task(spec)
    assert all(word in str(info.value) for word in words), str(info.value)


def test_strict_reading_refuses_broken_completions():
    from sharpen.tasks import get_task

    strict, lenient = get_task("addition"), get_task("addition", strict=False)
    problem = strict.problems("eval", 1, 0)[0]
    right = problem.answer
    assert strict.check(problem, f" {right}\n").correct is True
    for broken in (f"{right}y", f"{right[:2]}no", f"sum {right}", ""):
        assert strict.extract(broken) is None
        assert strict.check(problem, broken).correct is False
    assert lenient.check(problem, f"sum {right}").correct is True
    assert get_task("addition", scratchpad=True).extract("7+8=15,3+5+1=9|95") == "95"
    assert get_task("addition", scratchpad=True).extract("7+8=15,3+5+1=9|95x") is None
