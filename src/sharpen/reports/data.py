"""What a report reads from a run directory: metric series, held-out curves, before/after, samples.

Naming convention of the store (written by the training loop):
- training metrics at steps 1..N (`reward/mean`, `loss`, `approx_kl`, ...);
- held-out evaluations at some steps (step 0 = the base model), `eval/<metric>` with the 95%
  interval as `eval/<metric>/lo` and `eval/<metric>/hi`; multi-turn runs (rise, score) also log
  `eval/turn<k>/accuracy` and the other turn metrics of `evaluation.turns`.
`summary.json` (absent while a run is unfinished) holds
`{"baseline": {metric: {"value": v, "ci": [lo, hi]}}, "final": {...}, "wall_seconds": s, ...}`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from sharpen.runs.store import FILENAME, CompletionRow, MetricRow, RunStore

SUMMARY = "summary.json"
EVAL_PREFIX = "eval/"
_TURN_ACCURACY = re.compile(r"^turn(\d+)/accuracy$")


@dataclass(frozen=True)
class Series:
    """One metric's logged values in step order (NaN where the store holds NULL)."""

    name: str
    steps: tuple[int, ...]
    values: tuple[float, ...]

    def finite(self) -> Series:
        """The same series without its NaN points."""
        kept = [(s, v) for s, v in zip(self.steps, self.values) if math.isfinite(v)]
        return Series(self.name, tuple(s for s, _ in kept), tuple(v for _, v in kept))


def metric_series(rows: Iterable[MetricRow]) -> dict[str, Series]:
    """Group metric rows by name, each in step order."""
    points: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        points.setdefault(row.name, []).append((row.step, row.value))
    return {
        name: Series(name, tuple(s for s, _ in sorted(p)), tuple(v for _, v in sorted(p)))
        for name, p in points.items()
    }


@dataclass(frozen=True)
class EvalCurve:
    """A held-out metric against step, with its 95% interval (NaN where none was logged)."""

    metric: str
    """Without the `eval/` prefix, e.g. "pass@1" or "turn2/accuracy"."""
    steps: tuple[int, ...]
    values: tuple[float, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]


def is_eval_metric(name: str) -> bool:
    """An `eval/<metric>` value (not one of its interval bounds)."""
    return name.startswith(EVAL_PREFIX) and not name.endswith(("/lo", "/hi"))


def eval_curves(series: dict[str, Series]) -> dict[str, EvalCurve]:
    """Every held-out metric with its interval, keyed by metric name without `eval/`."""
    curves = {}
    for name in sorted(n for n in series if is_eval_metric(n)):
        s = series[name].finite()
        if not s.steps:
            continue
        lo, hi = series.get(name + "/lo"), series.get(name + "/hi")
        lo_at = dict(zip(lo.steps, lo.values)) if lo else {}
        hi_at = dict(zip(hi.steps, hi.values)) if hi else {}
        curves[name[len(EVAL_PREFIX):]] = EvalCurve(
            metric=name[len(EVAL_PREFIX):],
            steps=s.steps,
            values=s.values,
            lo=tuple(lo_at.get(step, math.nan) for step in s.steps),
            hi=tuple(hi_at.get(step, math.nan) for step in s.steps),
        )
    return curves


def turn_curves(curves: dict[str, EvalCurve]) -> dict[int, EvalCurve]:
    """The `turn<k>/accuracy` curves of a multi-turn run, keyed by turn k (ascending)."""
    turns = {}
    for metric, curve in curves.items():
        match = _TURN_ACCURACY.match(metric)
        if match:
            turns[int(match.group(1))] = curve
    return dict(sorted(turns.items()))


def display_order(metrics: Iterable[str]) -> list[str]:
    """pass@1 first (the headline number), then the rest by name."""
    return sorted(metrics, key=lambda m: (m != "pass@1", m))


@dataclass(frozen=True)
class Estimate:
    """A value with its 95% interval (None where none is known)."""

    value: float
    lo: Optional[float] = None
    hi: Optional[float] = None


@dataclass(frozen=True)
class BeforeAfter:
    """One held-out metric of the base model and of the trained model."""

    metric: str
    base: Optional[Estimate]
    final: Optional[Estimate]

    @property
    def delta(self) -> Optional[float]:
        """final - base, or None if either is missing."""
        if self.base is None or self.final is None:
            return None
        return self.final.value - self.base.value


@dataclass(frozen=True)
class RunData:
    """Everything a report shows about one run directory."""

    run_dir: Path
    name: str
    config: Optional[dict[str, Any]]
    series: dict[str, Series]
    summary: Optional[dict[str, Any]]
    """summary.json as written, or None if the run has not written it (yet)."""
    last_step: Optional[int]
    checkpoints: int
    samples: tuple[CompletionRow, ...]
    """A few completions from the last steps that stored any, newest step first."""


class RunDirError(FileNotFoundError):
    """A directory given to a report is missing or holds no run."""


class RunDataError(ValueError):
    """A run's summary.json is malformed; the message names the file."""


def _check_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} does not exist; pass the directory a training run wrote")
    if not (run_dir / FILENAME).is_file():
        raise RunDirError(
            f"{run_dir} is not a run directory: it holds no {FILENAME}; "
            "pass the directory a training run wrote (the one with run.sqlite in it)"
        )


def _read_summary(run_dir: Path) -> Optional[dict[str, Any]]:
    path = run_dir / SUMMARY
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RunDataError(f"{path} is not valid JSON (line {e.lineno}): {e.msg}; fix or delete it") from e
    if not isinstance(summary, dict):
        raise RunDataError(f"{path} should hold a JSON object, found {type(summary).__name__}")
    return summary


def _latest_samples(store: RunStore, last_step: Optional[int], n: int) -> tuple[CompletionRow, ...]:
    """Up to n completions from the newest steps that stored any (one indexed query per step)."""
    rows: list[CompletionRow] = []
    step = last_step
    while step is not None and step >= 0 and len(rows) < n:
        rows.extend(store.completions(step=step)[: n - len(rows)])
        step -= 1
    return tuple(rows)


def load_run(run_dir: Union[str, Path], n_samples: int = 8) -> RunData:
    """Read one run directory (its run.sqlite and, if present, summary.json)."""
    run_dir = Path(run_dir)
    _check_run_dir(run_dir)  # before RunStore, which would create an empty store
    summary = _read_summary(run_dir)
    with RunStore(run_dir) as store:
        config = store.config()
        last_step = store.last_step()
        data = RunData(
            run_dir=run_dir,
            name=str(config["name"]) if config and isinstance(config.get("name"), str) else run_dir.resolve().name,
            config=config,
            series=metric_series(store.metrics()),
            summary=summary,
            last_step=last_step,
            checkpoints=len(store.checkpoints()),
            samples=_latest_samples(store, last_step, n_samples),
        )
    return data


def _estimate(entry: Any, where: str) -> Estimate:
    if isinstance(entry, (int, float)) and not isinstance(entry, bool):
        return Estimate(float(entry))
    if isinstance(entry, dict) and "value" in entry:
        value = math.nan if entry["value"] is None else float(entry["value"])
        ci = entry.get("ci")
        if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(c, (int, float)) for c in ci):
            return Estimate(value, float(ci[0]), float(ci[1]))
        return Estimate(value)
    raise RunDataError(f"{where} should be {{\"value\": v, \"ci\": [lo, hi]}}, found {entry!r}")


def _from_summary(summary: dict[str, Any], path: Path) -> list[BeforeAfter]:
    sides: dict[str, dict[str, Estimate]] = {}
    for side in ("baseline", "final"):
        entries = summary.get(side) or {}
        if not isinstance(entries, dict):
            raise RunDataError(f"{path}: \"{side}\" should map metric names to values, found {entries!r}")
        sides[side] = {
            k.removeprefix(EVAL_PREFIX): _estimate(v, f"{path}: {side}.{k}") for k, v in entries.items()
        }
    metrics = list(sides["baseline"]) + [m for m in sides["final"] if m not in sides["baseline"]]
    return [BeforeAfter(m, sides["baseline"].get(m), sides["final"].get(m)) for m in metrics]


def _point(curve: EvalCurve, i: int) -> Estimate:
    lo, hi = curve.lo[i], curve.hi[i]
    return Estimate(curve.values[i], None if math.isnan(lo) else lo, None if math.isnan(hi) else hi)


def _from_curves(curves: dict[str, EvalCurve]) -> list[BeforeAfter]:
    rows = []
    for metric in display_order(curves):
        curve = curves[metric]
        base = _point(curve, 0) if curve.steps[0] == 0 else None
        final = _point(curve, -1) if curve.steps[-1] > 0 else None
        rows.append(BeforeAfter(metric, base, final))
    return rows


def before_after(run: RunData) -> tuple[list[BeforeAfter], str]:
    """Base vs trained model per held-out metric, and a sentence saying where the numbers come from.

    From summary.json when the run wrote one; otherwise from the store's evaluations at step 0
    and at the last evaluated step (an unfinished run still gets a comparison).
    """
    if run.summary is not None:
        return _from_summary(run.summary, run.run_dir / SUMMARY), f"from {SUMMARY}"
    curves = eval_curves(run.series)
    if not curves:
        return [], f"no {SUMMARY} and no held-out evaluations in the store yet"
    last = max(c.steps[-1] for c in curves.values())
    return _from_curves(curves), f"no {SUMMARY} (unfinished run?): held-out evaluations at step 0 and step {last} of the store"
