"""The rollout producer's seam without Ray: per-prompt seeds, versions, the config section,
and truncated importance sampling (the off-policy correction the Ray producer's rollouts need)."""

from __future__ import annotations

import math

import pytest
import torch

from sharpen.config import ConfigError, load_config
from sharpen.learners.policy_gradient.losses import clipped_surrogate, truncated_importance_weights
from sharpen.loop import RunConfig
from sharpen.models.base import SamplingParams
from sharpen.rollouts import InProcessProducer, PromptSeeded, RolloutsConfig, weight_hash, with_prompt_seeds
from sharpen.rollouts_ray import shards
from sharpen.seeds import derive_seed
from sharpen.signals.reward import Reward
from sharpen.tasks import get_task

TASK = get_task("addition")


def test_prompt_seeds_are_derived_per_prompt_and_kept_when_given():
    params = with_prompt_seeds(SamplingParams(n=2, seed=5), 3)
    assert params.prompt_seeds == tuple(derive_seed(5, "prompt", i) for i in range(3))
    assert with_prompt_seeds(params, 3) is params
    assert with_prompt_seeds(SamplingParams(n=2), 3).prompt_seeds == ()  # unseeded stays unseeded


def test_a_group_samples_the_same_whatever_else_shares_the_call(tiny_policy):
    prompts = [p.prompt for p in TASK.problems("train", 5, 0)]
    params = with_prompt_seeds(SamplingParams(n=4, max_new_tokens=TASK.max_new_tokens, stop=TASK.stop, seed=11), 5)
    whole = tiny_policy.generate(prompts, params)
    part = tiny_policy.generate(prompts[3:], SamplingParams(**{**params.__dict__, "prompt_seeds": params.prompt_seeds[3:]}))
    assert [[c.token_ids for c in g] for g in whole[3:]] == [[c.token_ids for c in g] for g in part]
    for g, h in zip(whole[3:], part):  # another batch rounds the last bits of a log-prob differently
        for a, b in zip(g, h):
            assert a.sampling_logprobs == pytest.approx(b.sampling_logprobs, abs=1e-4)
    other = tiny_policy.generate(prompts[3:], SamplingParams(n=4, max_new_tokens=TASK.max_new_tokens, seed=12))
    assert len(other) == 2
    with pytest.raises(ValueError, match="one per prompt"):
        tiny_policy.generate(prompts[:2], params)


def test_the_in_process_producer_stamps_the_published_version(tiny_policy):
    reward = Reward.from_specs(["correctness"], task=TASK)
    producer = InProcessProducer(tiny_policy, reward)
    problems = TASK.problems("train", 2, 0)
    params = SamplingParams(n=2, max_new_tokens=TASK.max_new_tokens, stop=TASK.stop, seed=1)
    assert {r.weight_version for r in producer.produce(problems, params).rollouts} == {0}
    producer.publish(3)
    batch = producer.produce(problems, params)
    assert {r.weight_version for r in batch.rollouts} == {3}
    assert producer.step_metrics() == {}  # always on-policy: nothing to report
    seeded = PromptSeeded(tiny_policy).generate([p.prompt for p in problems], params)
    assert [[c.token_ids for c in g] for g in seeded] == [[c.token_ids for c in r.completions] for r in batch.rollouts]


def test_weight_hash_changes_with_any_weight(tiny_policy):
    before = weight_hash(tiny_policy.model)
    assert weight_hash(tiny_policy.model) == before
    with torch.no_grad():
        next(tiny_policy.model.parameters()).view(-1)[0] += 1e-3
    assert weight_hash(tiny_policy.model) != before


def test_shards_are_contiguous_and_even():
    assert shards(5, 2) == [(0, 3), (3, 5)]
    assert shards(4, 2) == [(0, 2), (2, 4)]
    assert shards(1, 3) == [(0, 1)]  # no empty shard
    assert shards(0, 2) == []


def test_the_learner_keeps_the_cores_asynchronous_local_workers_do_not_reserve():
    ray_async = RolloutsConfig(executor="ray", workers=2, max_staleness=1)
    assert ray_async.learner_threads(2, None) == 1  # 2 cores, 2 one-CPU workers: still one thread
    assert ray_async.learner_threads(8, None) == 6
    assert RolloutsConfig(executor="ray", workers=3, max_staleness=1,
                          resources_per_worker={"CPU": 0.5}).learner_threads(8, None) == 6  # ceil(1.5) reserved
    assert ray_async.learner_threads(8, "auto") is None  # a cluster's workers are elsewhere: torch's choice
    assert ray_async.model_copy(update={"address": "ray://head:10001"}).learner_threads(8, None) is None
    assert RolloutsConfig(executor="ray", workers=2).learner_threads(8, None) is None  # synchronous: the workers wait
    assert RolloutsConfig().learner_threads(8, None) is None  # in process


def test_rollouts_section_errors_name_the_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("rollouts:\n  max_staleness: 2\n")
    with pytest.raises(ConfigError, match=r"run.yaml:2: rollouts.max_staleness: .*needs executor: ray"):
        load_config(path, RunConfig)
    path.write_text("rollouts:\n  executor: threads\n")
    with pytest.raises(ConfigError, match=r"rollouts.executor"):
        load_config(path, RunConfig)
    path.write_text("rollouts:\n  executor: ray\n  workers: 0\n")
    with pytest.raises(ConfigError, match=r"rollouts.workers"):
        load_config(path, RunConfig)
    path.write_text("rollouts: {executor: ray, workers: 2, max_staleness: 1, resources_per_worker: {CPU: 1}}\n")
    cfg = load_config(path, RunConfig)
    assert (cfg.rollouts.executor, cfg.rollouts.workers, cfg.rollouts.max_staleness) == ("ray", 2, 1)


def test_truncated_importance_weights_by_hand():
    prox = torch.tensor([[math.log(0.5), math.log(0.9), 0.0]])  # (1, 3)
    mu = torch.tensor([[math.log(0.5), math.log(0.3), math.log(0.2)]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    w = truncated_importance_weights(prox, mu, mask, cap=2.0)
    assert w[0].tolist() == pytest.approx([1.0, 2.0, 0.0])  # 0.9/0.3 = 3 truncated at C = 2; padding 0
    with pytest.raises(ValueError, match="cap"):
        truncated_importance_weights(prox, mu, mask, cap=0.0)


def test_tis_weights_scale_each_tokens_surrogate_term():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -2.0]])  # on the proximal policy: ρ = 1, the clip inactive
    mask = torch.ones(1, 2)
    weights = torch.tensor([[0.5, 2.0]])
    loss, diag = clipped_surrogate(logp, old, torch.tensor([1.0]), mask, is_weights=weights)
    assert loss.item() == pytest.approx(-(0.5 + 2.0) / 2)  # token mean of −w·ρ·A
    loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([-0.25, -1.0])  # ∂/∂ℓ of −w·exp(ℓ − ℓ_old)·A / 2
    assert diag["tis_weight_mean"] == pytest.approx(1.25)
