"""Evaluate a policy on a task: sample a group per problem, check it, report metrics with CIs.

Every metric is first computed per problem and then averaged over problems, so each one
gets a bootstrap interval over problems (METHODS.md §6). Tokens generated per problem are
always reported next to accuracy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from rich.progress import Progress
from rich.table import Table

from sharpen.evaluation.facts import fact_problem_metrics
from sharpen.evaluation.metrics import bootstrap_ci, maj_at_k, mean, pass_at_k
from sharpen.models.base import Completion, Policy, SamplingParams, with_prompt_seeds
from sharpen.seeds import derive_seed
from sharpen.tasks.base import Problem, Prompt, Task

CONFIDENCE = 0.95
"""Level of every reported confidence interval."""
N_BOOT = 1000
"""Bootstrap resamples per interval."""


@dataclass(frozen=True)
class Metric:
    """A mean over problems with its bootstrap confidence interval."""

    value: float
    ci: tuple[float, float]
    """(low, high) percentile-bootstrap interval at `CONFIDENCE`."""


@dataclass(frozen=True)
class ProblemRecord:
    """What happened on one problem: its group of completions and their scores."""

    problem_id: str
    prompt: Prompt
    completions: tuple[str, ...]
    """Completion texts, in sampling order."""
    answers: tuple[Optional[str], ...]
    """Label-free answers read by `task.extract` (None: nothing readable)."""
    correct: tuple[Optional[bool], ...]
    """Checker verdicts; None means unscorable."""
    tokens: int
    """Tokens generated for this problem, summed over its completions."""
    metrics: dict[str, Optional[float]]
    """This problem's value of every reported metric (None: undefined here, e.g. the fact
    precision of a problem whose every response abstained; left out of the mean)."""


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one evaluation, with intervals, cost and (optionally used) per-problem records."""

    metrics: dict[str, Metric]
    """"accuracy", "pass@k" for each k, "maj@k" for each k > 1; for a fact task
    (`Task.check_facts`) also fact_precision, fact_precision_penalized, statements_per_response
    and abstention_rate (`evaluation.facts`)."""
    tokens_per_problem: float
    """Mean over problems of tokens generated (summed over that problem's samples)."""
    n_problems: int
    samples: int
    """Completions sampled per problem."""
    unscorable: int
    """Completions whose checker returned correct=None (counted as not correct)."""
    seconds: float
    """Wall-clock time of the evaluation."""
    problems: list[ProblemRecord] = field(default_factory=list)

    def to_json(self, include_problems: bool = False) -> dict[str, Any]:
        """A JSON-ready dict: {"metrics": {name: {"value", "ci"}}, "tokens_per_problem", …}."""
        out: dict[str, Any] = {
            "metrics": {name: {"value": m.value, "ci": list(m.ci)} for name, m in self.metrics.items()},
            "tokens_per_problem": self.tokens_per_problem,
            "n_problems": self.n_problems,
            "samples": self.samples,
            "unscorable": self.unscorable,
            "seconds": self.seconds,
        }
        if include_problems:
            out["problems"] = [
                {
                    "problem_id": r.problem_id,
                    "prompt": r.prompt,
                    "completions": list(r.completions),
                    "answers": list(r.answers),
                    "correct": list(r.correct),
                    "tokens": r.tokens,
                    "metrics": r.metrics,
                }
                for r in self.problems
            ]
        return out

    def table(self, title: str = "evaluation") -> Table:
        """A rich table: one row per metric with its interval, then tokens per problem."""
        caption = (
            f"{self.n_problems} problems × {self.samples} samples · "
            f"{self.unscorable} unscorable · {self.seconds:.1f} s"
        )
        table = Table(title=title, caption=caption)
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column(f"{CONFIDENCE:.0%} CI", justify="right")
        for name, m in self.metrics.items():
            table.add_row(name, f"{m.value:.3f}", f"[{m.ci[0]:.3f}, {m.ci[1]:.3f}]")
        table.add_row("tokens / problem", f"{self.tokens_per_problem:.1f}", "")
        return table


def score_group(
    problem: Problem, completions: Sequence[Completion], task: Task, ks: Sequence[int]
) -> ProblemRecord:
    """Check one problem's group and compute its per-problem metrics.

    accuracy = (1/n) Σ_i 1[correct_i]; pass@k and maj@k as in `metrics`. An unscorable
    completion (Verdict.correct is None) counts as not correct here; the caller counts it.
    """
    texts = tuple(c.text for c in completions)
    verdicts = [task.check(problem, t) for t in texts]
    answers = tuple(task.extract(t) for t in texts)
    correct = [v.correct is True for v in verdicts]
    n, c = len(texts), sum(correct)
    metrics = {"accuracy": c / n}
    metrics.update({f"pass@{k}": pass_at_k(n, c, k) for k in ks})
    metrics.update({f"maj@{k}": maj_at_k(answers, correct, k) for k in ks if k > 1})
    if task.check_facts is not None:
        metrics.update(fact_problem_metrics([task.check_facts(problem, t) for t in texts]))
    return ProblemRecord(
        problem_id=problem.id,
        prompt=problem.prompt,
        completions=texts,
        answers=answers,
        correct=tuple(v.correct for v in verdicts),
        tokens=sum(c.n_tokens for c in completions),
        metrics=metrics,
    )


def evaluate(
    policy: Policy,
    task: Task,
    *,
    n_problems: int = 200,
    samples: int = 8,
    ks: Sequence[int] = (1, 8),
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: Optional[int] = None,
    seed: int = 0,
    split: str = "eval",
    batch_size: int = 16,
    progress: bool = True,
) -> EvalResult:
    """Sample `samples` completions for each of `n_problems` problems and measure them.

    Problems come from `task.problems(split, n_problems, seed)` and are sent to the policy
    `batch_size` problems per `generate` call, with the task's `max_new_tokens` (unless
    given) and stop strings; batch b is sampled with seed `derive_seed(seed, "eval", b)`
    (a stream of its own, never a training step's: `sharpen.seeds`), each problem's group from
    its own seed within it (`with_prompt_seeds`: the same samples however the batch is sharded). Reported: accuracy,
    pass@k for every k in `ks` with k <= samples (larger k are skipped), maj@k for those
    k > 1, each a mean over problems with a bootstrap CI over problems, plus tokens per
    problem and the number of unscorable completions. A fact task adds its fact metrics
    (`evaluation.facts`), each a mean over the problems where it is defined.
    """
    if batch_size < 1:
        raise ValueError(f"evaluate needs batch_size >= 1, got {batch_size}")
    problems = task.problems(split, n_problems, seed)
    if not problems:
        raise ValueError(f"task {task.name!r} gave no problems for split {split!r}")
    reported_ks = sorted({k for k in ks if 1 <= k <= samples})
    start = time.perf_counter()
    records: list[ProblemRecord] = []
    with Progress(disable=not progress) as bar:
        bar_id = bar.add_task(f"evaluating {task.name}", total=len(problems))
        for b, first in enumerate(range(0, len(problems), batch_size)):
            batch = problems[first : first + batch_size]
            params = SamplingParams(
                n=samples,
                temperature=temperature,
                top_p=top_p,
                max_new_tokens=task.max_new_tokens if max_new_tokens is None else max_new_tokens,
                stop=task.stop,
                seed=derive_seed(seed, "eval", b),
            )
            groups = policy.generate([p.prompt for p in batch], with_prompt_seeds(params, len(batch)))
            _check_shape(groups, len(batch), samples)
            records.extend(score_group(p, g, task, reported_ks) for p, g in zip(batch, groups))
            bar.advance(bar_id, len(batch))
    seconds = time.perf_counter() - start

    metrics: dict[str, Metric] = {}
    for name in records[0].metrics:
        values = [v for r in records if (v := r.metrics[name]) is not None]
        if values:
            metrics[name] = Metric(mean(values), bootstrap_ci(values, N_BOOT, CONFIDENCE, seed))
    return EvalResult(
        metrics=metrics,
        tokens_per_problem=mean([r.tokens for r in records]),
        n_problems=len(records),
        samples=samples,
        unscorable=sum(c is None for r in records for c in r.correct),
        seconds=seconds,
        problems=records,
    )


def _check_shape(groups: Sequence[Sequence[Completion]], n_prompts: int, samples: int) -> None:
    """Fail loudly when a backend returns the wrong number of groups or completions."""
    if len(groups) != n_prompts:
        raise ValueError(f"policy.generate returned {len(groups)} groups for {n_prompts} prompts")
    for i, group in enumerate(groups):
        if len(group) != samples:
            raise ValueError(
                f"policy.generate returned {len(group)} completions for prompt {i}, asked for n={samples}"
            )
