"""Sampling speed: sharpen's `HFPolicy.generate` against a bare `model.generate`, in one run.

    python benchmarks/sampling.py                       # SmolLM2, then the embedded default model
    python benchmarks/sampling.py --models default --reps 5

For each model of `--models`, on one batch:
- "smollm2": SmolLM2-135M-Instruct (`sharpen model smollm2` builds it), 64 addition problems
  asked in chat form ("What is 13 + 14? Reply with only the number.", operands 1–20), one
  completion each, at most 64 new tokens, temperature 0.7, no stop strings: a row ends at its
  end-of-sequence token or at 64 tokens, on both sides.
- "default": the embedded default model on the quickstart's rollout batch (16 problems of
  2-digit addition × 8 completions, the task's 5 new tokens, temperature 1, sharpen with the
  task's stop strings as rollouts use them), as `bench_vs_trl.py` measures it.

Three samplers on the same prompt token ids: sharpen as installed; sharpen's `hf.py` at
`--old-commit` (its sampling loop before finished rows left the batch), read with `git show`
into a module of its own; and `model.generate(do_sample=True, top_k=0, top_p=1)` with the same
temperature, max_new_tokens and end-of-sequence ids, left-padded. Each sampler is warmed up on a
small batch, then the samplers run in turn `--reps` times. Tokens are the ones each actually
produced (up to and including the end-of-sequence token; `model.generate` keeps computing rows
that ended, and those padding tokens are not counted); tokens/s is their sum over the summed
wall time, tokens/CPU-s over the process's summed CPU time (on a shared machine the wall time
follows the other load; with `--threads 1` the CPU time is the sampler's own work). A
benchmark, not a test: it prints, and writes `--json` if given.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Callable, Optional, Sequence

import torch

from sharpen.models import resolve_model
from sharpen.models.base import SamplingParams
from sharpen.models.hf import HFPolicy
from sharpen.tasks import get_task

OLD_COMMIT = "53ab7dee8eee7963cf3bd9d98238d4e0038ac291"
"""The last commit whose sampling loop kept ended rows in the batch and sampled on the CPU."""


@dataclass(frozen=True)
class Setting:
    """One model's batch: which prompts, how many completions each, how to sample."""

    task: str
    options: dict
    prompts: int
    n: int
    max_new_tokens: Optional[int]
    """None: the task's own budget."""
    temperature: float
    stop: bool
    """Whether sharpen's side gets the task's stop strings (model.generate gets none)."""


SETTINGS = {
    "smollm2": Setting("addition", {"chat": True, "max_operand": 20}, 64, 1, 64, 0.7, stop=False),
    "default": Setting("addition", {"digits": 2}, 16, 8, None, 1.0, stop=True),
}


def module_at(commit: str, path: str, name: str) -> ModuleType:
    """The repository's file `path` as it was at `commit`, imported as a module of its own."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "-C", str(root), "show", f"{commit}:{path}"],
                            check=True, capture_output=True, text=True).stdout
    file = Path(tempfile.mkdtemp(prefix="sharpen-old-")) / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def tokens_until_eos(new: torch.Tensor, eos: Sequence[int]) -> int:
    """Tokens of a (B, T) block of generated ids up to and including each row's first eos."""
    is_eos = torch.isin(new, torch.tensor(list(eos)))  # (B, T)
    kept = torch.where(is_eos.any(-1), is_eos.int().argmax(-1) + 1, new.shape[1])  # (B,)
    return int(kept.sum())


def samplers(policy: HFPolicy, old: HFPolicy, prompts: list, params: SamplingParams
             ) -> dict[str, Callable[[int, int], int]]:
    """name → call(rows, seed) that samples for the first `rows` prompts and returns the tokens made."""
    model, tokenizer = policy.model, policy.tokenizer
    ids = [policy.encode(p) for p in prompts]
    eos = sorted(policy.eos_ids)

    def ours(policy_: HFPolicy) -> Callable[[int, int], int]:
        def call(rows: int, seed: int) -> int:
            groups = policy_.generate(prompts[:rows], replace(params, seed=seed))
            return sum(c.n_tokens for g in groups for c in g)
        return call

    @torch.no_grad()
    def hf(rows: int, seed: int) -> int:
        chunk = ids[:rows]
        L = max(len(r) for r in chunk)
        input_ids = torch.tensor([[tokenizer.pad_token_id] * (L - len(r)) + r for r in chunk])  # (P, L)
        mask = torch.tensor([[0] * (L - len(r)) + [1] * len(r) for r in chunk])  # (P, L)
        torch.manual_seed(seed)
        out = model.generate(
            input_ids=input_ids, attention_mask=mask, do_sample=True, num_return_sequences=params.n,
            max_new_tokens=params.max_new_tokens, temperature=params.temperature, top_p=1.0, top_k=0,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=eos,
        )  # (P·n, L + T)
        return tokens_until_eos(out[:, L:], eos)

    return {"sharpen": ours(policy), f"sharpen@{OLD_COMMIT[:7]}": ours(old), "model.generate": hf}


def measure(name: str, setting: Setting, reps: int, old_commit: str) -> dict:
    path = resolve_model(name)
    policy = HFPolicy.load(path, device="cpu", seed=0)
    old_hf = module_at(old_commit, "src/sharpen/models/hf.py", "sharpen_hf_old")
    old = old_hf.HFPolicy(policy.model, policy.tokenizer, seed=0)
    task = get_task(setting.task, **setting.options)
    prompts = [p.prompt for p in task.problems("train", setting.prompts, 0)]
    params = SamplingParams(n=setting.n, temperature=setting.temperature,
                            max_new_tokens=setting.max_new_tokens or task.max_new_tokens,
                            stop=tuple(task.stop) if setting.stop else ())
    calls = samplers(policy, old, prompts, params)
    for call in calls.values():  # warm-up on a small batch
        call(min(4, len(prompts)), -1)
    totals = {k: [0.0, 0.0, 0] for k in calls}  # wall seconds, CPU seconds, tokens
    for rep in range(reps):
        for key, call in calls.items():
            t0, c0 = time.perf_counter(), time.process_time()
            made = call(len(prompts), rep)
            totals[key][0] += time.perf_counter() - t0
            totals[key][1] += time.process_time() - c0
            totals[key][2] += made
    result = {"model": str(path), "rows": len(prompts) * params.n, "prompts": len(prompts), "n": params.n,
              "max_new_tokens": params.max_new_tokens, "temperature": params.temperature, "stop": list(params.stop),
              "reps": reps, "threads": torch.get_num_threads()}
    for key, (seconds, cpu, made) in totals.items():
        result[key] = {"tokens_per_s": made / seconds, "tokens_per_cpu_s": made / cpu,
                       "seconds_per_call": seconds / reps, "cpu_seconds_per_call": cpu / reps,
                       "tokens_per_call": made / reps}
    for measure in ("tokens_per_s", "tokens_per_cpu_s"):
        base = result["model.generate"][measure]
        result[f"ratios_{measure}"] = {k: result[k][measure] / base for k in calls}
    return result


def main(argv: Optional[Sequence[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="smollm2,default", help=f"comma-separated, of {', '.join(SETTINGS)}")
    p.add_argument("--reps", type=int, default=2, help="timed calls per sampler after the warm-up")
    p.add_argument("--old-commit", default=OLD_COMMIT, help="the commit of the old sampling loop")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"$ {shlex.join([sys.executable, *(sys.argv if argv is None else [__file__, *argv])])}")
    results = {}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name not in SETTINGS:
            sys.exit(f"--models: {name!r} is not one of {', '.join(SETTINGS)}")
        r = results[name] = measure(name, SETTINGS[name], args.reps, args.old_commit)
        print(f"\n{name}: {r['prompts']} prompts × {r['n']} = {r['rows']} rows, ≤ {r['max_new_tokens']} new tokens, "
              f"temperature {r['temperature']}, stop {r['stop']}, {r['reps']} calls each, {r['threads']} threads")
        for key in r["ratios_tokens_per_s"]:
            s = r[key]
            print(f"  {key:<16} {s['tokens_per_call']:>6.0f} tokens/call  {s['tokens_per_s']:>8.1f} tokens/s "
                  f"({r['ratios_tokens_per_s'][key]:.2f}×)  {s['tokens_per_cpu_s']:>8.1f} tokens/CPU-s "
                  f"({r['ratios_tokens_per_cpu_s'][key]:.2f}×)")
        print("  (× = over model.generate; tokens/CPU-s counts the process's CPU time, steadier under load)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
