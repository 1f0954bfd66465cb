"""RLFH on the embedded default model: token-level against sequence-level against the base.

Runs examples/rlfh.yaml twice with the same seed and steps: once as shipped (the fact_feedback
spans on their tokens, process-supervised GRPO) and once with the same reward summed onto the
last token (GRPO on the sum). Both start from the same base model, whose step-0 evaluation is
the base row. Prints each run's held-out fact precision (with and without FActScore's length
penalty), statements per response and abstention rate with 95% intervals, whether precision's
interval is disjoint from the base's and statements per response within 10% of the base's, and
the first evaluated step at which precision's interval clears the base's (fewer = faster).
Writes a comparison report with the curves.

    python benchmarks/rlfh.py --steps 60 --out runs/rlfh/compare.html
    python benchmarks/rlfh.py --steps 60 --jobs 2 --set threads=1    # both runs at once, a core each
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from sharpen.config import load_config
from sharpen.evaluation.facts import FACT_METRICS
from sharpen.loop import RunConfig, run_config
from sharpen.reports import compare_runs
from sharpen.runs import RunStore

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "rlfh.yaml"
VARIANTS = {"token-level (process_grpo)": "process_grpo", "sequence-level (grpo on the sum)": "grpo"}


def fmt(m: dict) -> str:
    return f"{m['value']:.3f} [{m['ci'][0]:.3f}, {m['ci'][1]:.3f}]"


def first_disjoint_step(run_dir: Path, base_hi: float) -> str:
    """The first evaluated step whose fact-precision interval lies above the base's."""
    store = RunStore(run_dir)
    lows = {r.step: r.value for r in store.metrics("eval/fact_precision/lo")}
    store.close()
    steps = [s for s in sorted(lows) if s > 0 and lows[s] > base_hi]
    return str(steps[0]) if steps else "never"


def timed_run(cfg: RunConfig, run_dir: Path) -> tuple[dict, float]:
    """One run's summary and wall seconds (in a worker process with --jobs 2)."""
    start = time.perf_counter()
    summary = run_config(cfg, run_dir, progress=False)
    return summary, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", type=Path, default=Path("runs/rlfh"))
    ap.add_argument("--out", type=Path, default=None, help="comparison report (default: ROOT/compare.html)")
    ap.add_argument("--jobs", type=int, default=1, choices=(1, 2),
                    help="runs at a time: 2 runs both variants side by side (give them threads=1 with --set; "
                         "their seconds then share the CPU)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more config overrides")
    args = ap.parse_args()
    dirs = {label: args.root / advantage for label, advantage in VARIANTS.items()}
    cfgs = {label: load_config(EXAMPLE, RunConfig, [f"steps={args.steps}", f"seed={args.seed}",
                                                    f"learner.advantage={advantage}", *args.set])
            for label, advantage in VARIANTS.items()}
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {label: pool.submit(timed_run, cfgs[label], dirs[label]) for label in VARIANTS}
        summaries = {}
        for label, future in futures.items():
            summaries[label], seconds = future.result()
            print(f"{label}: {seconds:.0f} s, training {summaries[label]['train_seconds']:.0f} s")
    base = next(iter(summaries.values()))["baseline"]
    names = [n for n in FACT_METRICS + ("pass@1",) if n in base]
    print("| model | " + " | ".join(names) + " | precision disjoint from base | statements within 10% "
          "| first step precision clears the base |")
    print("|---" * (len(names) + 4) + "|")
    print("| base | " + " | ".join(fmt(base[n]) for n in names) + " | | | |")
    for label, summary in summaries.items():
        final = summary["final"]
        disjoint = final["fact_precision"]["ci"][0] > base["fact_precision"]["ci"][1]
        ratio = final["statements_per_response"]["value"] / base["statements_per_response"]["value"]
        print(f"| {label} | " + " | ".join(fmt(final[n]) for n in names)
              + f" | {'yes' if disjoint else 'no'} | {'yes' if abs(ratio - 1) <= 0.10 else 'no'} ({ratio:.3f}) "
              + f"| {first_disjoint_step(dirs[label], base['fact_precision']['ci'][1])} |")
    out = args.out or args.root / "compare.html"
    print(f"report: {compare_runs(list(dirs.values()), out)}")


if __name__ == "__main__":
    main()
