"""The transformers policy and the embedded default model's format."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sharpen.models import SamplingParams
from sharpen.models.embedded import ConversationEncoder, build_tokenizer, corrupt, ensure_default_model, model_dir
from sharpen.models.formats import EMBEDDED, retry_messages
from sharpen.models.sampling import min_p_filter, top_k_filter, top_p_filter

PROMPTS = ["37+58=", "4+5=", retry_messages("12+30=", ["41"], [EMBEDDED.retry_feedback])]


def test_default_model_loads_through_auto_classes(tiny_model_dir, tiny_cache):
    assert tiny_model_dir.parent.parent == tiny_cache  # <cache>/models/default-<recipe key>
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "llama"
    assert tokenizer.chat_template
    text = tokenizer.apply_chat_template([{"role": "user", "content": "1+2="}], add_generation_prompt=True,
                                         tokenize=False)
    assert text == "<|user|>1+2=<|assistant|>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["<|user|>", "1", "+", "2", "=", "<|assistant|>"]
    assert model(input_ids=torch.tensor([ids])).logits.shape == (1, len(ids), len(tokenizer))


def test_build_is_deterministic_and_cached(tiny_model_dir, tiny_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("SHARPEN_CACHE", str(tmp_path))
    again = ensure_default_model(tiny_recipe, progress=False)
    assert again == model_dir(tiny_recipe) != tiny_model_dir
    first = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    second = AutoModelForCausalLM.from_pretrained(again).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    stamp = (again / "config.json").stat().st_mtime_ns
    assert ensure_default_model(tiny_recipe, progress=False) == again
    assert (again / "config.json").stat().st_mtime_ns == stamp  # second call reuses the cache


def test_conversation_encoder_matches_chat_template():
    tokenizer = build_tokenizer()
    encode = ConversationEncoder(tokenizer)
    messages = retry_messages("37+58=", ["96"], [EMBEDDED.retry_feedback]) + [{"role": "assistant", "content": "95"}]
    ids, mask = encode(messages)
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    learned = tokenizer.decode([i for i, m in zip(ids, mask) if m])
    assert learned == "96<|end|>95<|end|>"  # both assistant turns and their end tokens


def test_judge_and_retry_formats():
    assert EMBEDDED.judge_messages("3+4=", "7") == [{"role": "user", "content": "3+4=7 right?"}]
    assert [m["role"] for m in PROMPTS[2]] == ["user", "assistant", "user"]
    with pytest.raises(ValueError, match="2 attempts but 1"):
        retry_messages("1+1=", ["3", "4"], ["wrong"])


def test_pairwise_format_and_its_training_examples():
    import random

    from sharpen.models.embedded import MixturePart, example
    from sharpen.tasks import get_task

    assert EMBEDDED.compare_messages("3+4=", "7", "8") == [{"role": "user", "content": "3+4= A:7 B:8 which?"}]
    task = get_task("addition", digits=2)
    rng = random.Random(0)
    verdicts = []
    for problem in task.problems("train", 200, 0):
        (ask, reply) = example(MixturePart("compare", "addition", {"digits": 2}), task, problem, rng, noise=0.6)
        shown = ask["content"].removeprefix(problem.prompt + " A:").removesuffix(" which?").split(" B:")
        right = shown.index(problem.answer)  # the reference is one of the two answers shown, exactly once
        assert shown.count(problem.answer) == 1 and reply == {"role": "assistant", "content": "AB"[right]}
        verdicts.append(reply["content"])
    assert 0.4 < verdicts.count("A") / len(verdicts) < 0.6  # the right answer is first or second at random


def test_corrupt_changes_exactly_one_digit():
    import random

    rng = random.Random(0)
    for _ in range(200):
        out = corrupt("7+8=15|95", rng)
        assert sum(a != b for a, b in zip(out, "7+8=15|95")) == 1 and out != "7+8=15|95"
    assert corrupt("abc", rng) == "abc"


def test_generation_logprobs_equal_a_separate_forward_pass(tiny_policy):
    groups = tiny_policy.generate(PROMPTS, SamplingParams(n=3, max_new_tokens=6, seed=1))
    assert [len(g) for g in groups] == [3, 3, 3]
    flat = [(tiny_policy.encode(p), c) for p, g in zip(PROMPTS, groups) for c in g]
    with torch.no_grad():
        scores = tiny_policy.score_tokens([f[0] for f in flat], [f[1].token_ids for f in flat])
    for row, (_, c) in enumerate(flat):
        n = len(c.token_ids)
        assert n == len(c.logprobs) >= 1
        assert scores.mask[row].sum().item() == n
        torch.testing.assert_close(scores.logprobs[row, :n], torch.tensor(c.logprobs), atol=1e-5, rtol=0)
        # and against a plain unbatched forward pass with no cache and no padding
        full = torch.tensor([f for f in flat[row][0]] + list(c.token_ids))
        with torch.no_grad():
            logp = tiny_policy.model(input_ids=full[None]).logits[0].log_softmax(-1)
        start = len(flat[row][0])
        plain = logp[start - 1 : start - 1 + n].gather(-1, full[start:, None]).squeeze(-1)
        torch.testing.assert_close(plain, torch.tensor(c.logprobs), atol=1e-5, rtol=0)


def test_sampling_is_reproducible_for_a_seed(tiny_policy):
    params = SamplingParams(n=4, max_new_tokens=5, seed=7)
    assert tiny_policy.generate(PROMPTS, params) == tiny_policy.generate(PROMPTS, params)
    other = tiny_policy.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=5, seed=8))
    assert other != tiny_policy.generate(PROMPTS, params)


def test_finish_reasons_and_stop_strings(tiny_policy):
    eos = tiny_policy.tokenizer.eos_token_id
    groups = tiny_policy.generate(PROMPTS, SamplingParams(n=8, max_new_tokens=4, seed=3))
    for c in (c for g in groups for c in g):
        if c.finish_reason == "length":
            assert len(c.token_ids) == 4 and eos not in c.token_ids
        else:
            assert c.token_ids[-1] == eos and c.finish_reason == "stop"
    # greedy decoding, then stop on a string the greedy text contains
    greedy = tiny_policy.generate(["37+58="], SamplingParams(max_new_tokens=6, temperature=0))[0][0]
    text = tiny_policy.decode(greedy.token_ids)
    stop = text[2:4] if len(text) >= 4 else None
    if stop:
        cut = tiny_policy.generate(["37+58="], SamplingParams(max_new_tokens=6, temperature=0, stop=(stop,)))[0][0]
        assert cut.finish_reason == "stop"
        assert cut.text == text[: text.find(stop)]
        assert stop in tiny_policy.decode(cut.token_ids) and len(cut.token_ids) <= len(greedy.token_ids)


def test_top_p_filter_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = top_p_filter(logits, 0.8).isfinite()
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 + 0.3 reaches 0.8
    assert top_p_filter(logits, 0.81).isfinite().tolist() == [[True, True, True, False]]
    assert torch.equal(top_p_filter(logits, 1.0), logits)


def test_top_k_and_min_p_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert top_k_filter(logits, 2).isfinite().tolist() == [[True, True, False, False]]
    assert torch.equal(top_k_filter(logits, 0), logits)
    assert min_p_filter(logits, 0.3).isfinite().tolist() == [[True, True, True, False]]  # 0.15 >= 0.3 * 0.5
    assert min_p_filter(logits, 0.7).isfinite().tolist() == [[True, False, False, False]]
    assert torch.equal(min_p_filter(logits, 0.0), logits)


def test_on_token_sees_every_token_and_top_logprobs_hold_the_sampled_one(tiny_policy):
    seen: dict = {}
    params = SamplingParams(n=2, max_new_tokens=6, seed=4, top_logprobs=4, top_k=50)
    groups = tiny_policy.generate(PROMPTS[:2], params, on_token=lambda row, t: seen.setdefault(row, []).append(t))
    flat = [c for g in groups for c in g]
    assert [tuple(seen[row]) for row in range(len(flat))] == [c.token_ids for c in flat]
    for c in flat:
        assert len(c.top_logprobs) == len(c.token_ids)
        for token, logprob, top in zip(c.token_ids, c.logprobs, c.top_logprobs):
            values = [v for _, v in top]
            assert len(top) == 4 and values == sorted(values, reverse=True)
            if token in dict(top):
                assert dict(top)[token] == pytest.approx(logprob)
            else:
                assert logprob <= values[-1] + 1e-6


def test_choice_logprobs_and_self_certainty_match_a_forward_pass(tiny_policy):
    prompts = [EMBEDDED.judge_messages("3+4=", "7"), EMBEDDED.judge_messages("10+20=", "31")]
    got = tiny_policy.choice_logprobs(prompts, ("yes", "no"))
    tok = tiny_policy.tokenizer
    yes = [tok.convert_tokens_to_ids(c) for c in ("y", "Y")]  # " yes" starts with " ", as " no" does: left out
    no = [tok.convert_tokens_to_ids(c) for c in ("n", "N")]
    assert tiny_policy.choice_token_ids(("yes", "no")) == [sorted(yes), sorted(no)]
    for row, p in enumerate(prompts):
        ids = torch.tensor([tiny_policy.encode(p)])
        with torch.no_grad():
            logp = tiny_policy.model(input_ids=ids).logits[0, -1].log_softmax(-1)
        expected = torch.stack([logp[yes].logsumexp(-1), logp[no].logsumexp(-1)])
        torch.testing.assert_close(got[row], expected, atol=1e-5, rtol=0)
    completion = tiny_policy.generate(["3+4="], SamplingParams(max_new_tokens=3, seed=0))[0][0]
    with torch.no_grad():
        s = tiny_policy.score_tokens([tiny_policy.encode("3+4=")], [completion.token_ids], extras=True)
        full = torch.tensor([tiny_policy.encode("3+4=") + list(completion.token_ids)])
        logp = tiny_policy.model(input_ids=full).logits[0].log_softmax(-1)
    start, V = len(tiny_policy.encode("3+4=")), logp.shape[-1]
    for t in range(len(completion.token_ids)):
        row = logp[start - 1 + t]
        assert s.self_certainty[0, t].item() == pytest.approx(-math.log(V) - row.mean().item(), abs=1e-4)
        assert s.entropy[0, t].item() == pytest.approx(-(row.exp() * row).sum().item(), abs=1e-4)


def test_sampling_params_validate():
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="n must be"):
        SamplingParams(n=0)


def test_the_judge_reads_yes_in_every_spelling_with_a_bpe_tokenizer():
    """A tiny random Llama with a byte-level BPE trained here: "Yes", " yes" and "YES" all count."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from sharpen.models.hf import HFPolicy, spellings

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    corpus = ["Yes, it is.", "yes", "YES!", "No, it is not.", "no", "NO", "Is 3+4=7 right? Yes", " yes no"] * 10
    core.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|end|>"],
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|end|>", pad_token="<|end|>")
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)).eval()
    policy = HFPolicy(model, tokenizer)
    assert spellings("yes") == ["yes", "YES", "Yes", " yes", " YES", " Yes"]
    yes, no = policy.choice_token_ids(("yes", "no"))
    for word in ("Yes", " yes", "YES", "yes"):
        assert tokenizer(word, add_special_tokens=False)["input_ids"][0] in yes, word
    assert len(set(yes)) >= 4 and not set(yes) & set(no)
    prompt = [{"role": "user", "content": "Is 3+4=7 right?"}]
    got = policy.choice_logprobs([prompt], ("yes", "no"))[0]
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([policy.encode(prompt)])).logits[0, -1].log_softmax(-1)
    torch.testing.assert_close(got, torch.stack([logp[yes].logsumexp(-1), logp[no].logsumexp(-1)]))
