"""Multi-agent debate ("Improving Factuality and Reasoning in Language Models through
Multiagent Debate", Du et al.).

Round 0: each of N agents answers the problem on its own. In each later round every agent
keeps its own conversation, is shown the other agents' latest answers as a user turn in the
policy's template set (`TemplateSet.debate_message`: the embedded model sees the extracted
answers, "others: 95, 96"; a chat model the other agents' whole responses, each trimmed to
`debate_chars`) and answers again. After R rounds the final answer is the majority of the
last round's answers.

    agent a, round 2:  user: 37+58=   assistant: 95   user: others: 96, 95
                       assistant: 95  user: others: 95, 95   → answers
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from sharpen.models.base import Completion, Policy, SamplingParams
from sharpen.models.formats import TemplateSet, as_messages, template_set_for
from sharpen.strategies.base import (
    Call,
    StrategyResult,
    base_params,
    check_positive,
    generate_grouped,
    round_params,
    vote,
)
from sharpen.tasks.base import Message, Problem, Task


@dataclass
class Debate:
    """N agents answer, then see each other's answers and answer again, for R rounds in all."""

    policy: Policy
    task: Task
    agents: int = 3
    """Number of agents (N), all played by the same policy."""
    rounds: int = 2
    """Rounds in all, counting round 0 (R = 1 is N independent answers and a vote)."""
    params: Optional[SamplingParams] = None
    templates: TemplateSet = field(init=False)
    """How the other agents' answers are shown: the policy's (`template_set_for`)."""

    def __post_init__(self) -> None:
        check_positive("debate", agents=self.agents, rounds=self.rounds)
        self.templates = template_set_for(self.policy)

    def __call__(self, problems: list[Problem]) -> list[StrategyResult]:
        base = base_params(self.task, self.params)
        # histories[i][a]: agent a's conversation on problem i, ready for its next answer
        histories: list[list[list[Message]]] = [[as_messages(p.prompt) for _ in range(self.agents)] for p in problems]
        latest: list[list[Completion]] = [[] for _ in problems]
        traces: list[list[Call]] = [[] for _ in problems]
        for round in range(self.rounds):
            if round > 0:
                for i in range(len(problems)):
                    answers = [(a + 1, c.text, self.task.extract(c.text)) for a, c in enumerate(latest[i])]
                    for a, history in enumerate(histories[i]):
                        history.append({"role": "assistant", "content": latest[i][a].text})
                        history.append(self.templates.debate_message(answers[:a] + answers[a + 1 :]))
            prompts = [[list(h) for h in agents] for agents in histories]
            groups = generate_grouped(self.policy, prompts, round_params(base, 1, round))
            for i, agent_groups in enumerate(groups):
                latest[i] = [g[0] for g in agent_groups]
                traces[i].append(Call(round, prompts[i], agent_groups))
        results = []
        for problem, last, trace in zip(problems, latest, traces):
            text, answer = vote(self.task, last)
            results.append(StrategyResult(problem, text, answer, trace))
        return results
