"""Rejection sampling: which completions of a group to fine-tune on, and how to watch it (METHODS.md §3).

Selections are pure functions over one group; they return *indices* into the group, so the
caller can pick completions, verdicts and rewards alike:

    keep = keep_correct(verdicts)                      # RFT / ReST-EM / STaR: labels
    best = best_by_score(scores)                       # sharpening: no labels, any score
    data = [group[i] for i in keep]

`bstar_stats` summarises one iteration's groups as B-STaR's exploration and exploitation
numbers (`BStarStats`). Verdicts may be `Verdict`s or plain `Optional[bool]`s; None means
unscorable and is counted, never read as wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

from sharpen.tasks.base import Verdict

VerdictLike = Union[Verdict, Optional[bool]]


def _correct(verdict: VerdictLike) -> Optional[bool]:
    return verdict.correct if isinstance(verdict, Verdict) else verdict


# ---------------------------------------------------------------------------------------------
# selection over one group


def keep_correct(
    verdicts: Sequence[VerdictLike],
    texts: Optional[Sequence[str]] = None,
    max_keep: Optional[int] = None,
) -> list[int]:
    """Indices of the correct completions: the filter of RFT, ReST-EM and STaR.

    Zelikman et al. (2022) "STaR: Bootstrapping Reasoning With Reasoning"; Yuan et al. (2023)
    "Scaling Relationship on Learning Mathematical Reasoning with Large Language Models" (RFT);
    Singh et al. (2023) "Beyond Human Data" (ReST-EM): keep completions with reward 1.
    With `texts`, a completion whose text equals an earlier kept one is dropped (RFT keeps
    distinct reasoning paths). At most `max_keep` indices, earliest first. Unscorable
    completions are not kept.
    """
    if texts is not None and len(texts) != len(verdicts):
        raise ValueError(f"keep_correct: got {len(verdicts)} verdicts but {len(texts)} texts.")
    kept: list[int] = []
    seen: set[str] = set()
    for i, v in enumerate(verdicts):
        if _correct(v) is not True:
            continue
        if texts is not None:
            if texts[i] in seen:
                continue
            seen.add(texts[i])
        kept.append(i)
        if max_keep is not None and len(kept) >= max_keep:
            break
    return kept


def best_by_score(scores: Sequence[Optional[float]]) -> Optional[int]:
    """Index of the highest score (best-of-N by any label-free score); ties go to the earliest.

    None scores are skipped; returns None when no completion has a score.
    """
    best: Optional[int] = None
    for i, s in enumerate(scores):
        if s is not None and (best is None or s > scores[best]):
            best = i
    return best


# ---------------------------------------------------------------------------------------------
# B-STaR monitoring over one iteration's groups


@dataclass(frozen=True)
class BStarStats:
    """Exploration and exploitation of one self-training iteration (B-STaR).

    Zeng et al. (2024) "B-STaR: Monitoring and Balancing Exploration and Exploitation in
    Self-Taught Reasoners": exploration = how often K samples hold a correct one and how many
    different correct ones; exploitation = how often the selection keeps a correct one.
    """

    iteration: int
    """The self-training iteration these groups came from."""
    problems: int
    """Number of problems (groups)."""
    k: int
    """Completions per group."""
    pass_at_k: float
    """Fraction of problems with at least one correct completion among the K."""
    distinct_correct: float
    """Mean over problems of the number of distinct correct responses."""
    selected: int
    """Number of selected completions with a verdict (the denominator below)."""
    selection_accuracy: Optional[float]
    """Correct selected / scorable selected; None when nothing scorable was selected."""
    unscorable: int
    """Completions whose verdict is None (counted as not correct in pass@K)."""


def bstar_stats(
    verdicts: Sequence[Sequence[VerdictLike]],
    responses: Sequence[Sequence[str]],
    selected: Sequence[Sequence[int]],
    iteration: int = 0,
) -> BStarStats:
    """B-STaR's per-iteration numbers from P groups of K completions.

        pass@K              = (1/P) Σ_q 1[∃ i: correct_qi]
        distinct_correct    = (1/P) Σ_q |{responses_qi : correct_qi}|
        selection_accuracy  = Σ_q Σ_{i ∈ S_q} 1[correct_qi] / Σ_q |{i ∈ S_q : scorable}|

    `responses` say what counts as distinct: the completion texts (B-STaR's unique correct
    responses) or a normalised form of them. `selected` holds, per group, the indices the
    selection kept (`keep_correct`, `[best_by_score(...)]`, …; may be empty). pass@K here
    is the empirical any-correct rate of the K drawn samples, i.e. the unbiased estimator
    `evaluation.metrics.pass_at_k(n=K, c, k=K)`. All groups must have the same size K.
    """
    P = len(verdicts)
    if P == 0:
        raise ValueError("bstar_stats: needs at least one group.")
    if len(responses) != P or len(selected) != P:
        raise ValueError(
            f"bstar_stats: got {P} groups of verdicts, {len(responses)} of responses and "
            f"{len(selected)} selections; give one of each per problem."
        )
    K = len(verdicts[0])
    solved = distinct = n_selected = n_selected_correct = unscorable = 0
    for q, (group, texts, chosen) in enumerate(zip(verdicts, responses, selected)):
        if len(group) != K or len(texts) != K:
            raise ValueError(
                f"bstar_stats: group {q} has {len(group)} verdicts and {len(texts)} responses; "
                f"every group must have K={K} of each."
            )
        correct = [_correct(v) for v in group]
        unscorable += sum(c is None for c in correct)
        solved += any(c is True for c in correct)
        distinct += len({t for t, c in zip(texts, correct) if c is True})
        for i in chosen:
            if not 0 <= i < K:
                raise ValueError(f"bstar_stats: group {q} selects index {i}, outside 0..{K - 1}.")
            if correct[i] is not None:
                n_selected += 1
                n_selected_correct += correct[i] is True
    return BStarStats(
        iteration=iteration,
        problems=P,
        k=K,
        pass_at_k=solved / P,
        distinct_correct=distinct / P,
        selected=n_selected,
        selection_accuracy=n_selected_correct / n_selected if n_selected else None,
        unscorable=unscorable,
    )
