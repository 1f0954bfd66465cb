"""The conversation formats sharpen's loop asks a model to follow: template sets, by model.

Besides answering a problem, self-improvement needs more from a model: to judge an answer
("is this right? yes/no"), to compare two answers ("which of A and B is right?"), to try
again after being told an attempt was wrong (or after a neutral re-ask, or after judging
itself wrong), and to answer again after seeing other agents' answers (debate). The words of
these prompts belong to the model, so they come in named *template sets* (`TEMPLATE_SETS`):

    embedded   the formats the embedded default model is trained on, terse and character-level:
               judge "37+58=96 right?" → "yes"/"no"; compare "37+58= A:96 B:95 which?" → "A"/"B";
               after a wrong attempt "wrong"; debate "others: 95, 96"
    chat       natural language for instruct models: "Is this answer correct? Answer Yes or
               No."; both answers in full and "Which answer is correct, A or B?"; "Your answer
               is incorrect. Please try again."; debate shows the other agents' responses

`template_set_for(policy)` is the one place that decides which set a policy speaks
(`TEMPLATE_RULES`); a user overrides it in a run config (`prompts: chat`, or a `PromptsConfig`
with per-format texts) or with `--prompts NAME` on the command line (`use_prompts`).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Optional, Sequence, Union

from pydantic import Field, model_validator

from sharpen.config import ConfigModel, Location
from sharpen.tasks.base import Message, Prompt


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


def retry_messages(prompt: Prompt, attempts: Sequence[str], feedback: Sequence[str]) -> list[Message]:
    """The history of a multi-turn episode, ready for the next attempt.

    attempts[i] is the model's i-th answer and feedback[i] what it was told after it
    (e.g. a template set's `retry_feedback`); both sequences have the same length.
    """
    if len(attempts) != len(feedback):
        raise ValueError(f"{len(attempts)} attempts but {len(feedback)} feedback messages")
    messages = as_messages(prompt)
    for attempt, said in zip(attempts, feedback):
        messages.append({"role": "assistant", "content": attempt})
        messages.append({"role": "user", "content": said})
    return messages


def trim_start(text: str, budget: int) -> str:
    """`text` if it has at most `budget` characters, else its last `budget` characters after
    "…" (a response's final answer is at its end)."""
    return text if len(text) <= budget else "…" + text[len(text) - budget :]


@dataclass(frozen=True)
class TemplateSet:
    """The prompts of one model's self-improvement formats. Templates are `str.format`
    strings whose placeholders are named in `PLACEHOLDERS`; the other texts are plain."""

    name: str
    """The set's name in TEMPLATE_SETS (an overridden set keeps its base's name)."""
    judge: str
    """A judge prompt from {question} and {answer}; the judge replies judge_yes or judge_no."""
    judge_yes: str
    """The reply that means "right" (its first token is read, over all spellings)."""
    judge_no: str
    """The reply that means "wrong"."""
    compare: str
    """A comparison prompt from {question}, {first} (shown as A) and {second} (shown as B)."""
    compare_first: str
    """The reply that picks the answer shown first."""
    compare_second: str
    """The reply that picks the answer shown second."""
    retry_feedback: str
    """What the model is told after an attempt the checker calls wrong (RISE's oracle feedback)."""
    neutral_feedback: str
    """The re-ask that says nothing about correctness (SCoRe's intrinsic self-correction)."""
    refine_feedback: str
    """What the model is told after judging its own answer wrong (self_refine)."""
    debate: str
    """The user turn of a later debate round, from {responses}: the other agents' answers,
    each as `debate_response`, joined by `debate_separator`."""
    debate_response: str
    """One other agent's answer from {agent} (its number, from 1), {answer} (the extracted
    answer, else the stripped text) and {response} (the whole text, trimmed to debate_chars)."""
    debate_separator: str
    """What goes between two agents' answers in {responses}."""
    debate_chars: int
    """The budget of one {response} in characters; a longer one keeps its last debate_chars."""

    def judge_messages(self, prompt: Prompt, answer: str) -> list[Message]:
        """Ask whether `answer` answers `prompt`; a judge replies judge_yes or judge_no."""
        return [{"role": "user", "content": self.judge.format(question=question_text(prompt), answer=answer)}]

    def compare_messages(self, prompt: Prompt, first: str, second: str) -> list[Message]:
        """Ask which of two answers to `prompt` is right, `first` shown as A and `second` as B;
        a judge replies compare_first or compare_second."""
        text = self.compare.format(question=question_text(prompt), first=first, second=second)
        return [{"role": "user", "content": text}]

    def debate_message(self, others: Sequence[tuple[int, str, Optional[str]]]) -> Message:
        """The user turn showing other agents' answers, each (agent number, text, extracted
        answer or None)."""
        shown = [
            self.debate_response.format(
                agent=agent, answer=text.strip() if answer is None else answer,
                response=trim_start(text.strip(), self.debate_chars),
            )
            for agent, text, answer in others
        ]
        return {"role": "user", "content": self.debate.format(responses=self.debate_separator.join(shown))}

    def problems(self) -> Iterator[tuple[tuple[str, ...], str]]:
        """(the fields involved, problem) for each template with a placeholder it may not use
        or without one it needs, each pair of replies that is empty or equal up to case and
        spaces (`choice_logprobs` reads every spelling), and a budget below 1."""
        for name, (allowed, needed) in PLACEHOLDERS.items():
            yield from (((name,), p) for p in placeholder_problems(getattr(self, name), allowed, needed))
        for pair in (("judge_yes", "judge_no"), ("compare_first", "compare_second")):
            x, y = (getattr(self, f) for f in pair)
            if not x.strip() or not y.strip() or x.strip().lower() == y.strip().lower():
                yield pair, f"{pair[0]} and {pair[1]} must be two different non-empty replies, got {x!r} and {y!r}"
        if self.debate_chars < 1:
            yield ("debate_chars",), f"must be at least 1 character, got {self.debate_chars}"


PLACEHOLDERS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "judge": (frozenset({"question", "answer"}), frozenset({"question", "answer"})),
    "compare": (frozenset({"question", "first", "second"}), frozenset({"question", "first", "second"})),
    "debate": (frozenset({"responses"}), frozenset({"responses"})),
    "debate_response": (frozenset({"agent", "answer", "response"}), frozenset()),
}
"""Template field → (placeholders it may use, placeholders it must use)."""


def placeholder_problems(template: str, allowed: frozenset[str], needed: frozenset[str]) -> list[str]:
    """What is wrong with a template's placeholders: malformed braces, a placeholder that is
    not a plain allowed name (no "{answer.attr}", "{0}", "{answer!r}" or "{answer:>5}"), a
    needed placeholder missing. Empty if nothing."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        return [f"braces do not pair up ({err}); write a literal brace as {{{{ or }}}}"]
    used, problems = set(), []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in allowed or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            problems.append(f"placeholder {shown} is not allowed; use "
                            + (", ".join("{" + n + "}" for n in sorted(allowed)) or "no placeholders"))
        used.add(name)
    missing = sorted(needed - used)
    if missing:
        problems.append("needs the placeholder(s) " + ", ".join("{" + n + "}" for n in missing))
    return problems


EMBEDDED = TemplateSet(
    name="embedded",
    judge="{question}{answer} right?",
    judge_yes="yes",
    judge_no="no",
    compare="{question} A:{first} B:{second} which?",
    compare_first="A",
    compare_second="B",
    retry_feedback="wrong",
    neutral_feedback="check your answer and answer again",
    refine_feedback="wrong",
    debate="others: {responses}",
    debate_response="{answer}",
    debate_separator=", ",
    debate_chars=1000,
)
"""The embedded default model's trained formats (`sharpen.models.embedded`): its judge, compare
and retry formats are in its training mixture; the neutral re-ask and the debate turn are not."""

CHAT = TemplateSet(
    name="chat",
    judge="Question: {question}\nProposed answer: {answer}\n\nIs this answer correct? Answer Yes or No.",
    judge_yes="Yes",
    judge_no="No",
    compare=("Question: {question}\n\nAnswer A:\n{first}\n\nAnswer B:\n{second}\n\n"
             "Which answer is correct, A or B?"),
    compare_first="A",
    compare_second="B",
    retry_feedback="Your answer is incorrect. Please try again.",
    neutral_feedback="Please check your answer and answer again.",
    refine_feedback="You judged your answer to be incorrect. Please try again.",
    debate=("These are the responses of the other agents:\n\n{responses}\n\n"
            "Using their reasoning as additional advice, give your updated answer."),
    debate_response="Agent {agent}: {response}",
    debate_separator="\n\n",
    debate_chars=1000,
)
"""Natural language for instruct models behind a chat template; the debate turn follows Du et
al. (2023), "Improving Factuality and Reasoning in Language Models through Multiagent Debate"."""

TEMPLATE_SETS: dict[str, TemplateSet] = {t.name: t for t in (EMBEDDED, CHAT)}
"""Template sets by name (`prompts: NAME` in a run config, `--prompts NAME`)."""


# ---- which set a policy speaks --------------------------------------------------------------


def speaks_embedded(policy: Any) -> bool:
    """The embedded model, or a checkpoint trained from it: its tokenizer has sharpen's own
    chat template (`sharpen.models.embedded.CHAT_TEMPLATE`)."""
    from sharpen.models.embedded import CHAT_TEMPLATE

    tokenizer = getattr(policy, "tokenizer", None)
    return tokenizer is not None and getattr(tokenizer, "chat_template", None) == CHAT_TEMPLATE


def has_tokenizer(policy: Any) -> bool:
    """Any other local Hugging Face model (with a chat template, or a base model without)."""
    return getattr(policy, "tokenizer", None) is not None


def is_http(policy: Any) -> bool:
    """An OpenAI-compatible server (it applies its model's own chat template)."""
    from sharpen.models.openai_http import OpenAIPolicy

    return isinstance(policy, OpenAIPolicy)


@dataclass(frozen=True)
class TemplateRule:
    """One case of `template_set_for`."""

    described: str
    matches: Callable[[Any], bool]
    templates: str
    """The TEMPLATE_SETS name a matching policy speaks."""


TEMPLATE_RULES: list[TemplateRule] = [
    TemplateRule("the embedded model (sharpen's own chat template)", speaks_embedded, "embedded"),
    TemplateRule("any other Hugging Face model", has_tokenizer, "chat"),
    TemplateRule("an OpenAI-compatible server", is_http, "chat"),
]
"""The template set a policy speaks unless it carries its own, tried in order; a policy no
rule matches (a scripted test policy, say) speaks DEFAULT_TEMPLATES."""

DEFAULT_TEMPLATES = "embedded"


def template_set_for(policy: Any) -> TemplateSet:
    """The template set `policy` speaks: the one it carries (`policy.templates`, set from a
    user's config or command line by `use_prompts`), else the first TEMPLATE_RULES match,
    else DEFAULT_TEMPLATES."""
    own = getattr(policy, "templates", None)
    if own is not None:
        return own
    rule = next((r for r in TEMPLATE_RULES if r.matches(policy)), None)
    return TEMPLATE_SETS[rule.templates if rule is not None else DEFAULT_TEMPLATES]


# ---- a user's choice -----------------------------------------------------------------------


class PromptsConfig(ConfigModel):
    """A run config's `prompts`: a template set by name (`prompts: chat`), and/or texts that
    replace some of its formats (`prompts: {name: chat, retry_feedback: "Try again."}`)."""

    name: Optional[str] = Field(None, description="Template set: " + ", ".join(TEMPLATE_SETS)
                                                  + " (default: the model's own, by sharpen.models.formats.TEMPLATE_RULES).")
    judge: Optional[str] = Field(None, description="Judge prompt with {question} and {answer}.")
    judge_yes: Optional[str] = Field(None, description="The judge's reply for right.")
    judge_no: Optional[str] = Field(None, description="The judge's reply for wrong.")
    compare: Optional[str] = Field(None, description="Comparison prompt with {question}, {first} and {second}.")
    compare_first: Optional[str] = Field(None, description="The reply that picks the first answer.")
    compare_second: Optional[str] = Field(None, description="The reply that picks the second answer.")
    retry_feedback: Optional[str] = Field(None, description="Told after an attempt the checker calls wrong.")
    neutral_feedback: Optional[str] = Field(None, description="The re-ask that says nothing about correctness.")
    refine_feedback: Optional[str] = Field(None, description="Told after the model judged its own answer wrong.")
    debate: Optional[str] = Field(None, description="A later debate round's user turn, with {responses}.")
    debate_response: Optional[str] = Field(None, description="One other agent's answer: {agent}, {answer}, {response}.")
    debate_separator: Optional[str] = Field(None, description="Between two agents' answers in {responses}.")
    debate_chars: Optional[int] = Field(None, description="Characters of one {response} at most.")

    @model_validator(mode="before")
    @classmethod
    def _name_alone(cls, data: Any) -> Any:
        """`prompts: chat` is `prompts: {name: chat}`."""
        return {"name": data} if isinstance(data, str) else data

    def overrides(self) -> dict[str, Any]:
        """The formats this config replaces, by TemplateSet field."""
        return {k: v for k, v in self.model_dump().items() if k != "name" and v is not None}

    def config_problems(self) -> Iterator[tuple[Location, str]]:
        """An unknown set's name; the problems of the formats this config replaces, in the
        named set, or without a name in every set (the model decides which it speaks)."""
        yield from super().config_problems()
        if self.name is not None and self.name not in TEMPLATE_SETS:
            yield ("name",), f"unknown template set {self.name!r}; choose one of: {', '.join(TEMPLATE_SETS)}"
            return
        replaced = self.overrides()
        bases = [TEMPLATE_SETS[self.name]] if self.name is not None else list(TEMPLATE_SETS.values())
        found = {}
        for base in bases:
            for involved, problem in replace(base, **replaced).problems():
                mine = [f for f in involved if f in replaced]
                if mine:
                    found.setdefault(problem, mine[-1])
        for problem, field in found.items():
            yield (field,), problem


Prompts = Union[str, PromptsConfig, None]
"""A user's choice of templates: a set's name, a PromptsConfig, or None (the model's own)."""


class TemplateChoiceError(ValueError):
    """A template set named or written by the user cannot be used."""


def resolve_templates(policy: Any, choice: Prompts) -> TemplateSet:
    """The template set `policy` speaks under a user's `choice`: the named set (else the
    policy's own, `template_set_for`) with the choice's formats replaced."""
    config = PromptsConfig.model_validate(choice) if choice is not None else PromptsConfig()
    if config.name is not None and config.name not in TEMPLATE_SETS:
        raise TemplateChoiceError(f"unknown template set {config.name!r}; choose one of: {', '.join(TEMPLATE_SETS)}")
    base = TEMPLATE_SETS[config.name] if config.name is not None else template_set_for(policy)
    templates = replace(base, **config.overrides())
    problems = [f"prompts.{involved[-1]}: {problem}" for involved, problem in templates.problems()]
    if problems:
        raise TemplateChoiceError("; ".join(problems))
    return templates


def use_prompts(policy: Any, choice: Prompts) -> Any:
    """Give `policy` the template set of a user's `choice` (nothing changes for None);
    returns the policy."""
    if choice is not None:
        policy.templates = resolve_templates(policy, choice)
    return policy

