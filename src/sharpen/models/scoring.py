"""Token log-probs of given completions, without full-vocabulary logits for whole sequences.

For B rows (prompt x_b, completion y_b) the scores are (B, T) tensors, T the longest completion:

    hidden     the decoder's last hidden states at the N positions that predict a completion
               token (`completion_hidden`; prompt positions and padding give none)    (N, H)
    head       z = lm_head(h) in chunks of at most HEAD_CHUNK_LOGITS logits            (n, V)
               log π(y_t) = (z[y_t] − logsumexp z) at the scoring temperature
    backward   each chunk's logits are recomputed from its hidden states
               (torch.utils.checkpoint), so a backward pass keeps (N, H), never (N, V)
               (not when V ≤ H, where the logits take no more than the hidden states)
    extras     entropy and self-certainty from the same chunk's logits, without gradient

Two passes compute the hidden states:
    shared prompt   when rows repeat prompts (the G completions of a problem), one pass per
                    distinct prompt, its KV cache (with its gradient) gathered to its rows, then
                    one pass over the completions: U·L + B·(T − 1) positions instead of B·(L + T)
    full sequence   one pass over each prompt + completion, right-padded (also whenever the
                    model recomputes its layers in backward, gradient checkpointing: a KV cache
                    does not survive the recompute)

Memory grows with the positions a pass computes; `micro_batches` splits rows into micro-batches
of at most `max_tokens` of them (a group's rows kept together so that they share their prompt
pass). Scoring without gradient does so itself; a learner backpropagates one micro-batch at a
time (`sharpen.learners.base.accumulated_step`).
"""

from __future__ import annotations

import inspect
import math
import weakref
from contextlib import nullcontext
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from sharpen.models.base import TokenScores

HEAD_CHUNK_LOGITS = 1 << 22
"""Logits computed at once by the head (16 MB in fp32; 85 positions of a 49,152-token vocabulary)."""
DEFAULT_MICRO_BATCH_TOKENS = 512
"""Forward positions per micro-batch of a model whose config does not give its depth and width."""
ACTIVATION_BUDGET_BYTES = 640 * 2**20
"""What a micro-batch's activations kept for backward may take by default (`micro_batch_tokens`)."""
ACTIVATION_FLOATS_PER_LAYER_WIDTH = 36
"""fp32 values a decoder layer keeps for backward per position, in units of its width: 2.5 MB
per position measured on SmolLM2-135M (30 layers, width 576) is 36 × 30 × 576 × 4 bytes."""


def default_micro_batch_tokens(config) -> int:
    """Forward positions per micro-batch whose activations fit `ACTIVATION_BUDGET_BYTES` by the
    model's depth and width: 269 on SmolLM2-135M (≈ 0.65 GB kept for backward), the whole
    quickstart batch on the embedded model; at least 64."""
    layers, width = getattr(config, "num_hidden_layers", None), getattr(config, "hidden_size", None)
    if not isinstance(layers, int) or not isinstance(width, int) or layers < 1 or width < 1:
        return DEFAULT_MICRO_BATCH_TOKENS
    per_position = 4 * ACTIVATION_FLOATS_PER_LAYER_WIDTH * layers * width
    return max(64, ACTIVATION_BUDGET_BYTES // per_position)


LOGIT_TRANSFORMS: dict[str, Callable[[Tensor, float], Tensor]] = {
    "final_logit_softcapping": lambda z, cap: torch.tanh(z / cap) * cap,  # Gemma 2 and 3
    "logit_scale": lambda z, scale: z * scale,  # Cohere
    "logits_scaling": lambda z, scale: z / scale,  # Granite
}
"""config attribute → what the model's forward does to lm_head's output when the attribute is set."""

_heads: "weakref.WeakKeyDictionary[torch.nn.Module, Callable[[Tensor], Tensor]]" = weakref.WeakKeyDictionary()


# ---- the head ----------------------------------------------------------------------------------


def output_head(model) -> Callable[[Tensor], Tensor]:
    """hidden states (…, H) → the logits (…, V) the model's own forward would give.

    The output embeddings, then the logit transform the config declares (`LOGIT_TRANSFORMS`).
    Checked once per model against its forward on a few tokens: an architecture that does
    something else to its logits is an error here, not silently wrong scores. Under autocast the
    head still runs in its weights' dtype (fp32 when training).
    """
    head = _heads.get(model)
    if head is not None:
        return head
    linear = model.get_output_embeddings()
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    transforms = [(LOGIT_TRANSFORMS[name], value) for name in LOGIT_TRANSFORMS
                  if (value := getattr(config, name, None)) not in (None, 0, 0.0, 1, 1.0)]

    def head(hidden: Tensor) -> Tensor:
        # in the head's own dtype, outside autocast: fp32 logits from fp32 master weights, so that
        # training log-probs are not rounded to bf16 (the importance ratios compare them to the sampler's)
        with torch.autocast(hidden.device.type, enabled=False):
            z = linear(hidden.to(linear.weight.dtype))
        for transform, value in transforms:
            z = transform(z, value)
        return z

    ids = torch.tensor([[0, 1, 2]], device=linear.weight.device)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()  # no dropout (a LoRA adapter's) between the two passes
    try:
        with torch.no_grad():
            expected = model(input_ids=ids).logits.float()  # (1, 3, V)
            got = head(model.get_decoder()(input_ids=ids).last_hidden_state).float()  # (1, 3, V)
    finally:
        for m, training in modes:
            m.training = training
    if not torch.allclose(got, expected, atol=1e-4, rtol=1e-3):
        raise ValueError(
            f"model type {config.model_type!r}: its logits are not its output embeddings applied to its last hidden "
            f"states (off by {(got - expected).abs().max().item():.3g}), with the transforms sharpen knows "
            f"({', '.join(LOGIT_TRANSFORMS)}); scoring cannot use it until its transform is in "
            "sharpen.models.scoring.LOGIT_TRANSFORMS"
        )
    _heads[model] = head
    return head


def _chunk_scores(head, hidden: Tensor, targets: Tensor, temperature: float, extras: bool) -> tuple[Tensor, ...]:
    """log π(target) of n positions, and with `extras` their entropy and self-certainty (no gradient)."""
    z = head(hidden).float() / temperature  # (n, V)
    logz = z.logsumexp(-1)  # (n,)
    logp = z.gather(-1, targets[:, None]).squeeze(-1) - logz  # (n,)
    if not extras:
        return (logp,)
    with torch.no_grad():
        p = (z - logz[:, None]).exp()  # (n, V)
        entropy = logz - (p * z).sum(-1)  # (n,)  H = logsumexp z − Σ_j p_j z_j
        # self-certainty: KL(U ‖ p) = −log V − (1/V) Σ_j log p_j  (Kang et al., 2025)
        certainty = logz - z.mean(-1) - math.log(z.shape[-1])  # (n,)
    return logp, entropy, certainty


def head_scores(head, hidden: Tensor, targets: Tensor, vocab_size: int, temperature: float = 1.0,
                extras: bool = False) -> tuple[Tensor, ...]:
    """`_chunk_scores` of N positions, hidden (N, H) and targets (N,), chunk by chunk; with a
    gradient and a vocabulary wider than H, each chunk is checkpointed, so backward keeps the
    hidden states and recomputes the chunk's logits. Returns (N,) tensors: log-probs, and with
    `extras` entropy and certainty."""
    n = max(1, HEAD_CHUNK_LOGITS // vocab_size)
    # recomputing saves memory only where a chunk's logits outsize its hidden states (V > H)
    recompute = torch.is_grad_enabled() and hidden.requires_grad and vocab_size > hidden.shape[-1]
    parts = []
    for lo in range(0, hidden.shape[0], n):
        args = (head, hidden[lo : lo + n], targets[lo : lo + n], temperature, extras)
        parts.append(checkpoint(_chunk_scores, *args, use_reentrant=False) if recompute else _chunk_scores(*args))
    if not parts:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return (empty,) * (3 if extras else 1)
    return tuple(torch.cat(column) for column in zip(*parts))


# ---- the hidden states ---------------------------------------------------------------------------


def sharing_pays(distinct: int, rows: int) -> bool:
    """Whether the shared-prompt pass pays: at least two rows per distinct prompt on average."""
    return 2 * distinct <= rows


def shares_prompts(prompt_ids: Sequence[Sequence[int]]) -> bool:
    """`sharing_pays` for these rows' prompts."""
    return sharing_pays(len({tuple(p) for p in prompt_ids}), len(prompt_ids))


def recomputes_layers(model) -> bool:
    """Whether a backward pass through `model` now would recompute its layers (gradient checkpointing)."""
    return model.training and torch.is_grad_enabled() and any(
        getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


class PositionCount:
    """The positions the passes compute for a growing set of rows (`forward_positions`), kept
    up to date row by row, so that packing B rows into micro-batches costs O(B), not O(B²)."""

    def __init__(self, share: bool = True) -> None:
        self.share = share
        self.rows = 0
        self.distinct: set[tuple] = set()
        self.longest_prompt = 0  # of the distinct prompts
        self.longest_completion = 0
        self.longest_row = 0  # prompt + completion

    def _add(self, prompt: Sequence[int], completion: Sequence[int]) -> None:
        self.rows += 1
        self.distinct.add(tuple(prompt))
        self.longest_prompt = max(self.longest_prompt, len(prompt))
        self.longest_completion = max(self.longest_completion, len(completion))
        self.longest_row = max(self.longest_row, len(prompt) + len(completion))

    def with_rows(self, prompt_ids: Sequence[Sequence[int]],
                  completion_ids: Sequence[Sequence[int]]) -> "PositionCount":
        """A new count: these rows added to this one's (which is left as it is)."""
        other = PositionCount(self.share)
        other.rows, other.distinct = self.rows, set(self.distinct)
        other.longest_prompt, other.longest_completion, other.longest_row = (
            self.longest_prompt, self.longest_completion, self.longest_row)
        for p, c in zip(prompt_ids, completion_ids):
            other._add(p, c)
        return other

    @property
    def positions(self) -> int:
        if not self.rows:
            return 0
        if self.share and sharing_pays(len(self.distinct), self.rows):
            return len(self.distinct) * self.longest_prompt + self.rows * max(self.longest_completion - 1, 0)
        return self.rows * self.longest_row


def forward_positions(prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]],
                      share: bool = True) -> int:
    """Positions the passes compute for these rows (padding included): U·L + B·(T − 1) by the
    shared-prompt pass (when `share` and `shares_prompts`), else B·max(|x| + |y|)."""
    return PositionCount(share).with_rows(prompt_ids, completion_ids).positions


def _cache_name(decoder) -> str:
    """The KV cache's name in forward's arguments and outputs: `cache` from transformers 5.24,
    `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def completion_hidden(model, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]],
                      pad_id: int, share: bool) -> Tensor:
    """(B, T, H) last hidden states; row b, position t predicts completion_ids[b][t] (positions
    past a completion's end hold padding states). Shared-prompt pass when `share` and the rows
    repeat prompts, else full sequences."""
    decoder = model.get_decoder()
    if share and shares_prompts(prompt_ids):
        return _shared_prompt_hidden(decoder, prompt_ids, completion_ids, pad_id)
    return _full_sequence_hidden(decoder, prompt_ids, completion_ids, pad_id)


def _full_sequence_hidden(decoder, prompt_ids, completion_ids, pad_id: int) -> Tensor:
    """`completion_hidden` by one pass over prompt + completion, right-padded."""
    device = decoder.get_input_embeddings().weight.device
    B, T = len(prompt_ids), max((len(c) for c in completion_ids), default=0)
    seqs = [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids)]
    S = max(len(s) for s in seqs)
    input_ids = torch.full((B, S), pad_id, dtype=torch.long)
    attn = torch.zeros((B, S), dtype=torch.long)
    where = torch.zeros((B, T), dtype=torch.long)  # the position whose state predicts token t
    for row, (p, c, s) in enumerate(zip(prompt_ids, completion_ids, seqs)):
        input_ids[row, : len(s)] = torch.tensor(s)
        attn[row, : len(s)] = 1
        where[row, : len(c)] = torch.arange(len(p) - 1, len(p) - 1 + len(c))
    out = decoder(input_ids=input_ids.to(device), attention_mask=attn.to(device), use_cache=False)
    hidden = out.last_hidden_state  # (B, S, H)
    return hidden.gather(1, where.to(device)[..., None].expand(B, T, hidden.shape[-1]))  # (B, T, H)


def _shared_prompt_hidden(decoder, prompt_ids, completion_ids, pad_id: int) -> Tensor:
    """`completion_hidden` with one pass per distinct prompt (left-padded, KV cache kept with its
    gradient), the cache gathered to the rows, then one pass over the completions (right-padded)
    that attends to it. The last prompt position predicts token 0; completion position t
    predicts token t + 1, so the last completion token is never fed."""
    device = decoder.get_input_embeddings().weight.device
    cache_name = _cache_name(decoder)
    index_of: dict[tuple, int] = {}
    rows = torch.tensor([index_of.setdefault(tuple(p), len(index_of)) for p in prompt_ids], device=device)  # (B,)
    prompts = list(index_of)
    L = max(len(p) for p in prompts)
    T = max((len(c) for c in completion_ids), default=0)
    input_ids = torch.tensor([[pad_id] * (L - len(p)) + list(p) for p in prompts], device=device)  # (U, L)
    prompt_mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts], device=device)  # (U, L)
    positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)  # (U, L)
    out = decoder(input_ids=input_ids, attention_mask=prompt_mask, position_ids=positions, use_cache=True)
    first = out.last_hidden_state[:, -1:, :][rows]  # (B, 1, H) predicts each row's token 0
    if T <= 1:
        return first[:, :T]
    cache = getattr(out, cache_name)
    cache.reorder_cache(rows)  # (U, …) → (B, …): each row's prompt keys and values
    fed = [list(c[: T - 1]) for c in completion_ids]
    tokens = torch.tensor([f + [pad_id] * (T - 1 - len(f)) for f in fed], device=device)  # (B, T-1)
    fed_mask = torch.tensor([[1] * len(f) + [0] * (T - 1 - len(f)) for f in fed], device=device)  # (B, T-1)
    attn = torch.cat([prompt_mask[rows], fed_mask], dim=1)  # (B, L + T-1)
    steps = positions[rows, -1:] + 1 + torch.arange(T - 1, device=device)  # (B, T-1)
    out = decoder(input_ids=tokens, attention_mask=attn, position_ids=steps, use_cache=True, **{cache_name: cache})
    return torch.cat([first, out.last_hidden_state], dim=1)  # (B, T, H)


# ---- scores ----------------------------------------------------------------------------------------


def padded_rows(rows: Sequence[Sequence], dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(B, T) right-padded values of B rows (0 on padding) and their 0/1 mask, T the longest row;
    built with one tensor call, not one per row."""
    T = max((len(r) for r in rows), default=0)
    values = torch.tensor([list(r) + [0] * (T - len(r)) for r in rows], dtype=dtype).reshape(len(rows), T)
    mask = torch.tensor([[1.0] * len(r) + [0.0] * (T - len(r)) for r in rows]).reshape(len(rows), T)
    return values, mask


def score_rows(model, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], *,
               pad_id: int, temperature: float = 1.0, extras: bool = False,
               autocast_dtype: Optional[torch.dtype] = None) -> TokenScores:
    """log π_T(y_t | x, y_<t) of the rows in one pass (see the module doc), differentiable;
    (B, T) tensors, 0 on padding. The decoder runs under autocast to `autocast_dtype` when
    given (bf16 on CUDA, with fp32 weights); the head and the log-probs do not (`output_head`)."""
    weight = model.get_output_embeddings().weight  # (V, H)
    device = weight.device
    targets, mask = padded_rows(completion_ids, torch.long)
    targets, mask = targets.to(device), mask.to(device)
    B, T = targets.shape
    head = output_head(model)
    cast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()
    with cast:
        hidden = completion_hidden(model, prompt_ids, completion_ids, pad_id, share=not recomputes_layers(model))
        real = mask.bool()  # (B, T)
        columns = head_scores(head, hidden[real], targets[real], weight.shape[0], temperature, extras)  # (N,) each
    out = [torch.zeros((B, T), device=device, dtype=torch.float32).masked_scatter(real, c) for c in columns]
    return TokenScores(out[0], mask, *out[1:])


def micro_batches(prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], max_tokens: int,
                  units: Optional[Sequence[Sequence[int]]] = None, share: bool = True) -> list[list[int]]:
    """Row indices of micro-batches whose passes compute at most `max_tokens` positions each
    (`forward_positions`; a unit that alone exceeds it is a micro-batch of its own). `units`
    are rows that must be in one micro-batch (a preference pair; default: each row alone);
    they are taken grouped by prompt, so that a group's rows share their prompt pass."""
    units = [list(u) for u in units] if units is not None else [[i] for i in range(len(prompt_ids))]
    first_seen: dict[tuple, int] = {}
    for u in units:
        first_seen.setdefault(tuple(prompt_ids[u[0]]), len(first_seen))
    order = sorted(units, key=lambda u: first_seen[tuple(prompt_ids[u[0]])])
    out: list[list[int]] = []
    current: list[int] = []
    count = PositionCount(share)
    for unit in order:
        rows = ([prompt_ids[i] for i in unit], [completion_ids[i] for i in unit])
        trial = count.with_rows(*rows)
        if current and trial.positions > max_tokens:
            out.append(current)
            current, trial = [], PositionCount(share).with_rows(*rows)
        current.extend(unit)
        count = trial
    if current:
        out.append(current)
    return out


def score_tokens(model, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], *,
                 pad_id: int, temperature: float = 1.0, extras: bool = False,
                 max_tokens: int = DEFAULT_MICRO_BATCH_TOKENS,
                 autocast_dtype: Optional[torch.dtype] = None) -> TokenScores:
    """`score_rows` of any number of rows. Without gradient, in micro-batches of at most
    `max_tokens` positions, put back in row order; with a gradient in one pass (a learner
    bounds its memory by backpropagating micro-batches one at a time)."""
    kwargs = dict(pad_id=pad_id, temperature=temperature, extras=extras, autocast_dtype=autocast_dtype)
    if torch.is_grad_enabled() or not prompt_ids:
        return score_rows(model, prompt_ids, completion_ids, **kwargs)
    parts = micro_batches(prompt_ids, completion_ids, max_tokens, share=not recomputes_layers(model))
    if len(parts) == 1:
        return score_rows(model, prompt_ids, completion_ids, **kwargs)
    B, T = len(prompt_ids), max((len(c) for c in completion_ids), default=0)
    device = model.get_output_embeddings().weight.device
    names = ("logprobs", "mask", "entropy", "self_certainty") if extras else ("logprobs", "mask")
    out = {name: torch.zeros((B, T), device=device) for name in names}
    for rows in parts:
        scored = score_rows(model, [prompt_ids[i] for i in rows], [completion_ids[i] for i in rows], **kwargs)
        index = torch.tensor(rows, device=device)
        for name in names:
            value = getattr(scored, name)  # (b, T_b)
            out[name][index, : value.shape[1]] = value.to(out[name].dtype)
    return TokenScores(**out)
