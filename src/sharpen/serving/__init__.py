"""`sharpen serve`: an OpenAI-compatible API over a sharpen policy, on FastAPI and uvicorn.

    from sharpen.serving import make_server
    with make_server(policy, port=0) as server:   # 127.0.0.1, a free port
        ...                                       # OpenAI(base_url=server.url, api_key="x")

A request's `model` is the served model's name (plain sampling) or `STRATEGY/NAME`, e.g.
`self_consistency-8/default`: the strategy answers the whole conversation (system prompt and
history reach every call it makes). Modules: schemas (request and response bodies), worker
(the policy's one owner, batching), model_names (what a model name may name), streaming,
logprobs, plan (a checked request and its answers), app (routes and errors), server
(socket and uvicorn).
"""

from sharpen.serving.app import ServeSettings, build_app
from sharpen.serving.server import ServeError, SharpenServer, make_server

__all__ = ["ServeError", "ServeSettings", "SharpenServer", "build_app", "make_server"]
