"""User reward functions with TRL's signature, loaded from "module:function" or "file.py:function".

    def reward(prompts, completions, **columns) -> list[float | None]: ...

`prompts` and `completions` are flat lists with one entry per completion (a problem's prompt
repeated across its group; completions as texts). The columns are

    answer        the problem's reference answer (None for label-free problems)
    problem_id    the problem's id
    completion_ids  the completion's token ids
    <key>         each key of the problems' metadata (None where a problem lacks it)

plus the signal's options, passed unchanged on every call. Return one float, or None where
the reward does not apply, per completion; or, for fine-grained rewards, one list of
(start, end, value) character spans of the completion text per completion (a span signal,
`SpanScores`: its scalar is the sum of the values; see `signals.base`).
"""

from __future__ import annotations

import inspect
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from sharpen.models.base import Completion
from sharpen.specs import SpecError, UserCodeError, describe_function, load_object, raised
from sharpen.signals.base import (
    RewardFunctionError, SignalOutput, Span, Spans, SpanScores, check_groups, regroup,
)
from sharpen.tasks.base import Problem

RewardFunction = Callable[..., Sequence[Any]]
FIXED_COLUMNS = ("prompts", "completions", "answer", "problem_id", "completion_ids")


def is_function_spec(spec: str) -> bool:
    """Whether `spec` names a function ("module:function" or "path/file.py:function")."""
    return ":" in spec


def load_reward_function(spec: str) -> RewardFunction:
    """The function named by "package.module:function" or "path/to/file.py:function"."""
    try:
        function = load_object(spec)
    except SpecError as e:
        raise RewardFunctionError(f"reward function {spec!r}: {e}") from e
    if not callable(function):
        raise RewardFunctionError(f"reward function {spec!r}: {function!r} is not callable")
    return function


@dataclass
class UserFunction:
    """A user reward function as a signal."""

    function: RewardFunction
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments passed on every call."""

    def __post_init__(self) -> None:
        taken = sorted(set(self.options) & set(FIXED_COLUMNS))
        if taken:
            raise RewardFunctionError(f"reward function {self.name!r}: options {taken} clash with the columns it is given")

    def __call__(self, problems: Sequence[Problem], groups: Sequence[Sequence[Completion]]) -> SignalOutput:
        check_groups(self.name, problems, groups)
        pairs = [(p, c) for p, group in zip(problems, groups) for c in group]
        prompts = [p.prompt for p, _ in pairs]
        texts = [c.text for _, c in pairs]
        columns = self.columns(pairs)
        try:
            inspect.signature(self.function).bind(prompts, texts, **columns)
        except TypeError as error:
            raise RewardFunctionError(
                f"reward function {self.name!r} cannot take the columns {sorted(columns)} ({error}); "
                "give it the signature f(prompts, completions, **kwargs)"
            ) from error
        except ValueError:  # builtins without a signature: just call them
            pass
        try:
            returned = self.function(prompts, texts, **columns)
        except Exception as error:
            raise self.failure(pairs, error) from error
        values = self.validate(returned, len(pairs))
        if any(isinstance(v, tuple) for v in values):
            return SpanScores(regroup(values, groups))
        return regroup(values, groups)

    def failure(self, pairs: list[tuple[Problem, Completion]], error: Exception) -> UserCodeError:
        """The error for a call that raised, naming the first problem whose completions alone
        make the function raise (the whole batch when none does on its own)."""
        culprit, first = None, error
        for problem in {id(p): p for p, _ in pairs}.values():  # each problem once, in order
            mine = [(p, c) for p, c in pairs if p is problem]
            try:
                self.function([p.prompt for p, _ in mine], [c.text for _, c in mine], **self.columns(mine))
            except Exception as again:
                culprit, first = problem, again
                break
        where = f"problem {culprit.id!r}" if culprit is not None else f"a batch of {len(pairs)} completions"
        return UserCodeError(
            f"reward function {self.name!r} = {describe_function(self.function)} raised {raised(first)} on {where}"
        )

    def columns(self, pairs: list[tuple[Problem, Completion]]) -> dict[str, list[Any]]:
        keys: dict[str, None] = {}
        for p, _ in pairs:
            keys.update(dict.fromkeys(p.metadata))
        clash = sorted(set(keys) & (set(FIXED_COLUMNS) | set(self.options)))
        if clash:
            raise RewardFunctionError(
                f"reward function {self.name!r}: problem metadata keys {clash} clash with the columns "
                f"{list(FIXED_COLUMNS)} or the function's options; rename them in the task"
            )
        columns: dict[str, list[Any]] = {
            "answer": [p.answer for p, _ in pairs],
            "problem_id": [p.id for p, _ in pairs],
            "completion_ids": [list(c.token_ids) for _, c in pairs],
        }
        for key in keys:
            columns[key] = [p.metadata.get(key) for p, _ in pairs]
        return {**columns, **self.options}

    def validate(self, returned: Any, n: int) -> list[Any]:
        """The returned rewards as floats-or-None (or span tuples-or-None), or a
        RewardFunctionError naming the function."""
        listlike = isinstance(returned, Sequence) or hasattr(returned, "tolist")  # list, tuple, array, tensor
        if isinstance(returned, (str, bytes)) or not listlike:
            raise RewardFunctionError(
                f"reward function {self.name!r} must return a list of float-or-None, got {type(returned).__name__}"
            )
        values = returned.tolist() if hasattr(returned, "tolist") else list(returned)
        if len(values) != n:
            raise RewardFunctionError(
                f"reward function {self.name!r} returned {len(values)} rewards for {n} completions; "
                "return one float (or None) per completion, in the order given"
            )
        out: list[Any] = []
        for i, value in enumerate(values):
            if value is None:
                out.append(None)
            elif isinstance(value, (list, tuple)):
                out.append(self.spans(value, i))
            elif isinstance(value, numbers.Real):
                if not math.isfinite(float(value)):
                    raise RewardFunctionError(
                        f"reward function {self.name!r} returned {float(value)} at index {i}; rewards must be finite, "
                        "return None where a reward does not apply"
                    )
                out.append(float(value))
            else:
                raise RewardFunctionError(
                    f"reward function {self.name!r} returned {type(value).__name__} {value!r} at index {i}; "
                    "rewards must be floats or None"
                )
        kinds = {type(v) for v in out if v is not None}
        if len(kinds) > 1:
            raise RewardFunctionError(
                f"reward function {self.name!r} returned floats for some completions and span lists for others; "
                "return one kind for all (a float is the span list [(0, len(text), value)])"
            )
        return out

    def spans(self, value: Sequence[Any], i: int) -> Spans:
        """One completion's (start, end, value) triples as Spans, or a RewardFunctionError."""
        try:
            return tuple(Span(int(start), int(end), float(v)) for start, end, v in value)
        except (TypeError, ValueError) as error:
            raise RewardFunctionError(
                f"reward function {self.name!r} returned {value!r} at index {i}; a span reward is a list of "
                f"(start, end, value) with 0 <= start < end character offsets and a finite value ({error})"
            ) from None
