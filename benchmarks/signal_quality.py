"""How well does each label-free signal tell right answers from wrong ones?

Samples N completions for held-out problems, scores them with every label-free signal, and
prints per signal: the mean score of right and of wrong completions, the score range, the
AUROC (probability that a random right completion outscores a random wrong one, ties half),
the accuracy of best-of-N selection by that signal, and what its best-vs-worst preference
pairs (`judge_pairs`, the pairs of Self-Rewarding) are: right ≻ wrong, wrong ≻ right or
wrong ≻ wrong. A learner that trains on a signal can only be as good as this.

    python benchmarks/signal_quality.py --problems 100 --samples 8
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter

from sharpen.learners.preference.pairs import judge_pairs
from sharpen.models import SamplingParams, load_policy
from sharpen.signals.reward import Reward
from sharpen.tasks import get_task

SIGNALS = ("likelihood", "self_certainty", "self_judge", "pairwise_judge", "majority_vote")


def auroc(right: list[float], wrong: list[float]) -> float:
    """P(score of a right completion > score of a wrong one), ties counted half."""
    wins = sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
    return wins / (len(right) * len(wrong))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--task", default="addition")
    ap.add_argument("--problems", type=int, default=100)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    policy = load_policy(args.model, progress=False)
    task = get_task(args.task)
    problems = task.problems("eval", args.problems, args.seed)
    params = SamplingParams(n=args.samples, max_new_tokens=task.max_new_tokens, stop=task.stop, seed=args.seed)
    groups = policy.generate([p.prompt for p in problems], params)
    specs = [(name, 1.0) for name in SIGNALS] + [("correctness", 0.0)]
    scores = Reward.from_specs(specs, task=task, policy=policy)(problems, groups).components
    correct = scores["correctness"]
    flat_correct = [c for row in correct for c in row]
    print("command: python benchmarks/signal_quality.py " + " ".join(sys.argv[1:]))
    print(f"{args.model} on {args.task}: {args.problems} problems × {args.samples} samples, "
          f"{sum(c == 1.0 for c in flat_correct) / len(flat_correct):.3f} of samples right")
    print(f"{'signal':<16}{'right mean':>12}{'wrong mean':>12}{'min':>9}{'max':>9}{'AUROC':>8}{'best-of-N acc':>15}"
          f"{'pairs R>W':>11}{'W>R':>6}{'W>W':>6}")
    for name in SIGNALS:
        flat = [s for row in scores[name] for s in row]
        right = [s for s, c in zip(flat, flat_correct) if c == 1.0 and s is not None]
        wrong = [s for s, c in zip(flat, flat_correct) if c == 0.0 and s is not None]
        picks = []
        for row_s, row_c in zip(scores[name], correct):
            present = [(s, i) for i, s in enumerate(row_s) if s is not None]
            if present:  # the highest score, the earliest among ties
                best = max(present, key=lambda x: (x[0], -x[1]))[1]
                picks.append(row_c[best] == 1.0)
            else:
                picks.append(False)
        kinds = Counter()  # (chosen right, rejected right) of each best-vs-worst pair
        for problem, group, row_s, row_c in zip(problems, groups, scores[name], correct):
            position = {id(c): i for i, c in enumerate(group)}
            for pair in judge_pairs(problem, group, row_s):
                kinds[row_c[position[id(pair.chosen)]] == 1.0, row_c[position[id(pair.rejected)]] == 1.0] += 1
        n_pairs = max(sum(kinds.values()), 1)
        scored = right + wrong  # a signal's None ("does not apply") has no rank
        print(f"{name:<16}{statistics.mean(right):>12.3f}{statistics.mean(wrong):>12.3f}{min(scored):>9.3f}"
              f"{max(scored):>9.3f}{auroc(right, wrong):>8.3f}{sum(picks) / len(picks):>15.3f}"
              f"{kinds[True, False] / n_pairs:>11.3f}{kinds[False, True] / n_pairs:>6.3f}"
              f"{kinds[False, False] / n_pairs:>6.3f}")


if __name__ == "__main__":
    main()
