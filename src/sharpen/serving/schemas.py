"""Request and response bodies as pydantic models that follow OpenAI's API reference
(https://platform.openai.com/docs/api-reference/chat, .../completions), so the server's
/openapi.json describes what it really takes and returns.

Every request parameter is honoured or refused: unknown parameters are a 400 naming them
(extra="forbid"), and parameters this server does not implement are accepted only at their
neutral value (e.g. presence_penalty 0), anything else is a 400 naming the parameter.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from sharpen.serving.errors import bad

StrictInt = Annotated[int, Field(strict=True)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
MAX_STOPS = 16
MAX_TOP_LOGPROBS = 20


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(Strict):
    type: Literal["text"]
    text: str


class Message(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart]]
    name: Optional[str] = None
    """Accepted and ignored (sharpen's prompts carry no speaker names)."""

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(Strict):
    include_usage: bool = False


NEUTRAL: dict[str, Any] = {
    "presence_penalty": 0.0, "frequency_penalty": 0.0, "repetition_penalty": 1.0, "min_tokens": 0,
    "logit_bias": {}, "best_of": 1, "echo": False, "suffix": "",
}
"""Parameters this server does not implement, accepted only at the value that changes nothing."""


class Sampling(Strict):
    """Parameters both endpoints share."""

    model: Annotated[str, Field(min_length=1)]
    n: Annotated[int, Field(strict=True, ge=1)] = 1
    temperature: Optional[Annotated[float, Field(strict=True, ge=0, le=2, allow_inf_nan=False)]] = None
    top_p: Optional[Annotated[float, Field(strict=True, gt=0, le=1, allow_inf_nan=False)]] = None
    top_k: Optional[Annotated[int, Field(strict=True, ge=-1)]] = None
    """vLLM's extension: sample among the k most likely tokens; 0 or -1 keeps all."""
    min_p: Optional[Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)]] = None
    """vLLM's extension: drop tokens below min_p × the top token's probability."""
    max_tokens: Optional[Annotated[int, Field(strict=True, ge=1)]] = None
    stop: Optional[Union[str, Annotated[list[str], Field(max_length=MAX_STOPS)]]] = None
    stop_token_ids: Optional[Annotated[list[Annotated[int, Field(strict=True, ge=0)]], Field(max_length=64)]] = None
    """vLLM's extension: token ids that end a completion."""
    seed: Optional[Annotated[int, Field(strict=True, ge=0, lt=2**63)]] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = None
    """Accepted and ignored by definition (an end-user id for abuse monitoring)."""
    presence_penalty: Optional[Number] = None
    frequency_penalty: Optional[Number] = None
    repetition_penalty: Optional[Number] = None
    min_tokens: Optional[StrictInt] = None
    logit_bias: Optional[dict[str, Number]] = None

    def refuse_non_neutral(self) -> None:
        """A 400 naming the first unimplemented parameter given a value that would change results."""
        for name, neutral in NEUTRAL.items():
            value = getattr(self, name, None)
            if value is not None and value != neutral:
                raise bad(f"parameter {name!r} is not implemented by this server; only {neutral!r} "
                          "(no effect) is accepted", name, "unsupported_parameter")

    def stops(self) -> Optional[tuple[str, ...]]:
        if self.stop is None:
            return None
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        return tuple(s for s in stops if s)


class ChatCompletionRequest(Sampling):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Optional[Annotated[int, Field(strict=True, ge=1)]] = None
    logprobs: Optional[bool] = None
    top_logprobs: Optional[Annotated[int, Field(strict=True, ge=0, le=MAX_TOP_LOGPROBS)]] = None
    response_format: Optional[dict[str, Any]] = None

    def refuse_non_neutral(self) -> None:
        super().refuse_non_neutral()
        if self.response_format is not None and self.response_format != {"type": "text"}:
            raise bad("parameter 'response_format' is not implemented by this server; only {'type': 'text'} "
                      "is accepted", "response_format", "unsupported_parameter")


class CompletionRequest(Sampling):
    prompt: Union[str, Annotated[list[str], Field(min_length=1)]]
    logprobs: Optional[Annotated[int, Field(strict=True, ge=0, le=MAX_TOP_LOGPROBS)]] = None
    """Return each token's logprob and this many most likely alternatives (0: none)."""
    echo: Optional[bool] = None
    suffix: Optional[str] = None
    best_of: Optional[StrictInt] = None


# ---- responses ------------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob]
    refusal: None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: Optional[list[dict[str, float]]]
    text_offset: list[int]


FinishReason = Literal["stop", "length"]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: Optional[ChatLogprobs] = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: FinishReason
    logprobs: Optional[CompletionLogprobs] = None


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "sharpen"
    description: str = ""
    """What the model is: plain sampling, or which strategy (and what it checks answers with)."""


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: Optional[str]
    code: Optional[str]


class ErrorBody(BaseModel):
    error: ErrorDetail
