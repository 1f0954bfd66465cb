"""`sharpen eval --no-labels` and several `--model`: estimates next to truth, agreement, the line."""

import json
import shutil

import pytest
import torch

from sharpen.cli import main


@pytest.fixture(scope="module")
def three_models(tiny_model_dir, tmp_path_factory):
    """The tiny model and two copies with noisy weights (different accuracies and answers)."""
    from transformers import AutoModelForCausalLM

    paths = [str(tiny_model_dir)]
    for k, scale in enumerate((0.02, 0.2)):
        out = tmp_path_factory.mktemp(f"noisy{k}")
        shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        gen = torch.Generator().manual_seed(k)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * scale)
        model.save_pretrained(out)
        paths.append(str(out))
    return paths


def test_no_labels_prints_estimates_next_to_the_truth(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "lf.json"
    code = main(["eval", "--model", str(tiny_model_dir), "--task", "addition", "--problems", "6",
                 "--samples", "4", "--k", "1,4", "--no-labels", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "label-free estimates" in printed and "mean absolute error" in printed
    (est,) = json.loads(out.read_text())["estimates"].values()
    assert set(est) == {"pass@1", "maj@4"}
    for e in est.values():
        assert e["truth"] is not None and e["abs_error"] == pytest.approx(abs(e["value"] - e["truth"]))
        assert 0.0 <= e["ci"][0] <= e["value"] <= e["ci"][1] <= 1.0


def test_three_models_give_cross_agreement_and_the_agreement_line(tmp_path, three_models, capsys):
    out = tmp_path / "lf.json"
    argv = ["eval", "--task", "addition", "--problems", "6", "--samples", "4", "--k", "1,4", "--json", str(out)]
    for m in three_models:
        argv += ["--model", m]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "cross-model agreement" in printed and "ALine-S" in printed
    report = json.loads(out.read_text())
    assert [(p["a"], p["b"]) for p in report["cross_agreement"]] == [
        (three_models[0], three_models[1]), (three_models[0], three_models[2]), (three_models[1], three_models[2])]
    line = report["agreement_on_the_line"]
    assert len(line["aline_s"]) == len(line["aline_d"]) == 3
    assert all(0.0 <= v <= 1.0 for v in line["aline_s"] + line["aline_d"])


def test_label_free_needs_two_samples_and_no_turns(capsys):
    assert main(["eval", "--task", "addition", "--samples", "1", "--k", "1", "--no-labels"]) == 1
    assert "at least 2 samples" in capsys.readouterr().out
    assert main(["eval", "--task", "addition", "--turns", "2", "--no-labels"]) == 1
    assert "--turns cannot" in capsys.readouterr().out
