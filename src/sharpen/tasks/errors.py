"""The errors a task raises, each saying what was wrong, where, and what to do."""

from __future__ import annotations


class UnknownTaskError(KeyError):
    """No task is registered under a name, and the name is not a loadable `file.py:factory`."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class TaskOptionError(ValueError):
    """A task was given an option it does not have, or a value it cannot use."""


class TaskDataError(ValueError):
    """A task's data file is malformed; the message names the file and the 1-based line."""


def check_int_option(task: str, option: str, value: object, minimum: int) -> None:
    """Raise TaskOptionError, naming the task and the option, unless `value` is an int >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TaskOptionError(f"task {task!r}: option {option!r} must be an integer >= {minimum}, got {value!r}")
