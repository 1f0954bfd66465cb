"""Problems from JSONL files, GSM8K style or MATH style.

    get_task("jsonl", path="gsm8k.jsonl")                                  # split by question hash
    get_task("jsonl", train_path="train.jsonl", eval_path="test.jsonl")    # the files are the splits

One JSON object per line; blank lines are skipped. The format is told per line by its keys
(`format="auto"`) or fixed (`format="gsm8k"` / `"math"`):

- GSM8K: {"question": ..., "answer": "worked steps ...\\n#### 72"}. The reference is the text
  after the last "####"; a one-line `answer` without "####" is the reference itself. The
  calculator annotations of the published solutions (`48/2 = <<48/2=24>>24`) are removed.
- MATH: {"problem": ..., "solution": "... \\boxed{72}"} or with an explicit "answer" field,
  which wins over the solution's last `\\boxed{}`.

The prompt is the question text; with `chat=True` it also says, in words, how to write the
answer (CHAT_INSTRUCTIONS: "The answer is N." for GSM8K, `\\boxed{}` for MATH), for instruct
models, whose chatty replies the checker reads (`extract_answer`). The gold completion is the
worked answer or solution, ending in a `\\boxed{}` answer when it has no "####" line or box of
its own. A malformed line raises TaskDataError naming the file, the 1-based line number and
what is wrong.

With one `path`, a question's split is a hash of its text (20% eval); with two files, train
questions that also appear in the eval file are dropped (and logged). Repeated questions
within a split are kept once.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any, Optional, Union

from sharpen.tasks.answers import (
    answer_verdict, extract_answer, extract_boxed, normalize_answer, strip_calculator_annotations,
)
from sharpen.tasks.base import Problem, Task, Verdict
from sharpen.tasks.errors import TaskDataError, TaskOptionError
from sharpen.tasks.registry import register_task
from sharpen.tasks.splits import check_split, split_of

FORMATS = ("auto", "gsm8k", "math")
CHAT_INSTRUCTIONS = {
    "gsm8k": 'Solve the problem step by step. End your reply with "The answer is N." where N is a number.',
    "math": "Solve the problem step by step. Put your final answer in \\boxed{}.",
}
"""What a chat prompt adds after the question, by row format."""
log = logging.getLogger(__name__)


def _text_field(row: dict[str, Any], key: str, where: str) -> str:
    """row[key] as a non-empty string, or a TaskDataError saying what is missing."""
    if key not in row:
        raise TaskDataError(f"{where}: missing field {key!r} (fields present: {', '.join(sorted(row)) or 'none'})")
    value = row[key]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise TaskDataError(f"{where}: field {key!r} must be a non-empty string, got {value!r}")
    return value


def _boxed(answer: str, worked: str = "") -> str:
    """A gold completion: the worked text (if any), then the answer in a box."""
    return f"{worked.rstrip()}\n\\boxed{{{answer}}}" if worked.strip() else f"\\boxed{{{answer}}}"


def read_row(row: dict[str, Any], format: str, where: str) -> tuple[str, str, str, str]:
    """(format, question, reference answer, gold completion) of one JSONL object."""
    kind = format
    if kind == "auto":
        kind = "gsm8k" if "question" in row else "math" if "problem" in row else ""
        if not kind:
            raise TaskDataError(
                f"{where}: cannot tell the format; expected a 'question' (GSM8K) or 'problem' (MATH) field, "
                f"found: {', '.join(sorted(row)) or 'none'}"
            )
    if kind == "gsm8k":
        question = _text_field(row, "question", where)
        worked = strip_calculator_annotations(_text_field(row, "answer", where))
        if "####" in worked:
            final = worked.rsplit("####", 1)[1].strip()
            if not final:
                raise TaskDataError(f"{where}: nothing after '####' in field 'answer'")
            return kind, question, normalize_answer(final), worked
        if "\n" in worked.strip():
            raise TaskDataError(f"{where}: field 'answer' has several lines but no final '#### <answer>' line")
        reference = normalize_answer(worked)
        return kind, question, reference, _boxed(reference)
    question = _text_field(row, "problem", where)
    solution = _text_field(row, "solution", where) if "solution" in row else ""
    if "answer" in row:
        reference = normalize_answer(_text_field(row, "answer", where))
        gold = solution if extract_boxed(solution) is not None else _boxed(reference, solution)
        return kind, question, reference, gold
    if not solution:
        raise TaskDataError(f"{where}: needs an 'answer' field or a 'solution' with a \\boxed{{}} answer")
    boxed = extract_boxed(solution)
    if not boxed:
        raise TaskDataError(f"{where}: field 'solution' has no \\boxed{{...}} answer and there is no 'answer' field")
    return kind, question, normalize_answer(boxed), solution


def read_jsonl(path: Path, format: str, name: str, chat: bool = False) -> list[Problem]:
    """Every problem of a JSONL file, in file order; TaskDataError on the first malformed line."""
    problems = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskDataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise TaskDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
            kind, question, reference, gold = read_row(row, format, where)
            problems.append(
                Problem(
                    id=f"{name}/{path.name}:{lineno}",
                    prompt=f"{question}\n\n{CHAT_INSTRUCTIONS[kind]}" if chat else question,
                    answer=reference,
                    metadata={"source": f"{path}:{lineno}", "solution": gold, "question": question},
                )
            )
    return problems


def _distinct(problems: list[Problem], exclude: frozenset[str] = frozenset()) -> list[Problem]:
    """The first problem of each question, leaving out questions in `exclude`."""
    seen = set(exclude)
    kept = []
    for p in problems:
        question = p.metadata["question"]
        if question not in seen:
            seen.add(question)
            kept.append(p)
    return kept


def _existing(path: Union[str, Path], option: str) -> Path:
    """The option's path, or a TaskOptionError if it is not a file."""
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise TaskOptionError(f"task 'jsonl': option {option!r} is {str(path)!r}, which is not a file")
    return resolved


@register_task("jsonl")
def jsonl(
    path: Union[str, Path, None] = None,
    train_path: Union[str, Path, None] = None,
    eval_path: Union[str, Path, None] = None,
    format: str = "auto",
    name: Optional[str] = None,
    max_new_tokens: int = 512,
    chat: bool = False,
) -> Task:
    """A task over GSM8K- or MATH-style JSONL: one `path`, or `train_path` and `eval_path`.

    `name` defaults to the (train) file's stem; `max_new_tokens` is the generation budget;
    `chat` states the answer format in the prompt (for instruct models).
    """
    if format not in FORMATS:
        raise TaskOptionError(f"task 'jsonl': option 'format' must be one of {', '.join(FORMATS)}, got {format!r}")
    one_file = path is not None and train_path is None and eval_path is None
    two_files = path is None and train_path is not None and eval_path is not None
    if not (one_file or two_files):
        raise TaskOptionError("task 'jsonl': give either option 'path', or both 'train_path' and 'eval_path'")
    if path is not None:
        file = _existing(path, "path")
        name = name or file.stem
        everything = _distinct(read_jsonl(file, format, name, chat))
        pools = {s: [p for p in everything if split_of(p.metadata["question"]) == s] for s in ("train", "eval")}
    else:
        train_file, eval_file = _existing(str(train_path), "train_path"), _existing(str(eval_path), "eval_path")
        name = name or train_file.stem
        held_out = _distinct(read_jsonl(eval_file, format, name, chat))
        train_all = read_jsonl(train_file, format, name, chat)
        train = _distinct(train_all, exclude=frozenset(p.metadata["question"] for p in held_out))
        dropped = len({p.metadata["question"] for p in train_all}) - len(train)
        if dropped:
            log.warning("jsonl task %r: dropped %d train questions that are also in %s", name, dropped, eval_file)
        pools = {"train": train, "eval": held_out}

    def problems(split: str, n: int, seed: int) -> list[Problem]:
        check_split(split)
        pool = pools[split]
        return random.Random(seed).sample(pool, min(max(n, 0), len(pool)))

    def check(problem: Problem, text: str) -> Verdict:
        return answer_verdict(extract_answer(text), problem.answer)

    def solution(problem: Problem) -> str:
        return str(problem.metadata["solution"])

    return Task(
        name=name,
        problems=problems,
        check=check,
        extract=extract_answer,
        description=f"JSONL problems ({len(pools['train'])} train, {len(pools['eval'])} eval)",
        max_new_tokens=max_new_tokens,
        solution=solution,
    )
