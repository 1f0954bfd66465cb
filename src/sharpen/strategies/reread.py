"""Re-reading ("Re-Reading Improves Reasoning in Large Language Models", Xu et al.): a prompt
transform that repeats the question in the user turn, wrapped around any other strategy.

    "37+58="  →  "37+58=\nRead the question again: 37+58="

Only the last user turn changes (a chat prompt keeps its other messages). The embedded
default model was never trained on this format; it is meant for instruction-tuned models.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sharpen.models.formats import as_messages
from sharpen.strategies.base import Strategy, StrategyResult
from sharpen.tasks.base import Problem, Prompt

REREAD_TEMPLATE = "{question}\nRead the question again: {question}"


def reread_prompt(prompt: Prompt) -> Prompt:
    """The prompt with its last user turn's question repeated (a string stays a string)."""
    if isinstance(prompt, str):
        return REREAD_TEMPLATE.format(question=prompt)
    messages = as_messages(prompt)
    users = [k for k, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise ValueError("reread: a prompt needs at least one user message")
    last = users[-1]
    messages[last] = {**messages[last], "content": REREAD_TEMPLATE.format(question=messages[last]["content"])}
    return messages


@dataclass
class ReRead:
    """Runs `inner` on the problems with re-read prompts; results keep the original problems."""

    inner: Strategy

    def __call__(self, problems: list[Problem]) -> list[StrategyResult]:
        results = self.inner([replace(p, prompt=reread_prompt(p.prompt)) for p in problems])
        for problem, result in zip(problems, results):
            result.problem = problem
        return results
