"""Scoring without full-vocabulary logits (sharpen.models.scoring), micro-batches, and the
learners' gradient accumulation: the same scores and the same optimizer step whatever the
micro-batch (issue 11, point 2)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sharpen.learners.base import LearnerContext, Sampling, adamw
from sharpen.learners.policy_gradient.learner import PolicyGradient, PolicyGradientConfig
from sharpen.learners.preference.learner import PreferenceConfig, PreferenceLearning
from sharpen.learners.preference.pairs import PreferencePair
from sharpen.learners.self_correction.score import Attempt, Score, ScoreConfig
from sharpen.learners.sft import Example, fine_tune
from sharpen.models import SamplingParams, scoring
from sharpen.models.formats import EMBEDDED, retry_messages
from sharpen.rollouts import Rollout
from sharpen.signals.reward import Reward
from sharpen.tasks import get_task
from sharpen.tasks.base import Problem

PROMPTS = ["37+58=", "4+5=", retry_messages("12+30=", ["41"], [EMBEDDED.retry_feedback])]
TASK = get_task("addition")
HUGE = 10**9


@pytest.fixture(params=["tiny_policy", "tiny_chat_policy"])
def policy(request):
    """The embedded-format tiny model and the tiny Llama with a real BPE tokenizer and chat template."""
    return request.getfixturevalue(request.param)


def plain_scores(policy, prompt, completion, temperature=1.0):
    """log-probs, entropies and self-certainties of one row from the model's full logits."""
    full = torch.tensor([list(prompt) + list(completion)])
    with torch.no_grad():
        logits = policy.model(input_ids=full).logits[0].float() / temperature  # (S, V)
    logp = logits.log_softmax(-1)[len(prompt) - 1 : len(prompt) - 1 + len(completion)]  # (n, V)
    picked = logp.gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    certainty = -math.log(logp.shape[-1]) - logp.mean(-1)
    return picked, entropy, certainty


def sampled_rows(policy, n=3, max_new_tokens=6, seed=0):
    """Rows of (prompt ids, completion ids) sampled from the policy: groups of n per prompt."""
    groups = policy.generate(PROMPTS, SamplingParams(n=n, max_new_tokens=max_new_tokens, seed=seed))
    return [(policy.encode(p), list(c.token_ids)) for p, g in zip(PROMPTS, groups) for c in g]


def test_scores_equal_a_full_logits_forward_pass(policy):
    rows = sampled_rows(policy)
    prompts, completions = [r[0] for r in rows], [r[1] for r in rows]
    for temperature in (1.0, 0.7):
        with torch.no_grad():
            s = policy.score_tokens(prompts, completions, temperature=temperature, extras=True)
        for b, (p, c) in enumerate(rows):
            logp, entropy, certainty = plain_scores(policy, p, c, temperature)
            assert s.mask[b].sum().item() == len(c)
            torch.testing.assert_close(s.logprobs[b, : len(c)], logp, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(s.entropy[b, : len(c)], entropy, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(s.self_certainty[b, : len(c)], certainty, atol=1e-5, rtol=1e-5)
            assert s.logprobs[b, len(c) :].abs().sum() == 0


def test_shared_prompt_pass_equals_one_pass_over_whole_sequences(policy):
    """Groups that share a prompt go through one prompt pass and its KV cache: the same hidden
    states and gradients as the plain concatenated pass (prompts and completions of different
    lengths, one completion empty)."""
    prompts = [policy.encode(p) for p in PROMPTS]
    completions = [[5, 6, 7, 3], [8], [9, 10], [], [11, 12, 13, 14, 3], [6, 3]] * 2
    rows = [prompts[i % 3] for i in range(len(completions))]  # each prompt 4 times
    assert scoring.shares_prompts(rows)
    weight = torch.randn(12, 5, policy.model.config.hidden_size, generator=torch.Generator().manual_seed(0))

    def hidden_and_grads(share: bool):
        policy.model.zero_grad(set_to_none=True)
        hidden = scoring.completion_hidden(policy.model, rows, completions, policy.tokenizer.pad_token_id, share)
        mask = torch.tensor([[1.0] * len(c) + [0.0] * (5 - len(c)) for c in completions])[..., None]
        (hidden * mask * weight).sum().backward()
        return hidden.detach() * mask, [p.grad.clone() for p in policy.model.parameters() if p.grad is not None]

    full, full_grads = hidden_and_grads(False)
    shared, shared_grads = hidden_and_grads(True)
    assert full.shape == (12, 5, policy.model.config.hidden_size)
    torch.testing.assert_close(shared, full, atol=1e-5, rtol=1e-4)
    assert len(shared_grads) == len(full_grads) > 0
    for a, b in zip(shared_grads, full_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert scoring.forward_positions(rows, completions) == 3 * max(map(len, prompts)) + 12 * 4
    assert scoring.forward_positions(rows, completions, share=False) == 12 * max(
        len(p) + len(c) for p, c in zip(rows, completions))


def big_vocab_model(vocab: int = 4096) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64, pad_token_id=0)
    return LlamaForCausalLM(config)


def saved_shapes(fn) -> list[tuple[int, ...]]:
    """Shapes of the tensors autograd keeps for backward while `fn` runs."""
    shapes = []

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return shapes


def test_backward_keeps_hidden_states_not_vocabulary_logits(monkeypatch):
    """With a gradient, no (…, V) tensor is kept for backward, and no logits exist at prompt
    positions; the same hook sees the (B, S, V) logits of a plain forward pass."""
    V = 4096
    model = big_vocab_model(V)
    prompts = [[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14, 15, 16]] * 4
    completions = [[20 + i, 30 + i, 40 + i, 50 + i] for i in range(8)]
    monkeypatch.setattr(scoring, "HEAD_CHUNK_LOGITS", 5 * V)  # several chunks of 5 positions

    def score():
        s = scoring.score_rows(model, prompts, completions, pad_id=0, extras=True)
        s.logprobs.sum().backward()

    assert not [s for s in saved_shapes(score) if s[-1] == V]
    assert any(s[-1] == V for s in saved_shapes(lambda: model(input_ids=torch.tensor(prompts)).logits.sum().backward()))

    heads = []
    original = scoring._chunk_scores
    monkeypatch.setattr(scoring, "_chunk_scores", lambda head, hidden, *a: heads.append(hidden.shape[0])
                        or original(head, hidden, *a))
    with torch.no_grad():
        scoring.score_rows(model, prompts, completions, pad_id=0)
    assert sum(heads) == 8 * 4 and max(heads) == 5  # completion positions only, 5 at a time


def test_chunked_head_gives_the_same_scores_and_gradients(policy, monkeypatch):
    rows = sampled_rows(policy)
    prompts, completions = [r[0] for r in rows], [r[1] for r in rows]

    def run():
        policy.model.zero_grad(set_to_none=True)
        s = policy.score_tokens(prompts, completions, extras=True)
        (s.logprobs * torch.linspace(0.5, 1.5, s.logprobs.numel()).view_as(s.logprobs)).sum().backward()
        return s, [p.grad.clone() for p in policy.model.parameters()]

    whole, whole_grads = run()
    V = policy.model.get_output_embeddings().weight.shape[0]
    monkeypatch.setattr(scoring, "HEAD_CHUNK_LOGITS", 3 * V)  # three positions per chunk
    chunked, chunked_grads = run()
    for name in ("logprobs", "entropy", "self_certainty"):
        torch.testing.assert_close(getattr(chunked, name), getattr(whole, name), atol=1e-6, rtol=1e-6)
    for a, b in zip(chunked_grads, whole_grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_micro_batches_bound_positions_and_keep_units_and_groups_together():
    prompts = [[1, 2, 3]] * 4 + [[4, 5]] * 4 + [[6]]
    completions = [[7] * n for n in (2, 3, 4, 5, 1, 1, 2, 6, 3)]
    units = [[0, 4], [1, 5], [2, 6], [3, 7], [8]]
    for budget in (1, 8, 16, 30, HUGE):
        parts = scoring.micro_batches(prompts, completions, budget, units)
        assert sorted(i for p in parts for i in p) == list(range(9))
        for part in parts:
            cost = scoring.forward_positions([prompts[i] for i in part], [completions[i] for i in part])
            assert cost <= budget or any(sorted(part) == sorted(u) for u in units)  # over only as one unit
            for u in units:
                assert set(u) <= set(part) or not set(u) & set(part)
    assert scoring.micro_batches(prompts, completions, HUGE, units) == [[0, 4, 1, 5, 2, 6, 3, 7, 8]]
    rows = scoring.micro_batches(prompts, completions, 20)  # rows alone: a group's rows stay adjacent
    assert [i for p in rows for i in p] == list(range(9))
    assert all(len({tuple(prompts[i]) for i in p}) <= 2 for p in rows)


def test_micro_batches_are_filled_greedily_in_group_order():
    """Each micro-batch takes units until the next would exceed the budget (`forward_positions`
    of the rows so far, counted row by row), whatever mix of shared and full passes that gives."""
    rng = torch.Generator().manual_seed(0)
    prompts = [[int(t) for t in torch.randint(1, 50, (int(n),), generator=rng)] for n in torch.randint(1, 12, (6,), generator=rng)]
    rows = [prompts[int(i)] for i in torch.randint(0, 6, (40,), generator=rng)]
    completions = [[7] * int(n) for n in torch.randint(0, 9, (40,), generator=rng)]
    for share in (True, False):
        for budget in (1, 20, 50, 120, 400, HUGE):
            parts = scoring.micro_batches(rows, completions, budget, share=share)
            order = [i for part in parts for i in part]
            assert sorted(order) == list(range(40))
            for part, after in zip(parts, parts[1:]):
                cost = scoring.forward_positions([rows[i] for i in part], [completions[i] for i in part], share)
                assert cost <= budget or len(part) == 1
                grown = part + after[:1]
                assert scoring.forward_positions([rows[i] for i in grown], [completions[i] for i in grown], share) > budget


def test_micro_batched_scoring_without_gradient_equals_one_pass(policy):
    rows = sampled_rows(policy, n=4)
    prompts, completions = [r[0] for r in rows], [r[1] for r in rows]
    with torch.no_grad():
        policy.micro_batch_tokens = HUGE
        whole = policy.score_tokens(prompts, completions, extras=True)
        policy.micro_batch_tokens = 12
        assert len(policy.micro_batches(prompts, completions)) > 3
        parts = policy.score_tokens(prompts, completions, extras=True)
    for name in ("logprobs", "mask", "entropy", "self_certainty"):
        torch.testing.assert_close(getattr(parts, name), getattr(whole, name), atol=1e-5, rtol=1e-5)


def test_a_model_whose_logits_are_not_its_head_is_refused():
    model = big_vocab_model(64)
    model.config.final_logit_softcapping = 2.0  # the config says so, the forward does not: not LlamaForCausalLM's
    with pytest.raises(ValueError, match="model type 'llama'.*not its output embeddings"):
        scoring.output_head(model)


def test_softcapped_logits_are_scored_as_the_model_gives_them():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    model = Gemma2ForCausalLM(Gemma2Config(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, final_logit_softcapping=1.5, max_position_embeddings=32, pad_token_id=0,
    ))
    prompt, completion = [1, 2, 3], [4, 5, 6]
    with torch.no_grad():
        s = scoring.score_rows(model, [prompt], [completion], pad_id=0)
        logp = model(input_ids=torch.tensor([prompt + completion])).logits[0].log_softmax(-1)
    expected = logp[2:5].gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)
    torch.testing.assert_close(s.logprobs[0], expected, atol=1e-5, rtol=1e-5)


# ---- gradient accumulation in the learners ----------------------------------------------------


def step_gradients(optimizer, run, policy, budget: int):
    """The gradient of the next optimizer step (the step itself is skipped) with micro-batches
    of at most `budget` positions, and what `run` returned."""
    policy.micro_batch_tokens = budget
    seen = []
    optimizer.step = lambda *a, **k: seen.append(
        [p.grad.clone() for p in policy.model.parameters() if p.grad is not None])
    result = run()
    assert len(seen) == 1
    return seen[0], result


def assert_same_step(optimizer, run, policy, budget=10):
    """The step (gradients and diagnostics) with micro-batches of `budget` positions equals the
    one with a single pass; the budget does split the batch."""
    whole, whole_out = step_gradients(optimizer, run, policy, HUGE)
    parts, parts_out = step_gradients(optimizer, run, policy, budget)
    assert len(whole) == len(parts) > 0 and any(bool(g.abs().sum() > 0) for g in whole)
    for a, b in zip(parts, whole):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    if isinstance(whole_out, dict):
        timing = ("seconds", "tokens_per_s")
        for k, v in whole_out.items():
            if not any(t in k for t in timing):
                assert parts_out[k] == pytest.approx(v, rel=1e-4, abs=1e-5), k


def context(policy, group_size: int = 3, temperature: float = 1.0) -> LearnerContext:
    reward = Reward.from_specs([("correctness", 1.0)], task=TASK, policy=policy)
    return LearnerContext(policy, TASK, reward, None, Sampling(group_size, temperature, 1.0, 6, ()),
                          total_steps=1, seed=0)


@pytest.mark.parametrize("aggregation,kl_coef,weighting", [
    ("token_mean", 0.0, "none"), ("seq_mean", 0.1, "topr"), ("constant", 0.0, "w_reinforce"),
])
def test_policy_gradient_step_is_the_same_whatever_the_micro_batches(policy, aggregation, kl_coef, weighting):
    groups = policy.generate(PROMPTS, SamplingParams(n=3, max_new_tokens=6, seed=1, temperature=0.8))
    rng = torch.Generator().manual_seed(0)
    rollouts = [Rollout(Problem(f"p{i}", p, "0"), policy.encode(p), g,
                        torch.rand(3, generator=rng).round().tolist(), {"correctness": [0.0] * 3})
                for i, (p, g) in enumerate(zip(PROMPTS, groups))]
    for r in rollouts:
        r.rewards[0] = 1.0 - r.rewards[1]  # a spread in every group
    pg = PolicyGradient(context(policy, temperature=0.8), PolicyGradientConfig(
        minibatches=1, epochs=1, aggregation=aggregation, kl_coef=kl_coef, weighting=weighting, grad_clip=1e9,
        schedule="constant"))
    prompt_ids = [r.prompt_ids for r in rollouts for _ in r.completions]
    completion_ids = [c.token_ids for r in rollouts for c in r.completions]
    policy.micro_batch_tokens = 10
    assert len(policy.micro_batches(prompt_ids, completion_ids)) > 3
    assert_same_step(pg.optimizer, lambda: pg.update(rollouts), policy)


def test_sft_step_is_the_same_whatever_the_micro_batches(policy):
    examples = [Example(tuple(p), tuple(c), w) for (p, c), w in zip(sampled_rows(policy), [1.0, 0.5, 2.0] * 3)]
    optimizer = adamw(policy.model, 1e-3)
    assert_same_step(optimizer, lambda: fine_tune(policy, optimizer, examples, epochs=1, batch_size=len(examples),
                                                  lr=1e-3, grad_clip=1e9, seed=0), policy)


def test_preference_step_is_the_same_whatever_the_micro_batches(policy):
    groups = policy.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=6, seed=2))
    pairs = [PreferencePair(Problem(f"p{i}", p, "0"), g[0], g[1], w)
             for i, (p, g, w) in enumerate(zip(PROMPTS, groups, (1.0, 0.3, 2.0)))]
    for loss in ("dpo", "irpo"):
        learner = PreferenceLearning(context(policy), PreferenceConfig(
            kind="preference", loss=loss, reference="base", batch_size=8, grad_clip=1e9))
        assert_same_step(learner.optimizer, lambda: learner.train(pairs, 1), policy)


def test_score_step_is_the_same_whatever_the_micro_batches(policy):
    groups = policy.generate(PROMPTS[:2], SamplingParams(n=3, max_new_tokens=6, seed=3))
    first = [c for g in groups for c in g]
    prompts1 = [policy.encode(p) for p in PROMPTS[:2] for _ in range(3)]
    prompts2 = [policy.encode(retry_messages(PROMPTS[i // 3], [c.text], [EMBEDDED.retry_feedback])) for i, c in
                enumerate(first)]
    second = [g[0] for g in policy.generate([retry_messages(PROMPTS[i // 3], [c.text], [EMBEDDED.retry_feedback])
                                             for i, c in enumerate(first)], SamplingParams(max_new_tokens=5, seed=3))]
    learner = Score(context(policy), ScoreConfig(kind="score", kl_coef=0.1, grad_clip=1e9))
    attempts = [Attempt(prompts1, first, torch.linspace(-1, 1, 6), 0.5),
                Attempt(prompts2, second, torch.linspace(1, -1, 6), 0.1)]
    assert_same_step(learner.optimizer, lambda: learner.update(attempts), policy)


def test_the_default_micro_batch_fits_the_activation_budget_by_depth_and_width():
    from types import SimpleNamespace

    from sharpen.models.scoring import (
        ACTIVATION_BUDGET_BYTES, DEFAULT_MICRO_BATCH_TOKENS, default_micro_batch_tokens,
    )

    smollm2 = SimpleNamespace(num_hidden_layers=30, hidden_size=576)
    per_position = 4 * 36 * 30 * 576  # ≈ 2.5 MB, as measured on SmolLM2-135M
    n = default_micro_batch_tokens(smollm2)
    assert n * per_position <= ACTIVATION_BUDGET_BYTES < (n + 1) * per_position
    assert default_micro_batch_tokens(SimpleNamespace(num_hidden_layers=4, hidden_size=128)) > 16 * 8 * 32
    assert default_micro_batch_tokens(SimpleNamespace(num_hidden_layers=80, hidden_size=8192)) == 64  # a floor
    assert default_micro_batch_tokens(SimpleNamespace()) == DEFAULT_MICRO_BATCH_TOKENS  # depth and width unknown
