"""Scale-out: the quickstart config in process, on Ray synchronous, and on Ray asynchronous.

    python benchmarks/scale_out.py --json scale_out.json          # the full run (4 × the quickstart)
    python benchmarks/scale_out.py --steps 20 --every 5           # a smoke run

One process, four runs of the quickstart's `RunConfig` (GRPO on 2-digit addition, the embedded
default model, its default 150 steps), each evaluated every `--every` steps on the same held-out
problems:

  1. in_process          rollouts sampled in the training process (the default)
  2. ray_sync            `rollouts: {executor: ray, workers: W}`: step t's problems sampled on
                         W Ray actors with step t's weights (max_staleness 0)
  3. ray_async           the same with max_staleness 1: the workers sample step t+1 while the
                         learner trains on step t
  4. ray_async_tis       the same with the decoupled clip, `learner.tis_cap` 2.0 (clip to the
                         weights before the update, weight by min(π_prox/μ, 2)), as
                         examples/grpo_ray_async.yaml ships it

For each: training steps per second (steps / Σ train_step_seconds, the loop's step wall time
without its held-out evaluation), the target = pass@1 + 0.8 × (pass@8 − pass@1) of the base model
(the in-process run's step-0 evaluation), the first step whose evaluation reaches it and the
training seconds spent up to it, and the run's whole wall time (Ray start-up and evaluations
included). Ratios are to in_process, from the same process run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from sharpen.loop import EvalConfig, RunConfig, run_config
from sharpen.rollouts import RolloutsConfig
from sharpen.runs import RunStore

RAY_RUNS = ("ray_sync", "ray_async", "ray_async_tis")
TIS_CAP = 2.0
"""The decoupled clip's importance-weight cap of ray_async_tis (examples/grpo_ray_async.yaml's)."""
TARGET_FRACTION = 0.8
"""Share of the base model's pass@1 → pass@8 gap that the target closes (as bench_vs_trl.py)."""


def configs(steps: Optional[int], every: int, problems: int, workers: int,
            threads: Optional[int]) -> dict[str, RunConfig]:
    """The quickstart's RunConfig (its defaults, read from the code) under each executor."""
    base = RunConfig(eval=EvalConfig(every=every, problems=problems), threads=threads)
    if steps is not None:
        base = base.model_copy(update={"steps": steps})
    ray = {"executor": "ray", "workers": workers}
    ray_async = base.model_copy(update={"rollouts": RolloutsConfig(**ray, max_staleness=1)})
    return {
        "in_process": base,
        "ray_sync": base.model_copy(update={"rollouts": RolloutsConfig(**ray)}),
        "ray_async": ray_async,
        "ray_async_tis": ray_async.model_copy(update={"learner": ray_async.learner.model_copy(update={"tis_cap": TIS_CAP})}),
    }


def figures(run_dir: Path, target: Optional[float]) -> dict:
    """Speed and time to target of one run, read back from its run store."""
    with RunStore(run_dir) as store:
        step_seconds = {r.step: r.value for r in store.metrics("train_step_seconds")}
        pass1 = {r.step: r.value for r in store.metrics("eval/pass@1")}
        pass8 = {r.step: r.value for r in store.metrics("eval/pass@8")}
        staleness = [r.value for r in store.metrics("off_policy/staleness_mean")]
        dropped = sum(r.value for r in store.metrics("off_policy/dropped_rollouts"))
        idle = [r.value for r in store.metrics("off_policy/worker_idle_seconds")]
        wait = [r.value for r in store.metrics("off_policy/rollout_wait_seconds")]
    train = sum(step_seconds.values())
    out = {
        "steps": len(step_seconds), "train_seconds": train, "steps_per_second": len(step_seconds) / train,
        "base_pass@1": pass1[0], "base_pass@8": pass8[0], "final_pass@1": pass1[max(pass1)],
        "best_pass@1": max(pass1.values()),
    }
    if staleness:
        out.update(staleness_mean=sum(staleness) / len(staleness), dropped_rollouts=dropped,
                   worker_idle_seconds_per_step=sum(idle) / len(idle), rollout_wait_seconds_per_step=sum(wait) / len(wait))
    if target is not None:
        spent, hit = 0.0, None
        for step in sorted(step_seconds):
            spent += step_seconds[step]
            if pass1.get(step, -1.0) >= target:
                hit = (step, spent)
                break
        out["step_to_target"], out["seconds_to_target"] = hit if hit else (None, None)
    return out


def main(argv: Optional[list[str]] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=None, help="replace the quickstart's step count")
    ap.add_argument("--every", type=int, default=10, help="held-out evaluation every this many steps")
    ap.add_argument("--problems", type=int, default=200, help="held-out problems per evaluation")
    ap.add_argument("--workers", type=int, default=2, help="Ray rollout workers")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of the training process (default: torch's; each worker uses its CPU share)")
    ap.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = ap.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="scale-out-"))
    results: dict = {"command": "python benchmarks/scale_out.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    target = None
    for name, cfg in configs(args.steps, args.every, args.problems, args.workers, args.threads).items():
        start = time.perf_counter()
        run_config(cfg, out / name, progress=False)
        wall = time.perf_counter() - start
        if target is None:  # the base model's evaluation of the first (in-process) run
            with RunStore(out / name) as store:
                p1, p8 = store.metrics("eval/pass@1")[0].value, store.metrics("eval/pass@8")[0].value
            target = p1 + TARGET_FRACTION * (p8 - p1)
            results["target"] = target
        results[name] = {**figures(out / name, target), "wall_seconds": wall}
        print(name, json.dumps(results[name]), flush=True)
    base = results["in_process"]
    for name in RAY_RUNS:
        r = results[name]
        r["steps_per_second_ratio"] = r["steps_per_second"] / base["steps_per_second"]
        if r.get("seconds_to_target") and base.get("seconds_to_target"):
            r["seconds_to_target_ratio"] = r["seconds_to_target"] / base["seconds_to_target"]
    print(f"\ntarget pass@1 {target:.3f} (base {base['base_pass@1']:.3f} → pass@8 {base['base_pass@8']:.3f})")
    print(f"{'run':<13} {'steps/s':>8} {'× in-proc':>9} {'step→tgt':>8} {'s→tgt':>7} {'final p@1':>9} {'wall s':>7}")
    for name in ("in_process", *RAY_RUNS):
        r = results[name]
        tgt_s = f"{r['seconds_to_target']:.1f}" if r.get("seconds_to_target") else "—"
        print(f"{name:<13} {r['steps_per_second']:>8.2f} {r.get('steps_per_second_ratio', 1.0):>9.2f} "
              f"{r.get('step_to_target') or '—':>8} {tgt_s:>7} {r['final_pass@1']:>9.3f} {r['wall_seconds']:>7.0f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
