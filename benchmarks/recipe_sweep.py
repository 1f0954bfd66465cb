"""Steps to the held-out target of bench_vs_trl.py, over seeds, for policy-gradient recipes.

    python benchmarks/recipe_sweep.py --seeds 0,1,2,3                               # the quickstart's recipe
    python benchmarks/recipe_sweep.py --set epochs=1 --set minibatches=4 --set skip_zero_advantage=false
    python benchmarks/recipe_sweep.py --trl --lr 3e-4 --max-steps 36                # TRL's GRPOTrainer

The question it answers is how much a recipe learns per batch of rollouts, which is a property
of the seed's random streams and not of the machine: steps to target are the same at one
thread or two and under any load. For each seed: sharpen's quickstart `RunConfig` with the
learner's fields replaced by `--set key=value` (or, with `--trl`, TRL's GRPOTrainer as
bench_vs_trl.py runs it), stepped to `--max-steps` with the learning-rate schedule of the
quickstart's full run (the loop's own `train_step`, no checkpoints), and held out every
`--every` steps with bench_vs_trl.py's evaluation (seed 0's problems and samples for every
seed) and target. Printed: each seed's steps to target, the mean pass@1 over seeds at each
evaluation, and CPU seconds per step (process time of one torch thread: less sensitive to other
load than wall time, but still only rough on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_vs_trl as bench  # noqa: E402  (a sibling script, not a package)

from sharpen.loop import RunConfig, Trainer  # noqa: E402
from sharpen.models.embedded import ensure_default_model  # noqa: E402
from sharpen.models.hf import HFPolicy  # noqa: E402
from sharpen.tasks import Task, get_task  # noqa: E402


def learner_overrides(pairs: Sequence[str]) -> dict:
    """`key=value` pairs as the learner's fields; values are read as JSON where they parse
    (numbers, true/false), else kept as strings."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {pair!r}: expected key=value (a field of the learner's config)")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def sharpen_curve(task: Task, seed: int, overrides: dict, base_point: bench.EvalPoint, *, every: int,
                  problems: int, max_steps: int, target: float) -> bench.Curve:
    """One seed of sharpen: `train_step` 1..max_steps of the quickstart's run (its schedule is
    over the quickstart's steps), held out every `every` steps; CPU seconds of training only."""
    cfg = RunConfig(seed=seed)
    cfg = RunConfig.model_validate(
        {**cfg.model_dump(), "learner": {**cfg.learner.model_dump(), **overrides}}
    )
    trainer = Trainer(cfg, Path(tempfile.mkdtemp(prefix="recipe-sweep-")), progress=False)
    points, spent = [base_point], 0.0
    for step in range(1, max_steps + 1):
        t0 = time.process_time()
        trainer.train_step(step)
        spent += time.process_time() - t0
        if step % every == 0:
            result = bench.held_out(trainer.policy, task, problems)
            points.append(bench.EvalPoint(step, spent, result.metrics["pass@1"].value,
                                          result.metrics["pass@8"].value))
    trainer.store.close()
    curve = bench.Curve(f"sharpen seed {seed}", cfg.learner.lr, max_steps, spent / max_steps, points)
    return bench.with_target(curve, target)


def trl_curve(path: Path, task: Task, seed: int, base_point: bench.EvalPoint, *, lr: float, every: int,
              problems: int, max_steps: int, target: float) -> bench.Curve:
    """One seed of TRL's GRPOTrainer as bench_vs_trl.py runs it, timed in CPU seconds."""
    return bench.run_trl(path, task, RunConfig(seed=seed), base_point, lr=lr, every=every, problems=problems,
                         max_steps=max_steps, target=target, out_dir=Path(tempfile.mkdtemp(prefix="recipe-sweep-")),
                         clock=time.process_time)


def mean_curve(curves: Sequence[bench.Curve]) -> dict[int, float]:
    """Mean pass@1 over seeds at each evaluation step that every seed reached (TRL stops at the target)."""
    steps = set.intersection(*({p.step for p in c.points if p.step > 0} for c in curves))
    return {s: statistics.mean(p.pass1 for c in curves for p in c.points if p.step == s) for s in sorted(steps)}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="replace a field of the quickstart's learner config (repeatable)")
    p.add_argument("--trl", action="store_true", help="run TRL's GRPOTrainer instead of sharpen")
    p.add_argument("--lr", type=float, default=3e-4, help="TRL's learning rate (sharpen's: --set lr=…)")
    p.add_argument("--seeds", default="0,1,2,3", help="run seeds, comma-separated")
    p.add_argument("--max-steps", type=int, default=16, help="steps per seed")
    p.add_argument("--every", type=int, default=2, help="held out every this many steps")
    p.add_argument("--problems", type=int, default=200, help="held-out problems per evaluation")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--json", type=Path, default=None, help="also write every curve to this JSON file")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    bench.quiet_libraries()
    torch.set_num_threads(args.threads)
    overrides = learner_overrides(args.set)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    path, task = ensure_default_model(), get_task("addition", digits=2)
    base = bench.held_out(HFPolicy.load(path, device="cpu"), task, args.problems)
    target = bench.target_of(base)
    base_point = bench.EvalPoint(0, 0.0, base.metrics["pass@1"].value, base.metrics["pass@8"].value)
    what = f"TRL GRPOTrainer lr {args.lr:g}" if args.trl else f"sharpen, learner {overrides or 'defaults'}"
    print(f"{what} · seeds {seeds} · {args.max_steps} steps · held out every {args.every} · "
          f"target pass@1 {target:.3f} · {args.threads} thread(s)")
    curves = []
    for seed in seeds:
        if args.trl:
            curve = trl_curve(path, task, seed, base_point, lr=args.lr, every=args.every, problems=args.problems,
                              max_steps=args.max_steps, target=target)
        else:
            curve = sharpen_curve(task, seed, overrides, base_point, every=args.every, problems=args.problems,
                                  max_steps=args.max_steps, target=target)
        reached = "—" if curve.step_to_target is None else curve.step_to_target
        print(f"  seed {seed}: steps to target {reached} · CPU s/step {curve.seconds_per_step:.3f} · pass@1 "
              + " ".join(f"{p.pass1:.3f}" for p in curve.points if p.step > 0), flush=True)
        curves.append(curve)
    means = mean_curve(curves)
    print("mean pass@1 at step " + " · ".join(f"{s}: {v:.3f}" for s, v in means.items()))
    print(f"steps to target {' / '.join('—' if c.step_to_target is None else str(c.step_to_target) for c in curves)}"
          f" · CPU s/step (mean over seeds) {statistics.mean(c.seconds_per_step for c in curves):.3f}")
    figures = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "target": target,
               "curves": [asdict(c) for c in curves], "mean_pass1": means}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
