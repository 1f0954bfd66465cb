"""The run store: round trips, one transaction per step, and surviving a crash mid-step."""

import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from sharpen.runs import CompletionRecord, MetricRow, RunStore, RunStoreError


def write_step(store: RunStore, step: int, n_completions: int = 3) -> None:
    with store.step(step) as w:
        w.metrics({"loss": 1.0 / (step + 1), "reward/mean": step / 10})
        w.completions(
            CompletionRecord(f"p{i}", f"{i}+{i}=", str(2 * i), reward=float(i % 2), extras={"i": i})
            for i in range(n_completions)
        )


def test_round_trip_and_reopen(tmp_path):
    with RunStore(tmp_path / "run") as store:
        assert store.path == tmp_path / "run" / "run.sqlite"
        assert store.last_step() is None and store.config() is None
        store.write_config({"task": "add2", "lr": 3e-4, "ks": [1, 8]})
        write_step(store, 0)
        with store.step(1) as w:
            w.metrics({"loss": float("nan")})
            w.checkpoint(tmp_path / "run" / "ckpt-1")
    with RunStore(tmp_path / "run") as store:
        assert store.config() == {"task": "add2", "lr": 3e-4, "ks": [1, 8]}
        assert store.last_step() == 1
        assert store.metrics("reward/mean") == [MetricRow(0, "reward/mean", 0.0)]
        rows = store.metrics()
        assert [(r.step, r.name) for r in rows] == [(0, "loss"), (0, "reward/mean"), (1, "loss")]
        assert math.isnan(rows[-1].value)
        done = store.completions(step=0)
        assert [(c.problem_id, c.completion, c.reward, c.extras) for c in done] == [
            ("p0", "0", 0.0, {"i": 0}),
            ("p1", "2", 1.0, {"i": 1}),
            ("p2", "4", 0.0, {"i": 2}),
        ]
        assert store.completions(step=1) == [] and len(store.completions()) == 3
        (ckpt,) = store.checkpoints()
        assert ckpt.step == 1 and ckpt.path.endswith("ckpt-1") and ckpt.created
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_config_is_written_once(tmp_path):
    store = RunStore(tmp_path)
    store.write_config({"lr": 1e-3})
    store.write_config({"lr": 1e-3})  # the same config again is fine
    with pytest.raises(RunStoreError, match="different config"):
        store.write_config({"lr": 2e-3})
    assert store.config() == {"lr": 1e-3}
    store.write_config({"lr": 2e-3}, replace=True)
    assert store.config() == {"lr": 2e-3}


def test_exception_inside_step_loses_only_that_step(tmp_path):
    store = RunStore(tmp_path)
    write_step(store, 0)
    with pytest.raises(ZeroDivisionError):
        with store.step(1) as w:
            w.metrics({"loss": 0.5})
            w.completions([CompletionRecord("p", "q", "a")])
            w.checkpoint("ckpt-1")
            1 / 0
    assert store.last_step() == 0
    assert {r.step for r in store.metrics()} == {0}
    assert len(store.completions()) == 3 and store.checkpoints() == []
    write_step(store, 1)  # the step can be written again
    assert store.last_step() == 1


def test_duplicate_metric_rolls_back_the_step(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(RunStoreError, match="already written at step 0"):
        with store.step(0) as w:
            w.metrics({"loss": 1.0})
            w.metrics({"loss": 2.0})
    assert store.metrics() == [] and store.last_step() is None


def test_steps_must_increase_and_truncate_after_allows_resume(tmp_path):
    store = RunStore(tmp_path)
    for step in range(4):
        write_step(store, step)
    with pytest.raises(RunStoreError, match="truncate_after"):
        with store.step(2):
            pass
    store.truncate_after(1)
    assert store.last_step() == 1
    assert {r.step for r in store.metrics()} == {0, 1}
    assert {c.step for c in store.completions()} == {0, 1}
    write_step(store, 2)
    assert store.last_step() == 2


def test_writer_misuse_is_an_error(tmp_path):
    store = RunStore(tmp_path)
    with store.step(0) as w:
        with pytest.raises(RunStoreError, match="another step"):
            with store.step(1):
                pass
    with pytest.raises(RunStoreError, match="after its `with` block"):
        w.metrics({"late": 1.0})
    assert store.last_step() == 0 and store.metrics() == []


CHILD = textwrap.dedent(
    """
    import sys, time
    from sharpen.runs import CompletionRecord, RunStore

    store = RunStore(sys.argv[1])
    stall_at = int(sys.argv[2])
    print("started", flush=True)
    for step in range(10_000):
        with store.step(step) as w:
            w.metrics({"a": step, "b": -step})
            w.completions([CompletionRecord(f"p{i}", "q", "x" * 50, reward=1.0) for i in range(20)])
            if step == stall_at:
                w.checkpoint("half-written")
                print("mid-step", flush=True)
                time.sleep(60)
    """
)


def kill_child(run_dir, stall_at: int, wait_for: str, delay: float = 0.0) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(run_dir), str(stall_at)], stdout=subprocess.PIPE, text=True
    )
    try:
        for line in child.stdout:
            if line.strip() == wait_for:
                break
        time.sleep(delay)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL


def assert_whole_steps(store: RunStore) -> int:
    last = store.last_step()
    assert last is not None
    metrics, completions = store.metrics(), store.completions()
    assert len(metrics) == 2 * (last + 1)
    assert len(completions) == 20 * (last + 1)
    for step in range(last + 1):
        assert [m.name for m in metrics if m.step == step] == ["a", "b"]
        assert sum(c.step == step for c in completions) == 20
    return last


def test_sigkill_mid_step_keeps_only_whole_steps(tmp_path):
    kill_child(tmp_path, stall_at=5, wait_for="mid-step")
    with RunStore(tmp_path) as store:
        assert assert_whole_steps(store) == 4
        assert store.checkpoints() == []
        write_step(store, 5)  # the run resumes at the lost step


def test_sigkill_at_a_random_moment_keeps_only_whole_steps(tmp_path):
    kill_child(tmp_path, stall_at=-1, wait_for="started", delay=0.4)
    with RunStore(tmp_path) as store:
        last = assert_whole_steps(store)
        write_step(store, last + 1)  # the run resumes right after its last whole step
        assert store.last_step() == last + 1


def test_checkpoint_paths_are_stored_relative_to_the_run_directory(tmp_path, monkeypatch):
    import shutil
    import sqlite3

    monkeypatch.chdir(tmp_path)
    with RunStore("runs/a") as store:
        with store.step(1) as w:
            w.checkpoint("runs/a/checkpoints/step-1")  # relative to the working directory
        with store.step(2) as w:
            w.checkpoint(tmp_path / "runs" / "a" / "checkpoints" / "step-2")
        with store.step(3) as w:
            w.checkpoint(tmp_path / "outside")
    conn = sqlite3.connect(tmp_path / "runs" / "a" / "run.sqlite")
    stored = [row[0] for row in conn.execute("SELECT path FROM checkpoints ORDER BY step")]
    conn.close()
    assert stored == ["checkpoints/step-1", "checkpoints/step-2", str(tmp_path / "outside")]

    shutil.move(tmp_path / "runs" / "a", tmp_path / "moved")
    monkeypatch.chdir(tmp_path / "runs")
    with RunStore(tmp_path / "moved") as store:
        paths = [c.path for c in store.checkpoints()]
    assert paths == [str(tmp_path / "moved" / "checkpoints" / "step-1"),
                     str(tmp_path / "moved" / "checkpoints" / "step-2"), str(tmp_path / "outside")]


def test_a_version_1_store_is_migrated_to_run_relative_paths(tmp_path, monkeypatch):
    import sqlite3

    monkeypatch.chdir(tmp_path)
    with RunStore("runs/old") as store:
        write_step(store, 1)
    (tmp_path / "runs" / "old" / "checkpoints" / "step-1").mkdir(parents=True)
    conn = sqlite3.connect(tmp_path / "runs" / "old" / "run.sqlite")  # as sharpen with schema 1 wrote it
    conn.execute("INSERT INTO checkpoints VALUES (1, 'runs/old/checkpoints/step-1', 'then')")
    conn.execute("INSERT INTO checkpoints VALUES (1, 'gone/step-1', 'then')")  # not found: left as it is
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    with RunStore(tmp_path / "runs" / "old") as store:
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert [c.path for c in store.checkpoints()] == [
            str(tmp_path / "runs" / "old" / "checkpoints" / "step-1"), str(tmp_path / "runs" / "old" / "gone" / "step-1"),
        ]
