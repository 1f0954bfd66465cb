"""The HTTP backend's client, old against new, in one run against `sharpen serve` on loopback.

    python benchmarks/http_client.py --requests 2000 --concurrency 32 [--model default]

Starts the real server (make_server) in a child process on 127.0.0.1 with an ephemeral port over
`--model`: "tiny" (default: the embedded model's format at 1 layer and width 32, built in a few
seconds into a temporary cache, as the tests' fixture), "default" (the embedded default model)
or a local checkpoint. Requests ask for one token, so the figures are about the client and the
server's HTTP handling; with a larger model the forward passes take a larger share of the
time, alike for both clients. Then, for each client,
one `OpenAIPolicy.generate` call of `--requests` single-token chat completions with
`max_concurrency=--concurrency`, and prints requests/s, the TCP connections the requests
arrived on during the call (distinct client address and port in each request's ASGI scope,
counted in the server process, not by the client), and the CPU time per request of the client
process and of the server process (less sensitive than requests/s to other load), and the
ratio of the two clients' requests/s in each round.

The clients: "new" is `sharpen.models.openai_http` as installed (a urllib3 pool, connections
kept alive); "old" is the same file at `--old-commit` (the urllib client, one connection per
request), read with `git show` into a temporary module, so this needs a git checkout. The two run in turn,
`--rounds` times, alternating which goes first; the figures of every round are printed.
A benchmark, not a test: it measures and prints; only loopback traffic.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from sharpen.models import load_policy
from sharpen.models.base import SamplingParams
from sharpen.serving.server import make_server

OLD_COMMIT = "9a2842c3ac2957d930ca864362207608847d6b11"
"""The last commit with the urllib client (before the move to the `openai` client)."""
MODULE_PATH = "src/sharpen/models/openai_http.py"


def old_client_module(commit: str) -> ModuleType:
    """`openai_http.py` as it was at `commit`, imported as a module of its own."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "-C", str(root), "show", f"{commit}:{MODULE_PATH}"],
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="sharpen-old-client-")) / "openai_http_old.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("openai_http_old", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def tiny_model() -> Path:
    """The tests' tiny model (tests/conftest.py), built into a temporary cache."""
    import os

    from sharpen.models.embedded import MixturePart, Recipe, ensure_default_model

    os.environ["SHARPEN_CACHE"] = tempfile.mkdtemp(prefix="sharpen-bench-cache-")
    recipe = Recipe(layers=1, width=32, heads=2, mlp=64, steps=4, batch_size=8, warmup=1,
                    mixture=(MixturePart("solve", "addition", {"digits": 2}, 1.0),))
    return ensure_default_model(recipe, progress=False)


def serve(model: str) -> None:
    """The server process: `sharpen serve` over `model` on an ephemeral loopback port, counting
    the TCP connections requests arrive on. Prints "url URL", then answers each line "count" on
    stdin with the number so far and the process's CPU seconds; stops at the end of stdin."""
    srv = make_server(load_policy(str(tiny_model()) if model == "tiny" else model), port=0, max_n=8)
    clients: set = set()  # (address, port) of every TCP connection a request arrived on
    app = srv.uvicorn.config.app

    async def counting_app(scope, receive, send):
        if scope["type"] == "http":
            clients.add(tuple(scope["client"]))
        await app(scope, receive, send)

    srv.uvicorn.config.app = counting_app
    srv.start()
    print(f"url {srv.url}", flush=True)
    for line in sys.stdin:
        if line.strip() == "count":
            print(len(clients), time.process_time(), flush=True)
    srv.stop()


class ServerProcess:
    """`serve` in a child process (its own interpreter, as a real server: client and server
    do not share a GIL); `counters()` asks it how many connections it accepted and how much CPU
    time it used."""

    def __init__(self, model: str) -> None:
        self.process = subprocess.Popen([sys.executable, __file__, "--serve", model], text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = self.process.stdout.readline()
        if not line.startswith("url "):
            raise RuntimeError(f"the server process did not start (it printed {line!r})")
        self.url = line.split()[1]

    def counters(self) -> tuple[int, float]:
        self.process.stdin.write("count\n")
        self.process.stdin.flush()
        connections, cpu_seconds = self.process.stdout.readline().split()
        return int(connections), float(cpu_seconds)

    def stop(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def run_client(name: str, policy_class, url: str, counters, requests: int, concurrency: int) -> dict:
    policy = policy_class(url, "default", max_concurrency=concurrency, max_retries=0)
    prompts = [f"{10 + i % 90}+{10 + i * 7 % 90}=" for i in range(requests)]
    before = counters()
    start, cpu = time.perf_counter(), time.process_time()
    groups = policy.generate(prompts, SamplingParams(max_new_tokens=1))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    after = counters()
    connections, server_cpu = after[0] - before[0], after[1] - before[1]
    if hasattr(policy, "close"):
        policy.close()
    assert len(groups) == requests and all(len(g) == 1 for g in groups)
    return {"client": name, "requests": requests, "seconds": seconds, "requests_per_s": requests / seconds,
            "client_cpu_ms": 1000 * cpu / requests, "server_cpu_ms": 1000 * server_cpu / requests,
            "connections": connections, "completion_tokens": policy.usage.snapshot()["completion_tokens"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1, help="old and new each run this many times, alternating")
    parser.add_argument("--model", default="tiny", help="'tiny', 'default' or a local HF checkpoint path")
    parser.add_argument("--old-commit", default=OLD_COMMIT, help="commit whose openai_http.py is the old client")
    parser.add_argument("--serve", metavar="MODEL", help=argparse.SUPPRESS)  # the server process
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0

    from sharpen.models.openai_http import OpenAIPolicy

    clients = {"old": old_client_module(args.old_commit).OpenAIPolicy, "new": OpenAIPolicy}
    server = ServerProcess(args.model)
    try:
        run_client("warm-up", OpenAIPolicy, server.url, server.counters, 2 * args.concurrency, args.concurrency)
        results = []
        for r in range(args.rounds):
            for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
                results.append(run_client(name, clients[name], server.url, server.counters, args.requests,
                                          args.concurrency))
                row = results[-1]
                print(f"round {r + 1} {name}: {row['requests_per_s']:.1f} requests/s, {row['seconds']:.2f} s, "
                      f"{row['client_cpu_ms']:.2f} ms client CPU and {row['server_cpu_ms']:.2f} ms server CPU "
                      f"per request, "
                      f"{row['connections']} connections accepted by the server", flush=True)
    finally:
        server.stop()

    print(f"\n{args.requests} single-token chat completions at concurrency {args.concurrency}, "
          f"model {args.model!r}, sharpen serve on loopback, {args.rounds} round(s)")
    print(f"{'client':<8}{'requests/s (mean)':>20}{'client CPU ms/request':>24}{'server CPU ms/request':>24}"
          f"{'connections (max)':>20}")
    rows = {name: [row for row in results if row["client"] == name] for name in ("old", "new")}
    for name, own in rows.items():
        mean = {key: sum(row[key] for row in own) / len(own)
                for key in ("requests_per_s", "client_cpu_ms", "server_cpu_ms")}
        print(f"{name:<8}{mean['requests_per_s']:>20.1f}{mean['client_cpu_ms']:>24.2f}{mean['server_cpu_ms']:>24.2f}"
              f"{max(row['connections'] for row in own):>20}")
    ratios = [new["requests_per_s"] / old["requests_per_s"] for old, new in zip(rows["old"], rows["new"])]
    print(f"new/old requests/s per round: {', '.join(f'{r:.2f}' for r in ratios)} "
          f"(mean {sum(ratios) / len(ratios):.2f})")
    command = " ".join(["python", "benchmarks/http_client.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"command: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
