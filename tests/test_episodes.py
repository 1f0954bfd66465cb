"""run_episodes with a scripted policy whose answer depends on the turn; every prompt checked."""

from typing import Sequence

import pytest

from sharpen.episodes import Episode, Turn, feedback_text, next_prompt, run_episodes
from sharpen.models.base import Completion, SamplingParams
from sharpen.models.formats import EMBEDDED, retry_messages
from sharpen.tasks import get_task
from sharpen.tasks.base import Problem, Verdict

ADDITION = get_task("addition")
P1 = Problem(id="p1", prompt="12+30=", answer="42")
P2 = Problem(id="p2", prompt="11+11=", answer="22")
P3 = Problem(id="p3", prompt="20+20=", answer="40")


def turn_of(prompt) -> int:
    """1-based turn a prompt asks for: a string is turn 1, a retry history has one assistant
    message per earlier attempt."""
    if isinstance(prompt, str):
        return 1
    return 1 + sum(m["role"] == "assistant" for m in prompt)


def question(prompt) -> str:
    return prompt if isinstance(prompt, str) else prompt[0]["content"]


class ScriptedPolicy:
    """Answers script[question][turn - 1]; token ids are one per character of the text."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script = script
        self.calls: list[tuple[list, SamplingParams]] = []

    def generate(self, prompts: Sequence, params: SamplingParams) -> list[list[Completion]]:
        self.calls.append((list(prompts), params))
        out = []
        for p in prompts:
            text = self.script[question(p)][turn_of(p) - 1]
            out.append([Completion(text, tuple(range(len(text))), (0.0,) * len(text), "stop")])
        return out


SCRIPT = {
    "12+30=": ["41", "42", "42"],  # wrong, then right
    "11+11=": ["22", "23", "22"],  # right, wrong, right
    "20+20=": ["x", "39", "40"],  # unreadable, wrong, right
}


def test_binary_feedback_history_and_tokens():
    policy = ScriptedPolicy(SCRIPT)
    episodes = run_episodes(policy, ADDITION, [P1, P2, P3], turns=3, feedback="binary", seed=5)

    # one generate call per turn, all live episodes batched, seeds seed + t, n = 1
    assert len(policy.calls) == 3
    assert [len(prompts) for prompts, _ in policy.calls] == [3, 3, 3]
    assert [params.seed for _, params in policy.calls] == [5, 6, 7]
    assert all(params.n == 1 and params.stop == ADDITION.stop for _, params in policy.calls)
    assert all(params.max_new_tokens == ADDITION.max_new_tokens for _, params in policy.calls)

    # turn 1 is the problem's own prompt; later turns carry the history in the retry format
    first, second, third = (prompts for prompts, _ in policy.calls)
    assert first == ["12+30=", "11+11=", "20+20="]
    assert second[0] == retry_messages("12+30=", ["41"], [EMBEDDED.retry_feedback])
    assert second[1] == retry_messages("11+11=", ["22"], [EMBEDDED.neutral_feedback])  # right: neutral
    assert third[0] == [
        {"role": "user", "content": "12+30="},
        {"role": "assistant", "content": "41"},
        {"role": "user", "content": "wrong"},
        {"role": "assistant", "content": "42"},
        {"role": "user", "content": EMBEDDED.neutral_feedback},
    ]
    assert third[2] == retry_messages("20+20=", ["x", "39"], [EMBEDDED.retry_feedback, EMBEDDED.retry_feedback])

    e1, e2, e3 = episodes
    assert e1.correct == (False, True, True)
    assert e2.correct == (True, False, True)
    assert e3.correct == (False, False, True)
    assert e3.answers == (None, "39", "40")
    assert [t.feedback for t in e1.turns] == [EMBEDDED.retry_feedback, EMBEDDED.neutral_feedback, None]
    assert [t.feedback for t in e2.turns] == [EMBEDDED.neutral_feedback, EMBEDDED.retry_feedback, None]
    # tokens: one per character, summed over turns
    assert [e.tokens for e in episodes] == [6, 6, 5]
    assert [t.tokens for t in e3.turns] == [1, 2, 2]
    # messages(): the full conversation, ending with the last attempt
    assert e1.messages() == third[0] + [{"role": "assistant", "content": "42"}]


def test_stop_when_correct_ends_episodes_and_shrinks_batches():
    policy = ScriptedPolicy(SCRIPT)
    episodes = run_episodes(policy, ADDITION, [P1, P2, P3], turns=3, feedback="binary", stop_when_correct=True)

    assert [len(prompts) for prompts, _ in policy.calls] == [3, 2, 1]
    assert policy.calls[1][0] == [
        retry_messages("12+30=", ["41"], [EMBEDDED.retry_feedback]),
        retry_messages("20+20=", ["x"], [EMBEDDED.retry_feedback]),
    ]
    assert policy.calls[2][0] == [retry_messages("20+20=", ["x", "39"], [EMBEDDED.retry_feedback] * 2)]
    e1, e2, e3 = episodes
    assert e1.correct == (False, True)
    assert e2.correct == (True,)
    assert e3.correct == (False, False, True)
    assert e1.turns[-1].feedback is None and e2.turns[-1].feedback is None
    assert [e.tokens for e in episodes] == [4, 2, 5]
    assert e2.messages() == [{"role": "user", "content": "11+11="}, {"role": "assistant", "content": "22"}]


def test_none_feedback_is_always_the_neutral_reask():
    policy = ScriptedPolicy(SCRIPT)
    episodes = run_episodes(policy, ADDITION, [P1, P3], turns=2, feedback="none", neutral="again?")
    assert policy.calls[1][0] == [retry_messages("12+30=", ["41"], ["again?"]),
                                  retry_messages("20+20=", ["x"], ["again?"])]
    assert [e.turns[0].feedback for e in episodes] == ["again?", "again?"]


def test_verifier_feedback_is_the_checkers_note():
    policy = ScriptedPolicy(SCRIPT)
    episodes = run_episodes(policy, ADDITION, [P1, P2, P3], turns=2, feedback="verifier")
    notes = [e.turns[0].feedback for e in episodes]
    assert notes == [ADDITION.check(P1, "41").note, EMBEDDED.neutral_feedback, ADDITION.check(P3, "x").note]
    assert notes[0] == "answer differs from reference" and notes[2] == "no answer found"
    # an empty note falls back to the retry feedback; an unscorable verdict is never called wrong
    said = {"wrong": "no!", "neutral": "again?"}
    assert feedback_text("verifier", Verdict(correct=False), **said) == "no!"
    assert feedback_text("binary", Verdict(correct=None, note="cannot tell"), **said) == "again?"
    assert feedback_text("verifier", Verdict(correct=True), **said) == "again?"


def test_single_turn_and_chat_prompts():
    chat = Problem(id="c", prompt=[{"role": "system", "content": "add"}, {"role": "user", "content": "12+30="}],
                   answer="42")

    class ChatPolicy(ScriptedPolicy):
        def generate(self, prompts, params):
            self.calls.append((list(prompts), params))
            return [[Completion("41" if len(p) == 2 else "42", (1, 2), (0.0, 0.0), "stop")] for p in prompts]

    policy = ChatPolicy({})
    (episode,) = run_episodes(policy, ADDITION, [chat], turns=2)
    assert policy.calls[1][0][0] == chat.prompt + [
        {"role": "assistant", "content": "41"}, {"role": "user", "content": EMBEDDED.retry_feedback}]
    assert episode.correct == (False, True)
    (one,) = run_episodes(ScriptedPolicy(SCRIPT), ADDITION, [P1], turns=1)
    assert one.correct == (False,) and one.turns[0].feedback is None


def test_bad_arguments():
    policy = ScriptedPolicy(SCRIPT)
    with pytest.raises(ValueError, match="n=2"):
        run_episodes(policy, ADDITION, [P1], params=SamplingParams(n=2))
    with pytest.raises(ValueError, match="feedback mode"):
        run_episodes(policy, ADDITION, [P1], feedback="oracle")
    with pytest.raises(ValueError, match="turns >= 1"):
        run_episodes(policy, ADDITION, [P1], turns=0)
    done = Turn(Completion("41", (), (), "stop"), "41", False, None)
    with pytest.raises(ValueError, match="without feedback"):
        next_prompt(P1, [done])
    assert Episode(P1, ()).prompt() == "12+30="


def test_runs_on_the_tiny_embedded_format_model(tiny_policy):
    problems = ADDITION.problems("eval", 4, 0)
    episodes = run_episodes(tiny_policy, ADDITION, problems, turns=2, feedback="binary",
                            params=SamplingParams(n=1, max_new_tokens=4, stop=ADDITION.stop), seed=0)
    assert [e.problem for e in episodes] == problems
    for e in episodes:
        assert len(e.turns) in (1, 2) and e.turns[-1].feedback is None
        assert e.tokens == sum(len(t.completion.token_ids) for t in e.turns) > 0
        assert e.messages()[0] == {"role": "user", "content": e.problem.prompt}
