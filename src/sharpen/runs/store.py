"""The run store: one SQLite file (`run.sqlite`) per run directory.

It holds the run's config (JSON, written once), metrics by step, sampled completions with
their rewards, and an index of checkpoints. Each step is written in one transaction:

    store = RunStore("runs/add2")
    store.write_config(cfg_dict)
    with store.step(12) as w:
        w.metrics({"loss": 0.41, "reward/mean": 0.62})
        w.completions([CompletionRecord("add/3+4", "3+4=", "7", reward=1.0)])
        w.checkpoint("runs/add2/ckpt-12")

Checkpoint paths inside the run directory are stored relative to it (`ckpt-12`), so a run
can be resumed from any working directory and after its directory is moved; `checkpoints()`
gives them back joined to the run directory. Paths outside it are stored absolute.

A crash (exception or a killed process) inside the block loses that step and nothing
else; the database is in WAL mode with full sync, so committed steps survive. To resume,
read `last_step()`, reload its checkpoint and call `truncate_after(step)` for any rows
written past it. Only the standard library is used.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

FILENAME = "run.sqlite"
SCHEMA_VERSION = 2
"""1: checkpoint paths as given (relative to the writer's working directory); 2: relative to
the run directory. A version-1 store is migrated when opened (see `_migrate_checkpoint_paths`)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS config (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    json TEXT NOT NULL,
    written TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    step INTEGER PRIMARY KEY,
    finished TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    step INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    UNIQUE (step, name)
);
CREATE TABLE IF NOT EXISTS completions (
    id INTEGER PRIMARY KEY,
    step INTEGER NOT NULL,
    problem_id TEXT NOT NULL,
    prompt TEXT NOT NULL,
    completion TEXT NOT NULL,
    reward REAL,
    extras TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS completions_step ON completions (step);
CREATE TABLE IF NOT EXISTS checkpoints (
    step INTEGER NOT NULL,
    path TEXT NOT NULL,
    created TEXT NOT NULL
);
"""


class RunStoreError(RuntimeError):
    """A run store was used in a way that would lose or mix up records."""


@dataclass(frozen=True)
class MetricRow:
    """One logged value. NaN is stored as NULL and read back as NaN."""

    step: int
    name: str
    value: float


@dataclass(frozen=True)
class CompletionRecord:
    """A sampled completion to store (the step comes from the step being written)."""

    problem_id: str
    prompt: str
    """The prompt as text (render chat messages to a string first)."""
    completion: str
    reward: Optional[float] = None
    """None: no reward (e.g. unscorable)."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Anything JSON-serialisable (signal parts, answer, tokens, …)."""


@dataclass(frozen=True)
class CompletionRow:
    """A stored completion."""

    step: int
    problem_id: str
    prompt: str
    completion: str
    reward: Optional[float]
    extras: dict[str, Any]


@dataclass(frozen=True)
class CheckpointRow:
    """A checkpoint saved at a step (the store indexes it; the files live at `path`)."""

    step: int
    path: str
    """Where the files are: the stored path joined to the run directory (`RunStore.run_dir`)."""
    created: str
    """UTC time, ISO 8601."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _stored_path(path: Union[str, Path], run_dir: Path) -> str:
    """`path` relative to `run_dir` (POSIX separators) if it lies inside it, else absolute."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(Path(os.path.abspath(run_dir))).as_posix()
    except ValueError:
        return str(absolute)


class StepWriter:
    """Writes the rows of one step inside its open transaction; see `RunStore.step`."""

    def __init__(self, conn: sqlite3.Connection, step: int, run_dir: Path) -> None:
        self._conn = conn
        self.step = step
        self._run_dir = run_dir
        self._open = True

    def _live(self) -> sqlite3.Connection:
        if not self._open:
            raise RunStoreError(f"the writer of step {self.step} was used after its `with` block ended")
        return self._conn

    def metrics(self, values: dict[str, float]) -> None:
        """Record named values for this step (each name at most once per step)."""
        rows = [(self.step, name, None if math.isnan(v) else float(v)) for name, v in values.items()]
        try:
            self._live().executemany("INSERT INTO metrics (step, name, value) VALUES (?, ?, ?)", rows)
        except sqlite3.IntegrityError as e:
            names = sorted(values)
            raise RunStoreError(f"a metric in {names} was already written at step {self.step}") from e

    def completions(self, records: Iterable[CompletionRecord]) -> None:
        """Record sampled completions with their rewards."""
        rows = [
            (self.step, r.problem_id, r.prompt, r.completion, r.reward, json.dumps(r.extras, sort_keys=True))
            for r in records
        ]
        self._live().executemany(
            "INSERT INTO completions (step, problem_id, prompt, completion, reward, extras)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )

    def checkpoint(self, path: Union[str, Path]) -> None:
        """Index a checkpoint saved at this step (save the files before the block ends); a
        relative `path` is relative to the working directory, as everywhere."""
        self._live().execute(
            "INSERT INTO checkpoints (step, path, created) VALUES (?, ?, ?)",
            (self.step, _stored_path(path, self._run_dir), _now()),
        )


class RunStore:
    """The records of one run, in `<run_dir>/run.sqlite`."""

    def __init__(self, run_dir: Union[str, Path]) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / FILENAME
        # isolation_level=None: no implicit transactions; we BEGIN/COMMIT ourselves
        self._conn = sqlite3.connect(self.path, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, 1, SCHEMA_VERSION):
            raise RunStoreError(
                f"{self.path} has schema version {version}; this sharpen reads versions up to {SCHEMA_VERSION}"
            )
        self._conn.executescript(_SCHEMA)
        if version == 1:
            self._migrate_checkpoint_paths()
        self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._writing = False

    def _migrate_checkpoint_paths(self) -> None:
        """Version 1 → 2: a stored path that exists, read as version 1 did (from the working
        directory), is rewritten relative to the run directory; other rows are left as they are."""
        with self._transaction() as conn:
            for rowid, path in conn.execute("SELECT rowid, path FROM checkpoints").fetchall():
                if Path(path).exists():
                    conn.execute("UPDATE checkpoints SET path = ? WHERE rowid = ?",
                                 (_stored_path(path, self.run_dir), rowid))

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- config -----------------------------------------------------------------

    def write_config(self, config: dict[str, Any], replace: bool = False) -> None:
        """Store the run config once. Writing a different one later is an error unless `replace`."""
        text = json.dumps(config, sort_keys=True)
        with self._transaction() as conn:
            row = conn.execute("SELECT json FROM config WHERE id = 1").fetchone()
            if row is not None and row[0] == text:
                return
            if row is not None and not replace:
                raise RunStoreError(
                    f"{self.path} already holds a different config; start a new run directory, "
                    "or pass replace=True to overwrite it"
                )
            conn.execute("INSERT OR REPLACE INTO config (id, json, written) VALUES (1, ?, ?)", (text, _now()))

    def config(self) -> Optional[dict[str, Any]]:
        """The stored run config, or None if none was written."""
        row = self._conn.execute("SELECT json FROM config WHERE id = 1").fetchone()
        return None if row is None else json.loads(row[0])

    # -- steps ------------------------------------------------------------------

    @contextmanager
    def step(self, step: int) -> Iterator[StepWriter]:
        """Write one step atomically: all of its rows are committed together or not at all.

        Steps must increase; to rewrite steps after a resume, call `truncate_after` first.
        """
        if self._writing:
            raise RunStoreError(f"step {step} opened while another step is being written")
        last = self.last_step()
        if last is not None and step <= last:
            raise RunStoreError(
                f"step {step} is not after the last stored step {last}; "
                f"call truncate_after({step - 1}) first to overwrite it"
            )
        self._writing = True
        try:
            with self._transaction() as conn:
                writer = StepWriter(conn, step, self.run_dir)
                try:
                    yield writer
                finally:
                    writer._open = False
                conn.execute("INSERT INTO steps (step, finished) VALUES (?, ?)", (step, _now()))
        finally:
            self._writing = False

    def last_step(self) -> Optional[int]:
        """The last completely written step, or None if there is none."""
        return self._conn.execute("SELECT MAX(step) FROM steps").fetchone()[0]

    def truncate_after(self, step: int) -> None:
        """Delete every row of steps later than `step` (checkpoint files are left on disk)."""
        with self._transaction() as conn:
            for table in ("steps", "metrics", "completions", "checkpoints"):
                conn.execute(f"DELETE FROM {table} WHERE step > ?", (step,))

    # -- reading ----------------------------------------------------------------

    def metrics(self, name: Optional[str] = None) -> list[MetricRow]:
        """Logged values ordered by step then name; only `name` if given."""
        sql = "SELECT step, name, value FROM metrics"
        args: tuple[Any, ...] = ()
        if name is not None:
            sql, args = sql + " WHERE name = ?", (name,)
        rows = self._conn.execute(sql + " ORDER BY step, name", args).fetchall()
        return [MetricRow(s, n, math.nan if v is None else v) for s, n, v in rows]

    def completions(self, step: Optional[int] = None) -> list[CompletionRow]:
        """Stored completions in the order written; only those of `step` if given."""
        sql = "SELECT step, problem_id, prompt, completion, reward, extras FROM completions"
        args: tuple[Any, ...] = ()
        if step is not None:
            sql, args = sql + " WHERE step = ?", (step,)
        rows = self._conn.execute(sql + " ORDER BY step, id", args).fetchall()
        return [CompletionRow(s, pid, p, c, r, json.loads(x)) for s, pid, p, c, r, x in rows]

    def checkpoints(self) -> list[CheckpointRow]:
        """Indexed checkpoints ordered by step, their paths joined to the run directory."""
        sql = "SELECT step, path, created FROM checkpoints ORDER BY step, rowid"
        rows = self._conn.execute(sql).fetchall()
        return [CheckpointRow(step, str(self.run_dir / path), created) for step, path, created in rows]
