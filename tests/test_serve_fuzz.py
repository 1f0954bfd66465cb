"""Schema-driven fuzzing of `sharpen serve`: schemathesis generates requests from the server's
own /openapi.json, valid ones and ones that break the schema; no answer may be a 5xx, and every
4xx is in OpenAI's error shape. Bounded: a fixed number of examples, derandomized."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sharpen.models.base import Completion  # noqa: E402
from sharpen.serving import make_server  # noqa: E402
from sharpen.serving.schemas import NEUTRAL  # noqa: E402

EXAMPLES = 30


class Echo:
    """A fast policy: completion j of a prompt is "j" + "0" * (max_new_tokens - 1), one token per character."""

    def generate(self, prompts, params):
        text = lambda j: (str(j % 10) + "0" * (params.max_new_tokens - 1))[: params.max_new_tokens]  # noqa: E731
        return [[Completion(text(j), tuple(range(len(text(j)))), (-0.5,) * len(text(j)), "length")
                 for j in range(params.n)] for _ in prompts]


@pytest.fixture(scope="module")
def served():
    with make_server(Echo(), port=0, max_n=8, max_tokens_limit=16, max_body_bytes=50_000, batch_window=0.0) as srv:
        base = srv.url.removesuffix("/v1")
        yield base, schemathesis.openapi.from_url(base + "/openapi.json")


MODELS = ["default", "self_consistency-2/default", "best_of_n-2:majority_vote/default", "debate-2x1/default"]
UNSUPPORTED_HERE = ("top_k", "min_p", "stop_token_ids", "top_logprobs", "logprobs", "response_format")
"""Parameters the Echo backend (or a strategy) refuses, left out of "mended" cases."""


def _mend(case, model: str) -> None:
    """Steer a schema-valid body towards one the server answers with 200: a served model, a
    user message, no unimplemented or backend-specific parameters, small n and max_tokens."""
    body = case.body
    if not isinstance(body, dict):
        return
    body["model"] = model
    for name in (*NEUTRAL, *UNSUPPORTED_HERE, "max_completion_tokens"):
        body.pop(name, None)
    if isinstance(body.get("messages"), list):
        body["messages"].append({"role": "user", "content": "1+1="})
    body["n"] = min(body.get("n", 1), 2)
    body["max_tokens"] = min(body.get("max_tokens") or 4, 8)
    if isinstance(body.get("prompt"), list):
        body["prompt"] = body["prompt"][:1]


def _check(response) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    elif "json" in str(response.headers.get("content-type")):
        response.json()


@pytest.mark.parametrize("path, method, mode", [
    ("/v1/chat/completions", "POST", "positive"), ("/v1/chat/completions", "POST", "negative"),
    ("/v1/completions", "POST", "positive"), ("/v1/completions", "POST", "negative"),
    ("/v1/models", "GET", "positive"), ("/health", "GET", "positive"),  # no inputs to break
])
def test_no_5xx_and_every_4xx_in_openai_shape(served, path, method, mode):
    base, schema = served
    operation = schema[path][method]
    strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

    statuses: list[int] = []

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy, model=st.sampled_from(MODELS))
    def run(case, model) -> None:
        mend = mode == "positive" and len(statuses) % 2 == 0  # every other case, whatever hypothesis draws
        if mend:
            _mend(case, model)
        response = case.call(base_url=base, timeout=30)
        statuses.append(response.status_code)
        mended_statuses.extend([response.status_code] if mend else [])
        _check(response)

    mended_statuses: list[int] = []
    run()
    if mode == "positive" and method == "POST":  # generation itself was exercised, not only refusals
        assert mended_statuses.count(200) >= len(mended_statuses) // 3 and len(mended_statuses) >= 5, statuses
