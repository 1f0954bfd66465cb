"""A Hugging Face transformers policy: batched sampling and token log-probs, CPU or GPU.

Sampling is the cached loop of `sharpen.models.sampling` (on the model's device, rows that
ended leave the batch, stop strings found by incremental decoding); it returns each sampled
token's log-prob under the model (temperature 1) and under the distribution it was drawn from
(the behaviour policy of the learners' importance ratios). The G completions of one prompt
share its prefill. Scoring given completions (log-probs with a gradient, for the
learners) is `sharpen.models.scoring`.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from sharpen.models import sampling, scoring
from sharpen.models.base import Completion, SamplingParams, TokenScores
from sharpen.models.formats import TemplateSet, as_messages
from sharpen.models.sampling import TokenCallback
from sharpen.tasks.base import Prompt


def pick_device(device: Optional[str] = None) -> torch.device:
    """The requested device, else CUDA when present, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        """Sampling's random stream when a call gives no seed, on the model's device."""
        self.context_length = sampling.context_length(model, tokenizer)
        """The longest prompt + completion the model takes (None: not known)."""
        self.templates: Optional[TemplateSet] = None
        """The prompt template set a user chose for this model (`formats.use_prompts`); None:
        the one `formats.template_set_for` picks."""
        self.pieces: dict[int, str] = {}
        takes_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.last_logits_only = {"logits_to_keep": 1} if takes_keep else {}
        """Forward kwargs that compute logits at the last position only (a prompt's full
        logits are (B, L, V): gigabytes for a 150k vocabulary)."""
        self.micro_batch_tokens = scoring.default_micro_batch_tokens(model.config)
        """Forward positions scored at once at most (`learner.micro_batch_tokens` in a run; by
        default as many as `scoring.ACTIVATION_BUDGET_BYTES` of activations hold)."""
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
        """For each prompt, `params.n` sampled completions; `on_token` sees each token as sampled.
        A prompt whose tokens plus max_new_tokens exceed the model's context is a ContextLengthError."""
        prompt_ids = [self.encode(p) for p in prompts]
        sampling.check_context_length(prompt_ids, params.max_new_tokens, self.context_length)
        rows = [ids for ids in prompt_ids for _ in range(params.n)]  # prompt i at rows i*n..i*n+n-1
        generator: Union[torch.Generator, list[torch.Generator]] = self.generator
        if params.prompt_seeds:
            if len(params.prompt_seeds) != len(prompts):
                raise ValueError(f"SamplingParams.prompt_seeds has {len(params.prompt_seeds)} seeds for "
                                 f"{len(prompts)} prompts; give one per prompt")
            own = [torch.Generator(device=self.device).manual_seed(s) for s in params.prompt_seeds]
            generator = [g for g in own for _ in range(params.n)]  # row → its prompt's generator
        elif params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        flat: list[Completion] = []
        chunk = max(params.n, self.max_batch_rows // params.n * params.n)  # whole groups per chunk
        for start in range(0, len(rows), chunk):
            chunk_callback = None
            if on_token is not None:
                chunk_callback = (lambda offset: lambda row, token: on_token(offset + row, token))(start)
            rows_generator = generator[start : start + chunk] if isinstance(generator, list) else generator
            flat.extend(self.sample_ids(rows[start : start + chunk], params, rows_generator, chunk_callback))
        return [flat[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]

    def sample_ids(
        self, prompt_ids: list[list[int]], params: SamplingParams,
        generator: Union[torch.Generator, list[torch.Generator]], on_token: Optional[TokenCallback] = None,
    ) -> list[Completion]:
        """Sample one completion for each row of prompt token ids (`sampling.sample_ids`)."""
        return sampling.sample_ids(self, prompt_ids, params, generator, on_token)

    def piece(self, token_id: int) -> str:
        """The text of one token alone (cached): the token strings of OpenAI-style logprobs."""
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
