"""A policy backed by an OpenAI-compatible HTTP server (vLLM, llama.cpp, OpenAI, `sharpen serve`).

HTTP goes through `urllib3`: one connection pool per policy, which keeps at most
`max_concurrency` connections alive and reuses them, holds a request until one is free (so at
most `max_concurrency` are in flight per policy, however many threads call `generate`), and
retries failures and times out attempts by its own `Retry` and `Timeout` settings. One request
per prompt, in a thread pool. (urllib3 rather than the official `openai` client over httpx:
their per-request work took two to three times the client CPU of this pool, and made the
backend slower than one fresh urllib connection per request; benchmarks/README.md,
`http_client.py`.)

    policy = OpenAIPolicy("http://127.0.0.1:8000/v1", "default")
    policy = load_policy("http://127.0.0.1:8000/v1#default")       # the same, as a model spec
    policy = load_policy("http://127.0.0.1:8000/v1#default?max_retries=5&timeout=30")

Token accounting. The API reports `usage` per request (a prompt's `n` choices), no per-choice
count. Per choice the policy asks for the sampled tokens' logprobs (`request_logprobs=True`),
one per generated token, so `Completion.n_tokens` is exact; `OpenAIPolicy.usage` adds up the
server's totals, which then equal the sum of `n_tokens`. Without logprobs a completion counts
0 tokens and only `usage` knows the cost; a response without `usage` is counted in
`usage.responses_without_usage`, and its tokens as the sum of `n_tokens` (a lower bound).

Token ids. The API returns token texts. With `token_ids="vllm"` the policy asks a vLLM server
for `return_tokens_as_token_ids` ("token_id:<id>" per logprob), and completions carry those
ids; otherwise `token_ids` is empty and `Completion.missing_token_ids` says why.

No tokenizer, no forward pass: signals and strategies that score with the model
(`self_certainty`, `self_judge`, `pairwise_judge`, `likelihood` with source="policy",
`self_refine`) refuse the policy when built; `likelihood` with source="completion" works.
"""

from __future__ import annotations

import json
import os
import random
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Optional, Sequence

import urllib3

from sharpen.models.base import Completion, ModelSpecError, SamplingParams
from sharpen.models.formats import TemplateSet, as_messages
from sharpen.tasks.base import Prompt

RETRY_STATUSES = frozenset({408, 409, 429, *range(500, 600)})
"""Statuses retried (request timeout, conflict, rate limit, server errors); others fail at once."""

HTTP_SPEC = "http(s)://HOST:PORT/PREFIX#MODEL[?OPTION=VALUE&...]"
"""A server's model spec: base URL, '#', served model name, settings from `SPEC_OPTIONS`."""

TOKEN_ID_REQUESTS: dict[str, dict[str, Any]] = {"none": {}, "vllm": {"return_tokens_as_token_ids": True}}
"""How to ask a server for the sampled token ids (extra request fields), by server kind."""


def _flag(value: str) -> bool:
    if value not in ("true", "false"):
        raise ValueError(f"expected true or false, got {value!r}")
    return value == "true"


SPEC_OPTIONS: dict[str, Callable[[str], Any]] = {"timeout": float, "max_retries": int, "max_concurrency": int,
                                                 "endpoint": str, "request_logprobs": _flag, "token_ids": str}
"""`OpenAIPolicy` keywords a model spec may set ("#MODEL?timeout=30&max_retries=5"), each with
the function that reads its value."""


class _Retry(urllib3.Retry):
    """urllib3's `Retry` with two of the OpenAI API's habits: a wait before the first retry too
    (urllib3 waits none; a server that drops its connection after an error, as uvicorn does
    after an unhandled exception, has then dropped it before the retry would reuse it), and
    the server's "retry-after-ms" header besides Retry-After."""

    def get_backoff_time(self) -> float:
        wait = self.backoff_factor * 2 ** (len(self.history) - 1) + random.random() * self.backoff_jitter
        return min(self.backoff_max, wait)

    def get_retry_after(self, response: Any) -> Optional[float]:
        milliseconds = response.headers.get("retry-after-ms")
        if milliseconds is not None and milliseconds.isdigit():
            return min(int(milliseconds) / 1000, self.retry_after_max)
        return super().get_retry_after(response)


class _OneWrite:
    """A urllib3 connection that writes a request's head and body in one send (urllib3 sends
    them apart: two TCP segments, each handled by both ends, the server woken for each)."""

    _writes: Optional[list] = None

    def request(self, *args: Any, **kwargs: Any) -> None:
        self._writes = []
        try:
            super().request(*args, **kwargs)  # its writes go to send() below
            data = b"".join(self._writes)
        finally:
            self._writes = None
        self.send(data)

    def send(self, data: Any) -> None:
        if self._writes is None:
            super().send(data)
        else:
            self._writes.append(data)


_CONNECTIONS = {"http": type("HTTPConnection", (_OneWrite, urllib3.connection.HTTPConnection), {}),
                "https": type("HTTPSConnection", (_OneWrite, urllib3.connection.HTTPSConnection), {})}
"""The pools' connection classes, by URL scheme."""


class HTTPBackendError(RuntimeError):
    """A request to the server failed for good: `status` (None for connection errors and
    timeouts), the server's `message` (or the transport failure), `attempts` made."""

    def __init__(self, url: str, model: str, status: Optional[int], message: str, attempts: int = 1):
        self.url = url
        self.model = model
        self.status = status
        self.message = message
        self.attempts = attempts
        what = f"HTTP {status}" if status is not None else "request failed"
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"{what} from {url} (model {model!r}){tries}: {message}")


@dataclass
class TokenUsage:
    """Thread-safe running totals of what the server reported (see the module docstring)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    """Successful requests (one per prompt per `generate` call)."""
    retries: int = 0
    """Extra attempts the client made after a retryable failure."""
    responses_without_usage: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def total_tokens(self) -> int:
        return self.snapshot()["total_tokens"]

    def add(self, **counts: int) -> None:
        """Add to the named counters."""
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def snapshot(self) -> dict[str, int]:
        """A consistent copy of the counters, and total_tokens."""
        with self._lock:
            counts = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_lock"}
        return {**counts, "total_tokens": counts["prompt_tokens"] + counts["completion_tokens"]}

    def reset(self) -> None:
        with self._lock:
            for f in fields(self):
                if f.name != "_lock":
                    setattr(self, f.name, 0)


def _server_message(raw: bytes) -> str:
    """The message of an error body: OpenAI's {"error": {"message"}}, FastAPI's {"detail"},
    or the text."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if isinstance(body, dict):
        for key in ("message", "detail", "msg", "error"):
            if body.get(key):
                return str(body[key])
    return text[:500] or "(empty body)"


def _transport_failure(reason: Exception, timeout: float) -> str:
    """What went wrong when no response came (urllib3's reason for giving up)."""
    if isinstance(reason, urllib3.exceptions.TimeoutError) and not isinstance(
            reason, urllib3.exceptions.NewConnectionError):  # a refused connection is no timeout
        return f"timed out after {timeout} s"
    return f"connection error: {reason!r}"


def _prompt_text(prompt: Prompt) -> str:
    """A prompt as one string for the completions endpoint: a string or a single user
    message as is, a conversation as "role: content" lines ending with "assistant: " (no chat
    template is applied: use endpoint="chat" for conversations)."""
    if isinstance(prompt, str):
        return prompt
    messages = as_messages(prompt)
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nassistant: "


def _sampled_tokens(choice: dict, chat: bool) -> list[tuple[str, float]]:
    """(token text, logprob) of each generated token the server reported for one choice."""
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        return []
    if chat:
        pairs = [(t.get("token", ""), t.get("logprob")) for t in lp.get("content") or []]
    else:  # the legacy completions format
        pairs = list(zip(lp.get("tokens") or [], lp.get("token_logprobs") or []))
    return [(str(t), float(v)) for t, v in pairs if v is not None]


def _token_ids(tokens: Sequence[str]) -> Optional[tuple[int, ...]]:
    """The ids in vLLM's `return_tokens_as_token_ids` form ("token_id:123" per token), or
    None unless every token has that form."""
    numbers = [t[len("token_id:"):] for t in tokens if t.startswith("token_id:")]
    if not tokens or len(numbers) < len(tokens) or not all(n.isdigit() for n in numbers):
        return None
    return tuple(int(n) for n in numbers)


class OpenAIPolicy:
    """Samples completions from an OpenAI-compatible server; see the module docstring.

    `base_url` includes the API prefix ("http://localhost:8000/v1"); `endpoint` is "chat"
    (messages) or "completions" (a prompt string). `timeout` (seconds to connect, and per read,
    per attempt) and `max_retries` set the pool's `Timeout` and `Retry`: it retries connection
    errors, timeouts and `RETRY_STATUSES` after 0.5 s doubling to 8 s (plus up to 0.25 s of
    jitter) or after the server's retry-after-ms or Retry-After (at most 2 min);
    other statuses raise `HTTPBackendError` at once, and so do redirects. `token_ids` is a key of
    `TOKEN_ID_REQUESTS`; `extra_body` adds fields to every request (e.g. vLLM's `top_k`).

    `SamplingParams.seed` goes with every prompt; reproducibility depends on the server. The
    logprobs are the server's, possibly under the sampling temperature, not temperature 1 as
    for local backends (`sharpen serve` reports them at temperature 1).
    """

    def __init__(self, base_url: str, model: str, *, api_key: Optional[str] = None,
                 timeout: float = 60.0, max_retries: int = 3, max_concurrency: int = 8,
                 endpoint: str = "chat", request_logprobs: bool = True, token_ids: str = "none",
                 extra_body: Optional[dict[str, Any]] = None):
        if endpoint not in ("chat", "completions"):
            raise ValueError(f'endpoint must be "chat" or "completions", got {endpoint!r}')
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if token_ids not in TOKEN_ID_REQUESTS:
            raise ValueError(f"token_ids must be one of {', '.join(TOKEN_ID_REQUESTS)}, got {token_ids!r}")
        if token_ids != "none" and not request_logprobs:
            raise ValueError("token_ids come with the logprobs: they need request_logprobs=True")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.endpoint = endpoint
        self.request_logprobs = request_logprobs
        self.token_ids = token_ids
        self.extra_body = {**TOKEN_ID_REQUESTS[token_ids], **(extra_body or {})}
        self.usage = TokenUsage()
        self.templates: Optional[TemplateSet] = None
        """The prompt template set a user chose for this model (`formats.use_prompts`); None:
        the one `formats.template_set_for` picks (chat)."""
        api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        # Without a key (vLLM, llama.cpp, sharpen serve) requests carry no Authorization header.
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self._prefix = urllib.parse.urlsplit(self.base_url).path  # "/v1": the pool is per host
        retry = _Retry(total=max_retries, status_forcelist=RETRY_STATUSES, allowed_methods=None,
                       backoff_factor=0.5, backoff_max=8.0, backoff_jitter=0.25,
                       retry_after_max=120, raise_on_status=False)
        # At most max_concurrency connections, all kept alive; a request waits for a free one.
        self._pool = urllib3.connection_from_url(
            self.base_url, maxsize=max_concurrency, block=True, retries=retry,
            timeout=urllib3.Timeout(connect=timeout, read=timeout))
        self._pool.ConnectionCls = _CONNECTIONS[self._pool.scheme]

    @classmethod
    def from_spec(cls, spec: str) -> "OpenAIPolicy":
        """The policy for a model spec `HTTP_SPEC`, e.g. "http://127.0.0.1:8000/v1#default" or
        "http://127.0.0.1:8000/v1#default?max_retries=5" (the served model name after '#')."""
        base_url, _, fragment = spec.partition("#")
        model, _, query = fragment.partition("?")
        try:
            parts = urllib.parse.urlsplit(base_url)
        except ValueError:  # e.g. an unclosed IPv6 bracket
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ModelSpecError(f"model spec {spec!r} is not an HTTP server spec {HTTP_SPEC}")
        if not model:
            raise ModelSpecError(
                f"model spec {spec!r} names no served model: add the server's model name after '#', "
                f"e.g. {base_url.rstrip('/')}#default (GET {base_url.rstrip('/')}/models lists them)"
            )
        options: dict[str, Any] = {}
        for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
            if key not in SPEC_OPTIONS:
                raise ModelSpecError(f"model spec {spec!r}: unknown option {key!r}; "
                                     f"known: {', '.join(SPEC_OPTIONS)}")
            try:
                options[key] = SPEC_OPTIONS[key](value)
            except ValueError as e:
                raise ModelSpecError(f"model spec {spec!r}: option {key}={value!r}: {e}") from e
        try:
            return cls(base_url, model, **options)
        except ValueError as e:
            raise ModelSpecError(f"model spec {spec!r}: {e}") from e

    def __repr__(self) -> str:
        return f"OpenAIPolicy({self.base_url!r}, {self.model!r}, endpoint={self.endpoint!r})"

    def close(self) -> None:
        """Close the pooled connections; the policy cannot send requests afterwards."""
        self._pool.close()

    # -- requests -----------------------------------------------------------------------

    def _send(self, path: str, payload: Optional[dict] = None) -> Any:
        """GET (or POST `payload` as JSON to) {base_url}/{path} through the pool, its retries
        included: the decoded JSON body, or HTTPBackendError naming the server, the model and
        the attempts."""
        url, target = f"{self.base_url}/{path}", f"{self._prefix}/{path}"
        try:
            if payload is None:
                response = self._pool.urlopen("GET", target, headers=self._headers, redirect=False)
            else:
                response = self._pool.urlopen("POST", target, body=json.dumps(payload).encode(),
                                              headers=self._json_headers, redirect=False)
        except urllib3.exceptions.MaxRetryError as err:  # no response, and no retry left
            self.usage.add(retries=self.max_retries)
            raise HTTPBackendError(url, self.model, None, _transport_failure(err.reason, self.timeout),
                                   self.max_retries + 1) from err
        attempts = len(response.retries.history) + 1 if response.retries else 1
        self.usage.add(retries=attempts - 1)
        if response.status >= 300:
            raise HTTPBackendError(url, self.model, response.status, _server_message(response.data), attempts)
        try:
            return json.loads(response.data)
        except ValueError as e:
            text = response.data[:200].decode("utf-8", "replace")
            raise HTTPBackendError(url, self.model, response.status, f"response is not JSON: {text!r}") from e

    def list_models(self) -> list[str]:
        """Ids of the models the server serves (GET {base_url}/models)."""
        data = self._send("models")
        items = data.get("data", []) if isinstance(data, dict) else data
        return [item["id"] if isinstance(item, dict) else str(item) for item in items]

    def _generate_one(self, prompt: Prompt, params: SamplingParams) -> list[Completion]:
        chat = self.endpoint == "chat"
        payload: dict[str, Any] = {"model": self.model, "n": params.n, "temperature": params.temperature,
                                   "top_p": params.top_p, "max_tokens": params.max_new_tokens}
        if chat:
            payload["messages"] = as_messages(prompt)
        else:
            payload["prompt"] = _prompt_text(prompt)
        if params.stop:
            payload["stop"] = list(params.stop)
        if params.seed is not None:
            payload["seed"] = params.seed
        if self.request_logprobs:
            payload["logprobs"] = True if chat else 0
        payload.update(self.extra_body)
        path = "chat/completions" if chat else "completions"
        data = self._send(path, payload)

        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or len(choices) < params.n:
            got = f"{len(choices)}" if isinstance(choices, list) else f"none: {str(data)[:200]!r}"
            raise HTTPBackendError(f"{self.base_url}/{path}", self.model, 200,
                                   f"asked for n={params.n} choices, server returned {got}")
        completions = [self._completion(choice, chat)
                       for choice in sorted(choices, key=lambda c: c.get("index", 0))[: params.n]]
        usage = data.get("usage")
        if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
            self.usage.add(prompt_tokens=int(usage.get("prompt_tokens") or 0),
                           completion_tokens=int(usage["completion_tokens"]), requests=1)
        else:
            self.usage.add(completion_tokens=sum(c.n_tokens for c in completions),
                           requests=1, responses_without_usage=1)
        return completions

    def _completion(self, choice: dict, chat: bool) -> Completion:
        text = ((choice.get("message") or {}).get("content") if chat else choice.get("text")) or ""
        sampled = _sampled_tokens(choice, chat)
        ids = _token_ids([token for token, _ in sampled])
        hint = "; a vLLM server returns them with token_ids=vllm in the model spec" if self.token_ids == "none" else ""
        missing = None if ids else f"{self.base_url} (model {self.model!r}) returned no token ids{hint}"
        return Completion(text=text, token_ids=ids or (), logprobs=tuple(lp for _, lp in sampled),
                          # anything but "length" ("stop", "eos", None, "content_filter") is "stop"
                          finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
                          missing_token_ids=missing)

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        """For each prompt (in order), `params.n` completions; one request per prompt."""
        prompts = list(prompts)
        if not prompts:
            return []
        if len(prompts) == 1:
            return [self._generate_one(prompts[0], params)]
        workers = min(self.max_concurrency, len(prompts))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sharpen-openai") as pool:
            futures = [pool.submit(self._generate_one, p, params) for p in prompts]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
