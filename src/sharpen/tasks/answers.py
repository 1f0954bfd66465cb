"""Reading answers out of completions, and deciding whether two answers are equal.

Pure functions, no model text is ever evaluated: numbers are read with regular expressions
and compared as `fractions.Fraction`; anything else is compared by the `math_verify` package,
restricted to its LaTeX parser (its plain-expression parser hands text to sympy's
`parse_expr`, which calls `eval`, so it is not used).

math_verify's own timeouts use `signal.alarm`, which only works in the main thread (checked
in math-verify 0.9.0: `math_verify.utils.timeout`), so checkers could not run in worker
threads with them. Instead every LaTeX comparison (parsing both answers and the equivalence
check) runs in a worker process (`sharpen.tasks.verify_pool`) with a deadline of
`VERIFY_SECONDS`: a comparison still running then is killed with its worker and counted
unscorable, never a silent wrong. Calls are thread-safe. Answers longer than
`MAX_LATEX_CHARS` and expressions that would take sympy minutes to evaluate (huge or nested
powers, huge factorials) are refused before comparison, so the common costly answers are
wrong without waiting for the deadline. Results are cached per (prediction, reference) pair;
two numbers are compared in-process and never reach a worker. A timed-out comparison is
not remembered.
"""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from typing import Any, NamedTuple, Optional

from sharpen.tasks import verify_pool
from sharpen.tasks.base import Verdict

RELATIVE_TOLERANCE = Fraction(1, 10**6)
"""Two numbers that are not both integers match when |pred - ref| <= this * max(1, |ref|)."""
MAX_LATEX_CHARS = 1000
"""Longer answers are not handed to the LaTeX parser."""
MAX_EXPONENT = 100_000
"""A numeric power with a larger exponent is refused (sympy would expand it)."""
MAX_FACTORIAL = 1000
"""A factorial of a larger integer is refused."""
VERIFY_SECONDS = 5.0
"""Deadline of one LaTeX comparison in its worker process; a slower one is counted unscorable."""

_DIGITS = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+"
NUMBER_RE = re.compile(rf"(?<![\w.])(?P<neg>(?<![\w)\]}}])-)?(?P<num>{_DIGITS})(?:\s*/\s*(?P<den>\d+)(?![\d.]))?")
"""A number as people and models write it: -12, 1,234, 3.50, .5, 3/4 (after `_clean`)."""
_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{\s*(-?[\d.,]+)\s*\}\s*\{\s*([\d.,]+)\s*\}")
_ANSWER_IS_RE = re.compile(r"\banswer\s*(?:is|:)", re.IGNORECASE)
_LATEX_COMMAND_RE = re.compile(r"\\[A-Za-z]+")
_WORD_RE = re.compile(r"[A-Za-z]{2,}")
_CALCULATOR_RE = re.compile(r"<<[^<>\s=]*=[^<>\s]*>>")


def strip_calculator_annotations(text: str) -> str:
    """GSM8K's worked answers without their calculator annotations.

    "48/2 = <<48/2=24>>24 clips" gives "48/2 = 24 clips": the published solutions mark each
    computed value with `<<expression=value>>` for a calculator tool, which is not part of
    the text a model should read or learn to write.
    """
    return _CALCULATOR_RE.sub("", text)


def _clean(text: str) -> str:
    """Undo the ways numbers are dressed up: $ signs, LaTeX thousands separators, \\frac{a}{b}."""
    text = _FRAC_RE.sub(r"\1/\2", text)
    for dressing, plain in (("\\$", ""), ("$", ""), ("{,}", ","), ("\\,", ""), ("\\!", ""), ("\u2212", "-")):
        text = text.replace(dressing, plain)
    return text


def _value(match: re.Match[str]) -> Optional[tuple[Fraction, bool]]:
    """The value of a NUMBER_RE match and whether it was written as an integer."""
    num = match.group("num").replace(",", "")
    value = Fraction(num)
    if match.group("den") is not None:
        den = int(match.group("den"))
        if den == 0:
            return None
        value /= den
    if match.group("neg"):
        value = -value
    return value, "." not in num and match.group("den") is None


def _canonical(match: re.Match[str]) -> Optional[str]:
    """Canonical text of a number: "1,234"→"1234", "42.0"→"42", "007"→"7", "0.50"→"0.5", "6/8"→"3/4"."""
    parsed = _value(match)
    if parsed is None:
        return None
    value, _ = parsed
    if value.denominator == 1:
        return str(value.numerator)
    if match.group("den") is not None:
        return f"{value.numerator}/{value.denominator}"
    decimal = Decimal(match.group("num").replace(",", "")).normalize()
    return format(-decimal if match.group("neg") else decimal, "f")


def _numbers(text: str) -> list[str]:
    """Every number in the text, in order and canonical form."""
    found = (_canonical(match) for match in NUMBER_RE.finditer(_clean(text)))
    return [number for number in found if number is not None]


def parse_number(text: str) -> Optional[tuple[Fraction, bool]]:
    """(value, written_as_integer) if the whole text is one number, else None.

    Accepts the dressings `extract_number` accepts: "$1,234.", "-3.50", "\\frac{3}{4}", "3/4".
    """
    match = NUMBER_RE.fullmatch(_clean(text).strip().rstrip("."))
    return None if match is None else _value(match)


def extract_boxed(text: str) -> Optional[str]:
    """The content of the last complete `\\boxed{...}` (braces balanced), stripped; else None.

    `\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}`; `\\boxed 5` gives `5`; a `\\boxed{` cut off
    before its closing brace is skipped in favour of an earlier complete one.
    """
    end = len(text)
    while True:
        start = text.rfind("\\boxed", 0, end)
        if start < 0:
            return None
        i = start + len("\\boxed")
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    return text[i + 1 : j].strip()
        elif i > start + len("\\boxed"):
            bare = re.match(r"[^\s$]+", text[i:])
            if bare:
                return bare.group(0)
        end = start


def extract_number(text: str) -> Optional[str]:
    """The final numeric answer of a completion, in canonical form, or None.

    Where it looks, in order: the last `\\boxed{...}` (if present, its first number or None);
    the text after the last `####` (GSM8K; likewise decisive); the text after the last
    "answer is" / "answer:" (its first number, if it has one); the last number in the text.
    Numbers may carry thousands commas, `$`, a sign, decimals, a trailing period, or be simple
    fractions; they come out normalised ("$1,234." → "1234", "42.0" → "42", "007" → "7").
    """
    boxed = extract_boxed(text)
    if boxed is not None:
        return next(iter(_numbers(boxed)), None)
    if "####" in text:
        return next(iter(_numbers(text.rsplit("####", 1)[1])), None)
    anchors = list(_ANSWER_IS_RE.finditer(text))
    if anchors:
        after = _numbers(text[anchors[-1].end() :])
        if after:
            return after[0]
    numbers = _numbers(text)
    return numbers[-1] if numbers else None


def normalize_answer(text: str) -> str:
    """A canonical spelling of an answer: a number in canonical form, else whitespace collapsed."""
    stripped = text.strip().strip("$").strip().rstrip(".")
    match = NUMBER_RE.fullmatch(_clean(stripped).strip())
    number = _canonical(match) if match else None
    return number if number is not None else " ".join(stripped.split())


def is_bare_answer(text: str, max_chars: int = 64) -> bool:
    """True if the completion is just an answer: one short line with no words in it.

    Words are runs of two or more letters outside LaTeX commands, so `x^2+1` and
    `\\frac{\\pi}{2}` are bare answers and "So it is 12" is not.
    """
    line = text.strip()
    return 0 < len(line) <= max_chars and "\n" not in line and not _WORD_RE.search(_LATEX_COMMAND_RE.sub(" ", line))


def extract_answer(text: str) -> Optional[str]:
    """The final answer of a completion, numeric or not (MATH style), or None.

    The last `\\boxed{...}` (whole content, normalised); else, if the text has a `####` or
    "answer is" marker, `extract_number`; else the whole completion if it is a bare answer
    (`is_bare_answer`); else the last number. Non-numeric answers therefore have to be boxed,
    or be the entire completion.
    """
    boxed = extract_boxed(text)
    if boxed is not None:
        return normalize_answer(boxed)
    if "####" not in text and not _ANSWER_IS_RE.search(text) and is_bare_answer(text):
        return normalize_answer(text)
    return extract_number(text)


def _too_costly(expr: Any) -> bool:
    """True if sympy could spend minutes evaluating this expression (see MAX_EXPONENT)."""
    import sympy

    for node in sympy.preorder_traversal(expr):
        if isinstance(node, sympy.Pow):
            exponent = node.exp
            if exponent.is_Number and abs(exponent) > MAX_EXPONENT:
                return True
            if not exponent.is_Number and not exponent.free_symbols and exponent.has(sympy.Pow, sympy.factorial):
                return True
        if isinstance(node, sympy.factorial):
            arg = node.args[0]
            if not arg.free_symbols and (not arg.is_Number or abs(arg) > MAX_FACTORIAL):
                return True
    return False


def _latex(text: str) -> Optional[list[Any]]:
    """math_verify's reading of a LaTeX answer, or None if it yields no sympy expression.

    Text without math delimiters is wrapped in `$…$`. Too long or too costly answers give None.
    """
    if len(text) > MAX_LATEX_CHARS:
        return None
    import sympy
    from math_verify import LatexExtractionConfig, parse

    delimited = any(mark in text for mark in ("$", "\\boxed", "\\(", "\\["))
    config = [LatexExtractionConfig()]
    parsed: list[Any] = parse(text if delimited else f"${text}$", extraction_config=config, parsing_timeout=None)
    expressions = [x for x in parsed if isinstance(x, sympy.Basic)]
    if not expressions or any(_too_costly(x) for x in expressions):
        return None
    return parsed


def _latex_match(pred: Optional[str], ref: str) -> Optional[bool]:
    """LaTeX equivalence by math_verify, unbounded in time: it runs in a worker process
    (`_bounded_latex_match`). None if the reference is unreadable."""
    gold = _latex(ref)
    if gold is None:
        return None
    if pred is None:
        return False
    target = _latex(pred)
    if target is None:
        return False
    from math_verify import verify

    return bool(verify(gold, target, timeout_seconds=None))


class _Match(NamedTuple):
    """An answer comparison: True/False, or None (unscorable) with the reason."""

    value: Optional[bool]
    note: str = ""


@lru_cache(maxsize=8192)
def _latex_match_in_worker(pred: Optional[str], ref: str) -> Optional[bool]:
    """`_latex_match` in a worker process, stopped after VERIFY_SECONDS; remembered, unless
    it raised `verify_pool.Unscorable`."""
    return verify_pool.compare(pred, ref, VERIFY_SECONDS)


def _bounded_latex_match(pred: Optional[str], ref: str) -> _Match:
    try:
        value = _latex_match_in_worker(pred, ref)
    except verify_pool.Unscorable as err:
        return _Match(None, str(err))
    return _Match(value, "" if value is not None else f"reference unparsable: {ref!r}")


def _match(pred: Optional[str], ref: Optional[str]) -> _Match:
    if ref is None:
        return _Match(None, "no reference answer")
    ref_number = parse_number(ref)
    if ref_number is not None and pred is None:
        return _Match(False)
    pred_number = parse_number(pred) if pred is not None else None
    if ref_number is not None and pred_number is not None:
        (a, a_int), (b, b_int) = pred_number, ref_number
        if a_int and b_int:
            return _Match(a == b)
        return _Match(abs(a - b) <= RELATIVE_TOLERANCE * max(Fraction(1), abs(b)))
    return _bounded_latex_match(pred, ref)


def answers_match(pred: Optional[str], ref: Optional[str]) -> Optional[bool]:
    """Whether a predicted answer equals the reference; None if that cannot be told.

    Both numbers (`parse_number`): exact if both are written as integers, else equal within
    RELATIVE_TOLERANCE (so "0.5" matches "1/2"). Otherwise LaTeX equivalence by math_verify
    (`\\frac{1}{2}` matches `0.5`, `\\sqrt{4}` matches `2`) in a worker process with a
    deadline of VERIFY_SECONDS. A missing or unreadable prediction is False; a missing or
    unreadable reference, or a comparison past its deadline, gives None (unscorable).
    """
    return _match(pred, ref).value


def answer_verdict(pred: Optional[str], ref: Optional[str]) -> Verdict:
    """The Verdict for an extracted answer against a reference, with the reason in `note`
    (why it is unscorable, when it is)."""
    match = _match(pred, ref)
    if match.value is None:
        return Verdict(correct=None, answer=pred, note=match.note)
    if pred is None:
        return Verdict(correct=False, answer=None, note="no answer found")
    return Verdict(correct=match.value, answer=pred, note="" if match.value else "answer differs from reference")
