"""Peak resident memory and seconds per step of a GRPO run on a real model.

    .venv/bin/python benchmarks/memory.py                      # SmolLM2, 16 problems × 8, 64 new tokens
    .venv/bin/python benchmarks/memory.py --modes full --steps 2 --micro-batch-tokens 512
    .venv/bin/python benchmarks/memory.py --gradient-checkpointing

Each mode (full fine-tuning, LoRA) is one `sharpen run` in a child process, on the addition
task SmolLM2 is weak at (`chat: true, max_operand: 20`, examples/smollm2_addition.yaml) with
`--problems` problems × `--group-size` completions of at most `--max-new-tokens` tokens; the
held-out evaluations are cut to one problem so that the figures are the training step's. The
peak resident memory is the child's own (`os.wait4` rusage, ru_maxrss: the whole process,
model load and checkpoint write included), the seconds per step the run store's
`train_step_seconds` (sampling, scoring, update, checkpoint), `gen_seconds` and
`update_seconds`. Prints one row per mode.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIG = """\
model: {model}
task: {{name: addition, options: {{chat: true, max_operand: 20}}}}
steps: {steps}
problems_per_step: {problems}
sampling: {{group_size: {group_size}, temperature: 0.7, max_new_tokens: {max_new_tokens}}}
rewards: [{{name: correctness}}]
learner:
  lr: 1.0e-6
  micro_batch_tokens: {micro_batch_tokens}
  gradient_checkpointing: {gradient_checkpointing}
{lora}eval: {{every: {steps}, problems: 1, samples: 1, ks: [1], temperature: 0.7}}
checkpoint_every: {steps}
log_completions: 0
"""
LORA = "  lora: {r: 16, alpha: 32, target_modules: all-linear}\n"
MODES = {"full": "", "lora": LORA}
"""mode → the learner's LoRA section (none: full fine-tuning)."""


def run_child(config: Path, run_dir: Path) -> tuple[int, float]:
    """Run `sharpen run` in a child; its exit status and peak resident memory in GiB."""
    cmd = [sys.executable, "-m", "sharpen.cli", "run", str(config), f"run_dir={run_dir}"]
    log = run_dir.with_suffix(".log")
    with log.open("w") as err:
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
    code = child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen
    if code != 0:
        sys.stderr.write(log.read_text()[-4000:])
    return code, usage.ru_maxrss / 2**20  # KB → GiB


def step_figures(run_dir: Path) -> dict[str, list[float]]:
    from sharpen.runs import RunStore

    with RunStore(run_dir) as store:
        return {name: [r.value for r in store.metrics(name)]
                for name in ("train_step_seconds", "gen_seconds", "update_seconds", "completion_tokens_mean")}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--modes", default="full,lora", help="comma-separated: " + ", ".join(MODES))
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--micro-batch-tokens", type=int, default=None, help="default: the learner's (by the model's depth and width)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    args = parser.parse_args(argv)
    budget = args.micro_batch_tokens
    print(f"GRPO on {args.model}, addition (chat, operands ≤ 20): {args.problems} problems × {args.group_size} "
          f"completions, ≤ {args.max_new_tokens} new tokens, micro_batch_tokens {budget or 'the default'}, gradient checkpointing "
          f"{'on' if args.gradient_checkpointing else 'off'}, {args.steps} step(s)")
    print(f"{'mode':6} {'peak RSS GiB':>12} {'s/step':>8} {'sampling s':>10} {'update s':>9} {'tokens/completion':>18}")
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            config = Path(tmp) / f"{mode}.yaml"
            config.write_text(CONFIG.format(
                model=args.model, steps=args.steps, problems=args.problems, group_size=args.group_size,
                max_new_tokens=args.max_new_tokens, micro_batch_tokens="null" if budget is None else budget,
                gradient_checkpointing=str(args.gradient_checkpointing).lower(), lora=MODES[mode],
            ))
            status, peak = run_child(config, Path(tmp) / mode)
            if status != 0:
                print(f"{mode:6} failed (exit status {status})")
                continue
            f = step_figures(Path(tmp) / mode)
            mean = {k: sum(v) / len(v) for k, v in f.items()}
            print(f"{mode:6} {peak:12.3f} {mean['train_step_seconds']:8.1f} {mean['gen_seconds']:10.1f} "
                  f"{mean['update_seconds']:9.1f} {mean['completion_tokens_mean']:18.1f}")


if __name__ == "__main__":
    main()
