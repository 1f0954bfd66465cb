"""The policy as its own judge (LLM-as-judge), pointwise and pairwise.

`self_judge` (pointwise): each completion is shown back to the policy in its template set's
judge format (`TemplateSet.judge_messages`: the embedded model's "<question><answer> right?",
a chat model's "… Is this answer correct? Answer Yes or No.") and the score is the policy's
probability of answering yes, normalised over the two replies:

    s = P(yes) / (P(yes) + P(no)) = softmax(log P(yes), log P(no))_0

`pairwise_judge`: the policy compares two completions of the same problem
(`TemplateSet.compare_messages`: "<question> A:<first> B:<second> which?", or both answers in
full and "Which answer is correct, A or B?"), asked in both orders
to cancel its position bias (Wang et al. 2023, "Large Language Models are not Fair
Evaluators"); a completion's score is its mean preference over the completions of its group
that say something else (`pairwise_preferences`, `round_robin_scores`).

Both read the first token of each reply, summed over the reply's spellings ("yes", "Yes",
" YES", …: `HFPolicy.choice_token_ids`), for all prompts in batched forward passes
(`policy.choice_logprobs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional, Sequence

import torch

from sharpen.models.base import Completion
from sharpen.models.formats import TemplateSet, template_set_for
from sharpen.signals.base import (UNIT_RANGE, ScoreRange, Scores, ScoringPolicy, SignalOptionError, check_groups,
                                  regroup)
from sharpen.tasks.base import Problem

JUDGING = ("tokenizer", "choice_logprobs")
"""What judging with the policy needs from it."""


def check_replies(who: str, policy: ScoringPolicy, reply_a: tuple[str, str], reply_b: tuple[str, str]) -> None:
    """Raise SignalOptionError unless the two replies, each (option name, text), are different,
    non-empty, and start with different tokens (their first tokens' odds are what is read)."""
    (name_a, a), (name_b, b) = reply_a, reply_b
    if not a or not b or a == b:
        raise SignalOptionError(
            f"signal {who!r}: options {name_a!r} and {name_b!r} must be two different non-empty replies, "
            f"got {a!r} and {b!r}"
        )
    first = [policy.tokenizer(r, add_special_tokens=False)["input_ids"][:1] for r in (a, b)]
    if first[0] == first[1]:
        raise SignalOptionError(
            f"signal {who!r}: replies {a!r} and {b!r} start with the same token "
            f"{first[0]}, so the judge's odds cannot tell them apart; choose replies that differ in their first token."
        )


@dataclass
class SelfJudge:
    """The policy's normalised probability that a completion is right, in [0, 1]."""

    policy: ScoringPolicy
    yes: Optional[str] = None
    """The reply that means "right" (its first token is read); default the templates' judge_yes."""
    no: Optional[str] = None
    """The reply that means "wrong"; default the templates' judge_no."""
    templates: TemplateSet = field(init=False)
    """The judge prompt's template set: the policy's (`template_set_for`)."""
    name: str = "self_judge"
    score_range: ClassVar[ScoreRange] = UNIT_RANGE

    def __post_init__(self) -> None:
        self.templates = template_set_for(self.policy)
        self.yes = self.templates.judge_yes if self.yes is None else self.yes
        self.no = self.templates.judge_no if self.no is None else self.no
        check_replies(self.name, self.policy, ("yes", self.yes), ("no", self.no))

    def __call__(self, problems: Sequence[Problem], groups: Sequence[Sequence[Completion]]) -> Scores:
        check_groups(self.name, problems, groups)
        prompts = [self.templates.judge_messages(p.prompt, c.text) for p, group in zip(problems, groups) for c in group]
        if not prompts:
            return [[] for _ in groups]
        logp = self.policy.choice_logprobs(prompts, (self.yes, self.no)).float()  # (N, 2)
        p_yes = logp.softmax(-1)[:, 0]  # (N,)
        return regroup(p_yes.tolist(), groups)


def pairwise_preferences(first_wins: torch.Tensor) -> torch.Tensor:
    """P(i ≻ j) for k answers from a judge asked about every ordered pair, shape (k, k).

    first_wins[i, j] is the judge's probability of picking the answer shown first when answer
    i is shown first and j second (the diagonal is not read). Averaging both orders,

        P(i ≻ j) = ½ (first_wins[i, j] + 1 − first_wins[j, i]),     P(i ≻ i) = ½

    so P(i ≻ j) + P(j ≻ i) = 1, and a judge that always picks one position prefers nothing
    (0.5 everywhere): the position-bias calibration of Wang et al. (2023), "Large Language
    Models are not Fair Evaluators" (their balanced position calibration).
    """
    if first_wins.dim() != 2 or first_wins.shape[0] != first_wins.shape[1]:
        raise ValueError(f"pairwise_preferences needs a square (k, k) matrix, got {tuple(first_wins.shape)}")
    pref = 0.5 * (first_wins + 1.0 - first_wins.T)  # (k, k)
    return pref.fill_diagonal_(0.5)


def round_robin_scores(pref: torch.Tensor, answer_of: Sequence[int]) -> list[Optional[float]]:
    """Each completion's mean preference over the completions of its group that differ from it.

    `answer_of[i]` is the row of `pref` (k distinct answers, `pairwise_preferences`) that
    completion i carries; with D_i = {j : answer_of[j] ≠ answer_of[i]},

        score_i = (1/|D_i|) Σ_{j ∈ D_i} pref[answer_of[i], answer_of[j]]     ∈ [0, 1]

    so an answer meets each rival as often as the rival was sampled, and copies of an answer
    do not pull its score towards ½. A completion with no rival (every completion of the
    group equal) has nothing to be compared with: None.
    """
    idx = torch.as_tensor(list(answer_of), dtype=torch.long)  # (G,)
    rival = idx[:, None] != idx[None, :]  # (G, G)
    matrix = pref[idx][:, idx]  # (G, G) completion against completion
    count = rival.sum(-1)  # (G,)
    total = (matrix * rival).sum(-1)  # (G,)
    return [None if n == 0 else t / n for t, n in zip(total.tolist(), count.tolist())]


@dataclass
class PairwiseJudge:
    """The policy's mean preference for a completion over the other answers of its group, in
    [0, 1], each pair asked in both orders; None where the whole group says the same."""

    policy: ScoringPolicy
    first: Optional[str] = None
    """The reply that picks the answer shown first (its first token is read); default the
    templates' compare_first."""
    second: Optional[str] = None
    """The reply that picks the answer shown second; default the templates' compare_second."""
    templates: TemplateSet = field(init=False)
    """The comparison prompt's template set: the policy's (`template_set_for`)."""
    name: str = "pairwise_judge"
    score_range: ClassVar[ScoreRange] = UNIT_RANGE

    def __post_init__(self) -> None:
        self.templates = template_set_for(self.policy)
        self.first = self.templates.compare_first if self.first is None else self.first
        self.second = self.templates.compare_second if self.second is None else self.second
        check_replies(self.name, self.policy, ("first", self.first), ("second", self.second))

    def __call__(self, problems: Sequence[Problem], groups: Sequence[Sequence[Completion]]) -> Scores:
        """k distinct texts in a group cost k(k−1) judged prompts; equal texts are not asked."""
        check_groups(self.name, problems, groups)
        texts = [list(dict.fromkeys(c.text for c in group)) for group in groups]  # distinct, in order
        prompts, where = [], []
        for g, (problem, distinct) in enumerate(zip(problems, texts)):
            for a, first in enumerate(distinct):
                for b, second in enumerate(distinct):
                    if a != b:
                        prompts.append(self.templates.compare_messages(problem.prompt, first, second))
                        where.append((g, a, b))
        first_wins = [torch.full((len(d), len(d)), 0.5) for d in texts]  # (k, k) per group
        if prompts:
            logp = self.policy.choice_logprobs(prompts, (self.first, self.second)).float()  # (N, 2)
            for (g, a, b), p in zip(where, logp.softmax(-1)[:, 0].tolist()):
                first_wins[g][a, b] = p
        scores: Scores = []
        for group, distinct, wins in zip(groups, texts, first_wins):
            row = {text: i for i, text in enumerate(distinct)}
            scores.append(round_robin_scores(pairwise_preferences(wins), [row[c.text] for c in group]))
        return scores
