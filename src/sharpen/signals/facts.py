"""`fact_feedback`: RLFH's fine-grained reward on atomic statements and sentences, as spans.

"On-Policy Self-Alignment with Fine-grained Knowledge Feedback for Hallucination Mitigation"
(RLFH; public code AlignRM/RLFH, `source/feedback/reward.py`), METHODS.md §7. A response is
split into sentences and atomic statements, each statement labelled for truthfulness and
informativeness (`sharpen.tasks.statements`), and

    r_truth(statement) = w_truth · V[label] · |I[info]|               on the statement's last character
    r_info(sentence)   = w_info · log(max(ε, Σ_{s ∈ sentence} I[info_s]) + μ)   on the sentence's last character

with V = {correct 1, unverifiable (RLFH's "vague") −1, wrong −2}, I = {5: 1.3, 4: 1.2, 3: 1.1,
2: 1.0, 1: −0.1}, w_truth = w_info = 1, ε = −0.9, μ = 1 (the public code's values; its hedged
classes, 0.5 and −1.5, have no counterpart in the labellers here). The signal returns these
as spans (`SpanScores`): a token-level learner (`advantage: process_grpo`) gets each on its
token, and any other learner gets their sum per completion, the same judgements summed onto the
last token (the sequence-level baseline).

Who splits and labels (`judge`):
- `task`: the task's own `check_facts` (the `facts` task's parser, against its knowledge base);
- `policy`: the policy as its own statement splitter and judge (instruct models). It is asked,
  per sentence, to list the sentence's facts one per line (greedy); each fact is then judged
  true / false / unknown against the problem's knowledge text (`Problem.metadata["knowledge"]`)
  and rated 1-5 for informativeness, both read from the first token of its reply
  (`choice_logprobs`). A fact's span is its sentence, so its reward lands on the sentence's
  last token, as in RLFH, whose statements are listed sentence by sentence.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Protocol, Sequence

from sharpen.models.base import Completion, SamplingParams
from sharpen.models.formats import question_text
from sharpen.signals.base import ScoringPolicy, SignalOptionError, Span, Spans, SpanScores, check_groups, require_policy
from sharpen.tasks.base import Problem, Task
from sharpen.tasks.statements import INFORMATIVENESS, LABELS, FactCheck, Label, Statement, split_sentences

TRUTH_VALUES: dict[str, float] = {"correct": 1.0, "wrong": -2.0, "unverifiable": -1.0}
"""V[label], RLFH's public code (Correct 1, Vague −1, Wrong −2)."""
INFO_VALUES: dict[int, float] = {5: 1.3, 4: 1.2, 3: 1.1, 2: 1.0, 1: -0.1}
"""I[informativeness], RLFH's public code."""
EPSILON, MU = -0.9, 1.0
"""The floor ε and shift μ of the sentence reward log(max(ε, Σ I) + μ)."""

SPLIT_PROMPT = ("Break the sentence below into short, independent facts. Write one fact per line and nothing "
                "else.\nSentence: {sentence}")
LABEL_PROMPT = ("Known facts: {knowledge}\nStatement: {statement}\nIs the statement true, false, or unknown "
                "(not covered by the known facts)? Answer with one word: true, false or unknown.")
INFO_PROMPT = ("Question: {question}\nStatement: {statement}\nHow much does the statement help answer the "
               "question, from 1 (useless) to 5 (answers it)? Answer with one digit.")
LABEL_CHOICES: dict[str, Label] = {"true": "correct", "false": "wrong", "unknown": "unverifiable"}
"""The judge's replies and the labels they give."""
_BULLET_RE = re.compile(r"^\s*(?:[-*•]|\d+[.)]|fact\s*\d*:)\s*", re.IGNORECASE)


def truth_reward(label: Label, informativeness: int, values: Mapping[str, float],
                 info_values: Mapping[int, float], weight: float = 1.0) -> float:
    """r_truth = w_truth · V[label] · |I[informativeness]| (RLFH)."""
    return weight * values[label] * abs(info_values[informativeness])


def info_reward(informativeness: Sequence[int], info_values: Mapping[int, float], weight: float = 1.0,
                epsilon: float = EPSILON, mu: float = MU) -> float:
    """r_info of a sentence with statements of these informativeness levels:
    w_info · log(max(ε, Σ I[i]) + μ) (RLFH); a sentence without statements gives w_info · log(max(ε, 0) + μ)."""
    return weight * math.log(max(epsilon, sum(info_values[i] for i in informativeness)) + mu)


def rlfh_spans(check: FactCheck, values: Mapping[str, float], info_values: Mapping[int, float],
               truth_weight: float = 1.0, info_weight: float = 1.0, epsilon: float = EPSILON,
               mu: float = MU) -> Spans:
    """The RLFH rewards of one judged response: a truth span per statement, then an
    informativeness span per sentence (its whole extent)."""
    spans = [Span(s.start, s.end, truth_reward(s.label, s.informativeness, values, info_values, truth_weight))
             for s in check.statements]
    for index, (start, end) in enumerate(check.sentences):
        levels = [s.informativeness for s in check.statements if s.sentence == index]
        spans.append(Span(start, end, info_reward(levels, info_values, info_weight, epsilon, mu)))
    return tuple(spans)


class StatementJudge(Protocol):
    """Splits and labels every completion of every group: P × G FactChecks."""

    def __call__(self, problems: Sequence[Problem], groups: Sequence[Sequence[Completion]]) -> list[list[FactCheck]]:
        ...


@dataclass
class TaskStatementJudge:
    """The task's own `check_facts`."""

    task: Task

    def __post_init__(self) -> None:
        if self.task.check_facts is None:
            raise SignalOptionError(
                f"signal 'fact_feedback': task {self.task.name!r} has no check_facts (its own statement parser); "
                "use a fact task such as 'facts', or judge: policy to let the policy split and judge"
            )

    def __call__(self, problems: Sequence[Problem], groups: Sequence[Sequence[Completion]]) -> list[list[FactCheck]]:
        return [[self.task.check_facts(p, c.text) for c in group] for p, group in zip(problems, groups)]


def fact_lines(reply: str, limit: int) -> list[str]:
    """The facts a splitter listed: its non-empty lines without bullets or numbering, at most `limit`."""
    lines = [_BULLET_RE.sub("", line).strip() for line in reply.splitlines()]
    return [line for line in lines if line][:limit]


@dataclass
class PolicyStatementJudge:
    """The policy as its own statement splitter and judge (see the module docstring)."""

    policy: Any
    """Needs generate and choice_logprobs (an HFPolicy)."""
    max_statements: int = 8
    """Facts kept per sentence."""
    split_tokens: int = 64
    """Token budget of the splitter's reply per sentence."""

    def __call__(self, problems: Sequence[Problem], groups: Sequence[Sequence[Completion]]) -> list[list[FactCheck]]:
        sentences = [[split_sentences(c.text) for c in group] for group in groups]
        where = [(i, j, k) for i, group in enumerate(sentences) for j, spans in enumerate(group)
                 for k in range(len(spans))]
        prompts = [SPLIT_PROMPT.format(sentence=groups[i][j].text[slice(*sentences[i][j][k])]) for i, j, k in where]
        replies = self.policy.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=self.split_tokens)) \
            if prompts else []
        facts = [(i, j, k, fact) for (i, j, k), reply in zip(where, replies)
                 for fact in fact_lines(reply[0].text, self.max_statements)]
        labels = self.read(
            [LABEL_PROMPT.format(knowledge=knowledge(problems[i]), statement=f) for i, _, _, f in facts],
            list(LABEL_CHOICES),
        )
        infos = self.read(
            [INFO_PROMPT.format(question=question_text(problems[i].prompt), statement=f) for i, _, _, f in facts],
            [str(level) for level in INFORMATIVENESS],
        )
        statements: dict[tuple[int, int], list[Statement]] = {}
        for (i, j, k, _), label, info in zip(facts, labels, infos):
            start, end = sentences[i][j][k]
            statements.setdefault((i, j), []).append(
                Statement(start, end, k, LABEL_CHOICES[label], int(info)))
        return [[FactCheck(tuple(sentences[i][j]), tuple(statements.get((i, j), ()))) for j in range(len(group))]
                for i, group in enumerate(groups)]

    def read(self, prompts: list[str], choices: list[str]) -> list[str]:
        """The most likely of `choices` after each prompt (read at its first token)."""
        if not prompts:
            return []
        best = self.policy.choice_logprobs(prompts, choices).argmax(-1).tolist()  # (N,)
        return [choices[b] for b in best]


def knowledge(problem: Problem) -> str:
    """The knowledge text a policy judge checks statements against."""
    text = problem.metadata.get("knowledge")
    if not isinstance(text, str) or not text:
        raise ValueError(
            f"problem {problem.id!r} has no knowledge text (metadata['knowledge']); the policy judge of "
            "fact_feedback checks statements against it (the facts task provides it)"
        )
    return text


def checked_values(values: Optional[Mapping[Any, Any]], defaults: Mapping[Any, float], keys: Sequence[Any],
                   option: str, key_type: type) -> dict:
    """The defaults updated with `values` (keys converted to `key_type`), or a SignalOptionError
    naming the option and the bad key or value."""
    out = dict(defaults)
    for key, value in (values or {}).items():
        try:
            k = key_type(key)
        except (TypeError, ValueError):
            k = key
        if k not in keys:
            raise SignalOptionError(f"signal 'fact_feedback': option {option!r} has key {key!r}; its keys are "
                                    f"{', '.join(map(str, keys))}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SignalOptionError(f"signal 'fact_feedback': option {option!r}[{key!r}] must be a finite number, "
                                    f"got {value!r}")
        out[k] = float(value)
    return out


@dataclass
class FactFeedback:
    """RLFH's truthfulness and informativeness rewards as spans (see the module docstring)."""

    judge: StatementJudge
    truth_values: dict[str, float] = field(default_factory=lambda: dict(TRUTH_VALUES))
    info_values: dict[int, float] = field(default_factory=lambda: dict(INFO_VALUES))
    truth_weight: float = 1.0
    info_weight: float = 1.0
    epsilon: float = EPSILON
    mu: float = MU
    name: str = "fact_feedback"

    def __post_init__(self) -> None:
        if not self.mu + self.epsilon > 0:
            raise SignalOptionError(f"signal 'fact_feedback': needs mu + epsilon > 0 (the log's argument), "
                                    f"got mu={self.mu}, epsilon={self.epsilon}")

    def __call__(self, problems: Sequence[Problem], groups: Sequence[Sequence[Completion]]) -> SpanScores:
        check_groups(self.name, problems, groups)
        checks = self.judge(problems, groups)
        return SpanScores([[rlfh_spans(c, self.truth_values, self.info_values, self.truth_weight, self.info_weight,
                                       self.epsilon, self.mu) for c in row] for row in checks])


def build_fact_feedback(task: Task, policy: Optional[ScoringPolicy], judge: str = "task",
                        truth_values: Optional[dict] = None, info_values: Optional[dict] = None,
                        truth_weight: float = 1.0, info_weight: float = 1.0, epsilon: float = EPSILON,
                        mu: float = MU, max_statements: int = 8) -> FactFeedback:
    """The `fact_feedback` signal; `judge` is "task" or "policy" (see the module docstring)."""
    if judge == "task":
        statement_judge: StatementJudge = TaskStatementJudge(task)
    elif judge == "policy":
        statement_judge = PolicyStatementJudge(require_policy("fact_feedback", policy, ("generate", "choice_logprobs")),
                                               max_statements=max_statements)
    else:
        raise SignalOptionError(f"signal 'fact_feedback': option 'judge' is 'task' or 'policy', got {judge!r}")
    return FactFeedback(
        statement_judge,
        truth_values=checked_values(truth_values, TRUTH_VALUES, LABELS, "truth_values", str),
        info_values=checked_values(info_values, INFO_VALUES, INFORMATIVENESS, "info_values", int),
        truth_weight=truth_weight, info_weight=info_weight, epsilon=epsilon, mu=mu,
    )
