"""Inference-time strategies: spend more samples (and the model's own judgement) to answer better now.

    from sharpen.strategies import build_strategy, parse_strategy_spec

    name, options = parse_strategy_spec("self_consistency-16x4")
    strategy = build_strategy(name, policy=policy, task=task, **options)
    results = strategy(problems)        # results[i].answer, .text, .trace, .tokens

Every strategy is batched over problems (one policy.generate call per round) and returns a
StrategyResult per problem with its full trace and the tokens it generated.
"""

from sharpen.strategies.base import (
    Call,
    Strategy,
    StrategyOptionError,
    StrategyResult,
    StrategySpecError,
    UnknownStrategyError,
)
from sharpen.strategies.debate import Debate
from sharpen.strategies.multiturn import Retry, SelfRefine
from sharpen.strategies.registry import SPEC_ARGS, STRATEGIES, build_strategy, check_strategy, parse_strategy_spec
from sharpen.strategies.reread import ReRead, reread_prompt
from sharpen.strategies.sampling import BestOfN, SelfConsistency, Single

__all__ = [
    "SPEC_ARGS",
    "STRATEGIES",
    "BestOfN",
    "Call",
    "Debate",
    "ReRead",
    "Retry",
    "SelfConsistency",
    "SelfRefine",
    "Single",
    "Strategy",
    "StrategyOptionError",
    "StrategyResult",
    "StrategySpecError",
    "UnknownStrategyError",
    "build_strategy",
    "check_strategy",
    "parse_strategy_spec",
    "reread_prompt",
]
