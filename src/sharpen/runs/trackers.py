"""Experiment-tracker sinks: the run store's metrics mirrored to TensorBoard, MLflow, W&B, trackio.

    trackers = open_trackers(["tensorboard", "mlflow"], run_dir, config, task="addition", samples=8)
    trackers.log_step(12, {"reward/mean": 0.6, ...}, completions)   # same step as the store
    trackers.close()

Every metric the store records at a step goes to every tracker at that step, under the
TRL/verl name of `metric_names.tracker_name`; the run config is logged once as parameters
(flattened dotted keys); sampled completions go to a table where the tracker has one
(TensorBoard: a markdown table in the text tab; MLflow: a table-JSON artifact; W&B, trackio:
their Table). Each tracker's package is an optional extra: an absent one is a
`TrackerUnavailable` that names the extra to install.

Where each writes by default: TensorBoard event files under <run_dir>/tensorboard; MLflow a
`file:<run_dir>/mlruns` store (MLFLOW_TRACKING_URI overrides it; '@' in a name becomes '_at_',
which MLflow requires); W&B offline mode under
<run_dir> unless WANDB_MODE is set; trackio its local database (TRACKIO_DIR).
"""

from __future__ import annotations

import importlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from sharpen.runs.metric_names import tracker_name
from sharpen.runs.store import CompletionRecord

COMPLETION_COLUMNS = ("problem_id", "prompt", "completion", "reward")
PROJECT = "sharpen"


class TrackerUnavailable(RuntimeError):
    """A configured tracker's package is not installed (or the name is unknown)."""


class Tracker(Protocol):
    def log_metrics(self, step: int, metrics: dict[str, float]) -> None: ...
    def log_completions(self, step: int, rows: list[tuple]) -> None: ...
    def close(self) -> None: ...


def _require(module: str, tracker: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise TrackerUnavailable(
            f"tracker {tracker!r} needs the {module!r} package: pip install 'sharpen[{extra}]'"
        ) from e


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}, "c": [1, 2]} → {"a.b": "1", "c": "[1, 2]"}: a config as string parameters."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


def _markdown_table(rows: list[tuple]) -> str:
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", "<br>")
    lines = ["| " + " | ".join(COMPLETION_COLUMNS) + " |", "|" + "---|" * len(COMPLETION_COLUMNS)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


class TensorBoardTracker:
    """Scalars with torch's SummaryWriter; config and completions in the text tab."""

    def __init__(self, run_dir: Path, config: dict[str, Any], name: str, first_step: int = 0) -> None:
        _require("tensorboard", "tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        # on a resume, TensorBoard hides what an interrupted run logged at steps >= first_step
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=first_step or None)
        params = "\n".join(f"| {k} | {v} |" for k, v in flatten(config).items())
        self.writer.add_text("config", "| key | value |\n|---|---|\n" + params, 0)

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def log_completions(self, step: int, rows: list[tuple]) -> None:
        self.writer.add_text("completions", _markdown_table(rows), step)

    def close(self) -> None:
        self.writer.close()


def mlflow_name(name: str) -> str:
    """MLflow refuses '@' in metric names: val-core/t/acc/mean@8 → val-core/t/acc/mean_at_8."""
    return name.replace("@", "_at_")


class MLflowTracker:
    """One MLflow run; a local `file:` store under the run directory unless MLFLOW_TRACKING_URI says."""

    def __init__(self, run_dir: Path, config: dict[str, Any], name: str, first_step: int = 0) -> None:
        _require("mlflow", "mlflow", "mlflow")
        from mlflow import MlflowClient
        from mlflow.entities import Param

        uri = os.environ.get("MLFLOW_TRACKING_URI") or (run_dir / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks to opt in to file stores
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(PROJECT)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(PROJECT)
        self.run_id = self.client.create_run(experiment_id, run_name=name).info.run_id
        params = [Param(k, v[:6000]) for k, v in flatten(config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        ms = [Metric(mlflow_name(k), v, 0, step) for k, v in metrics.items()]
        for i in range(0, len(ms), 1000):
            self.client.log_batch(self.run_id, metrics=ms[i : i + 1000])

    def log_completions(self, step: int, rows: list[tuple]) -> None:
        table = {"columns": list(COMPLETION_COLUMNS), "data": [list(r) for r in rows]}
        self.client.log_dict(self.run_id, table, f"completions/step_{step:06d}.json")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class WandbTracker:
    """A W&B run, offline (files under the run directory) unless WANDB_MODE is set."""

    def __init__(self, run_dir: Path, config: dict[str, Any], name: str, first_step: int = 0) -> None:
        self.wandb = _require("wandb", "wandb", "wandb")
        mode = os.environ.get("WANDB_MODE", "offline")
        self.run = self.wandb.init(project=PROJECT, name=name, config=config, dir=str(run_dir), mode=mode)

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def log_completions(self, step: int, rows: list[tuple]) -> None:
        table = self.wandb.Table(columns=list(COMPLETION_COLUMNS), data=[list(r) for r in rows])
        self.run.log({"completions": table}, step=step)

    def close(self) -> None:
        self.run.finish()


class TrackioTracker:
    """A trackio run (its local database by default)."""

    def __init__(self, run_dir: Path, config: dict[str, Any], name: str, first_step: int = 0) -> None:
        self.trackio = _require("trackio", "trackio", "trackio")
        self.run = self.trackio.init(project=PROJECT, name=name, config=config)

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.trackio.log(metrics, step=step)

    def log_completions(self, step: int, rows: list[tuple]) -> None:
        table = self.trackio.Table(columns=list(COMPLETION_COLUMNS), data=[list(r) for r in rows])
        self.trackio.log({"completions": table}, step=step)

    def close(self) -> None:
        self.trackio.finish()


TRACKERS: dict[str, Callable[..., Tracker]] = {
    "tensorboard": TensorBoardTracker,
    "mlflow": MLflowTracker,
    "wandb": WandbTracker,
    "trackio": TrackioTracker,
}
"""Tracker name (as in the run config's `trackers:`) → sink built from (run_dir, config, run name,
first_step). A resumed run opens its trackers again from the first step still to run: TensorBoard
purges the interrupted run's later events; MLflow, W&B and trackio start a new run there."""


@dataclass
class Trackers:
    """The run's trackers; `log_step` mirrors one stored step to all of them."""

    sinks: list[Tracker]
    task: str
    samples: int

    def log_step(self, step: int, metrics: dict[str, float], completions: Sequence[CompletionRecord] = ()) -> None:
        named = {tracker_name(k, self.task, self.samples): v for k, v in metrics.items() if not math.isnan(v)}
        rows = [(c.problem_id, c.prompt, c.completion, c.reward) for c in completions]
        for sink in self.sinks:
            sink.log_metrics(step, named)
            if rows:
                sink.log_completions(step, rows)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def open_trackers(names: Sequence[str], run_dir: Path, config: dict[str, Any], *, task: str, samples: int,
                  first_step: int = 0) -> Trackers:
    """Start every named tracker (config logged as parameters); unknown or absent → TrackerUnavailable."""
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise TrackerUnavailable(f"unknown tracker(s) {', '.join(unknown)}; known: {', '.join(TRACKERS)}")
    run_dir = Path(run_dir)
    return Trackers([TRACKERS[n](run_dir, config, run_dir.name, first_step) for n in names], task, samples)
