"""The Ray rollout producer on a local cluster of two CPU workers and the tiny model.

One module-scoped cluster (Ray's start-up is slow on a loaded machine). The first test runs in
the default suite; whole runs are marked slow. No timing is asserted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sharpen.models.base import SamplingParams
from sharpen.rollouts import InProcessProducer, PromptSeeded, RolloutRequest, RolloutsConfig, WorkerSpec, weight_hash
from sharpen.runs import RunStore
from sharpen.signals.reward import Reward
from sharpen.tasks import get_task

TASK = get_task("addition")
TIMING = ("seconds", "tokens_per_s", "off_policy/")
"""Metrics that measure time (or the producer's own bookkeeping): left out of comparisons."""


@pytest.fixture(scope="module")
def ray_cluster():
    """A local two-CPU cluster on 127.0.0.1, as `connect` starts one for a run."""
    mp = pytest.MonkeyPatch()
    mp.delenv("RAY_ADDRESS", raising=False)
    from sharpen.rollouts_ray import MIN_OBJECT_STORE_BYTES, connect

    ray, connected = connect(None, MIN_OBJECT_STORE_BYTES, cpus_needed=2)
    assert connected
    yield ray
    ray.shutdown()
    mp.undo()


def producer_for(policy, model_dir, **rollouts):
    from sharpen.rollouts_ray import RayProducer

    reward = Reward.from_specs(["correctness"], task=TASK, policy=policy)
    spec = WorkerSpec(str(model_dir), TASK.name, {"digits": 2}, [{"name": "correctness"}])
    return RayProducer(RolloutsConfig(executor="ray", workers=2, **rollouts), policy, reward, spec), reward


def params(seed: int, n: int = 4) -> SamplingParams:
    return SamplingParams(n=n, max_new_tokens=TASK.max_new_tokens, stop=TASK.stop, seed=seed)


def tokens(groups):
    return [[c.token_ids for c in g] for g in groups]


def test_workers_hold_the_learners_weights_and_sample_what_one_process_samples(ray_cluster, tiny_policy,
                                                                              tiny_model_dir):
    producer, reward = producer_for(tiny_policy, tiny_model_dir)
    try:
        assert producer.worker_hashes() == [(0, weight_hash(tiny_policy.model))] * 2
        torch.manual_seed(0)
        with torch.no_grad():  # an update
            for p in tiny_policy.model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        producer.publish(1)
        assert producer.worker_hashes() == [(1, weight_hash(tiny_policy.model))] * 2

        problems = TASK.problems("train", 5, 0)  # 3 + 2 problems over the two workers
        local = InProcessProducer(tiny_policy, reward)
        local.publish(1)
        remote, here = producer.produce(problems, params(7)), local.produce(problems, params(7))
        assert [r.problem.id for r in remote.rollouts] == [p.id for p in problems]
        assert tokens(r.completions for r in remote.rollouts) == tokens(r.completions for r in here.rollouts)
        assert [r.rewards for r in remote.rollouts] == [r.rewards for r in here.rollouts]
        assert remote.reward_summary == here.reward_summary
        assert {r.weight_version for r in remote.rollouts} == {1}
        metrics = producer.step_metrics()
        assert metrics["off_policy/staleness_max"] == 0.0 and metrics["off_policy/dropped_rollouts"] == 0.0

        prompts = [p.prompt for p in TASK.problems("eval", 3, 0)]
        assert tokens(producer.sampler().generate(prompts, params(3, n=2))) == tokens(
            PromptSeeded(tiny_policy).generate(prompts, params(3, n=2)))
    finally:
        producer.close()


@pytest.mark.slow
def test_a_rollout_older_than_the_bound_is_dropped_and_sampled_again(ray_cluster, tiny_policy, tiny_model_dir):
    producer, reward = producer_for(tiny_policy, tiny_model_dir, max_staleness=1)
    problems = {s: tuple(TASK.problems("train", 4, s)) for s in (1, 2, 3)}

    def schedule(step):
        return RolloutRequest(problems[step], params(step)) if step in problems else None

    try:
        producer.begin_step(1, schedule)
        first = producer.produce(problems[1], params(1))  # serves step 1, then samples step 2 at version 0
        assert {r.weight_version for r in first.rollouts} == {0}
        producer.step_metrics()
        producer.publish(1)
        producer.begin_step(2, schedule)
        ahead = producer.produce(problems[2], params(2))  # sampled ahead: one version old, within K = 1
        assert {r.weight_version for r in ahead.rollouts} == {0}
        assert producer.step_metrics()["off_policy/staleness_max"] == 1.0
        with torch.no_grad():
            next(tiny_policy.model.parameters()).add_(0.1)
        producer.publish(2)  # step 3's rollouts (sampled ahead at version 1) ...
        producer.publish(3)  # ... are now two versions old: a deliberately stale batch
        producer.begin_step(3, schedule)
        late = producer.produce(problems[3], params(3))
        metrics = producer.step_metrics()
        assert metrics["off_policy/dropped_rollouts"] == 4.0
        assert metrics["off_policy/staleness_max"] == 0.0
        assert {r.weight_version for r in late.rollouts} == {3}
        local = InProcessProducer(tiny_policy, reward)  # sampled again with the same seeds, newest weights
        assert tokens(r.completions for r in late.rollouts) == tokens(
            r.completions for r in local.produce(problems[3], params(3)).rollouts)
    finally:
        producer.close()


CONFIG = """\
model: {model}
steps: {steps}
problems_per_step: 4
sampling: {{group_size: 4}}
eval: {{every: 2, problems: 6, samples: 4, ks: [1, 4]}}
checkpoint_every: 2
threads: 1
"""


def write_config(tmp_path: Path, model: Path, extra: str = "", steps: int = 4) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(CONFIG.format(model=model, steps=steps) + extra)
    return path


def stored(run_dir: Path) -> dict[tuple[int, str], float]:
    return {(r.step, r.name): r.value for r in RunStore(run_dir).metrics()
            if not any(t in r.name for t in TIMING)}


@pytest.fixture(scope="module")
def in_process_run(tmp_path_factory, tiny_model_dir) -> Path:
    from sharpen.loop import run

    tmp = tmp_path_factory.mktemp("in-process")
    run(write_config(tmp, tiny_model_dir), [f"run_dir={tmp / 'run'}"], progress=False)
    return tmp / "run"


def assert_same_run(run_dir: Path, reference: Path) -> None:
    got, want = stored(run_dir), stored(reference)
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


@pytest.mark.slow
def test_synchronous_ray_run_reproduces_the_in_process_run(ray_cluster, tmp_path, tiny_model_dir, in_process_run):
    from sharpen.loop import run

    cfg = write_config(tmp_path, tiny_model_dir, "rollouts: {executor: ray, workers: 2}\n")
    run(cfg, [f"run_dir={tmp_path / 'run'}"], progress=False)
    assert_same_run(tmp_path / "run", in_process_run)
    staleness = RunStore(tmp_path / "run").metrics("off_policy/staleness_max")
    assert [r.value for r in staleness] == [0.0] * 4


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_the_run_goes_on(ray_cluster, tmp_path, tiny_model_dir, in_process_run,
                                                          monkeypatch):
    from sharpen.loop import Trainer, run

    train_step = Trainer.train_step

    def killing(self, step):
        if step == 2:  # mid-run: the worker dies before it samples its shard of step 2
            ray_cluster.kill(self.producer.workers[0], no_restart=False)
        return train_step(self, step)

    monkeypatch.setattr(Trainer, "train_step", killing)
    cfg = write_config(tmp_path, tiny_model_dir, "rollouts: {executor: ray, workers: 2}\n")
    run(cfg, [f"run_dir={tmp_path / 'run'}"], progress=False)
    assert_same_run(tmp_path / "run", in_process_run)  # the lost work was sampled again, the same


@pytest.mark.slow
def test_asynchronous_run_uses_no_rollout_older_than_the_bound(ray_cluster, tmp_path, tiny_model_dir, monkeypatch):
    from sharpen.loop import run
    from sharpen.rollouts_ray import RayProducer

    produce = RayProducer.produce

    def killing(self, problems, params):
        batch = produce(self, problems, params)
        if self.step == 3:  # while a worker samples its shard of step 4 ahead
            ray_cluster.kill(self.workers[0], no_restart=False)
        return batch

    monkeypatch.setattr(RayProducer, "produce", killing)
    cfg = write_config(tmp_path, tiny_model_dir, "rollouts: {executor: ray, workers: 2, max_staleness: 1}\n"
                                                 "learner: {tis_cap: 2.0, skip_zero_advantage: false}\n")  # every step trains
    summary = run(cfg, [f"run_dir={tmp_path / 'run'}"], progress=False)
    store = RunStore(tmp_path / "run")
    staleness = {r.step: r.value for r in store.metrics("off_policy/staleness_max")}
    assert staleness == {1: 0.0, 2: 1.0, 3: 1.0, 4: 1.0}  # step 1 on-policy, then one version behind
    assert [r.value for r in store.metrics("off_policy/dropped_rollouts")] == [0.0] * 4
    assert len(store.metrics("tis_weight_mean")) == 4
    assert "pass@1" in summary["final"]


@pytest.mark.slow
def test_an_asynchronous_run_killed_mid_step_resumes_with_no_step_lost_or_doubled(tmp_path, tiny_model_dir,
                                                                                 held_run_command):
    """In its own processes (no module cluster): kill -9 while steps are sampled ahead."""
    cfg = write_config(tmp_path, tiny_model_dir, "rollouts: {executor: ray, workers: 2, max_staleness: 1}\n", steps=6)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "sharpen.cli", "run", str(cfg), f"run_dir={run_dir}"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    child = subprocess.Popen(held_run_command(3, str(cfg), f"run_dir={run_dir}"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 600
    while time.time() < deadline:  # kill it once step 3 is stored: step 4 is being sampled ahead
        if (run_dir / "run.sqlite").exists() and (RunStore(run_dir).last_step() or 0) >= 3:
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert RunStore(run_dir).last_step() == 3
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=900)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    steps = [r.step for r in RunStore(run_dir).metrics("reward/mean")]
    assert steps == [1, 2, 3, 4, 5, 6]  # none missing, none twice
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 6


@pytest.mark.slow
@pytest.mark.parametrize("learner", ["{kind: rise, turns: 2, filter: best, batch_size: 4, first_turn: skip}",
                                     "{kind: score, stage1_steps: 1}"])
def test_multi_turn_learners_sample_their_episodes_on_the_workers(ray_cluster, tmp_path, tiny_model_dir, learner,
                                                                  monkeypatch):
    from sharpen.loop import run
    from sharpen.models.hf import HFPolicy

    extra = f"learner: {learner}\n"
    (tmp_path / "here").mkdir()
    run(write_config(tmp_path / "here", tiny_model_dir, extra, steps=2), [f"run_dir={tmp_path / 'here' / 'run'}"],
        progress=False)
    calls = []
    generate = HFPolicy.generate
    monkeypatch.setattr(HFPolicy, "generate", lambda self, *a, **k: calls.append(1) or generate(self, *a, **k))
    cfg = write_config(tmp_path, tiny_model_dir, extra + "rollouts: {executor: ray, workers: 2}\n", steps=2)
    run(cfg, [f"run_dir={tmp_path / 'run'}"], progress=False)
    assert calls == []  # episodes, candidates and held-out turns were all sampled on the workers
    assert_same_run(tmp_path / "run", tmp_path / "here" / "run")


@pytest.mark.slow
def test_ray_address_joins_the_running_cluster_instead_of_starting_one(ray_cluster):
    address = ray_cluster.get_runtime_context().gcs_address
    script = ("from sharpen.rollouts_ray import connect\n"
              "ray, connected = connect(None, 10**8, 1)\n"
              "print(ray.get_runtime_context().gcs_address)\n")
    env = {**os.environ, "RAY_ADDRESS": address}
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == [address]  # the module's cluster, not a new local one
