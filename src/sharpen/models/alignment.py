"""Which sampled token covers which character of a completion's text.

A completion's text is the decoding of its token ids (without special tokens, cut before a
stop string). Re-encoding that text need not give the sampled ids back (BPE has many
spellings of one string), so the alignment decodes the sampled ids themselves, one prefix at
a time (incremental decoding): token k ends at character len(decode(ids[:k+1])). It serves
the embedded character-level tokenizer and byte-level BPE alike, and agrees with a fast
tokenizer's offsets wherever re-encoding gives the sampled ids back (a test checks it): a
token that decodes to nothing (end-of-sequence) covers no character, and a character spelt
in several byte-level tokens is covered by the first of them (its partial decoding already
shows a replacement character there).

Span rewards use it to find the token a span's reward goes on
(`sharpen.learners.policy_gradient.token_rewards`).
"""

from __future__ import annotations

from typing import Sequence


def token_char_ends(tokenizer, token_ids: Sequence[int]) -> list[int]:
    """ends[k] = number of characters decoded from token_ids[:k+1] (special tokens skipped),
    non-decreasing; a tokenizer that rewrites a prefix on decoding (clean-up of spaces) cannot
    make it shrink."""
    ends, longest = [], 0
    for k in range(len(token_ids)):
        longest = max(longest, len(tokenizer.decode(list(token_ids[: k + 1]), skip_special_tokens=True)))
        ends.append(longest)
    return ends


def covering_token(char_ends: Sequence[int], char: int) -> int:
    """The index of the first token whose decoded prefix reaches past `char` (the token that
    covers that character); the last token when no token does (a character past the text)."""
    if not char_ends:
        raise ValueError("a completion without tokens has no token to put a reward on")
    for k, end in enumerate(char_ends):
        if end > char:
            return k
    return len(char_ends) - 1
