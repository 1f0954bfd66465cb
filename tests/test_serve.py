"""`sharpen serve`: the OpenAI-compatible server on loopback, driven by the official client
and by `sharpen compare` through the HTTP backend."""

from __future__ import annotations

import json
import random
import socket
import threading
import urllib.error
import urllib.request

import pytest

from sharpen.serve import make_server

openai = pytest.importorskip("openai")


class CountingPolicy:
    """Wraps a policy and records every generate call (prompts per call) and the tokens generated."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[int] = []
        self.tokens = 0
        self.lock = threading.Lock()

    def generate(self, prompts, params):
        groups = self.inner.generate(prompts, params)
        with self.lock:
            self.calls.append(len(prompts))
            self.tokens += sum(c.n_tokens for group in groups for c in group)
        return groups

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    from sharpen.models.hf import HFPolicy

    return CountingPolicy(HFPolicy.load(tiny_model_dir, device="cpu", seed=0))


@pytest.fixture(scope="module")
def server(policy):
    srv = make_server(policy, port=0, max_n=8, max_tokens_limit=32, max_body_bytes=20_000, batch_window=0.05)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=60)


def test_binds_loopback(server):
    assert server.server_address[0] == "127.0.0.1"
    assert server.server_address[1] > 0


def test_models_lists_base_and_strategies(client):
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == "default"
    assert "self_consistency-8/default" in ids and "debate-3x2/default" in ids


def test_chat_plain_n(client):
    r = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "12+34="}], n=3, max_tokens=6, temperature=1.0,
        stop=["\n"],
    )
    assert r.object == "chat.completion" and r.model == "default" and r.id.startswith("chatcmpl-")
    assert [c.index for c in r.choices] == [0, 1, 2]
    for c in r.choices:
        assert c.message.role == "assistant" and isinstance(c.message.content, str)
        assert c.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0
    assert 0 < r.usage.completion_tokens <= 3 * 6
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_completions_plain_and_seed_reproducible(client):
    kwargs = dict(model="default", prompt="3+4=", max_tokens=5, temperature=1.0, seed=7, n=2, stop="\n")
    a = client.completions.create(**kwargs)
    b = client.completions.create(**kwargs)
    assert a.object == "text_completion" and len(a.choices) == 2
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert a.usage.completion_tokens > 0 and a.usage.prompt_tokens > 0


def test_completions_list_of_prompts(client):
    r = client.completions.create(model="default", prompt=["1+1=", "2+2="], n=2, max_tokens=4)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]


def test_strategy_model_chat_and_completions(client, policy):
    before = len(policy.calls)
    r = client.chat.completions.create(model="self_consistency-4/default",
                                       messages=[{"role": "system", "content": "be brief"},
                                                 {"role": "user", "content": "21+35="}])
    assert r.model == "self_consistency-4/default" and len(r.choices) == 1
    assert isinstance(r.choices[0].message.content, str)
    # four samples' tokens are counted (each at least one token)
    assert r.usage.completion_tokens >= 4
    assert len(policy.calls) > before
    r = client.completions.create(model="debate-2x1/default", prompt="10+20=", n=2)
    assert len(r.choices) == 2 and r.usage.completion_tokens >= 2 * 2


def test_chat_logprobs_one_per_generated_token(client):
    r = client.chat.completions.create(model="default", messages=[{"role": "user", "content": "12+34="}], n=3,
                                       max_tokens=6, logprobs=True, top_logprobs=0)
    entries = [c.logprobs.content for c in r.choices]
    assert all(1 <= len(e) <= 6 for e in entries)
    assert sum(len(e) for e in entries) == r.usage.completion_tokens
    for e in entries:
        assert all(isinstance(t.token, str) and t.logprob <= 0 and t.top_logprobs == [] for t in e)
    plain = client.chat.completions.create(model="default", messages=[{"role": "user", "content": "1+2="}])
    assert plain.choices[0].logprobs is None  # only when asked


def test_completions_logprobs_zero(client):
    r = client.completions.create(model="default", prompt=["1+1=", "2+2="], n=2, max_tokens=5, logprobs=0)
    for c in r.choices:
        assert len(c.logprobs.tokens) == len(c.logprobs.token_logprobs) >= 1
        assert all(v <= 0 for v in c.logprobs.token_logprobs)
    assert sum(len(c.logprobs.token_logprobs) for c in r.choices) == r.usage.completion_tokens


def test_logprob_alternatives_and_strategy_logprobs_are_400(client):
    chat = dict(model="default", messages=[{"role": "user", "content": "1+1="}])
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**chat, logprobs=True, top_logprobs=3)
    assert info.value.body["param"] == "top_logprobs" and info.value.body["code"] == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="default", prompt="1+1=", logprobs=2)
    assert info.value.body["param"] == "logprobs" and "only the sampled tokens" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**{**chat, "model": "self_consistency-2/default"}, logprobs=True)
    assert info.value.body["param"] == "logprobs" and "strategy" in info.value.body["message"]


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "1+1="}])
    assert info.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="frobnicate-3/default", messages=[{"role": "user", "content": "x"}])


def test_limits_are_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="default", prompt="1+1=", n=9)
    assert info.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="default", prompt="1+1=", max_tokens=33)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="self_consistency-200/default", prompt="1+1=")


def test_concurrent_requests_are_batched(server, policy):
    n_requests = 8
    before = len(policy.calls)
    barrier = threading.Barrier(n_requests)
    results: list = [None] * n_requests
    errors: list = []

    def worker(i: int) -> None:
        try:
            c = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=60)
            barrier.wait()
            results[i] = c.completions.create(model="default", prompt=f"{i}+{i}=", max_tokens=4, temperature=0.5)
        except Exception as err:  # collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert all(r is not None and len(r.choices) == 1 for r in results)
    calls = policy.calls[before:]
    assert sum(calls) == n_requests
    assert len(calls) < n_requests


# ---- malformed requests over plain urllib ---------------------------------------------------


def _post(server, path: str, data: bytes, headers=None) -> tuple[int, dict]:
    req = urllib.request.Request(server.url + path, data=data, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _assert_error_shape(status: int, body: dict) -> None:
    assert 400 <= status < 500, (status, body)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in body["error"]["message"]


BAD_BODIES = [
    b"", b"{", b"not json", b"[]", b"null", b"42", b'"x"', b"\xff\xfe", b"[" * 5000 + b"]" * 5000,
    b'{"model": "default"}',
    b'{"messages": [{"role": "user", "content": "1+1="}]}',
]
CHAT_OK = {"model": "default", "messages": [{"role": "user", "content": "1+1="}], "max_tokens": 3}
BAD_FIELDS = [
    ("model", 3), ("model", ""), ("model", None), ("messages", "hi"), ("messages", []), ("messages", [3]),
    ("messages", [{"role": "wizard", "content": "x"}]), ("messages", [{"role": "user", "content": 5}]),
    ("messages", [{"role": "user"}]), ("messages", [{"role": "system", "content": "only system"}]),
    ("messages", [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]),
    ("n", "2"), ("n", 0), ("n", -1), ("n", 1.5), ("n", True), ("n", 10**6), ("n", 10**400),
    ("temperature", "hot"), ("temperature", -1), ("temperature", 1e309), ("temperature", 10**400),
    ("top_p", 0), ("top_p", 2), ("top_p", [1]), ("max_tokens", 0), ("max_tokens", "5"), ("max_tokens", 10**9),
    ("max_tokens", 2.5), ("stop", 3), ("stop", [1, 2]), ("stop", ["x"] * 100), ("seed", "s"), ("seed", -1),
    ("seed", 1.5), ("stream", True), ("model", "self_consistency-0/default"), ("model", "debate-64x64/default"),
    ("logprobs", 1), ("logprobs", "yes"), ("top_logprobs", -1), ("top_logprobs", 21), ("top_logprobs", "3"),
]


def test_fuzz_malformed_requests_get_4xx_error_shape(server):
    for raw in BAD_BODIES:
        for path in ("/chat/completions", "/completions"):
            _assert_error_shape(*_post(server, path, raw))
    for field, value in BAD_FIELDS:
        body = {**CHAT_OK, field: value}
        _assert_error_shape(*_post(server, "/chat/completions", json.dumps(body).encode()))
    rng = random.Random(0)
    junk = [None, 0, -5, 1e300, "", "x", [], {}, [None], {"a": 1}, True, 10**30]
    fields = ["model", "messages", "prompt", "n", "temperature", "top_p", "max_tokens", "stop", "seed"]
    for _ in range(60):
        body = {**CHAT_OK, "prompt": "1+1="}
        for field in rng.sample(fields, rng.randint(1, 3)):
            if rng.random() < 0.3:
                body.pop(field, None)
            else:
                body[field] = rng.choice(junk)
        path = rng.choice(["/chat/completions", "/completions"])
        status, answer = _post(server, path, json.dumps(body).encode())
        if status != 200:
            _assert_error_shape(status, answer)
        else:
            assert answer["choices"]


def test_body_too_large_is_413(server):
    body = json.dumps({**CHAT_OK, "messages": [{"role": "user", "content": "x" * 30_000}]}).encode()
    status, answer = _post(server, "/chat/completions", body)
    assert status == 413
    _assert_error_shape(status, answer)


def test_raw_socket_garbage_and_unknown_routes(server):
    status, answer = _post(server, "/nowhere", b"{}")
    assert status == 404
    _assert_error_shape(status, answer)
    host, port = server.server_address[:2]
    for raw in (b"GARBAGE\r\n\r\n", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n",
                b"POST /v1/completions HTTP/1.1\r\nContent-Length: abc\r\n\r\n"):
        with socket.create_connection((host, port), timeout=30) as sock:
            sock.sendall(raw)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, payload = data.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        _assert_error_shape(status, json.loads(payload))


def test_server_error_is_500_with_shape():
    class Broken:
        def generate(self, prompts, params):
            raise RuntimeError("secret internals")

    srv = make_server(Broken(), port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        status, body = _post(srv, "/completions", json.dumps({"model": "default", "prompt": "x"}).encode())
    finally:
        srv.shutdown()
        srv.server_close()
    assert status == 500
    assert body["error"]["type"] == "server_error" and "secret" not in body["error"]["message"]


# ---- `sharpen compare` through the HTTP backend ---------------------------------------------


def test_cli_compare_through_the_http_backend(server, policy, tmp_path, capsys, monkeypatch):
    import sharpen.models
    from sharpen.cli import main

    loaded = []  # the OpenAIPolicy the command builds, to read the usage the server reported

    def load_and_keep(spec, **kwargs):
        loaded.append(load_policy(spec, **kwargs))
        return loaded[-1]

    load_policy = sharpen.models.load_policy
    monkeypatch.setattr(sharpen.models, "load_policy", load_and_keep)
    out, png = tmp_path / "cmp.json", tmp_path / "cmp.png"
    specs = ["single", "self_consistency-4", "best_of_n-4:likelihood"]
    tokens_before = policy.tokens
    code = main(["compare", "--model", f"{server.url}#default", "--task", "addition",
                 "--strategies", ",".join(specs), "--problems", "3", "--json", str(out), "--plot", str(png)])
    assert code == 0
    (http,) = loaded
    usage = http.usage.snapshot()
    data = json.loads(out.read_text())
    assert data["model"] == f"{server.url}#default" and data["n_problems"] == 3
    assert [s["spec"] for s in data["strategies"]] == specs
    for s in data["strategies"]:
        assert len(s["correct"]) == 3 and s["accuracy"] == pytest.approx(sum(s["correct"]) / 3)
        assert s["tokens_per_problem"] > 0 and all(t > 0 for t in s["tokens"])
    # every token a strategy counted is a token the server reported in usage, and generated
    counted = sum(sum(s["tokens"]) for s in data["strategies"])
    assert usage["responses_without_usage"] == 0 and usage["retries"] == 0
    assert counted == usage["completion_tokens"] == policy.tokens - tokens_before
    assert usage["requests"] == 3 * len(specs)  # one request per problem and strategy (n samples each)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "single" in printed and "self_consistency" in printed and "wrote" in printed  # the table (cells may be cut)


@pytest.mark.parametrize("spec, missing", [("best_of_n-4:self_certainty", "tokenizer, encode, score_tokens"),
                                           ("best_of_n-4:self_judge", "tokenizer, choice_logprobs"),
                                           ("self_refine-2", "choice_logprobs")])
def test_cli_compare_over_http_refuses_strategies_that_need_the_model(server, policy, capsys, spec, missing):
    from sharpen.cli import main

    calls = len(policy.calls)
    code = main(["compare", "--model", f"{server.url}#default", "--task", "addition",
                 "--strategies", f"single,{spec}", "--problems", "2"])
    assert code == 2
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    name = spec.split("-")[0]
    assert f"strategy '{name}'" in printed and f"OpenAIPolicy has no {missing}" in printed
    assert "Traceback" not in printed
    assert len(policy.calls) == calls  # refused before anything was generated


def test_cli_compare_over_http_spec_and_server_errors(server, capsys):
    from sharpen.cli import main

    base = ["compare", "--task", "addition", "--strategies", "single", "--problems", "1"]
    assert main([*base, "--model", server.url]) == 2
    assert "names no served model" in " ".join(capsys.readouterr().out.split())
    assert main([*base, "--model", f"{server.url}#nope"]) == 1
    printed = " ".join(capsys.readouterr().out.split())
    assert "model server error" in printed and "HTTP 404" in printed and "'nope' does not exist" in printed


def test_cli_has_serve():
    from sharpen.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", "default", "--port", "0", "--task", "addition"])
    assert args.host == "127.0.0.1" and args.port == 0 and args.func.__name__ == "cmd_serve"
