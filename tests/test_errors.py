"""Every bad input gets a clear error (issue 18): a table of bad inputs run through the real
command line in subprocesses. Each must exit non-zero, print no traceback, and print an error
that names the offending key, file or argument. Every case fails before a model is built,
except the few marked TINY, which run on the tiny test model (never the real default one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sharpen.loop import RunStopped, run
from sharpen.runs import RunStore

TINY = "{tiny}"
"""Stands for the tiny test model's directory in a case's arguments or files."""

BAD_JSONL = '{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "answer": \n'
RAISING_REWARD = "def reward(prompts, completions, **columns):\n    raise ZeroDivisionError('bad reward')\n"
RAISING_FACTORY = "def make_task(size: int = 3):\n    raise KeyError('no such split')\n"
BROKEN_CHECKER_TASK = (
    "import dataclasses\n"
    "from sharpen.tasks import get_task\n"
    "def never_works(problem, text):\n"
    "    raise IndexError('checker bug')\n"
    "def make_task():\n"
    "    return dataclasses.replace(get_task('addition', digits=1), check=never_works)\n"
)
SHORT_RUN = "steps: 2\nproblems_per_step: 2\nsampling: {group_size: 2}\neval: {problems: 2, samples: 2, ks: [1]}\n"


@dataclass
class Case:
    argv: list[str]
    says: list[str]
    """What the output must contain (whitespace-normalised), e.g. the file:line and the dotted key."""
    files: dict[str, str] = field(default_factory=dict)
    status: int = 1


def run_yaml(text: str, *says: str, extra: tuple[str, ...] = (), files: dict[str, str] | None = None) -> Case:
    return Case(["run", "c.yaml", *extra], list(says), {"c.yaml": text, **(files or {})})


CASES: dict[str, Case] = {
    # the six of the issue
    "unknown advantage": run_yaml("steps: 3\nlearner: {advantage: grpoo}\n",
                                  "c.yaml:2: learner.advantage", "unknown advantage estimator 'grpoo'", "rloo"),
    "group too small for grpo": run_yaml("sampling:\n  group_size: 1\n",
                                         "c.yaml:2: sampling.group_size", "needs at least 2"),
    "run: missing model path": run_yaml("model: /nonexistent/path\n",
                                        "c.yaml:1: model", "'/nonexistent/path' does not exist", "URL#MODEL"),
    "eval: missing model path": Case(["eval", "--task", "addition", "--model", "/nonexistent/path"],
                                     ["model '/nonexistent/path'", "does not exist", "'default'"]),
    "serve: missing model path": Case(["serve", "--model", "/nonexistent/path", "--port", "0"],
                                      ["model '/nonexistent/path'", "does not exist"]),
    "model name neither built in nor local": Case(["eval", "--task", "addition", "--model", "nosuch"],
                                                  ["model 'nosuch'", "neither a built-in model name nor a local",
                                                   "a local Hugging Face checkpoint directory"]),
    "hub name while the hub is unreachable": Case(["eval", "--task", "addition", "--model", "nosuch-org/nosuch"],
                                                  ["model 'nosuch-org/nosuch'", "hub", "local Hugging Face cache"]),
    "run: prompt and max_new_tokens over the context": run_yaml(
        f"model: {TINY}\nsteps: 2\nproblems_per_step: 2\nsampling: {{group_size: 2, max_new_tokens: 200}}\n"
        "eval: {problems: 2, samples: 2, ks: [1]}\n",
        "with max_new_tokens 200", "over the model's context length of 128 tokens", "lower max_new_tokens"),
    "user reward raises": run_yaml(f"model: {TINY}\n{SHORT_RUN}rewards: [{{name: r.py:reward}}]\n",
                                   "run stopped: step 1", "reward function 'r.py:reward'", "r.py:1",
                                   "ZeroDivisionError: bad reward", "on problem 'addition/",
                                   files={"r.py": RAISING_REWARD}),
    "serve: port out of range": Case(["serve", "--port", "99999"], ["argument --port", "99999"], status=2),
    # configs
    "unknown learner kind": run_yaml("learner:\n  kind: nope\n", "c.yaml:2: learner.kind", "unknown kind 'nope'",
                                     "'rejection_sampling'"),
    "unknown weighting": run_yaml("learner: {weighting: bogus}\n", "c.yaml:1: learner.weighting", "w_reinforce"),
    "score's rloo with one episode": run_yaml("learner: {kind: score}\nsampling: {group_size: 1}\n",
                                              "c.yaml:2: sampling.group_size", "'rloo'"),
    "unknown signal": run_yaml("rewards:\n  - name: nope\n", "c.yaml:2: rewards.0.name", "unknown signal 'nope'",
                               "majority_vote"),
    "unknown signal option": run_yaml("rewards:\n  - name: correctness\n  - name: format\n    options: {x: 1}\n",
                                      "c.yaml:4: rewards.1.options", "no option 'x'", "pattern"),
    "reward file missing": run_yaml("rewards: [{name: missing.py:reward}]\n", "rewards.0.name", "missing.py"),
    "unknown task": run_yaml("task: {name: adition}\n", "c.yaml:1: task.name", "unknown task 'adition'", "countdown"),
    "unknown task option": run_yaml("task:\n  name: addition\n  options: {digitz: 2}\n",
                                    "c.yaml:3: task.options", "no option 'digitz'", "digits"),
    "task option out of range": run_yaml("task: {name: addition, options: {digits: 0}}\n",
                                         "task.options", "'digits' must be an integer >= 1"),
    "jsonl task: bad line": run_yaml("task: {name: jsonl, options: {path: bad.jsonl}}\n",
                                     "task.options", "bad.jsonl, line 2", files={"bad.jsonl": BAD_JSONL}),
    "jsonl task: no file": run_yaml("task: {name: jsonl, options: {path: nope.jsonl}}\n", "task.options", "nope.jsonl"),
    "user task factory raises": run_yaml("task: {name: t.py:make_task, options: {}}\n",
                                         "c.yaml:1: task.name", "task factory 't.py:make_task'", "t.py:1",
                                         "KeyError", files={"t.py": RAISING_FACTORY}),
    "k larger than samples": run_yaml("eval: {samples: 4, ks: [1, 8]}\n", "c.yaml:1: eval.ks", "k = 8",
                                      "samples = 4"),
    "k below one": run_yaml("eval: {ks: [0]}\n", "eval.ks", ">= 1"),
    "rise teacher missing": run_yaml("learner: {kind: rise, teacher: /no/teacher}\n", "c.yaml:1: learner.teacher",
                                     "'/no/teacher' does not exist"),
    "wrong type": run_yaml("steps: many\n", "c.yaml:1: steps", "valid integer"),
    "unknown key": run_yaml("stepz: 3\n", "c.yaml:1: stepz", "unknown key"),
    "invalid YAML": run_yaml("steps: [1,\n", "c.yaml:", "invalid YAML"),
    "config file missing": Case(["run", "nothere.yaml"], ["nothere.yaml", "config file not found"]),
    "override out of range": run_yaml("steps: 3\n", "steps", "greater than or equal to 1", "'steps=0'",
                                      extra=("steps=0",)),
    "override: k above samples": run_yaml("steps: 3\n", "eval.ks: k = 16",
                                          "(from the command-line override 'eval.ks=[1,16]')",
                                          extra=("eval.ks=[1,16]",)),
    "override without =": run_yaml("steps: 3\n", "'steps'", "expected key=value", extra=("steps",)),
    "override of an unknown key": run_yaml("steps: 3\n", "'learner.nope'", "unknown key", extra=("learner.nope=1",)),
    # the command line: eval
    "eval: task option without =": Case(["eval", "--task", "addition", "--task-option", "digits"],
                                        ["argument --task-option", "'digits' is not KEY=VALUE"], status=2),
    "eval: zero problems": Case(["eval", "--task", "addition", "--problems", "0"], ["argument --problems"], status=2),
    "eval: negative temperature": Case(["eval", "--task", "addition", "--temperature", "-1"],
                                       ["argument --temperature", ">= 0"], status=2),
    "eval: bad k": Case(["eval", "--task", "addition", "--k", "1,x"], ["argument --k"], status=2),
    "eval: k above samples": Case(["eval", "--task", "addition", "--k", "1,8", "--samples", "2"],
                                  ["--k 1,8", "--samples 2"]),
    "eval: one turn": Case(["eval", "--task", "addition", "--turns", "1"], ["argument --turns"], status=2),
    "eval: unknown task": Case(["eval", "--task", "adition"], ["unknown task 'adition'"]),
    "eval: bad task option value": Case(["eval", "--task", "addition", "--task-option", "digits=0"],
                                        ["option 'digits'"]),
    "eval: bad jsonl": Case(["eval", "--task", "jsonl", "--task-option", "path=bad.jsonl"], ["bad.jsonl, line 2"],
                            {"bad.jsonl": BAD_JSONL}),
    "eval: directory that is no checkpoint": Case(["eval", "--task", "addition", "--model", "emptydir/"],
                                                  ["not a Hugging Face checkpoint", "config.json"],
                                                  {"emptydir/.keep": ""}),
    "eval: server spec without model": Case(["eval", "--task", "addition", "--model", "http://127.0.0.1:9/v1"],
                                            ["names no served model", "#default"]),
    "eval: a checker that always raises": Case(
        ["eval", "--task", "bt.py:make_task", "--model", TINY, "--problems", "4", "--k", "1,4"],
        ["its checker 'never_works'", "bt.py:3", "IndexError: checker bug", "problem 'addition/"],
        {"bt.py": BROKEN_CHECKER_TASK}),
    # the command line: the other commands
    "compare: unknown strategy": Case(["compare", "--task", "addition", "--strategies", "single,nonsense-3"],
                                      ["unknown strategy 'nonsense'"]),
    "compare: unknown strategy option": Case(["compare", "--task", "addition", "--strategies", "single:nope"],
                                             ["single"]),
    "compare: no strategies": Case(["compare", "--task", "addition", "--strategies", ","], ["--strategies"]),
    "compare: negative budget": Case(["compare", "--task", "addition", "--strategies", "single", "--budget", "-5"],
                                     ["argument --budget"], status=2),
    "compare: task option without =": Case(["compare", "--task", "addition", "--strategies", "single",
                                            "--task-option", "x"], ["argument --task-option"], status=2),
    "serve: port not a number": Case(["serve", "--port", "http"], ["argument --port", "'http' is not an integer"],
                                     status=2),
    "serve: zero max-n": Case(["serve", "--max-n", "0"], ["argument --max-n"], status=2),
    "quickstart: zero problems": Case(["quickstart", "--problems", "0"], ["argument --problems"], status=2),
    "report: missing run directory": Case(["report", "no-such-run"], ["no-such-run", "does not exist"]),
    "report: not a run directory": Case(["report", "emptydir"], ["emptydir", "run.sqlite"], {"emptydir/.keep": ""}),
    "unknown command": Case(["trian"], ["invalid choice: 'trian'"], status=2),
}


FORKING_CLI = """
import json, os, sys
from sharpen import cli
import sharpen.evaluation, sharpen.loop  # imported once, before the forks
cases, running, status = json.loads(sys.argv[1]), {}, {}
def reap():
    pid, code = os.wait()
    status[running.pop(pid)] = os.waitstatus_to_exitcode(code)
for name, where, argv in cases:
    if len(running) >= 2:
        reap()
    pid = os.fork()
    if pid == 0:
        os.chdir(where)
        os.environ["SHARPEN_CACHE"] = os.path.join(where, "no-cache")
        for fd, stream in ((1, "stdout"), (2, "stderr")):
            os.dup2(os.open(stream, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        try:
            code = cli.main(argv)
        except SystemExit as exit_:
            code = exit_.code
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)
    running[pid] = name
while running:
    reap()
print(json.dumps(status))
"""
"""Runs each case as `sharpen.cli.main(argv)` in a process of its own, forked from one that
has imported sharpen already: the real command line with real exit statuses and output
streams, without paying the interpreter and torch start-up once per case."""

ENTRY_POINT_CASES = ["unknown advantage", "eval: task option without =", "model name neither built in nor local"]
"""Also run as `python -m sharpen.cli`, the command line exactly as a user starts it."""


@dataclass
class Outcome:
    returncode: int
    printed: str


def lay_out(case: Case, where: Path, tiny: Path) -> list[str]:
    """Write the case's files under `where`; its arguments with the tiny model's path filled in."""
    where.mkdir(parents=True)
    for name, text in case.files.items():
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_text(text.replace(TINY, str(tiny)))
    return [a.replace(TINY, str(tiny)) for a in case.argv]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, tiny_model_dir) -> dict[str, Outcome]:
    root = tmp_path_factory.mktemp("bad-inputs")
    laid = [(name, str(root / f"case{i}"), lay_out(case, root / f"case{i}", tiny_model_dir))
            for i, (name, case) in enumerate(CASES.items())]
    done = subprocess.run([sys.executable, "-c", FORKING_CLI, json.dumps(laid)], env=ENV, capture_output=True,
                          text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    status = json.loads(done.stdout.splitlines()[-1])
    return {name: Outcome(status[name], Path(where, "stdout").read_text() + Path(where, "stderr").read_text())
            for name, where, _ in laid}


def check(case: Case, done: Outcome) -> None:
    printed = done.printed
    flat = " ".join(printed.split())
    assert done.returncode == case.status, printed
    assert "Traceback" not in printed, printed
    assert "error:" in printed, printed
    for words in case.says:
        assert words in flat, f"{words!r} not in:\n{printed}"


@pytest.mark.parametrize("name", ENTRY_POINT_CASES)
def test_the_entry_point_prints_a_clear_error(tmp_path, tiny_model_dir, name):
    argv = lay_out(CASES[name], tmp_path / "case", tiny_model_dir)
    done = subprocess.run([sys.executable, "-m", "sharpen.cli", *argv], cwd=tmp_path / "case", env=ENV,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    check(CASES[name], Outcome(done.returncode, done.stdout + done.stderr))


@pytest.mark.parametrize("name", CASES)
def test_a_bad_input_is_a_clear_error(outcomes, name):
    check(CASES[name], outcomes[name])


def test_a_bug_shows_its_traceback_and_asks_for_a_report(monkeypatch, capsys):
    from sharpen import cli

    def broken(args):
        raise AttributeError("'Thing' object has no attribute 'x'")

    monkeypatch.setattr(cli, "cmd_tasks", broken)
    assert cli.main(["tasks"]) == 1
    out = capsys.readouterr().out
    assert "Traceback" in out and "AttributeError" in out and "please report it" in out


def test_debug_shows_the_traceback_of_a_user_error(capsys):
    from sharpen.cli import main

    assert main(["eval", "--task", "adition"]) == 1
    assert "Traceback" not in capsys.readouterr().out
    assert main(["--debug", "eval", "--task", "adition"]) == 1
    out = capsys.readouterr().out
    assert "Traceback" in out and "UnknownTaskError" in out and "error: unknown task 'adition'" in out


def test_a_failing_user_reward_at_step_k_keeps_steps_before_it_and_a_resumable_checkpoint(tmp_path, tiny_model_dir):
    flag = tmp_path / "broken"
    flag.write_text("")
    reward = tmp_path / "flaky.py"
    reward.write_text(
        "from pathlib import Path\n"
        "calls = [0]\n"
        "def reward(prompts, completions, problem_id, **columns):\n"
        "    calls[0] += 1\n"
        f"    if calls[0] >= 3 and Path({str(flag)!r}).exists():\n"  # step 3's call raises, until fixed
        "        raise ValueError('the user reward broke')\n"
        "    return [float(len(c) % 2) for c in completions]\n"
    )
    cfg = tmp_path / "flaky.yaml"
    cfg.write_text(
        f"model: {tiny_model_dir}\nsteps: 5\nproblems_per_step: 2\ncheckpoint_every: 1\n"
        "sampling: {group_size: 2}\neval: {every: 10, problems: 2, samples: 2, ks: [1]}\n"
        f"rewards: [{{name: '{reward}:reward'}}]\nlearner: {{advantage: reinforce}}\nrun_dir: {tmp_path / 'run'}\n"
    )
    with pytest.raises(RunStopped) as info:
        run(cfg, progress=False)
    message = str(info.value)
    assert message.startswith("step 3: reward function") and "flaky.py:3" in message
    assert "ValueError: the user reward broke" in message and "on problem 'addition/" in message
    assert "step-000002" in message
    store = RunStore(tmp_path / "run")
    assert store.last_step() == 2
    assert sorted({r.step for r in store.metrics("reward/mean")}) == [1, 2]
    assert max(c.step for c in store.checkpoints()) == 2
    store.close()

    flag.unlink()  # the user fixes the reward, and resumes
    summary = run(cfg, resume=True, progress=False)
    store = RunStore(tmp_path / "run")
    assert sorted(r.step for r in store.metrics("reward/mean")) == [1, 2, 3, 4, 5]
    assert summary["steps"] == 5
