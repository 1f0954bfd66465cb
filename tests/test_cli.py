"""Each CLI command end to end, on the tiny model (mechanics only)."""

from __future__ import annotations

import json

from sharpen.cli import main


def test_eval_prints_a_table_and_writes_json(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "eval.json"
    code = main(["eval", "--model", str(tiny_model_dir), "--task", "addition", "--problems", "6",
                 "--samples", "4", "--k", "1,4", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "pass@4" in printed and "95% CI" in printed
    report = json.loads(out.read_text())
    assert report["task"] == "addition"
    assert set(report["metrics"]) == {"accuracy", "pass@1", "pass@4", "maj@4"}
    for metric in report["metrics"].values():
        lo, hi = metric["ci"]
        assert 0.0 <= lo <= metric["value"] <= hi <= 1.0
    assert report["tokens_per_problem"] > 0


def test_eval_with_task_options(tmp_path, tiny_model_dir):
    out = tmp_path / "eval.json"
    code = main(["eval", "--model", str(tiny_model_dir), "--task", "addition", "--task-option", "digits=1",
                 "--problems", "3", "--k", "1", "--json", str(out)])
    assert code == 0
    from sharpen.evaluation import evaluate
    from sharpen.models import load_policy
    from sharpen.tasks import get_task

    report = json.loads(out.read_text())
    # the option reached the task: the same evaluation of one-digit addition, done directly
    direct = evaluate(load_policy(str(tiny_model_dir), seed=0), get_task("addition", digits=1), n_problems=3,
                      samples=1, ks=[1], temperature=1.0, seed=0, split="eval")
    assert report["n_problems"] == 3 and report["samples"] == 1
    assert report["metrics"]["pass@1"]["value"] == direct.metrics["pass@1"].value
    assert report["tokens_per_problem"] == direct.tokens_per_problem


def test_unknown_task_lists_the_known_ones(capsys):
    assert main(["eval", "--task", "adition"]) == 1
    err = capsys.readouterr().out
    assert "unknown task 'adition'" in err and "addition" in err and "countdown" in err


def test_unknown_config_key_names_file_line_and_key(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("steps: 3\nlearner:\n  advantage: grpo\n  learning_rate: 1e-3\n")
    assert main(["run", str(cfg)]) == 1
    err = capsys.readouterr().out
    assert "bad.yaml:4" in err and "learner.learning_rate" in err


def test_wrong_type_in_an_override_is_an_error(tmp_path, capsys):
    cfg = tmp_path / "ok.yaml"
    cfg.write_text("steps: 3\n")
    assert main(["run", str(cfg), "steps=many"]) == 1
    assert "steps" in capsys.readouterr().out


def test_tasks_lists_registered_tasks(capsys):
    assert main(["tasks"]) == 0
    assert {"addition", "multiplication", "countdown", "jsonl", "reasoning_gym"} <= set(capsys.readouterr().out.split())


def test_bad_k_is_a_clear_error(capsys):
    assert main(["eval", "--task", "addition", "--k", "one"]) == 2  # an argparse error
    assert "argument --k: 'one' must be comma-separated integers" in capsys.readouterr().err


def test_run_then_report(tmp_path, tiny_model_dir, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"model: {tiny_model_dir}\nsteps: 2\nproblems_per_step: 2\nsampling: {{group_size: 2}}\n"
                   f"eval: {{every: 2, problems: 4, samples: 2, ks: [1, 2]}}\nrun_dir: {tmp_path / 'r'}\n")
    assert main(["run", str(cfg)]) == 0
    assert (tmp_path / "r" / "report.html").exists()
    assert main(["report", str(tmp_path / "r")]) == 0
    assert main(["report", str(tmp_path / "r"), str(tmp_path / "r"), "--out", str(tmp_path / "c.html")]) == 0
    assert (tmp_path / "c.html").exists()


def test_eval_turns_prints_turn_metrics_and_writes_json(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "turns.json"
    code = main(["eval", "--model", str(tiny_model_dir), "--task", "addition", "--problems", "5", "--samples", "2",
                 "--turns", "3", "--feedback", "none", "--neutral", "wrong", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "turn3/accuracy" in printed and "delta_i_to_c" in printed and "feedback none" in printed
    report = json.loads(out.read_text())
    assert report["turns"] == 3 and report["feedback"] == "none" and report["episodes_per_problem"] == 2
    assert {"turn1/accuracy", "m1@t1", "m1@tT", "p1@tT", "maj@turns", "delta_t1_tT", "delta_i_to_c",
            "delta_c_to_i", "tokens_per_problem"} <= set(report["metrics"])
    for name, metric in report["metrics"].items():
        lo, hi = metric["ci"]
        assert lo <= metric["value"] <= hi, name


def test_eval_turns_errors(capsys):
    assert main(["eval", "--task", "addition", "--turns", "1"]) == 2
    assert "argument --turns: 1 is out of range: use an integer >= 2" in capsys.readouterr().err
    assert main(["eval", "--task", "addition", "--turns", "2", "--feedback", "oracle"]) == 2
    assert "argument --feedback: invalid choice: 'oracle'" in capsys.readouterr().err
