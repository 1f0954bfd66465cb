"""Signals by name: the registry and `build_signal`.

    signal = build_signal("majority_vote", task=task)
    signal = build_signal("likelihood", task=task, policy=policy, source="policy")
    signal = build_signal("my_rewards.py:length_penalty", task=task, user_code=True, target=20)

A factory takes the task, the policy (None when there is none) and the signal's options as
keyword arguments. A new signal is one factory and one entry in SIGNALS.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional

from sharpen.signals.base import ScoringPolicy, Signal, SignalOptionError, UnknownSignalError, require_policy
from sharpen.signals.confidence import SCORING, Likelihood, SelfCertainty
from sharpen.signals.facts import build_fact_feedback
from sharpen.signals.judge import JUDGING, PairwiseJudge, SelfJudge
from sharpen.signals.majority import MajorityVote
from sharpen.signals.user import UserFunction, is_function_spec, load_reward_function
from sharpen.signals.verifier import Correctness, Format
from sharpen.tasks.base import Task

SignalFactory = Callable[..., Signal]
"""factory(task, policy, **options) -> Signal"""


def correctness(task: Task, policy: Optional[ScoringPolicy]) -> Signal:
    return Correctness(task)


def format_(task: Task, policy: Optional[ScoringPolicy], pattern: Optional[str] = None) -> Signal:
    return Format(task, pattern=pattern)


def majority_vote(task: Task, policy: Optional[ScoringPolicy], min_share: float = 0.0) -> Signal:
    return MajorityVote(task, min_share=min_share)


def self_certainty(task: Task, policy: Optional[ScoringPolicy], batch_size: int = 64) -> Signal:
    return SelfCertainty(require_policy("self_certainty", policy, SCORING), batch_size=batch_size)


def likelihood(
    task: Task, policy: Optional[ScoringPolicy], source: str = "completion", batch_size: int = 64
) -> Signal:
    return Likelihood(policy, source=source, batch_size=batch_size)


def self_judge(
    task: Task, policy: Optional[ScoringPolicy], yes: Optional[str] = None, no: Optional[str] = None
) -> Signal:
    """The replies default to the policy's template set's (`formats.template_set_for`)."""
    return SelfJudge(require_policy("self_judge", policy, JUDGING), yes=yes, no=no)


def pairwise_judge(
    task: Task, policy: Optional[ScoringPolicy], first: Optional[str] = None, second: Optional[str] = None
) -> Signal:
    """The replies default to the policy's template set's (`formats.template_set_for`)."""
    return PairwiseJudge(require_policy("pairwise_judge", policy, JUDGING), first=first, second=second)


SIGNALS: dict[str, SignalFactory] = {
    "correctness": correctness,
    "format": format_,
    "majority_vote": majority_vote,
    "self_certainty": self_certainty,
    "likelihood": likelihood,
    "self_judge": self_judge,
    "pairwise_judge": pairwise_judge,
    "fact_feedback": build_fact_feedback,
}


def signal_options(factory: SignalFactory) -> list[str]:
    """The option names a factory accepts (everything after task and policy)."""
    return list(inspect.signature(factory).parameters)[2:]


def check_signal(name: str, options: dict[str, Any], *, user_code: bool = False) -> None:
    """Raise UnknownSignalError, SignalOptionError or RewardFunctionError unless `name` (with
    these option names) is a registered signal or, with `user_code=True`, a loadable user
    function; builds nothing. Loading a user function imports (runs) that code, so only a user's
    own config or command line grants `user_code`; a name from anywhere else (a server request)
    may name only registered signals."""
    if name in SIGNALS:
        known = signal_options(SIGNALS[name])
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise SignalOptionError(
                f"signal {name!r} has no option {', '.join(map(repr, unknown))}; "
                f"its options are: {', '.join(known) or '(none)'}"
            )
    elif is_function_spec(name) and not user_code:
        raise UnknownSignalError(
            f"signal {name!r} names user code, which only a config file or the command line may load; "
            f"known signals: {', '.join(sorted(SIGNALS))}"
        )
    elif is_function_spec(name):
        UserFunction(load_reward_function(name), name=name, options=dict(options))
    else:
        raise UnknownSignalError(
            f"unknown signal {name!r}; known signals: {', '.join(sorted(SIGNALS))}, "
            "or a user function written 'module:function' or 'path/to/file.py:function'"
        )


def build_signal(
    name: str, *, task: Task, policy: Optional[ScoringPolicy] = None, user_code: bool = False, **options: Any
) -> Signal:
    """The signal registered as `name`, or, with `user_code=True` (see `check_signal`), the user
    function `name` = "module:function" / "path/to/file.py:function" (whose options become
    keyword arguments of every call)."""
    check_signal(name, options, user_code=user_code)
    if name in SIGNALS:
        return SIGNALS[name](task, policy, **options)
    return UserFunction(load_reward_function(name), name=name, options=dict(options))
