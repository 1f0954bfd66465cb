"""Shared fixtures: a tiny embedded-format model built in seconds (mechanics only; claims
of improvement use the real default model in tests marked slow), and a run to kill mid-way."""

from __future__ import annotations

import sys
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


HELD_RUN = """\
import sys, time
from sharpen.runs.store import RunStore

write_step = RunStore.step


def held(self, step):
    if step > {stored}:  # this step's work (and its checkpoint, if due) is done, its rows not yet written
        time.sleep(120)  # until the test kills the process
    return write_step(self, step)


RunStore.step = held
from sharpen.cli import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture()
def held_run_command():
    """argv of `sharpen run ARGS…` in a child process that stores steps up to `stored`, then
    computes the next one and holds before storing it, until it is killed: a kill -9 in the
    middle of a run that no machine is fast enough to finish first (the plain CLI, polled,
    once finished a 6-step run between two polls)."""

    def command(stored: int, *args: str) -> list[str]:
        return [sys.executable, "-c", HELD_RUN.format(stored=stored), "run", *args]

    return command
