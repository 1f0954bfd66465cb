"""Addition and multiplication of whole numbers, as short ASCII prompts for tiny models.

    addition        digits=2                  "37+58="  →  "95"
    addition        digits=2, scratchpad=True "37+58="  →  "7+8=15,3+5+1=9|95"
    multiplication  digits=2                  "37*8="   →  "296"

The scratchpad lists each column's sum from right to left, written "x+y=s", with "+1" when a
carry comes in from the previous column; "|" then introduces the answer.
"""

from __future__ import annotations

import random
import re
from typing import Callable, Optional

from sharpen.tasks.answers import answer_verdict, extract_number
from sharpen.tasks.base import Problem, Task, Verdict
from sharpen.tasks.errors import check_int_option
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


def make_reader(strict: bool) -> Callable[[str], Optional[str]]:
    return read_strict if strict else read_final


def make_checker(read: Callable[[str], Optional[str]]) -> Callable[[Problem, str], Verdict]:
    def check(problem: Problem, text: str) -> Verdict:
        """Compare the completion's final number with the reference answer."""
        return answer_verdict(read(text), problem.answer)

    return check


@register_task("addition")
def addition(digits: int = 2, scratchpad: bool = False, strict: bool = True) -> Task:
    """a+b with both operands of exactly `digits` digits; optionally a column-sum scratchpad.
    `strict` accepts only well-formed answers (see `read_strict`); False reads the last number
    anywhere in the text, for chatty models."""
    check_int_option("addition", "digits", digits, minimum=1)
    span = 9 * 10 ** (digits - 1)  # how many numbers have exactly `digits` digits

    def draw(rng: random.Random) -> Problem:
        a, b = operand(rng, digits), operand(rng, digits)
        return Problem(id=f"addition/{a}+{b}", prompt=f"{a}+{b}=", answer=str(a + b), metadata={"operands": (a, b)})

    def problems(split: str, n: int, seed: int) -> list[Problem]:
        return sample_distinct(draw, split, n, seed, space=span * span)

    def solution(problem: Problem) -> str:
        a, b = problem.metadata["operands"]
        return f"{column_sums(a, b)}|{a + b}" if scratchpad else str(a + b)

    return Task(
        name="addition",
        problems=problems,
        check=make_checker(make_reader(strict)),
        extract=make_reader(strict),
        description=f"{digits}-digit addition" + (" with a column-sum scratchpad" if scratchpad else ""),
        max_new_tokens=10 * digits + 4 if scratchpad else digits + 3,
        stop=("\n",),
        solution=solution,
    )


@register_task("multiplication")
def multiplication(digits: int = 1, strict: bool = True) -> Task:
    """a*b with `a` of exactly `digits` digits and `b` a single digit 1-9; `strict` as in addition."""
    check_int_option("multiplication", "digits", digits, minimum=1)

    def draw(rng: random.Random) -> Problem:
        a, b = operand(rng, digits), operand(rng, 1)
        return Problem(
            id=f"multiplication/{a}*{b}", prompt=f"{a}*{b}=", answer=str(a * b), metadata={"operands": (a, b)}
        )

    def problems(split: str, n: int, seed: int) -> list[Problem]:
        return sample_distinct(draw, split, n, seed, space=9 * 10 ** (digits - 1) * 9)

    def solution(problem: Problem) -> str:
        a, b = problem.metadata["operands"]
        return str(a * b)

    return Task(
        name="multiplication",
        problems=problems,
        check=make_checker(make_reader(strict)),
        extract=make_reader(strict),
        description=f"{digits}-digit by 1-digit multiplication",
        max_new_tokens=digits + 3,
        stop=("\n",),
        solution=solution,
    )
