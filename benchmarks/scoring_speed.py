"""Old vs new scoring in the policy-gradient update, side by side in one process.

    .venv/bin/python benchmarks/scoring_speed.py                       # the quickstart batch, default model
    .venv/bin/python benchmarks/scoring_speed.py --old-rev 53ab7de --repeats 20

The quickstart's batch (16 problems × 8 completions of the default model on addition) is
sampled once; then `PolicyGradient.update` (4 minibatches: score, loss, backward, AdamW step)
runs on it, alternating the scoring of this checkout (`sharpen.models.scoring`: hidden states
at completion positions, the head in chunks, micro-batches) with the scoring of `--old-rev`
(`HFPolicy.score_tokens` of that revision's `src/sharpen/models/hf.py`, read with `git show`:
full-vocabulary logits over the batch, one pass). Both score the same model; prints the median
seconds of each and their ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def old_policy_class(rev: str):
    """HFPolicy as it was at `rev`."""
    source = subprocess.run(["git", "show", f"{rev}:src/sharpen/models/hf.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_hf.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_hf", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.HFPolicy


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-rev", default="53ab7de", help="the revision whose scoring is the baseline")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    import torch

    from sharpen.learners.base import LearnerContext, Sampling
    from sharpen.learners.policy_gradient.learner import PolicyGradient, PolicyGradientConfig
    from sharpen.loop import RunConfig
    from sharpen.models import load_policy
    from sharpen.rollouts import InProcessProducer
    from sharpen.signals.reward import Reward
    from sharpen.tasks import get_task

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = RunConfig()  # the quickstart's run
    task = get_task(cfg.task.name, **cfg.task.options)
    new = load_policy(cfg.model, seed=cfg.seed, progress=False)
    old = old_policy_class(args.old_rev)(new.model, new.tokenizer)
    old.micro_batches = lambda prompt_ids, completion_ids, units=None: [list(range(len(prompt_ids)))]  # one pass
    reward = Reward.from_specs([r.model_dump() for r in cfg.rewards], task=task, policy=new)
    sampling = Sampling(cfg.sampling.group_size, cfg.sampling.temperature, cfg.sampling.top_p, task.max_new_tokens,
                        task.stop)
    ctx = LearnerContext(new, task, reward, InProcessProducer(new, reward), sampling, total_steps=10**6, seed=0)
    learner = PolicyGradient(ctx, cfg.learner)
    problems = task.problems("train", cfg.problems_per_step, cfg.seed)
    batch = ctx.producer.produce(problems, sampling.params(seed=1))
    rows = sum(len(r.completions) for r in batch.rollouts)
    print(f"quickstart batch: {len(problems)} problems × {cfg.sampling.group_size} = {rows} completions, "
          f"{batch.generated_tokens} tokens; {cfg.learner.minibatches} minibatches per update; "
          f"{torch.get_num_threads()} threads")
    seconds = {"old": [], "new": []}
    for repeat in range(args.repeats + 1):
        for name, policy in (("old", old), ("new", new)) if repeat % 2 else (("new", new), ("old", old)):
            learner.policy = policy
            start = time.perf_counter()
            learner.update(batch.rollouts)
            if repeat:  # the first round warms up
                seconds[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    print(f"update seconds, median of {args.repeats}: old {med['old']:.4f}, new {med['new']:.4f}; "
          f"new / old = {med['new'] / med['old']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
