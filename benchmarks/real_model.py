"""A real instruct model (SmolLM2-135M-Instruct by default) measured with sharpen's own paths.

Two subcommands, each one process that prints its figures and the command that made them:

    compare   `sharpen compare` on the addition task of examples/smollm2_addition.yaml (chat
              prompt, operands 1-20): self-consistency@8 against a single sample on the same
              held-out problems, both at --temperature, each with its 95% bootstrap interval
              over problems, and the paired bootstrap of their difference
              (`sharpen.evaluation.compare.compare_strategies`). Whether the two intervals are
              disjoint is printed. Operands 1-20 give only 77 held-out problems (400 ordered
              pairs, a fifth of them in the eval split), too few for two intervals ~0.2 apart
              to separate; `--max-operand 40` gives 322, `--max-operand 50` 500.
    gsm8k     `sharpen eval` on the GSM8K test split (task `gsm8k`, chat prompt): greedy pass@1
              with its 95% bootstrap interval (`sharpen.evaluation.evaluate`) on --limit
              problems: a seeded random subset of the 1,319 test problems (the task's own
              draw, `task.problems("eval", limit, seed)`), or all of them with --limit 0.

    python benchmarks/real_model.py compare                                 # the 77 problems of operands 1-20
    python benchmarks/real_model.py compare --max-operand 40 --problems 322  # every problem of operands 1-40
    python benchmarks/real_model.py gsm8k --limit 100 --max-new-tokens 256
    python benchmarks/real_model.py compare --problems 20 && python benchmarks/real_model.py gsm8k --limit 5  # smoke

`--model` takes any sharpen model spec ('smollm2' is converted once by `sharpen model
smollm2` and cached). Wall times are printed: on a shared machine they are figures under load.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
from rich.console import Console

from sharpen.evaluation import evaluate
from sharpen.evaluation.compare import compare_strategies
from sharpen.models import load_policy
from sharpen.tasks import get_task

console = Console()

ADDITION_OPTIONS = {"chat": True, "max_operand": 20}
"""The task of examples/smollm2_addition.yaml (--max-operand replaces the 20)."""
GSM8K_TEST_PROBLEMS = 1319


def cmd_compare(args: argparse.Namespace) -> dict:
    options = {**ADDITION_OPTIONS, "max_operand": args.max_operand}
    task = get_task("addition", **options)
    single, voted = "single", f"self_consistency-{args.n}"
    policy = load_policy(args.model, seed=args.seed, progress=False)
    start = time.perf_counter()
    comparison = compare_strategies(policy, task, [single, voted], problems=args.problems, seed=args.seed,
                                    temperature=args.temperature)
    seconds = time.perf_counter() - start
    console.print(comparison.table(f"{args.model} on {task.description}: strategies at temperature {args.temperature}"))
    one, many = comparison.score(single), comparison.score(voted)
    pair = comparison.pair(voted, single)
    disjoint = many.ci[0] > one.ci[1]
    console.print(f"{voted} − {single}: {pair.difference:+.3f}, paired 95% interval [{pair.ci[0]:+.3f}, {pair.ci[1]:+.3f}]"
                  f" ({'significant' if pair.significant else 'not significant'})")
    console.print(f"intervals disjoint: {'yes' if disjoint else 'no'} ({voted} low {many.ci[0]:.3f} vs {single} "
                  f"high {one.ci[1]:.3f}); {comparison.n_problems} problems, wall time {seconds:.0f} s")
    if comparison.n_problems < args.problems:
        console.print(f"asked for {args.problems} problems: the eval split of operands 1-{args.max_operand} holds "
                      f"only {comparison.n_problems}")
    return {"model": args.model, "task": {"name": "addition", "options": options},
            "temperature": args.temperature, "intervals_disjoint": disjoint, "seconds": seconds,
            **comparison.to_json()}


def cmd_gsm8k(args: argparse.Namespace) -> dict:
    task = get_task("gsm8k", chat=True, max_new_tokens=args.max_new_tokens)
    limit = args.limit or GSM8K_TEST_PROBLEMS
    policy = load_policy(args.model, seed=args.seed, progress=False)
    result = evaluate(policy, task, n_problems=limit, samples=1, ks=[1], temperature=0.0, seed=args.seed,
                      batch_size=args.batch_size, progress=False)
    subset = ("all" if result.n_problems == GSM8K_TEST_PROBLEMS
              else f"a seeded subset (seed {args.seed}) of {result.n_problems}")
    console.print(result.table(f"{args.model} on GSM8K test ({subset} of its {GSM8K_TEST_PROBLEMS} problems), "
                               f"greedy, ≤ {args.max_new_tokens} new tokens"))
    pass1 = result.metrics["pass@1"]
    console.print(f"GSM8K test N = {result.n_problems}: greedy pass@1 {pass1.value:.3f} "
                  f"[{pass1.ci[0]:.3f}, {pass1.ci[1]:.3f}], {result.tokens_per_problem:.0f} tokens per problem, "
                  f"{result.unscorable} unscorable, wall time {result.seconds:.0f} s")
    return {"model": args.model, "task": {"name": "gsm8k", "split": "test", "chat": True},
            "limit": result.n_problems, "max_new_tokens": args.max_new_tokens, "temperature": 0.0,
            **result.to_json()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="model spec (default: smollm2, SmolLM2-135M-Instruct)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, metavar="FILE", help="also write every figure as JSON")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's choice; 1 on a machine other processes share)")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compare", help="self-consistency@N against a single sample on chat addition (operands 1-20)")
    p.add_argument("--problems", type=int, default=300,
                   help="held-out problems, the same for both strategies (at most what the eval split holds)")
    p.add_argument("--max-operand", type=int, default=20, help="operands from 1 to this (the example's 20)")
    p.add_argument("--n", type=int, default=8, help="samples of self-consistency")
    p.add_argument("--temperature", type=float, default=0.7)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("gsm8k", help="greedy pass@1 on the GSM8K test split")
    p.add_argument("--limit", type=int, default=100,
                   help="test problems: a seeded subset of this size (0: all 1,319)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16, help="problems per generate call")
    p.set_defaults(func=cmd_gsm8k)

    args = ap.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    console.print("command: python " + " ".join(shlex.quote(a) for a in sys.argv))
    report = args.func(args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
