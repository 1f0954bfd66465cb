"""Every example config validates and opens with the command that runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sharpen.config import load_config
from sharpen.learners.policy_gradient.advantages import ADVANTAGE_ESTIMATORS, TOKEN_ADVANTAGE_ESTIMATORS
from sharpen.loop import RunConfig

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_is_valid_and_says_how_to_run_it(path):
    assert path.read_text().splitlines()[0] == f"# sharpen run examples/{path.name}"
    cfg = load_config(path, RunConfig)
    assert cfg.model == ("smollm2" if path.name.startswith("smollm2_") else "default") and cfg.steps > 0


def test_every_advantage_estimator_has_an_example():
    learners = [load_config(p, RunConfig).learner for p in EXAMPLES]
    used = {learner.advantage for learner in learners if learner.kind == "policy_gradient"}
    assert set(ADVANTAGE_ESTIMATORS) - {"signed"} <= used
    assert set(TOKEN_ADVANTAGE_ESTIMATORS) <= used


def test_every_learner_kind_has_an_example():
    from sharpen.loop import LEARNERS

    assert {load_config(p, RunConfig).learner.kind for p in EXAMPLES} == set(LEARNERS)
