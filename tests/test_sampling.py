"""The sampling loop (sharpen.models.sampling) on real-tokenizer shapes: log-probs against a
separate forward pass, stop strings across token boundaries, rows that ended leaving the batch,
the context length. The same checks on SmolLM2 are marked slow."""

from __future__ import annotations

import pytest
import torch

from sharpen.models import ContextLengthError, SamplingParams
from sharpen.models.sampling import PrefixOffsetDecoder, StopStrings, inverse_cdf_sample, sample_ids, top_k_filter

CHAT_PROMPTS = [
    [{"role": "user", "content": "What is 37 + 58?"}],
    [{"role": "user", "content": "Tell me about Paris."}],
    [{"role": "user", "content": "Is this answer correct? Answer Yes or No."}],
]
ADDITION_PROMPTS = ["37+58=", "4+5=", "12+30="]
SYSTEM = {"role": "system", "content": "Is this answer correct? Answer Yes or No. " * 4}
SHARED_PREFIX_PROMPTS = [[SYSTEM, *p] for p in CHAT_PROMPTS]
"""Prompts that open with the same long system prompt: the prefill runs it once for all."""


# ---- helpers -------------------------------------------------------------------------------------


def forward_logprobs(policy, prompt_ids, completion_ids, temperature: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """log-probs of a completion's tokens from one plain forward pass over prompt + completion
    (no cache, no padding), under the model at `temperature` with top-k applied."""
    full = torch.tensor(list(prompt_ids) + list(completion_ids))
    with torch.no_grad():
        logits = policy.model(input_ids=full[None]).logits[0].float()  # (S, V)
    start, n = len(prompt_ids), len(completion_ids)
    logp = top_k_filter(logits[start - 1 : start - 1 + n] / temperature, top_k).log_softmax(-1)  # (n, V)
    return logp.gather(-1, full[start:, None]).squeeze(-1)  # (n,)


def assert_logprobs_match_a_forward_pass(policy, prompts, params: SamplingParams, atol: float = 2e-5) -> None:
    groups = policy.generate(prompts, params)
    for prompt, group in zip(prompts, groups):
        ids = policy.encode(prompt)
        for c in group:
            assert len(c.token_ids) == len(c.logprobs) == len(c.sampling_logprobs) >= 1
            torch.testing.assert_close(torch.tensor(c.logprobs), forward_logprobs(policy, ids, c.token_ids),
                                       atol=atol, rtol=0)
            behaviour = forward_logprobs(policy, ids, c.token_ids, params.temperature, params.top_k)
            torch.testing.assert_close(torch.tensor(c.sampling_logprobs), behaviour, atol=atol, rtol=0)


def split_stop(policy, token_ids) -> tuple[str, int]:
    """A two-character stop string made of the last character of token j - 1's text and the first
    of token j's, that the text does not hold before token j; and j, the token that completes it."""
    texts = [policy.decode(token_ids[:j]) for j in range(len(token_ids) + 1)]
    for j in range(1, len(token_ids) - 1):
        before, after = texts[j], texts[j + 1]
        if before and len(after) > len(before) and after.startswith(before):
            stop = before[-1] + after[len(before)]
            if stop.isprintable() and stop not in before and all(stop not in policy.decode([t]) for t in token_ids):
                return stop, j
    raise AssertionError(f"no stop string across two tokens in {texts[-1]!r}")


def batch_sizes(policy, monkeypatch) -> list[tuple[int, int]]:
    """(rows, tokens per row) of every forward pass the model runs from now on."""
    seen: list[tuple[int, int]] = []
    forward = policy.model.forward

    def recording(*args, **kwargs):
        seen.append(tuple(kwargs["input_ids"].shape))
        return forward(*args, **kwargs)

    monkeypatch.setattr(policy.model, "forward", recording)
    return seen


def run_with(policy, rows, params, compact_at: float, seed: int = 5):
    tokens: dict[int, list[int]] = {}
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    out = sample_ids(policy, rows, params, generator, lambda r, t: tokens.setdefault(r, []).append(t),
                     compact_at=compact_at)
    return out, tokens


def assert_compaction_changes_no_row(policy, prompts, params, monkeypatch, atol: float = 1e-5) -> None:
    rows = [policy.encode(p) for p in prompts for _ in range(params.n)]
    forwards = batch_sizes(policy, monkeypatch)
    kept, kept_tokens = run_with(policy, rows, params, compact_at=2.0)  # ended rows stay until all end
    kept_sizes = [b for b, tokens in forwards if tokens == 1]  # decoding steps feed one token per row
    forwards.clear()
    compact, compact_tokens = run_with(policy, rows, params, compact_at=0.0)  # they leave at once
    sizes = [b for b, tokens in forwards if tokens == 1]
    lengths = [len(c.token_ids) for c in kept]
    assert min(lengths) < max(lengths) == params.max_new_tokens  # rows end at different steps
    assert set(kept_sizes) == {len(rows)} and sizes == sorted(sizes, reverse=True) and sizes[-1] < len(rows)
    for a, b in zip(kept, compact):
        assert (a.token_ids, a.text, a.finish_reason) == (b.token_ids, b.text, b.finish_reason)
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=atol, rtol=0)
        torch.testing.assert_close(torch.tensor(a.sampling_logprobs), torch.tensor(b.sampling_logprobs),
                                   atol=atol, rtol=0)
        assert [[t for t, _ in top] for top in a.top_logprobs] == [[t for t, _ in top] for top in b.top_logprobs]
    assert kept_tokens == compact_tokens == {r: list(c.token_ids) for r, c in enumerate(kept)}


# ---- pure pieces ---------------------------------------------------------------------------------


def test_inverse_cdf_sampling_picks_the_interval_of_each_uniform():
    log_mu = torch.log(torch.tensor([[0.5, 0.3, 0.2, 0.0]] * 6))  # (6, 4)
    u = torch.tensor([0.0, 0.49, 0.51, 0.79, 0.81, 0.999999])
    assert inverse_cdf_sample(log_mu, u).tolist() == [0, 0, 1, 1, 2, 2]  # never token 3 (probability 0)
    assert inverse_cdf_sample(torch.log(torch.tensor([[0.0, 1.0, 0.0]])), torch.tensor([0.0])).tolist() == [1]
    with pytest.raises(FloatingPointError, match="not finite"):
        inverse_cdf_sample(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0.5]))


def push_one_by_one(tokenizer, text: str, stop: tuple[str, ...], fallback: bool) -> tuple[list[int], int]:
    """Feed `text`'s tokens to StopStrings one at a time; its ids and the index of the token at
    which a stop was reported (the text grown so far is checked at every token)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    stops = StopStrings(tokenizer, stop, rows=2)
    if fallback:  # through tokenizer.batch_decode, as for a tokenizer without a Rust backend
        stops.new_text = PrefixOffsetDecoder(tokenizer, rows=2).push
    for j, token in enumerate(ids):
        hits = stops.push([1], [token])
        whole = tokenizer.decode(ids[: j + 1], skip_special_tokens=True)
        assert whole.startswith(stops.text[1]) and len(whole) - len(stops.text[1]) <= 1  # at most a held character
        if hits:
            assert hits == [1] and not any(s in tokenizer.decode(ids[:j], skip_special_tokens=True) for s in stop)
            return ids, j
    return ids, -1


@pytest.mark.parametrize("fallback", [False, True])
def test_stop_strings_across_byte_level_tokens(tiny_chat_dir, fallback):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_dir)
    ids, at = push_one_by_one(tokenizer, "The quick brown fox. Stop here.", ("x. S",), fallback)
    assert at >= 1 and "x. S" in tokenizer.decode(ids[: at + 1]) and "x. S" not in tokenizer.decode(ids[:at])
    # "é" is two byte tokens here: the first alone decodes to U+FFFD and waits for the second
    ids, at = push_one_by_one(tokenizer, "café Stop", ("é",), fallback)
    assert tokenizer.convert_ids_to_tokens(ids[at - 1 : at + 1]) == ["Ã", "©"]
    assert push_one_by_one(tokenizer, "The quick brown fox.", ("fox!",), fallback)[1] == -1


@pytest.mark.parametrize("fallback", [False, True])
def test_stop_strings_see_sentencepiece_spaces(fallback):
    """A Metaspace ("▁word") tokenizer drops a token's leading space when it is decoded alone, so
    a stop " Stop" is only found in the text decoded with its neighbours."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    corpus = ["the answer is Stop now", "please Stop here and there", "answer now please"] * 8
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=80, special_tokens=["<unk>"], show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>")
    ids = tokenizer("the answer is Stop now", add_special_tokens=False)["input_ids"]
    stop_token = tokenizer.convert_tokens_to_ids("▁Stop")
    assert stop_token in ids and tokenizer.decode([stop_token]) == "Stop"  # alone, its space is gone
    ids, at = push_one_by_one(tokenizer, "the answer is Stop now", (" Stop",), fallback)
    assert ids[at] == stop_token


# ---- the loop on the tiny BPE Llama and the embedded-format model --------------------------------


def test_generation_logprobs_equal_a_separate_forward_pass_on_a_bpe_llama(tiny_chat_policy):
    assert_logprobs_match_a_forward_pass(tiny_chat_policy, CHAT_PROMPTS, SamplingParams(n=3, max_new_tokens=8, seed=1))
    params = SamplingParams(n=2, max_new_tokens=6, seed=2, temperature=0.7, top_k=20)
    assert_logprobs_match_a_forward_pass(tiny_chat_policy, CHAT_PROMPTS, params)


def test_a_shared_prompt_prefix_is_prefilled_once_and_changes_no_logprob(tiny_chat_policy, monkeypatch):
    forwards = batch_sizes(tiny_chat_policy, monkeypatch)
    params = SamplingParams(n=2, max_new_tokens=6, seed=3)
    assert_logprobs_match_a_forward_pass(tiny_chat_policy, SHARED_PREFIX_PROMPTS, params)
    prompts = [tiny_chat_policy.encode(p) for p in SHARED_PREFIX_PROMPTS]
    assert forwards[0][0] == 1 and forwards[1][0] == 3  # the shared prefix alone, then the three rests
    assert forwards[0][1] + forwards[1][1] == max(len(p) for p in prompts)
    forwards.clear()
    assert_logprobs_match_a_forward_pass(tiny_chat_policy, CHAT_PROMPTS, params)
    assert forwards[0][0] == 3  # a short common opening is not worth a pass of its own


def test_a_stop_string_split_across_two_tokens_is_caught(tiny_chat_policy):
    """A seed fixes each row's draws, so the run with the stop string repeats the run without it
    up to the stop."""
    policy = tiny_chat_policy
    prompt = CHAT_PROMPTS[0]
    whole = policy.generate([prompt], SamplingParams(max_new_tokens=24, seed=4))[0][0]
    stop, ends_at = split_stop(policy, whole.token_ids)
    cut = policy.generate([prompt], SamplingParams(max_new_tokens=24, seed=4, stop=(stop,)))[0][0]
    text = policy.decode(whole.token_ids)
    assert cut.finish_reason == "stop"
    assert cut.token_ids == whole.token_ids[: ends_at + 1]  # ends at the token that completed the stop
    assert cut.logprobs == pytest.approx(whole.logprobs[: ends_at + 1], abs=1e-6)
    assert cut.text == text[: text.find(stop)]


@pytest.mark.parametrize("fixture", ["tiny_chat_policy", "tiny_policy"])
def test_rows_that_ended_leaving_the_batch_change_no_row(fixture, request, monkeypatch):
    policy = request.getfixturevalue(fixture)
    if fixture == "tiny_chat_policy":  # random weights: rows end at a stop string or a stop token
        common = policy.tokenizer.convert_tokens_to_ids(["Ġthe", "Ġanswer"])
        params = SamplingParams(n=4, max_new_tokens=10, stop=("e",), stop_token_ids=tuple(common), top_logprobs=3)
        prompts = SHARED_PREFIX_PROMPTS
    else:  # the embedded format ends at its end token
        params = SamplingParams(n=6, max_new_tokens=5, top_logprobs=3)
        prompts = ADDITION_PROMPTS
    assert_compaction_changes_no_row(policy, prompts, params, monkeypatch)


def test_seeded_runs_reproduce_and_draw_on_the_models_device(tiny_chat_policy):
    params = SamplingParams(n=3, max_new_tokens=6, seed=11)
    assert tiny_chat_policy.generator.device == tiny_chat_policy.device
    first = tiny_chat_policy.generate(CHAT_PROMPTS, params)
    tiny_chat_policy.generate(CHAT_PROMPTS, SamplingParams(n=2, max_new_tokens=3))  # moves the policy's stream
    assert tiny_chat_policy.generate(CHAT_PROMPTS, params) == first
    assert tiny_chat_policy.generate(CHAT_PROMPTS, SamplingParams(n=3, max_new_tokens=6, seed=12)) != first


def test_prompt_plus_max_new_tokens_over_the_context_is_a_clear_error(tiny_chat_policy):
    policy = tiny_chat_policy
    limit = policy.model.config.max_position_embeddings
    assert policy.context_length == limit == 256
    prompt = [{"role": "user", "content": "Stop here. " * 40}]
    length = len(policy.encode(prompt))
    assert length < limit
    fits = limit - length
    assert len(policy.generate([prompt], SamplingParams(max_new_tokens=fits, seed=0))[0]) == 1
    with pytest.raises(ContextLengthError) as caught:
        policy.generate(["1+1=", prompt], SamplingParams(max_new_tokens=fits + 1))
    assert str(caught.value) == (
        f"prompt 1 has {length} tokens, and with max_new_tokens {fits + 1} that is {limit + 1}, over the "
        f"model's context length of {limit} tokens: shorten the prompt or lower max_new_tokens"
    )


# ---- the same on SmolLM2 (slow) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_policy():
    from pathlib import Path

    from sharpen.models.hf import HFPolicy

    found = sorted(Path("~/.cache/sharpen/models").expanduser().glob("smollm2-*/config.json"))
    assert found, "SmolLM2 is not built: run `sharpen model smollm2` first"
    return HFPolicy.load(found[-1].parent, device="cpu", seed=0)


SMOLLM2_PROMPTS = [
    [{"role": "user", "content": "What is 13 + 14? Reply with only the number."}],
    [{"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "Write one sentence about the sea."}],
]


@pytest.mark.slow
def test_smollm2_generation_logprobs_equal_a_separate_forward_pass(smollm2_policy):
    params = SamplingParams(n=2, max_new_tokens=12, seed=3, temperature=0.7, top_k=50)
    assert_logprobs_match_a_forward_pass(smollm2_policy, SMOLLM2_PROMPTS, params, atol=1e-4)  # 30 float32 layers


@pytest.mark.slow
def test_smollm2_a_stop_string_split_across_two_tokens_is_caught(smollm2_policy):
    policy, prompt = smollm2_policy, SMOLLM2_PROMPTS[2]
    whole = policy.generate([prompt], SamplingParams(max_new_tokens=24, seed=4))[0][0]
    stop, ends_at = split_stop(policy, whole.token_ids)
    cut = policy.generate([prompt], SamplingParams(max_new_tokens=24, seed=4, stop=(stop,)))[0][0]
    text = policy.decode(whole.token_ids)
    assert cut.finish_reason == "stop" and cut.token_ids == whole.token_ids[: ends_at + 1]
    assert cut.text == text[: text.find(stop)]


@pytest.mark.slow
def test_smollm2_rows_that_ended_leaving_the_batch_change_no_row(smollm2_policy, monkeypatch):
    params = SamplingParams(n=4, max_new_tokens=16, temperature=0.7, top_logprobs=2)
    assert_compaction_changes_no_row(smollm2_policy, SMOLLM2_PROMPTS, params, monkeypatch, atol=1e-4)


@pytest.mark.slow
def test_smollm2_context_length_error(smollm2_policy):
    assert smollm2_policy.context_length == 8192
    prompt = [{"role": "user", "content": "sea " * 8150}]
    length = len(smollm2_policy.encode(prompt))
    with pytest.raises(ContextLengthError, match=f"prompt 0 has {length} tokens.*context length of 8192 tokens"):
        smollm2_policy.generate([prompt], SamplingParams(max_new_tokens=8192 - length + 1))
