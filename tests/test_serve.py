"""`sharpen serve`: the OpenAI-compatible server (uvicorn on a loopback port), driven by the
official client, by raw HTTP and by `sharpen compare` through the HTTP backend."""

from __future__ import annotations

import json
import random
import socket
import threading
import urllib.error
import urllib.request

import pytest

from sharpen.serving import ServeError, make_server

openai = pytest.importorskip("openai")


class CountingPolicy:
    """Wraps a policy and records every generate call (prompts per call) and the tokens generated."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[int] = []
        self.prompts: list = []  # every prompt of every generate call
        self.tokens = 0
        self.lock = threading.Lock()

    def generate(self, prompts, params, **kwargs):
        groups = self.inner.generate(prompts, params, **kwargs)
        with self.lock:
            self.calls.append(len(prompts))
            self.prompts.extend(prompts)
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
    with make_server(policy, port=0, max_n=8, max_tokens_limit=32, max_body_bytes=20_000, batch_window=0.05) as srv:
        yield srv


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=60)


def test_binds_loopback(server):
    assert server.server_address[0] == "127.0.0.1"
    assert server.server_address[1] > 0


def test_models_lists_base_and_strategies(client):
    models = client.models.list().data
    ids = [m.id for m in models]
    assert ids[0] == "default"
    assert "self_consistency-8/default" in ids and "debate-3x2/default" in ids
    # retry with binary feedback needs reference answers a served request lacks: not listed
    assert "retry-3/default" not in ids and "retry-3:none/default" in ids
    descriptions = {m.id: m.model_extra["description"] for m in models}
    assert "own verification" in descriptions["self_refine-2/default"]
    assert "no reference answer" in descriptions["retry-3:none/default"]


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


def test_strategy_logprobs_and_retry_with_binary_feedback_are_400(client):
    chat = dict(model="self_consistency-2/default", messages=[{"role": "user", "content": "1+1="}])
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**chat, logprobs=True)
    assert info.value.body["param"] == "logprobs" and "strategy" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**{**chat, "model": "retry-3/default"})
    assert info.value.body["param"] == "model" and "reference answer" in info.value.body["message"]


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


# ---- streaming, logprobs, sampling parameters, the conversation ------------------------------


CHAT = dict(model="default", messages=[{"role": "user", "content": "12+34="}], max_tokens=8, temperature=1.0)


def _streamed(stream) -> tuple[dict, dict, list]:
    """(text per choice index, finish_reason per index, every chunk) of a streamed answer."""
    texts: dict = {}
    finish: dict = {}
    chunks = list(stream)
    for chunk in chunks:
        for c in chunk.choices:
            piece = c.delta.content if hasattr(c, "delta") else c.text
            texts[c.index] = texts.get(c.index, "") + (piece or "")
            if c.finish_reason is not None:
                finish[c.index] = c.finish_reason
    return texts, finish, chunks


@pytest.mark.parametrize("model", ["default", "self_consistency-3/default"])
def test_chat_stream_equals_the_answer_for_the_same_seed(client, model):
    kwargs = {**CHAT, "model": model, "n": 2, "seed": 11}
    whole = client.chat.completions.create(**kwargs)
    texts, finish, chunks = _streamed(client.chat.completions.create(**kwargs, stream=True))
    assert texts == {c.index: c.message.content for c in whole.choices}
    assert finish == {c.index: c.finish_reason for c in whole.choices}
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].object == "chat.completion.chunk"
    if model == "default":  # plain models stream tokens as they are sampled: more than one delta per choice
        deltas = [c for chunk in chunks for c in chunk.choices if c.delta.content]
        assert len(deltas) > len(whole.choices)


@pytest.mark.parametrize("model", ["default", "debate-2x1/default"])
def test_completions_stream_equals_the_answer_and_reports_usage(client, model):
    kwargs = dict(model=model, prompt="3+4=", max_tokens=6, temperature=1.0, seed=5, stop=["\n"])
    whole = client.completions.create(**kwargs)
    texts, finish, chunks = _streamed(client.completions.create(
        **kwargs, stream=True, stream_options={"include_usage": True}))
    assert texts == {0: whole.choices[0].text} and finish == {0: whole.choices[0].finish_reason}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_top_logprobs_are_sorted_and_the_sampled_logprob_is_the_policys(client, policy):
    r = client.chat.completions.create(**CHAT, n=2, logprobs=True, top_logprobs=5, seed=3)
    prompt_ids = policy.encode([{"role": "user", "content": "12+34="}])
    for choice in r.choices:
        entries = choice.logprobs.content
        assert entries
        for e in entries:
            values = [t.logprob for t in e.top_logprobs]
            assert len(values) == 5 and values == sorted(values, reverse=True)
            assert e.logprob <= values[0] + 1e-6
            if e.token in [t.token for t in e.top_logprobs]:
                match = next(t for t in e.top_logprobs if t.token == e.token)
                assert match.logprob == pytest.approx(e.logprob, abs=1e-5)
        pieces = {policy.piece(i): i for i in range(len(policy.tokenizer))}  # a tiny vocabulary
        ids = [pieces[e.token] for e in entries]
        import torch

        with torch.no_grad():  # the policy's own log-probs of the sampled tokens (temperature 1)
            scored = policy.score_tokens([prompt_ids], [ids]).logprobs[0].tolist()
        assert scored == pytest.approx([e.logprob for e in entries], abs=1e-4)
    r = client.completions.create(model="default", prompt="1+1=", max_tokens=4, logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.top_logprobs) == len(lp.tokens) and all(len(m) <= 3 for m in lp.top_logprobs)


def test_top_k_min_p_and_stop_token_ids_are_honoured(client, policy):
    greedy = client.completions.create(model="default", prompt="12+34=", max_tokens=6, temperature=0)
    for extra in ({"top_k": 1}, {"min_p": 1.0}):
        r = client.completions.create(model="default", prompt="12+34=", max_tokens=6, temperature=1.0, n=3,
                                      extra_body=extra)
        assert [c.text for c in r.choices] == [greedy.choices[0].text] * 3, extra
    first = client.completions.create(model="default", prompt="12+34=", max_tokens=6, temperature=0, logprobs=0)
    token = policy.tokenizer.convert_tokens_to_ids(policy.tokenizer.tokenize(first.choices[0].logprobs.tokens[0]))
    cut = client.completions.create(model="default", prompt="12+34=", max_tokens=6, temperature=0,
                                    extra_body={"stop_token_ids": token[:1]})
    assert cut.usage.completion_tokens == 1 and cut.choices[0].finish_reason == "stop"


def test_finish_reason_is_length_when_the_budget_ends_a_completion(client):
    for model in ("default", "self_consistency-2/default", "best_of_n-2:likelihood/default"):
        r = client.chat.completions.create(**{**CHAT, "model": model, "max_tokens": 1})
        assert r.choices[0].finish_reason == "length", model


def test_the_whole_conversation_reaches_every_strategy_call(client, policy):
    messages = [{"role": "system", "content": "You add numbers."}, {"role": "user", "content": "1+1="},
                {"role": "assistant", "content": "2"}, {"role": "user", "content": "12+30="}]
    for model in ("self_consistency-2/default", "debate-2x2/default", "retry-2:none/default"):
        before = len(policy.prompts)
        client.chat.completions.create(model=model, messages=messages, max_tokens=4)
        seen = policy.prompts[before:]
        assert seen, model
        for prompt in seen:
            assert prompt[: len(messages)] == messages, (model, prompt)


def test_a_model_name_cannot_run_a_file(client, tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.py"
    path.write_text(f"open({str(marker)!r}, 'w').close()\n"
                    "def f(prompts, completions, **kwargs):\n    return [0.0] * len(completions)\n")
    for model in (f"best_of_n-1:{path}:f/default", f"reread+best_of_n-1:{path}:f/default"):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "1+1="}])
        assert info.value.body["param"] == "model" and "user code" in info.value.body["message"]
    assert not marker.exists()


def test_api_key_is_required_when_set(policy):
    with make_server(policy, port=0, api_key="s3cret", max_tokens_limit=8) as srv:
        with pytest.raises(openai.AuthenticationError) as info:
            openai.OpenAI(base_url=srv.url, api_key="wrong", max_retries=0).models.list()
        assert info.value.body["code"] == "invalid_api_key"
        good = openai.OpenAI(base_url=srv.url, api_key="s3cret", max_retries=0)
        assert good.completions.create(model="default", prompt="1+1=", max_tokens=2).choices
        with urllib.request.urlopen(srv.url.removesuffix("/v1") + "/health", timeout=30) as response:
            assert json.loads(response.read()) == {"status": "ok"}


def test_a_backend_without_a_feature_refuses_it():
    class SamplesOnly:
        def generate(self, prompts, params):
            from sharpen.models.base import Completion

            return [[Completion("7", (1,), (0.0,), "stop")] * params.n for _ in prompts]

    with make_server(SamplesOnly(), port=0) as srv:
        c = openai.OpenAI(base_url=srv.url, api_key="x", max_retries=0)
        assert c.completions.create(model="default", prompt="3+4=").choices[0].text == "7"
        texts, _, _ = _streamed(c.completions.create(model="default", prompt="3+4=", stream=True))
        assert texts == {0: "7"}  # streamed whole: the backend reports no tokens as it samples
        for extra in ({"top_k": 5}, {"min_p": 0.1}, {"stop_token_ids": [3]}):
            with pytest.raises(openai.BadRequestError) as info:
                c.completions.create(model="default", prompt="3+4=", extra_body=extra)
            assert info.value.body["param"] == next(iter(extra)) and "SamplesOnly" in info.value.body["message"]


def test_bind_failure_is_one_clear_error(server):
    with pytest.raises(ServeError, match=r"cannot listen on 127.0.0.1:99999: .*port must be 0-65535"):
        make_server(object(), port=99999)
    host, port = server.server_address
    with pytest.raises(ServeError, match=rf"cannot listen on 127.0.0.1:{port}: .*in use"):
        make_server(object(), port=port)


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
    ("seed", 1.5), ("stream", "yes"), ("model", "self_consistency-0/default"), ("model", "debate-64x64/default"),
    ("logprobs", 1), ("logprobs", "yes"), ("top_logprobs", -1), ("top_logprobs", 21), ("top_logprobs", "3"),
    ("presence_penalty", 0.5), ("frequency_penalty", 1.0), ("repetition_penalty", 1.2), ("logit_bias", {"5": 3}),
    ("response_format", {"type": "json_object"}), ("min_tokens", 3), ("tools", [{"type": "function"}]),
    ("top_k", -2), ("min_p", 2), ("stop_token_ids", [-1]), ("model", "best_of_n-1:/tmp/x.py:f/default"),
]
NAMED = {"model", "n", "temperature", "top_p", "max_tokens", "seed", "presence_penalty", "frequency_penalty",
         "repetition_penalty", "logit_bias", "response_format", "min_tokens", "tools", "top_k", "min_p",
         "top_logprobs", "logprobs", "stream"}
"""Parameters whose refusal must name them (param == field)."""


def test_fuzz_malformed_requests_get_4xx_error_shape(server):
    for raw in BAD_BODIES:
        for path in ("/chat/completions", "/completions"):
            _assert_error_shape(*_post(server, path, raw))
    for field, value in BAD_FIELDS:
        body = {**CHAT_OK, field: value}
        status, answer = _post(server, "/chat/completions", json.dumps(body).encode())
        _assert_error_shape(status, answer)
        if field in NAMED:
            assert answer["error"]["param"] == field, (field, value, answer)
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


def test_unknown_routes_and_methods_and_raw_garbage(server):
    status, answer = _post(server, "/nowhere", b"{}")
    assert status == 404
    _assert_error_shape(status, answer)
    request = urllib.request.Request(server.url + "/chat/completions", method="GET")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=60)
    assert info.value.code == 405
    _assert_error_shape(405, json.loads(info.value.read()))
    host, port = server.server_address
    for raw in (b"GARBAGE\r\n\r\n", b"POST /v1/completions HTTP/1.1\r\nContent-Length: abc\r\n\r\n"):
        with socket.create_connection((host, port), timeout=30) as sock:  # uvicorn's HTTP parser answers
            sock.sendall(raw)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert 400 <= int(data.split()[1]) < 500


def test_server_error_is_500_with_shape():
    class Broken:
        def generate(self, prompts, params):
            raise RuntimeError("secret internals")

    with make_server(Broken(), port=0) as srv:
        status, body = _post(srv, "/completions", json.dumps({"model": "default", "prompt": "x"}).encode())
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
    assert code == 1
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    name = spec.split("-")[0]
    assert f"strategy '{name}'" in printed and f"OpenAIPolicy has no {missing}" in printed
    assert "Traceback" not in printed
    assert len(policy.calls) == calls  # refused before anything was generated


def test_cli_compare_over_http_spec_and_server_errors(server, capsys):
    from sharpen.cli import main

    base = ["compare", "--task", "addition", "--strategies", "single", "--problems", "1"]
    assert main([*base, "--model", server.url]) == 1
    assert "names no served model" in " ".join(capsys.readouterr().out.split())
    assert main([*base, "--model", f"{server.url}#nope"]) == 1
    printed = " ".join(capsys.readouterr().out.split())
    assert "model server error" in printed and "HTTP 404" in printed and "'nope' does not exist" in printed


def test_cli_has_serve():
    from sharpen.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", "default", "--port", "0", "--task", "addition"])
    assert args.host == "127.0.0.1" and args.port == 0 and args.func.__name__ == "cmd_serve"


def test_cli_serve_port_in_use_is_one_clean_error(server, tiny_model_dir, capsys):
    from sharpen.cli import main

    _, port = server.server_address
    code = main(["serve", "--model", str(tiny_model_dir), "--port", str(port)])
    printed = " ".join(capsys.readouterr().out.split())
    assert code == 1 and f"cannot listen on 127.0.0.1:{port}" in printed and "Traceback" not in printed


def test_retry_with_binary_feedback_only_with_reference_problems(policy):
    from sharpen.models.formats import EMBEDDED, as_messages
    from sharpen.tasks import get_task

    task = get_task("addition")
    problem = task.problems("eval", 20, 0)[3]
    with make_server(policy, port=0, references="eval:20", max_tokens_limit=16) as srv:
        c = openai.OpenAI(base_url=srv.url, api_key="x", max_retries=0)
        listed = {m.id: m.model_extra["description"] for m in c.models.list().data}
        assert "reference answer" in listed["retry-3/default"] and "20 reference problems" in listed["retry-3/default"]
        before = len(policy.prompts)
        r = c.chat.completions.create(model="retry-3/default", messages=as_messages(problem.prompt), temperature=1.0)
        seen = policy.prompts[before:]
        answered_right = task.check(problem, r.choices[0].message.content).correct
        # binary feedback: a wrong first attempt is told EMBEDDED.retry_feedback; a right one stops
        assert (len(seen) == 1 and answered_right) or EMBEDDED.retry_feedback in json.dumps(seen[1])
        with pytest.raises(openai.BadRequestError) as info:
            c.chat.completions.create(model="retry-3/default", messages=[{"role": "user", "content": "not a problem"}])
        assert info.value.body["param"] == "messages" and "reference problems" in info.value.body["message"]


def test_a_prompt_over_the_context_fails_only_its_own_request_in_a_shared_call(policy):
    import asyncio

    from sharpen.models import ContextLengthError
    from sharpen.models.base import SamplingParams
    from sharpen.serving.worker import Worker

    long_prompt, params = "1+" * 100 + "1=", SamplingParams(n=2, max_new_tokens=4, temperature=1.0)
    seen: list[int] = []
    generate = policy.inner.generate

    class Spy:  # records the prompts of every call, failed ones included
        def __getattr__(self, name):
            return getattr(policy, name)

        def generate(self, prompts, p, **kw):
            seen.append(len(prompts))
            return generate(prompts, p, **kw)

    async def main():
        worker = Worker(Spy(), window=0.2)  # both requests arrive within the window: one shared call
        await worker.start()
        try:
            return await asyncio.gather(worker.sample(long_prompt, params), worker.sample("12+34=", params),
                                        return_exceptions=True)
        finally:
            await worker.stop()

    too_long, short = asyncio.run(main())
    assert seen[0] == 2  # tried together, then one by one
    assert isinstance(too_long, ContextLengthError) and "context length of 128" in str(too_long)
    completions, prompt_tokens = short
    assert len(completions) == 2 and prompt_tokens == len(policy.encode("12+34="))


def test_a_prompt_over_the_context_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="default", messages=[{"role": "user", "content": "1+" * 100}],
                                       max_tokens=8)
    assert info.value.status_code == 400 and info.value.code == "context_length_exceeded"
    assert "context length" in info.value.message
    stream = client.chat.completions.create(model="default", messages=[{"role": "user", "content": "1+" * 100}],
                                            max_tokens=8, stream=True)
    with pytest.raises(openai.APIError, match="context length"):
        list(stream)
