"""Template sets: each format in both sets, which set a policy speaks, a user's override of it
(run config and command line), and the chat judge read over every spelling of its replies."""

import random
from dataclasses import fields, replace
from typing import Sequence

import pytest
import torch

from sharpen.config import ConfigError, load_config
from sharpen.models.base import Completion, SamplingParams
from sharpen.models.formats import (
    CHAT, EMBEDDED, TEMPLATE_SETS, PromptsConfig, TemplateChoiceError, TemplateSet, resolve_templates,
    retry_messages, template_set_for, use_prompts,
)
from sharpen.tasks import get_task
from sharpen.tasks.base import Problem

ADDITION = get_task("addition")
PROBLEM = Problem(id="p", prompt="37+58=", answer="95")
CHAT_PROBLEM = Problem(id="q", prompt=[{"role": "system", "content": "Be brief."},
                                       {"role": "user", "content": "What is 37 + 58?"}], answer="95")


class Scripted:
    """A policy of no known kind that answers from a list, recording every prompt."""

    def __init__(self, answers: Sequence[str]) -> None:
        self.answers, self.prompts = list(answers), []

    def generate(self, prompts, params: SamplingParams) -> list[list[Completion]]:
        self.prompts.extend(prompts)
        text = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return [[Completion(text, (1,) * len(text), (0.0,) * len(text), "stop")] for _ in prompts]


# ---- each format, in both sets ---------------------------------------------------------------


def test_embedded_formats_are_the_trained_ones_unchanged():
    assert EMBEDDED.judge_messages(PROBLEM.prompt, "96") == [{"role": "user", "content": "37+58=96 right?"}]
    assert (EMBEDDED.judge_yes, EMBEDDED.judge_no) == ("yes", "no")
    assert EMBEDDED.compare_messages(PROBLEM.prompt, "96", "95") == [
        {"role": "user", "content": "37+58= A:96 B:95 which?"}]
    assert (EMBEDDED.compare_first, EMBEDDED.compare_second) == ("A", "B")
    assert (EMBEDDED.retry_feedback, EMBEDDED.refine_feedback) == ("wrong", "wrong")
    assert EMBEDDED.neutral_feedback == "check your answer and answer again"
    # debate: the extracted answers, else the stripped text
    assert EMBEDDED.debate_message([(2, " 96", "96"), (3, " no idea ", None)]) == {
        "role": "user", "content": "others: 96, no idea"}


def test_chat_formats_ask_in_natural_language_with_every_answer_in_full():
    long_answer = "Let me add.\n37 + 58: 7 + 8 = 15, carry 1; 3 + 5 + 1 = 9.\nThe answer is 95."
    (judge,) = CHAT.judge_messages(CHAT_PROBLEM.prompt, long_answer)
    assert judge["role"] == "user"
    assert "What is 37 + 58?" in judge["content"] and long_answer in judge["content"]
    assert judge["content"].endswith("Is this answer correct? Answer Yes or No.")
    assert (CHAT.judge_yes, CHAT.judge_no) == ("Yes", "No")
    (compare,) = CHAT.compare_messages(CHAT_PROBLEM.prompt, long_answer, "96")
    text = compare["content"]
    assert text.index("What is 37 + 58?") < text.index(long_answer) < text.index("96") < len(text)
    assert "Answer A:\n" + long_answer in text and "Answer B:\n96" in text
    assert text.endswith("Which answer is correct, A or B?")
    assert CHAT.retry_feedback == "Your answer is incorrect. Please try again."
    assert "incorrect" not in CHAT.neutral_feedback and "correct" not in CHAT.neutral_feedback
    assert CHAT.refine_feedback != CHAT.retry_feedback  # the model judged itself, no oracle spoke


def test_chat_debate_shows_other_agents_full_responses_trimmed_to_the_budget():
    short = "I think 37 + 58 = 95."
    long = "x" * 5000 + " so the answer is 96."
    message = CHAT.debate_message([(1, short, "95"), (3, long, "96")])
    text = message["content"]
    assert message["role"] == "user"
    assert "Agent 1: " + short in text and "Agent 3: …" in text
    assert long not in text and text.count("x") == CHAT.debate_chars - len(" so the answer is 96.")
    assert "so the answer is 96." in text  # the end of a response, where its answer is, is kept
    assert "Agent 3: …wer is 96.\n" in replace(CHAT, debate_chars=10).debate_message([(3, long, "96")])["content"]


@pytest.mark.parametrize("templates", list(TEMPLATE_SETS.values()), ids=list(TEMPLATE_SETS))
def test_every_set_is_valid_and_every_prompt_is_one_user_turn_after_any_prompt(templates):
    assert list(templates.problems()) == []
    for prompt in (PROBLEM.prompt, CHAT_PROBLEM.prompt):
        for messages in (templates.judge_messages(prompt, "95"), templates.compare_messages(prompt, "95", "96")):
            assert [m["role"] for m in messages] == ["user"]
    history = retry_messages(PROBLEM.prompt, ["96"], [templates.retry_feedback])
    assert history[-1] == {"role": "user", "content": templates.retry_feedback}


def test_prompts_config_names_every_format_of_a_template_set():
    assert {f.name for f in fields(TemplateSet)} == set(PromptsConfig.model_fields)


# ---- which set a policy speaks ---------------------------------------------------------------


def test_the_embedded_model_speaks_embedded_and_a_chat_model_chat(tiny_policy, tiny_chat_policy):
    assert template_set_for(tiny_policy) is EMBEDDED
    assert template_set_for(tiny_chat_policy) is CHAT
    assert template_set_for(Scripted(["95"])) is EMBEDDED  # a policy of no known kind: the default
    tiny_chat_policy.tokenizer.chat_template = None  # a base model without a chat template
    assert template_set_for(tiny_chat_policy) is CHAT


def test_an_openai_server_speaks_chat():
    pytest.importorskip("openai")
    from sharpen.models.openai_http import OpenAIPolicy

    policy = OpenAIPolicy("http://127.0.0.1:9/v1", "default")  # nothing is sent until generate
    assert template_set_for(policy) is CHAT
    assert template_set_for(use_prompts(policy, "embedded")) == EMBEDDED


def test_a_users_choice_wins_over_the_rule(tiny_policy):
    assert use_prompts(tiny_policy, None).templates is None  # no choice: the rule decides
    assert template_set_for(tiny_policy) is EMBEDDED
    use_prompts(tiny_policy, {"name": "chat", "retry_feedback": "Try again."})
    assert template_set_for(tiny_policy).retry_feedback == "Try again."
    assert template_set_for(tiny_policy).judge == CHAT.judge
    # formats alone replace those of the policy's own set
    assert resolve_templates(Scripted(["95"]), {"judge": "{question} = {answer}?"}).judge == "{question} = {answer}?"
    assert resolve_templates(Scripted(["95"]), {"judge": "{question} = {answer}?"}).retry_feedback == "wrong"
    with pytest.raises(TemplateChoiceError, match="unknown template set 'chatty'"):
        resolve_templates(tiny_policy, "chatty")
    with pytest.raises(TemplateChoiceError, match=r"prompts.judge: placeholder \{answr\} is not allowed"):
        resolve_templates(tiny_policy, {"judge": "{question}{answr}"})


def test_strategies_and_episodes_use_the_policys_set():
    from sharpen.strategies import build_strategy

    policy = use_prompts(Scripted(["96", "95"]), "chat")
    (result,) = build_strategy("retry", policy=policy, task=ADDITION, turns=2)([PROBLEM])
    assert result.trace[1].prompts == [retry_messages(PROBLEM.prompt, ["96"], [CHAT.retry_feedback])]
    policy = use_prompts(Scripted(["96"]), "chat")
    build_strategy("retry", policy=policy, task=ADDITION, turns=2, feedback="none")([PROBLEM])
    assert policy.prompts[-1][-1]["content"] == CHAT.neutral_feedback
    policy = use_prompts(Scripted(["The answer is 96.", "95"]), "chat")
    (result,) = build_strategy("debate", policy=policy, task=ADDITION, agents=2, rounds=2)([PROBLEM])
    shown = result.trace[1].prompts[0][-1]["content"]
    assert shown == CHAT.debate_message([(2, "The answer is 96.", "96")])["content"]


def test_self_refine_judges_and_re_asks_in_the_policys_set():
    from sharpen.strategies import build_strategy

    class Judging(Scripted):
        def choice_logprobs(self, prompts, choices):
            self.choices = tuple(choices)
            self.judged = prompts
            return torch.tensor([[-3.0, -0.1]] * len(prompts))  # always "No"

    policy = use_prompts(Judging(["96", "95"]), "chat")
    (result,) = build_strategy("self_refine", policy=policy, task=ADDITION, rounds=2)([PROBLEM])
    assert policy.choices == ("Yes", "No")
    assert policy.judged == [CHAT.judge_messages(PROBLEM.prompt, "96")]
    assert result.trace[2].prompts == [retry_messages(PROBLEM.prompt, ["96"], [CHAT.refine_feedback])]


# ---- the run config and the command line -----------------------------------------------------


def load_run(tmp_path, text: str, overrides=()):
    from sharpen.loop import RunConfig

    path = tmp_path / "run.yaml"
    path.write_text(text)
    return load_config(path, RunConfig, list(overrides))


def test_a_run_config_names_a_set_or_replaces_formats(tmp_path):
    assert load_run(tmp_path, "steps: 3\n").prompts is None
    assert load_run(tmp_path, "prompts: chat\n").prompts == PromptsConfig(name="chat")
    assert load_run(tmp_path, "steps: 3\n", ["prompts=embedded"]).prompts == PromptsConfig(name="embedded")
    cfg = load_run(tmp_path, 'prompts:\n  name: chat\n  retry_feedback: "No. Try again."\n  debate_chars: 300\n')
    templates = resolve_templates(Scripted(["95"]), cfg.prompts)
    assert (templates.retry_feedback, templates.debate_chars, templates.judge) == ("No. Try again.", 300, CHAT.judge)


@pytest.mark.parametrize("text, where, problem", [
    ("steps: 3\nprompts: chatty\n", "run.yaml:2: prompts.name", "unknown template set 'chatty'; choose one of: "
                                                                "embedded, chat"),
    ("prompts:\n  name: chat\n  judg: x\n", "run.yaml:3: prompts.judg", "unknown key; known keys there: name, judge"),
    ("prompts:\n  judge: '{question} {answr}'\n", "run.yaml:2: prompts.judge",
     "placeholder {answr} is not allowed; use {answer}, {question}"),
    ("prompts:\n  name: chat\n  compare: 'A: {first} B: {second}'\n", "run.yaml:3: prompts.compare",
     "needs the placeholder(s) {question}"),
    ("prompts:\n  debate: 'others: {responses.__class__}'\n", "run.yaml:2: prompts.debate",
     "placeholder {responses.__class__} is not allowed"),
    ("prompts:\n  name: embedded\n  judge: '{question}{answer} {'\n", "run.yaml:3: prompts.judge",
     "braces do not pair up (Single '{' encountered in format string); write a literal brace as {{ or }}"),
    ("prompts:\n  name: chat\n  judge_no: ' yes'\n", "run.yaml:3: prompts.judge_no",
     "judge_yes and judge_no must be two different non-empty replies, got 'Yes' and ' yes'"),
    ("prompts:\n  debate_chars: 0\n", "run.yaml:2: prompts.debate_chars", "must be at least 1 character"),
])
def test_a_bad_prompts_section_is_an_error_at_its_line(tmp_path, text, where, problem):
    with pytest.raises(ConfigError) as err:
        load_run(tmp_path, text)
    assert f"{where}: {problem}" in str(err.value)


def test_a_run_gives_its_policy_the_configs_templates(tmp_path, tiny_model_dir):
    from sharpen.loop import Trainer

    cfg = load_run(tmp_path, f"model: {tiny_model_dir}\nprompts:\n  name: chat\n  neutral_feedback: Again?\n")
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert template_set_for(trainer.policy) == resolve_templates(None, cfg.prompts)
    assert template_set_for(trainer.policy).neutral_feedback == "Again?"


@pytest.mark.parametrize("argv", [
    ["eval", "--task", "addition", "--problems", "1", "--samples", "1", "--turns", "2"],
    ["compare", "--task", "addition", "--problems", "1", "--strategies", "retry-2"],
])
def test_the_command_line_passes_prompts_to_the_policy(monkeypatch, capsys, argv):
    import sharpen.models
    from sharpen.cli import main

    policies = []

    def load(spec, **_):
        policies.append(Scripted(["no idea"]))
        return policies[-1]

    monkeypatch.setattr(sharpen.models, "load_policy", load)
    assert main(argv + ["--prompts", "chat"]) == 0
    assert policies[0].prompts[-1][-1]["content"] in (CHAT.retry_feedback, CHAT.neutral_feedback)
    assert main(argv) == 0  # without --prompts the policy's own set: this one speaks embedded
    assert policies[1].prompts[-1][-1]["content"] in (EMBEDDED.retry_feedback, EMBEDDED.neutral_feedback)
    assert main(argv + ["--prompts", "chatty"]) == 2
    assert "invalid choice: 'chatty'" in capsys.readouterr().err


# ---- replies read over every spelling, on a real BPE tokenizer ----------------------------------


def favour(policy, text: str):
    """Make `policy` put almost all its mass on the first token of `text` (a logit bias on its
    head); returns the hook's handle."""
    token = policy.tokenizer(text, add_special_tokens=False)["input_ids"][0]
    bias = torch.zeros(policy.model.config.vocab_size)
    bias[token] = 40.0
    return policy.model.lm_head.register_forward_hook(lambda module, args, out: out + bias)


@pytest.mark.parametrize("spelling, p_yes", [("Yes", 1.0), (" yes", 1.0), ("YES", 1.0), ("No", 0.0), (" no", 0.0),
                                             ("NO", 0.0)])
def test_the_chat_judge_reads_every_spelling_of_yes_and_no(tiny_chat_policy, spelling, p_yes):
    from sharpen.signals import build_signal

    judge = build_signal("self_judge", task=ADDITION, policy=tiny_chat_policy)
    assert (judge.templates, judge.yes, judge.no) == (CHAT, "Yes", "No")
    handle = favour(tiny_chat_policy, spelling)
    try:
        (scores,) = judge([CHAT_PROBLEM], [[Completion("95", (), (), "stop")]])
    finally:
        handle.remove()
    assert scores[0] == pytest.approx(p_yes, abs=1e-3)


@pytest.mark.parametrize("spelling, p_first", [("A", 1.0), (" A", 1.0), ("B", 0.0), (" B", 0.0)])
def test_the_chat_compare_reads_every_spelling_of_a_and_b(tiny_chat_policy, spelling, p_first):
    prompt = CHAT.compare_messages(CHAT_PROBLEM.prompt, "95", "96")
    handle = favour(tiny_chat_policy, spelling)
    try:
        logp = tiny_chat_policy.choice_logprobs([prompt], (CHAT.compare_first, CHAT.compare_second))
    finally:
        handle.remove()
    assert logp.softmax(-1)[0, 0].item() == pytest.approx(p_first, abs=1e-3)


# ---- on SmolLM2 (slow) ---------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_answers_the_chat_judge_in_yes_or_no_far_more_than_the_embedded_one():
    """SmolLM2-135M-Instruct speaks chat, and answers the chat judge in its replies' words:
    the first-token mass on every spelling of Yes and No is most of its distribution, against
    a few percent for the embedded "<question><answer> right?". Whether it tells right sums
    from wrong ones is printed, not asserted: measured here it cannot (mean P(yes) 0.146 for
    right answers, 0.145 for wrong ones, on these 40 problems)."""
    from sharpen.models import load_policy
    from sharpen.signals import build_signal

    policy = load_policy("smollm2", device="cpu", progress=False)
    assert template_set_for(policy) is CHAT
    task = get_task("addition", max_operand=20, chat=True)
    problems = task.problems("eval", 40, 0)
    rng = random.Random(0)
    right = [task.solution(p) for p in problems]
    wrong = [str(int(r) + rng.choice([-1, 1]) * rng.randint(1, 9)) for r in right]

    def mass(templates: TemplateSet) -> float:
        """Mean first-token probability of the judge's two replies, over every spelling."""
        prompts = [templates.judge_messages(p.prompt, a) for p, a in zip(problems, right)]
        return policy.choice_logprobs(prompts, (templates.judge_yes, templates.judge_no)).exp().sum(-1).mean().item()

    chat_mass, embedded_mass = mass(CHAT), mass(EMBEDDED)
    judge = build_signal("self_judge", task=task, policy=policy)
    completion = lambda text: Completion(text, (), (), "stop")  # noqa: E731
    scores = judge(problems, [[completion(r), completion(w)] for r, w in zip(right, wrong)])
    p_right = sum(s[0] for s in scores) / len(scores)
    p_wrong = sum(s[1] for s in scores) / len(scores)
    print(f"SmolLM2 chat judge on 40 sums: P(yes | right) {p_right:.3f}, P(yes | wrong) {p_wrong:.3f}, "
          f"right > wrong on {sum(s[0] > s[1] for s in scores)}/40; mass on Yes/No {chat_mass:.3f} "
          f"(embedded format: {embedded_mass:.3f})")
    assert chat_mass > 0.5 and chat_mass > 10 * embedded_mass
    assert all(0.0 < s < 1.0 for pair in scores for s in pair)
