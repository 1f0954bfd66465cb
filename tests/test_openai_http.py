"""OpenAIPolicy against a tiny fake OpenAI server on loopback (no other network), and against
the real `sharpen serve` over a tiny model."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sharpen.models import ModelSpecError, load_policy
from sharpen.models.base import Completion, SamplingParams
from sharpen.models.openai_http import HTTPBackendError, OpenAIPolicy


class FakeState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fail_first = 0          # fail this many POSTs ...
        self.fail_status = 503       # ... with this status
        self.fail_message = "overloaded"
        self.sleep = 0.0             # seconds to wait before answering a POST
        self.hold_until = 0          # hold each POST until this many were in flight at once (or 10 s)
        self.vllm_token_ids = False  # emulate vLLM: logprob tokens "token_id:N" when the request asks
        self.reply_body: bytes | None = None  # answer every POST with these bytes (status 200) instead
        self.logprobs = False        # include logprobs (chat: .content, completions: .token_logprobs)
        self.usage = True            # include usage
        self.posts = 0
        self.in_flight = 0           # POSTs read and not yet answered (see do_POST)
        self.max_in_flight = 0
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.client_ports: set[int] = set()  # one per TCP connection the client opened
        self.in_flight_changed = threading.Condition(self.lock)


def _prompt_of(body: dict) -> str:
    if "messages" in body:
        return body["messages"][-1]["content"]
    return body["prompt"]


class FakeHandler(BaseHTTPRequestHandler):
    state: FakeState  # set on a subclass per server
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, payload: dict | bytes) -> None:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if status >= 400:
            self.send_header("Retry-After-Ms", "10")  # as OpenAI does; keeps retries quick
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "fake-a", "object": "model"},
                                                        {"id": "fake-b", "object": "model"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        st = self.state
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with st.lock:
            st.posts += 1
            number = st.posts
            st.in_flight += 1
            st.max_in_flight = max(st.max_in_flight, st.in_flight)
            st.bodies.append(body)
            st.headers.append({k.lower(): v for k, v in self.headers.items()})
            st.client_ports.add(self.client_address[1])
            st.in_flight_changed.notify_all()
            st.in_flight_changed.wait_for(lambda: st.max_in_flight >= st.hold_until, timeout=10)
        try:
            if st.sleep:
                time.sleep(st.sleep)
            status, payload = self._answer(number, body)
            if st.reply_body is not None:
                status, payload = 200, st.reply_body
        finally:
            # A request stops counting as in flight *before* its response is written: once the
            # client has the response it may send the next one, and this thread may not have
            # run again yet. Counted this way, in flight here implies in flight at the client.
            with st.lock:
                st.in_flight -= 1
        self._send(status, payload)

    def _answer(self, number: int, body: dict) -> tuple[int, dict]:
        st = self.state
        if number <= st.fail_first:
            return st.fail_status, {"error": {"message": st.fail_message, "type": "x"}}
        if body.get("model") == "bad":
            return 400, {"error": {"message": "model 'bad' does not exist"}}
        chat = self.path == "/v1/chat/completions"
        if not chat and self.path != "/v1/completions":
            return 404, {"error": {"message": f"no route {self.path}"}}
        prompt = _prompt_of(body)
        as_ids = st.vllm_token_ids and body.get("return_tokens_as_token_ids")
        tokens = ["token_id:17", "token_id:4"] if as_ids else ["a", "b"]
        choices = []
        # Reverse index order on purpose: the client must sort by index.
        for i in reversed(range(body.get("n", 1))):
            text = f"{prompt}#{i}"
            choice = {"index": i, "finish_reason": "length" if i % 2 else "stop"}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
                if st.logprobs:
                    choice["logprobs"] = {"content": [
                        {"token": tokens[0], "logprob": -0.5}, {"token": tokens[1], "logprob": -1.5}]}
            else:
                choice["text"] = text
                if st.logprobs:
                    choice["logprobs"] = {"tokens": tokens, "token_logprobs": [-0.5, -1.5]}
            choices.append(choice)
        payload = {"id": "x", "object": "chat.completion" if chat else "text_completion",
                   "created": 0, "model": body.get("model"), "choices": choices}
        if st.usage:
            payload["usage"] = {"prompt_tokens": 5, "completion_tokens": 3 * len(choices),
                                "total_tokens": 5 + 3 * len(choices)}
        return 200, payload


@pytest.fixture
def fake():
    state = FakeState()
    handler = type("Handler", (FakeHandler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def _policy(fake, **kw) -> OpenAIPolicy:
    kw.setdefault("api_key", "sk-test")
    return OpenAIPolicy(fake.url, kw.pop("model", "fake-a"), **kw)


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_texts_finish_reasons_groups_in_prompt_order(fake, endpoint):
    policy = _policy(fake, endpoint=endpoint)
    prompts = ["p0", [{"role": "user", "content": "p1"}], "p2", "p3"]
    groups = policy.generate(prompts, SamplingParams(n=3, max_new_tokens=7))
    assert len(groups) == 4
    for k, group in enumerate(groups):
        assert [c.text for c in group] == [f"p{k}#0", f"p{k}#1", f"p{k}#2"]
        assert [c.finish_reason for c in group] == ["stop", "length", "stop"]
        assert all(c.token_ids == () and c.logprobs == () for c in group)
    paths = {"chat": "messages", "completions": "prompt"}
    assert all(paths[endpoint] in b for b in fake.bodies)
    if endpoint == "completions":
        assert sorted(b["prompt"] for b in fake.bodies) == ["p0", "p1", "p2", "p3"]
    assert fake.headers[0]["authorization"] == "Bearer sk-test"


def test_request_body_carries_sampling_params(fake):
    policy = _policy(fake)
    params = SamplingParams(n=2, temperature=0.7, top_p=0.9, max_new_tokens=11,
                            stop=("\n", "END"), seed=123)
    policy.generate(["q"], params)
    (body,) = fake.bodies
    assert body["model"] == "fake-a"
    assert body["messages"] == [{"role": "user", "content": "q"}]
    assert (body["n"], body["temperature"], body["top_p"]) == (2, 0.7, 0.9)
    assert body["max_tokens"] == 11
    assert body["stop"] == ["\n", "END"]
    assert body["seed"] == 123


def test_usage_counters(fake):
    policy = _policy(fake)
    policy.generate(["a", "b", "c"], SamplingParams(n=2))
    snap = policy.usage.snapshot()
    assert snap["prompt_tokens"] == 15 and snap["completion_tokens"] == 18
    assert snap["total_tokens"] == 33 and snap["requests"] == 3
    assert snap["retries"] == 0 and snap["responses_without_usage"] == 0
    policy.usage.reset()
    assert policy.usage.total_tokens == 0


def test_chat_logprobs_and_missing_usage(fake):
    fake.logprobs = True
    fake.usage = False
    policy = _policy(fake)
    (group,) = policy.generate(["a"], SamplingParams(n=2))
    assert all(c.logprobs == (-0.5, -1.5) for c in group)
    snap = policy.usage.snapshot()
    assert snap["responses_without_usage"] == 1
    assert snap["completion_tokens"] == 4  # counted from the returned logprobs


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_logprobs_are_asked_for_and_count_each_choices_tokens(fake, endpoint):
    fake.logprobs = True
    policy = _policy(fake, endpoint=endpoint)
    (group,) = policy.generate(["a"], SamplingParams(n=2))
    assert fake.bodies[0]["logprobs"] == (True if endpoint == "chat" else 0)
    assert all(c.token_ids == () and c.logprobs == (-0.5, -1.5) and c.n_tokens == 2 for c in group)


def test_without_logprobs_completions_count_no_tokens(fake):
    policy = _policy(fake, request_logprobs=False)
    (group,) = policy.generate(["a"], SamplingParams(n=2))
    assert "logprobs" not in fake.bodies[0]
    assert all(c.n_tokens == 0 for c in group)
    assert policy.usage.completion_tokens == 6  # only the server's usage knows the cost


def test_completion_n_tokens_from_ids_or_logprobs():
    assert Completion("ab", (7, 8), (-0.1, -0.2), "stop").n_tokens == 2  # a local backend: token ids
    assert Completion("ab", (), (-0.1, -0.2, -0.3), "stop").n_tokens == 3  # a server: one logprob per token
    assert Completion("ab", (), (), "stop").n_tokens == 0


def test_http_model_spec():
    policy = load_policy("https://api.example.com/v1/#org/model-7b")  # no request is sent
    assert isinstance(policy, OpenAIPolicy)
    assert (policy.base_url, policy.model) == ("https://api.example.com/v1", "org/model-7b")
    assert policy.request_logprobs  # per-completion token counts need them
    for spec in ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1#"):
        with pytest.raises(ModelSpecError, match="names no served model.*#default"):
            load_policy(spec)
    for spec in ("http:///v1#m", "127.0.0.1:8000/v1#m", "http://[::1/v1#m"):
        with pytest.raises(ModelSpecError, match="not an HTTP server spec"):
            OpenAIPolicy.from_spec(spec)


def test_retries_after_503_then_succeeds(fake):
    fake.fail_first = 2
    policy = _policy(fake, max_retries=3)
    (group,) = policy.generate(["x"], SamplingParams(n=1))
    assert group[0].text == "x#0"
    assert fake.posts == 3
    assert policy.usage.snapshot()["retries"] == 2


def test_gives_up_after_max_retries_on_429(fake):
    fake.fail_first = 100
    fake.fail_status = 429
    fake.fail_message = "slow down"
    policy = _policy(fake, max_retries=2)
    with pytest.raises(HTTPBackendError) as info:
        policy.generate(["x"], SamplingParams())
    assert info.value.status == 429 and info.value.attempts == 3
    assert "429" in str(info.value) and "slow down" in str(info.value)
    assert fake.posts == 3


def test_no_retry_on_400_and_error_names_status_and_message(fake):
    policy = _policy(fake, model="bad", max_retries=3)
    with pytest.raises(HTTPBackendError) as info:
        policy.generate(["x"], SamplingParams())
    assert fake.posts == 1
    assert info.value.status == 400
    assert "400" in str(info.value)
    assert "model 'bad' does not exist" in str(info.value)
    assert f"from {fake.url}/chat/completions (model 'bad')" in str(info.value)  # names server and model


@pytest.mark.parametrize("reply, message", [(b"<html>oops", "response is not JSON: '<html>oops'"),
                                             (b'{"object": "list"}', "asked for n=1 choices, server returned none")])
def test_a_reply_that_is_no_completion_is_an_error_naming_the_server(fake, reply, message):
    fake.reply_body = reply
    with pytest.raises(HTTPBackendError, match=message) as info:
        _policy(fake).generate(["x"], SamplingParams())
    assert info.value.status == 200 and fake.url in str(info.value)


def test_timeout_raises_after_retries(fake):
    fake.sleep = 0.5
    policy = _policy(fake, timeout=0.1, max_retries=1)
    start = time.monotonic()
    with pytest.raises(HTTPBackendError) as info:
        policy.generate(["x"], SamplingParams())
    assert info.value.status is None and info.value.attempts == 2
    assert "timed out" in str(info.value)
    assert fake.posts == 2
    assert time.monotonic() - start < 3


def test_connection_refused_is_retried_then_raises():
    import socket

    with socket.socket() as s:  # find a free loopback port, then close it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    policy = OpenAIPolicy(f"http://127.0.0.1:{port}/v1", "m", max_retries=1)
    with pytest.raises(HTTPBackendError) as info:
        policy.generate(["x"], SamplingParams())
    assert info.value.status is None and info.value.attempts == 2


def test_concurrency_never_exceeds_max(fake):
    # The server holds the first requests until 3 are in flight at once, so the client must
    # reach its bound however slowly its threads run, and counts a request in flight only while
    # the client is still waiting for it (see do_POST), so no count exceeds the client's.
    fake.hold_until = 3
    fake.sleep = 0.05
    policy = _policy(fake, max_concurrency=3)
    prompts = [f"p{i}" for i in range(12)]
    groups = policy.generate(prompts, SamplingParams())
    assert [g[0].text for g in groups] == [f"p{i}#0" for i in range(12)]
    assert fake.max_in_flight == 3

    # The bound holds across threads calling generate at once.
    fake.max_in_flight = 0
    threads = [threading.Thread(target=policy.generate, args=(prompts[:6], SamplingParams()))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake.posts == 12 + 18
    assert fake.max_in_flight == 3


def test_connections_are_pooled_and_reused(fake):
    fake.hold_until = 3  # the first three requests are in flight at once: three connections
    policy = _policy(fake, max_concurrency=3)
    policy.generate([f"p{i}" for i in range(30)], SamplingParams())
    first = set(fake.client_ports)
    assert len(first) == 3  # urllib opened one connection per request: 30
    policy.generate([f"q{i}" for i in range(9)], SamplingParams())
    assert fake.client_ports == first  # the next call reuses the same connections
    policy.close()


def test_a_request_goes_out_in_one_write():
    from types import SimpleNamespace

    from sharpen.models.openai_http import _CONNECTIONS

    def writes_of(method: str, body: bytes | None = None) -> list[bytes]:
        writes: list[bytes] = []
        connection = _CONNECTIONS["http"]("127.0.0.1", 1)
        connection.sock = SimpleNamespace(sendall=writes.append, settimeout=lambda seconds: None)
        connection.request(method, "/v1/x", body=body, headers={"Content-Type": "application/json"})
        return writes

    (data,) = writes_of("POST", b'{"n": 1}')  # head and body together (urllib3 alone writes them apart)
    assert data.startswith(b"POST /v1/x HTTP/1.1\r\n") and data.endswith(b'\r\n\r\n{"n": 1}')
    (data,) = writes_of("GET")
    assert data.startswith(b"GET /v1/x HTTP/1.1\r\n") and data.endswith(b"\r\n\r\n")


def test_list_models(fake):
    assert _policy(fake).list_models() == ["fake-a", "fake-b"]


def test_api_key_from_environment(fake, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    policy = OpenAIPolicy(fake.url, "fake-a")
    policy.generate(["x"], SamplingParams())
    assert fake.headers[0]["authorization"] == "Bearer sk-env"


def test_without_a_key_no_authorization_header_is_sent(fake, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    OpenAIPolicy(fake.url, "fake-a").generate(["x"], SamplingParams())
    assert "authorization" not in fake.headers[0]


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_vllm_token_ids_are_asked_for_and_carried(fake, endpoint):
    fake.logprobs = fake.vllm_token_ids = True  # the fake answers "token_id:N" tokens when asked, as vLLM
    policy = _policy(fake, endpoint=endpoint, token_ids="vllm")
    (group,) = policy.generate(["a"], SamplingParams(n=2))
    assert fake.bodies[0]["return_tokens_as_token_ids"] is True
    for c in group:
        assert c.token_ids == (17, 4) and c.logprobs == (-0.5, -1.5) and c.missing_token_ids is None


def test_completions_without_ids_say_why(fake):
    fake.logprobs = fake.vllm_token_ids = True
    (group,) = _policy(fake).generate(["a"], SamplingParams())  # not asked: the server sends texts
    assert "return_tokens_as_token_ids" not in fake.bodies[0]
    (c,) = group
    assert c.token_ids == () and c.n_tokens == 2
    assert f"{fake.url} (model 'fake-a') returned no token ids" in c.missing_token_ids
    assert "token_ids=vllm" in c.missing_token_ids

    fake.vllm_token_ids = False  # a server that ignores the request field: no id is invented
    (group,) = _policy(fake, token_ids="vllm").generate(["a"], SamplingParams())
    assert group[0].token_ids == () and "returned no token ids" in group[0].missing_token_ids


def test_model_spec_options_set_the_clients_settings():
    policy = load_policy("http://127.0.0.1:1/v1#m?max_retries=5&timeout=2.5&max_concurrency=4"
                         "&endpoint=completions&request_logprobs=false")
    assert (policy.model, policy.endpoint, policy.request_logprobs) == ("m", "completions", False)
    assert policy._pool.retries.total == 5
    assert policy._pool.timeout.connect_timeout == policy._pool.timeout.read_timeout == 2.5
    assert policy.max_concurrency == 4
    assert load_policy("http://127.0.0.1:1/v1#m?token_ids=vllm").extra_body == {"return_tokens_as_token_ids": True}
    for spec, message in [("http://h/v1#m?retries=2", "unknown option 'retries'; known: timeout"),
                          ("http://h/v1#m?timeout=soon", "option timeout='soon'"),
                          ("http://h/v1#m?request_logprobs=maybe", "expected true or false"),
                          ("http://h/v1#m?token_ids=sglang", "token_ids must be one of none, vllm"),
                          ("http://h/v1#m?max_concurrency=0", "max_concurrency must be >= 1")]:
        with pytest.raises(ModelSpecError, match=message):
            load_policy(spec)


def test_bad_endpoint_rejected():
    with pytest.raises(ValueError):
        OpenAIPolicy("http://127.0.0.1:1/v1", "m", endpoint="embeddings")


# ---- against the real `sharpen serve` (a tiny model) -----------------------------------------


class FailingFirst:
    """Wraps a policy: the first `fail` generate calls raise (the server answers 500); counts tokens."""

    def __init__(self, inner, fail: int = 0) -> None:
        self.inner, self.fail, self.tokens = inner, fail, 0
        self.lock = threading.Lock()

    def generate(self, prompts, params):
        with self.lock:
            if self.fail > 0:
                self.fail -= 1
                raise RuntimeError("injected failure")
        groups = self.inner.generate(prompts, params)
        with self.lock:
            self.tokens += sum(c.n_tokens for g in groups for c in g)
        return groups

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture
def serve(tiny_policy):
    """`sharpen serve` on loopback over the tiny model; `.clients` holds the TCP connections
    requests arrived on (distinct client address and port, as uvicorn reports them in each
    request's ASGI scope)."""
    from sharpen.serving.server import make_server

    policy = FailingFirst(tiny_policy)
    srv = make_server(policy, port=0, max_n=8, max_tokens_limit=16)
    clients: set = set()
    app = srv.uvicorn.config.app

    async def counting_app(scope, receive, send):
        if scope["type"] == "http":
            clients.add(tuple(scope["client"]))
        await app(scope, receive, send)

    srv.uvicorn.config.app = counting_app
    srv.wrapped = policy
    srv.clients = clients
    with srv:
        yield srv


def test_real_serve_usage_counts_and_pooled_connections(serve):
    policy = OpenAIPolicy(serve.url, "default", max_concurrency=3)
    groups = policy.generate([f"{a}+{a}=" for a in range(10, 16)], SamplingParams(n=3, max_new_tokens=4))
    assert [len(g) for g in groups] == [3] * 6
    usage = policy.usage.snapshot()
    assert usage["requests"] == 6 and usage["responses_without_usage"] == 0 and usage["retries"] == 0
    counted = sum(c.n_tokens for g in groups for c in g)
    assert counted == usage["completion_tokens"] == serve.wrapped.tokens > 0  # per-choice counts are exact
    assert all(c.missing_token_ids for g in groups for c in g)  # sharpen serve returns token texts
    opened = set(serve.clients)
    assert len(opened) <= 3  # at most max_concurrency connections for 6 requests
    policy.generate([f"{a}+{a}=" for a in range(20, 26)], SamplingParams(n=1, max_new_tokens=2))
    assert serve.clients == opened  # the next call reuses them: no new connection
    policy.close()


def test_real_serve_500_is_retried_and_404_is_not(serve):
    serve.wrapped.fail = 1
    policy = OpenAIPolicy(serve.url, "default", max_retries=2)
    (group,) = policy.generate(["12+34="], SamplingParams(max_new_tokens=4))
    assert len(group) == 1 and policy.usage.snapshot()["retries"] == 1
    with pytest.raises(HTTPBackendError) as info:
        OpenAIPolicy(serve.url, "nope", max_retries=2).generate(["x"], SamplingParams(max_new_tokens=4))
    assert info.value.status == 404 and info.value.attempts == 1
    assert "'nope' does not exist" in str(info.value) and "(model 'nope')" in str(info.value)
