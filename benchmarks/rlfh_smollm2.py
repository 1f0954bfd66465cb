"""RLFH on SmolLM2 with the policy as its own statement splitter and judge.

Two parts, both on the `facts` task in its chat form (the known attributes given as notes):

1. The self-judge against the truth: SmolLM2 answers held-out questions; each answer is judged
   twice, by the task's own reader against the knowledge base (the measurement) and by SmolLM2
   itself (`fact_feedback` with judge: policy: it lists each sentence's facts, then calls each
   true / false / unknown given the knowledge text). Printed: fact precision and statements per
   response by each judge, how often the two agree on whether a response is fully right, and
   the seconds the self-judge took.
2. A short RLFH run (examples/smollm2_rlfh.yaml: fact_feedback by the policy, process-supervised
   GRPO) and the held-out fact metrics before and after, with 95% intervals.

    python benchmarks/rlfh_smollm2.py --problems 20 --samples 4 --steps 10 [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from sharpen.config import load_config
from sharpen.evaluation.facts import FACT_METRICS, fact_precision
from sharpen.loop import RunConfig, run_config
from sharpen.models import SamplingParams, load_policy
from sharpen.signals.facts import PolicyStatementJudge
from sharpen.tasks import get_task

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "smollm2_rlfh.yaml"


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def judge_against_truth(problems: int, samples: int, seed: int) -> None:
    policy = load_policy("smollm2", seed=seed, progress=False)
    task = get_task("facts", chat=True)
    batch = task.problems("eval", problems, seed)
    groups = policy.generate([p.prompt for p in batch], SamplingParams(
        n=samples, temperature=0.7, max_new_tokens=96, seed=seed))
    truth = [[task.check_facts(p, c.text) for c in g] for p, g in zip(batch, groups)]
    start = time.perf_counter()
    own = PolicyStatementJudge(policy)(batch, groups)
    seconds = time.perf_counter() - start
    flat_truth = [c for row in truth for c in row]
    flat_own = [c for row in own for c in row]
    print(f"{len(flat_truth)} SmolLM2 answers ({problems} held-out people × {samples}), e.g.:\n  {groups[0][0].text!r}")
    for name, checks in (("task reader (truth)", flat_truth), ("SmolLM2 as its own judge", flat_own)):
        precisions = [p for c in checks if (p := fact_precision(c)) is not None]
        print(f"  {name:26s} fact precision {mean(precisions):.3f} over {len(precisions)} answering responses, "
              f"statements / response {mean([len(c.statements) for c in checks]):.2f}")
    both = [(t, o) for t, o in zip(flat_truth, flat_own) if not t.abstained and not o.abstained]
    agree = mean([float((fact_precision(t) == 1.0) == (fact_precision(o) == 1.0)) for t, o in both])
    print(f"  agreement on 'every statement right': {agree:.3f} over {len(both)} responses both judges read; "
          f"self-judging took {seconds:.1f} s ({seconds / len(flat_own):.2f} s per response)")


def short_run(steps: int, run_dir: Path, threads: int | None) -> None:
    overrides = [f"steps={steps}", f"eval.every={steps}"] + ([f"threads={threads}"] if threads else [])
    cfg = load_config(EXAMPLE, RunConfig, overrides)
    start = time.perf_counter()
    summary = run_config(cfg, run_dir, progress=False)
    print(f"RLFH on SmolLM2, {steps} steps ({time.perf_counter() - start:.0f} s, report {summary['report']}):")
    for name in FACT_METRICS + ("pass@1",):
        before, after = summary["baseline"].get(name), summary["final"].get(name)
        if before and after:
            print(f"  {name:26s} {before['value']:.3f} [{before['ci'][0]:.3f}, {before['ci'][1]:.3f}] → "
                  f"{after['value']:.3f} [{after['ci'][0]:.3f}, {after['ci'][1]:.3f}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=20, help="held-out people judged in part 1")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10, help="RLFH steps in part 2 (0: skip it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-dir", type=Path, default=Path("runs/smollm2_rlfh"))
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 under load)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    judge_against_truth(args.problems, args.samples, args.seed)
    if args.steps:
        short_run(args.steps, args.run_dir, args.threads)


if __name__ == "__main__":
    main()
