"""A policy backed by an OpenAI-compatible HTTP server (vLLM, llama.cpp, OpenAI, ...).

Only the standard library speaks HTTP here (`urllib.request`), and requests run in a
thread pool, one request per prompt, at most `max_concurrency` in flight per policy.

    policy = OpenAIPolicy("http://127.0.0.1:8000/v1", "default")
    policy = load_policy("http://127.0.0.1:8000/v1#default")       # the same, as a model spec

Token accounting. The OpenAI API reports `usage` once per *request*, i.e. per prompt
group of `n` choices, and gives no per-choice token count, nor token ids. Per choice, the
policy asks for the sampled tokens' logprobs (`request_logprobs=True`, the default), one
per generated token, so `Completion.n_tokens` (what strategies and evaluation count) is
exact. `OpenAIPolicy.usage` adds up the server's totals (`prompt_tokens`,
`completion_tokens`) per request; nothing is split among the choices and no `Completion`
carries an invented count. Consequences:

* the totals are exact whenever the server reports `usage` (cost of a call is
  `usage.completion_tokens` after minus before), and equal the sum of `n_tokens` over the
  returned completions when the server also returned logprobs;
* with `request_logprobs=False` (for a server that refuses logprobs) every completion
  counts 0 tokens; only `usage` then knows the cost;
* a response without `usage` is counted in `usage.responses_without_usage`; its
  completion tokens are then the sum of the completions' `n_tokens`, so the totals are a
  lower bound in that case.

What the policy cannot do: it has no tokenizer and no forward pass of its own, so signals
and strategies that score completions with the model (`self_certainty`, `self_judge`,
`pairwise_judge`, `likelihood` with source="policy", `self_refine`) refuse it when they are
built.
`likelihood` with source="completion" reads the returned logprobs and works.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from sharpen.models.base import Completion, ModelSpecError, SamplingParams
from sharpen.models.formats import as_messages
from sharpen.tasks.base import Prompt

RETRY_STATUSES = frozenset({408, 409, 429})
"""Statuses retried besides every 5xx (request timeout, conflict, rate limit)."""

HTTP_SPEC = "http(s)://HOST:PORT/PREFIX#MODEL"
"""The model-spec form of an OpenAI-compatible server: base URL, '#', served model name."""


class HTTPBackendError(RuntimeError):
    """A request to the inference server failed for good.

    `status` is the HTTP status (None for connection errors and timeouts), `message`
    the server's error message (or a description of the transport failure), `attempts`
    how many times the request was sent.
    """

    def __init__(self, url: str, status: Optional[int], message: str, attempts: int = 1):
        self.url = url
        self.status = status
        self.message = message
        self.attempts = attempts
        what = f"HTTP {status}" if status is not None else "request failed"
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"{what} from {url}{tries}: {message}")


@dataclass
class TokenUsage:
    """Thread-safe running totals of what the server reported (see the module docstring)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    """Successful requests (one per prompt per `generate` call)."""
    retries: int = 0
    """Extra attempts made after a retryable failure."""
    responses_without_usage: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def total_tokens(self) -> int:
        with self._lock:
            return self.prompt_tokens + self.completion_tokens

    def add(self, *, prompt_tokens: int = 0, completion_tokens: int = 0, requests: int = 0,
            retries: int = 0, responses_without_usage: int = 0) -> None:
        with self._lock:
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.requests += requests
            self.retries += retries
            self.responses_without_usage += responses_without_usage

    def snapshot(self) -> dict[str, int]:
        """A consistent copy of the counters."""
        with self._lock:
            return {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "requests": self.requests,
                "retries": self.retries,
                "responses_without_usage": self.responses_without_usage,
            }

    def reset(self) -> None:
        with self._lock:
            self.prompt_tokens = self.completion_tokens = 0
            self.requests = self.retries = self.responses_without_usage = 0


class _Retryable(Exception):
    def __init__(self, status: Optional[int], message: str, retry_after: Optional[float] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def _error_message(body: bytes) -> str:
    """The server's error message from an error body (OpenAI, FastAPI or plain text)."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:500] or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            for key in ("message", "detail", "msg"):
                if err.get(key):
                    return str(err[key])
        elif isinstance(err, str) and err:
            return err
        if data.get("detail"):
            return str(data["detail"])
    return text[:500]


def _retry_after(headers: Any) -> Optional[float]:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _prompt_text(prompt: Prompt) -> str:
    """A prompt as one string for the completions endpoint.

    A string is sent unchanged; a single user message is sent as its content; a longer
    conversation is rendered as "role: content" lines ending with "assistant: " (raw
    completion servers apply no chat template, so use endpoint="chat" for those).
    """
    if isinstance(prompt, str):
        return prompt
    messages = as_messages(prompt)
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nassistant: "


def _finish_reason(reason: Any) -> str:
    """The server's finish reason in sharpen's two values: "length" or "stop".

    Anything other than "length" ("stop", "eos", a stop string, None, "content_filter")
    means the completion ended before the token budget, i.e. "stop".
    """
    return "length" if reason == "length" else "stop"


def _choice_logprobs(choice: dict, chat: bool) -> tuple[float, ...]:
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        return ()
    if chat or "content" in lp:
        content = lp.get("content") or []
        return tuple(float(t["logprob"]) for t in content if t.get("logprob") is not None)
    values = lp.get("token_logprobs") or []  # legacy completions format
    return tuple(float(v) for v in values if v is not None)


class OpenAIPolicy:
    """Samples completions from an OpenAI-compatible server; see the module docstring.

    `base_url` includes the API prefix, e.g. "http://localhost:8000/v1". `endpoint`
    chooses POST {base_url}/chat/completions (messages) or {base_url}/completions
    (a prompt string). `max_retries` is the number of retries after the first attempt;
    the wait before retry i (0-based) is `backoff * 2**i`, or the server's Retry-After
    if that is longer (capped at 60 s). Connection errors, timeouts, 408/409/429 and 5xx
    are retried; other statuses raise `HTTPBackendError` at once.

    `SamplingParams.seed` is sent unchanged with every prompt of a call; reproducibility
    then depends on the server. Server-side logprobs (`request_logprobs=True`) are
    whatever the server reports, which may be under the sampling temperature rather than
    temperature 1 as `Completion.logprobs` documents for local backends (`sharpen serve`
    reports them at temperature 1).
    """

    def __init__(self, base_url: str, model: str, *, api_key: Optional[str] = None,
                 timeout: float = 60.0, max_retries: int = 3, backoff: float = 0.5,
                 max_concurrency: int = 8, endpoint: str = "chat",
                 request_logprobs: bool = True,
                 extra_body: Optional[dict[str, Any]] = None):
        if endpoint not in ("chat", "completions"):
            raise ValueError(f'endpoint must be "chat" or "completions", got {endpoint!r}')
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_concurrency = max_concurrency
        self.endpoint = endpoint
        self.request_logprobs = request_logprobs
        self.extra_body = dict(extra_body or {})
        self.usage = TokenUsage()
        # Bounds requests in flight even when several threads call generate() at once.
        self._slots = threading.BoundedSemaphore(max_concurrency)

    @classmethod
    def from_spec(cls, spec: str) -> "OpenAIPolicy":
        """The policy (default settings) for a model spec "http(s)://HOST:PORT/PREFIX#MODEL":
        the base URL before '#', the name the server serves the model under after it, e.g.
        "http://127.0.0.1:8000/v1#default"."""
        base_url, _, model = spec.partition("#")
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
        return cls(base_url, model)

    def __repr__(self) -> str:
        return f"OpenAIPolicy({self.base_url!r}, {self.model!r}, endpoint={self.endpoint!r})"

    # -- HTTP ---------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _send_once(self, url: str, body: Optional[bytes]) -> Any:
        request = urllib.request.Request(url, data=body, headers=self._headers(),
                                         method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            try:
                message = _error_message(e.read())
            except (OSError, http.client.HTTPException):
                message = e.reason or "(no body)"
            if e.code >= 500 or e.code in RETRY_STATUSES:
                raise _Retryable(e.code, message, _retry_after(e.headers)) from e
            raise HTTPBackendError(url, e.code, message) from e
        except urllib.error.URLError as e:
            raise _Retryable(None, f"connection error: {e.reason}") from e
        except TimeoutError as e:
            raise _Retryable(None, f"timed out after {self.timeout} s") from e
        except (OSError, http.client.HTTPException) as e:
            raise _Retryable(None, f"connection error: {e!r}") from e
        try:
            return json.loads(raw)
        except ValueError as e:
            raise HTTPBackendError(url, 200, f"response is not JSON: {raw[:200]!r}") from e

    def _request(self, path: str, payload: Optional[dict] = None) -> Any:
        """Send one request with retries; return the decoded JSON body."""
        url = f"{self.base_url}/{path}"
        body = json.dumps(payload).encode("utf-8") if payload is not None else None
        attempt = 0
        while True:
            try:
                with self._slots:
                    return self._send_once(url, body)
            except _Retryable as e:
                if attempt >= self.max_retries:
                    raise HTTPBackendError(url, e.status, e.message, attempts=attempt + 1) from e
                wait = self.backoff * (2 ** attempt)
                if e.retry_after is not None:
                    wait = max(wait, min(e.retry_after, 60.0))
                self.usage.add(retries=1)
                attempt += 1
                time.sleep(wait)

    # -- API ----------------------------------------------------------------------------

    def list_models(self) -> list[str]:
        """Ids of the models the server serves (GET {base_url}/models)."""
        data = self._request("models")
        items = data.get("data", []) if isinstance(data, dict) else data
        return [item["id"] if isinstance(item, dict) else str(item) for item in items]

    def _payload(self, prompt: Prompt, params: SamplingParams) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model}
        if self.endpoint == "chat":
            payload["messages"] = as_messages(prompt)
        else:
            payload["prompt"] = _prompt_text(prompt)
        payload.update(n=params.n, temperature=params.temperature, top_p=params.top_p,
                       max_tokens=params.max_new_tokens)
        if params.stop:
            payload["stop"] = list(params.stop)
        if params.seed is not None:
            payload["seed"] = params.seed
        if self.request_logprobs:
            payload["logprobs"] = True if self.endpoint == "chat" else 0
        payload.update(self.extra_body)
        return payload

    def _generate_one(self, prompt: Prompt, params: SamplingParams) -> list[Completion]:
        path = "chat/completions" if self.endpoint == "chat" else "completions"
        data = self._request(path, self._payload(prompt, params))
        chat = self.endpoint == "chat"
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or len(choices) < params.n:
            got = len(choices) if isinstance(choices, list) else "no"
            raise HTTPBackendError(f"{self.base_url}/{path}", 200,
                                   f"asked for n={params.n} choices, server returned {got}")
        choices = sorted(choices, key=lambda c: c.get("index", 0))[: params.n]
        completions = []
        for choice in choices:
            if chat:
                text = (choice.get("message") or {}).get("content") or ""
            else:
                text = choice.get("text") or ""
            completions.append(Completion(text=text, token_ids=(),
                                          logprobs=_choice_logprobs(choice, chat),
                                          finish_reason=_finish_reason(choice.get("finish_reason"))))
        usage = data.get("usage")
        if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
            self.usage.add(prompt_tokens=int(usage.get("prompt_tokens") or 0),
                           completion_tokens=int(usage["completion_tokens"]), requests=1)
        else:
            self.usage.add(completion_tokens=sum(c.n_tokens for c in completions),
                           requests=1, responses_without_usage=1)
        return completions

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
