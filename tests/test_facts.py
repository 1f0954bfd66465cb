"""The `facts` task: its knowledge base, the statement parsers and their labels, and fact
precision (FActScore) with and without the length penalty, on made-up answers."""

from __future__ import annotations

import math
import random

import pytest

from sharpen.evaluation.facts import fact_precision, fact_problem_metrics, length_penalty
from sharpen.tasks import get_task
from sharpen.tasks.facts import Person, knowledge_base, label_claims, noisy_answer, read_chat, read_terse, write_answer
from sharpen.tasks.statements import FactCheck, Statement, split_sentences

KAVO = Person("Kavo", {"city": "Holt", "job": "baker", "pet": "goat", "food": "figs"}, ("city", "job", "food"))
LUMI = Person("Lumi", {"city": "Kest", "job": "nurse", "pet": "cat", "food": "rice"}, ("city", "pet"))
PEOPLE = {p.name: p for p in (KAVO, LUMI)}


def judged(text: str, chat: bool = False) -> list[tuple[str, str, int]]:
    """(statement text, label, informativeness) of an answer about Kavo."""
    check = label_claims((read_chat if chat else read_terse)(text), KAVO, PEOPLE)
    return [(text[s.start : s.end], s.label, s.informativeness) for s in check.statements]


def test_sentences_are_split_at_their_ends_without_leading_spaces():
    text = "Kavo lives in Holt. I do not know its pet!  And then"
    assert [text[a:b] for a, b in split_sentences(text)] == ["Kavo lives in Holt.", "I do not know its pet!",
                                                             "And then"]
    assert split_sentences("") == [] and split_sentences(" . ") == []


def test_the_terse_parser_splits_sentences_into_atomic_statements_and_labels_them():
    text = "Kavo lives in Holt and is a pilot. Kavo likes figs. I do not know its pet."
    assert judged(text) == [("lives in Holt", "correct", 5), ("is a pilot", "wrong", 5), ("likes figs", "correct", 5)]
    check = label_claims(read_terse(text), KAVO, PEOPLE)
    assert [text[a:b] for a, b in check.sentences] == ["Kavo lives in Holt and is a pilot.", "Kavo likes figs.",
                                                      "I do not know its pet."]
    assert [s.sentence for s in check.statements] == [0, 0, 1]


def test_labels_of_other_people_repeats_and_text_that_does_not_parse():
    text = "Kavo likes figs. Kavo likes rice. Lumi has a cat. Zuzu is a baker. Kavo is baker."
    assert judged(text) == [
        ("likes figs", "correct", 5),
        ("likes rice", "wrong", 1),  # the attribute was stated already: useless
        ("has a cat", "correct", 2),  # about someone else, checked against that person
        ("is a baker", "wrong", 2),  # a person the knowledge base does not hold: fabricated
        ("Kavo is baker.", "unverifiable", 1),  # not the grammar: the whole sentence, unverifiable
    ]


def test_the_chat_reader_finds_claims_in_free_text_and_abstentions():
    text = "Sure! Kavo lives in Holt and works as a baker. Kavo's pet is a mule. I am not sure what Kavo eats."
    assert judged(text, chat=True) == [("lives in Holt", "correct", 5), ("works as a baker", "correct", 5),
                                       ("pet is a mule", "wrong", 5)]
    check = label_claims(read_chat(text), KAVO, PEOPLE)
    assert len(check.sentences) == 3  # "Sure!" is left out; the abstention is a sentence without statements
    assert label_claims(read_chat("I do not know who Kavo is."), KAVO, PEOPLE).abstained


def test_the_task_validates_itself_and_calls_an_answer_right_only_when_exact():
    task = get_task("facts")
    problems = task.problems("train", 50, 0) + task.problems("eval", 50, 0)
    assert len(task.problems("eval", 10**6, 0)) + len(task.problems("train", 10**6, 0)) == 200
    assert not {p.id for p in task.problems("train", 10**6, 0)} & {p.id for p in task.problems("eval", 10**6, 0)}
    for p in problems:
        gold = task.solution(p)
        assert task.check(p, gold).correct is True
        checks = task.check_facts(p, gold)
        assert checks.count("correct") == len(checks.statements) == len(p.metadata["known"])
    p = problems[0]
    first = p.metadata["known"][0]
    assert task.check(p, "").correct is False
    assert task.check(p, "I do not know its city, job, pet or food.").note == "no statement"
    partial = write_answer(p.metadata["person"], [(first, p.metadata["values"][first])], [])
    verdict = task.check(p, partial)
    assert verdict.correct is False and "known attributes left out" in verdict.note
    assert task.extract(p.answer) == task.check(p, p.answer).answer is not None


def test_noisy_answers_get_values_wrong_and_guess_at_the_rate_asked():
    base = knowledge_base(300)
    rng = random.Random(0)
    counts = {"wrong": 0, "known": 0, "guessed": 0, "unknown": 0}
    for person in base:
        read = read_terse(noisy_answer(person, rng, wrong=0.3, guess=0.2))
        stated = {c.attribute: c.value for s in read for c in s.claims}
        for attribute in person.values:
            if attribute in person.known:
                counts["known"] += 1
                counts["wrong"] += stated[attribute] != person.values[attribute]
            else:
                counts["unknown"] += 1
                counts["guessed"] += attribute in stated
    assert counts["wrong"] / counts["known"] == pytest.approx(0.3, abs=0.05)
    assert counts["guessed"] / counts["unknown"] == pytest.approx(0.2, abs=0.06)
    assert all(len(write_answer(p.name, list(p.values.items()), [])) < 80 for p in base)  # fits the model's context


def test_the_chat_task_gives_notes_and_reads_its_own_gold_answers():
    task = get_task("facts", chat=True)
    p = task.problems("eval", 1, 0)[0]
    assert p.metadata["person"] in p.prompt and "say that you do not know" in p.prompt
    assert task.check(p, p.answer).correct is True


def statements(*labels: str) -> FactCheck:
    return FactCheck(((0, 100),), tuple(Statement(i, i + 1, 0, label, 5) for i, label in enumerate(labels)))


def test_fact_precision_and_the_length_penalty_by_hand():
    assert fact_precision(statements("correct", "wrong", "correct", "unverifiable")) == 0.5
    assert fact_precision(statements()) is None
    assert length_penalty(4) == pytest.approx(math.exp(1 - 10 / 4))  # 0.2231
    assert length_penalty(10) == length_penalty(25) == 1.0
    with pytest.raises(ValueError, match="at least one statement"):
        length_penalty(0)
    metrics = fact_problem_metrics([statements("correct", "wrong", "correct", "unverifiable"),  # 0.5, 4 statements
                                    statements("correct", "correct"),  # 1.0, 2 statements
                                    statements()])  # abstained
    assert metrics["fact_precision"] == pytest.approx((0.5 + 1.0) / 2)
    assert metrics["fact_precision_penalized"] == pytest.approx(
        (0.5 * math.exp(1 - 10 / 4) + 1.0 * math.exp(1 - 10 / 2)) / 2)  # (0.11157 + 0.01832) / 2
    assert metrics["statements_per_response"] == pytest.approx(6 / 3)
    assert metrics["abstention_rate"] == pytest.approx(1 / 3)
    assert fact_problem_metrics([statements()])["fact_precision"] is None


def test_the_label_free_answer_is_none_for_text_that_is_not_well_formed():
    task = get_task("facts")
    assert task.extract("Kavo likes figs. Kavo lives in Holt.") == "Kavo.city=holt;Kavo.food=figs"
    assert task.extract("I do not know its pet or food.") == "none"  # well formed, claims nothing
    assert task.extract("Kavo lives in Brill B B B Laule. I do not know its pet.") is None  # a broken sentence
    assert task.extract("") is None
    chat = get_task("facts", chat=True)
    assert chat.extract("Sure! Kavo lives in Holt.") == "city=holt"  # the lenient reader skips what it cannot read
