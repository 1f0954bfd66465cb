"""LaTeX answer comparisons in worker processes, each bounded by a deadline.

math_verify can spend minutes (or all memory) in sympy on a pathological answer, and its own
timeout uses `signal.alarm`, which works only in the main thread (math-verify 0.9.0,
`math_verify.utils.timeout`). So comparisons run in worker processes
(`python -c "…verify_pool import main; main()"`, one JSON line in, one out); a comparison still
running after its deadline is killed with its worker, and the next comparison starts a fresh
one. Thread-safe: at most `WORKERS` comparisons run at once, the other callers wait.

The workers are plain subprocesses rather than a `multiprocessing` (or pebble) pool on
purpose: "spawn" and "forkserver" re-import the caller's `__main__` in each worker, which
breaks any user script without an `if __name__ == "__main__"` guard, and "fork" from a
process running torch threads can deadlock. POSIX only (`select` on pipes).

    compare("\\\\sqrt{4}", "2", seconds=5.0)    # True
    compare(slow, "x", seconds=5.0)             # raises Unscorable("math-verify took over 5 s …")
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from typing import Optional

WORKERS = 2
"""Worker processes at most (each holds sympy, ≈ 100 MB)."""
STARTUP_SECONDS = 120.0
"""How long a new worker may take to import sympy and math_verify (not part of any deadline)."""
MEMORY_BYTES = 2 * 1024**3
"""Address-space limit of a worker: a comparison that needs more fails as unscorable."""
READY = b"ready\n"


class VerifierError(RuntimeError):
    """A worker could not be started or math_verify raised: a broken verifier, not a wrong answer."""


class Unscorable(Exception):
    """The comparison ran past its deadline, out of memory, or its worker died: the answer
    can be neither right nor wrong (counted unscorable). The message says which."""


class _Worker:
    """One worker process and its pipes."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from sharpen.tasks.verify_pool import main; main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
        )
        self.pending = b""
        line = self.read_line(time.monotonic() + STARTUP_SECONDS)
        if line != READY:
            self.kill()
            raise VerifierError(f"the math_verify worker did not start (it said {line!r})")

    def read_line(self, deadline: float) -> Optional[bytes]:
        """The next line from the worker; None at the deadline; b"" if the worker died."""
        fd = self.process.stdout.fileno()
        while b"\n" not in self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return b""
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line + b"\n"

    def ask(self, pred: Optional[str], ref: str, seconds: float) -> Optional[bytes]:
        self.process.stdin.write(json.dumps([pred, ref]).encode() + b"\n")
        return self.read_line(time.monotonic() + seconds)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            pipe.close()


_idle: list[_Worker] = []
_idle_lock = threading.Lock()
_slots = threading.BoundedSemaphore(WORKERS)
_owner = os.getpid()


def _take() -> _Worker:
    global _idle, _owner
    with _idle_lock:
        if _owner != os.getpid():  # a forked child: the parent's workers are not ours
            _idle, _owner = [], os.getpid()
        while _idle:
            worker = _idle.pop()
            if worker.process.poll() is None:
                return worker
            worker.kill()  # ended while idle (killed from outside): not this comparison's fault
    return _Worker()


def compare(pred: Optional[str], ref: str, seconds: float) -> Optional[bool]:
    """`sharpen.tasks.answers._latex_match(pred, ref)` in a worker, stopped after `seconds`:
    True/False, None if the reference is unreadable; `Unscorable` past the deadline, out of
    memory, or if the worker died; `VerifierError` if math_verify raised."""
    with _slots:
        worker = _take()
        try:
            line = worker.ask(pred, ref, seconds)
        except BrokenPipeError:
            line = b""
        if line is None:
            worker.kill()
            raise Unscorable(f"math-verify took over {seconds:g} s comparing {pred!r} with {ref!r}")
        if line == b"":
            worker.kill()
            raise Unscorable(f"math-verify's worker died comparing {pred!r} with {ref!r}")
        with _idle_lock:
            _idle.append(worker)
    reply = json.loads(line)
    if "error" in reply:
        raise VerifierError(f"math-verify failed comparing {pred!r} with {ref!r}: {reply['error']}")
    if "unscorable" in reply:
        raise Unscorable(f"math-verify {reply['unscorable']} comparing {pred!r} with {ref!r}")
    return reply["match"]


@atexit.register
def _stop_workers() -> None:
    with _idle_lock:
        if _owner == os.getpid():
            for worker in _idle:
                worker.kill()
        _idle.clear()


def main() -> None:
    """The worker: read [pred, ref] lines, answer {"match": …}, {"unscorable": …} or {"error": …}."""
    import logging
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = MEMORY_BYTES if hard == resource.RLIM_INFINITY else min(MEMORY_BYTES, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    out = os.fdopen(os.dup(1), "wb")  # replies go here; anything printed goes to stderr instead
    os.dup2(2, 1)
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is off": the parent bounds it
    from sharpen.tasks.answers import _latex_match

    _latex_match("\\sqrt{x}+\\frac{1}{2}", "(1, 2)")  # loads what math_verify loads lazily, before READY

    out.write(READY)
    out.flush()
    for line in sys.stdin.buffer:
        pred, ref = json.loads(line)
        try:
            reply = {"match": _latex_match(pred, ref)}
        except MemoryError:
            reply = {"unscorable": f"needed more than {MEMORY_BYTES / 1024**3:g} GiB"}
        except RecursionError:
            reply = {"unscorable": "recursed too deeply"}
        except Exception as err:  # reported to the caller, who raises it
            reply = {"error": f"{type(err).__name__}: {err}"}
        out.write(json.dumps(reply).encode() + b"\n")
        out.flush()

