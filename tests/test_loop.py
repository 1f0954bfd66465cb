"""The training loop's mechanics on a tiny model: store, checkpoints, resume, NaN stop."""

from __future__ import annotations

import json
import math
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sharpen.learners.base import EpisodeSettings
from sharpen.loop import RunConfig, RunStopped, eval_episodes, problem_batch, run, run_config
from sharpen.runs import RunStore

CONFIG = """\
# sharpen run {path}
model: {model}
steps: 6
problems_per_step: 4
sampling: {{group_size: 4}}
eval: {{every: 3, problems: 8, samples: 4, ks: [1, 4]}}
checkpoint_every: 2
threads: 1
"""


def write_config(tmp_path: Path, model: Path, name: str = "cfg.yaml", extra: str = "") -> Path:
    path = tmp_path / name
    path.write_text(CONFIG.format(path=path, model=model) + extra)
    return path


def test_run_writes_every_step_and_a_summary(tmp_path, tiny_model_dir):
    cfg = write_config(tmp_path, tiny_model_dir)
    summary = run(cfg, [f"run_dir={tmp_path / 'run'}"], progress=False)
    store = RunStore(tmp_path / "run")
    steps = sorted({r.step for r in store.metrics()})
    assert steps == [0, 1, 2, 3, 4, 5, 6]
    evals = sorted({r.step for r in store.metrics("eval/pass@1")})
    assert evals == [0, 3, 6]
    assert [c.step for c in store.checkpoints()] == [2, 4, 6]
    assert [p.name for p in sorted((tmp_path / "run" / "checkpoints").iterdir())] == ["step-000004", "step-000006"]
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["baseline"]["pass@1"]["value"] == summary["baseline"]["pass@1"]["value"]
    assert set(on_disk["final"]) >= {"pass@1", "pass@4", "maj@4", "accuracy", "tokens_per_problem"}
    assert Path(summary["report"]).exists()
    for name in ("reward/mean", "train/accuracy", "gen_tokens_per_s", "train_tokens_per_s",
                 "reward/frac_zero_std", "trained_group_frac"):
        assert len(store.metrics(name)) == 6, name
    # the optimizer steps' diagnostics exist where a group had a signal (the others are skipped)
    trained = [r.step for r in store.metrics("trained_group_frac") if r.value > 0]
    for name in ("clip_frac", "approx_kl", "entropy", "grad_norm"):
        assert [r.step for r in store.metrics(name)] == trained, name


def test_a_finished_run_directory_is_not_overwritten(tmp_path, tiny_model_dir):
    cfg = write_config(tmp_path, tiny_model_dir, extra="steps: 1\n".replace("steps", "checkpoint_every"))
    run(cfg, [f"run_dir={tmp_path / 'run'}", "steps=1"], progress=False)
    with pytest.raises(RunStopped, match="already holds a run"):
        run(cfg, [f"run_dir={tmp_path / 'run'}", "steps=1"], progress=False)


TURN_METRICS = {"turn1/accuracy", "turn2/accuracy", "m1@t1", "m1@tT", "p1@tT", "maj@turns", "delta_t1_tT",
                "delta_i_to_c", "delta_c_to_i", "turns/tokens_per_problem"}


def test_multi_turn_runs_log_turn_metrics_from_the_base_model_on(tmp_path, tiny_model_dir):
    cfg = write_config(tmp_path, tiny_model_dir, extra="learner: {kind: score, stage1_steps: 3}\n")
    summary = run(cfg, [f"run_dir={tmp_path / 'run'}"], progress=False)
    store = RunStore(tmp_path / "run")
    for name in TURN_METRICS:
        assert sorted(r.step for r in store.metrics(f"eval/{name}")) == [0, 3, 6], name
        assert len(store.metrics(f"eval/{name}/lo")) == len(store.metrics(f"eval/{name}/hi")) == 3, name
    for side in ("baseline", "final"):
        assert TURN_METRICS <= set(summary[side]), side
        lo, hi = summary[side]["delta_i_to_c"]["ci"]
        assert lo <= summary[side]["delta_i_to_c"]["value"] <= hi
    assert "turn3/accuracy" not in summary["final"]  # SCoRe's episodes: two attempts
    assert "report-turns.png" in {p.name for p in (tmp_path / "run").iterdir()}


def test_held_out_episodes_default_to_the_learners_own():
    def episodes(**cfg):
        return eval_episodes(RunConfig.model_validate(cfg))

    assert episodes() == EpisodeSettings(1, "binary", None, False)
    assert episodes(learner={"kind": "rise", "turns": 3, "stop_when_correct": True}) == EpisodeSettings(
        3, "binary", None, True)
    assert episodes(learner={"kind": "score", "neutral": "wrong"}) == EpisodeSettings(2, "none", "wrong", False)
    assert episodes(learner={"kind": "score"}, eval={"turns": 3, "feedback": "binary", "neutral": "again",
                                                     "stop_when_correct": True}) == EpisodeSettings(
        3, "binary", "again", True)
    assert episodes(eval={"turns": 2}) == EpisodeSettings(2, "binary", None, False)


def test_problem_batches_depend_only_on_seed_and_step():
    pool = list(range(100))
    assert problem_batch(pool, 0, 5, 8) == problem_batch(pool, 0, 5, 8)
    assert problem_batch(pool, 0, 5, 8) != problem_batch(pool, 0, 6, 8)


LEARNER_SECTIONS = {
    "policy_gradient": "learner: {skip_zero_advantage: false}\n",  # a step on every group: state to save
    "rest_em": "learner: {kind: rejection_sampling, select: best, restart_from_base: true, batch_size: 3}\n",
    "irpo": "learner: {kind: preference, loss: irpo, pairs: judge, reference: base, batch_size: 2}\n"
            "rewards: [{name: likelihood}]\n",
    "rise": "learner: {kind: rise, turns: 3, filter: best, batch_size: 3}\n",
    "score": "learner: {kind: score, stage1_steps: 2, epochs: 2}\n",
}


@pytest.mark.parametrize("learner", LEARNER_SECTIONS)
def test_kill_minus_nine_then_resume_matches_an_uninterrupted_run(tmp_path, tiny_model_dir, learner,
                                                                 held_run_command):
    cfg = write_config(tmp_path, tiny_model_dir, extra="log_completions: 1\n" + LEARNER_SECTIONS[learner])
    straight = run(cfg, [f"run_dir={tmp_path / 'straight'}"], progress=False)

    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "sharpen.cli", "run", str(cfg), f"run_dir={run_dir}"]
    child = subprocess.Popen(held_run_command(3, str(cfg), f"run_dir={run_dir}"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill it once step 3 is stored: step 4 (a checkpoint step) is under way
        if (run_dir / "run.sqlite").exists() and (RunStore(run_dir).last_step() or 0) >= 3:
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert RunStore(run_dir).last_step() == 3

    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    store = RunStore(run_dir)
    rows = store.metrics()
    steps = [r.step for r in rows if r.name == "reward/mean"]
    assert steps == [1, 2, 3, 4, 5, 6]  # no step missing, none twice
    final = json.loads((run_dir / "summary.json").read_text())["final"]
    assert final == straight["final"]
    straight_rewards = [r.value for r in RunStore(tmp_path / "straight").metrics("reward/mean")]
    assert [r.value for r in store.metrics("reward/mean")] == straight_rewards
    trained = store.metrics("sft/updates") + store.metrics("pairs/updates") + store.metrics("update_seconds")
    assert sum(r.value > 0 for r in trained) >= 3  # the learner did update, so resuming had state to restore


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, tiny_model_dir):
    reward_file = tmp_path / "bad_reward.py"
    reward_file.write_text(
        "def blows_up_after_two(prompts, completions, step_calls=[0], **columns):\n"
        "    step_calls[0] += 1\n"  # from step 3 on, a finite reward past float32 range: the loss is not finite
        "    return [3e38 * (i % 2) if step_calls[0] > 2 else float(i % 2) for i in range(len(completions))]\n"
    )
    cfg = RunConfig.model_validate({
        "model": str(tiny_model_dir), "steps": 5, "problems_per_step": 2, "checkpoint_every": 1,
        "sampling": {"group_size": 2}, "eval": {"every": 10, "problems": 4, "samples": 2, "ks": [1]},
        "rewards": [{"name": f"{reward_file}:blows_up_after_two"}], "learner": {"advantage": "reinforce"},
    })
    with pytest.raises(RunStopped, match="step 3: the loss is (-?inf|nan)") as info:
        run_config(cfg, tmp_path / "nan", progress=False)
    store = RunStore(tmp_path / "nan")
    assert store.last_step() == 2
    assert [c.step for c in store.checkpoints()] == [1, 2]
    assert (tmp_path / "nan" / "checkpoints" / "step-000002" / "config.json").exists()
    assert "step-000002" in str(info.value)


LABEL_FREE_RUNS = [
    *[(signal, {"kl_coef": 0.1}) for signal in ("majority_vote", "likelihood", "self_certainty", "self_judge")],
    ("likelihood", {"kind": "rejection_sampling", "select": "best"}),  # sharpening SFT
    ("self_judge", {"kind": "rejection_sampling", "select": "best"}),
    ("majority_vote", {"kind": "preference", "pairs": "consistency"}),  # ScPO
    ("self_judge", {"kind": "preference", "pairs": "judge"}),  # Self-Rewarding, pointwise judge
    ("pairwise_judge", {"kind": "preference", "pairs": "judge"}),  # Self-Rewarding, both orders
]


@pytest.mark.parametrize("signal,learner", LABEL_FREE_RUNS)
def test_label_free_training_never_reads_a_reference(tmp_path, tiny_model_dir, signal, learner):
    task_file = tmp_path / "blind.py"
    task_file.write_text(
        "import dataclasses\n"
        "from sharpen.tasks import get_task\n"
        "def make():\n"
        "    def check(problem, text):\n"
        "        raise AssertionError('the checker was called during label-free training')\n"
        "    problems = get_task('addition').problems\n"
        "    def without_answers(split, n, seed):\n"
        "        return [dataclasses.replace(p, answer=None) for p in problems(split, n, seed)]\n"
        "    return dataclasses.replace(get_task('addition'), check=check, problems=without_answers)\n"
    )
    from sharpen.loop import Trainer

    cfg = RunConfig.model_validate({
        "model": str(tiny_model_dir), "steps": 2, "problems_per_step": 4, "sampling": {"group_size": 4},
        "task": {"name": f"{task_file}:make", "options": {}}, "rewards": [{"name": signal}], "learner": learner,
    })
    trainer = Trainer(cfg, tmp_path / "blind", progress=False)
    assert all(p.answer is None for p in trainer.pool)
    updated = 0.0
    for step in (1, 2):
        metrics = trainer.train_step(step).metrics
        updated += metrics.get("sft/updates", 0) + metrics.get("pairs/updates", 0)
        assert "train/accuracy" not in metrics and math.isfinite(metrics["reward/mean"])
    if learner.get("kind") == "rejection_sampling":
        assert updated > 0  # the learner did train, on labels it never saw


# ---- checkpoints: what a resume loads, and what it never deletes ----------------------------

class Killed(Exception):
    """Stands for a kill between two steps."""


def interrupted_run(monkeypatch, cfg: Path, run_dir, before_step: int) -> None:
    """Run `cfg` into `run_dir` and stop it just before `before_step` (steps before it are stored)."""
    from sharpen.loop import Trainer

    original = Trainer.train_step

    def train_step(self, step):
        if step == before_step:
            raise Killed(step)
        return original(self, step)

    monkeypatch.setattr(Trainer, "train_step", train_step)
    with pytest.raises(Killed):
        run(cfg, [f"run_dir={run_dir}"], progress=False)
    monkeypatch.setattr(Trainer, "train_step", original)


def resumed_steps(monkeypatch, cfg: Path, run_dir) -> list[int]:
    """Resume the run in `run_dir`; the steps the resumed run trained."""
    from sharpen.loop import Trainer

    original, ran = Trainer.train_step, []

    def train_step(self, step):
        ran.append(step)
        return original(self, step)

    monkeypatch.setattr(Trainer, "train_step", train_step)
    run(cfg, [f"run_dir={run_dir}"], resume=True, progress=False)
    return ran


def store_dump(run_dir: Path) -> list[str]:
    import sqlite3

    conn = sqlite3.connect(run_dir / "run.sqlite")
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def test_resume_from_another_working_directory(tmp_path, tiny_model_dir, monkeypatch):
    cfg = write_config(tmp_path, tiny_model_dir)
    (tmp_path / "here").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    interrupted_run(monkeypatch, cfg, "runs/cfg", before_step=4)  # a relative run_dir, as by default
    run_dir = tmp_path / "here" / "runs" / "cfg"
    kept = [row for row in store_dump(run_dir) if "INSERT INTO \"steps\"" in row]
    assert len(kept) == 4  # steps 0..3; the checkpoint of step 2

    monkeypatch.chdir(tmp_path / "elsewhere")
    assert resumed_steps(monkeypatch, cfg, run_dir) == [3, 4, 5, 6]  # from step 2's checkpoint, not from 1
    after = [row for row in store_dump(run_dir) if "INSERT INTO \"steps\"" in row]
    assert after[:3] == kept[:3]  # steps 0..2 are the rows written before the kill
    assert [r.step for r in RunStore(run_dir).metrics("reward/mean")] == [1, 2, 3, 4, 5, 6]


def test_resume_after_the_run_directory_moved(tmp_path, tiny_model_dir, monkeypatch):
    cfg = write_config(tmp_path, tiny_model_dir)
    interrupted_run(monkeypatch, cfg, tmp_path / "first", before_step=4)
    shutil.move(tmp_path / "first", tmp_path / "moved")
    assert resumed_steps(monkeypatch, cfg, tmp_path / "moved") == [3, 4, 5, 6]
    assert [c.step for c in RunStore(tmp_path / "moved").checkpoints()] == [2, 4, 6]


def test_resume_without_its_checkpoint_stops_and_changes_nothing(tmp_path, tiny_model_dir, monkeypatch):
    cfg = write_config(tmp_path, tiny_model_dir)
    run_dir = tmp_path / "run"
    interrupted_run(monkeypatch, cfg, run_dir, before_step=4)
    shutil.rmtree(run_dir / "checkpoints")
    before = store_dump(run_dir)
    assert sum("INSERT INTO \"steps\"" in row for row in before) == 4
    with pytest.raises(RunStopped) as info:
        resumed_steps(monkeypatch, cfg, run_dir)
    message = str(info.value)
    assert f"step 2) at {run_dir / 'checkpoints' / 'step-000002'}" in message
    assert "config.json, learner_state.pt is not there. Nothing was changed" in message
    assert store_dump(run_dir) == before  # every row, every table
    assert not (run_dir / "checkpoints").exists()


def test_resume_deletes_checkpoint_folders_of_truncated_steps(tmp_path, tiny_model_dir, monkeypatch):
    from sharpen.loop import Trainer

    cfg = write_config(tmp_path, tiny_model_dir)
    run_dir = tmp_path / "run"
    interrupted_run(monkeypatch, cfg, run_dir, before_step=4)
    checkpoints = run_dir / "checkpoints"
    shutil.copytree(checkpoints / "step-000002", checkpoints / "step-000004")  # saved, never stored
    (checkpoints / "step-000003.tmp").mkdir()  # half-written
    (checkpoints / "notes").mkdir()  # not a checkpoint folder: left alone
    seen = []
    original = Trainer.train_step

    def train_step(self, step):
        seen.append(sorted(p.name for p in checkpoints.iterdir()))
        return original(self, step)

    monkeypatch.setattr(Trainer, "train_step", train_step)
    run(cfg, [f"run_dir={run_dir}"], resume=True, progress=False)
    assert seen[0] == ["notes", "step-000002"]


def test_resume_refuses_a_learner_state_that_is_not_plain_data(tmp_path, tiny_model_dir, monkeypatch):
    cfg = write_config(tmp_path, tiny_model_dir)
    run_dir = tmp_path / "run"
    interrupted_run(monkeypatch, cfg, run_dir, before_step=4)
    marker = tmp_path / "unpickled"

    class Payload:  # what a tampered checkpoint could hold: unpickling it calls open(marker, "w")
        def __reduce__(self):
            return open, (str(marker), "w")

    torch.save({"optimizer": Payload()}, run_dir / "checkpoints" / "step-000002" / "learner_state.pt")
    before = store_dump(run_dir)
    with pytest.raises(RunStopped, match=r"checkpoint of step 2 at .*step-000002 could not be read"):
        resumed_steps(monkeypatch, cfg, run_dir)
    assert not marker.exists()
    assert store_dump(run_dir) == before


@pytest.mark.parametrize("learner", LEARNER_SECTIONS)
def test_every_learner_state_is_plain_data_that_loads_with_weights_only(tmp_path, tiny_model_dir, learner):
    from sharpen.config import load_config
    from sharpen.loop import LEARNER_STATE, Trainer, plain_state_problem

    cfg = load_config(write_config(tmp_path, tiny_model_dir, extra=LEARNER_SECTIONS[learner]), RunConfig, [])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    trainer.train_step(1)
    saved = trainer.learner.state_dict()
    assert plain_state_problem(saved) is None
    loaded = torch.load(trainer.save_checkpoint(1) / LEARNER_STATE, weights_only=True)
    fresh = Trainer(cfg, tmp_path / "fresh", progress=False)
    fresh.learner.load_state_dict(loaded)
    assert plain_state_problem(fresh.learner.state_dict()) is None
    assert torch.equal(torch.cat([t.flatten() for t in tensors(fresh.learner.state_dict())]),
                       torch.cat([t.flatten() for t in tensors(saved)]))


def tensors(value) -> list[torch.Tensor]:
    """Every tensor in a nested state, in a fixed order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for key in sorted(value, key=str) for t in tensors(value[key])]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors(v)]
    return []


def test_plain_state_problem_names_where_the_state_is_not_plain():
    from dataclasses import dataclass

    from sharpen.loop import plain_state_problem

    @dataclass
    class Counters:
        updates: int

    assert plain_state_problem({"optimizer": {"state": {0: {"step": torch.tensor(1.0)}}, "lr": [1e-3, None]}}) is None
    problem = plain_state_problem({"extra": [1, Counters(3)]}, "learner state")
    assert re.fullmatch(r"learner state\['extra'\]\[1\] is a [\w.]+\.<locals>\.Counters", problem), problem
    assert plain_state_problem({(1, 2): 0.5}) == "state has a key of type tuple"


def test_held_out_evaluation_and_training_sample_from_different_streams(tmp_path, tiny_model_dir):
    from sharpen.config import load_config
    from sharpen.loop import Trainer

    cfg = load_config(write_config(tmp_path, tiny_model_dir, extra="problems_per_step: 4\n"), RunConfig,
                      ["eval.problems=32"])  # two held-out batches of 16 problems

    def seeds_and_results(run_dir):
        trainer = Trainer(cfg, run_dir, progress=False)
        calls, generate = [], trainer.policy.generate

        def recording(prompts, params):
            calls.append(params.seed)
            return generate(prompts, params)

        trainer.policy.generate = recording
        held_out = trainer.evaluate()
        eval_seeds, calls[:] = list(calls), []
        steps = [trainer.train_step(step).metrics["reward/mean"] for step in (1, 2)]
        return eval_seeds, list(calls), held_out, steps

    eval_seeds, train_seeds, held_out, rewards = seeds_and_results(tmp_path / "a")
    assert len(eval_seeds) == 2 and len(train_seeds) == 2
    assert not set(eval_seeds) & set(train_seeds)
    assert seeds_and_results(tmp_path / "b") == (eval_seeds, train_seeds, held_out, rewards)  # deterministic
