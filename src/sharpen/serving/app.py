"""The FastAPI app: routes, the API-key and body-size gate, and OpenAI-shaped errors.

    app = build_app(policy, ServeSettings(model_name="default"))   # served by uvicorn

Routes: GET /health, GET /v1/models, POST /v1/chat/completions, POST /v1/completions (and
FastAPI's /openapi.json and /docs). With an API key set, every route but /health needs
`Authorization: Bearer KEY`. Bad requests get a 4xx and failures a 500, all with OpenAI's body
`{"error": {"message", "type", "param", "code"}}`; no stack trace is ever sent.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Optional, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sharpen.models.base import ContextLengthError
from sharpen.serving import schemas as s
from sharpen.serving.errors import APIError, bad, validation_error
from sharpen.serving.logprobs import openai_logprobs
from sharpen.models.formats import question_text
from sharpen.serving.model_names import model_cards, needs_reference, resolve
from sharpen.serving.plan import AnyRequest, Choice, Plan
from sharpen.serving.streaming import DONE, TextDeltas, event
from sharpen.serving.worker import Worker
from sharpen.strategies.base import StrategyResult
from sharpen.tasks.base import Problem, Prompt, Task

log = logging.getLogger("sharpen.serve")

DEFAULT_MAX_TOKENS = 64
ERRORS = {status: {"model": s.ErrorBody} for status in (400, 401, 404, 413, 500)}


@dataclass
class ServeSettings:
    model_name: str = "default"
    task: Union[Task, str, None] = None
    """What strategy models extract and vote answers with (a Task or a task name; default addition)."""
    max_n: int = 64
    """Largest n × prompts per request; times 16, the largest strategy work."""
    max_tokens_limit: int = 1024
    max_body_bytes: int = 1_000_000
    batch_window: float = 0.005
    api_key: Optional[str] = None
    references: Optional[str] = None
    """"SPLIT:N": the task's first N problems of SPLIT (seed 0), whose reference answers retry with
    binary feedback may read when a request's last user message is one of their questions."""


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def too_long(err: ContextLengthError) -> APIError:
    """A prompt plus max_tokens over the model's context: the client's 400, OpenAI's code."""
    return bad(str(err), code="context_length_exceeded")


# ---- the gate: API key and body size, before any parsing ------------------------------------


class Gate:
    """Pure ASGI middleware: refuses a request without the API key (401) or with a body over
    the limit (413, counted as it arrives, so a chunked body cannot dodge it)."""

    def __init__(self, app: Any, *, api_key: Optional[str], max_body_bytes: int) -> None:
        self.app, self.api_key, self.max_body_bytes = app, api_key, max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.api_key is not None and scope.get("path") != "/health":
            given = headers.get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode()):
                err = APIError(401, "a valid API key is required: send 'Authorization: Bearer KEY'",
                               code="invalid_api_key")
                return await error_response(err)(scope, receive, send)
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                err = APIError(413, f"the request body is over the limit of {self.max_body_bytes} bytes",
                               code="request_too_large")
                return await error_response(err)(scope, receive, send)
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        try:
            json.loads(body)  # FastAPI lets a RecursionError (deep nesting) through as a 500
        except RecursionError:
            return await error_response(bad("the request body nests too deeply", code="invalid_json"))(
                scope, receive, send)
        except ValueError:
            pass  # FastAPI answers invalid JSON itself (a 400 here)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# ---- the app --------------------------------------------------------------------------------


def build_app(policy: Any, settings: ServeSettings) -> FastAPI:
    worker = Worker(policy, window=settings.batch_window)
    task_cache: dict[str, Task] = {}

    def get_task() -> Task:
        if isinstance(settings.task, Task):
            return settings.task
        if "task" not in task_cache:
            from sharpen.tasks import get_task as load

            task_cache["task"] = load(settings.task or "addition")
        return task_cache["task"]

    get_task()  # an unknown task fails at start-up, not on the first request
    references = reference_problems(get_task(), settings.references)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await worker.start()
        yield
        await worker.stop()

    app = FastAPI(title="sharpen", description="An OpenAI-compatible API over a sharpen policy; a model "
                  "'STRATEGY/NAME' answers with an inference-time strategy.", lifespan=lifespan)
    app.add_middleware(Gate, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes)
    app.state.worker = worker

    @app.exception_handler(APIError)
    async def on_api_error(request: Request, err: APIError) -> JSONResponse:
        return error_response(err)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(err.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        message = f"no route {request.url.path}" if err.status_code == 404 else str(err.detail)
        return error_response(APIError(err.status_code, message, code=code))

    @app.exception_handler(ContextLengthError)
    async def on_too_long(request: Request, err: ContextLengthError) -> JSONResponse:
        return error_response(too_long(err))

    @app.exception_handler(Exception)
    async def on_crash(request: Request, err: Exception) -> JSONResponse:
        log.error("error answering %s %s", request.method, request.url.path, exc_info=err)
        return error_response(APIError(500, "internal server error"))

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models", response_model=s.ModelList, responses=ERRORS)
    async def models() -> Response:
        cards = [s.ModelCard(**card) for card in model_cards(settings.model_name, len(references))]
        return _json(s.ModelList(data=cards))

    @app.post("/v1/chat/completions", response_model=s.ChatCompletion, responses=ERRORS)
    async def chat_completions(body: s.ChatCompletionRequest) -> Response:
        return await complete(body, chat=True)

    @app.post("/v1/completions", response_model=s.TextCompletion, responses=ERRORS)
    async def completions(body: s.CompletionRequest) -> Response:
        return await complete(body, chat=False)

    def openapi() -> dict:
        """FastAPI's schema without its 422 responses: this server answers bad input with 400."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version="1", description=app.description, routes=app.routes)
            for path in schema["paths"].values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    # ---- completions ----------------------------------------------------------------------

    async def complete(req: AnyRequest, chat: bool) -> Response:
        req.refuse_non_neutral()
        plan = Plan.of(req, chat, settings, policy)
        strategy = resolve(req.model, served=settings.model_name, max_n=settings.max_n, n=req.n,
                           references=bool(references))
        if strategy is None:
            if req.stream:
                return _stream(plain_stream(plan))
            choices, usage = await plain(plan)
        else:
            if plan.top is not None:
                param = "logprobs"
                raise bad(f"model {req.model!r} returns no logprobs: a strategy's answer is picked among many "
                          f"samples; ask model {settings.model_name!r} for logprobs", param, "unsupported_parameter")
            if len(plan.prompts) != 1:
                raise bad("strategy models take a single prompt string", "prompt")
            run = build_strategy_run(plan, *strategy)
            if req.stream:
                return _stream(strategy_stream(plan, run))
            choices, usage = await run()
        return _json(plan.response(choices, usage))

    async def plain(plan: "Plan") -> tuple[list["Choice"], tuple[int, int]]:
        params = plan.params(plan.max_tokens or min(DEFAULT_MAX_TOKENS, settings.max_tokens_limit), ())
        # each prompt of a completions request goes in separately, so it can batch with others
        outcomes = await asyncio.gather(*(worker.sample(p, params) for p in plan.prompts))
        completions = [c for group, _ in outcomes for c in group]
        logprobs: list[Optional[dict]] = [None] * len(completions)
        if plan.top is not None:  # token texts come from the tokenizer, which the worker thread owns
            piece = getattr(policy, "piece", None)
            logprobs = await worker.call(lambda: [openai_logprobs(piece, c, plan.chat, plan.top) for c in completions])
        choices = [Choice(c.text, c.finish_reason, lp) for c, lp in zip(completions, logprobs)]
        return choices, (sum(count for _, count in outcomes), sum(c.n_tokens for c in completions))

    async def plain_stream(plan: "Plan") -> AsyncIterator[str]:
        params = plan.params(plan.max_tokens or min(DEFAULT_MAX_TOKENS, settings.max_tokens_limit), ())
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        n = plan.n
        decode = getattr(policy, "decode", None)
        deltas = [[TextDeltas(decode, params.stop) if decode is not None else None for _ in range(n)]
                  for _ in plan.prompts]

        def on_token(i: int):
            def push(j: int, token: int) -> None:  # on the worker thread
                text = deltas[i][j].push(token) if deltas[i][j] is not None else ""
                if text:
                    loop.call_soon_threadsafe(events.put_nowait, ("delta", i * n + j, text))
            return push

        async def run(i: int, prompt: Prompt) -> None:
            try:
                events.put_nowait(("done", i, await worker.sample(prompt, params, on_token(i))))
            except Exception as err:
                events.put_nowait(("error", i, err))

        tasks = [asyncio.create_task(run(i, p)) for i, p in enumerate(plan.prompts)]
        try:
            yield from_list(plan.start_chunks())
            prompt_tokens = completion_tokens = 0
            for _ in range(len(tasks)):
                while True:
                    kind, index, value = await events.get()
                    if kind == "delta":
                        yield event(plan.chunk(index, value))
                        continue
                    break
                if kind == "error":
                    if isinstance(value, ContextLengthError):
                        yield event(too_long(value).body())
                        return
                    log.error("error while streaming", exc_info=value)
                    yield event(APIError(500, "internal server error").body())
                    return
                group, count = value
                prompt_tokens += count
                for j, c in enumerate(group):
                    rest = deltas[index][j].finish(c.text) if deltas[index][j] is not None else c.text
                    if rest:
                        yield event(plan.chunk(index * n + j, rest))
                    yield event(plan.chunk(index * n + j, None, c.finish_reason))
                    completion_tokens += c.n_tokens
            if plan.include_usage:
                yield event(plan.usage_chunk(prompt_tokens, completion_tokens))
            yield DONE
        finally:
            for t in tasks:
                t.cancel()

    def build_strategy_run(plan: "Plan", name: str, options: dict):
        from sharpen.strategies import STRATEGIES, StrategyOptionError, StrategySpecError, build_strategy
        from sharpen.strategies import UnknownStrategyError
        from sharpen.strategies.registry import strategy_options

        task = get_task()
        given = plan.given_sampling()
        if given:
            factory = STRATEGIES.get(options.get("inner", "single") if name == "reread" else name)
            accepted = (strategy_options(factory) if factory is not None else None) or []
            if "params" not in accepted:
                raise bad(f"model {plan.model!r} takes no sampling parameters", given[0], "unsupported_parameter")
            options = {**options, "params": plan.params(plan.max_tokens or task.max_new_tokens, tuple(task.stop), n=1)}
        try:
            strategy = build_strategy(name, policy=policy, task=task, **options)
        except UnknownStrategyError as err:
            raise APIError(404, f"model {plan.model!r}: {err}", param="model", code="model_not_found") from None
        except (StrategyOptionError, StrategySpecError, ValueError) as err:
            raise bad(f"model {plan.model!r}: {err}", "model") from None
        prompt = plan.prompts[0]
        rid = uuid.uuid4().hex
        answer = None
        if needs_reference(name, options):
            known = references.get(question_text(prompt))
            if known is None:
                where = "messages" if plan.chat else "prompt"
                raise bad(f"model {plan.model!r} reads the reference answer, and the question is not one of this "
                          f"server's {len(references)} reference problems", where)
            answer = known.answer
        # the whole conversation, with the reference answer where one was looked up
        problems = [Problem(id=f"serve/{rid}/{i}", prompt=prompt, answer=answer) for i in range(plan.n)]

        async def run() -> tuple[list[Choice], tuple[int, int]]:
            results, prompt_tokens = await worker.call(lambda: (strategy(problems), worker.prompt_tokens(prompt)))
            choices = [Choice(r.text, final_finish_reason(r), None) for r in results]
            return choices, (prompt_tokens, sum(r.tokens for r in results))

        return run

    async def strategy_stream(plan: "Plan", run) -> AsyncIterator[str]:
        yield from_list(plan.start_chunks())
        try:
            choices, (prompt_tokens, completion_tokens) = await run()
        except Exception as err:
            log.error("error while streaming", exc_info=err)
            yield event(APIError(500, "internal server error").body())
            return
        for index, choice in enumerate(choices):  # the final answer once chosen
            if choice.text:
                yield event(plan.chunk(index, choice.text))
            yield event(plan.chunk(index, None, choice.finish_reason))
        if plan.include_usage:
            yield event(plan.usage_chunk(prompt_tokens, completion_tokens))
        yield DONE

    return app


def reference_problems(task: Task, spec: Optional[str]) -> dict[str, Problem]:
    """question text -> problem for "SPLIT:N" (see ServeSettings.references); {} for None."""
    if not spec:
        return {}
    split, _, count = spec.rpartition(":")
    if not split or not count.isdigit() or int(count) < 1:
        raise ValueError(f"references {spec!r} must read SPLIT:N, e.g. 'eval:500'")
    return {question_text(p.prompt): p for p in task.problems(split, int(count), 0)}


def from_list(events: list[str]) -> str:
    return "".join(events)


def final_finish_reason(result: StrategyResult) -> str:
    """The finish_reason of the completion a strategy answered with ("length" when the budget
    cut it): the last completion of its trace whose text is the answer's; "stop" if none is."""
    for call in reversed(result.trace):
        for group in reversed(call.completions):
            for completion in reversed(group):
                if completion.text == result.text:
                    return completion.finish_reason
    return "stop"


def _json(model: Any) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")


def _stream(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
