"""Strategies by name: the registry, `build_strategy` and the spec grammar.

    strategy = build_strategy("self_consistency", policy=policy, task=task, n=8, window=4)
    name, options = parse_strategy_spec("best_of_n-8:self_certainty")
    strategy = build_strategy(name, policy=policy, task=task, **options)

A factory takes the policy, the task and the strategy's options as keyword arguments. A new
strategy is one factory and one entry in STRATEGIES, and one in SPEC_ARGS for its spec.

Spec grammar (for command lines and the server):

    spec    := ["reread+"] name ["-" number ("x" number)*] [":" word]

The numbers fill the strategy's positional options in order (fewer is fine: the rest keep
their defaults); the word fills its one word option:

    single                                   best_of_n-N[:SIGNAL]         (n; signal)
    self_consistency-N[xW]   (n; window)     retry-T[:FEEDBACK]           (turns; feedback)
    self_refine-T            (rounds)        debate-NxR                   (agents; rounds)
    reread+SPEC              the strategy SPEC with re-read prompts

e.g. "self_consistency-16x4" = 16 samples in windows of 4, "debate-3x2" = 3 agents, 2 rounds,
"retry-3:none" = 3 turns without feedback, "reread+self_consistency-8".
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Callable, Optional

from sharpen.models.base import Policy, SamplingParams
from sharpen.signals.base import SignalOptionError
from sharpen.signals.registry import SIGNALS, build_signal
from sharpen.signals.user import is_function_spec
from sharpen.strategies.base import Strategy, StrategyOptionError, StrategySpecError, UnknownStrategyError
from sharpen.strategies.debate import Debate
from sharpen.strategies.multiturn import Retry, SelfRefine
from sharpen.strategies.reread import ReRead
from sharpen.strategies.sampling import BestOfN, SelfConsistency, Single, refuse_oracle
from sharpen.tasks.base import Task

StrategyFactory = Callable[..., Strategy]
"""factory(policy, task, **options) -> Strategy"""


def best_of_n(
    policy: Policy,
    task: Task,
    n: int = 8,
    signal: str = "self_certainty",
    signal_options: Optional[dict[str, Any]] = None,
    allow_oracle: bool = False,
    params: Optional[SamplingParams] = None,
    user_code: bool = False,
) -> Strategy:
    """Best-of-N with the signal registered as `signal` (built with this policy and task;
    a user function only with `user_code`, see `build_signal`).
    A signal the policy cannot serve (e.g. self_certainty over HTTP) is a StrategyOptionError."""
    refuse_oracle(signal, allow_oracle)  # before building anything
    try:
        scorer = build_signal(signal, task=task, policy=policy, user_code=user_code, **(signal_options or {}))
    except SignalOptionError as err:
        raise StrategyOptionError(f"strategy 'best_of_n': {err}") from None
    return BestOfN(policy, task, signal=scorer, n=n, params=params, allow_oracle=allow_oracle)


def reread(policy: Policy, task: Task, inner: str = "single", **options: Any) -> Strategy:
    """The strategy registered as `inner`, built with `options`, on re-read prompts."""
    if inner == "reread":
        raise StrategyOptionError("strategy 'reread': inner must be another strategy, not 'reread' itself")
    return ReRead(build_strategy(inner, policy=policy, task=task, **options))


STRATEGIES: dict[str, StrategyFactory] = {
    "single": Single,
    "best_of_n": best_of_n,
    "self_consistency": SelfConsistency,
    "retry": Retry,
    "self_refine": SelfRefine,
    "debate": Debate,
    "reread": reread,
}

SPEC_ARGS: dict[str, tuple[tuple[str, ...], Optional[str]]] = {
    "single": ((), None),
    "best_of_n": (("n",), "signal"),
    "self_consistency": (("n", "window"), None),
    "retry": (("turns",), "feedback"),
    "self_refine": (("rounds",), None),
    "debate": (("agents", "rounds"), None),
    "reread": ((), None),
}
"""name -> (option names the spec's numbers fill in order, option name its ":word" fills); one
entry per strategy of STRATEGIES (a bare "reread" re-reads "single"; "reread+SPEC" wraps SPEC)."""

REREAD_PREFIX = "reread+"


def strategy_options(factory: StrategyFactory) -> Optional[list[str]]:
    """The option names a factory accepts (everything after policy and task); None if it
    passes any option on (**options)."""
    params = list(inspect.signature(factory).parameters.values())[2:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params]


def build_strategy(name: str, *, policy: Policy, task: Task, **options: Any) -> Strategy:
    """The strategy registered as `name`, built with this policy, task and options."""
    check_strategy(name, options)
    return STRATEGIES[name](policy, task, **options)


def check_strategy(name: str, options: dict[str, Any]) -> None:
    """Raise UnknownStrategyError or StrategyOptionError unless `name` is registered and takes
    these option names; builds nothing."""
    if name not in STRATEGIES:
        raise UnknownStrategyError(f"unknown strategy {name!r}; known strategies: {', '.join(STRATEGIES)}")
    known = strategy_options(STRATEGIES[name])
    unknown = [] if known is None else sorted(set(options) - set(known))
    if unknown:
        raise StrategyOptionError(
            f"strategy {name!r} has no option {', '.join(map(repr, unknown))}; its options are: {', '.join(known)}"
        )


_SPEC = re.compile(r"(?P<name>[a-z_]+)(?:-(?P<numbers>\d+(?:x\d+)*))?(?::(?P<word>[A-Za-z0-9_.:/-]+))?")


def parse_strategy_spec(spec: str, *, user_code: bool = False) -> tuple[str, dict[str, Any]]:
    """(name, options) for a spec string; see the grammar in this module's docstring.

        parse_strategy_spec("debate-3x2") == ("debate", {"agents": 3, "rounds": 2})

    A signal word naming user code ("file.py:function") is refused unless `user_code` (only a
    user's own config or command line grants it); granted, the options carry `user_code=True`.
    """
    text = spec.strip()
    if text.startswith(REREAD_PREFIX):
        name, options = parse_strategy_spec(text[len(REREAD_PREFIX) :], user_code=user_code)
        if name == "reread":
            raise StrategySpecError(f"strategy spec {spec!r}: 'reread+' may appear only once")
        return "reread", {"inner": name, **options}
    match = _SPEC.fullmatch(text)
    if match is None:
        raise StrategySpecError(
            f"strategy spec {spec!r} does not read as [reread+]name[-N[xM]][:word], "
            "e.g. 'self_consistency-8', 'debate-3x2', 'best_of_n-8:self_certainty', 'retry-3:none'"
        )
    name = match["name"]
    if name not in SPEC_ARGS:
        raise StrategySpecError(
            f"strategy spec {spec!r}: unknown strategy {name!r}; known strategies: {', '.join(STRATEGIES)}"
        )
    number_names, word_name = SPEC_ARGS[name]
    numbers = [int(x) for x in match["numbers"].split("x")] if match["numbers"] else []
    if len(numbers) > len(number_names):
        raise StrategySpecError(
            f"strategy spec {spec!r}: {name!r} takes at most {len(number_names)} number(s) "
            f"({'x'.join(number_names) or 'none'}), got {len(numbers)}"
        )
    options: dict[str, Any] = dict(zip(number_names, numbers))
    if match["word"] is not None:
        if word_name is None:
            raise StrategySpecError(f"strategy spec {spec!r}: {name!r} takes no ':word' option")
        options[word_name] = match["word"]
        if word_name == "signal" and is_function_spec(match["word"]):
            if not user_code:
                raise StrategySpecError(
                    f"strategy spec {spec!r}: signal {match['word']!r} names user code, which only a config "
                    f"file or the command line may load; known signals: {', '.join(sorted(SIGNALS))}"
                )
            options["user_code"] = True
    return name, options
