"""sharpen against TRL's GRPOTrainer: time to a held-out target, seconds per step, sampling speed.

    python benchmarks/bench_vs_trl.py                  # the full run (both sides, three learning rates each)
    python benchmarks/bench_vs_trl.py --problems 20 --every 2 --max-steps 4 --lrs 3e-4   # a smoke run

One process, one run, figures printed (and with --json written). What it does:
  1. the embedded default model and the quickstart task (2-digit addition);
  2. the base model's held-out pass@1 and pass@8 with sharpen's evaluator;
     target = pass@1 + 0.8 · (pass@8 − pass@1)   (80% of the gap a sampler could close);
  3. sharpen: the quickstart's default RunConfig at each learning rate of --lrs, evaluated
     every --every steps;
  4. TRL: GRPOTrainer with the same group size, problems per step, β = 0, temperature 1,
     one generation and one optimizer step per batch, for each --lrs; a callback evaluates
     with the same evaluator every --every steps and stops at the target (3 and 4 take
     turns, one rate at a time);
  5. sampling speed of sharpen's rollout generation against a bare `model.generate`;
  6. each side at its best rate of the same grid (the earliest to the target): time and steps
     to target, seconds per step, their ratios sharpen / TRL, and whether they meet the goal
     (time to target ≤ 0.5 × TRL's at no more seconds per step).

Training seconds exclude evaluation on both sides and are wall time: sharpen's are its run
store's `train_step_seconds` (each step's wall time minus its held-out evaluation: sampling,
scoring, the update, checkpoints, bookkeeping); TRL's are the wall time between optimizer
steps minus the callback's evaluations. On a shared machine pass `--threads 1`: with two
threads on busy cores, every small kernel waits for the slower thread (sharpen's update, many
small kernels on this tiny model, slowed 30-fold in one such run; TRL's 6-fold).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from sharpen.evaluation import EvalResult, evaluate
from sharpen.loop import EvalConfig, RunConfig, run_config
from sharpen.models import SamplingParams
from sharpen.models.embedded import ensure_default_model
from sharpen.models.hf import HFPolicy
from sharpen.runs import RunStore
from sharpen.tasks import Problem, Task, get_task

TARGET_FRACTION = 0.8
"""Share of the base model's pass@1 → pass@8 gap that the target closes."""
SAMPLES = 8
"""Completions per held-out problem."""
KS = (1, 8)
"""k of the reported pass@k."""
EVAL_SEED = 0
"""Seed of every held-out evaluation (same problems, same sampling seeds on both sides)."""


# ---- records --------------------------------------------------------------------------------


@dataclass
class EvalPoint:
    """One held-out evaluation during training."""

    step: int
    train_seconds: float
    """Training seconds (evaluation excluded) spent up to and including this step."""
    pass1: float
    pass8: float


@dataclass
class Curve:
    """One training run: its evaluations, its speed and when it reached the target."""

    name: str
    lr: float
    steps_run: int
    seconds_per_step: float
    """Mean training seconds per optimizer step."""
    points: list[EvalPoint]
    time_to_target: Optional[float] = None
    """Training seconds at the first evaluation with pass@1 >= target; None: not reached."""
    step_to_target: Optional[int] = None
    details: dict = field(default_factory=dict)
    """Side-specific figures (sharpen's gen/train split, TRL's evaluation seconds, …)."""

    @property
    def best_pass1(self) -> float:
        return max(p.pass1 for p in self.points)


def first_at_target(points: Sequence[EvalPoint], target: float) -> Optional[EvalPoint]:
    """The earliest evaluation whose pass@1 reaches the target, if any."""
    return next((p for p in sorted(points, key=lambda p: p.step) if p.pass1 >= target), None)


def with_target(curve: Curve, target: float) -> Curve:
    hit = first_at_target(curve.points, target)
    if hit is not None:
        curve.time_to_target, curve.step_to_target = hit.train_seconds, hit.step
    return curve


def held_out(policy: HFPolicy, task: Task, problems: int) -> EvalResult:
    """The one evaluation used everywhere in this benchmark."""
    return evaluate(policy, task, n_problems=problems, samples=SAMPLES, ks=KS, seed=EVAL_SEED, progress=False)


def target_of(base: EvalResult) -> float:
    p1, p8 = base.metrics["pass@1"].value, base.metrics["pass@8"].value
    return p1 + TARGET_FRACTION * (p8 - p1)


# ---- sharpen ----------------------------------------------------------------------------------


def quickstart_config(problems: int, every: int, steps: Optional[int], max_steps: int,
                      lr: Optional[float] = None) -> RunConfig:
    """The quickstart's RunConfig (its defaults, read from the code), evaluated every `every` steps;
    `steps` and `lr` replace the defaults only when given."""
    cfg = RunConfig(eval=EvalConfig(every=every, problems=problems, samples=SAMPLES, ks=list(KS)))
    cfg = cfg.model_copy(update={"steps": min(steps or cfg.steps, max_steps)})
    if lr is not None:
        cfg = cfg.model_copy(update={"learner": cfg.learner.model_copy(update={"lr": lr})})
    return cfg


def run_sharpen(cfg: RunConfig, run_dir: Path, target: float) -> Curve:
    """`run_config` as the quickstart calls it, then its figures read back from the run store."""
    run_config(cfg, run_dir, progress=False)
    with RunStore(run_dir) as store:
        gen = {r.step: r.value for r in store.metrics("gen_seconds")}
        update = {r.step: r.value for r in store.metrics("update_seconds")}
        step_wall = {r.step: r.value for r in store.metrics("train_step_seconds")}
        pass1 = {r.step: r.value for r in store.metrics("eval/pass@1")}
        pass8 = {r.step: r.value for r in store.metrics("eval/pass@8")}
    steps = sorted(step_wall)
    points, spent = [EvalPoint(0, 0.0, pass1[0], pass8[0])], 0.0
    for step in steps:
        spent += step_wall[step]
        if step in pass1:
            points.append(EvalPoint(step, spent, pass1[step], pass8[step]))
    per_step = [step_wall[s] for s in steps]
    details = {
        "gen_seconds_per_step": statistics.mean(gen[s] for s in steps),
        "learner_seconds_per_step": statistics.mean(update[s] for s in steps),
        "run_dir": str(run_dir),
        "config": cfg.model_dump(mode="json"),
    }
    curve = Curve("sharpen", cfg.learner.lr, len(steps), statistics.mean(per_step), points, details=details)
    return with_target(curve, target)


# ---- TRL ------------------------------------------------------------------------------------------


def trl_dataset(pool: Sequence[Problem]):
    """Conversational prompts plus the problem's id, the column the reward function reads."""
    from datasets import Dataset

    return Dataset.from_list(
        [{"prompt": [{"role": "user", "content": p.prompt}], "problem_id": p.id} for p in pool]
    )


def correctness_reward(task: Task, pool: Sequence[Problem]):
    """A TRL reward function: 1.0 / 0.0 from `task.check` (None if unscorable, which TRL
    leaves out of its means); text is cut at the task's stop strings, as sharpen's sampler does."""
    by_id = {p.id: p for p in pool}
    counts = {"checked": 0, "unscorable": 0}

    def correctness(prompts, completions, problem_id, **kwargs) -> list[Optional[float]]:
        rewards = []
        for completion, pid in zip(completions, problem_id):
            text = completion[0]["content"]
            cuts = [text.find(s) for s in task.stop if s in text]
            verdict = task.check(by_id[pid], text[: min(cuts)] if cuts else text)
            counts["checked"] += 1
            counts["unscorable"] += verdict.correct is None
            rewards.append(verdict.reward)
        return rewards

    return correctness, counts


def target_callback(task: Task, tokenizer, *, every: int, problems: int, target: float,
                    clock: Callable[[], float] = time.perf_counter):
    """A TrainerCallback: held-out pass@1 every `every` steps (and at the last), timed apart from
    training by `clock` (wall time; `time.process_time` for CPU seconds); stops training once
    the target is reached."""
    from transformers import TrainerCallback

    class HeldOutTarget(TrainerCallback):
        def __init__(self) -> None:
            self.resumed = 0.0
            self.train_seconds = 0.0
            self.eval_seconds = 0.0
            self.step_seconds: list[float] = []
            self.points: list[EvalPoint] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.resumed = clock()

        def on_step_end(self, args, state, control, model=None, **kwargs):
            now = clock()
            self.step_seconds.append(now - self.resumed)
            self.train_seconds += now - self.resumed
            step = state.global_step
            if step % every == 0 or step >= state.max_steps:
                was_training = model.training  # TRL reads model.training to pick train/eval batches
                model.eval()
                result = held_out(HFPolicy(model, tokenizer), task, problems)
                model.train(was_training)
                pass1, pass8 = result.metrics["pass@1"].value, result.metrics["pass@8"].value
                self.points.append(EvalPoint(step, self.train_seconds, pass1, pass8))
                if pass1 >= target:
                    control.should_training_stop = True
            self.resumed = clock()
            self.eval_seconds += self.resumed - now
            return control

    return HeldOutTarget()


def no_checkpointing(config_class) -> dict:
    """Activation checkpointing off, under the name this transformers version reads
    (`gradient_checkpointing` is a deprecated alias since transformers 5)."""
    names = {f.name for f in dataclasses.fields(config_class)}
    key = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {key: False}


def run_trl(path: Path, task: Task, cfg: RunConfig, base_point: EvalPoint, *, lr: float, every: int,
            problems: int, max_steps: int, target: float, out_dir: Path,
            clock: Callable[[], float] = time.perf_counter) -> Curve:
    """GRPOTrainer on the quickstart task: P problems × G completions per optimizer step."""
    from transformers import AutoTokenizer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import GRPOConfig, GRPOTrainer

    G, P = cfg.sampling.group_size, cfg.problems_per_step
    pool = task.problems("train", max(4096, P), cfg.seed)  # the pool sharpen's loop draws from
    reward, counts = correctness_reward(task, pool)
    args = GRPOConfig(
        output_dir=str(out_dir / f"trl-lr{lr:g}"),
        # batch: TRL counts completions; one generation (P prompts × G) = one optimizer step
        per_device_train_batch_size=P * G,
        gradient_accumulation_steps=1,
        num_generations=G,
        num_iterations=1,
        max_steps=max_steps,
        # the update
        learning_rate=lr,
        lr_scheduler_type="constant",  # sharpen's default schedule; TRL's default (linear to 0 at max_steps)
        warmup_steps=0,                # would make time to target depend on the step cap
        beta=0.0,
        # sampling
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        max_completion_length=task.max_new_tokens,
        use_vllm=False,
        # machine and bookkeeping
        use_cpu=True,
        bf16=False,                    # TRL defaults to bf16 and gradient checkpointing
        **no_checkpointing(GRPOConfig),
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=cfg.seed,
    )
    trainer = GRPOTrainer(model=str(path), reward_funcs=reward, args=args, train_dataset=trl_dataset(pool))
    for quiet in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(quiet)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    callback = target_callback(task, tokenizer, every=every, problems=problems, target=target, clock=clock)
    trainer.add_callback(callback)
    trainer.train()
    details = {
        "eval_seconds": callback.eval_seconds,
        "unscorable_rewards": counts["unscorable"],
        "rewards_checked": counts["checked"],
        "step_seconds": callback.step_seconds,
    }
    curve = Curve(f"TRL lr {lr:g}", lr, len(callback.step_seconds), statistics.mean(callback.step_seconds),
                  [base_point, *callback.points], details=details)
    return with_target(curve, target)


# ---- sampling speed -------------------------------------------------------------------------------


def generation_speed(path: Path, task: Task, cfg: RunConfig, reps: int) -> dict:
    """Generated tokens per second (up to and including EOS) on one rollout batch: sharpen's
    `HFPolicy.generate` against a bare `model.generate`, one warm-up call each, then `reps`
    alternating calls."""
    policy = HFPolicy.load(path, device="cpu")
    model, tokenizer = policy.model, policy.tokenizer
    G, max_new = cfg.sampling.group_size, task.max_new_tokens
    prompts = [p.prompt for p in task.problems("train", cfg.problems_per_step, cfg.seed)]
    eos = sorted(policy.eos_ids)

    def sharpen_call(seed: int) -> int:
        params = SamplingParams(n=G, temperature=1.0, top_p=1.0, max_new_tokens=max_new, stop=task.stop, seed=seed)
        return sum(c.n_tokens for group in policy.generate(prompts, params) for c in group)

    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                           tokenize=False) for p in prompts]
    batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)

    @torch.no_grad()
    def hf_call(seed: int) -> int:
        torch.manual_seed(seed)
        out = model.generate(
            **batch, do_sample=True, num_return_sequences=G, max_new_tokens=max_new, temperature=1.0,
            top_p=1.0, top_k=0, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos,
        )  # (P·G, L + T)
        new = out[:, batch["input_ids"].shape[1]:]  # (P·G, T)
        is_eos = torch.isin(new, torch.tensor(eos))  # (P·G, T)
        first = torch.where(is_eos.any(-1), is_eos.int().argmax(-1) + 1, new.shape[1])  # (P·G,) tokens kept
        return int(first.sum())

    timings = {"sharpen": [0.0, 0], "hf": [0.0, 0]}
    sharpen_call(-1), hf_call(-1)  # warm-up
    for r in range(reps):
        for name, call in (("sharpen", sharpen_call), ("hf", hf_call)):
            t0 = time.perf_counter()
            tokens = call(r)
            timings[name][0] += time.perf_counter() - t0
            timings[name][1] += tokens
    out = {"prompts": len(prompts), "group_size": G, "max_new_tokens": max_new, "reps": reps}
    for name, (seconds, tokens) in timings.items():
        out[name] = {"tokens_per_s": tokens / seconds, "ms_per_call": 1000 * seconds / reps,
                     "tokens_per_call": tokens / reps}
    out["ratio_sharpen_over_hf"] = out["sharpen"]["tokens_per_s"] / out["hf"]["tokens_per_s"]
    return out


# ---- report ---------------------------------------------------------------------------------------


def fmt_time(seconds: Optional[float]) -> str:
    return "not reached" if seconds is None else f"{seconds:.1f} s"


def print_curve(curve: Curve, target: float) -> None:
    print(f"  {'step':>5}  {'train s':>8}  {'pass@1':>6}  {'pass@8':>6}")
    for p in curve.points:
        mark = "  ← target" if curve.step_to_target == p.step else ""
        print(f"  {p.step:>5}  {p.train_seconds:>8.1f}  {p.pass1:>6.3f}  {p.pass8:>6.3f}{mark}")
    reached = (f"{curve.time_to_target:.1f} s of training, step {curve.step_to_target}"
               if curve.time_to_target is not None
               else f"not reached in {curve.steps_run} steps (best pass@1 {curve.best_pass1:.3f} < {target:.3f})")
    print(f"  seconds per step {curve.seconds_per_step:.3f} · time to target: {reached}")


def best_curve(curves: Sequence[Curve]) -> Curve:
    """A side's best learning rate: the earliest time to target; if none reached it, the highest
    pass@1 seen."""
    reached = [c for c in curves if c.time_to_target is not None]
    if reached:
        return min(reached, key=lambda c: c.time_to_target)
    return max(curves, key=lambda c: c.best_pass1)


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None or b == 0 else a / b


GOAL_TIME_RATIO = 0.5
"""The goal (issue 12 point 13): sharpen's time to target at most this share of TRL's, at no
more seconds per step."""


def goal_met(time_ratio: Optional[float], *step_ratios: Optional[float]) -> bool:
    """Whether the ratios sharpen / TRL meet the goal: time to target at most GOAL_TIME_RATIO,
    every seconds-per-step ratio at most 1 (False when a side missed the target)."""
    ratios = (time_ratio, *step_ratios)
    return all(r is not None for r in ratios) and time_ratio <= GOAL_TIME_RATIO and all(r <= 1.0 for r in step_ratios)


def seconds_per_step_to_target(curve: Curve) -> Optional[float]:
    """Training seconds per step up to the target: a run's mean `seconds_per_step` also counts
    the steps after it, which cost less once most groups are solved (their update is skipped)."""
    return None if curve.time_to_target is None else curve.time_to_target / curve.step_to_target


def versions() -> dict:
    import transformers
    import trl

    return {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
            "trl": trl.__version__, "threads": torch.get_num_threads()}


# ---- main -----------------------------------------------------------------------------------------


def quiet_libraries() -> None:
    """No progress bars from transformers (weights loading, sharpen's checkpoint saving), and
    not the one deprecation warning TRL 1.x triggers inside transformers 5 on every step."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--problems", type=int, default=200, help="held-out problems per evaluation")
    p.add_argument("--every", type=int, default=2,
                   help="evaluate every this many steps (both sides): the resolution of steps to target")
    p.add_argument("--lrs", default="1e-4,3e-4,1e-3",
                   help="learning rates to try on both sides, comma-separated (each side's best is compared)")
    p.add_argument("--max-steps", type=int, default=150, help="step cap of every run (both sides)")
    p.add_argument("--sharpen-steps", type=int, default=None,
                   help="sharpen's steps (default: the quickstart's; capped by --max-steps)")
    p.add_argument("--gen-reps", type=int, default=5, help="timed calls per sampler after the warm-up")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for everything (default: torch's)")
    p.add_argument("--out", type=Path, default=None,
                   help="where sharpen's runs go, one lr<rate> folder each (default: a temp dir)")
    p.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)  # the whole process: sharpen's config keeps threads=None
    command = shlex.join([sys.executable, *(sys.argv if argv is None else [__file__, *argv])])
    print(f"$ {command}")
    lrs = [float(x) for x in args.lrs.split(",") if x.strip()]
    if args.out is not None and args.out.exists() and any(args.out.iterdir()):
        sys.exit(f"--out {args.out} is not empty; give a new or empty directory for sharpen's run")
    work = Path(tempfile.mkdtemp(prefix="bench-vs-trl-"))
    run_dir = args.out or work / "sharpen"
    info = versions()
    print("versions: " + " · ".join(f"{k} {v}" for k, v in info.items()))

    path = ensure_default_model()
    task = get_task("addition", digits=2)
    cfg = quickstart_config(args.problems, args.every, args.sharpen_steps, args.max_steps)
    G, P = cfg.sampling.group_size, cfg.problems_per_step
    print(f"model {path} · task {cfg.task.name} {cfg.task.options} · {P} problems × {G} completions per step")
    print(f"held-out: {args.problems} problems × {SAMPLES} samples, seed {EVAL_SEED}, every {args.every} steps")

    base = held_out(HFPolicy.load(path, device="cpu"), task, args.problems)
    b1, b8 = base.metrics["pass@1"].value, base.metrics["pass@8"].value
    target = target_of(base)
    print(f"\nbase model: pass@1 {b1:.3f} · pass@8 {b8:.3f} · maj@8 {base.metrics['maj@8'].value:.3f}")
    print(f"target pass@1 = {b1:.3f} + {TARGET_FRACTION} × ({b8:.3f} − {b1:.3f}) = {target:.3f}")

    speed = generation_speed(path, task, cfg, args.gen_reps)
    print(f"\nrollout sampling: {speed['prompts']} prompts × {G}, ≤ {speed['max_new_tokens']} new tokens, "
          f"{args.gen_reps} calls each after a warm-up")
    for name, label in (("sharpen", "sharpen HFPolicy.generate"), ("hf", "HF model.generate")):
        s = speed[name]
        print(f"  {label:<26} {s['tokens_per_s']:>8.0f} tokens/s  {s['ms_per_call']:>7.1f} ms/call  "
              f"{s['tokens_per_call']:.0f} tokens/call")
    print(f"  sharpen / HF tokens/s: {speed['ratio_sharpen_over_hf']:.2f}")

    recipe = cfg.learner
    steps_note = f", --sharpen-steps replacing the quickstart's {RunConfig().steps}" if args.sharpen_steps else ""
    base_point = EvalPoint(0, 0.0, b1, b8)
    sharpens, trls = [], []
    for lr in lrs:  # the two sides take turns, so that a change in the machine's load hits both
        print(f"\nsharpen: quickstart config at lr {lr:g} (default {recipe.lr:g}; {recipe.advantage}, "
              f"{recipe.aggregation}, {recipe.epochs} epochs × {recipe.minibatches} minibatches = "
              f"{recipe.epochs * recipe.minibatches} optimizer steps per batch, {recipe.schedule} rate), "
              f"{cfg.steps} steps{steps_note} → {run_dir / f'lr{lr:g}'}")
        curve = run_sharpen(quickstart_config(args.problems, args.every, args.sharpen_steps, args.max_steps, lr),
                            run_dir / f"lr{lr:g}", target)
        print_curve(curve, target)
        d = curve.details
        print(f"  (of which sampling {d['gen_seconds_per_step']:.3f} and the learner update "
              f"{d['learner_seconds_per_step']:.3f} s per step)")
        sharpens.append(curve)

        print(f"\nTRL GRPOTrainer: lr {lr:g}, β 0, {P} × {G} per step, cap {args.max_steps} steps")
        curve = run_trl(path, task, cfg, base_point, lr=lr, every=args.every, problems=args.problems,
                        max_steps=args.max_steps, target=target, out_dir=work)
        print_curve(curve, target)
        trls.append(curve)
    ours, best = best_curve(sharpens), best_curve(trls)

    t_ratio = ratio(ours.time_to_target, best.time_to_target)
    s_ratio = ratio(ours.seconds_per_step, best.seconds_per_step)
    to_target = [seconds_per_step_to_target(c) for c in (ours, best)]
    s_ratio_to_target = ratio(*to_target)
    print(f"\nsummary (each side at its best of lr {', '.join(f'{lr:g}' for lr in lrs)}: "
          f"sharpen {ours.lr:g}, TRL {best.lr:g})")
    print(f"  {'':<22}{'sharpen':>14}{'TRL':>14}{'sharpen/TRL':>13}")
    steps = [c.step_to_target for c in (ours, best)]
    rows = [
        ("time to target", fmt_time(ours.time_to_target), fmt_time(best.time_to_target), t_ratio),
        ("steps to target", *("-" if n is None else str(n) for n in steps), ratio(*steps)),
        ("seconds per step", f"{ours.seconds_per_step:.3f}", f"{best.seconds_per_step:.3f}", s_ratio),
        ("  up to the target", *("-" if x is None else f"{x:.3f}" for x in to_target), s_ratio_to_target),
        ("best pass@1", f"{ours.best_pass1:.3f}", f"{best.best_pass1:.3f}", None),
    ]
    for name, a, b, r in rows:
        print(f"  {name:<22}{a:>14}{b:>14}{'-' if r is None else f'{r:.2f}':>13}")
    met = goal_met(t_ratio, s_ratio, s_ratio_to_target)
    print(f"  goal: time to target ≤ {GOAL_TIME_RATIO} × TRL's and seconds per step ≤ TRL's "
          f"(over the run and up to the target): {'met' if met else 'not met'}")

    figures = {
        "command": command, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "versions": info, "model": str(path),
        "base": base.to_json(), "target": target, "generation_speed": speed,
        "sharpen": [asdict(c) for c in sharpens], "sharpen_best_lr": ours.lr,
        "trl": [asdict(c) for c in trls], "trl_best_lr": best.lr,
        "ratio_time_to_target": t_ratio, "ratio_steps_to_target": ratio(*steps), "ratio_seconds_per_step": s_ratio,
        "ratio_seconds_per_step_to_target": s_ratio_to_target, "goal_met": met,
    }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
        print(f"\nfigures → {args.json}")
    return figures


if __name__ == "__main__":
    main()
