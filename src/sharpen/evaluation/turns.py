"""Turn-wise metrics of multi-turn self-correction, as pure functions over a correctness matrix.

The input is `correct`, a (P, T) boolean matrix: problem p's attempt at turn t was right.
Every metric is a mean over problems of a per-problem value, so each gets a bootstrap
interval over problems (METHODS.md §6). With c_{p,t} = 1[correct at turn t]:

    turn t accuracy   acc(t)      = (1/P) Σ_p c_{p,t}
    m1@t1                         = acc(1)                      (first turn)
    m1@tT                         = acc(T)                      (last turn)
    p1@tT                         = (1/P) Σ_p max_t c_{p,t}     (any turn right: an oracle
                                                                 picks the turn)
    maj@turns                     = (1/P) Σ_p 1[majority answer over the T turns is right]
    Δ(t1,tT)                      = acc(T) − acc(1) = (1/P) Σ_p (c_{p,T} − c_{p,1})
    Δi→c                          = (1/P) Σ_p (1 − c_{p,1}) c_{p,T}   (wrong, then right)
    Δc→i                          = (1/P) Σ_p c_{p,1} (1 − c_{p,T})   (right, then wrong)

so Δ(t1,tT) = Δi→c − Δc→i. m1@t1, m1@tT, p1@tT and majority over turns are RISE's
("Recursive Introspection: Teaching Language Model Agents How to Self-Improve"); Δ(t1,t2),
Δi→c and Δc→i are SCoRe's ("Training Language Models to Self-Correct via Reinforcement
Learning"), here between the first and the last turn.

Majority over turns follows `metrics.majority_index`: `None` answers do not vote, ties go to
the answer seen first (the earliest turn), and the winner is judged by the correctness of the
first turn that gave it; a problem where no turn has a readable answer scores 0.

Episodes that stopped early (`run_episodes(stop_when_correct=True)`) are shorter than T:
`episode_matrices` carries a stopped episode's last answer and verdict forward to every later
turn (the answer stands; the model is not asked again). So a problem solved at turn 2 of 3
counts as right at turns 2 and 3, and its final answer votes in each of those turns.
Unscorable attempts (correct None) count as not right, as in `evaluate`.

Several episodes per problem (`episodes_per_problem` = S, each sampled independently) make
every per-problem value the mean of that problem's S episode values before the bootstrap,
as `evaluate` averages a problem's samples: intervals stay over problems, and the turn
accuracies are S-sample estimates per problem (tighter than one episode each).

`evaluate_turns(policy, task, turns=T)` rolls the episodes out on held-out problems
(`episodes.run_episodes`) and measures them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np
from rich.table import Table

from sharpen.episodes import Episode, run_episodes
from sharpen.evaluation.evaluate import CONFIDENCE, N_BOOT, Metric
from sharpen.evaluation.metrics import bootstrap_ci, majority_index, mean
from sharpen.models.base import Policy, SamplingParams
from sharpen.seeds import derive_seed
from sharpen.tasks.base import Task

CorrectnessMatrix = Union[np.ndarray, Sequence[Sequence[Optional[bool]]]]
"""(P, T) verdicts: True right, False wrong, None unscorable (counted as not right)."""
AnswerMatrix = Sequence[Sequence[Optional[str]]]
"""(P, T) extracted answers, None where nothing was readable."""


def correctness_matrix(correct: CorrectnessMatrix) -> np.ndarray:
    """`correct` as a (P, T) bool array with P, T ≥ 1; None entries become False."""
    rows = [[c is not None and bool(c) for c in row] for row in correct]
    if not rows or any(len(r) != len(rows[0]) for r in rows) or len(rows[0]) == 0:
        raise ValueError("turn metrics need a non-empty rectangular (problems × turns) matrix")
    return np.asarray(rows, dtype=bool)  # (P, T)


def turn_correct(correct: CorrectnessMatrix, turn: int) -> np.ndarray:
    """Per problem c_{p,t} for a 1-based `turn` (its mean is acc(t)). Returns (P,) float."""
    c = correctness_matrix(correct)
    if not 1 <= turn <= c.shape[1]:
        raise ValueError(f"turn must be in 1..{c.shape[1]}, got {turn}")
    return c[:, turn - 1].astype(np.float64)


def any_turn_correct(correct: CorrectnessMatrix) -> np.ndarray:
    """Per problem max_t c_{p,t} (its mean is p1@tT). Returns (P,) float."""
    return correctness_matrix(correct).any(axis=1).astype(np.float64)


def change_t1_tT(correct: CorrectnessMatrix) -> np.ndarray:
    """Per problem c_{p,T} − c_{p,1} ∈ {−1, 0, 1} (its mean is Δ(t1,tT)). Returns (P,) float."""
    c = correctness_matrix(correct).astype(np.float64)
    return c[:, -1] - c[:, 0]


def wrong_to_right(correct: CorrectnessMatrix) -> np.ndarray:
    """Per problem (1 − c_{p,1}) c_{p,T} (its mean is Δi→c). Returns (P,) float."""
    c = correctness_matrix(correct)
    return (~c[:, 0] & c[:, -1]).astype(np.float64)


def right_to_wrong(correct: CorrectnessMatrix) -> np.ndarray:
    """Per problem c_{p,1} (1 − c_{p,T}) (its mean is Δc→i). Returns (P,) float."""
    c = correctness_matrix(correct)
    return (c[:, 0] & ~c[:, -1]).astype(np.float64)


def majority_over_turns(answers: AnswerMatrix, correct: CorrectnessMatrix) -> np.ndarray:
    """Per problem 1[the majority answer over its turns is right] (its mean is maj@turns);
    voting rules in the module doc. Returns (P,) float."""
    c = correctness_matrix(correct)
    if len(answers) != c.shape[0] or any(len(a) != c.shape[1] for a in answers):
        raise ValueError(f"answers must have the shape of correct, {c.shape}")
    values = []
    for row_answers, row_correct in zip(answers, c):
        winner = majority_index(row_answers)
        values.append(float(winner is not None and row_correct[winner]))
    return np.asarray(values, dtype=np.float64)


def per_problem_turn_values(
    correct: CorrectnessMatrix, answers: Optional[AnswerMatrix] = None
) -> dict[str, np.ndarray]:
    """Every turn metric's per-problem values, (P,) each, keyed by its reported name:
    "turn<t>/accuracy" for t = 1..T, "m1@t1", "m1@tT", "p1@tT", "maj@turns" (only with
    `answers`), "delta_t1_tT", "delta_i_to_c", "delta_c_to_i"."""
    c = correctness_matrix(correct)
    T = c.shape[1]
    values = {f"turn{t}/accuracy": turn_correct(c, t) for t in range(1, T + 1)}
    values["m1@t1"] = turn_correct(c, 1)
    values["m1@tT"] = turn_correct(c, T)
    values["p1@tT"] = any_turn_correct(c)
    if answers is not None:
        values["maj@turns"] = majority_over_turns(answers, c)
    values["delta_t1_tT"] = change_t1_tT(c)
    values["delta_i_to_c"] = wrong_to_right(c)
    values["delta_c_to_i"] = right_to_wrong(c)
    return values


def episode_matrices(
    episodes: Sequence[Episode], turns: Optional[int] = None
) -> tuple[np.ndarray, list[list[Optional[str]]]]:
    """(correct (P, T) bool, answers P × T) of episodes, T = `turns` or the longest episode.

    A shorter episode (stopped early) keeps its last verdict and answer for every later turn.
    """
    if not episodes:
        raise ValueError("turn metrics need at least one episode")
    longest = max(len(e.turns) for e in episodes)
    T = longest if turns is None else turns
    if T < longest:
        raise ValueError(f"an episode has {longest} turns but turns={T}")
    if any(not e.turns for e in episodes):
        raise ValueError("an episode without turns cannot be measured")
    correct, answers = [], []
    for e in episodes:
        pad = T - len(e.turns)
        correct.append([t.correct is True for t in e.turns] + [e.turns[-1].correct is True] * pad)
        answers.append(list(e.answers) + [e.turns[-1].answer] * pad)
    return np.asarray(correct, dtype=bool), answers


def per_problem_means(values: np.ndarray, episodes_per_problem: int) -> np.ndarray:
    """(P·S,) per-episode values, S consecutive episodes per problem → (P,) per-problem means."""
    S = episodes_per_problem
    if S < 1 or values.size % S:
        raise ValueError(f"{values.size} episodes cannot be split into groups of episodes_per_problem={S}")
    return values.reshape(-1, S).mean(axis=1)  # (P,)


def turn_metrics(
    source: Union[Sequence[Episode], CorrectnessMatrix],
    *,
    answers: Optional[AnswerMatrix] = None,
    turns: Optional[int] = None,
    episodes_per_problem: int = 1,
    n_boot: int = N_BOOT,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> dict[str, Metric]:
    """Turn metrics with percentile-bootstrap intervals over problems.

    `source` is a list of episodes (answers, early stops and tokens are read from them;
    `turns` pads to that many turns) or a (P, T) correctness matrix (pass `answers` for
    maj@turns). Names as in `per_problem_turn_values`; from episodes also
    "tokens_per_problem" (tokens generated over all turns, METHODS.md §6). With
    `episodes_per_problem` = S, rows come S consecutive per problem and each problem's value
    is the mean of its S rows (tokens too). Every interval uses the same seed, so they
    resample the same problems.
    """
    tokens = None
    if len(source) > 0 and isinstance(source[0], Episode):
        episodes = list(source)  # type: ignore[arg-type]
        if answers is not None:
            raise ValueError("answers are read from the episodes; pass them only with a matrix")
        correct, answers = episode_matrices(episodes, turns)
        tokens = np.asarray([e.tokens for e in episodes], dtype=np.float64)
    else:
        correct = correctness_matrix(source)  # type: ignore[arg-type]
    values = per_problem_turn_values(correct, answers)
    if tokens is not None:
        values["tokens_per_problem"] = tokens
    return {
        name: Metric(mean(v), bootstrap_ci(v, n_boot, confidence, seed))
        for name, v in ((n, per_problem_means(v, episodes_per_problem)) for n, v in values.items())
    }


@dataclass(frozen=True)
class TurnEvalResult:
    """Turn metrics of a held-out multi-turn evaluation, with what produced them."""

    metrics: dict[str, Metric]
    """Names as in `turn_metrics` (turn<t>/accuracy, m1@t1, …, tokens_per_problem)."""
    n_problems: int
    episodes_per_problem: int
    turns: int
    feedback: str
    stop_when_correct: bool
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """{"metrics": {name: {"value", "ci"}}, "turns": T, "feedback": …, …}."""
        return {
            "metrics": {name: {"value": m.value, "ci": list(m.ci)} for name, m in self.metrics.items()},
            "n_problems": self.n_problems,
            "episodes_per_problem": self.episodes_per_problem,
            "turns": self.turns,
            "feedback": self.feedback,
            "stop_when_correct": self.stop_when_correct,
            "seconds": self.seconds,
        }

    def table(self, title: str = "turn-wise evaluation") -> Table:
        """A rich table: one row per turn metric with its interval."""
        stop = ", stop when right" if self.stop_when_correct else ""
        caption = (f"{self.n_problems} problems × {self.episodes_per_problem} episodes of {self.turns} turns · "
                   f"feedback {self.feedback}{stop} · {self.seconds:.1f} s")
        table = Table(title=title, caption=caption)
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column(f"{CONFIDENCE:.0%} CI", justify="right")
        for name, m in self.metrics.items():
            table.add_row(name, f"{m.value:.3f}", f"[{m.ci[0]:.3f}, {m.ci[1]:.3f}]")
        return table


def evaluate_turns(
    policy: Policy,
    task: Task,
    *,
    turns: int = 2,
    n_problems: int = 200,
    episodes_per_problem: int = 1,
    feedback: str = "binary",
    neutral: Optional[str] = None,
    stop_when_correct: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    split: str = "eval",
) -> TurnEvalResult:
    """Roll out `episodes_per_problem` episodes of `turns` attempts on each of `n_problems`
    problems of `split` (`task.problems(split, n_problems, seed)`, the problems `evaluate`
    uses) and measure them with `turn_metrics`.

    One `run_episodes` call for all episodes (each problem repeated S times in a row), with
    the task's `max_new_tokens` and stop strings at `temperature`; turn t samples with seed
    `derive_seed(seed, "eval_turns") + t` (a stream of its own: `sharpen.seeds`). Feedback
    modes and `neutral` (None: the policy's template set's) as in `sharpen.episodes`.
    """
    if turns < 1:
        raise ValueError(f"evaluate_turns needs turns >= 1, got {turns}")
    if episodes_per_problem < 1:
        raise ValueError(f"evaluate_turns needs episodes_per_problem >= 1, got {episodes_per_problem}")
    problems = task.problems(split, n_problems, seed)
    if not problems:
        raise ValueError(f"task {task.name!r} gave no problems for split {split!r}")
    start = time.perf_counter()
    rows = [p for p in problems for _ in range(episodes_per_problem)]
    params = SamplingParams(n=1, temperature=temperature, max_new_tokens=task.max_new_tokens, stop=task.stop)
    episodes = run_episodes(policy, task, rows, turns=turns, feedback=feedback, params=params,
                            stop_when_correct=stop_when_correct, seed=derive_seed(seed, "eval_turns"),
                            neutral=neutral)
    metrics = turn_metrics(episodes, turns=turns, episodes_per_problem=episodes_per_problem, seed=seed)
    return TurnEvalResult(metrics, len(problems), episodes_per_problem, turns, feedback, stop_when_correct,
                          time.perf_counter() - start)
