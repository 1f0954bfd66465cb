"""How close are label-free accuracy estimates to the labelled truth, before and after training?

Trains the quickstart run (`sharpen quickstart`'s RunConfig: GRPO on 2-digit addition, every
checkpoint kept), then for the base model and three checkpoints (a third, two thirds and all
of the way) samples `--samples` completions per held-out problem and prints, per model, the
label-free estimates (METHODS.md §8) next to the labelled truth:

    pass@1 ≈ mean pairwise agreement of the samples' answers
    maj@n  ≈ mean top vote share

with the absolute errors and their mean over models (MAE). `--line` adds the agreement-on-
the-line fit over the models (source: the task's train split, labelled; target: eval split).

    python benchmarks/label_free.py                                  # quickstart run, 4 models
    python benchmarks/label_free.py --model PATH --task NAME          # a given model (repeatable)
    python benchmarks/label_free.py --steps 3 --problems 8           # a smoke run
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sharpen.evaluation import evaluate
from sharpen.evaluation.label_free import agreement_on_the_line, label_free
from sharpen.loop import EvalConfig, RunConfig, run_config
from sharpen.models import load_policy
from sharpen.runs import RunStore
from sharpen.tasks import get_task

console = Console()


def train_quickstart(steps: int | None, problems: int, seed: int, run_dir: Path) -> tuple[RunConfig, list[tuple[str, str]]]:
    """Run the quickstart config with every checkpoint kept (or reuse a finished run in
    run_dir); returns the config and [(label, model path)] of the base model and three checkpoints."""
    cfg = RunConfig(seed=seed, eval=EvalConfig(problems=problems))
    if steps is not None:
        cfg = cfg.model_copy(update={"steps": steps})
    every = min(cfg.checkpoint_every, max(1, cfg.steps // 3))
    cfg = cfg.model_copy(update={"checkpoint_every": every, "keep_checkpoints": cfg.steps})
    if not (run_dir / "summary.json").exists():
        console.print(f"training the quickstart config, {cfg.steps} steps → {run_dir}")
        run_config(cfg, run_dir, progress=False)
    with RunStore(run_dir) as store:
        saved = {c.step: c.path for c in store.checkpoints() if Path(c.path).exists()}
    wanted = [round(cfg.steps * f / 3) for f in (1, 2, 3)]
    picked = [min(saved, key=lambda s: (abs(s - w), s)) for w in wanted]
    return cfg, [("base", cfg.model)] + [(f"step {s}", saved[s]) for s in picked]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=None,
                    help="evaluate this model instead of training (repeatable; a local HF path or 'default')")
    ap.add_argument("--task", default="addition", help="task of --model (the quickstart task otherwise)")
    ap.add_argument("--problems", type=int, default=200, help="held-out problems per model")
    ap.add_argument("--samples", type=int, default=8, help="samples per problem (n of maj@n)")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the quickstart's)")
    ap.add_argument("--run-dir", default="runs/label-free-bench", help="where the quickstart run is (re)used")
    ap.add_argument("--line", action="store_true", help="also fit agreement on the line over the models")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    console.print("command: python " + " ".join(shlex.quote(a) for a in sys.argv))

    if args.model:
        models = [(m, m) for m in args.model]
        task = get_task(args.task)
    else:
        cfg, models = train_quickstart(args.steps, args.problems, args.seed, Path(args.run_dir))
        task = get_task(cfg.task.name, **cfg.task.options)
    n = args.samples
    table = Table(title=f"label-free estimates vs labelled truth: {task.name}, {args.problems} problems × {n} samples")
    for col in ("model", "pass@1 est.", "pass@1 true", "|err|", f"maj@{n} est.", f"maj@{n} true", "|err|"):
        table.add_column(col, justify="right")
    errors: dict[str, list[float]] = {"pass@1": [], f"maj@{n}": []}
    target, source = [], []
    start = time.perf_counter()
    for label, path in models:
        policy = load_policy(path, seed=args.seed, progress=False)
        run = lambda split: evaluate(policy, task, n_problems=args.problems, samples=n, ks=[1, n],
                                     seed=args.seed, split=split, progress=False)
        result = run("eval")
        target.append(result)
        if args.line:
            source.append(run("train"))
        est = label_free(result, args.seed)
        cells = []
        for name in errors:
            c = est[name]
            errors[name].append(c.abs_error)
            cells += [f"{c.estimate.value:.3f}", f"{c.truth:.3f}", f"{c.abs_error:.3f}"]
        table.add_row(label, *cells)
    mae = {name: sum(v) / len(v) for name, v in errors.items()}
    table.add_row("MAE", "", "", f"{mae['pass@1']:.3f}", "", "", f"{mae[f'maj@{n}']:.3f}")
    console.print(table)
    if args.line:
        if len(models) < 3:
            console.print("--line needs at least 3 models")
            return 2
        line = agreement_on_the_line(source, target, args.seed)
        truth = [r.metrics["pass@1"].value for r in target]
        console.print(f"agreement on the line: slope {line.slope:.3f}, intercept {line.intercept:.3f}, R² {line.r2:.3f}")
        for (label, _), s, d, t in zip(models, line.aline_s, line.aline_d, truth):
            console.print(f"  {label}: ALine-S {s:.3f}, ALine-D {d:.3f}, truth {t:.3f}")
        for name, preds in (("ALine-S", line.aline_s), ("ALine-D", line.aline_d)):
            console.print(f"  {name} MAE {sum(abs(p - t) for p, t in zip(preds, truth)) / len(truth):.3f}")
    console.print(f"evaluation wall time {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
