"""Claims of improvement, on the real embedded default model (slow: minutes on 2 cores).

Run with `.venv/bin/python -m pytest -m slow`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sharpen.config import load_config
from sharpen.loop import RunConfig, quickstart, run_config

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytestmark = pytest.mark.slow


def gain(summary: dict) -> tuple[float, bool]:
    """pass@1 gain, and whether the 95% intervals of base and final are disjoint."""
    base, final = summary["baseline"]["pass@1"], summary["final"]["pass@1"]
    return final["value"] - base["value"], final["ci"][0] > base["ci"][1]


def run_example(name: str, run_dir: Path) -> dict:
    """The summary of examples/NAME.yaml run as shipped."""
    return run_config(load_config(EXAMPLES / f"{name}.yaml", RunConfig), run_dir / name, progress=False)


@pytest.fixture(scope="module")
def quickstart_summary(tmp_path_factory):
    return quickstart(run_dir=tmp_path_factory.mktemp("quickstart") / "run", progress=False)


def test_default_model_is_weak_but_not_hopeless(quickstart_summary):
    base = quickstart_summary["baseline"]
    assert 0.15 <= base["pass@1"]["value"] <= 0.60
    assert base["pass@8"]["value"] >= 1.5 * base["pass@1"]["value"]


def test_quickstart_lifts_pass_at_1_by_20_points(quickstart_summary):
    delta, disjoint = gain(quickstart_summary)
    assert delta >= 0.20 and disjoint, quickstart_summary


def test_label_free_example_reaches_half_the_gain_without_labels(quickstart_summary, tmp_path):
    delta, disjoint = gain(run_example("label_free", tmp_path))
    supervised, _ = gain(quickstart_summary)
    assert delta >= 0.5 * supervised and disjoint, (delta, supervised)


def test_the_real_default_model_loads_through_the_auto_classes():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sharpen.models.embedded import Recipe, ensure_default_model, model_dir

    path = ensure_default_model(progress=False)
    assert path == model_dir(Recipe())
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == "llama" and tokenizer.chat_template
    assert 500_000 < sum(p.numel() for p in model.parameters()) < 2_000_000


@pytest.mark.parametrize("name", ["rft", "star", "irpo"])
def test_learning_from_verified_samples_beats_the_base_model(name, tmp_path):
    delta, disjoint = gain(run_example(name, tmp_path))
    assert delta > 0 and disjoint, (name, delta)


def test_a_label_free_learner_beats_the_base_model(tmp_path):
    gains = {name: gain(run_example(name, tmp_path)) for name in ("sharpening", "scpo", "self_rewarding")}
    assert any(delta > 0 and disjoint for delta, disjoint in gains.values()), gains


def test_self_consistency_beats_a_single_sample_on_the_default_model():
    from sharpen.evaluation.compare import compare_strategies
    from sharpen.models import load_policy
    from sharpen.tasks import get_task

    comparison = compare_strategies(load_policy("default", progress=False), get_task("addition"),
                                    ["single", "self_consistency-8"], problems=200)
    single, voted = comparison.strategies
    assert voted.ci[0] > single.ci[1], comparison.to_json()["strategies"]  # disjoint 95% intervals
    assert comparison.pair("self_consistency-8", "single").winner == "self_consistency-8"


def test_rise_example_corrects_on_turn_two_and_holds_turn_one(tmp_path):
    summary = run_example("rise", tmp_path)
    base, final = summary["baseline"], summary["final"]
    assert final["turn2/accuracy"]["value"] >= final["turn1/accuracy"]["value"] + 0.10, final
    assert abs(final["turn1/accuracy"]["value"] - base["turn1/accuracy"]["value"]) <= 0.02, (base, final)


def test_score_example_fixes_more_answers_than_it_breaks(tmp_path):
    summary = run_example("score", tmp_path)
    fixed, broken = summary["final"]["delta_i_to_c"], summary["final"]["delta_c_to_i"]
    assert fixed["ci"][0] > broken["ci"][1], summary["final"]  # disjoint 95% intervals
