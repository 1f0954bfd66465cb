"""The generation worker: the one owner of the policy.

    worker = Worker(policy, window=0.005)
    await worker.start()                                  # inside the server's event loop
    completions, prompt_tokens = await worker.sample(prompt, params)
    result = await worker.call(lambda: strategy(problems))
    await worker.stop()

Requests await asyncio futures; the policy runs on a single worker thread, so the event loop
keeps accepting requests while a generation runs. Plain requests that arrive within `window`
seconds of each other with equal SamplingParams share one `policy.generate` call (up to
`max_rows` rows); requests with a fixed seed run alone, so a seed gives the same answer however
busy the server is. Jobs (strategies, token texts) run alone on the same thread. A prompt
too long for the model's context fails only its own request: a shared call that refuses one
(`ContextLengthError`, raised before any token is sampled) is re-run request by request.
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from sharpen.models.base import Completion, ContextLengthError, SamplingParams
from sharpen.tasks.base import Prompt

RowCallback = Callable[[int, int], None]
"""on_token(j, token_id) for the j-th of a request's n completions; runs on the worker thread."""


@dataclass
class _Sample:
    prompt: Prompt
    params: SamplingParams
    future: "asyncio.Future[tuple[list[Completion], int]]"
    on_token: Optional[RowCallback] = None


@dataclass
class _Job:
    run: Callable[[], Any]
    future: "asyncio.Future[Any]"


class Worker:
    def __init__(self, policy: Any, *, window: float = 0.005, max_rows: int = 256) -> None:
        self.policy = policy
        self.window = window
        self.max_rows = max_rows
        self.streams = "on_token" in getattr(policy, "sampling_features", ())
        """Whether the policy reports tokens as it samples them (else a stream gets whole texts)."""
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sharpen-serve-worker")
        self.queue: "Optional[asyncio.Queue[Union[_Sample, _Job]]]" = None
        self.task: Optional[asyncio.Task] = None

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._loop(), name="sharpen-serve-batcher")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        while self.queue is not None and not self.queue.empty():
            _settle(self.queue.get_nowait().future, error=RuntimeError("server shutting down"))
        self.executor.shutdown(wait=True)

    async def sample(self, prompt: Prompt, params: SamplingParams,
                     on_token: Optional[RowCallback] = None) -> tuple[list[Completion], int]:
        """params.n completions for one prompt, and the prompt's token count."""
        assert self.queue is not None, "Worker.start() first"
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(_Sample(prompt, params, future, on_token if self.streams else None))
        return await future

    async def call(self, run: Callable[[], Any]) -> Any:
        """run() on the worker thread, serialised with all generation; its result."""
        assert self.queue is not None, "Worker.start() first"
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(_Job(run, future))
        return await future

    def prompt_tokens(self, prompt: Prompt) -> int:
        """Tokens of a prompt (0 for a policy without `encode`); call on the worker thread."""
        encode = getattr(self.policy, "encode", None)
        return len(encode(prompt)) if encode is not None else 0

    # ---- the loop -------------------------------------------------------------------------

    async def _loop(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        pending: deque = deque()
        while True:
            item = pending.popleft() if pending else await self.queue.get()
            if isinstance(item, _Job):
                await self._run(loop, item.future, item.run)
                continue
            batch, rows = [item], item.params.n
            if item.params.seed is None:  # seeded requests run alone (reproducible)
                if self.window > 0:
                    await asyncio.sleep(self.window)
                while not self.queue.empty():
                    pending.append(self.queue.get_nowait())
                kept: deque = deque()
                for other in pending:
                    if (isinstance(other, _Sample) and other.params == item.params
                            and rows + other.params.n <= self.max_rows):
                        batch.append(other)
                        rows += other.params.n
                    else:
                        kept.append(other)
                pending = kept
            live = [b for b in batch if not b.future.done()]  # a client that left is not sampled for
            if live:
                await self._run_batch(loop, live)

    async def _run(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future, run: Callable[[], Any]) -> None:
        try:
            result = await loop.run_in_executor(self.executor, run)
        except Exception as err:  # handed to the waiting request
            _settle(future, error=err)
        else:
            _settle(future, result=result)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Sample]) -> None:
        n = batch[0].params.n
        callbacks = [b.on_token for b in batch]

        def on_token(row: int, token: int) -> None:  # rows: prompt i's j-th completion is row i*n + j
            callback = callbacks[row // n]
            if callback is not None:
                callback(row % n, token)

        def run() -> tuple[list[list[Completion]], list[int]]:
            prompts = [b.prompt for b in batch]
            if any(c is not None for c in callbacks):
                groups = self.policy.generate(prompts, batch[0].params, on_token=on_token)
            else:
                groups = self.policy.generate(prompts, batch[0].params)
            return groups, [self.prompt_tokens(p) for p in prompts]

        try:
            groups, counts = await loop.run_in_executor(self.executor, run)
        except ContextLengthError as err:
            if len(batch) == 1:
                _settle(batch[0].future, error=err)
                return
            for b in batch:  # nothing was sampled yet: each request gets its own outcome
                await self._run_batch(loop, [b])
            return
        except Exception as err:
            for b in batch:
                _settle(b.future, error=err)
            return
        for b, group, count in zip(batch, groups, counts):
            _settle(b.future, result=(group, count))


def _settle(future: asyncio.Future, *, result: Any = None, error: Optional[BaseException] = None) -> None:
    """Set a future's outcome unless its request is gone (cancelled by a client that left)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
