"""Independent random streams from one run seed.

A run has one `seed`, but several things draw random numbers from it: the problems of each
training step, the completions sampled at each step, each held-out evaluation batch, the
held-out multi-turn episodes. Adding small offsets to the seed (`seed + step`, `seed + b`)
makes those streams collide: with seed 0, train step b and eval batch b sampled with the same
generator seed, so the held-out samples were the training samples' twins. Instead every use
gets its own seed, a hash of (seed, purpose, index…):

    derive_seed(0, "train", 5)        # the sampling seed of train step 5
    derive_seed(0, "eval", 5)         # eval batch 5: another, unrelated stream

The same idea as numpy's `SeedSequence.spawn` (independent child streams from one entropy
source), written with a stable hash so a seed means the same on every platform and version.
"""

from __future__ import annotations

import hashlib

SEED_BITS = 62
"""Derived seeds lie in [0, 2**62), so that they and small offsets of them (turn t of an
episode samples with seed + t) stay below 2**63, which a torch generator, `random.Random`,
numpy and an OpenAI-compatible server all take."""


def derive_seed(seed: int, purpose: str, *index: int) -> int:
    """The seed of one use of a run seed: BLAKE2b of "purpose/seed/index…", cut to SEED_BITS.

    Deterministic; different (seed, purpose, index) give unrelated seeds (equal only by a
    2**-62 chance). Purposes in use: "train" (sampling at a loop step), "train_problems" (the
    problems of a loop step), "eval" (a held-out evaluation batch), "eval_turns" (held-out
    multi-turn episodes), "prompt" (one prompt's group in a seeded call: `rollouts.with_prompt_seeds`).
    """
    text = "/".join([purpose, str(int(seed)), *(str(int(i)) for i in index)])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - SEED_BITS)


__all__ = ["SEED_BITS", "derive_seed"]
