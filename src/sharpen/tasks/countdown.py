"""Countdown: reach a target from given numbers with + - * / and parentheses.

    numbers=3, max_number=10     "3,5,7>22:"  →  "3*5+7"

The prompt lists the numbers in ascending order, ">", the target and ":". The generator
builds a random expression that uses every number once, with positive whole intermediate
values, and takes its value as the target, so every problem has a solution (the gold
completion and the reference answer). A completion is correct iff its expression uses only
given numbers, each at most as often as given (not necessarily all of them), and its exact
rational value equals the target. Expressions are read by a small recursive-descent parser
over integers; nothing is ever evaluated as code.

With `chat=True` the prompt says the same in words, for instruct models ("Using the numbers
3, 5, 7, each at most once, and + - * / and parentheses, write an expression equal to 22.
Reply with only the expression."), and the expression is read from chatty text
(`read_chat_expression`).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Optional

from sharpen.tasks.base import Problem, Task, Verdict
from sharpen.tasks.errors import TaskOptionError, check_int_option
from sharpen.tasks.registry import register_task
from sharpen.tasks.splits import sample_distinct

MAX_EXPRESSION_CHARS = 200
"""Longer text is not parsed (it also bounds the parser's recursion depth)."""
_TOKEN_RE = re.compile(r"\d+|[-+*/()]|.")
_EXPRESSION_RUN_RE = re.compile(r"[\d\s+\-*/()]+")
CHAT_PROMPT = ("Using the numbers {numbers}, each at most once, and + - * / and parentheses, write an "
               "expression equal to {target}. Reply with only the expression.")


class ExpressionError(ValueError):
    """Text that is not an arithmetic expression over integers, or divides by zero."""


class _Parser:
    """expr := term (("+" | "-") term)* ; term := factor (("*" | "/") factor)* ;
    factor := integer | "(" expr ")"."""

    def __init__(self, text: str) -> None:
        self.tokens = _TOKEN_RE.findall(text)
        self.pos = 0
        self.numbers: list[int] = []

    def peek(self) -> Optional[str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise ExpressionError("expression ends too early")
        self.pos += 1
        return token

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            value = value + self.term() if self.take() == "+" else value - self.term()
        return value

    def term(self) -> Fraction:
        value = self.factor()
        while self.peek() in ("*", "/"):
            if self.take() == "*":
                value *= self.factor()
            else:
                divisor = self.factor()
                if divisor == 0:
                    raise ExpressionError("division by zero")
                value /= divisor
        return value

    def factor(self) -> Fraction:
        token = self.take()
        if token.isdigit():
            self.numbers.append(int(token))
            return Fraction(int(token))
        if token == "(":
            value = self.expr()
            if self.take() != ")":
                raise ExpressionError("missing ')'")
            return value
        raise ExpressionError(f"unexpected {token!r}")


def parse_expression(text: str) -> tuple[Fraction, list[int]]:
    """The exact value of an arithmetic expression and the numbers it uses, in order.

    Raises ExpressionError for anything but integers, + - * /, parentheses and spaces.
    """
    text = "".join(text.split())
    if not text or len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"expression must have 1 to {MAX_EXPRESSION_CHARS} characters")
    parser = _Parser(text)
    value = parser.expr()
    if parser.peek() is not None:
        raise ExpressionError(f"unexpected {parser.peek()!r}")
    return value, parser.numbers


@dataclass(frozen=True)
class _Node:
    """A generated expression: its text, value and precedence (3 number, 2 * /, 1 + -)."""

    text: str
    value: int
    precedence: int


def _combine(left: _Node, op: str, right: _Node) -> _Node:
    """left op right, with the parentheses the precedence rules need and no others."""
    precedence = 1 if op in "+-" else 2
    left_text = f"({left.text})" if left.precedence < precedence else left.text
    right_needs = right.precedence < precedence or (right.precedence == precedence and op in "-/")
    right_text = f"({right.text})" if right_needs else right.text
    a, b = left.value, right.value
    value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]  # b >= 1: every value is a positive integer
    return _Node(f"{left_text}{op}{right_text}", value, precedence)


def random_expression(numbers: list[int], rng: random.Random) -> _Node:
    """An expression using each of `numbers` once, every intermediate value a positive integer."""
    order = list(numbers)
    rng.shuffle(order)
    node = _Node(str(order[0]), order[0], 3)
    for x in order[1:]:
        leaf = _Node(str(x), x, 3)
        moves = [(node, "+", leaf), (leaf, "+", node), (node, "*", leaf), (leaf, "*", node)]
        if node.value > x:
            moves.append((node, "-", leaf))
        if x > node.value:
            moves.append((leaf, "-", node))
        if node.value % x == 0:
            moves.append((node, "/", leaf))
        if x % node.value == 0:
            moves.append((leaf, "/", node))
        node = _combine(*rng.choice(moves))
    return node


def read_expression(text: str) -> Optional[str]:
    """The expression on the completion's first line, whitespace removed, cut at a "=".

    "3*5 + 7 = 22" gives "3*5+7"; text that does not parse gives None.
    """
    lines = text.strip().splitlines()
    if not lines:
        return None
    candidate = "".join(lines[0].split("=", 1)[0].split())
    try:
        parse_expression(candidate)
    except ExpressionError:
        return None
    return candidate


def read_chat_expression(text: str) -> Optional[str]:
    """The last arithmetic expression in chatty text, whitespace removed, or None.

    "You can write 3*5 + 7 = 22." gives "3*5+7": of the runs of digits, operators, parentheses
    and spaces (so a run ends at "=", a letter or a comma), the last that parses and has an
    operator; `\\boxed{...}` and `$` around it do not matter.
    """
    for run in reversed(_EXPRESSION_RUN_RE.findall(text)):
        candidate = "".join(run.split())
        if not any(op in candidate for op in "+-*/"):
            continue
        try:
            parse_expression(candidate)
        except ExpressionError:
            continue
        return candidate
    return None


def make_expression_checker(read: Callable[[str], Optional[str]]) -> Callable[[Problem, str], Verdict]:
    def check(problem: Problem, text: str) -> Verdict:
        """Correct iff the expression uses only the given numbers (with multiplicity) and hits the target."""
        return check_read_expression(problem, read(text))

    return check


def check_expression(problem: Problem, text: str) -> Verdict:
    """Correct iff the expression uses only the given numbers (with multiplicity) and hits the target."""
    return check_read_expression(problem, read_expression(text))


def check_read_expression(problem: Problem, expression: Optional[str]) -> Verdict:
    """The verdict on an expression read from a completion (None: none was found)."""
    if expression is None:
        return Verdict(correct=False, note="no arithmetic expression found")
    value, used = parse_expression(expression)
    foreign = Counter(used) - Counter(problem.metadata["numbers"])
    if foreign:
        return Verdict(correct=False, answer=expression, note=f"uses numbers not given: {sorted(foreign.elements())}")
    if value != problem.metadata["target"]:
        return Verdict(correct=False, answer=expression, note=f"equals {value}, not {problem.metadata['target']}")
    return Verdict(correct=True, answer=expression)


@register_task("countdown")
def countdown(numbers: int = 3, max_number: int = 10, chat: bool = False) -> Task:
    """Reach a target from `numbers` numbers drawn from 1..`max_number`; `chat` asks in words
    and reads the expression from chatty text (for instruct models)."""
    check_int_option("countdown", "numbers", numbers, minimum=2)
    check_int_option("countdown", "max_number", max_number, minimum=2)
    if not isinstance(chat, bool):
        raise TaskOptionError(f"task 'countdown': option 'chat' must be true or false, got {chat!r}")
    read = read_chat_expression if chat else read_expression

    def draw(rng: random.Random) -> Problem:
        given = sorted(rng.randint(1, max_number) for _ in range(numbers))
        gold = random_expression(given, rng)
        content = f"{','.join(map(str, given))}>{gold.value}"
        return Problem(
            id=f"countdown/{content}",
            prompt=CHAT_PROMPT.format(numbers=", ".join(map(str, given)), target=gold.value) if chat else f"{content}:",
            answer=gold.text,
            metadata={"numbers": given, "target": gold.value},
        )

    def problems(split: str, n: int, seed: int) -> list[Problem]:
        return sample_distinct(draw, split, n, seed)

    def solution(problem: Problem) -> str:
        return str(problem.answer)

    return Task(
        name="countdown",
        problems=problems,
        check=make_expression_checker(read),
        extract=read,
        description=f"countdown with {numbers} numbers from 1 to {max_number}" + (" (chat prompt)" if chat else ""),
        max_new_tokens=numbers * (len(str(max_number)) + 3) + 2 + (16 if chat else 0),
        stop=("\n",),
        solution=solution,
    )
