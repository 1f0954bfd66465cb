"""Load test of `sharpen serve`: C concurrent clients for S seconds, against the server this
script starts itself and, in the same run, against any servers given by URL.

    python benchmarks/load_serve.py --clients 100 --seconds 30 [--model default] [--strategy ""]
        [--url http://127.0.0.1:8000/v1#default ...]   # also measure an external server
        [--no-self]                                     # only the --url servers

For each server: C client threads send 2-digit addition chat completions back to back (plain
urllib, one request at a time) for S seconds, then for --stream-seconds the same clients send
`stream: true` requests and time the first content delta. Prints requests/s, p50/p99 latency,
every failure by kind, and time to first streamed token (p50/p99). The server this script
starts runs in this process (clients and server share its 2 cores, as before); an external
server runs in its own. A benchmark, not a test: it measures and prints; loopback only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Optional


def body(model: str, index: int, i: int, stream: bool) -> bytes:
    a, b = (index * 7 + i) % 90 + 10, (index * 13 + i * 3) % 90 + 10
    payload = {"model": model, "messages": [{"role": "user", "content": f"{a}+{b}="}], "max_tokens": 5,
               "temperature": 1.0}
    if stream:
        payload["stream"] = True
    return json.dumps(payload).encode()


def one_request(url: str, data: bytes, stream: bool) -> tuple[Optional[str], Optional[float]]:
    """(failure kind or None, seconds to the first streamed content delta or None)."""
    request = urllib.request.Request(f"{url}/chat/completions", data=data, headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    first: Optional[float] = None
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            if not stream:
                reply = json.loads(response.read())
                return (None if reply.get("choices") and "usage" in reply else "bad body"), None
            done = False
            for line in response:
                if not line.startswith(b"data: "):
                    continue
                if line.strip() == b"data: [DONE]":
                    done = True
                    break
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return "error event", None
                if first is None and any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                    first = time.perf_counter() - start
            return (None if done else "stream without [DONE]"), first
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code}", None
    except Exception as e:  # a benchmark reports every failure kind, it does not hide them
        return type(e).__name__, None


def load(url: str, model: str, clients: int, seconds: float, stream: bool) -> dict:
    latencies: list[float] = []
    firsts: list[float] = []
    failures: Counter = Counter()
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(index: int) -> None:
        i = 0
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            kind, first = one_request(url, body(model, index, i, stream), stream)
            elapsed = time.perf_counter() - start
            with lock:
                if kind is None:
                    latencies.append(elapsed)
                    if first is not None:
                        firsts.append(first)
                else:
                    failures[kind] += 1
            i += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"wall": time.perf_counter() - start, "latencies": latencies, "firsts": firsts, "failures": failures}


def quantiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return float("nan"), float("nan")
    cuts = statistics.quantiles(values, n=100)
    return cuts[49], cuts[98]


def report(name: str, url: str, model: str, args: argparse.Namespace) -> bool:
    plain = load(url, model, args.clients, args.seconds, stream=False)
    streamed = load(url, model, args.clients, args.stream_seconds, stream=True) if args.stream_seconds > 0 else None
    done, failed = len(plain["latencies"]), sum(plain["failures"].values())
    p50, p99 = quantiles(plain["latencies"])
    print(f"[{name}] {url} · model {model} · {args.clients} clients · {args.seconds:.0f} s")
    print(f"[{name}] requests ok {done} · failed {failed} {dict(plain['failures']) if failed else ''}")
    print(f"[{name}] throughput {done / plain['wall']:.1f} requests/s over {plain['wall']:.1f} s")
    print(f"[{name}] latency p50 {p50 * 1000:.0f} ms · p99 {p99 * 1000:.0f} ms")
    ok = failed == 0
    if streamed is not None:
        s_failed = sum(streamed["failures"].values())
        f50, f99 = quantiles(streamed["firsts"])
        print(f"[{name}] streamed ok {len(streamed['latencies'])} · failed {s_failed} "
              f"{dict(streamed['failures']) if s_failed else ''}")
        print(f"[{name}] time to first streamed token p50 {f50 * 1000:.0f} ms · p99 {f99 * 1000:.0f} ms")
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--stream-seconds", type=float, default=10.0, help="streamed phase per server (0: none)")
    parser.add_argument("--model", default="default", help="'default' or a local HF checkpoint path")
    parser.add_argument("--strategy", default="", help="e.g. self_consistency-4 (requests then use STRATEGY/NAME)")
    parser.add_argument("--url", action="append", default=[], metavar="URL#MODEL",
                        help="also measure this running server, e.g. http://127.0.0.1:8000/v1#default")
    parser.add_argument("--no-self", action="store_true", help="do not start a server; measure only --url ones")
    args = parser.parse_args(argv)
    print("$ python " + " ".join(sys.argv))
    ok = True
    if not args.no_self:
        from sharpen.models import load_policy
        from sharpen.serving import make_server

        policy = load_policy(args.model, progress=False)
        with make_server(policy, model_name="default") as server:
            ok &= report("new", server.url, f"{args.strategy}/default" if args.strategy else "default", args)
    for target in args.url:
        url, _, name = target.partition("#")
        ok &= report(url, url.rstrip("/"), f"{args.strategy}/{name or 'default'}" if args.strategy else name or "default",
                     args)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
