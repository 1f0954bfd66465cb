"""Self-contained HTML reports: one run (`write_report`) or several side by side (`compare_runs`).

A report is one HTML file with its PNGs beside it, referenced by relative name: no JavaScript
and no network resources, so the folder can be copied or attached as is. Every text that
comes from a run (config, completions, metric names) is HTML-escaped.

    write_report("runs/add2")                      # -> runs/add2/report.html
    compare_runs(["runs/grpo", "runs/star"], "runs/cmp")   # -> runs/cmp/compare.html
"""

from __future__ import annotations

import html
import json
import math
import os
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union
from urllib.parse import quote

import yaml

from sharpen.reports.data import (
    EVAL_PREFIX,
    BeforeAfter,
    Estimate,
    RunData,
    before_after,
    display_order,
    eval_curves,
    load_run,
)
from sharpen.reports.plots import (
    plot_comparison,
    plot_eval_curves,
    plot_training_curves,
    plot_turn_accuracy,
    plot_turn_comparison,
)

PathLike = Union[str, Path]

MAX_TEXT = 1500
"""Characters of a prompt or completion shown before it is cut."""
MAX_COMPARED_METRICS = 12
"""Panels in a comparison figure."""

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1300px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.meta, .note { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { margin: 0; white-space: pre-wrap; word-break: break-word; font-size: 0.95em; }
pre.config { background: #f8f8f8; padding: 0.8em; border: 1px solid #eee; }
img { max-width: 100%; border: 1px solid #eee; }
"""


class _Html(str):
    """Text that is already HTML (not escaped again by `_table`)."""


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


# -- formatting numbers ---------------------------------------------------------------


def fmt(value: Optional[float]) -> str:
    """A metric value: 3 decimals below 10, 1 below 1000, else whole; tiny ones (lr) as 3.00e-04."""
    if value is None or math.isnan(value):
        return "–"
    if 0 < abs(value) < 1e-3:
        return f"{value:.2e}"
    if abs(value) < 10:
        return f"{value:.3f}"
    if abs(value) < 1000:
        return f"{value:.1f}"
    return f"{value:.0f}"


def fmt_estimate(e: Optional[Estimate]) -> str:
    """`0.410 [0.330, 0.490]`, or the value alone when no interval is known."""
    if e is None:
        return "–"
    if e.lo is None or e.hi is None:
        return fmt(e.value)
    return f"{fmt(e.value)} [{fmt(e.lo)}, {fmt(e.hi)}]"


def fmt_delta(delta: Optional[float]) -> str:
    """A signed difference: `+0.460`, `-1.5`."""
    if delta is None or math.isnan(delta):
        return "–"
    return ("+" if delta >= 0 else "-") + fmt(abs(delta))


def _fmt_scalar(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return fmt(float(value))


def _cut(text: str, limit: int = MAX_TEXT) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"… ({len(text) - limit} more characters)"


# -- building blocks ------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    """An HTML table; cells are escaped unless they are `_Html`; columns in `numeric` right-align."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for j, cell in enumerate(row):
            inner = cell if isinstance(cell, _Html) else _esc(cell)
            cells.append(f'<td class="num">{inner}</td>' if j in numeric else f"<td>{inner}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(png: Path, alt: str) -> str:
    return f'<p><img src="{_esc(quote(png.name))}" alt="{_esc(alt)}"></p>'


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def _page(title: str, body: Sequence[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _resolve_out(out: Optional[PathLike], default_dir: Path, default_name: str) -> Path:
    """`out` may name the HTML file (ending in .html) or the directory to write it into."""
    if out is None:
        path = default_dir / default_name
    else:
        out = Path(out)
        path = out if out.suffix.lower() in (".html", ".htm") else out / default_name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _generated() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# -- one run --------------------------------------------------------------------------


def _before_after_section(run: RunData) -> list[str]:
    rows, source = before_after(run)
    parts = ["<h2>Before and after training</h2>", _note(f"Held-out metrics with 95% intervals, {source}.")]
    if rows:
        table_rows = [(r.metric, fmt_estimate(r.base), fmt_estimate(r.final), fmt_delta(r.delta)) for r in rows]
        parts.append(_table(["metric", "base model", "final model", "difference"], table_rows, numeric=(1, 2, 3)))
    scalars = {k: v for k, v in (run.summary or {}).items() if k not in ("baseline", "final")}
    if scalars:
        parts.append(_table(["summary", "value"], [(k, _fmt_scalar(v)) for k, v in scalars.items()], numeric=(1,)))
    return parts


def _latest_metrics_table(run: RunData) -> str:
    rows = []
    for name in sorted(n for n in run.series if not n.startswith(EVAL_PREFIX)):
        s = run.series[name].finite()
        if s.steps:
            rows.append((name, s.steps[-1], fmt(s.values[-1])))
    return _table(["metric", "last step", "last value"], rows, numeric=(1, 2)) if rows else _note("none logged")


def _samples_table(run: RunData) -> str:
    if not run.samples:
        return _note("No completions stored.")
    rows = [
        (
            c.step,
            c.problem_id,
            _Html(f"<pre>{_esc(_cut(c.prompt))}</pre>"),
            _Html(f"<pre>{_esc(_cut(c.completion))}</pre>"),
            fmt(c.reward),
            _Html(f"<pre>{_esc(_cut(json.dumps(c.extras, sort_keys=True), 400))}</pre>") if c.extras else "",
        )
        for c in run.samples
    ]
    return _table(["step", "problem", "prompt", "completion", "reward", "extras"], rows, numeric=(0, 4))


def _config_text(config: Optional[dict[str, Any]]) -> str:
    if config is None:
        return _note("No config stored.")
    text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return f'<pre class="config">{_esc(text)}</pre>'


def write_report(run_dir: PathLike, out: Optional[PathLike] = None) -> Path:
    """Write the HTML report of one run and its PNGs; return the HTML path.

    `out` is the HTML file (a path ending in .html) or a directory to write `report.html`
    into; by default the run directory itself. The PNGs are written beside the HTML, named
    after it (`report-eval.png`, `report-training.png`, `report-turns.png`).
    Raises FileNotFoundError if `run_dir` holds no run.sqlite.
    """
    run = load_run(run_dir)
    path = _resolve_out(out, run.run_dir, "report.html")
    stem = path.parent / path.stem
    curves = eval_curves(run.series)
    eval_png = plot_eval_curves(curves, f"{stem}-eval.png")
    turns_png = plot_turn_accuracy(curves, f"{stem}-turns.png")
    training_png = plot_training_curves(run.series, f"{stem}-training.png")

    steps = "no steps written" if run.last_step is None else f"last step {run.last_step}"
    body = [
        f"<h1>sharpen report: {_esc(run.name)}</h1>",
        f'<p class="meta">run directory {_esc(run.run_dir.resolve())}; {steps}; '
        f"{run.checkpoints} checkpoint(s); generated {_generated()}</p>",
        *_before_after_section(run),
        "<h2>Held-out evaluations</h2>",
        _img(eval_png, "held-out metrics against step") if eval_png else _note("No held-out evaluations logged."),
    ]
    if turns_png:
        body += ["<h2>Accuracy per turn</h2>", _img(turns_png, "held-out accuracy per turn")]
    body += [
        "<h2>Training</h2>",
        _img(training_png, "training curves") if training_png else _note("No training curves logged."),
        "<h3>Latest training metrics</h3>",
        _latest_metrics_table(run),
        "<h2>Sampled completions (last steps)</h2>",
        _samples_table(run),
        "<h2>Config</h2>",
        _config_text(run.config),
    ]
    path.write_text(_page(f"sharpen report: {run.name}", body), encoding="utf-8")
    return path


# -- several runs ---------------------------------------------------------------------


def _labels(runs: Sequence[RunData]) -> list[str]:
    """Run names, with the directory added where two runs share a name."""
    counts = Counter(r.name for r in runs)
    return [r.name if counts[r.name] == 1 else f"{r.name} ({r.run_dir})" for r in runs]


def _shared(names_per_run: Sequence[Iterable[str]]) -> list[str]:
    """Metrics present in at least two of the runs (in the one run, if only one is given)."""
    counts = Counter(m for names in names_per_run for m in set(names))
    need = min(2, len(names_per_run))
    return display_order(m for m, c in counts.items() if c >= need)


def _arrow(row: Optional[BeforeAfter]) -> str:
    if row is None or (row.base is None and row.final is None):
        return "–"
    base = fmt(row.base.value) if row.base else "–"
    final = fmt(row.final.value) if row.final else "–"
    return f"{base} → {final} ({fmt_delta(row.delta)})"


def _report_link(run: RunData, page: Path) -> Any:
    """A relative link to the run's own report.html, if one has been written."""
    report = run.run_dir / "report.html"
    if not report.is_file():
        return "–"
    try:
        rel = Path(os.path.relpath(report.resolve(), page.parent.resolve()))
    except ValueError:  # another drive on Windows
        return "–"
    return _Html(f'<a href="{_esc(quote(rel.as_posix()))}">report.html</a>')


def compare_runs(run_dirs: Sequence[PathLike], out: PathLike) -> Path:
    """Write one HTML page comparing runs: held-out curves overlaid, baseline → final per run,
    and, for runs with turn metrics, accuracy per turn of each base model next to the trained one.

    `out` is the HTML file (ending in .html) or a directory to write `compare.html` into; the
    PNGs are written beside it. Every run directory must hold a run.sqlite.
    """
    if not run_dirs:
        raise ValueError("compare_runs needs at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    labels = _labels(runs)
    path = _resolve_out(out, Path("."), "compare.html")
    curves = [eval_curves(r.series) for r in runs]
    plotted = _shared(curves)[:MAX_COMPARED_METRICS]
    png = plot_comparison(list(zip(labels, curves)), plotted, path.parent / f"{path.stem}-eval.png")
    turns_png = plot_turn_comparison(list(zip(labels, curves)), path.parent / f"{path.stem}-turns.png")

    results = [before_after(r) for r in runs]
    by_metric = [{row.metric: row for row in rows} for rows, _ in results]
    columns = _shared(by_metric)
    rows = [
        (label, *(_arrow(table.get(m)) for m in columns), source)
        for label, table, (_, source) in zip(labels, by_metric, results)
    ]
    body = [
        f"<h1>sharpen comparison: {len(runs)} run(s)</h1>",
        f'<p class="meta">generated {_generated()}</p>',
        "<h2>Baseline → final</h2>",
        _note("Held-out metrics of the base model → the trained model (difference)."),
        _table(["run", *columns, "source"], rows, numeric=tuple(range(1, len(columns) + 1)))
        if columns
        else _note("The runs share no held-out metric."),
        "<h2>Held-out evaluations</h2>",
        _img(png, "held-out metrics of each run against step") if png else _note("No shared held-out evaluations."),
        *(["<h2>Accuracy per turn</h2>", _img(turns_png, "held-out accuracy per turn, base and trained, of each run")]
          if turns_png else []),
        "<h2>Runs</h2>",
        _table(
            ["run", "directory", "last step", "report"],
            [
                (label, r.run_dir.resolve(), "–" if r.last_step is None else r.last_step, _report_link(r, path))
                for label, r in zip(labels, runs)
            ],
        ),
    ]
    path.write_text(_page("sharpen comparison", body), encoding="utf-8")
    return path
