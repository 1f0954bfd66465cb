"""OpenAIPolicy against a tiny fake OpenAI server on loopback (no other network)."""

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
        self.logprobs = False        # include logprobs (chat: .content, completions: .token_logprobs)
        self.usage = True            # include usage
        self.posts = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies: list[dict] = []
        self.headers: list[dict] = []


def _prompt_of(body: dict) -> str:
    if "messages" in body:
        return body["messages"][-1]["content"]
    return body["prompt"]


class FakeHandler(BaseHTTPRequestHandler):
    state: FakeState  # set on a subclass per server

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, payload: dict) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
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
            st.headers.append(dict(self.headers))
        try:
            if st.sleep:
                time.sleep(st.sleep)
            if number <= st.fail_first:
                self._send(st.fail_status, {"error": {"message": st.fail_message, "type": "x"}})
                return
            if body.get("model") == "bad":
                self._send(400, {"error": {"message": "model 'bad' does not exist"}})
                return
            chat = self.path == "/v1/chat/completions"
            if not chat and self.path != "/v1/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            prompt = _prompt_of(body)
            choices = []
            # Reverse index order on purpose: the client must sort by index.
            for i in reversed(range(body.get("n", 1))):
                text = f"{prompt}#{i}"
                choice = {"index": i, "finish_reason": "length" if i % 2 else "stop"}
                if chat:
                    choice["message"] = {"role": "assistant", "content": text}
                    if st.logprobs:
                        choice["logprobs"] = {"content": [
                            {"token": "a", "logprob": -0.5}, {"token": "b", "logprob": -1.5}]}
                else:
                    choice["text"] = text
                    if st.logprobs:
                        choice["logprobs"] = {"tokens": ["a", "b"], "token_logprobs": [-0.5, -1.5]}
                choices.append(choice)
            payload = {"id": "x", "object": "chat.completion" if chat else "text_completion",
                       "model": body.get("model"), "choices": choices}
            if st.usage:
                payload["usage"] = {"prompt_tokens": 5, "completion_tokens": 3 * len(choices),
                                    "total_tokens": 5 + 3 * len(choices)}
            self._send(200, payload)
        finally:
            with st.lock:
                st.in_flight -= 1


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
    kw.setdefault("backoff", 0.01)
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
    assert fake.headers[0]["Authorization"] == "Bearer sk-test"


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
    policy = OpenAIPolicy(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, backoff=0.01)
    with pytest.raises(HTTPBackendError) as info:
        policy.generate(["x"], SamplingParams())
    assert info.value.status is None and info.value.attempts == 2


def test_concurrency_never_exceeds_max(fake):
    fake.sleep = 0.05
    policy = _policy(fake, max_concurrency=3)
    prompts = [f"p{i}" for i in range(12)]
    groups = policy.generate(prompts, SamplingParams())
    assert [g[0].text for g in groups] == [f"p{i}#0" for i in range(12)]
    assert fake.max_in_flight in (2, 3)

    # The bound holds across threads calling generate at once.
    fake.max_in_flight = 0
    threads = [threading.Thread(target=policy.generate, args=(prompts[:6], SamplingParams()))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake.max_in_flight <= 3


def test_list_models(fake):
    assert _policy(fake).list_models() == ["fake-a", "fake-b"]


def test_api_key_from_environment(fake, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    policy = OpenAIPolicy(fake.url, "fake-a")
    policy.generate(["x"], SamplingParams())
    assert fake.headers[0]["Authorization"] == "Bearer sk-env"


def test_bad_endpoint_rejected():
    with pytest.raises(ValueError):
        OpenAIPolicy("http://127.0.0.1:1/v1", "m", endpoint="embeddings")
