"""What bounding math-verify in time costs per answer check.

Every LaTeX comparison runs in a worker process with a deadline (`sharpen.tasks.verify_pool`);
numbers are compared in-process. This prints, per check: a numeric comparison, a LaTeX
comparison run directly in this process (unbounded, the old way), the same kind through a
worker (bounded), their difference (the overhead of the bound), a repeated (cached) check,
and LaTeX checks from `--threads` threads at once; plus the first check's worker start-up.

    python benchmarks/bench_verify.py --pairs 200
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

from sharpen.tasks.answers import _latex_match, answers_match


def pairs(tag: str, n: int) -> list[tuple[str, str]]:
    """n distinct equal LaTeX pairs (distinct, so the result cache never answers them)."""
    return [(f"\\sqrt{{{i}}}+{tag}^{{2}}", f"{tag}^2+\\sqrt{{{i}}}") for i in range(n)]


def per_check(check, batch) -> float:
    start = time.perf_counter()
    for pred, ref in batch:
        assert check(pred, ref), (pred, ref)
    return (time.perf_counter() - start) / len(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200, help="LaTeX comparisons per measurement")
    parser.add_argument("--threads", type=int, default=4, help="threads of the concurrent measurement")
    args = parser.parse_args()

    start = time.perf_counter()
    answers_match("\\sqrt{4}", "2")
    startup = time.perf_counter() - start
    _latex_match("\\sqrt{4}", "2")  # warm this process's math_verify too
    numeric = per_check(lambda p, r: answers_match(p, r) is False,
                        [(str(i), str(i + 1)) for i in range(20 * args.pairs)])
    direct = per_check(_latex_match, pairs("a", args.pairs))
    worker = per_check(answers_match, pairs("b", args.pairs))
    cached = per_check(answers_match, pairs("b", args.pairs))
    batch = pairs("c", args.pairs)
    start = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        assert all(pool.map(lambda pair: answers_match(*pair), batch))
    threaded = (time.perf_counter() - start) / len(batch)
    print(f"python benchmarks/bench_verify.py --pairs {args.pairs} --threads {args.threads}")
    print(f"worker start-up (first LaTeX check)      {startup:8.3f} s")
    print(f"numeric check, in-process               {numeric * 1e6:8.1f} us")
    print(f"LaTeX check, in-process (unbounded)     {direct * 1e3:8.2f} ms")
    print(f"LaTeX check, in a worker (bounded)      {worker * 1e3:8.2f} ms")
    print(f"  overhead of the bound                 {(worker - direct) * 1e3:8.2f} ms")
    print(f"LaTeX check, repeated (cached)          {cached * 1e6:8.1f} us")
    print(f"LaTeX check, {args.threads} threads, per check       {threaded * 1e3:8.2f} ms")


if __name__ == "__main__":
    main()
