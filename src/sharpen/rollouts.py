"""Where rollouts come from: a problem's group of completions, scored.

The loop asks a producer for scored groups, hands it nothing but data, and tells it when the
policy's weights change (`publish`, once per step, with a version: the updates so far). A
producer is built from the run config's `rollouts` section (`make_producer`):

    in_process   samples with the policy being trained, in the training process (the default)
    ray          samples on Ray actors, each holding a copy of the policy (`rollouts_ray`);
                 with `max_staleness` K ≥ 1 they sample the next K steps' problems while the
                 learner trains, and rollouts more than K versions old are dropped

Every rollout carries the weight version that sampled it and its behaviour log-probs
(`Completion.sampling_logprobs`), so learners' importance ratios π/μ are right off-policy.
Sampling seeds are per prompt (`with_prompt_seeds`), so sharding a step's problems over
workers samples what one process would. Held-out evaluations and multi-turn episodes sample
through `producer.sampler()`, a `Policy` with the producer's weights and the same seeds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal, Optional, Protocol, Sequence

import torch
from pydantic import Field

from sharpen.config import ConfigModel, Location
from sharpen.models.base import Completion, Policy, SamplingParams, with_prompt_seeds
from sharpen.signals.base import Spans
from sharpen.signals.reward import Reward
from sharpen.tasks.base import Problem, Prompt


class RolloutsConfig(ConfigModel):
    """Where a run's rollouts and held-out evaluations are sampled (the `rollouts:` section)."""

    executor: Literal["in_process", "ray"] = Field(
        "in_process", description="in_process (the training process samples) or ray (Ray actors sample; "
                                  "needs the `ray` extra)."
    )
    workers: int = Field(2, ge=1, description="ray: rollout workers (actors), each with a copy of the policy.")
    resources_per_worker: dict[str, float] = Field(
        default_factory=lambda: {"CPU": 1.0},
        description="ray: resources each worker reserves: CPU, GPU (one each puts it on a GPU) or a custom resource.",
    )
    max_staleness: int = Field(
        0, ge=0, description="K: 0 samples each step with its own weights (synchronous); K ≥ 1 samples up to K steps "
                             "ahead while the learner trains, and drops rollouts more than K versions old.",
    )
    address: Optional[str] = Field(
        None, description="ray: address of a cluster to join (default: $RAY_ADDRESS, else a local cluster is started)."
    )

    def learner_threads(self, cpus: int, ray_address: Optional[str]) -> Optional[int]:
        """The training process's torch threads when the run does not set `threads`: None (torch's
        choice) unless Ray workers of a local cluster (no `address`, no `ray_address` from
        $RAY_ADDRESS) sample while the learner trains (`max_staleness` ≥ 1) on this machine's
        `cpus` cores: then the cores they do not reserve, at least 1. Torch's default (every
        core) beside them oversubscribes the cores and starves the workers (2 cores, 2 workers:
        their sampling took 4× as long, benchmarks/README.md). Synchronous workers sample while
        the learner waits, so it keeps every core."""
        if self.executor != "ray" or not self.max_staleness or self.address or ray_address:
            return None
        return max(1, cpus - math.ceil(self.workers * self.resources_per_worker.get("CPU", 1.0)))

    def config_problems(self) -> Iterator[tuple[Location, str]]:
        yield from super().config_problems()
        if self.executor == "ray" and importlib.util.find_spec("ray") is None:
            yield ("executor",), "Ray is not installed; install the extra: pip install 'sharpen[ray]'"
        if self.executor == "in_process" and self.max_staleness > 0:
            yield ("max_staleness",), ("the in-process producer samples with the weights being trained; sampling "
                                       "ahead needs executor: ray")
        if any(v < 0 for v in self.resources_per_worker.values()):
            yield ("resources_per_worker",), f"amounts must be >= 0, got {self.resources_per_worker}"


@dataclass
class Rollout:
    """One problem and its scored group."""

    problem: Problem
    prompt_ids: list[int]
    completions: list[Completion]
    rewards: list[float]
    """The total reward of each completion."""
    components: dict[str, list[Optional[float]]] = field(default_factory=dict)
    """Each reward component's score of each completion (None: does not apply)."""
    unscorable: tuple[int, ...] = ()
    """Indices of the completions a weighted component could not score (`RewardResult.scorable`):
    their `rewards` entry is not a reward, and learners leave them out."""
    weight_version: int = 0
    """The version of the weights that sampled it: the learner's updates before them (the
    base model is 0). A rollout used when the learner is at version v is v − weight_version stale."""
    spans: list[Spans] = field(default_factory=list)
    """Each completion's weighted span rewards (`RewardResult.spans`), what a token-level
    advantage estimator places on tokens."""
    outcomes: list[float] = field(default_factory=list)
    """Each completion's weighted sum of the scalar reward components (`RewardResult.outcomes`;
    empty when the reward has none): with the spans, its total."""


@dataclass
class RolloutBatch:
    """The rollouts of one step, with what producing them cost."""

    rollouts: list[Rollout]
    reward_summary: dict[str, float]
    generation_seconds: float
    scoring_seconds: float

    @property
    def generated_tokens(self) -> int:
        return sum(c.n_tokens for r in self.rollouts for c in r.completions)


def weight_hash(model) -> str:
    """SHA-256 of a model's weights (every state_dict tensor, by name): equal hashes, equal weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


@dataclass(frozen=True)
class RolloutRequest:
    """What a step asks the producer for; a step's request is a function of (seed, step)."""

    problems: tuple[Problem, ...]
    params: SamplingParams

    def key(self) -> tuple:
        return tuple(p.id for p in self.problems), self.params


Schedule = Callable[[int], Optional[RolloutRequest]]
"""step → the request the learner will make at that step (None past the last step): what an
asynchronous producer samples ahead."""


class RolloutProducer(Protocol):
    def produce(self, problems: Sequence[Problem], params: SamplingParams) -> RolloutBatch:
        """Scored groups of `params.n` completions, one rollout per problem, in order."""
        ...

    def sampler(self) -> Policy:
        """A policy that samples with the producer's weights and per-prompt seeds (held-out
        evaluation, multi-turn episodes)."""
        ...

    def publish(self, version: int) -> None:
        """The training policy's weights changed: they are now `version` (updates so far)."""
        ...

    def begin_step(self, step: int, schedule: Optional[Schedule] = None) -> None:
        """The loop starts `step`; `schedule` says what later steps will ask for."""
        ...

    def step_metrics(self) -> dict[str, float]:
        """Off-policy metrics since the last call (staleness, dropped rollouts, idle workers)."""
        ...

    def close(self) -> None: ...


class PromptSeeded:
    """A policy whose seeded calls sample with per-prompt seeds (`with_prompt_seeds`)."""

    def __init__(self, policy) -> None:
        self.policy = policy

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        return self.policy.generate(list(prompts), with_prompt_seeds(params, len(prompts)))


class InProcessProducer:
    """Samples with the training policy itself and scores with the reward: always on-policy."""

    def __init__(self, policy, reward: Reward) -> None:
        self.policy = policy
        self.reward = reward
        self.version = 0

    def produce(self, problems: Sequence[Problem], params: SamplingParams) -> RolloutBatch:
        start = time.perf_counter()
        groups = self.policy.generate([p.prompt for p in problems], with_prompt_seeds(params, len(problems)))
        generated = time.perf_counter()
        result = self.reward(list(problems), groups)
        scored = time.perf_counter()
        rollouts = [
            Rollout(
                problem=p,
                prompt_ids=self.policy.encode(p.prompt),
                completions=list(g),
                rewards=list(result.total[i]),
                components={name: list(values[i]) for name, values in result.components.items()},
                unscorable=tuple(j for j, ok in enumerate(result.scorable[i]) if not ok),
                weight_version=self.version,
                spans=list(result.spans[i]),
                outcomes=list(result.outcomes[i]) if result.outcomes else [],
            )
            for i, (p, g) in enumerate(zip(problems, groups))
        ]
        return RolloutBatch(rollouts, result.summary(), generated - start, scored - generated)

    def sampler(self) -> Policy:
        return PromptSeeded(self.policy)

    def publish(self, version: int) -> None:
        self.version = version  # the weights are the policy's own: nothing to send

    def begin_step(self, step: int, schedule: Optional[Schedule] = None) -> None:
        pass

    def step_metrics(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class WorkerSpec:
    """How a rollout worker builds its own copy of a run's policy, task and reward."""

    model: str
    """The run's model spec (`load_policy`)."""
    task: str
    task_options: dict[str, Any]
    rewards: list[dict[str, Any]]
    """The run's reward components, as in its config (`Reward.from_specs`)."""
    seed: int = 0
    device: Optional[str] = None


def _ray_producer(cfg: RolloutsConfig, policy, reward: Reward, spec: WorkerSpec) -> RolloutProducer:
    from sharpen.rollouts_ray import RayProducer  # Ray is an optional extra: imported only when named

    return RayProducer(cfg, policy, reward, spec)


PRODUCERS: dict[str, Callable[[RolloutsConfig, Any, Reward, WorkerSpec], RolloutProducer]] = {
    "in_process": lambda cfg, policy, reward, spec: InProcessProducer(policy, reward),
    "ray": _ray_producer,
}
"""executor name → the producer built from (rollouts section, training policy, reward, worker spec)."""


def make_producer(cfg: RolloutsConfig, policy, reward: Reward, spec: WorkerSpec) -> RolloutProducer:
    """The producer a run's `rollouts` section names."""
    return PRODUCERS[cfg.executor](cfg, policy, reward, spec)
