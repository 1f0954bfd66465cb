"""The tiny chat Llama fixture has the shape of a real instruct checkpoint."""

from sharpen.models.base import SamplingParams


def test_tiny_chat_tokenizer_has_multi_character_tokens_and_a_chat_template(tiny_chat_policy):
    tok = tiny_chat_policy.tokenizer
    ids = tok("Is this answer correct? Answer Yes or No.", add_special_tokens=False)["input_ids"]
    assert len(ids) < len("Is this answer correct? Answer Yes or No.") / 2
    assert tok.decode(ids) == "Is this answer correct? Answer Yes or No."
    rendered = tiny_chat_policy.render("What is 2 + 2?")
    assert rendered == "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n"


def test_tiny_chat_policy_samples_seeded_completions(tiny_chat_policy):
    params = SamplingParams(n=3, max_new_tokens=6, temperature=1.0, seed=1)
    first = tiny_chat_policy.generate(["Hello"], params)[0]
    again = tiny_chat_policy.generate(["Hello"], params)[0]
    assert [c.token_ids for c in first] == [c.token_ids for c in again]
    assert all(1 <= len(c.token_ids) <= 6 for c in first)
