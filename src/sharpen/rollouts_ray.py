"""Rollouts on Ray actors: the `ray` executor of the rollout producer (`rollouts.make_producer`).

    learner (the training process)                 workers (Ray actors, `RolloutWorker`)
    ──────────────────────────────                 ─────────────────────────────────────
    publish(v): ray.put(state_dict) once,   ──►    load the newest version (each its own copy
                every worker loads it               of the policy, task and reward)
    produce(problems, params): a shard of   ──►    sample + score the shard with per-prompt seeds
                problems per worker          ◄──    rollouts, each with its weight version
    sampler().generate(prompts, params)     ──►    sample a shard (held-out evaluation, episodes)

Synchronous (`max_staleness` 0): a step's rollouts are sampled with that step's weights; the
per-prompt seeds make them the in-process producer's rollouts, up to float rounding (a
batch of another size rounds the last bits of a log-prob differently).

Asynchronous (`max_staleness` K ≥ 1): after serving step t the producer submits the requests
of steps t+1..t+K (the loop's `schedule`), which the workers sample while the learner trains
on step t; each actor runs its tasks in order, so they see the weights published before them.
A rollout more than K versions behind the learner when it is used is dropped, counted, and
sampled again (same seeds) with the newest weights. Staleness of a rollout used at version v:
v − its weight version (TRL's `max_staleness`, PipelineRL's `max_lag`, prime-rl's
`max_off_policy_steps`). Multi-turn episodes and held-out evaluations are always synchronous.

Faults: an actor that dies is restarted by Ray (`max_restarts`) and its unfinished tasks run
again there (`max_task_retries`). Every task names the weight version it must run with and
carries a reference to those weights, so a restarted actor (back at its constructor's
weights) loads them first, and the re-sampled work equals what was lost (same seeds, same
weights). The driver keeps only the newest weights' reference; an older version stays in the
object store only while a task that needs it is in flight.

The local cluster (no `address`, no RAY_ADDRESS) is started in Ray's single-machine mode (every
service on 127.0.0.1), without the dashboard or usage statistics, with an object store bounded
by the model's size.
"""

from __future__ import annotations

import math
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Iterator, Optional, Sequence

import torch

from sharpen.models.base import Completion, SamplingParams
from sharpen.rollouts import (
    InProcessProducer, Rollout, RolloutBatch, RolloutRequest, RolloutsConfig, Schedule, WorkerSpec,
    weight_hash, with_prompt_seeds,
)
from sharpen.signals.reward import Reward, RewardResult
from sharpen.tasks.base import Problem, Prompt

MAX_RESTARTS = 3
"""Restarts of a dead worker actor (Ray's `max_restarts`) and re-runs of its unfinished tasks
(`max_task_retries`) before the run stops with Ray's error."""
MIN_OBJECT_STORE_BYTES = 100 * 2**20
"""Smallest object store of a local cluster (Ray's own minimum is 75 MiB)."""
STORE_VERSIONS = 4
"""Weight versions the local object store has room for (the newest, one an in-flight task holds,
and headroom)."""


# ---- the actor ------------------------------------------------------------------------------


class RolloutWorker:
    """One Ray actor: its own copy of the run's policy, task and reward; samples and scores."""

    def __init__(self, spec: WorkerSpec, threads: int) -> None:
        from sharpen.models import load_policy
        from sharpen.tasks import get_task

        torch.set_num_threads(threads)
        task = get_task(spec.task, **spec.task_options)
        self.policy = load_policy(spec.model, device=spec.device, seed=spec.seed, progress=False)
        reward = Reward.from_specs(spec.rewards, task=task, policy=self.policy, user_code=True)  # the user's config
        self.producer = InProcessProducer(self.policy, reward)
        self.version: Optional[int] = None
        """The weight version loaded; None: the constructor's (the base checkpoint, not yet a version)."""
        self.idle = 0.0
        self.free_since = time.perf_counter()

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Counts the time since the last task ended as idle."""
        self.idle += time.perf_counter() - self.free_since
        try:
            yield
        finally:
            self.free_since = time.perf_counter()

    def take_idle(self) -> float:
        idle, self.idle = self.idle, 0.0
        return idle

    def use(self, weights: list, version: int) -> None:
        """Load weights `version` unless they are loaded; `weights` = [its object reference]
        (in a list, so Ray passes the reference and not the tensors: only a worker that needs
        them fetches them)."""
        if self.version != version:
            import ray

            self.policy.model.load_state_dict(ray.get(weights[0]))
            self.version = self.producer.version = version

    def load(self, weights: list, version: int) -> None:
        with self.busy():
            self.use(weights, version)

    def produce(self, weights: list, version: int, problems: list[Problem],
                params: SamplingParams) -> tuple[RolloutBatch, float]:
        """Rollouts of a shard with weights `version`, and the idle seconds since the last report."""
        with self.busy():
            self.use(weights, version)
            batch = self.producer.produce(problems, params)
        return batch, self.take_idle()

    def generate(self, weights: list, version: int, prompts: list[Prompt],
                 params: SamplingParams) -> tuple[list[list[Completion]], float]:
        with self.busy():
            self.use(weights, version)
            groups = self.policy.generate(prompts, params)
        return groups, self.take_idle()

    def weight_hash(self) -> tuple[Optional[int], str]:
        """(version loaded, `rollouts.weight_hash` of the weights)."""
        return self.version, weight_hash(self.policy.model)


# ---- the cluster ----------------------------------------------------------------------------


def connect(address: Optional[str], object_store_bytes: int, cpus_needed: float):
    """The `ray` module, connected: to the cluster this process is already connected to, else to
    `address` (or $RAY_ADDRESS), else to a local cluster started here. Returns (ray, connected):
    whether this call connected, so that closing disconnects (and stops a local cluster)."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None and "ray" not in sys.modules:
        # Ray's single-machine mode (its default on macOS and Windows): every service on 127.0.0.1
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return ray, False
    if address is not None:
        ray.init(address=address, log_to_driver=False, logging_level="warning")
    else:
        ray.init(num_cpus=max(os.cpu_count() or 1, math.ceil(cpus_needed)), object_store_memory=object_store_bytes,
                 include_dashboard=False, log_to_driver=False, logging_level="warning")
    return ray, True


def model_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def actor_options(resources: dict[str, float]) -> dict[str, Any]:
    """Ray actor options from `resources_per_worker` ({"CPU": 1, "GPU": 1, "custom": 2})."""
    custom = {k: v for k, v in resources.items() if k not in ("CPU", "GPU")}
    return {"num_cpus": resources.get("CPU", 1.0), "num_gpus": resources.get("GPU", 0.0),
            **({"resources": custom} if custom else {}),
            "max_restarts": MAX_RESTARTS, "max_task_retries": MAX_RESTARTS}


def shards(n: int, parts: int) -> list[tuple[int, int]]:
    """[start, end) of up to `parts` contiguous non-empty shards of n items, sizes within one."""
    size, extra = divmod(n, parts)
    bounds, start = [], 0
    for i in range(parts):
        end = start + size + (i < extra)
        if end > start:
            bounds.append((start, end))
        start = end
    return bounds


def seed_slice(params: SamplingParams, start: int, end: int) -> SamplingParams:
    return replace(params, prompt_seeds=params.prompt_seeds[start:end])


# ---- the producer ---------------------------------------------------------------------------


@dataclass
class Pending:
    """A request submitted to the workers: one task per shard."""

    request: RolloutRequest
    step: int
    """The loop step it is for (0: not a scheduled step's)."""
    futures: list


@dataclass
class OffPolicyStats:
    """What `step_metrics` reports, gathered since its last call."""

    staleness: list[int]
    dropped: int = 0
    idle_seconds: float = 0.0
    wait_seconds: float = 0.0


class RayProducer:
    """Rollouts and held-out samples from `workers` Ray actors (module doc)."""

    def __init__(self, cfg: RolloutsConfig, policy, reward: Reward, spec: WorkerSpec) -> None:
        resources = cfg.resources_per_worker
        self.ray, self.connected = connect(cfg.address, max(MIN_OBJECT_STORE_BYTES, STORE_VERSIONS * model_bytes(policy.model)),
                                         cfg.workers * resources.get("CPU", 1.0))
        spec = replace(spec, device="cuda" if resources.get("GPU", 0) > 0 else "cpu")
        actor = self.ray.remote(RolloutWorker).options(**actor_options(resources))
        threads = max(1, int(resources.get("CPU", 1)))
        self.workers = [actor.remote(spec, threads) for _ in range(cfg.workers)]
        self.policy, self.reward, self.max_staleness = policy, reward, cfg.max_staleness
        self.version, self.weights = 0, None
        self.step, self.schedule = 0, None
        self.ahead: dict[tuple, Pending] = {}
        self.stats = OffPolicyStats([])
        self.publish(0)

    # ---- weights ---------------------------------------------------------------------------

    def publish(self, version: int) -> None:
        """Put the policy's weights in the object store once; every worker loads them after the
        tasks it already has. The reference to the previous version is released here."""
        state = {name: t.detach().cpu() for name, t in self.policy.model.state_dict().items()}
        self.weights, self.version = self.ray.put(state), version
        for worker in self.workers:
            worker.load.remote([self.weights], version)

    def worker_hashes(self) -> list[tuple[Optional[int], str]]:
        """Each worker's (version, weight hash), after the tasks it already has."""
        return self.ray.get([w.weight_hash.remote() for w in self.workers])

    # ---- rollouts --------------------------------------------------------------------------

    def begin_step(self, step: int, schedule: Optional[Schedule] = None) -> None:
        self.step, self.schedule = step, schedule
        self.ahead = {key: p for key, p in self.ahead.items() if p.step >= step}  # never asked for: let go

    def produce(self, problems: Sequence[Problem], params: SamplingParams) -> RolloutBatch:
        request = RolloutRequest(tuple(problems), params)
        key = request.key()
        pending = self.ahead.pop(key, None) or self.submit(request)
        batch = self.fresh(self.gather(pending), request)
        self.stats.staleness += [self.version - r.weight_version for r in batch.rollouts]
        if self.max_staleness and self.schedule is not None:
            now = self.schedule(self.step)
            if now is not None and now.key() == key:  # the learner follows the schedule: sample ahead
                self.sample_ahead()
        return batch

    def submit(self, request: RolloutRequest, step: int = 0) -> Pending:
        """One task per shard of the request's problems, with the newest weights."""
        params = with_prompt_seeds(request.params, len(request.problems))
        problems = list(request.problems)
        futures = [
            worker.produce.remote([self.weights], self.version, problems[a:b], seed_slice(params, a, b))
            for worker, (a, b) in zip(self.workers, shards(len(problems), len(self.workers)))
        ]
        return Pending(request, step, futures)

    def gather(self, pending: Pending) -> RolloutBatch:
        start = time.perf_counter()
        results = self.ray.get(pending.futures)
        self.stats.wait_seconds += time.perf_counter() - start
        self.stats.idle_seconds += sum(idle for _, idle in results)
        rollouts = [r for batch, _ in results for r in batch.rollouts]
        return self.batch(rollouts, max(b.generation_seconds for b, _ in results),
                          max(b.scoring_seconds for b, _ in results))

    def batch(self, rollouts: list[Rollout], generation_seconds: float, scoring_seconds: float) -> RolloutBatch:
        """The rollouts of several shards as one batch, its reward summary over all of them."""
        result = RewardResult(
            total=[r.rewards for r in rollouts],
            components={name: [r.components[name] for r in rollouts] for name in rollouts[0].components},
            weights=self.reward.weights,
            scorable=[[j not in r.unscorable for j in range(len(r.completions))] for r in rollouts],
        )
        return RolloutBatch(rollouts, result.summary(), generation_seconds, scoring_seconds)

    def fresh(self, batch: RolloutBatch, request: RolloutRequest) -> RolloutBatch:
        """`batch` with every rollout more than `max_staleness` versions old dropped, counted and
        sampled again with the newest weights (the same per-prompt seeds)."""
        stale = [i for i, r in enumerate(batch.rollouts) if self.version - r.weight_version > self.max_staleness]
        if not stale:
            return batch
        self.stats.dropped += len(stale)
        seeded = with_prompt_seeds(request.params, len(request.problems))
        again = RolloutRequest(tuple(request.problems[i] for i in stale),
                               replace(seeded, prompt_seeds=tuple(seeded.prompt_seeds[i] for i in stale)
                                       if seeded.prompt_seeds else ()))
        redone, dropped = iter(self.gather(self.submit(again)).rollouts), set(stale)
        rollouts = [next(redone) if i in dropped else r for i, r in enumerate(batch.rollouts)]
        return self.batch(rollouts, batch.generation_seconds, batch.scoring_seconds)

    def sample_ahead(self) -> None:
        """Submit the scheduled requests of the next `max_staleness` steps not yet in flight."""
        for step in range(self.step + 1, self.step + self.max_staleness + 1):
            request = self.schedule(step)
            if request is None:
                break
            if request.key() not in self.ahead:
                self.ahead[request.key()] = self.submit(request, step)

    def step_metrics(self) -> dict[str, float]:
        stats, self.stats = self.stats, OffPolicyStats([])
        out = {
            "off_policy/dropped_rollouts": float(stats.dropped),
            "off_policy/worker_idle_seconds": stats.idle_seconds / len(self.workers),
            "off_policy/rollout_wait_seconds": stats.wait_seconds,
        }
        if stats.staleness:
            out["off_policy/staleness_mean"] = sum(stats.staleness) / len(stats.staleness)
            out["off_policy/staleness_max"] = float(max(stats.staleness))
        return out

    # ---- held-out samples and episodes -----------------------------------------------------

    def sampler(self) -> "ShardedSampler":
        return ShardedSampler(self)

    def close(self) -> None:
        """Stop the workers; disconnect if this producer connected (a local cluster it started stops)."""
        for worker in self.workers:
            self.ray.kill(worker)
        self.workers, self.ahead, self.weights = [], {}, None
        if self.connected:
            self.ray.shutdown()


class ShardedSampler:
    """A `Policy` whose every call is split by prompt over the producer's workers, with the
    newest weights and per-prompt seeds (what the in-process `PromptSeeded` samples)."""

    def __init__(self, producer: RayProducer) -> None:
        self.producer = producer

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        p = self.producer
        params = with_prompt_seeds(params, len(prompts))
        prompts = list(prompts)
        futures = [
            worker.generate.remote([p.weights], p.version, prompts[a:b], seed_slice(params, a, b))
            for worker, (a, b) in zip(p.workers, shards(len(prompts), len(p.workers)))
        ]
        results = p.ray.get(futures)
        p.stats.idle_seconds += sum(idle for _, idle in results)
        return [group for groups, _ in results for group in groups]


__all__ = ["RayProducer", "RolloutWorker", "ShardedSampler", "connect", "shards"]
