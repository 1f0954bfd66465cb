"""The run store: config, metrics by step, completions and checkpoints in one SQLite file."""

from sharpen.runs.store import (
    CheckpointRow,
    CompletionRecord,
    CompletionRow,
    MetricRow,
    RunStore,
    RunStoreError,
    StepWriter,
)

__all__ = [
    "CheckpointRow",
    "CompletionRecord",
    "CompletionRow",
    "MetricRow",
    "RunStore",
    "RunStoreError",
    "StepWriter",
]
