"""Tracker sinks: a short run writes what each tracker's own reader finds, under TRL/verl names."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from sharpen.loop import RunStopped, run
from sharpen.runs import RunStore
from sharpen.runs.metric_names import tracker_name
from sharpen.runs.trackers import TrackerUnavailable, flatten, mlflow_name, open_trackers

CONFIG = """\
model: {model}
steps: 2
problems_per_step: 2
sampling: {{group_size: 2}}
eval: {{every: 2, problems: 4, samples: 2, ks: [1, 2], label_free: true}}
checkpoint_every: 2
log_completions: 1
threads: 1
trackers: [{trackers}]
"""


def short_run(tmp_path: Path, model: Path, trackers: str) -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CONFIG.format(model=model, trackers=trackers))
    run(cfg, [f"run_dir={tmp_path / 'run'}"], progress=False)
    return tmp_path / "run"


def stored(run_dir: Path) -> dict[tuple[int, str], float]:
    """{(step, tracker name): value} of every finite metric in the run store."""
    rows = RunStore(run_dir).metrics()
    return {(r.step, tracker_name(r.name, "addition", 2)): r.value for r in rows if r.value == r.value}


def test_metric_names_follow_trl_and_verl():
    assert tracker_name("reward/mean", "addition", 8) == "reward"
    assert tracker_name("reward/std", "addition", 8) == "reward_std"
    assert tracker_name("reward/frac_zero_std", "addition", 8) == "frac_reward_zero_std"
    assert tracker_name("rewards/correctness/mean", "addition", 8) == "rewards/correctness/mean"
    assert tracker_name("kl_ref", "addition", 8) == "kl"
    assert tracker_name("completion_tokens_mean", "addition", 8) == "completions/mean_length"
    assert tracker_name("eval/accuracy", "addition", 8) == "val-core/addition/acc/mean@8"
    assert tracker_name("eval/maj@8", "addition", 8) == "val-core/addition/acc/maj@8/mean"
    assert tracker_name("eval/pass@4/lo", "addition", 8) == "val-core/addition/acc/best@4/mean_lo"
    assert tracker_name("eval/label_free/pass@1", "addition", 8) == "val-aux/addition/label_free/pass@1"
    assert tracker_name("eval/label_free/pass@1/abs_error", "t", 8) == "val-aux/t/label_free/pass@1_abs_error"


def test_tensorboard_event_files_hold_every_stored_metric_at_its_step(tmp_path, tiny_model_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = short_run(tmp_path, tiny_model_dir, "tensorboard")
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    found = {(e.step, tag): e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}
    expected = stored(run_dir)
    assert set(found) == set(expected)
    for key, value in expected.items():
        assert found[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert (0, "val-core/addition/acc/mean@2") in found and (2, "reward") in found
    assert (2, "val-aux/addition/label_free/pass@1") in found
    texts = set(acc.Tags()["tensors"])  # the text plugin stores its markdown as tensors
    assert {"config/text_summary", "completions/text_summary"} <= texts


def test_mlflow_file_store_holds_metrics_params_and_completions(tmp_path, tiny_model_dir, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = short_run(tmp_path, tiny_model_dir, "mlflow")
    client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    (mlrun,) = client.search_runs([client.get_experiment_by_name("sharpen").experiment_id])
    expected = stored(run_dir)
    for name in {n for _, n in expected}:
        history = {m.step: m.value for m in client.get_metric_history(mlrun.info.run_id, mlflow_name(name))}
        assert history == pytest.approx({s: v for (s, n), v in expected.items() if n == name}), name
    assert "val-core/addition/acc/mean_at_2" in mlrun.data.metrics
    assert mlrun.data.params["eval.samples"] == "2" and mlrun.data.params["trackers"] == '["mlflow"]'
    artifacts = [a.path for a in client.list_artifacts(mlrun.info.run_id, "completions")]
    assert artifacts == ["completions/step_000001.json", "completions/step_000002.json"]


class FakeRun:
    def __init__(self, log):
        self.logged = log

    def log(self, data, step):
        self.logged.append((step, data))

    def finish(self):
        self.logged.append("finished")


def fake_module(name: str, log: list, inits: list) -> types.ModuleType:
    """A stand-in for wandb/trackio exposing the calls sharpen makes (init, log, Table, finish)."""
    mod = types.ModuleType(name)
    run = FakeRun(log)
    mod.init = lambda **kw: inits.append(kw) or run
    mod.log = run.log
    mod.finish = run.finish
    mod.Table = lambda columns, data: ("table", tuple(columns), len(data))
    return mod


@pytest.mark.parametrize("name", ["wandb", "trackio"])
def test_wandb_and_trackio_get_every_metric_at_its_step(tmp_path, tiny_model_dir, monkeypatch, name):
    log, inits = [], []
    monkeypatch.setitem(sys.modules, name, fake_module(name, log, inits))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run_dir = short_run(tmp_path, tiny_model_dir, name)
    assert inits[0]["config"]["trackers"] == [name]
    if name == "wandb":
        assert inits[0]["mode"] == "offline"
    got = {(step, k): v for step, data in log[:-1] for k, v in data.items() if k != "completions"}
    assert got == pytest.approx(stored(run_dir))
    tables = [(step, data["completions"]) for step, data in log[:-1] if "completions" in data]
    assert [s for s, _ in tables] == [1, 2] and tables[0][1][1][0] == "problem_id"
    assert log[-1] == "finished"


def test_an_absent_tracker_package_names_the_extra(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb → ImportError
    with pytest.raises(RunStopped, match=r"pip install 'sharpen\[wandb\]'"):
        short_run(tmp_path, tiny_model_dir, "wandb")
    with pytest.raises(TrackerUnavailable, match="unknown tracker"):
        open_trackers(["neptune"], tmp_path, {}, task="t", samples=1)


def test_an_unknown_tracker_in_a_config_is_a_config_error(tmp_path, tiny_model_dir):
    from sharpen.config import ConfigError

    with pytest.raises(ConfigError, match="trackers"):
        short_run(tmp_path, tiny_model_dir, "neptune")


def test_flatten_config_to_dotted_parameters():
    assert flatten({"a": {"b": 1, "c": "x"}, "d": [1, 2], "e": {}}) == {"a.b": "1", "a.c": "x", "d": "[1, 2]", "e": "{}"}


def test_a_resumed_tensorboard_log_hides_what_the_interrupted_run_logged_after_its_checkpoint(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = open_trackers(["tensorboard"], tmp_path, {}, task="t", samples=1)
    for step in range(1, 5):
        first.log_step(step, {"loss": float(step)})
    first.close()  # the run was killed after step 4; its last checkpoint is step 2
    resumed = open_trackers(["tensorboard"], tmp_path, {}, task="t", samples=1, first_step=3)
    for step in (3, 4):
        resumed.log_step(step, {"loss": 10.0 * step})
    resumed.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
