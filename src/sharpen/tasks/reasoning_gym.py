"""reasoning-gym datasets as sharpen tasks (an optional extra: pip install 'sharpen[reasoning-gym]').

    get_task("reasoning_gym", dataset="leg_counting", size=1000, seed=0)
    get_task("reasoning_gym", dataset="basic_arithmetic", config={"max_terms": 3})

Problems are the entries of `reasoning_gym.create_dataset(dataset, size=size, seed=seed,
**config)`, made on first use. An entry's split is a hash of its question (20% eval), and a
question that occurs twice is kept once. The prompt is the question; the entry itself is kept
in `problem.metadata["entry"]`, and completions are scored by the dataset's own
`score_answer(answer=..., entry=...)`: correct iff the score is 1.0. A scorer that raises
gives an unscorable verdict (correct=None) with the error in its note.

Answer extraction (label-free, `read_final_answer`): the content of the last
`<answer>…</answer>` if there is one; else the rest of the line after the last "answer:"
(any case); else the last non-empty line; stripped. Multi-line answers therefore need the
tags, which is how the gold completion is written: `<answer>{reference}</answer>`.
"""

from __future__ import annotations

import random
import re
from types import ModuleType
from typing import Any, Optional

from sharpen.tasks.base import Problem, Task, Verdict
from sharpen.tasks.errors import TaskOptionError, check_int_option
from sharpen.tasks.registry import register_task
from sharpen.tasks.splits import check_split, split_of

_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_ANSWER_COLON_RE = re.compile(r"answer\s*:", re.IGNORECASE)
CHAT_INSTRUCTION = "Give your final answer between <answer> and </answer>."
"""The answer format a chat prompt states (what `read_final_answer` reads first)."""


def import_reasoning_gym() -> ModuleType:
    """The reasoning_gym module, or an ImportError saying how to install it."""
    try:
        import reasoning_gym
    except ImportError as e:
        raise ImportError(
            "the 'reasoning_gym' task needs the reasoning-gym package: pip install 'sharpen[reasoning-gym]'"
        ) from e
    module: ModuleType = reasoning_gym
    return module


def read_final_answer(text: str) -> Optional[str]:
    """The final answer of a free-form completion (see the module docstring), or None if blank."""
    tagged = _ANSWER_TAG_RE.findall(text)
    if tagged:
        return str(tagged[-1]).strip()
    anchors = list(_ANSWER_COLON_RE.finditer(text))
    if anchors:
        rest = text[anchors[-1].end() :].strip().splitlines()
        if rest and rest[0].strip():
            return rest[0].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None


@register_task("reasoning_gym")
def reasoning_gym_task(
    dataset: str,
    size: int = 1000,
    seed: int = 0,
    config: Optional[dict[str, Any]] = None,
    max_new_tokens: int = 1024,
    chat: bool = False,
) -> Task:
    """The reasoning-gym dataset `dataset` with `size` entries made from `seed`.

    `config` holds the dataset's own options (its config dataclass fields); `chat` adds
    CHAT_INSTRUCTION to each question (for instruct models).
    """
    rg = import_reasoning_gym()
    check_int_option("reasoning_gym", "size", size, minimum=1)
    known = rg.factory.DATASETS
    if dataset not in known:
        raise TaskOptionError(
            f"task 'reasoning_gym': option 'dataset' is {dataset!r}, which reasoning-gym does not have; "
            f"known datasets: {', '.join(sorted(known))}"
        )
    try:
        data = rg.create_dataset(dataset, size=size, seed=seed, **(config or {}))
    except (TypeError, ValueError, AssertionError) as e:
        raise TaskOptionError(
            f"task 'reasoning_gym': dataset {dataset!r} rejects option 'config' {config!r}: {e}"
        ) from e
    name = f"reasoning_gym/{dataset}"
    pools: dict[str, list[Problem]] = {}

    def split_pools() -> dict[str, list[Problem]]:
        if not pools:
            seen: set[str] = set()
            pools.update(train=[], eval=[])
            for index, entry in enumerate(data):
                if entry["question"] in seen:
                    continue
                seen.add(entry["question"])
                answer = entry.get("answer")
                problem = Problem(
                    id=f"{name}/{index}",
                    prompt=f"{entry['question']}\n\n{CHAT_INSTRUCTION}" if chat else entry["question"],
                    answer=None if answer is None else str(answer),
                    metadata={"entry": entry},
                )
                pools[split_of(entry["question"])].append(problem)
        return pools

    def problems(split: str, n: int, seed: int) -> list[Problem]:
        check_split(split)
        pool = split_pools()[split]
        return random.Random(seed).sample(pool, min(max(n, 0), len(pool)))

    def check(problem: Problem, text: str) -> Verdict:
        answer = read_final_answer(text)
        if answer is None:
            return Verdict(correct=False, note="no answer found")
        try:
            score = data.score_answer(answer=answer, entry=problem.metadata["entry"])
        except Exception as e:  # a scorer bug is unscorable, never a silent 0
            return Verdict(correct=None, answer=answer, note=f"score_answer raised {type(e).__name__}: {e}")
        return Verdict(correct=score == 1.0, answer=answer, note="" if score == 1.0 else f"score {score}")

    def solution(problem: Problem) -> str:
        if problem.answer is None:
            raise ValueError(f"{problem.id} has no reference answer to write a gold completion from")
        return f"<answer>{problem.answer}</answer>"

    return Task(
        name=name,
        problems=problems,
        check=check,
        extract=read_final_answer,
        description=f"reasoning-gym {dataset} ({size} entries, seed {seed})",
        max_new_tokens=max_new_tokens,
        solution=solution,
    )
