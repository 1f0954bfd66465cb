"""Signals: everything that scores a completion, and the reward that weighs them.

    from sharpen.signals import Reward, build_signal

    reward = Reward.from_specs([("correctness", 1.0), ("majority_vote", 0.0)], task=task)
    result = reward(problems, groups)          # result.total: P × G floats

A signal maps (problems, groups) to P × G scores, float or None ("does not apply"), or to
spans of each completion's text (`SpanScores`: fine-grained feedback such as `fact_feedback`).
Built-in signals are registered by name in `SIGNALS`; user functions with TRL's reward
signature load from "module:function" or "path/to/file.py:function".
"""

from sharpen.signals.base import (
    RewardFunctionError,
    Score,
    Scores,
    ScoringPolicy,
    Signal,
    SignalOptionError,
    Span,
    SpanScores,
    UnknownSignalError,
)
from sharpen.signals.facts import FactFeedback
from sharpen.signals.confidence import Likelihood, SelfCertainty
from sharpen.signals.judge import PairwiseJudge, SelfJudge
from sharpen.signals.majority import MajorityVote, majority_answer
from sharpen.signals.registry import SIGNALS, build_signal, check_signal
from sharpen.signals.reward import Component, Reward, RewardResult, RewardSpec
from sharpen.signals.user import UserFunction, load_reward_function
from sharpen.signals.verifier import Correctness, Format

__all__ = [
    "SIGNALS",
    "Component",
    "Correctness",
    "FactFeedback",
    "Format",
    "Likelihood",
    "MajorityVote",
    "PairwiseJudge",
    "Reward",
    "RewardFunctionError",
    "RewardResult",
    "RewardSpec",
    "Score",
    "Scores",
    "ScoringPolicy",
    "SelfCertainty",
    "SelfJudge",
    "Signal",
    "SignalOptionError",
    "Span",
    "SpanScores",
    "UnknownSignalError",
    "UserFunction",
    "build_signal",
    "check_signal",
    "load_reward_function",
    "majority_answer",
]
