"""The reward: a weighted sum of signals, where the weights live (not in the signals).

    reward = Reward.from_specs(
        [("correctness", 1.0), ("format", 0.1, {"pattern": r"\\d+"}), ("self_certainty", 0.0)],
        task=task, policy=policy,
    )
    result = reward(problems, groups)
    result.total        # P × G floats
    result.summary()    # {"reward/mean": …, "rewards/correctness/mean": …, …}

For completion j of problem i,

    total_ij = Σ_k w_k · s_k,ij     over the components k with w_k ≠ 0 and s_k,ij not None

A weight-0 component is computed and logged but never summed (a metric, as in verifiers);
a None score is left out of the sum and of the component's mean. A completion that a
*weighted* component could not score is **unscorable** (`RewardResult.scorable` is False):
its total is not the reward that was asked for, so learners leave it out of advantages and
losses instead of training it as wrong (DESIGN.md rule 3), and `reward/frac_unscorable`
counts it. Its `total` is the partial sum, kept only for the record.

A span signal (`SpanScores`) scores each completion by the sum of its span values; the
result also keeps every completion's weighted spans (`RewardResult.spans`, the span
components' spans times their weights) and its outcome (`RewardResult.outcomes`, the weighted
sum of the scalar components, when the reward has any). Spans and outcome add up to the total,
so a token-level learner (`process_grpo`) sees the same reward: the spans on their tokens, the
outcome on the last token, each kind normalised over the group on its own.

Each component has a known score range (its signal's `score_range`, or the `range` its spec
declares); the total's range follows from the weights (`composite_range`), which is what
BNPO and the signed weightings rescale by (METHODS.md §1, step 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

from sharpen.models.base import Completion
from sharpen.signals.base import (
    ScoreRange, Scores, ScoringPolicy, Signal, SignalOptionError, Span, Spans, SpanScores,
)
from sharpen.signals.registry import build_signal
from sharpen.tasks.base import Problem, Task


@dataclass(frozen=True)
class RewardSpec:
    """One component of a reward, as a config writes it."""

    name: str
    """A registered signal name, or a user function "module:function" / "file.py:function"."""
    weight: float = 1.0
    """Its weight in the total; 0 logs the signal without summing it."""
    options: dict[str, Any] = field(default_factory=dict)
    """Options of the signal (keyword arguments of its factory or of the user function)."""
    range: Optional[ScoreRange] = None
    """(lowest, highest) score the signal can give; None: the signal's own `score_range`
    (a user function has none, so declare it when a learner rescales by the reward's range)."""

    @classmethod
    def parse(cls, spec: "SpecLike") -> "RewardSpec":
        """A RewardSpec from itself, a name, a (name, weight[, options]) tuple or a mapping
        with keys name / weight / options."""
        if isinstance(spec, RewardSpec):
            return spec
        if isinstance(spec, str):
            return cls(spec)
        if isinstance(spec, Mapping):
            unknown = sorted(set(spec) - {"name", "weight", "options", "range"})
            if unknown or "name" not in spec:
                raise SignalOptionError(
                    f"reward component {dict(spec)!r}: needs key 'name' and may have 'weight', 'options' and 'range'"
                    + (f"; unknown keys {unknown}" if unknown else "")
                )
            declared = spec.get("range")
            return cls(spec["name"], spec.get("weight", 1.0), dict(spec.get("options") or {}),
                       None if declared is None else _checked_range(spec["name"], declared))
        if isinstance(spec, (tuple, list)) and 1 <= len(spec) <= 3 and isinstance(spec[0], str):
            weight = spec[1] if len(spec) > 1 else 1.0
            options = spec[2] if len(spec) > 2 else {}
            return cls(spec[0], weight, dict(options))
        raise SignalOptionError(
            f"reward component {spec!r}: write it as a name, (name, weight), (name, weight, options) "
            "or {'name': …, 'weight': …, 'options': {…}}"
        )


SpecLike = Union[RewardSpec, str, tuple, list, Mapping[str, Any]]


@dataclass(frozen=True)
class Component:
    """A built signal with its name and weight."""

    name: str
    signal: Signal
    weight: float
    declared_range: Optional[ScoreRange] = None
    """The spec's `range`, which overrides the signal's `score_range`."""

    @property
    def score_range(self) -> Optional[ScoreRange]:
        """The range this component's scores lie in; None when unknown."""
        return self.declared_range or getattr(self.signal, "score_range", None)


def composite_range(parts: Sequence[tuple[float, Optional[ScoreRange]]]) -> Optional[ScoreRange]:
    """Range of Σ_k w_k s_k for s_k ∈ [lo_k, hi_k], over the (weight, range) pairs with w ≠ 0:

        [Σ_k min(w_k lo_k, w_k hi_k),  Σ_k max(w_k lo_k, w_k hi_k)]

    (a negative weight swaps the ends). None when a weighted part's range is unknown; an end
    is ±inf when a part's is.
    """
    lo = hi = 0.0
    for weight, score_range in parts:
        if weight == 0:
            continue
        if score_range is None:
            return None
        ends = [weight * v for v in score_range]
        lo, hi = lo + min(ends), hi + max(ends)
    return lo, hi


def _checked_range(name: str, declared: Any) -> ScoreRange:
    """`declared` as a (lo, hi) pair with lo < hi, else a SignalOptionError naming the component."""
    try:
        lo, hi = (float(v) for v in declared)
    except (TypeError, ValueError):
        raise SignalOptionError(
            f"reward component {name!r}: range must be two numbers [lowest, highest], got {declared!r}"
        ) from None
    if not lo < hi:
        raise SignalOptionError(f"reward component {name!r}: range needs lowest < highest, got [{lo}, {hi}]")
    return lo, hi


@dataclass
class RewardResult:
    """Rewards of P groups: the weighted totals and every component's scores."""

    total: list[list[float]]
    """P × G: Σ weight · score over components with weight ≠ 0 whose score is not None."""
    components: dict[str, Scores]
    """name → P × G scores (None where the signal does not apply), weight-0 ones included."""
    weights: dict[str, float]
    """name → weight."""
    scorable: list[list[bool]] = field(default_factory=list)
    """P × G: False where a weighted component gave None (the total is then not a reward)."""
    spans: list[list[Spans]] = field(default_factory=list)
    """P × G: the span components' weighted spans of each completion's text (module docstring)."""
    outcomes: list[list[float]] = field(default_factory=list)
    """P × G: the weighted sum of the scalar components; empty when no weighted component is
    scalar. Σ spans + outcome = total."""

    def summary(self) -> dict[str, float]:
        """Metrics to log (TRL's names):

        reward/mean, reward/std          over the totals of scorable completions (std: population)
        reward/frac_unscorable           fraction of completions a weighted component could not score
        reward/frac_zero_std             fraction of groups whose scorable totals are all equal, or
                                         that have none (no signal for group-relative advantages)
        rewards/<name>/mean, …/std       over the component's non-None scores
                                         (left out when every score is None)
        rewards/<name>/frac_none         fraction of completions the component did not score
        """
        out: dict[str, float] = {}
        kept = [[v for v, ok in zip(row, oks) if ok] for row, oks in zip(self.total, self.scorable)]
        out.update(_moments("reward", [v for row in kept for v in row]))
        n = sum(len(row) for row in self.total)
        if n:
            out["reward/frac_unscorable"] = 1.0 - sum(len(row) for row in kept) / n
        if kept:
            flat = sum(not row or _all_equal(row) for row in kept)
            out["reward/frac_zero_std"] = flat / len(kept)
        for name, scores in self.components.items():
            values = [v for row in scores for v in row]
            present = [v for v in values if v is not None]
            out.update(_moments(f"rewards/{name}", present))
            if values:
                out[f"rewards/{name}/frac_none"] = 1.0 - len(present) / len(values)
        return out


def _moments(prefix: str, values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / len(values)
    return {f"{prefix}/mean": mean, f"{prefix}/std": math.sqrt(var)}


def _all_equal(row: list[float]) -> bool:
    return math.isclose(max(row), min(row), rel_tol=1e-9, abs_tol=1e-12)


class Reward:
    """A weighted sum of named signals."""

    def __init__(self, components: Sequence[Component]) -> None:
        names = [c.name for c in components]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise SignalOptionError(f"reward components {repeated} appear more than once; list each signal once")
        for c in components:
            if isinstance(c.weight, bool) or not isinstance(c.weight, (int, float)) or not math.isfinite(c.weight):
                raise SignalOptionError(f"reward component {c.name!r}: weight must be a finite number, got {c.weight!r}")
        self.components = list(components)

    @classmethod
    def from_specs(
        cls, specs: Sequence[SpecLike], *, task: Task, policy: Optional[ScoringPolicy] = None,
        user_code: bool = False,
    ) -> "Reward":
        """Build every component's signal from its spec (see `RewardSpec.parse`); `user_code`
        lets a spec name a user function (see `build_signal`: a user's own config only)."""
        parsed = [RewardSpec.parse(s) for s in specs]
        if not parsed:
            raise SignalOptionError("a reward needs at least one component, e.g. [('correctness', 1.0)]")
        return cls([
            Component(s.name, build_signal(s.name, task=task, policy=policy, user_code=user_code, **s.options),
                      s.weight, s.range)
            for s in parsed
        ])

    @property
    def weights(self) -> dict[str, float]:
        return {c.name: float(c.weight) for c in self.components}

    @property
    def ranges(self) -> dict[str, Optional[ScoreRange]]:
        """name → the component's score range (None: unknown)."""
        return {c.name: c.score_range for c in self.components}

    @property
    def range(self) -> Optional[ScoreRange]:
        """The range of the total, from the components' ranges and weights (`composite_range`)."""
        return composite_range([(c.weight, c.score_range) for c in self.components])

    def __call__(self, problems: Sequence[Problem], groups: Sequence[Sequence[Completion]]) -> RewardResult:
        outputs = {c.name: c.signal(problems, groups) for c in self.components}
        span_outputs = {name: _checked_spans(name, out, groups).spans
                        for name, out in outputs.items() if isinstance(out, SpanScores)}
        scores = {name: _checked(name, out.scalars() if isinstance(out, SpanScores) else out, groups)
                  for name, out in outputs.items()}
        total = [[0.0] * len(group) for group in groups]
        scorable = [[True] * len(group) for group in groups]
        for c in self.components:
            if c.weight == 0:
                continue  # a logged metric, never summed
            for i, row in enumerate(scores[c.name]):
                for j, value in enumerate(row):
                    if value is None:
                        scorable[i][j] = False
                    else:
                        total[i][j] += c.weight * value
        for i, row in enumerate(total):
            for j, value in enumerate(row):
                if not math.isfinite(value):
                    parts = {c.name: scores[c.name][i][j] for c in self.components if c.weight != 0}
                    raise ValueError(
                        f"the weighted sum of {parts} (weights {self.weights}) overflowed to {value} "
                        f"for completion {j} of group {i}; keep scores and weights within float range"
                    )
        weighted = [c for c in self.components if c.weight != 0]
        scalar = [c for c in weighted if c.name not in span_outputs]
        spans = [[tuple(span.scaled(c.weight) for c in weighted if c.name in span_outputs
                        for span in span_outputs[c.name][i][j] or ()) for j in range(len(group))]
                 for i, group in enumerate(groups)]
        outcomes = [[float(sum(c.weight * v for c in scalar if (v := scores[c.name][i][j]) is not None))
                     for j in range(len(group))] for i, group in enumerate(groups)] if scalar else []
        return RewardResult(total=total, components=scores, weights=self.weights, scorable=scorable,
                            spans=spans, outcomes=outcomes)


def _checked_spans(name: str, out: SpanScores, groups: Sequence[Sequence[Completion]]) -> SpanScores:
    """`out` if it holds one span tuple (or None) per completion, else a ValueError naming the signal."""
    shape = [len(g) for g in groups]
    got = [len(row) for row in out.spans] if isinstance(out.spans, list) else None
    if got != shape:
        raise ValueError(f"signal {name!r} returned spans of group sizes {got}, expected {shape}")
    for i, row in enumerate(out.spans):
        for j, spans in enumerate(row):
            if spans is not None and not (isinstance(spans, tuple) and all(isinstance(s, Span) for s in spans)):
                raise ValueError(
                    f"signal {name!r} returned {spans!r} for completion {j} of group {i}; "
                    "give a tuple of Span(start, end, value), or None where the signal does not apply"
                )
    return out


def _checked(name: str, scores: Scores, groups: Sequence[Sequence[Completion]]) -> Scores:
    """`scores` if it is one float-or-None per completion, else a ValueError naming the signal."""
    shape = [len(g) for g in groups]
    got = [len(row) for row in scores] if isinstance(scores, list) else None
    if got != shape:
        raise ValueError(f"signal {name!r} returned scores of group sizes {got}, expected {shape}")
    for i, row in enumerate(scores):
        for j, value in enumerate(row):
            if value is not None and (not isinstance(value, float) or not math.isfinite(value)):
                raise ValueError(
                    f"signal {name!r} returned {value!r} for completion {j} of group {i}; "
                    "a score must be a finite float, or None where the signal does not apply"
                )
    return scores
