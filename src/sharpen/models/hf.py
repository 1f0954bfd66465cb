"""A Hugging Face transformers policy: batched sampling and token log-probs, CPU or GPU.

Sampling is a plain cached loop (prefill once, then one token per step with the KV cache)
that returns each sampled token's log-prob under the model (temperature 1) and under the
distribution it was drawn from (temperature and top-p applied: the behaviour policy of the
learners' importance ratios), at the speed of
`model.generate` (measured at parity on the default model: 54 ms per 16 × 8 completions).
The G completions of one prompt share its prefill. Scoring given completions (log-probs with a
gradient, for the learners) is `sharpen.models.scoring`.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from sharpen.models import scoring
from sharpen.models.base import Completion, SamplingParams, TokenScores
from sharpen.models.formats import TemplateSet, as_messages
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
        self.templates: Optional[TemplateSet] = None
        """The prompt template set a user chose for this model (`formats.use_prompts`); None:
        the one `formats.template_set_for` picks."""
        self.pieces: dict[int, str] = {}
        takes_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.last_logits_only = {"logits_to_keep": 1} if takes_keep else {}
        """Forward kwargs that compute logits at the last position only (a prompt's full
        logits are (B, L, V): gigabytes for a 150k vocabulary)."""
        self.micro_batch_tokens = scoring.DEFAULT_MICRO_BATCH_TOKENS
        """Forward positions scored at once at most (`learner.micro_batch_tokens` in a run)."""
        self.autocast_dtype: Optional[torch.dtype] = None
        """Forward passes of scoring run under autocast to this dtype (bf16 when training on CUDA)."""
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
        generator = self.generator
        if params.seed is not None:
            generator = torch.Generator(device="cpu").manual_seed(params.seed)
        flat: list[Completion] = []
        for start in range(0, len(rows), self.max_batch_rows):
            chunk_callback = None
            if on_token is not None:
                chunk_callback = (lambda offset: lambda row, token: on_token(offset + row, token))(start)
            flat.extend(self.sample_ids(rows[start : start + self.max_batch_rows], params, generator, chunk_callback))
        return [flat[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]

    @torch.no_grad()
    def sample_ids(
        self, prompt_ids: list[list[int]], params: SamplingParams, generator: torch.Generator,
        on_token: Optional[TokenCallback] = None,
    ) -> list[Completion]:
        """Sample one completion for each row of prompt token ids (left-padded batch)."""
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
                token = torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(device)  # (B,)
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
        position's entropy and self-certainty. Logits exist only at completion positions, a
        chunk at a time, and rows that share a prompt share its pass: `sharpen.models.scoring`.
        """
        return scoring.score_tokens(
            self.model, prompt_ids, completion_ids, pad_id=self.tokenizer.pad_token_id, temperature=temperature,
            extras=extras, max_tokens=self.micro_batch_tokens, autocast_dtype=self.autocast_dtype,
        )

    def micro_batches(
        self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]],
        units: Optional[Sequence[Sequence[int]]] = None,
    ) -> list[list[int]]:
        """Row indices of micro-batches of at most `micro_batch_tokens` forward positions each,
        `units` (rows that must stay together) whole: `sharpen.models.scoring.micro_batches`."""
        return scoring.micro_batches(prompt_ids, completion_ids, self.micro_batch_tokens, units,
                                     share=not scoring.recomputes_layers(self.model))

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
