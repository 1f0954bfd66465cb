"""Train/eval splits that never overlap, and seeded sampling of distinct problems.

A problem's split is a function of its canonical content alone (a sha256 of a key such as
"addition/37+58"), so it does not depend on the seed, on how many problems were asked for,
or on which task options were used: the same problem is always in the same split.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Optional

from sharpen.tasks.base import SPLITS, Problem

EVAL_FRACTION = 0.2
"""Share of all problems that belong to the eval split."""


def check_split(split: str) -> None:
    """Raise ValueError unless `split` is "train" or "eval"."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")


def split_of(key: str, eval_fraction: float = EVAL_FRACTION) -> str:
    """The split of a key: "eval" for about `eval_fraction` of all keys, else "train"; deterministic."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    return "eval" if u < eval_fraction else "train"


def sample_distinct(
    draw: Callable[[random.Random], Problem],
    split: str,
    n: int,
    seed: int,
    space: Optional[int] = None,
    patience: int = 5000,
) -> list[Problem]:
    """Up to `n` distinct problems of `split`, drawn with `random.Random(seed)`.

    `draw(rng)` makes one random problem; its `id` is its canonical content and decides its
    split (`split_of(id)`). Problems of the other split are rejected. Sampling stops early when
    every problem of the space has been seen (`space`, the number of distinct problems of both
    splits, when the family knows it) or, when it does not, after `patience` draws in a row that
    brought nothing new; then all problems found are returned, possibly fewer than `n`.
    """
    check_split(split)
    rng = random.Random(seed)
    seen: set[str] = set()
    chosen: list[Problem] = []
    misses = 0
    while len(chosen) < n:
        if space is not None and len(seen) >= space:
            break
        if space is None and misses >= patience:
            break
        problem = draw(rng)
        if problem.id in seen:
            misses += 1
            continue
        seen.add(problem.id)
        misses = 0
        if split_of(problem.id) == split:
            chosen.append(problem)
    return chosen
