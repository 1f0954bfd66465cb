"""Addition and multiplication of whole numbers, as short ASCII prompts for tiny models.

    addition        digits=2                  "37+58="  →  "95"
    addition        digits=2, scratchpad=True "37+58="  →  "7+8=15,3+5+1=9|95"
    multiplication  digits=2                  "37*8="   →  "296"
    addition        max_operand=20, chat=True "What is 7 + 15? Reply with only the number."  →  "22"

The terse prompts are the embedded model's formats. With `chat=True` the prompt is a question
in words that states the answer format (for instruct models), and the answer is read from
chatty text with `extract_number` ("The answer is 22.", "7 + 15 = 22", `\\boxed{22}`).
The scratchpad lists each column's sum from right to left, written "x+y=s", with "+1" when a
carry comes in from the previous column; "|" then introduces the answer.
"""

from __future__ import annotations

import random
import re
from typing import Callable, Optional

from sharpen.tasks.answers import answer_verdict, extract_number
from sharpen.tasks.base import Problem, Task, Verdict
from sharpen.tasks.errors import TaskOptionError, check_int_option
from sharpen.tasks.registry import register_task
from sharpen.tasks.splits import sample_distinct


def operand(rng: random.Random, digits: int) -> int:
    """A uniformly drawn number with exactly `digits` digits (1-9 for one digit)."""
    return rng.randint(10 ** (digits - 1), 10**digits - 1)


def column_sums(a: int, b: int) -> str:
    """The scratchpad of a+b: "7+8=15,3+5+1=9" for 37+58 (columns right to left)."""
    xs, ys = str(a).zfill(len(str(b)))[::-1], str(b).zfill(len(str(a)))[::-1]
    steps, carry = [], 0
    for x, y in zip(xs, ys, strict=True):
        total = int(x) + int(y) + carry
        steps.append(f"{x}+{y}{'+1' if carry else ''}={total}")
        carry = total // 10
    return ",".join(steps)


def read_final(text: str) -> Optional[str]:
    """The number after the last "|" (a scratchpad's answer) if there is one, else `extract_number`."""
    return extract_number(text.rsplit("|", 1)[1] if "|" in text else text)


def read_strict(text: str) -> Optional[str]:
    """The answer only if the completion is well formed: a bare integer, or a scratchpad whose
    part after the last "|" is a bare integer. "15y" or "sum: 15" read as no answer, so a
    label-free vote cannot reward a broken completion for sharing a prefix with others."""
    final = text.rsplit("|", 1)[1] if "|" in text else text
    return extract_number(final) if re.fullmatch(r"\s*-?\d+\s*", final) else None


CHAT_INSTRUCTION = "Reply with only the number."
"""The answer format a chat prompt states."""
CHAT_MAX_NEW_TOKENS = 16
"""The budget of a chat answer: room for "The answer is 1234." but not for an essay."""


def make_reader(strict: bool, chat: bool = False) -> Callable[[str], Optional[str]]:
    if chat:
        return extract_number
    return read_strict if strict else read_final


def make_checker(read: Callable[[str], Optional[str]]) -> Callable[[Problem, str], Verdict]:
    def check(problem: Problem, text: str) -> Verdict:
        """Compare the completion's final number with the reference answer."""
        return answer_verdict(read(text), problem.answer)

    return check


def check_chat_options(task: str, chat: bool, scratchpad: bool = False) -> None:
    if not isinstance(chat, bool):
        raise TaskOptionError(f"task {task!r}: option 'chat' must be true or false, got {chat!r}")
    if chat and scratchpad:
        raise TaskOptionError(f"task {task!r}: the scratchpad is a terse format; it cannot be combined with chat")


@register_task("addition")
def addition(digits: int = 2, scratchpad: bool = False, strict: bool = True, chat: bool = False,
             max_operand: Optional[int] = None) -> Task:
    """a+b with both operands of exactly `digits` digits, or drawn from 1..`max_operand` when
    given; optionally a column-sum scratchpad. `strict` accepts only well-formed answers (see
    `read_strict`); False reads the last number anywhere in the text. `chat` asks in words for
    only the number and reads it from chatty text (for instruct models)."""
    check_int_option("addition", "digits", digits, minimum=1)
    check_chat_options("addition", chat, scratchpad)
    if max_operand is not None:
        check_int_option("addition", "max_operand", max_operand, minimum=1)
    span = 9 * 10 ** (digits - 1) if max_operand is None else max_operand  # how many operands there are

    def draw(rng: random.Random) -> Problem:
        if max_operand is None:
            a, b = operand(rng, digits), operand(rng, digits)
        else:
            a, b = rng.randint(1, max_operand), rng.randint(1, max_operand)
        prompt = f"What is {a} + {b}? {CHAT_INSTRUCTION}" if chat else f"{a}+{b}="
        return Problem(id=f"addition/{a}+{b}", prompt=prompt, answer=str(a + b), metadata={"operands": (a, b)})

    def problems(split: str, n: int, seed: int) -> list[Problem]:
        return sample_distinct(draw, split, n, seed, space=span * span)

    def solution(problem: Problem) -> str:
        a, b = problem.metadata["operands"]
        return f"{column_sums(a, b)}|{a + b}" if scratchpad else str(a + b)

    size = f"operands 1-{max_operand}" if max_operand is not None else f"{digits}-digit"
    answer_digits = len(str(2 * max_operand)) if max_operand is not None else digits + 1
    return Task(
        name="addition",
        problems=problems,
        check=make_checker(make_reader(strict, chat)),
        extract=make_reader(strict, chat),
        description=f"{size} addition" + (" with a column-sum scratchpad" if scratchpad else "")
        + (" (chat prompt)" if chat else ""),
        max_new_tokens=CHAT_MAX_NEW_TOKENS if chat else 10 * digits + 4 if scratchpad else answer_digits + 2,
        stop=("\n",),
        solution=solution,
    )


@register_task("multiplication")
def multiplication(digits: int = 1, strict: bool = True, chat: bool = False) -> Task:
    """a*b with `a` of exactly `digits` digits and `b` a single digit 1-9; `strict` and `chat`
    as in addition."""
    check_int_option("multiplication", "digits", digits, minimum=1)
    check_chat_options("multiplication", chat)

    def draw(rng: random.Random) -> Problem:
        a, b = operand(rng, digits), operand(rng, 1)
        prompt = f"What is {a} × {b}? {CHAT_INSTRUCTION}" if chat else f"{a}*{b}="
        return Problem(id=f"multiplication/{a}*{b}", prompt=prompt, answer=str(a * b), metadata={"operands": (a, b)})

    def problems(split: str, n: int, seed: int) -> list[Problem]:
        return sample_distinct(draw, split, n, seed, space=9 * 10 ** (digits - 1) * 9)

    def solution(problem: Problem) -> str:
        a, b = problem.metadata["operands"]
        return str(a * b)

    return Task(
        name="multiplication",
        problems=problems,
        check=make_checker(make_reader(strict, chat)),
        extract=make_reader(strict, chat),
        description=f"{digits}-digit by 1-digit multiplication" + (" (chat prompt)" if chat else ""),
        max_new_tokens=CHAT_MAX_NEW_TOKENS if chat else digits + 3,
        stop=("\n",),
        solution=solution,
    )
