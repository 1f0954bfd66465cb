"""The conversation formats sharpen's loop asks a model to follow, as chat messages.

Besides answering a problem, self-improvement needs more from a model: to judge an answer
("is this right? yes/no"), to compare two answers ("which of A and B is right?") and to try
again after being told an attempt was wrong.
The embedded default model is trained on exactly these formats, and the same messages go
through any other model's chat template unchanged.
"""

from __future__ import annotations

from typing import Sequence

from sharpen.tasks.base import Message, Prompt

JUDGE_SUFFIX = " right?"
JUDGE_YES = "yes"
JUDGE_NO = "no"
PAIRWISE_SUFFIX = " which?"
PAIRWISE_FIRST = "A"
PAIRWISE_SECOND = "B"
WRONG_FEEDBACK = "wrong"
"""The binary feedback after a wrong attempt (RISE's and SCoRe's "your answer is incorrect")."""


def as_messages(prompt: Prompt) -> list[Message]:
    """A prompt as chat messages: a string becomes one user turn."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return list(prompt)


def question_text(prompt: Prompt) -> str:
    """The text of the last user turn of a prompt."""
    users = [m["content"] for m in as_messages(prompt) if m["role"] == "user"]
    if not users:
        raise ValueError("a prompt needs at least one user message")
    return users[-1]


def judge_messages(prompt: Prompt, answer: str) -> list[Message]:
    """Ask whether `answer` answers `prompt`; a judge replies JUDGE_YES or JUDGE_NO."""
    return [{"role": "user", "content": f"{question_text(prompt)}{answer}{JUDGE_SUFFIX}"}]


def pairwise_messages(prompt: Prompt, first: str, second: str) -> list[Message]:
    """Ask which of two answers to `prompt` is right, `first` shown as A and `second` as B;
    a judge replies PAIRWISE_FIRST or PAIRWISE_SECOND."""
    return [{"role": "user", "content": f"{question_text(prompt)} {PAIRWISE_FIRST}:{first} "
                                        f"{PAIRWISE_SECOND}:{second}{PAIRWISE_SUFFIX}"}]


def retry_messages(prompt: Prompt, attempts: Sequence[str], feedback: Sequence[str]) -> list[Message]:
    """The history of a multi-turn episode, ready for the next attempt.

    attempts[i] is the model's i-th answer and feedback[i] what it was told after it
    (e.g. WRONG_FEEDBACK); both sequences have the same length.
    """
    if len(attempts) != len(feedback):
        raise ValueError(f"{len(attempts)} attempts but {len(feedback)} feedback messages")
    messages = as_messages(prompt)
    for attempt, said in zip(attempts, feedback):
        messages.append({"role": "assistant", "content": attempt})
        messages.append({"role": "user", "content": said})
    return messages
