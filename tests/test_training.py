"""Training settings of every learner (sharpen.learners.training): fp32 master weights, bf16
autocast on CUDA only, gradient checkpointing (issue 11, point 2). The CUDA path cannot run
here; its logic can: the dtype choice, the cast to fp32, and autocast itself on the CPU."""

from __future__ import annotations

import torch

from sharpen.learners.base import accumulated_step, adamw
from sharpen.learners.training import LoraConfig, TrainingConfig, autocast_dtype, prepare_policy
from sharpen.models import SamplingParams
from sharpen.models.hf import HFPolicy
from sharpen.models.scoring import recomputes_layers

PROMPTS = ["What is 3 + 4?", "What is 10 + 2?"]


def rows(policy):
    groups = policy.generate(PROMPTS, SamplingParams(n=3, max_new_tokens=6, seed=0))
    return ([policy.encode(p) for p, g in zip(PROMPTS, groups) for _ in g],
            [list(c.token_ids) for g in groups for c in g])


def test_forward_passes_run_in_bf16_on_cuda_only():
    assert autocast_dtype("cuda", bf16_supported=True) == torch.bfloat16
    assert autocast_dtype("cuda", bf16_supported=False) is None  # fp32, not fp16 without a loss scaler
    assert autocast_dtype("cpu", bf16_supported=True) is None


def test_master_weights_are_fp32_and_adamw_updates_them(tiny_chat_dir):
    policy = HFPolicy.load(tiny_chat_dir, device="cpu", dtype=torch.bfloat16)  # as HFPolicy.load does on CUDA
    assert {p.dtype for p in policy.model.parameters()} == {torch.bfloat16}
    prepare_policy(policy, TrainingConfig())
    assert {p.dtype for p in policy.model.parameters()} == {torch.float32}
    assert policy.autocast_dtype is None  # CPU: fp32 throughout

    # the CUDA recipe, run on the CPU: bf16 autocast forward, fp32 weights, gradients and AdamW state
    prompts, completions = rows(policy)
    with torch.no_grad():
        fp32 = policy.score_tokens(prompts, completions).logprobs
    policy.autocast_dtype = torch.bfloat16
    optimizer = adamw(policy.model, lr=1e-6)
    before = [p.detach().clone() for p in policy.model.parameters()]

    head_dtypes = set()
    policy.model.get_output_embeddings().register_forward_hook(lambda m, i, out: head_dtypes.add(out.dtype))

    def losses():
        s = policy.score_tokens(prompts, completions)
        assert head_dtypes == {torch.float32}  # the head and the log-probs stay out of autocast
        torch.testing.assert_close(s.logprobs, fp32, atol=0.1, rtol=0.05)  # bf16 decoder, fp32 head
        assert s.logprobs.dtype == torch.float32 and not torch.equal(s.logprobs, fp32)  # it did run in bf16
        yield -(s.logprobs * s.mask).sum() / s.mask.sum(), {}

    step, grad_dtypes = optimizer.step, set()
    optimizer.step = lambda: grad_dtypes.update(p.grad.dtype for p in policy.model.parameters()) or step()
    accumulated_step(policy.model, optimizer, losses(), grad_clip=1.0, lr=1e-6)
    assert grad_dtypes == {torch.float32}
    assert all(p.grad is None for p in policy.model.parameters())  # freed after the step
    assert all(s.dtype == torch.float32 for state in optimizer.state.values() for s in state.values()
               if torch.is_tensor(s) and s.dim())
    moved = [(p - b).abs().max().item() for p, b in zip(policy.model.parameters(), before)]
    assert min(moved) > 0  # every weight took its 1e-6 step; in bf16 these steps round away:
    w = before[0].flatten()[before[0].flatten().abs().argmax()].bfloat16()
    assert (w + 1e-6) == w


def test_gradient_checkpointing_gives_the_same_gradients_with_less_kept(tiny_chat_dir):
    def gradients(checkpointing: bool, lora: bool = False):
        policy = HFPolicy.load(tiny_chat_dir, device="cpu", seed=0)
        torch.manual_seed(0)  # the same adapter initialisation both times
        prepare_policy(policy, TrainingConfig(gradient_checkpointing=checkpointing,
                                              lora=LoraConfig(r=2, alpha=4.0) if lora else None))
        prompts, completions = rows(policy)
        if lora:  # a non-zero adapter, so that it changes the gradients
            with torch.no_grad():
                for name, p in policy.model.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
        policy.model.train()
        assert recomputes_layers(policy.model) == checkpointing
        kept = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t.numel()) or t, lambda t: t):
            s = policy.score_tokens(prompts, completions)
        (s.logprobs * s.mask).sum().backward()
        return [p.grad for p in policy.model.parameters() if p.requires_grad], sum(kept)

    for lora in (False, True):
        plain, plain_kept = gradients(False, lora)
        checkpointed, checkpointed_kept = gradients(True, lora)
        assert checkpointed_kept < plain_kept / 2
        for a, b in zip(checkpointed, plain):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
