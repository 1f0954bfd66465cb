"""A checked request (`Plan`): what to generate, with which SamplingParams, and how to answer
it (responses and stream chunks in OpenAI's shapes).

    plan = Plan.of(request, chat=True, settings=settings, policy=policy)   # or APIError (400)
    params = plan.params(max_tokens=64, default_stop=())
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Union

from sharpen.models.base import SamplingParams
from sharpen.serving import schemas as s
from sharpen.serving.errors import bad
from sharpen.serving.streaming import event
from sharpen.tasks.base import Prompt

if TYPE_CHECKING:
    from sharpen.serving.app import ServeSettings

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
AnyRequest = Union[s.ChatCompletionRequest, s.CompletionRequest]


@dataclass
class Choice:
    text: str
    finish_reason: str
    logprobs: Optional[dict]


SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "max_tokens", "max_completion_tokens", "stop",
                   "stop_token_ids", "seed")


@dataclass
class Plan:
    """A checked request: what to generate, how, and how to answer."""

    req: AnyRequest
    chat: bool
    prompts: list[Prompt]
    max_tokens: Optional[int]
    top: Optional[int]
    """Alternatives per token when logprobs are asked for (0: the sampled tokens only); None: no logprobs."""
    rid: str
    created: int

    @property
    def model(self) -> str:
        return self.req.model

    @property
    def n(self) -> int:
        return self.req.n

    @property
    def include_usage(self) -> bool:
        return bool(self.req.stream_options and self.req.stream_options.include_usage)

    @classmethod
    def of(cls, req: AnyRequest, chat: bool, settings: "ServeSettings", policy: Any) -> "Plan":
        if isinstance(req, s.ChatCompletionRequest):
            prompts: list[Prompt] = [[{"role": ROLES[m.role], "content": m.text()} for m in req.messages]]
            if not any(m.role == "user" for m in req.messages):
                raise bad("'messages' must contain a user message", "messages")
            param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
            max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
            if req.top_logprobs and not req.logprobs:
                raise bad("'top_logprobs' needs 'logprobs': true", "top_logprobs")
            top = (req.top_logprobs or 0) if req.logprobs else None
            top_param = "top_logprobs"
        else:
            prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
            param, max_tokens = "max_tokens", req.max_tokens
            top, top_param = req.logprobs, "logprobs"
        if req.n * len(prompts) > settings.max_n:
            raise bad(f"'n' times the number of prompts must be at most {settings.max_n}, got "
                      f"{req.n * len(prompts)}", "n")
        if max_tokens is not None and max_tokens > settings.max_tokens_limit:
            raise bad(f"'{param}' must be at most {settings.max_tokens_limit}, got {max_tokens}", param)
        if req.stream and top is not None:
            raise bad("logprobs are not streamed; ask without 'stream'", "logprobs", "unsupported_parameter")
        features = getattr(policy, "sampling_features", frozenset())
        asked = {"top_k": req.top_k not in (None, 0, -1), "min_p": bool(req.min_p),
                 "stop_token_ids": bool(req.stop_token_ids), top_param: bool(top)}
        for name, used in asked.items():
            feature = "top_logprobs" if name == top_param else name
            if used and feature not in features:
                raise bad(f"parameter {name!r} is not supported by this model's backend "
                          f"({type(policy).__name__})", name, "unsupported_parameter")
        return cls(req, chat, prompts, max_tokens, top, uuid.uuid4().hex, int(time.time()))

    def given_sampling(self) -> list[str]:
        return [f for f in SAMPLING_FIELDS if getattr(self.req, f, None) is not None]

    def params(self, max_tokens: int, default_stop: tuple[str, ...], n: Optional[int] = None) -> SamplingParams:
        r = self.req
        stop = r.stops()
        return SamplingParams(
            n=self.n if n is None else n,
            temperature=1.0 if r.temperature is None else float(r.temperature),
            top_p=1.0 if r.top_p is None else float(r.top_p),
            max_new_tokens=max_tokens,
            stop=default_stop if stop is None else stop,
            seed=r.seed,
            top_k=max(0, r.top_k or 0),
            min_p=float(r.min_p or 0.0),
            stop_token_ids=tuple(r.stop_token_ids or ()),
            top_logprobs=self.top or 0,
        )

    # -- answers

    @property
    def _id(self) -> str:
        return ("chatcmpl-" if self.chat else "cmpl-") + self.rid

    def response(self, choices: list[Choice], usage: tuple[int, int]) -> Any:
        prompt_tokens, completion_tokens = usage
        counts = s.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                         total_tokens=prompt_tokens + completion_tokens)
        if self.chat:
            return s.ChatCompletion(id=self._id, created=self.created, model=self.model, usage=counts, choices=[
                s.ChatChoice(index=i, message=s.AssistantMessage(content=c.text), finish_reason=c.finish_reason,
                             logprobs=c.logprobs) for i, c in enumerate(choices)])
        return s.TextCompletion(id=self._id, created=self.created, model=self.model, usage=counts, choices=[
            s.CompletionChoice(index=i, text=c.text, finish_reason=c.finish_reason, logprobs=c.logprobs)
            for i, c in enumerate(choices)])

    def _chunk(self, choices: list[dict], usage: Optional[dict] = None) -> dict:
        body = {"id": self._id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": choices}
        if self.include_usage:
            body["usage"] = usage
        return body

    def start_chunks(self) -> list[str]:
        """Chat streams open each choice with its role."""
        if not self.chat:
            return []
        return [event(self._chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                    "finish_reason": None}])) for i in range(self.n * len(self.prompts))]

    def chunk(self, index: int, text: Optional[str], finish_reason: Optional[str] = None) -> dict:
        if self.chat:
            delta = {} if text is None else {"content": text}
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        return self._chunk([choice])

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict:
        return self._chunk([], {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                "total_tokens": prompt_tokens + completion_tokens})
