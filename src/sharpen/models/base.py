"""Records and the protocol every policy backend speaks."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Optional, Protocol, Sequence

if TYPE_CHECKING:
    import torch

from sharpen.seeds import derive_seed
from sharpen.tasks.base import Prompt


@dataclass(frozen=True)
class SamplingParams:
    """How to sample completions."""

    n: int = 1
    """Completions per prompt (a group)."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass; 1.0 keeps every token."""
    max_new_tokens: int = 32
    """Upper bound on generated tokens per completion."""
    stop: tuple[str, ...] = ()
    """Strings that end a completion; the stop string is not part of the returned text."""
    seed: Optional[int] = None
    """Seed for this call; None draws from the backend's own generator."""
    top_k: int = 0
    """Sample among the k most likely tokens only; 0 keeps every token."""
    min_p: float = 0.0
    """Drop tokens whose probability is below min_p × the top token's; 0 keeps every token."""
    stop_token_ids: tuple[int, ...] = ()
    """Token ids that end a completion like end-of-sequence (kept in token_ids and text)."""
    top_logprobs: int = 0
    """Also return, at each generated position, this many most likely tokens with their logprobs."""
    prompt_seeds: tuple[int, ...] = ()
    """One seed per prompt: prompt i's group is drawn from its own generator seeded with
    prompt_seeds[i], so it does not depend on which prompts share the call (rollouts sharded
    over workers sample what one process would). Empty: `seed` seeds the whole call."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"SamplingParams.n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.top_k < 0:
            raise ValueError(f"SamplingParams.top_k must be >= 0, got {self.top_k}")
        if not 0 <= self.min_p <= 1:
            raise ValueError(f"SamplingParams.min_p must be in [0, 1], got {self.min_p}")
        if self.top_logprobs < 0:
            raise ValueError(f"SamplingParams.top_logprobs must be >= 0, got {self.top_logprobs}")


def with_prompt_seeds(params: SamplingParams, n_prompts: int) -> SamplingParams:
    """`params` with one seed per prompt, prompt i's = derive_seed(params.seed, "prompt", i):
    a group's samples then depend on its seed, not on the prompts it shares a call or a worker
    with. Unchanged when it already has them, or has no seed."""
    if params.prompt_seeds or params.seed is None:
        return params
    return replace(params, prompt_seeds=tuple(derive_seed(params.seed, "prompt", i) for i in range(n_prompts)))


@dataclass(frozen=True)
class Completion:
    """One sampled answer."""

    text: str
    """Decoded text, without the prompt, the end-of-sequence token or a stop string."""
    token_ids: tuple[int, ...]
    """Generated token ids, including a final end-of-sequence token if one was sampled."""
    logprobs: tuple[float, ...]
    """log π(token | context) of each generated token under the model (temperature 1)."""
    finish_reason: str
    """"stop" (end-of-sequence or a stop string) or "length" (max_new_tokens reached)."""
    sampling_logprobs: tuple[float, ...] = ()
    """log μ(token | context) of each generated token under the distribution it was actually
    drawn from (the behaviour policy: temperature and top-p applied; 0.0 for a greedy token);
    empty when the backend does not record it. Importance ratios (PPO's clip, TOPR) use these."""
    top_logprobs: tuple[tuple[tuple[int, float], ...], ...] = ()
    """With SamplingParams.top_logprobs = k: for each generated token, the k most likely
    (token id, logprob) pairs of the distribution its logprob comes from, most likely first."""
    missing_token_ids: Optional[str] = None
    """Why `token_ids` is empty although tokens were generated (a server that returned no ids);
    None when `token_ids` are the sampled tokens."""

    @property
    def n_tokens(self) -> int:
        """Generated tokens: one per token id, or, from a backend that returns no ids (an
        OpenAI-compatible server), one per logprob; 0 when the backend reported neither.
        Every count of generated tokens (strategies, evaluation, the server's usage) reads this."""
        return len(self.token_ids) or len(self.logprobs)


class ModelSpecError(ValueError):
    """A model spec (what `load_policy` and `--model` take) cannot be used."""


class ContextLengthError(ValueError):
    """A prompt plus max_new_tokens is longer than the model's context length."""


@dataclass
class TokenScores:
    """Per-token scores of given completions under a model; tensors are (B, T)."""

    logprobs: "torch.Tensor"
    """log π(y_t | x, y_<t), 0 on padding."""
    mask: "torch.Tensor"
    """1.0 on real completion tokens, 0.0 on padding."""
    entropy: Optional["torch.Tensor"] = None
    """Entropy of the model's distribution at each position (only if asked; no gradient)."""
    self_certainty: Optional["torch.Tensor"] = None
    """KL(Uniform ‖ p_t) at each position (only if asked; no gradient)."""


class Policy(Protocol):
    """Anything that samples completions for prompts."""

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        """Return, for each prompt, `params.n` completions (a group)."""
        ...
