"""Token log-probabilities in OpenAI's shapes, from a Completion's logprobs and alternatives.

Chat: `choices[i].logprobs.content[j] = {token, logprob, bytes, top_logprobs: [{token, logprob,
bytes}]}`; completions: `choices[i].logprobs = {tokens, token_logprobs, top_logprobs: [{token:
logprob}], text_offset}`. One entry per generated token (a final end-of-sequence token
included), so they add up to usage.completion_tokens. Every value is from the distribution the
sampled token's logprob comes from (the model at temperature 1, `Completion.logprobs`), and
the alternatives are the most likely tokens of that distribution, most likely first.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

from sharpen.models.base import Completion

UNLIKELY = -9999.0
"""Stands for a logprob of -inf, which JSON cannot carry (OpenAI uses the same value)."""


def _finite(value: float) -> float:
    return value if math.isfinite(value) else UNLIKELY


def _entry(text: str, value: float) -> dict:
    return {"token": text, "logprob": _finite(value), "bytes": list(text.encode("utf-8"))}


def openai_logprobs(piece: Optional[Callable[[int], str]], completion: Completion, chat: bool, top: int) -> dict:
    """OpenAI's logprobs object for one choice with `top` alternatives per token; `piece(id)` is
    a token's text (a policy without it gives empty texts)."""
    values = list(completion.logprobs)
    ids = completion.token_ids if len(completion.token_ids) == len(values) else ()
    text = piece if piece is not None and ids else (lambda _: "")
    tokens = [text(t) for t in ids] if ids else [""] * len(values)
    alternatives: list[list[tuple[int, float]]] = [list(a)[:top] for a in completion.top_logprobs] if top else []
    alternatives += [[] for _ in range(len(values) - len(alternatives))]
    if chat:
        content = [{**_entry(t, v), "top_logprobs": [_entry(text(i), lp) for i, lp in alts]}
                   for t, v, alts in zip(tokens, values, alternatives)]
        return {"content": content, "refusal": None}
    offsets, at = [], 0
    for t in tokens:
        offsets.append(at)
        at += len(t)
    top_maps: Any = [{text(i): _finite(lp) for i, lp in alts} for alts in alternatives] if top else None
    return {"tokens": tokens, "token_logprobs": [_finite(v) for v in values], "top_logprobs": top_maps,
            "text_offset": offsets}
