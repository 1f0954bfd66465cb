"""The sampling loop of a transformers causal LM: prefill once, then one token per step with
the KV cache, on the model's device.

    completions = sample_ids(policy, prompt_ids, params, generator, on_token)

The prefill runs each distinct prompt once, and a prefix all prompts share (a chat template's
system prompt) once for all of them (`prefill`). Then per step, for the rows still running:
1. the model's distribution at temperature 1 gives each sampled token's log-prob (`logprobs`,
   and the `top_logprobs`); temperature, top-k, min-p and top-p give the distribution sampled
   from (`sampling_logprobs`: the behaviour policy of the learners' importance ratios);
2. the token is drawn by inverse-CDF sampling with one uniform per row and step, drawn up front
   from the seeded device generator, so a row's draws depend on its own number only, never on
   which other rows share the batch;
3. a row ends at an end-of-sequence or stop token id, or when its text, decoded incrementally
   (`StopStrings`), contains a stop string;
4. rows that ended leave the batch's work: once `compact_at` of the batch has ended, the KV
   cache, attention mask and positions are index-selected down to the running rows, so an
   ended row costs nothing after that. The cache is selected with `Cache.reorder_cache`
   (an index_select on the batch dimension that every cache layer type of transformers 5
   implements; `batch_select_indices` exists for the dynamic layers only). A compaction copies
   the cache once, about what a decoding step's own `torch.cat` into it costs, so it waits for
   1/8 of the rows (`COMPACT_AT`) rather than happening at every row's end.

What holds: compacting does not change any row's draws, and a row's log-probs equal those of a
run that keeps ended rows in the batch to float tolerance (a matrix product over fewer rows may
round differently in the last bits), so its tokens are the same unless a draw lands within that
rounding of the boundary between two tokens' intervals (odds near 1e-6 per token). Only tensors
of shape (B,) cross to the CPU per step (the sampled tokens); records stay on the device until
the end.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Union

import torch

from sharpen.models.base import Completion, ContextLengthError, SamplingParams

try:
    from tokenizers.decoders import DecodeStream
except ImportError:  # tokenizers before 0.21.1
    DecodeStream = None

if TYPE_CHECKING:
    from transformers import Cache, PreTrainedModel, PreTrainedTokenizerBase

    from sharpen.models.hf import HFPolicy

COMPACT_AT = 0.125
"""Compact the batch once this fraction of its rows has ended (0: whenever a row ends; above 1:
never, ended rows stay in the batch until every row has ended)."""

UNKNOWN_LENGTH = 10**9
"""A tokenizer's model_max_length at or above this means "not set" (transformers puts 1e30 there)."""

TokenCallback = Callable[[int, int], None]
"""on_token(row, token_id): called once per sampled token, rows numbered as in `generate`'s
output flattened (prompt i's j-th completion is row i·n + j); a stop ends a row's calls."""


# ---- filters (pure functions of logits) ---------------------------------------------------------


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` cut before the first occurrence of any stop string."""
    cuts = [text.find(s) for s in stop if s in text]
    return text[: min(cuts)] if cuts else text


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Set logits outside the smallest set of tokens with mass >= top_p to -inf (nucleus
    sampling, "The Curious Case of Neural Text Degeneration")."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
    probs = sorted_logits.softmax(dim=-1)  # (B, V)
    mass_before = probs.cumsum(dim=-1) - probs  # (B, V) mass of strictly better tokens
    sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Set logits outside the k largest of each row to -inf (top-k sampling, Fan et al. 2018,
    "Hierarchical Neural Story Generation"); 0 keeps every token. Ties at the k-th value stay."""
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Set logits of tokens with p < min_p · max p to -inf (min-p sampling, Nguyen et al. 2024,
    "Turning Up the Heat: Min-p Sampling"); 0 keeps every token."""
    if min_p <= 0:
        return logits
    logp = logits.log_softmax(-1)  # (B, V)
    floor = logp.max(-1, keepdim=True).values + math.log(min_p)  # (B, 1)
    return logits.masked_fill(logp < floor, float("-inf"))


def sampling_distribution(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """log μ: the log-probs sampling draws from, (B, V): temperature, then top-k, min-p, top-p."""
    scaled = min_p_filter(top_k_filter(logits / params.temperature, params.top_k), params.min_p)
    return top_p_filter(scaled, params.top_p).log_softmax(-1)  # (B, V)


def inverse_cdf_sample(log_mu: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row: the first index whose cumulative probability exceeds u · total,
    (B, V), (B,) → (B,). The sum runs in float64, so tokens far below float32's resolution of
    the running sum (2⁻²⁴ ≈ 6e-8) keep their probability; a token of probability 0 is never drawn."""
    cdf = log_mu.exp().double().cumsum(-1)  # (B, V)
    if not bool(torch.isfinite(cdf[:, -1]).all()):
        raise FloatingPointError("the model's next-token distribution is not finite (inf or nan logits)")
    target = uniforms.double() * cdf[:, -1]  # (B,) in [0, total)
    token = torch.searchsorted(cdf, target[:, None], right=True).squeeze(-1)  # (B,)
    return token.clamp(max=log_mu.shape[-1] - 1)


# ---- stop strings by incremental decoding -------------------------------------------------------


class StopStrings:
    """Each row's generated text, grown as tokens arrive, and whether it now holds a stop string.

    Decoding one token alone loses what a tokenizer attaches to its neighbours (SentencePiece's
    "▁" word starts, byte-level BPE's bytes of one character spread over two tokens), so the
    text grows by incremental decoding with a prefix offset, as streaming detokenizers do: the
    Rust tokenizer's `DecodeStream` where there is one, else `PrefixOffsetDecoder`. The text grown
    this way is the decoding of the row's ids, so a stop split across tokens is found at the
    token that completes it.

        stops = StopStrings(tokenizer, ("\\n",), rows=B)
        hits = stops.push(rows, tokens)    # the rows among `rows` whose text now holds a stop
    """

    def __init__(self, tokenizer: "PreTrainedTokenizerBase", stop: Sequence[str], rows: int) -> None:
        self.stop = tuple(stop)
        self.text = [""] * rows
        # new_text(rows, tokens): the text each row's new token adds ("" while a character is incomplete)
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if DecodeStream is not None and backend is not None and not tokenizer.clean_up_tokenization_spaces:
            streams = [DecodeStream(skip_special_tokens=True) for _ in range(rows)]
            self.new_text = lambda rows_, tokens: [streams[r].step(backend, t) or "" for r, t in zip(rows_, tokens)]
        else:
            self.new_text = PrefixOffsetDecoder(tokenizer, rows).push

    def push(self, rows: Sequence[int], tokens: Sequence[int]) -> list[int]:
        """Append tokens[i] to row rows[i]; the rows whose text holds a stop string now."""
        hits = []
        for row, new in zip(rows, self.new_text(rows, tokens)):
            if not new:
                continue
            seen = len(self.text[row])
            self.text[row] += new
            if any(s in self.text[row][max(0, seen - len(s) + 1) :] for s in self.stop):
                hits.append(row)
        return hits


class PrefixOffsetDecoder:
    """Incremental decoding of many rows through `tokenizer.batch_decode` (Hugging Face TGI's and
    vLLM's scheme, for tokenizers without a Rust `DecodeStream`): the new text of a token is
    decode(ids[prefix:]) minus decode(ids[prefix:read]), two short windows per row; a window that
    ends in an incomplete character (U+FFFD) waits for the next token."""

    def __init__(self, tokenizer: "PreTrainedTokenizerBase", rows: int) -> None:
        self.tokenizer = tokenizer
        self.ids: list[list[int]] = [[] for _ in range(rows)]
        self.prefix = [0] * rows  # ids[prefix:read] were decoded before and give the context
        self.read = [0] * rows  # ids[read:] have no text yet

    def push(self, rows: Sequence[int], tokens: Sequence[int]) -> list[str]:
        """Append tokens[i] to row rows[i]; the text each adds ("" while it has none yet)."""
        for row, token in zip(rows, tokens):
            self.ids[row].append(token)
        windows = [self.ids[r][self.prefix[r] : self.read[r]] for r in rows]
        windows += [self.ids[r][self.prefix[r] :] for r in rows]
        decoded = self.tokenizer.batch_decode(windows, skip_special_tokens=True)
        out = []
        for row, known, grown in zip(rows, decoded[: len(rows)], decoded[len(rows) :]):
            if len(grown) <= len(known) or grown.endswith("\ufffd"):
                out.append("")  # no new text yet (a partial character, or a token with no text)
                continue
            out.append(grown[len(known) :])
            self.prefix[row], self.read[row] = self.read[row], len(self.ids[row])
        return out


# ---- the context length --------------------------------------------------------------------------


def context_length(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase") -> Optional[int]:
    """The longest sequence the model takes: its config's max_position_embeddings, else the
    tokenizer's model_max_length when one is set; None when neither says."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if isinstance(limit, int) and limit > 0:
        return limit
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if isinstance(limit, (int, float)) and 0 < limit < UNKNOWN_LENGTH else None


def check_context_length(prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, limit: Optional[int]) -> None:
    """Raise ContextLengthError if a prompt plus max_new_tokens is longer than `limit`."""
    if limit is None or not prompt_ids:
        return
    longest = max(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    length = len(prompt_ids[longest])
    if length + max_new_tokens > limit:
        raise ContextLengthError(
            f"prompt {longest} has {length} tokens, and with max_new_tokens {max_new_tokens} that is "
            f"{length + max_new_tokens}, over the model's context length of {limit} tokens: shorten the "
            f"prompt or lower max_new_tokens"
        )


# ---- the loop ------------------------------------------------------------------------------------


def draw_uniforms(generator: Union[torch.Generator, list[torch.Generator]], B: int, T: int,
                  device: torch.device) -> torch.Tensor:
    """(B, T) uniforms: from one generator for the batch, or from one generator per row, rows that
    share a generator (a prompt's group, contiguous) drawn together, so what a group samples does
    not depend on the other rows of the call (`SamplingParams.prompt_seeds`)."""
    if isinstance(generator, torch.Generator):
        return torch.rand((B, T), generator=generator, device=device)
    parts, start = [], 0
    while start < B:
        end = start + 1
        while end < B and generator[end] is generator[start]:
            end += 1
        parts.append(torch.rand((end - start, T), generator=generator[start], device=device))
        start = end
    return torch.cat(parts)


def common_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all prompts share."""
    shortest = min(len(p) for p in prompts)
    for i in range(shortest):
        if any(p[i] != prompts[0][i] for p in prompts):
            return i
    return shortest


def prefill(
    policy: "HFPolicy", prompts: Sequence[Sequence[int]]
) -> tuple["Cache", torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run distinct prompts through the model: (cache, next-token logits (U, V), attention mask
    (U, S), next positions (U,)).

    When the prompts open alike (a chat template's system prompt), the shared prefix of c tokens
    goes through once and its cache is copied to every prompt; then each prompt's rest, left-
    padded, attends to it. Row u is laid out [prefix (c)][padding][rest of prompt u] with its
    positions counted over its own tokens only, so the model sees each prompt exactly. Used when
    it at least halves the tokens of the prefill (c · (U - 1) >= U · longest rest).
    """
    model, device, pad = policy.model, policy.device, policy.tokenizer.pad_token_id
    U = len(prompts)
    c = min(common_prefix_length(prompts), min(len(p) for p in prompts) - 1)  # every rest keeps a token
    rest_length = max(len(p) for p in prompts) - c
    if c * (U - 1) < U * rest_length:
        c = 0
    rests = [list(p[c:]) for p in prompts]
    R = max(len(r) for r in rests)
    input_ids = torch.tensor([[pad] * (R - len(r)) + r for r in rests], device=device)  # (U, R)
    mask = torch.tensor([[1] * c + [0] * (R - len(r)) + [1] * len(r) for r in rests], device=device)  # (U, c + R)
    positions = (mask[:, c:].cumsum(-1) - 1).clamp(min=0) + c  # (U, R)
    shared = {}
    if c:
        out = model(input_ids=torch.tensor([list(prompts[0][:c])], device=device), use_cache=True,
                    **policy.last_logits_only)
        cache = getattr(out, policy.cache_name)
        cache.reorder_cache(torch.zeros(U, dtype=torch.long, device=device))  # (1, …) → (U, …)
        shared = {policy.cache_name: cache}
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                **shared, **policy.last_logits_only)
    return getattr(out, policy.cache_name), out.logits[:, -1, :].float(), mask, positions[:, -1] + 1


@torch.no_grad()
def sample_ids(
    policy: "HFPolicy",
    prompt_ids: Sequence[Sequence[int]],
    params: SamplingParams,
    generator: Union[torch.Generator, list[torch.Generator]],
    on_token: Optional[TokenCallback] = None,
    *,
    compact_at: float = COMPACT_AT,
) -> list[Completion]:
    """Sample one completion for each row of prompt token ids (a left-padded batch), drawing
    from `generator` (on the model's device), or from one generator per row (`draw_uniforms`);
    see the module docstring."""
    model, device = policy.model, policy.device
    B, T, k = len(prompt_ids), params.max_new_tokens, params.top_logprobs
    enders = torch.tensor(sorted(policy.eos_ids | set(params.stop_token_ids)), device=device)

    # prefill each distinct prompt once (the rows of a group share it), then gather to the rows
    index_of: dict[tuple, int] = {}
    rows = torch.tensor([index_of.setdefault(tuple(p), len(index_of)) for p in prompt_ids], device=device)  # (B,)
    cache, logits, mask, next_pos = prefill(policy, list(index_of))
    logits, mask, next_pos = logits[rows], mask[rows], next_pos[rows]  # (B, V), (B, S), (B,)
    if len(index_of) < B:
        cache.reorder_cache(rows)  # (U, …) → (B, …)

    greedy = params.temperature == 0
    uniforms = None if greedy else draw_uniforms(generator, B, T, device)  # (B, T) one per row and step
    tokens = torch.zeros((B, T), dtype=torch.long, device=device)
    logprobs = torch.zeros((B, T), device=device)  # log π(token), temperature 1
    sampling_logprobs = torch.zeros((B, T), device=device)  # log μ(token), what was sampled from; 0 if greedy
    top_values = torch.zeros((B, T, k), device=device)
    top_ids = torch.zeros((B, T, k), dtype=torch.long, device=device)
    lengths, finish = [T] * B, ["length"] * B
    stops = StopStrings(policy.tokenizer, params.stop, B) if params.stop else None
    batch = list(range(B))  # the original row of each batch position
    batch_index = torch.arange(B, device=device)  # (A,) the same, on the device
    running = [True] * B  # per batch position: not ended

    for t in range(T):
        logp = logits.log_softmax(-1)  # (A, V) the model's distribution at temperature 1
        if greedy:
            token = logits.argmax(-1)  # (A,) a point mass: log μ = 0
        else:
            log_mu = sampling_distribution(logits, params)  # (A, V)
            token = inverse_cdf_sample(log_mu, uniforms[batch_index, t])  # (A,)
            sampling_logprobs[batch_index, t] = log_mu.gather(-1, token[:, None]).squeeze(-1)
        tokens[batch_index, t] = token
        logprobs[batch_index, t] = logp.gather(-1, token[:, None]).squeeze(-1)
        if k:
            top_values[batch_index, t], top_ids[batch_index, t] = logp.topk(k, dim=-1)  # (A, k) each
        sampled, ended = token.tolist(), torch.isin(token, enders).tolist()  # (A,) to the CPU
        live = [i for i, run in enumerate(running) if run]
        if on_token is not None:
            for i in live:
                on_token(batch[i], sampled[i])
        ends = {i for i in live if ended[i]}
        if stops is not None:
            asked = [i for i in live if i not in ends]
            hit = set(stops.push([batch[i] for i in asked], [sampled[i] for i in asked]))
            ends |= {i for i in asked if batch[i] in hit}
        for i in ends:
            running[i] = False
            lengths[batch[i]], finish[batch[i]] = t + 1, "stop"
        left = len(live) - len(ends)
        if left == 0 or t == T - 1:
            break
        if len(running) - left >= max(1, compact_at * len(running)):  # ended rows leave the batch
            keep = [i for i, run in enumerate(running) if run]
            keep_index = torch.tensor(keep, device=device)  # (A',)
            cache.reorder_cache(keep_index)  # (A, …) → (A', …)
            mask, next_pos, token = mask[keep_index], next_pos[keep_index], token[keep_index]
            batch, batch_index, running = [batch[i] for i in keep], batch_index[keep_index], [True] * len(keep)
        mask = torch.cat([mask, torch.ones((len(batch), 1), dtype=mask.dtype, device=device)], dim=1)  # (A, S+1)
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                    use_cache=True, **{policy.cache_name: cache})
        cache, logits = getattr(out, policy.cache_name), out.logits[:, -1, :].float()  # (A, V)
        next_pos = next_pos + 1

    ids = [row[:n] for row, n in zip(tokens.tolist(), lengths)]
    lps = [row[:n] for row, n in zip(logprobs.tolist(), lengths)]
    mus = [row[:n] for row, n in zip(sampling_logprobs.tolist(), lengths)]
    tops = [
        tuple(tuple(zip(i, v)) for i, v in zip(row_ids[:n], row_values[:n])) if k else ()
        for row_ids, row_values, n in zip(top_ids.tolist(), top_values.tolist(), lengths)
    ]
    decoded = policy.tokenizer.batch_decode(ids, skip_special_tokens=True)
    return [
        Completion(text=cut_at_stop(text, params.stop), token_ids=tuple(i), logprobs=tuple(lp), finish_reason=f,
                   top_logprobs=top, sampling_logprobs=tuple(mu))
        for text, i, lp, f, top, mu in zip(decoded, ids, lps, finish, tops, mus)
    ]
