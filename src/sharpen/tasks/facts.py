"""`facts`: a seeded synthetic knowledge base of people, and a task with a knowledge boundary.

Each person has four attributes (city, job, pet, food); the model *knows* only some of them
(two to four, drawn per person). Asked about a person, the ideal answer states what it knows
and says it does not know the rest:

    "Who is Kavo?"  →  "Kavo lives in Holt and is a baker. Kavo likes figs. I do not know its pet."

The embedded default model learns these answers for every person in its training mixture
(with some values wrong, `noisy_answer`), so it knows more than it says; a training run then
asks about the train split's people and is measured on the eval split's, whose facts the
model learned in the same way but which the run never sees.

`check_facts` splits an answer into sentences and atomic statements and labels each against
the knowledge base (`sharpen.tasks.statements`): correct, wrong (a value that differs, or a
claim about a person the base does not hold: a fabricated person, as FActScore counts it
unsupported), or unverifiable (a sentence that does not parse). Its informativeness is 5 for
the first statement of an attribute of the person asked about, 2 for a statement about
someone else and 1 for a repeated attribute or an unparsable sentence. `check` calls an answer correct when every statement is correct and every
attribute the model knows is stated.

With `chat=True` (instruct models, which cannot know a synthetic base) the prompt gives the
known attributes as notes, and free text is read with a lenient reader: in each sentence, the
claims whose value is a word of the base ("... works as a baker ...", "... lives in Holt"),
about the person asked; sentences that say "not know", "not sure" or "no information" abstain.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Optional

from sharpen.tasks.base import Problem, Task, Verdict
from sharpen.tasks.errors import TaskOptionError, check_int_option
from sharpen.tasks.registry import register_task
from sharpen.tasks.splits import check_split, split_of
from sharpen.tasks.statements import FactCheck, Label, Statement, split_sentences

ATTRIBUTES: dict[str, tuple[str, tuple[str, ...]]] = {
    "city": ("lives in", ("Brill", "Corve", "Dunmar", "Elk", "Fenwick", "Gorm", "Holt", "Ivel", "Jarrow",
                          "Kest", "Lorn", "Mure")),
    "job": ("is a", ("baker", "nurse", "pilot", "farmer", "judge", "tailor", "miner", "singer", "potter",
                     "sailor", "clerk", "smith")),
    "pet": ("has a", ("cat", "dog", "goat", "fish", "frog", "hen", "crow", "mule")),
    "food": ("likes", ("rice", "figs", "soup", "plums", "bread", "beans", "honey", "pears")),
}
"""attribute → (the phrase that states it in the terse format, its possible values)."""
PHRASE_ATTRIBUTE = {phrase: attribute for attribute, (phrase, _) in ATTRIBUTES.items()}
CHAT_PHRASES: dict[str, str] = {
    "city": r"(?:lives|lived|living|resides|is based) in|is from|comes from",
    "job": r"(?:is|works as|worked as|working as|was) an?",
    "pet": r"(?:has|owns|keeps|had) an?|pet is an?",
    "food": r"(?:likes|loves|enjoys|eats|prefers)(?: eating)?",
}
"""attribute → how free text may state it (the lenient chat reader)."""
INFORMATIVE, OTHER_PERSON, USELESS = 5, 2, 1
"""Informativeness of a new attribute of the person asked, of a statement about someone else,
and of a repeated attribute or an unparsable sentence."""

_NAME_RE = re.compile(r"([A-Z][a-z]+) ")
_CLAIM_RE = re.compile(r"(lives in|is a|has a|likes) ([A-Za-z]+)")
_ABSTAIN_RE = re.compile(r"I do not know its [a-z]+(?:(?:, | or )[a-z]+)*\.")
_CHAT_ABSTAIN_RE = re.compile(r"\b(?:not know|don't know|do not know|not sure|unsure|no information|"
                              r"no idea|unknown)\b", re.IGNORECASE)
_CONSONANTS, _VOWELS = "bdfgklmnprstvz", "aeiou"
CHAT_PROMPT = ("Here is what you know about {name}: {notes}\nTell me about {name} in a few short sentences. "
               "If you do not know something about {name}, say that you do not know it.")


@dataclass(frozen=True)
class Person:
    """One entry of the knowledge base."""

    name: str
    values: dict[str, str]
    """attribute → value, for every attribute."""
    known: tuple[str, ...]
    """The attributes the model knows (in ATTRIBUTES order)."""


@dataclass(frozen=True)
class Claim:
    """An attribute claim read from text: `subject`'s `attribute` is `value`, at [start, end)."""

    subject: Optional[str]
    """The person named (None: the person asked about, in free text)."""
    attribute: str
    value: str
    start: int
    end: int


@dataclass(frozen=True)
class ReadSentence:
    """A sentence of an answer as read: its claims, an abstention, or text that does not parse."""

    start: int
    end: int
    kind: str
    """"claims", "abstain" or "unparsed"."""
    claims: tuple[Claim, ...] = ()


def knowledge_base(people: int, seed: int = 0) -> list[Person]:
    """`people` distinct persons with pronounceable names (consonant-vowel-consonant-vowel), each
    attribute drawn uniformly from its values and 2-4 known attributes, deterministic for `seed`."""
    rng = random.Random(seed)
    names: dict[str, None] = {}
    space = (len(_CONSONANTS) * len(_VOWELS)) ** 2
    if people > space:
        raise TaskOptionError(f"task 'facts': at most {space} people have distinct names, asked for {people}")
    while len(names) < people:
        names.setdefault("".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(2)).capitalize())
    base = []
    for name in names:
        values = {a: rng.choice(vals) for a, (_, vals) in ATTRIBUTES.items()}
        known = set(rng.sample(list(ATTRIBUTES), rng.randint(2, len(ATTRIBUTES))))
        base.append(Person(name, values, tuple(a for a in ATTRIBUTES if a in known)))
    return base


def person_of(problem: Problem) -> Person:
    """The person a `facts` problem asks about, from its metadata."""
    meta = problem.metadata
    return Person(meta["person"], dict(meta["values"]), tuple(meta["known"]))


def write_answer(name: str, claims: list[tuple[str, str]], unknown: list[str]) -> str:
    """The terse answer: claims (attribute, value) two to a sentence, then the unknown attributes.

    >>> write_answer("Kavo", [("city", "Holt"), ("job", "baker"), ("food", "figs")], ["pet"])
    'Kavo lives in Holt and is a baker. Kavo likes figs. I do not know its pet.'
    """
    sentences = []
    for i in range(0, len(claims), 2):
        parts = [f"{ATTRIBUTES[a][0]} {v}" for a, v in claims[i : i + 2]]
        sentences.append(f"{name} {' and '.join(parts)}.")
    if unknown:
        listed = unknown[0] if len(unknown) == 1 else f"{', '.join(unknown[:-1])} or {unknown[-1]}"
        sentences.append(f"I do not know its {listed}.")
    return " ".join(sentences)


def ideal_answer(person: Person) -> str:
    """What the model should say: every known attribute, and that it does not know the rest."""
    return noisy_answer(person, random.Random(0), wrong=0.0, guess=0.0)


def noisy_answer(person: Person, rng: random.Random, wrong: float, guess: float) -> str:
    """A training answer of the embedded mixture: each known attribute's value is replaced by
    another value with probability `wrong`; each unknown attribute is stated with a random
    value (a guess, right only by chance) with probability `guess`, else said to be unknown."""
    claims, unknown = [], []
    for attribute, (_, values) in ATTRIBUTES.items():
        true = person.values[attribute]
        if attribute in person.known:
            value = rng.choice([v for v in values if v != true]) if rng.random() < wrong else true
            claims.append((attribute, value))
        elif rng.random() < guess:
            claims.append((attribute, rng.choice(values)))
        else:
            unknown.append(attribute)
    return write_answer(person.name, claims, unknown)


def notes(person: Person) -> str:
    """The known attributes as sentences (the chat prompt's notes)."""
    return " ".join(f"{person.name} {ATTRIBUTES[a][0]} {person.values[a]}." for a in person.known)


def knowledge_text(person: Person) -> str:
    """Everything the knowledge base holds about a person, as sentences (what a judge checks against)."""
    return " ".join(f"{person.name} {ATTRIBUTES[a][0]} {person.values[a]}." for a in ATTRIBUTES)


# ---- reading answers ------------------------------------------------------------------------


def read_terse(text: str) -> list[ReadSentence]:
    """The sentences of a terse answer: `NAME claim( and claim)*.` with claim one of
    "lives in X", "is a X", "has a X", "likes X"; `I do not know its a(, b)*( or c).`; or unparsed."""
    out = []
    for start, end in split_sentences(text):
        sentence = text[start:end]
        if _ABSTAIN_RE.fullmatch(sentence):
            out.append(ReadSentence(start, end, "abstain"))
            continue
        claims = _terse_claims(sentence, start)
        out.append(ReadSentence(start, end, "claims", claims) if claims else ReadSentence(start, end, "unparsed"))
    return out


def _terse_claims(sentence: str, offset: int) -> tuple[Claim, ...]:
    """The claims of one terse sentence, or () when it does not follow the grammar exactly."""
    name = _NAME_RE.match(sentence)
    if not name:
        return ()
    claims, pos = [], name.end()
    while True:
        match = _CLAIM_RE.match(sentence, pos)
        if not match:
            return ()
        claims.append(Claim(name.group(1), PHRASE_ATTRIBUTE[match.group(1)], match.group(2),
                            offset + match.start(), offset + match.end()))
        pos = match.end()
        if sentence.startswith(" and ", pos):
            pos += len(" and ")
        elif sentence[pos:] == ".":
            return tuple(claims)
        else:
            return ()


def _chat_claim_res() -> dict[str, re.Pattern]:
    return {a: re.compile(rf"\b(?:{CHAT_PHRASES[a]})\s+(?:the\s+)?({'|'.join(vals)})\b", re.IGNORECASE)
            for a, (_, vals) in ATTRIBUTES.items()}


_CHAT_CLAIM_RES = _chat_claim_res()


def read_chat(text: str) -> list[ReadSentence]:
    """The sentences of free text: those that say "not know" (or the like) abstain; the others
    carry the attribute claims whose value is a word of the knowledge base, about the person
    asked (subject None); a sentence with neither is left out (the reader cannot decompose it)."""
    out = []
    for start, end in split_sentences(text):
        sentence = text[start:end]
        if _CHAT_ABSTAIN_RE.search(sentence):
            out.append(ReadSentence(start, end, "abstain"))
            continue
        claims = sorted(
            (Claim(None, a, m.group(1), start + m.start(), start + m.end())
             for a, regex in _CHAT_CLAIM_RES.items() for m in regex.finditer(sentence)),
            key=lambda c: c.start,
        )
        if claims:
            out.append(ReadSentence(start, end, "claims", tuple(claims)))
    return out


def label_claims(read: list[ReadSentence], asked: Person, people: dict[str, Person]) -> FactCheck:
    """Label read sentences against the knowledge base (see the module docstring)."""
    statements, stated = [], set()
    for index, sentence in enumerate(read):
        if sentence.kind == "unparsed":
            statements.append(Statement(sentence.start, sentence.end, index, "unverifiable", USELESS))
        for claim in sentence.claims:
            person = asked if claim.subject is None else people.get(claim.subject)
            label: Label
            if person is None:  # a person the knowledge base does not hold: fabricated
                label, info = "wrong", OTHER_PERSON
            else:
                label = "correct" if claim.value.lower() == person.values[claim.attribute].lower() else "wrong"
                if person is not asked:
                    info = OTHER_PERSON
                elif claim.attribute in stated:
                    info = USELESS
                else:
                    info = INFORMATIVE
                    stated.add(claim.attribute)
            statements.append(Statement(claim.start, claim.end, index, label, info))
    return FactCheck(tuple((s.start, s.end) for s in read), tuple(statements))


NO_CLAIMS = "none"
"""The canonical answer of a well-formed answer that claims nothing (it only abstains)."""


def canonical_claims(read: list[ReadSentence]) -> Optional[str]:
    """The claims as one canonical string ("Kavo.city=holt;Kavo.job=baker", sorted; NO_CLAIMS for
    an answer that only abstains): the label-free answer majority vote compares. None when the
    answer is not well formed (no sentence, or a sentence that does not parse), so that the
    `format` signal, which asks whether an answer can be read, refuses text that hides its
    claims in broken sentences (as the arithmetic tasks' strict reading does)."""
    if not read or any(s.kind == "unparsed" for s in read):
        return None
    claims = sorted({f"{c.subject + '.' if c.subject else ''}{c.attribute}={c.value.lower()}"
                     for s in read for c in s.claims})
    return ";".join(claims) or NO_CLAIMS


# ---- the task -------------------------------------------------------------------------------


@register_task("facts")
def facts(people: int = 200, seed: int = 0, chat: bool = False) -> Task:
    """Questions about the people of a seeded knowledge base (`knowledge_base(people, seed)`):
    "Who is Kavo?" (terse, the embedded model's format) or, with `chat`, a request in words with
    the known attributes as notes. A person's split follows its name (`split_of`)."""
    check_int_option("facts", "people", people, minimum=1)
    check_int_option("facts", "seed", seed, minimum=0)
    if not isinstance(chat, bool):
        raise TaskOptionError(f"task 'facts': option 'chat' must be true or false, got {chat!r}")
    base = knowledge_base(people, seed)
    by_name = {p.name: p for p in base}
    read = read_chat if chat else read_terse

    def problem(person: Person) -> Problem:
        prompt = CHAT_PROMPT.format(name=person.name, notes=notes(person)) if chat else f"Who is {person.name}?"
        return Problem(id=f"facts/{person.name}", prompt=prompt, answer=ideal_answer(person),
                       metadata={"person": person.name, "values": dict(person.values), "known": person.known,
                                 "knowledge": knowledge_text(person)})

    def problems(split: str, n: int, seed_: int) -> list[Problem]:
        check_split(split)
        pool = [p for p in base if split_of(f"facts/{p.name}") == split]
        return [problem(p) for p in random.Random(seed_).sample(pool, min(n, len(pool)))]

    def asked(problem_: Problem) -> Person:
        person = by_name.get(problem_.metadata.get("person", ""))
        if person is None:
            raise ValueError(f"problem {problem_.id!r} names no person of this knowledge base")
        return person

    def check_facts(problem_: Problem, text: str) -> FactCheck:
        return label_claims(read(text), asked(problem_), by_name)

    def check(problem_: Problem, text: str) -> Verdict:
        person, sentences = asked(problem_), read(text)
        judged = label_claims(sentences, person, by_name)
        stated = {c.attribute for s in sentences for c in s.claims if c.subject in (None, person.name)}
        missing = [a for a in person.known if a not in stated]
        answer = canonical_claims(sentences)
        if judged.statements and judged.count("correct") == len(judged.statements) and not missing:
            return Verdict(True, answer)
        note = "no statement" if judged.abstained else (
            f"{judged.count('wrong')} wrong, {judged.count('unverifiable')} unverifiable, "
            f"{len(missing)} known attributes left out")
        return Verdict(False, answer, note)

    return Task(
        name="facts",
        problems=problems,
        check=check,
        extract=lambda text: canonical_claims(read(text)),
        description=f"{people} people of a synthetic knowledge base" + (" (chat prompt)" if chat else ""),
        max_new_tokens=128 if chat else 80,
        stop=() if chat else ("\n",),
        solution=lambda problem_: problem_.answer,
        check_facts=check_facts,
    )
