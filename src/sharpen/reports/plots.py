"""PNG plots of a run: held-out curves, training curves, accuracy per turn, and run comparisons.

Figures are drawn with `matplotlib.figure.Figure` on an Agg canvas, never through pyplot, so
nothing global (the pyplot figure list, the chosen backend, rcParams) changes for other code
in the same process. Each function returns the PNG path it wrote, or None when the run has
nothing to draw.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from sharpen.reports.data import EvalCurve, Series, display_order, turn_curves
from sharpen.runs.metric_names import TRAIN_NAMES

PANEL_SIZE = (4.2, 3.0)
"""Inches per panel."""
DPI = 100
MAX_TURN_LINES = 6
"""Evaluated steps drawn in the per-turn plot (base and final always among them)."""


def _figure(n_panels: int, ncols: int = 3) -> tuple[Any, list[Any]]:
    """A Figure on an Agg canvas with n panels in a grid, and its axes in reading order."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # imported on use: plotting is slow to load
    from matplotlib.figure import Figure
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n_panels)]
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.ticklabel_format(axis="y", useOffset=False)  # no "1e-13+1e-1" on flat curves
    return fig, axes


def _save(fig: Any, path: Union[str, Path]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def _color(i: int) -> str:
    return f"C{i % 10}"


# -- smoothing ------------------------------------------------------------------------


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Centred moving average over `window` points (an even window is rounded up to odd).

    Near the ends the window shrinks to the points that exist, so the curve keeps its length
    and does not sag toward zero: [0, 3, 6, 9, 12] with window 3 -> [1.5, 3, 6, 9, 10.5].
    """
    x = np.asarray(values, dtype=float)  # (T,)
    if window <= 1 or x.size == 0:
        return x.copy()
    half = window // 2
    csum = np.concatenate([[0.0], np.cumsum(x)])  # (T+1,)
    i = np.arange(x.size)
    lo = np.maximum(i - half, 0)  # (T,) first index in the window
    hi = np.minimum(i + half + 1, x.size)  # (T,) one past the last
    return (csum[hi] - csum[lo]) / (hi - lo)


def smoothing_window(n_points: int) -> int:
    """About a tenth of the points, odd, at most 51; no smoothing under 10 points."""
    if n_points < 10:
        return 1
    return min(51, (n_points // 10) | 1)


# -- held-out evaluation curves -------------------------------------------------------


def _is_rate(curve: EvalCurve) -> bool:
    points = [v for v in curve.values + curve.lo + curve.hi if not math.isnan(v)]
    return all(-1e-9 <= v <= 1 + 1e-9 for v in points)


def _draw_eval(ax: Any, curve: EvalCurve, color: str, label: str, errorbars: bool = True) -> None:
    steps = np.asarray(curve.steps)
    y, lo, hi = (np.asarray(a, dtype=float) for a in (curve.values, curve.lo, curve.hi))
    has_band = not np.all(np.isnan(lo) | np.isnan(hi))
    if has_band:
        ax.fill_between(steps, lo, hi, color=color, alpha=0.15, linewidth=0)
    if errorbars and has_band:
        yerr = np.clip(np.stack([y - lo, hi - y]), 0.0, None)  # (2, n); NaN = no bar
        ax.errorbar(steps, y, yerr=yerr, color=color, marker="o", ms=4, capsize=3, lw=1.5, label=label)
    else:
        ax.plot(steps, y, color=color, marker="o", ms=4, lw=1.5, label=label)


def plot_eval_curves(curves: dict[str, EvalCurve], path: Union[str, Path]) -> Optional[Path]:
    """Each held-out metric against step with its 95% interval (band and error bars).

    Metrics that are rates (every value in [0, 1]: pass@k, maj@k, accuracy) share the first
    panel so pass@1 can be read against pass@k; each other metric (tokens per problem, ...)
    gets its own panel.
    """
    if not curves:
        return None
    rates = [m for m in display_order(curves) if _is_rate(curves[m])]
    others = [m for m in display_order(curves) if m not in rates]
    fig, axes = _figure(bool(rates) + len(others))
    panels = [("held-out rates (95% interval)", rates, True)] if rates else []
    panels += [(f"{m} (95% interval)", [m], False) for m in others]
    for ax, (title, metrics, is_rate) in zip(axes, panels):
        for i, metric in enumerate(metrics):
            _draw_eval(ax, curves[metric], _color(i), metric)
        ax.set_title(title)
        ax.set_xlabel("step (0 = base model)")
        if is_rate:
            ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize="small")
    return _save(fig, path)


# -- training curves ------------------------------------------------------------------


@dataclass(frozen=True)
class Panel:
    """One small training plot: the metrics it draws and whether to smooth them."""

    title: str
    names: tuple[str, ...]
    """Exact metric names drawn, when logged."""
    pattern: Optional[str] = None
    """A regular expression for further names (e.g. one mean per reward signal)."""
    smooth: bool = True


TRAINING_PANELS = (
    Panel("reward", ("reward/mean",), r"^rewards/[^/]+/mean$"),
    Panel("training accuracy", ("train/accuracy",)),
    Panel("loss", ("loss", "pg_loss", "sft/loss"), r"^(dpo|ipo|irpo)/(loss|dpo_loss|nll_loss)$"),
    Panel("selection (rejection sampling, B-STaR)", ("select/problems_with_kept", "bstar/pass@k",
                                                    "bstar/selection_accuracy")),
    Panel("training examples per step", ("select/kept", "star/rationalized", "pairs/count")),
    Panel("preference margin", (), r"^(dpo|ipo|irpo)/(reward_margin|reward_accuracy)$"),
    Panel("KL", ("approx_kl", "kl_ref")),
    Panel("clip fraction", ("clip_frac", "clip_frac_low", "clip_frac_high")),
    Panel("entropy", ("entropy",)),
    Panel("groups with zero reward spread", ("reward/frac_zero_std",)),
    Panel("gradient norm", ("grad_norm",)),
    Panel("learning rate", ("lr",), smooth=False),
    Panel("tokens per second", ("gen_tokens_per_s", "train_tokens_per_s")),
    Panel("seconds per step", ("step_seconds", "train_step_seconds")),
)
"""What the training figure draws, in order; a panel whose metrics were not logged is left out."""


def _panel_names(panel: Panel, series: dict[str, Series]) -> list[str]:
    names = [n for n in panel.names if n in series]
    if panel.pattern:
        names += sorted(n for n in series if re.match(panel.pattern, n) and n not in names)
    return [n for n in names if series[n].finite().steps]


def legend_name(name: str) -> str:
    """A training metric's legend: its run-store name and, where trackers rename it, TRL's
    (`runs.metric_names`), so the report and a TensorBoard or W&B page can be read side by side."""
    theirs = TRAIN_NAMES.get(name)
    return f"{name} (TRL: {theirs})" if theirs else name


def _draw_training(ax: Any, s: Series, color: str, smooth: bool) -> None:
    steps, y = np.asarray(s.steps), np.asarray(s.values, dtype=float)
    flat = np.ptp(y) <= 1e-9 * max(1.0, float(np.max(np.abs(y))))  # smoothing would only add rounding noise
    window = smoothing_window(len(y)) if smooth and not flat else 1
    if window == 1:
        ax.plot(steps, y, color=color, lw=1.2, marker="." if len(y) < 30 else None, label=legend_name(s.name))
        return
    ax.plot(steps, y, color=color, lw=0.6, alpha=0.3, marker=".", ms=2)  # raw points
    ax.plot(steps, moving_average(y, window), color=color, lw=1.6, label=f"{legend_name(s.name)} (avg {window})")


def plot_training_curves(series: dict[str, Series], path: Union[str, Path]) -> Optional[Path]:
    """Reward, accuracy and health metrics of training, one small panel each (those logged).

    Noisy curves are drawn raw and faint with a centred moving average over them.
    """
    panels = [(p, names) for p in TRAINING_PANELS if (names := _panel_names(p, series))]
    if not panels:
        return None
    fig, axes = _figure(len(panels))
    for ax, (panel, names) in zip(axes, panels):
        for i, name in enumerate(names):
            _draw_training(ax, series[name].finite(), _color(i), panel.smooth)
        ax.set_title(panel.title)
        ax.set_xlabel("step")
        if len(names) > 1 or panel.smooth:
            ax.legend(fontsize="x-small")
    return _save(fig, path)


# -- accuracy per turn ----------------------------------------------------------------


def _pick_steps(steps: list[int], k: int) -> list[int]:
    """At most k of the sorted steps, evenly spread, always the first and the last."""
    if len(steps) <= k:
        return steps
    picks = {steps[round(i * (len(steps) - 1) / (k - 1))] for i in range(k)}
    return sorted(picks)


def plot_turn_accuracy(curves: dict[str, EvalCurve], path: Union[str, Path]) -> Optional[Path]:
    """Held-out accuracy against turn, one line per evaluated step (base and final included)."""
    turns = turn_curves(curves)
    if not turns:
        return None
    import matplotlib  # available: _figure below fails with a clear message otherwise

    all_steps = sorted({s for c in turns.values() for s in c.steps})
    shown = _pick_steps(all_steps, MAX_TURN_LINES)
    fig, (ax,) = _figure(1)
    cmap = matplotlib.colormaps["viridis"]
    for j, step in enumerate(shown):
        x, y, yerr = _turn_points(turns, step)
        role = " (base)" if step == 0 else " (final)" if step == all_steps[-1] else ""
        color = cmap(j / max(1, len(shown) - 1) * 0.9)
        ax.errorbar(x, y, yerr=yerr, color=color, marker="o", capsize=3, label=f"step {step}{role}")
    ax.set_xticks(list(turns))
    ax.set_xlabel("turn")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("accuracy per turn (95% interval)")
    ax.legend(fontsize="small")
    return _save(fig, path)


def _turn_points(turns: dict[int, EvalCurve], step: int) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(turns, accuracy, error bars (2, n)) of the evaluation at `step`, for the turns it has."""
    x, y, lo, hi = [], [], [], []
    for k, curve in turns.items():
        if step in curve.steps:
            i = curve.steps.index(step)
            x.append(k), y.append(curve.values[i]), lo.append(curve.lo[i]), hi.append(curve.hi[i])
    y_, lo_, hi_ = (np.asarray(a, dtype=float) for a in (y, lo, hi))
    return x, y_, np.clip(np.stack([y_ - lo_, hi_ - y_]), 0.0, None)  # NaN = no bar


def plot_turn_comparison(runs: Sequence[tuple[str, dict[str, EvalCurve]]], path: Union[str, Path]) -> Optional[Path]:
    """Accuracy against turn for several runs: each run's base model (step 0, dashed) next to
    its last evaluation (solid), in the run's colour, with 95% intervals. Runs without turn
    metrics are left out; None if no run has any."""
    drawn = [(label, turns) for label, curves in runs if (turns := turn_curves(curves))]
    if not drawn:
        return None
    fig, (ax,) = _figure(1)
    ticks: set[int] = set()
    for i, (label, turns) in enumerate(drawn):
        steps = sorted({s for c in turns.values() for s in c.steps})
        shown = [(steps[0], "--", "base" if steps[0] == 0 else f"step {steps[0]}")]
        if steps[-1] != steps[0]:
            shown.append((steps[-1], "-", f"step {steps[-1]}"))
        for step, style, role in shown:
            x, y, yerr = _turn_points(turns, step)
            ax.errorbar(x, y, yerr=yerr, color=_color(i), ls=style, marker="o", capsize=3, label=f"{label}: {role}")
        ticks |= set(turns)
    ax.set_xticks(sorted(ticks))
    ax.set_xlabel("turn")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("accuracy per turn, base dashed (95% CI)")
    ax.legend(fontsize="x-small")
    return _save(fig, path)


# -- comparison of runs ---------------------------------------------------------------


def plot_comparison(
    runs: Sequence[tuple[str, dict[str, EvalCurve]]], metrics: Sequence[str], path: Union[str, Path]
) -> Optional[Path]:
    """One panel per held-out metric, the runs overlaid (line per run, interval as a band)."""
    if not metrics or not runs:
        return None
    fig, axes = _figure(len(metrics), ncols=2)
    for ax, metric in zip(axes, metrics):
        for i, (label, curves) in enumerate(runs):
            if metric in curves:
                _draw_eval(ax, curves[metric], _color(i), label, errorbars=False)
        ax.set_title(f"{metric} (95% interval)")
        ax.set_xlabel("step (0 = base model)")
        ax.legend(fontsize="small")
    return _save(fig, path)
