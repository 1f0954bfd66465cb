"""Independent random streams: training and held-out evaluation never share a seed."""

from __future__ import annotations

import hashlib

from sharpen.learners.base import step_seed
from sharpen.seeds import SEED_BITS, derive_seed


def test_derive_seed_by_hand():
    digest = hashlib.blake2b(b"train/0/5", digest_size=8).digest()
    assert derive_seed(0, "train", 5) == int.from_bytes(digest, "big") >> 2 == 3386669282752300319
    assert derive_seed(0, "train", 5) == derive_seed(0, "train", 5)  # a function of its arguments only
    assert 0 <= derive_seed(-3, "eval") < 2**SEED_BITS


def test_train_steps_and_eval_batches_never_share_a_seed():
    for seed in range(4):
        train = {step_seed(seed, step) for step in range(1, 2001)}
        held_out = {derive_seed(seed, "eval", b) for b in range(200)}
        turns = {derive_seed(seed, "eval_turns") + t for t in range(10)}
        assert len(train) == 2000 and len(held_out) == 200
        assert not train & held_out and not train & turns and not held_out & turns
    # the old streams: seed + b for eval batch b, seed * 1_000_003 + step for train step
    # b, equal for seed 0
    assert step_seed(0, 3) != derive_seed(0, "eval", 3)
    assert derive_seed(0, "eval", 3) != derive_seed(1, "eval", 3) != derive_seed(0, "eval", 4)
