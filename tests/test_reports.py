"""Reports: HTML and PNGs from a synthetic run store, escaping, unfinished runs, comparisons."""

import json
import math
import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from sharpen.reports import compare_runs, write_report
from sharpen.reports.data import before_after, eval_curves, load_run
from sharpen.reports.html import fmt, fmt_delta, fmt_estimate
from sharpen.reports.plots import moving_average, plot_turn_accuracy, smoothing_window
from sharpen.runs import CompletionRecord, RunStore

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVIL = '<script>alert("x")</script> & <b>bold</b>'

# held-out pass@1 at steps 0 / 10 / 20 with its interval
PASS1 = {0: (0.41, 0.33, 0.49), 10: (0.62, 0.55, 0.69), 20: (0.87, 0.81, 0.92)}


def make_run(run_dir: Path, *, summary: bool = True, turns: bool = False, scale: float = 1.0) -> Path:
    rng = np.random.default_rng(0)
    with RunStore(run_dir) as store:
        store.write_config({"task": {"name": "addition", "digits": 2}, "learner": "grpo", "lr": 3e-4})
        for step in range(0, 21):
            with store.step(step) as w:
                values: dict[str, float] = {}
                if step > 0:
                    reward = min(1.0, 0.4 + 0.025 * step + 0.1 * rng.standard_normal())
                    values.update({
                        "reward/mean": reward, "reward/std": 0.3, "reward/frac_zero_std": 0.5 - 0.02 * step,
                        "rewards/correct/mean": reward, "rewards/format/mean": 0.9,
                        "train/accuracy": reward, "loss": 1.0 / step, "pg_loss": -0.1 / step,
                        "clip_frac": 0.1, "approx_kl": 0.01 * step, "kl_ref": float("nan"),
                        "entropy": 2.0 - 0.05 * step, "lr": 3e-4, "step_seconds": 0.15,
                        "something/unknown": 42.0,
                    })
                if step in PASS1:
                    v, lo, hi = (x * scale for x in PASS1[step])
                    values.update({"eval/pass@1": v, "eval/pass@1/lo": lo, "eval/pass@1/hi": hi})
                    values.update({"eval/pass@8": 0.99, "eval/maj@8": 0.9, "eval/tokens_per_problem": 31.5 - step})
                    if turns:
                        for k in (1, 2):
                            acc = v + 0.05 * (k - 1)
                            values.update({f"eval/turn{k}/accuracy": acc,
                                           f"eval/turn{k}/accuracy/lo": acc - 0.05,
                                           f"eval/turn{k}/accuracy/hi": acc + 0.05})
                w.metrics(values)
                if step >= 19:
                    w.completions([
                        CompletionRecord(f"add/{step}", "3+4=", EVIL, reward=0.0, extras={"answer": "<none>"}),
                        CompletionRecord(f"add/{step}b", "5+5=", "10", reward=1.0),
                    ])
    if summary:
        (run_dir / "summary.json").write_text(json.dumps({
            "baseline": {"pass@1": {"value": 0.41 * scale, "ci": [0.33 * scale, 0.49 * scale]},
                         "tokens_per_problem": {"value": 31.5, "ci": [30.0, 33.25]}},
            "final": {"pass@1": {"value": 0.87 * scale, "ci": [0.81 * scale, 0.92 * scale]},
                      "tokens_per_problem": {"value": 11.5, "ci": [10.0, 13.0]}},
            "wall_seconds": 12.25,
            "train_seconds": 10.5,
        }))
    return run_dir


def images(page: Path) -> list[Path]:
    """The PNGs an HTML page references, checked to be beside it and valid."""
    srcs = re.findall(r'<img src="([^"]+)"', page.read_text(encoding="utf-8"))
    assert srcs, "the page shows no images"
    paths = []
    for src in srcs:
        assert "/" not in src and not src.startswith("http")  # relative, beside the page
        path = page.parent / unquote(src)
        data = path.read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 1000, path
        paths.append(path)
    return paths


def test_moving_average_hand_computed():
    assert moving_average([0, 3, 6, 9, 12], 3).tolist() == [1.5, 3.0, 6.0, 9.0, 10.5]
    assert moving_average([1, 2, 3], 1).tolist() == [1, 2, 3]
    assert moving_average([2.0, 4.0], 5).tolist() == [3.0, 3.0]  # window wider than the data
    assert smoothing_window(5) == 1 and smoothing_window(100) == 11 and smoothing_window(10_000) == 51


def test_number_formats():
    assert fmt(0.41) == "0.410" and fmt(31.5) == "31.5" and fmt(12345.6) == "12346" and fmt(math.nan) == "–"
    assert fmt(3e-4) == "3.00e-04" and fmt(0.0) == "0.000"
    assert fmt_delta(0.87 - 0.41) == "+0.460" and fmt_delta(-20.0) == "-20.0"
    assert fmt_estimate(None) == "–"


def test_report_of_a_finished_run(tmp_path):
    run_dir = make_run(tmp_path / "add2")
    page = write_report(run_dir)
    assert page == run_dir / "report.html"
    text = page.read_text(encoding="utf-8")

    pngs = images(page)
    assert {p.name for p in pngs} == {"report-eval.png", "report-training.png"}  # no turns logged
    # before/after from summary.json: value [interval], and the difference
    assert "0.410 [0.330, 0.490]" in text and "0.870 [0.810, 0.920]" in text and "+0.460" in text
    assert "31.5 [30.0, 33.2]" in text and "-20.0" in text
    assert "from summary.json" in text and "wall_seconds" in text and "12.2" in text
    # completions escaped, and no script of any kind on the page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in text
    assert "<script" not in text and "&lt;none&gt;" in text
    assert "add/20" in text and "add/19" in text
    # config rendered as YAML-ish text; unknown metrics still listed
    assert "learner: grpo" in text and "digits: 2" in text
    assert "something/unknown" in text
    assert "http://" not in text and "https://" not in text


def test_report_of_an_unfinished_run_uses_the_store(tmp_path):
    run_dir = make_run(tmp_path / "partial", summary=False)
    page = write_report(run_dir, out=tmp_path / "elsewhere" / "partial.html")
    assert page == tmp_path / "elsewhere" / "partial.html"
    assert {p.name for p in images(page)} == {"partial-eval.png", "partial-training.png"}
    text = page.read_text(encoding="utf-8")
    assert "no summary.json" in text and "step 20" in text
    assert "0.410 [0.330, 0.490]" in text and "0.870 [0.810, 0.920]" in text and "+0.460" in text
    rows, _ = before_after(load_run(run_dir))
    assert rows[0].metric == "pass@1" and rows[0].base.value == pytest.approx(0.41)


def test_turn_accuracy_plot_when_turns_are_logged(tmp_path):
    run_dir = make_run(tmp_path / "retry", turns=True)
    page = write_report(run_dir, out=tmp_path / "out")
    assert page == tmp_path / "out" / "report.html"
    assert "report-turns.png" in {p.name for p in images(page)}
    curves = eval_curves(load_run(run_dir).series)
    assert curves["turn2/accuracy"].lo == pytest.approx((0.41, 0.62, 0.87))
    assert plot_turn_accuracy({"pass@1": curves["pass@1"]}, tmp_path / "none.png") is None


def test_report_of_an_empty_run(tmp_path):
    RunStore(tmp_path / "empty").close()
    text = write_report(tmp_path / "empty").read_text(encoding="utf-8")
    assert "No held-out evaluations logged." in text and "No completions stored." in text
    assert "<img" not in text


def test_compare_two_runs(tmp_path):
    a = make_run(tmp_path / "grpo")
    b = make_run(tmp_path / "star", summary=False, scale=0.5)
    write_report(a)
    page = compare_runs([a, b], tmp_path / "cmp")
    assert page == tmp_path / "cmp" / "compare.html"
    assert [p.name for p in images(page)] == ["compare-eval.png"]
    text = page.read_text(encoding="utf-8")
    assert "grpo" in text and "star" in text
    assert "0.410 → 0.870 (+0.460)" in text  # from grpo's summary.json
    assert "0.205 → 0.435 (+0.230)" in text  # from star's store
    assert 'href="../grpo/report.html"' in text


def test_missing_store_names_the_directory(tmp_path):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="not-a-run.*run.sqlite"):
        write_report(empty)
    assert not (empty / "run.sqlite").exists()  # reading did not create a store
    with pytest.raises(FileNotFoundError, match="missing"):
        compare_runs([tmp_path / "missing"], tmp_path / "cmp")


def test_broken_summary_names_the_file(tmp_path):
    run_dir = make_run(tmp_path / "bad", summary=False)
    (run_dir / "summary.json").write_text("{not json")
    with pytest.raises(ValueError, match="summary.json"):
        write_report(run_dir)


def test_compare_shows_each_base_turn_curve_next_to_the_trained_one(tmp_path):
    rise = make_run(tmp_path / "rise", turns=True)
    score = make_run(tmp_path / "score", turns=True, scale=0.5)
    plain = make_run(tmp_path / "grpo")
    page = compare_runs([rise, score, plain], tmp_path / "cmp")
    assert [p.name for p in images(page)] == ["compare-eval.png", "compare-turns.png"]
    assert "Accuracy per turn" in page.read_text(encoding="utf-8")
    no_turns = compare_runs([plain], tmp_path / "plain")
    assert [p.name for p in images(no_turns)] == ["compare-eval.png"]
