"""Shared fixtures: a tiny embedded-format model built in seconds (mechanics only; claims
of improvement use the real default model in tests marked slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sharpen.models.embedded import MixturePart, Recipe

TINY_RECIPE = Recipe(
    layers=1, width=32, heads=2, mlp=64, steps=4, batch_size=8, warmup=1,
    mixture=(MixturePart("solve", "addition", {"digits": 2}, 1.0),
             MixturePart("judge", "addition", {"digits": 2}, 0.5),
             MixturePart("retry", "addition", {"digits": 2}, 0.5)),
)


@pytest.fixture(scope="session")
def tiny_recipe() -> Recipe:
    return TINY_RECIPE


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sharpen-cache")


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_cache) -> Path:
    """A tiny model in the embedded default's format, built once per test session."""
    from sharpen.models.embedded import ensure_default_model

    mp = pytest.MonkeyPatch()
    mp.setenv("SHARPEN_CACHE", str(tiny_cache))
    try:
        return ensure_default_model(TINY_RECIPE, progress=False)
    finally:
        mp.undo()


@pytest.fixture()
def tiny_policy(tiny_model_dir):
    from sharpen.models.hf import HFPolicy

    return HFPolicy.load(tiny_model_dir, device="cpu", seed=0)


@pytest.fixture(scope="session")
def tiny_chat_dir(tmp_path_factory) -> Path:
    """A tiny random Llama with a real BPE tokenizer and a chat template (tests/tiny_chat_llama.py)."""
    from tiny_chat_llama import build_tiny_chat_llama

    return build_tiny_chat_llama(tmp_path_factory.mktemp("tiny-chat") / "model")


@pytest.fixture()
def tiny_chat_policy(tiny_chat_dir):
    from sharpen.models.hf import HFPolicy

    return HFPolicy.load(tiny_chat_dir, device="cpu", seed=0)
