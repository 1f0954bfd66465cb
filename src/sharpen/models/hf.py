"""A Hugging Face transformers policy: batched sampling and token log-probs, CPU or GPU.

Sampling is a plain cached loop (prefill once, then one token per step with the KV cache)
that returns each sampled token's log-prob under the model (temperature 1) and under the
distribution it was drawn from (temperature and top-p applied: the behaviour policy of the
learners' importance ratios), at the speed of
`model.generate` (measured at parity on the default model: 54 ms per 16 × 8 completions).
The G completions of one prompt share its prefill, and scoring shares each distinct prompt's
forward pass (and its gradient) among the rows that continue it.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from sharpen.models.base import Completion, SamplingParams, TokenScores
from sharpen.models.formats import as_messages
from sharpen.tasks.base import Prompt


def pick_device(device: Optional[str] = None) -> torch.device:
    """The requested device, else CUDA when present, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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


TokenCallback = Callable[[int, int], None]
"""on_token(row, token_id): called once per sampled token, rows numbered as in `generate`'s
output flattened (prompt i's j-th completion is row i·n + j); a stop ends a row's calls."""


def draw_tokens(probs: torch.Tensor, generator: Union[torch.Generator, list[torch.Generator]]) -> torch.Tensor:
    """One token per row of `probs` (B, V), drawn with one generator for the batch, or with one
    generator per row: rows sharing a generator (a prompt's group, contiguous) are drawn together,
    so what a group samples does not depend on the other rows of the batch. Returns (B,)."""
    if isinstance(generator, torch.Generator):
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)
    token = torch.empty(probs.shape[0], dtype=torch.long)  # (B,)
    start = 0
    while start < len(generator):
        end = start + 1
        while end < len(generator) and generator[end] is generator[start]:
            end += 1
        token[start:end] = torch.multinomial(probs[start:end], 1, generator=generator[start]).squeeze(-1)
        start = end
    return token


class HFPolicy:
    """A causal language model and its tokenizer, as a sharpen policy."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_batch_rows: int = 512,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_rows = max_batch_rows
        """Sequences sampled together at most; larger requests are split."""
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.pieces: dict[int, str] = {}
        takes_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.last_logits_only = {"logits_to_keep": 1} if takes_keep else {}
        """Forward kwargs that compute logits at the last position only (a prompt's full
        logits are (B, L, V): gigabytes for a 150k vocabulary)."""
        self.cache_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        """The KV cache's name in forward's arguments and outputs: `cache` from transformers 5.24,
        `past_key_values` before (deprecated in 5.24, to be removed in 5.40)."""

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        device: Optional[str] = None,
        dtype: Optional[torch.dtype] = None,
        **kwargs,
    ) -> "HFPolicy":
        """Load any local HF checkpoint directory (or a hub name where a hub is reachable)."""
        target = pick_device(device)
        if dtype is None:
            dtype = torch.bfloat16 if target.type == "cuda" else torch.float32
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(target)
        model.eval()
        return cls(model, tokenizer, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id if self.model.generation_config else None
        found = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
        if self.tokenizer.eos_token_id is not None:
            found.add(self.tokenizer.eos_token_id)
        return found

    # ---- prompts -------------------------------------------------------------------------

    def render(self, prompt: Prompt) -> str:
        """The prompt as the model sees it: through the chat template when the tokenizer
        has one (ending with the assistant's turn opener), else the plain text."""
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(
                as_messages(prompt), add_generation_prompt=True, tokenize=False
            )
        if isinstance(prompt, str):
            return prompt
        return "\n".join(m["content"] for m in prompt)

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of the rendered prompt (the template carries its own special tokens)."""
        text = self.render(prompt)
        add_special = not self.tokenizer.chat_template
        return self.tokenizer(text, add_special_tokens=add_special)["input_ids"]

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    # ---- sampling ------------------------------------------------------------------------

    sampling_features = frozenset({"top_k", "min_p", "stop_token_ids", "top_logprobs", "on_token"})
    """What this backend honours beyond the core SamplingParams (the server refuses the rest)."""

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams, on_token: Optional[TokenCallback] = None
    ) -> list[list[Completion]]:
        """For each prompt, `params.n` sampled completions; `on_token` sees each token as sampled."""
        prompt_ids = [self.encode(p) for p in prompts]
        rows = [ids for ids in prompt_ids for _ in range(params.n)]  # prompt i at rows i*n..i*n+n-1
        generator: Union[torch.Generator, list[torch.Generator]] = self.generator
        if params.prompt_seeds:
            if len(params.prompt_seeds) != len(prompts):
                raise ValueError(f"SamplingParams.prompt_seeds has {len(params.prompt_seeds)} seeds for "
                                 f"{len(prompts)} prompts; give one per prompt")
            own = [torch.Generator(device="cpu").manual_seed(s) for s in params.prompt_seeds]
            generator = [g for g in own for _ in range(params.n)]  # row → its prompt's generator
        elif params.seed is not None:
            generator = torch.Generator(device="cpu").manual_seed(params.seed)
        flat: list[Completion] = []
        chunk = max(params.n, self.max_batch_rows // params.n * params.n)  # whole groups per chunk
        for start in range(0, len(rows), chunk):
            chunk_callback = None
            if on_token is not None:
                chunk_callback = (lambda offset: lambda row, token: on_token(offset + row, token))(start)
            rows_generator = generator[start : start + chunk] if isinstance(generator, list) else generator
            flat.extend(self.sample_ids(rows[start : start + chunk], params, rows_generator, chunk_callback))
        return [flat[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]

    @torch.no_grad()
    def sample_ids(
        self, prompt_ids: list[list[int]], params: SamplingParams,
        generator: Union[torch.Generator, list[torch.Generator]], on_token: Optional[TokenCallback] = None,
    ) -> list[Completion]:
        """Sample one completion for each row of prompt token ids (left-padded batch), from one
        generator or one per row (`draw_tokens`)."""
        device = self.device
        pad = self.tokenizer.pad_token_id
        B = len(prompt_ids)
        L = max(len(ids) for ids in prompt_ids)
        input_ids = torch.tensor([[pad] * (L - len(ids)) + list(ids) for ids in prompt_ids], device=device)  # (B, L)
        mask = torch.tensor([[0] * (L - len(ids)) + [1] * len(ids) for ids in prompt_ids], device=device)  # (B, L)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, L)
        eos = torch.tensor(sorted(self.eos_ids | set(params.stop_token_ids)), device=device)

        # prefill each distinct prompt once (the rows of a group share it), then gather to the rows
        index_of: dict[tuple, int] = {}
        rows = torch.tensor([index_of.setdefault(tuple(p), len(index_of)) for p in prompt_ids], device=device)  # (B,)
        first = torch.tensor([rows.tolist().index(u) for u in range(len(index_of))], device=device)  # (U,)
        out = self.model(input_ids=input_ids[first], attention_mask=mask[first], position_ids=positions[first],
                         use_cache=True, **self.last_logits_only)
        cache, logits = getattr(out, self.cache_name), out.logits[:, -1, :].float()[rows]  # (B, V)
        if len(index_of) < B:
            cache.reorder_cache(rows)  # (U, …) → (B, …)
        next_pos = positions[:, -1] + 1  # (B,)
        tokens = torch.zeros((B, params.max_new_tokens), dtype=torch.long)
        logprobs = torch.zeros((B, params.max_new_tokens))  # log π(token), temperature 1
        sampling_logprobs = torch.zeros((B, params.max_new_tokens))  # log μ(token), what was sampled from
        lengths = [params.max_new_tokens] * B
        finish = ["length"] * B
        done = torch.zeros(B, dtype=torch.bool)
        texts = [""] * B  # generated text so far, kept only to find stop strings
        k = params.top_logprobs
        top: list[list[tuple[tuple[int, float], ...]]] = [[] for _ in range(B)]  # per row, per step

        for t in range(params.max_new_tokens):
            logp = logits.log_softmax(-1)  # (B, V) model distribution at temperature 1
            if params.temperature == 0:
                token = logits.argmax(-1)  # (B,)  a point mass: log μ = 0, left at 0
            else:
                scaled = min_p_filter(top_k_filter(logits / params.temperature, params.top_k), params.min_p)
                scaled = top_p_filter(scaled, params.top_p)  # (B, V)
                probs = scaled.softmax(-1).cpu()  # sample on CPU so seeds reproduce across devices
                token = draw_tokens(probs, generator).to(device)  # (B,)
                log_mu = scaled.log_softmax(-1)  # (B, V) the distribution sampled from
                sampling_logprobs[:, t] = log_mu.gather(-1, token[:, None]).squeeze(-1).cpu()
            tokens[:, t] = token.cpu()
            logprobs[:, t] = logp.gather(-1, token[:, None]).squeeze(-1).cpu()
            if k:
                values, ids = logp.topk(k, dim=-1)  # (B, k) from the distribution logprobs come from
                for row, (v, i) in enumerate(zip(values.tolist(), ids.tolist())):
                    top[row].append(tuple(zip(i, v)))
            if on_token is not None:
                for row in torch.nonzero(~done).flatten().tolist():
                    on_token(row, int(token[row]))
            newly = (~done) & torch.isin(token, eos).cpu()  # (B,)
            if params.stop:
                skip, hits = (done | newly).tolist(), []
                for row, tok in enumerate(token.tolist()):
                    if skip[row]:
                        continue
                    piece = self.piece(tok)
                    texts[row] += piece
                    if any(stop in texts[row][-(len(stop) + len(piece)) :] for stop in params.stop):
                        hits.append(row)
                newly[hits] = True
            for row in torch.nonzero(newly).flatten().tolist():
                lengths[row], finish[row] = t + 1, "stop"
            done |= newly
            if bool(done.all()) or t == params.max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=device)], dim=1)
            out = self.model(
                input_ids=token[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                use_cache=True, **{self.cache_name: cache},
            )
            cache, logits = getattr(out, self.cache_name), out.logits[:, -1, :].float()
            next_pos = next_pos + 1

        ids = [row[:n] for row, n in zip(tokens.tolist(), lengths)]
        lps = [row[:n] for row, n in zip(logprobs.tolist(), lengths)]
        mus = [row[:n] for row, n in zip(sampling_logprobs.tolist(), lengths)]
        decoded = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [
            Completion(text=cut_at_stop(text, params.stop), token_ids=tuple(i), logprobs=tuple(lp), finish_reason=f,
                       top_logprobs=tuple(alternatives[:n]), sampling_logprobs=tuple(mu))
            for text, i, lp, f, alternatives, n, mu in zip(decoded, ids, lps, finish, top, lengths, mus)
        ]

    def piece(self, token_id: int) -> str:
        """The text of one token (cached); stop strings are looked for in these pieces joined."""
        text = self.pieces.get(token_id)
        if text is None:
            text = self.pieces[token_id] = self.tokenizer.decode([token_id])
        return text

    # ---- scoring -------------------------------------------------------------------------

    def score_tokens(
        self,
        prompt_ids: Sequence[Sequence[int]],
        completion_ids: Sequence[Sequence[int]],
        *,
        temperature: float = 1.0,
        extras: bool = False,
    ) -> TokenScores:
        """log π(y_t | x, y_<t) of given completions, differentiable (wrap in no_grad to score).

        All tensors are (B, T) with T the longest completion; with `extras`, also each
        position's entropy and self-certainty (computed from the full distribution).
        Rows that share a prompt (a group) share its forward pass: see `completion_logits`.
        """
        device = self.device
        B = len(prompt_ids)
        T = max((len(c) for c in completion_ids), default=0)
        targets = torch.zeros((B, T), dtype=torch.long)
        mask = torch.zeros((B, T))
        for row, c in enumerate(completion_ids):
            targets[row, : len(c)] = torch.tensor(list(c), dtype=torch.long)
            mask[row, : len(c)] = 1
        targets, mask = targets.to(device), mask.to(device)
        picked = self.completion_logits(prompt_ids, completion_ids).float() / temperature  # (B, T, V)
        V = picked.shape[-1]
        logp_all = picked.log_softmax(-1)  # (B, T, V)
        logp = logp_all.gather(-1, targets[..., None]).squeeze(-1) * mask  # (B, T)
        if not extras:
            return TokenScores(logp, mask)
        entropy = -(logp_all.exp() * logp_all).sum(-1) * mask  # (B, T)
        # self-certainty: KL(U || p_t) = -log V - (1/V) Σ_j log p_t(j)  (Kang et al., 2025)
        certainty = (-math.log(V) - logp_all.mean(-1)) * mask  # (B, T)
        return TokenScores(logp, mask, entropy, certainty)

    def completion_logits(
        self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]]
    ) -> torch.Tensor:
        """(B, T, V) logits that predict each completion token (row b, position t predicts
        completion_ids[b][t]); positions past a completion's end hold padding logits.

        When rows repeat prompts (G completions of one problem), each distinct prompt goes
        through the model once and its KV cache is shared by its rows, so the forward and
        backward passes cost U·L + B·T positions instead of B·(L + T) (U distinct prompts of
        length ≤ L). Otherwise one pass over the concatenated sequences.
        """
        distinct = {tuple(p) for p in prompt_ids}
        if 2 * len(distinct) <= len(prompt_ids):
            return self.shared_prompt_logits(prompt_ids, completion_ids)
        return self.full_sequence_logits(prompt_ids, completion_ids)

    def full_sequence_logits(
        self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]]
    ) -> torch.Tensor:
        """`completion_logits` by one forward pass over prompt + completion, right-padded."""
        device = self.device
        B = len(prompt_ids)
        T = max((len(c) for c in completion_ids), default=0)
        seqs = [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids)]
        S = max(len(s) for s in seqs)
        input_ids = torch.full((B, S), self.tokenizer.pad_token_id, dtype=torch.long)
        attn = torch.zeros((B, S), dtype=torch.long)
        where = torch.zeros((B, T), dtype=torch.long)  # position whose logits predict token t
        for row, (p, c, s) in enumerate(zip(prompt_ids, completion_ids, seqs)):
            input_ids[row, : len(s)] = torch.tensor(s)
            attn[row, : len(s)] = 1
            where[row, : len(c)] = torch.arange(len(p) - 1, len(p) - 1 + len(c))
        input_ids, attn, where = input_ids.to(device), attn.to(device), where.to(device)
        logits = self.model(input_ids=input_ids, attention_mask=attn).logits  # (B, S, V)
        V = logits.shape[-1]
        return logits.gather(1, where[..., None].expand(B, T, V))  # (B, T, V)

    def shared_prompt_logits(
        self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]]
    ) -> torch.Tensor:
        """`completion_logits` with one pass per distinct prompt (left-padded, KV cache kept
        with its gradient), the cache gathered to the rows, then one pass over the completions
        (right-padded) that attends to it. The last prompt position predicts token 0; completion
        position t predicts token t + 1, so the last completion token is never fed."""
        device, pad = self.device, self.tokenizer.pad_token_id
        index_of: dict[tuple, int] = {}
        rows = torch.tensor([index_of.setdefault(tuple(p), len(index_of)) for p in prompt_ids], device=device)  # (B,)
        prompts = list(index_of)
        L = max(len(p) for p in prompts)
        T = max((len(c) for c in completion_ids), default=0)
        input_ids = torch.tensor([[pad] * (L - len(p)) + list(p) for p in prompts], device=device)  # (U, L)
        prompt_mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts], device=device)  # (U, L)
        positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)  # (U, L)
        out = self.model(input_ids=input_ids, attention_mask=prompt_mask, position_ids=positions, use_cache=True,
                         **self.last_logits_only)
        first = out.logits[:, -1:, :][rows]  # (B, 1, V) predicts each row's token 0
        if T <= 1:
            return first[:, :T]
        cache = getattr(out, self.cache_name)
        cache.reorder_cache(rows)  # (U, …) → (B, …): each row's prompt keys and values
        fed = [list(c[: T - 1]) for c in completion_ids]
        tokens = torch.tensor([f + [pad] * (T - 1 - len(f)) for f in fed], device=device)  # (B, T-1)
        fed_mask = torch.tensor([[1] * len(f) + [0] * (T - 1 - len(f)) for f in fed], device=device)  # (B, T-1)
        attn = torch.cat([prompt_mask[rows], fed_mask], dim=1)  # (B, L + T-1)
        steps = positions[rows, -1:] + 1 + torch.arange(T - 1, device=device)  # (B, T-1)
        out = self.model(input_ids=tokens, attention_mask=attn, position_ids=steps, use_cache=True,
                         **{self.cache_name: cache})
        return torch.cat([first, out.logits], dim=1)  # (B, T, V)

    def choice_token_ids(self, choices: Sequence[str]) -> list[list[int]]:
        """For each choice, the first tokens of all its spellings (`spellings`), leaving out
        any token that also starts another choice (a shared " " or "<" would count for both)."""
        firsts = [
            {ids[0] for ids in (self.tokenizer(v, add_special_tokens=False)["input_ids"] for v in spellings(c)) if ids}
            for c in choices
        ]
        kept = [sorted(f - set().union(*(g for j, g in enumerate(firsts) if j != i))) for i, f in enumerate(firsts)]
        for choice, ids in zip(choices, kept):
            if not ids:
                raise ValueError(f"choice {choice!r} has no first token of its own among {list(choices)}")
        return kept

    @torch.no_grad()
    def choice_logprobs(self, prompts: Sequence[Prompt], choices: Sequence[str]) -> torch.Tensor:
        """log p(choice | prompt) read at its first token, shape (len(prompts), len(choices)).

        Used to read a judge's answer: choices=("yes", "no") gives the model's odds of each.
        A choice's probability is the sum over the first tokens of all its spellings ("yes",
        "Yes", "YES", " yes", …; see `choice_token_ids`), so a model that answers "Yes" is read
        as saying yes: log p(c) = logsumexp_{t in tokens(c)} log p(t).
        """
        token_sets = self.choice_token_ids(choices)
        rows = [self.encode(p) for p in prompts]
        out = []
        for start in range(0, len(rows), self.max_batch_rows):
            chunk = rows[start : start + self.max_batch_rows]
            L = max(len(r) for r in chunk)
            ids = torch.full((len(chunk), L), self.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), L), dtype=torch.long)
            for i, r in enumerate(chunk):
                ids[i, L - len(r) :] = torch.tensor(r)
                mask[i, L - len(r) :] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = self.model(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                position_ids=positions.to(self.device), **self.last_logits_only,
            ).logits[:, -1, :].float()  # (b, V)
            logp = logits.log_softmax(-1).cpu()  # (b, V)
            out.append(torch.stack([logp[:, t].logsumexp(-1) for t in token_sets], dim=-1))  # (b, C)
        return torch.cat(out)


def spellings(choice: str) -> list[str]:
    """The ways a model may write a one-word answer: as given, lower, upper and title case,
    each with and without a leading space ("yes" → "yes", "YES", "Yes", " yes", " YES", " Yes")."""
    cases = dict.fromkeys([choice, choice.lower(), choice.upper(), choice.capitalize()])
    return [prefix + c for prefix in ("", " ") for c in cases]
