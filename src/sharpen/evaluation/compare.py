"""Compare inference-time strategies on the same held-out problems: accuracy, cost, significance.

    from sharpen.evaluation.compare import compare_strategies

    comparison = compare_strategies(policy, task, ["single", "self_consistency-8"], problems=100)
    console.print(comparison.table())
    comparison.plot("frontier.png")            # accuracy (95% CI) against tokens per problem
    json.dumps(comparison.to_json())

Every strategy answers the *same* problems (drawn once from the task's eval split with `seed`).
Each final text is scored with `task.check`; an unscorable verdict (correct=None) counts as
wrong and is counted in `unscorable`. Per strategy we report

- accuracy = (1/P) Σ_i 1[correct_i], with a 95% percentile-bootstrap interval over problems
  (`bootstrap_ci`, 1000 resamples);
- tokens per problem = (1/P) Σ_i StrategyResult.tokens_i (every token the strategy generated
  for problem i, over all its calls);
- over budget: tokens per problem > `budget`, when a budget is given. Such strategies stay in
  every report, marked, never dropped.

Significance between two strategies A and B is a **paired bootstrap over problems**: with
d_i = 1[A correct on i] − 1[B correct on i], draw 1000 resamples of the P problem indices
with replacement (the same indices for A and B, which keeps the pairing), take each
resample's mean difference, and read the (2.5%, 97.5%) percentiles. The difference is
significant when that 95% interval excludes 0; A "beats" B when it is significant and the
observed difference is positive. Pairing removes the between-problem variance both strategies
share, so it is sharper than comparing two unpaired intervals. With many strategies, no
multiple-comparison correction is applied: read the pairs as 95% intervals, one per pair.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from rich.table import Table

from sharpen.evaluation.metrics import bootstrap_ci, mean
from sharpen.models.base import Policy, SamplingParams
from sharpen.strategies import build_strategy, parse_strategy_spec
from sharpen.tasks.base import Task

CONFIDENCE = 0.95
"""Level of every interval in a comparison."""
N_BOOT = 1000
"""Bootstrap resamples per interval (accuracy and paired differences)."""


class CompareError(ValueError):
    """A comparison was asked for with unusable arguments (no specs, repeated specs, no problems)."""


@dataclass(frozen=True)
class StrategyScore:
    """One strategy's outcome on the compared problems."""

    spec: str
    """The strategy spec as given, e.g. "self_consistency-8"; also its label."""
    accuracy: float
    ci: tuple[float, float]
    """(low, high) 95% percentile-bootstrap interval of accuracy over problems."""
    tokens_per_problem: float
    over_budget: bool
    """True when a budget was given and tokens_per_problem exceeds it."""
    correct: tuple[bool, ...]
    """Per problem (in problem order): was the final text correct (None verdicts count False)."""
    tokens: tuple[int, ...]
    """Per problem: tokens the strategy generated."""
    unscorable: int
    """Problems whose checker returned correct=None."""
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "accuracy": self.accuracy,
            "ci": list(self.ci),
            "tokens_per_problem": self.tokens_per_problem,
            "over_budget": self.over_budget,
            "unscorable": self.unscorable,
            "seconds": self.seconds,
            "correct": list(self.correct),
            "tokens": list(self.tokens),
        }


@dataclass(frozen=True)
class PairTest:
    """Paired bootstrap test of accuracy(a) − accuracy(b) over the same problems."""

    a: str
    b: str
    difference: float
    """Observed accuracy(a) − accuracy(b)."""
    ci: tuple[float, float]
    """95% paired-bootstrap interval of the difference."""
    significant: bool
    """The interval excludes 0."""

    @property
    def winner(self) -> Optional[str]:
        """The significantly better strategy, or None."""
        if not self.significant:
            return None
        return self.a if self.difference > 0 else self.b

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "difference": self.difference, "ci": list(self.ci),
                "significant": self.significant, "winner": self.winner}


@dataclass(frozen=True)
class Comparison:
    """Strategies compared on the same problems, with every pairwise significance test."""

    task: str
    n_problems: int
    seed: int
    budget: Optional[float]
    strategies: list[StrategyScore]
    """In the order the specs were given."""
    pairs: list[PairTest]
    """One test per unordered pair (i < j in spec order)."""

    def score(self, spec: str) -> StrategyScore:
        for s in self.strategies:
            if s.spec == spec:
                return s
        raise KeyError(f"no strategy {spec!r} in this comparison; have: {[s.spec for s in self.strategies]}")

    def pair(self, a: str, b: str) -> PairTest:
        """The test of a against b (either order; the difference is always a − b)."""
        for p in self.pairs:
            if (p.a, p.b) == (a, b):
                return p
            if (p.a, p.b) == (b, a):
                lo, hi = p.ci
                return PairTest(a, b, -p.difference, (-hi, -lo), p.significant)
        raise KeyError(f"no pair ({a!r}, {b!r}) in this comparison")

    def beats(self, spec: str) -> list[str]:
        """The strategies `spec` is significantly more accurate than, in spec order."""
        return [s.spec for s in self.strategies if s.spec != spec and self.pair(spec, s.spec).winner == spec]

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "n_problems": self.n_problems,
            "seed": self.seed,
            "budget": self.budget,
            "confidence": CONFIDENCE,
            "n_boot": N_BOOT,
            "strategies": [{**s.to_json(), "beats": self.beats(s.spec)} for s in self.strategies],
            "pairs": [p.to_json() for p in self.pairs],
        }

    def table(self, title: Optional[str] = None) -> Table:
        """A rich table: #, strategy, accuracy [95% CI], tokens/problem, and the numbers (#) of
        the strategies it is significantly more accurate than (numbers keep the table narrow)."""
        caption = (f"{self.n_problems} problems · seed {self.seed} · "
                   "beats = paired bootstrap over problems, 95% interval of the difference excludes 0")
        if self.budget is not None:
            caption += f" · budget {self.budget:g} tokens/problem"
        table = Table(title=title or f"strategies on {self.task}", caption=caption)
        table.add_column("#", justify="right")
        table.add_column("strategy", overflow="fold")
        table.add_column(f"accuracy [{CONFIDENCE:.0%} CI]", justify="right", no_wrap=True)
        table.add_column("tokens / problem", justify="right")
        table.add_column("beats #")
        number = {s.spec: str(i) for i, s in enumerate(self.strategies, 1)}
        for s in self.strategies:
            tokens = f"{s.tokens_per_problem:.2f}"
            if s.over_budget:
                tokens += " [red](over budget)[/red]"
            table.add_row(number[s.spec], s.spec, f"{s.accuracy:.3f} [{s.ci[0]:.3f}, {s.ci[1]:.3f}]", tokens,
                          " ".join(number[b] for b in self.beats(s.spec)) or "—")
        return table

    def plot(self, path: str | Path) -> Path:
        """Write a PNG of accuracy (95% CI error bars) against tokens per problem, one labelled
        point per strategy; over-budget points are hollow and the budget is a dashed line."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        path = Path(path)
        fig = Figure(figsize=(6.4, 4.4))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for s in self.strategies:
            yerr = [[max(s.accuracy - s.ci[0], 0.0)], [max(s.ci[1] - s.accuracy, 0.0)]]
            ax.errorbar([s.tokens_per_problem], [s.accuracy], yerr=yerr, fmt="o", capsize=4,
                        mfc="none" if s.over_budget else None)
            label = s.spec + (" (over budget)" if s.over_budget else "")
            ax.annotate(label, (s.tokens_per_problem, s.accuracy), textcoords="offset points",
                        xytext=(6, 6), fontsize=8)
        if self.budget is not None:
            ax.axvline(self.budget, linestyle="--", color="grey", linewidth=1, label="budget")
            ax.legend(loc="lower right", fontsize=8)
        ax.margins(x=0.3)  # room for the labels right of the points
        ax.set_xlabel("tokens per problem")
        ax.set_ylabel(f"accuracy ({CONFIDENCE:.0%} bootstrap CI)")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(f"strategies on {self.task} ({self.n_problems} problems)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", dpi=120)
        return path


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    n_boot: int = N_BOOT,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, tuple[float, float]]:
    """(mean(a − b), percentile interval) from a paired bootstrap over problems.

    Resamples problem indices with replacement, the same indices for a and b; returns the
    observed mean difference and the (α/2, 1 − α/2) percentiles of the resampled mean
    differences, α = 1 − confidence. Deterministic for a given seed.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size == 0:
        raise ValueError(f"paired_bootstrap needs two non-empty flat sequences of equal length, got {x.shape} and {y.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"paired_bootstrap needs 0 < confidence < 1, got {confidence}")
    d = x - y  # (P,)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))  # (n_boot, P)
    means = d[idx].mean(axis=1)
    alpha = 1.0 - confidence
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(d.mean()), (float(lo), float(hi))


def compare_strategies(
    policy: Policy,
    task: Task,
    specs: Sequence[str],
    *,
    problems: int = 100,
    seed: int = 0,
    budget: Optional[float] = None,
    temperature: Optional[float] = None,
) -> Comparison:
    """Run every strategy spec on the same `problems` eval problems (drawn with `seed`), score
    each final text with task.check, and test every pair for a significant accuracy difference.
    Every strategy samples at `temperature` (default: the strategies' own, 1) within the task's
    budget and stop strings.

    Raises CompareError for no specs, a repeated spec, problems < 1, a negative budget or
    temperature, and the strategies' own errors (StrategySpecError, …) for a bad spec, before
    anything is run.
    """
    specs = [s.strip() for s in specs if s.strip()]
    if not specs:
        raise CompareError("compare needs at least one strategy spec")
    repeated = sorted({s for s in specs if specs.count(s) > 1})
    if repeated:
        raise CompareError(f"strategy spec(s) given more than once: {', '.join(repeated)}")
    if problems < 1:
        raise CompareError(f"compare needs problems >= 1, got {problems}")
    if budget is not None and budget < 0:
        raise CompareError(f"budget must be >= 0 tokens per problem, got {budget}")
    if temperature is not None and temperature < 0:
        raise CompareError(f"temperature must be >= 0, got {temperature}")
    sampling = {} if temperature is None else {
        "params": SamplingParams(temperature=temperature, max_new_tokens=task.max_new_tokens, stop=task.stop)}

    # build everything first, so a bad spec fails before any generation
    strategies = []
    for spec in specs:
        name, options = parse_strategy_spec(spec, user_code=True)  # specs from the user's command line
        strategies.append(build_strategy(name, policy=policy, task=task, **options, **sampling))

    batch = task.problems("eval", problems, seed)
    if not batch:
        raise CompareError(f"task {task.name!r} gave no eval problems")

    scores = []
    for spec, strategy in zip(specs, strategies):
        start = time.perf_counter()
        results = strategy(list(batch))
        if len(results) != len(batch):
            raise RuntimeError(f"strategy {spec!r} returned {len(results)} results for {len(batch)} problems")
        verdicts = [task.check(r.problem, r.text).correct for r in results]
        correct = tuple(v is True for v in verdicts)
        tokens = tuple(int(r.tokens) for r in results)
        tpp = mean(tokens)
        scores.append(StrategyScore(
            spec=spec,
            accuracy=mean([float(c) for c in correct]),
            ci=bootstrap_ci([float(c) for c in correct], n_boot=N_BOOT, confidence=CONFIDENCE, seed=seed),
            tokens_per_problem=tpp,
            over_budget=budget is not None and tpp > budget,
            correct=correct,
            tokens=tokens,
            unscorable=sum(v is None for v in verdicts),
            seconds=time.perf_counter() - start,
        ))

    pairs = []
    for i in range(len(scores)):
        for j in range(i + 1, len(scores)):
            a, b = scores[i], scores[j]
            diff, ci = paired_bootstrap(a.correct, b.correct, seed=seed)
            pairs.append(PairTest(a.spec, b.spec, diff, ci, significant=ci[0] > 0 or ci[1] < 0))

    return Comparison(task=task.name, n_problems=len(batch), seed=seed, budget=budget,
                      strategies=scores, pairs=pairs)
