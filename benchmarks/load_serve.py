"""Load test of `sharpen serve`: C concurrent clients for S seconds against a server on loopback.

    python benchmarks/load_serve.py --clients 100 --seconds 30 [--model default] [--strategy ""]

Starts the real server (make_server) in this process on 127.0.0.1 with an ephemeral port, then
runs C client threads, each sending chat completions back to back (plain urllib, one request
at a time) until the time is up. Prints requests/s, p50/p99 latency, and every failure by kind.
A benchmark, not a test: it measures and prints; only loopback traffic, bounded in time.
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

from sharpen.models import load_policy
from sharpen.serve import make_server


def client(url: str, model: str, stop_at: float, latencies: list, failures: Counter, lock: threading.Lock,
           index: int) -> None:
    i = 0
    while time.perf_counter() < stop_at:
        a, b = (index * 7 + i) % 90 + 10, (index * 13 + i * 3) % 90 + 10
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": f"{a}+{b}="}],
                           "max_tokens": 5, "temperature": 1.0}).encode()
        request = urllib.request.Request(f"{url}/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                reply = json.loads(response.read())
                ok = bool(reply["choices"]) and "usage" in reply
            kind = None if ok else "bad body"
        except urllib.error.HTTPError as e:
            kind = f"HTTP {e.code}"
        except Exception as e:  # a benchmark reports every failure kind, it does not hide them
            kind = type(e).__name__
        elapsed = time.perf_counter() - start
        with lock:
            if kind is None:
                latencies.append(elapsed)
            else:
                failures[kind] += 1
        i += 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--model", default="default", help="'default' or a local HF checkpoint path")
    parser.add_argument("--strategy", default="", help="e.g. self_consistency-4 (requests then use STRATEGY/default)")
    args = parser.parse_args(argv)
    print("$ python " + " ".join(sys.argv))
    policy = load_policy(args.model, progress=False)
    server = make_server(policy, model_name="default")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    model = f"{args.strategy}/default" if args.strategy else "default"
    latencies: list[float] = []
    failures: Counter = Counter()
    lock = threading.Lock()
    start = time.perf_counter()
    stop_at = start + args.seconds
    threads = [threading.Thread(target=client, args=(server.url, model, stop_at, latencies, failures, lock, i))
               for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    server.shutdown()
    server.server_close()
    done = len(latencies)
    cuts = statistics.quantiles(latencies, n=100) if done >= 2 else [float("nan")] * 99
    print(f"server {server.url} · model {model} · {args.clients} clients · {args.seconds:.0f} s")
    print(f"requests ok {done} · failed {sum(failures.values())} {dict(failures) if failures else ''}")
    print(f"throughput {done / wall:.1f} requests/s over {wall:.1f} s")
    print(f"latency p50 {cuts[49] * 1000:.0f} ms · p99 {cuts[98] * 1000:.0f} ms")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
