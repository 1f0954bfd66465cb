"""An OpenAI-compatible HTTP server over a sharpen policy (standard library only).

    server = make_server(policy, port=0)           # binds 127.0.0.1 on an ephemeral port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ...                                            # OpenAI(base_url=server.url, api_key="x")
    server.shutdown(); server.server_close()

Endpoints: GET /v1/models, POST /v1/chat/completions, POST /v1/completions.

A request's `model` is either the served model's name (plain sampling) or
`STRATEGY/NAME`, e.g. `self_consistency-8/default`: the strategy (spec grammar of
`sharpen.strategies.registry`) answers the last user message as a Problem of the server's
task, and usage counts every token the strategy generated.

Logprobs: `logprobs: true` (chat) or `logprobs: 0` (completions) returns each choice's
sampled tokens with their log-probabilities under the model at temperature 1, in OpenAI's
shapes (chat `choices[i].logprobs.content[j].{token, logprob}`, completions
`choices[i].logprobs.{tokens, token_logprobs}`); one entry per generated token, so they sum
to usage.completion_tokens. Alternatives are not computed: `top_logprobs` > 0 (chat) or
`logprobs` > 0 (completions) is a 400, and so is asking a strategy model for logprobs (its
answer is picked among many samples, whose tokens are all in usage).

All generation runs on one worker thread. Plain requests arriving within `batch_window`
seconds of each other with the same sampling settings share one `policy.generate` call;
requests with a fixed `seed` run alone, so a seed gives the same answer however busy the
server is. Bad requests get a 4xx and errors a 500, both with an OpenAI-style body
`{"error": {"message", "type", "param", "code"}}`; no stack trace is ever sent.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import socket
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, Union

from sharpen.models.base import Completion, SamplingParams
from sharpen.tasks.base import Problem, Prompt, Task

log = logging.getLogger("sharpen.serve")

EXAMPLE_STRATEGIES = ("self_consistency-8", "best_of_n-8:self_certainty", "debate-3x2", "retry-3", "self_refine-2")
DEFAULT_MAX_TOKENS = 64
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


# ---- errors ---------------------------------------------------------------------------------


class APIError(Exception):
    """An error answered to the client as {"error": {...}} with an HTTP status."""

    def __init__(self, status: int, message: str, *, param: Optional[str] = None,
                 code: Optional[str] = None, type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(message: str, param: Optional[str] = None, code: Optional[str] = None) -> APIError:
    return APIError(400, message, param=param, code=code)


# ---- request validation ---------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int too large for a float
        return False


@dataclass(frozen=True)
class Request:
    """A validated request: what to generate and how."""

    chat: bool
    model: str
    prompts: list[Prompt]
    """One prompt for chat; one or more strings for completions."""
    n: int
    temperature: Optional[float]
    top_p: Optional[float]
    max_tokens: Optional[int]
    stop: Optional[tuple[str, ...]]
    seed: Optional[int]
    logprobs: bool
    """Return the sampled tokens' logprobs with each choice."""


def parse_request(body: Any, *, chat: bool, max_n: int, max_tokens_limit: int) -> Request:
    """Check a decoded JSON body field by field; raises APIError (400) on the first problem."""
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("'model' is required and must be a non-empty string", "model")
    if body.get("stream"):
        raise bad("streaming is not supported", "stream", "unsupported_parameter")

    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad("'messages' is required and must be a non-empty list", "messages")
        prompt: list[dict[str, str]] = []
        for i, message in enumerate(messages):
            where = f"messages[{i}]"
            if not isinstance(message, dict):
                raise bad(f"{where} must be an object", where)
            role = message.get("role")
            if role not in ROLES:
                raise bad(f"{where}.role must be one of {', '.join(ROLES)}", f"{where}.role")
            prompt.append({"role": ROLES[role], "content": _content(message.get("content"), f"{where}.content")})
        if not any(m["role"] == "user" for m in prompt):
            raise bad("'messages' must contain a user message", "messages")
        prompts: list[Prompt] = [prompt]
    else:
        raw = body.get("prompt")
        if isinstance(raw, str):
            prompts = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(p, str) for p in raw):
            prompts = list(raw)
        else:
            raise bad("'prompt' is required and must be a string or a non-empty list of strings", "prompt")

    n = body.get("n")
    if n is None:
        n = 1
    if not _is_int(n) or n < 1:
        raise bad("'n' must be an integer >= 1", "n")
    if n * len(prompts) > max_n:
        raise bad(f"'n' times the number of prompts must be at most {max_n}, got {n * len(prompts)}", "n")

    temperature = body.get("temperature")
    if temperature is not None and (not _is_number(temperature) or not 0 <= temperature <= 2):
        raise bad("'temperature' must be a number between 0 and 2", "temperature")
    top_p = body.get("top_p")
    if top_p is not None and (not _is_number(top_p) or not 0 < top_p <= 1):
        raise bad("'top_p' must be a number in (0, 1]", "top_p")

    param = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = body.get(param)
    if max_tokens is not None:
        if not _is_int(max_tokens) or max_tokens < 1:
            raise bad(f"'{param}' must be an integer >= 1", param)
        if max_tokens > max_tokens_limit:
            raise bad(f"'{param}' must be at most {max_tokens_limit}, got {max_tokens}", param)

    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = (stop,)
        elif isinstance(stop, list) and len(stop) <= 16 and all(isinstance(s, str) for s in stop):
            stop = tuple(stop)
        else:
            raise bad("'stop' must be a string or a list of at most 16 strings", "stop")
        stop = tuple(s for s in stop if s)

    seed = body.get("seed")
    if seed is not None and (not _is_int(seed) or not 0 <= seed < 2**63):
        raise bad("'seed' must be a non-negative integer", "seed")

    return Request(chat=chat, model=model, prompts=prompts, n=n, temperature=temperature, top_p=top_p,
                   max_tokens=max_tokens, stop=stop, seed=seed, logprobs=_wants_logprobs(body, chat))


def _wants_logprobs(body: dict, chat: bool) -> bool:
    """Chat: `logprobs` true/false with `top_logprobs` 0 or absent. Completions: `logprobs`
    0 (absent: none). Alternatives (a count > 0) are not computed: 400."""
    logprobs = body.get("logprobs")
    if chat:
        if logprobs is not None and not isinstance(logprobs, bool):
            raise bad("'logprobs' must be true or false", "logprobs")
        top, name, limit = body.get("top_logprobs"), "top_logprobs", 20
    else:
        top, name, limit = logprobs, "logprobs", 5
    if top is not None:
        if not _is_int(top) or not 0 <= top <= limit:
            raise bad(f"'{name}' must be an integer between 0 and {limit}", name)
        if top > 0:
            raise bad(f"'{name}' must be 0: only the sampled tokens' logprobs are returned, not the "
                      "most likely alternatives", name, "unsupported_parameter")
    return bool(logprobs) if chat else logprobs is not None


def _content(content: Any, where: str) -> str:
    """A message's text: a string, or a list of {"type": "text", "text": ...} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise bad(f"{where}: only text parts are supported", where)
            texts.append(part["text"])
        return "".join(texts)
    raise bad(f"{where} must be a string or a list of text parts", where)


# ---- logprobs -------------------------------------------------------------------------------

Choice = tuple[str, str, Optional[dict]]
"""(text, finish_reason, logprobs object or None) of one choice."""

UNLIKELY = -9999.0
"""Stands for a logprob of -inf, which JSON cannot carry (OpenAI uses the same value)."""


def openai_logprobs(policy: Any, completion: Completion, chat: bool) -> dict:
    """OpenAI's logprobs object for one choice: every generated token (a final end-of-sequence
    token included) with its logprob, and no alternatives. Token texts come from
    `policy.piece(token_id)`; a policy without it, or without token ids, gives empty texts."""
    values = [v if math.isfinite(v) else UNLIKELY for v in completion.logprobs]
    piece = getattr(policy, "piece", None)
    if piece is not None and len(completion.token_ids) == len(values):
        tokens = [piece(t) for t in completion.token_ids]
    else:
        tokens = [""] * len(values)
    if chat:
        content = [{"token": t, "logprob": v, "bytes": list(t.encode("utf-8")), "top_logprobs": []}
                   for t, v in zip(tokens, values)]
        return {"content": content, "refusal": None}
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": None}


# ---- the generation worker ------------------------------------------------------------------


@dataclass
class _Plain:
    prompt: Prompt
    params: SamplingParams
    future: Future


@dataclass
class _Job:
    run: Callable[[], Any]
    future: Future


class Batcher:
    """One worker thread that owns the policy: plain requests with equal sampling settings
    arriving within `window` seconds share one generate call; jobs (strategies, logprobs' token
    texts) run alone."""

    def __init__(self, policy: Any, *, window: float = 0.005, max_rows: int = 256) -> None:
        self.policy = policy
        self.window = window
        self.max_rows = max_rows
        self.queue: "queue.Queue[Union[_Plain, _Job, None]]" = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="sharpen-serve-worker", daemon=True)
        self.thread.start()

    def generate(self, prompt: Prompt, params: SamplingParams) -> tuple[list[Completion], int]:
        """params.n completions for one prompt, and the prompt's token count."""
        future: Future = Future()
        self.queue.put(_Plain(prompt, params, future))
        return future.result()

    def call(self, run: Callable[[], Any]) -> Any:
        """Run `run()` on the worker thread (serialised with all generation); its result."""
        future: Future = Future()
        self.queue.put(_Job(run, future))
        return future.result()

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=30)

    def prompt_tokens(self, prompt: Prompt) -> int:
        encode = getattr(self.policy, "encode", None)
        return len(encode(prompt)) if encode is not None else 0

    def _loop(self) -> None:
        pending: deque = deque()
        while True:
            item = pending.popleft() if pending else self.queue.get()
            if item is None:
                for left in pending:
                    if left is not None:
                        left.future.set_exception(RuntimeError("server shutting down"))
                return
            if isinstance(item, _Job):
                self._run_job(item)
                continue
            batch = [item]
            if item.params.seed is None:  # seeded requests run alone (reproducible)
                rows = item.params.n
                kept: deque = deque()
                for other in pending:
                    if isinstance(other, _Plain) and other.params == item.params and rows + other.params.n <= self.max_rows:
                        batch.append(other)
                        rows += other.params.n
                    else:
                        kept.append(other)
                pending = kept
                deadline = time.monotonic() + self.window
                while rows < self.max_rows:
                    timeout = deadline - time.monotonic()
                    if timeout <= 0:
                        break
                    try:
                        other = self.queue.get(timeout=timeout)
                    except queue.Empty:
                        break
                    if isinstance(other, _Plain) and other.params == item.params and rows + other.params.n <= self.max_rows:
                        batch.append(other)
                        rows += other.params.n
                    else:
                        pending.append(other)
                        if other is None:
                            break
            self._run_batch(batch)

    def _run_job(self, job: _Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            job.future.set_result(job.run())
        except BaseException as err:  # handed to the waiting request thread
            job.future.set_exception(err)

    def _run_batch(self, batch: list[_Plain]) -> None:
        try:
            groups = self.policy.generate([b.prompt for b in batch], batch[0].params)
            counts = [self.prompt_tokens(b.prompt) for b in batch]
        except BaseException as err:
            for b in batch:
                b.future.set_exception(err)
            return
        for b, group, count in zip(batch, groups, counts):
            b.future.set_result((group, count))


# ---- the server -----------------------------------------------------------------------------


class SharpenServer(ThreadingHTTPServer):
    """ThreadingHTTPServer carrying the policy, the limits and the generation worker."""

    daemon_threads = False
    block_on_close = True  # server_close joins every request thread: none outlives the server
    allow_reuse_address = True
    request_queue_size = 256  # listen backlog: the default 5 resets connections under 100 clients

    policy: Any
    model_name: str
    task: Optional[Task]
    task_name: str
    max_n: int
    max_tokens_limit: int
    max_body_bytes: int
    batcher: Batcher
    open_requests: set
    open_lock: threading.Lock

    @property
    def url(self) -> str:
        """Base URL for an OpenAI client, e.g. http://127.0.0.1:54321/v1"""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def get_task(self) -> Task:
        if self.task is None:
            from sharpen.tasks import get_task

            self.task = get_task(self.task_name)
        return self.task

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.open_lock:
            self.open_requests.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.open_lock:
            self.open_requests.discard(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        """Close the listening socket, end idle keep-alive connections (their threads are
        blocked reading the next request), join the request threads, stop the worker."""
        with self.open_lock:
            idle = list(self.open_requests)
        for sock in idle:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        super().server_close()
        self.batcher.close()


def make_server(
    policy: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    model_name: str = "default",
    task: Union[Task, str, None] = None,
    max_n: int = 64,
    max_tokens_limit: int = 1024,
    max_body_bytes: int = 1_000_000,
    batch_window: float = 0.005,
) -> SharpenServer:
    """A bound (not yet serving) OpenAI-compatible server over `policy`; call
    `serve_forever()` (e.g. in a thread), then `shutdown()` and `server_close()`.

    `task` (a Task or a task name; default "addition") is what strategy models extract and
    vote answers with. `max_n` caps n per request (and, times 16, a strategy's work);
    `max_tokens_limit` caps max_tokens; `max_body_bytes` caps the request body."""
    server = SharpenServer((host, port), Handler)
    server.policy = policy
    server.model_name = model_name
    server.task = task if isinstance(task, Task) else None
    server.task_name = task if isinstance(task, str) else "addition"
    if isinstance(task, str):
        server.get_task()  # fail at start-up on an unknown task, not on the first request
    server.max_n = max_n
    server.max_tokens_limit = max_tokens_limit
    server.max_body_bytes = max_body_bytes
    server.batcher = Batcher(policy, window=batch_window)
    server.open_requests, server.open_lock = set(), threading.Lock()
    return server


class Handler(BaseHTTPRequestHandler):
    server: SharpenServer
    protocol_version = "HTTP/1.1"
    server_version = "sharpen"
    timeout = 60  # seconds an idle or slow connection may hold a thread
    # TCP_NODELAY: headers and body go out in two writes; with Nagle's algorithm the body of
    # every response after the first on a keep-alive connection waits for the client's delayed
    # ACK (~40 ms on Linux).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - " + format, self.address_string(), *args)

    # -- responses

    def _send(self, status: int, payload: dict, *, close: bool = False) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """Errors found by http.server itself (bad request line, headers) in the JSON shape."""
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # unparsable request line: still send a status line
        err = APIError(code, message or "bad request", type="invalid_request_error" if code < 500 else "server_error")
        try:
            self._send(code, err.body(), close=True)
        except OSError:
            self.close_connection = True

    # -- routing

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/v1/models":
            self._handle(lambda: (200, self._models()))
        elif path in ("/v1/chat/completions", "/v1/completions"):
            self._send(405, APIError(405, f"use POST for {path}").body())
        else:
            self._send(404, APIError(404, f"no route {path or '/'}", code="not_found").body())

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("/v1/chat/completions", "/v1/completions"):
            self._handle(lambda: (200, self._complete(chat=path.endswith("chat/completions"))))
        else:
            self._discard_body_or_close()
            self._send(404, APIError(404, f"no route {path or '/'}", code="not_found").body(),
                       close=self.close_connection)

    def _method_not_allowed(self) -> None:
        self._send(405, APIError(405, f"method {self.command} is not allowed").body(), close=True)

    do_PUT = do_DELETE = do_PATCH = _method_not_allowed

    def _handle(self, answer: Callable[[], tuple[int, dict]]) -> None:
        try:
            status, payload = answer()
        except APIError as err:
            self._send(err.status, err.body(), close=self.close_connection)
            return
        except Exception:
            log.exception("error answering %s %s", self.command, self.path)
            self._send(500, APIError(500, "internal server error", type="server_error").body(), close=True)
            return
        self._send(status, payload)

    # -- body

    def _discard_body_or_close(self) -> None:
        length = self.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) <= self.server.max_body_bytes:
            self.rfile.read(int(length))
        else:
            self.close_connection = True

    def _read_json(self) -> Any:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise APIError(411, "chunked bodies are not supported; send Content-Length", code="length_required")
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise APIError(411, "Content-Length is required", code="length_required")
        if not length.strip().isdigit():
            self.close_connection = True
            raise bad("Content-Length must be a non-negative integer")
        size = int(length)
        if size > self.server.max_body_bytes:
            self.close_connection = True
            raise APIError(413, f"request body is {size} bytes; the limit is {self.server.max_body_bytes}",
                           code="request_too_large")
        raw = self.rfile.read(size)
        if len(raw) < size:
            self.close_connection = True
            raise bad("request body shorter than its Content-Length")
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise bad("the request body is not valid JSON", code="invalid_json") from None

    # -- endpoints

    def _models(self) -> dict:
        name = self.server.model_name
        ids = [name] + [f"{spec}/{name}" for spec in EXAMPLE_STRATEGIES]
        return {"object": "list",
                "data": [{"id": i, "object": "model", "created": 0, "owned_by": "sharpen"} for i in ids]}

    def _complete(self, chat: bool) -> dict:
        srv = self.server
        body = self._read_json()
        req = parse_request(body, chat=chat, max_n=srv.max_n, max_tokens_limit=srv.max_tokens_limit)
        if req.model == srv.model_name:
            choices, usage = self._plain(req)
        elif req.model.endswith("/" + srv.model_name):
            choices, usage = self._strategy(req, req.model[: -len(srv.model_name) - 1])
        else:
            raise APIError(404, f"model {req.model!r} does not exist; use {srv.model_name!r} or "
                           f"'STRATEGY/{srv.model_name}', e.g. 'self_consistency-8/{srv.model_name}'",
                           param="model", code="model_not_found")
        out = []
        for index, (text, finish_reason, logprobs) in enumerate(choices):
            choice: dict[str, Any] = {"index": index, "finish_reason": finish_reason, "logprobs": logprobs}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            out.append(choice)
        prompt_tokens, completion_tokens = usage
        return {
            "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": out,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    def _params(self, req: Request, n: int, default_tokens: int, default_stop: tuple[str, ...]) -> SamplingParams:
        return SamplingParams(
            n=n,
            temperature=1.0 if req.temperature is None else float(req.temperature),
            top_p=1.0 if req.top_p is None else float(req.top_p),
            max_new_tokens=default_tokens if req.max_tokens is None else req.max_tokens,
            stop=default_stop if req.stop is None else req.stop,
            seed=req.seed,
        )

    def _plain(self, req: Request) -> tuple[list[Choice], tuple[int, int]]:
        srv = self.server
        params = self._params(req, req.n, min(DEFAULT_MAX_TOKENS, srv.max_tokens_limit), ())
        # Several prompts of one completions request go in separately, so the batcher can
        # also merge them with other requests' prompts.
        futures = []
        for prompt in req.prompts:
            future: Future = Future()
            srv.batcher.queue.put(_Plain(prompt, params, future))
            futures.append(future)
        completions: list[Completion] = []
        prompt_tokens = 0
        for future in futures:
            group, count = future.result()
            completions.extend(group)
            prompt_tokens += count
        logprobs: list[Optional[dict]] = [None] * len(completions)
        if req.logprobs:  # token texts come from the tokenizer, which the worker thread owns
            logprobs = srv.batcher.call(lambda: [openai_logprobs(srv.policy, c, req.chat) for c in completions])
        choices = [(c.text, c.finish_reason, lp) for c, lp in zip(completions, logprobs)]
        return choices, (prompt_tokens, sum(c.n_tokens for c in completions))

    def _strategy(self, req: Request, spec: str) -> tuple[list[Choice], tuple[int, int]]:
        from sharpen.strategies import (STRATEGIES, StrategyOptionError, StrategySpecError,
                                        UnknownStrategyError, build_strategy, parse_strategy_spec)
        from sharpen.strategies.registry import strategy_options

        srv = self.server
        if req.logprobs:
            raise bad(f"model {req.model!r} returns no logprobs: a strategy's answer is picked among many "
                      f"samples; ask model {srv.model_name!r} for logprobs", "logprobs", "unsupported_parameter")
        try:
            name, options = parse_strategy_spec(spec)
        except StrategySpecError as err:
            raise APIError(404, f"model {req.model!r}: {err}", param="model", code="model_not_found") from None
        work = req.n
        for value in options.values():
            if _is_int(value):
                if value > srv.max_n:
                    raise bad(f"model {req.model!r}: {value} is over the limit of {srv.max_n}", "model")
                work *= value
        if work > 16 * srv.max_n:
            raise bad(f"model {req.model!r} with n={req.n} asks for too much work ({work} > {16 * srv.max_n})", "model")

        if req.chat:
            users = [m for m in req.prompts[0] if m["role"] == "user"]  # type: ignore[union-attr]
            text = users[-1]["content"]
        else:
            if len(req.prompts) != 1:
                raise bad("strategy models take a single prompt string", "prompt")
            text = req.prompts[0]
        task = srv.get_task()
        factory = STRATEGIES.get(options.get("inner", "single") if name == "reread" else name)
        accepted = (strategy_options(factory) if factory is not None else None) or []
        sampling_given = any(v is not None for v in (req.temperature, req.top_p, req.max_tokens, req.stop, req.seed))
        if sampling_given and "params" in accepted:
            options = {**options, "params": self._params(req, 1, task.max_new_tokens, tuple(task.stop))}
        try:
            strategy = build_strategy(name, policy=srv.policy, task=task, **options)
        except UnknownStrategyError as err:
            raise APIError(404, f"model {req.model!r}: {err}", param="model", code="model_not_found") from None
        except (StrategyOptionError, StrategySpecError, ValueError) as err:
            raise bad(f"model {req.model!r}: {err}", "model") from None

        rid = uuid.uuid4().hex
        problems = [Problem(id=f"serve/{rid}/{i}", prompt=text) for i in range(req.n)]

        def run() -> tuple[list, int]:
            return strategy(problems), srv.batcher.prompt_tokens(text)

        results, prompt_tokens = srv.batcher.call(run)
        choices: list[Choice] = [(r.text, "stop", None) for r in results]
        return choices, (prompt_tokens, sum(r.tokens for r in results))
