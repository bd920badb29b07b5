"""Request and response schemas of the OpenAI API, field for field, as pydantic models.

Requests: :class:`ChatCompletionRequest` (``POST /v1/chat/completions``) and
:class:`CompletionRequest` (``POST /v1/completions``) carry every field of the OpenAI API;
the ones this server cannot honour (tools, logprobs, penalties, ...) are accepted at their
defaults and refused with a 400 naming them otherwise (:func:`unsupported_fields`), so a
client never gets an answer that silently ignored what it asked for. Unknown fields are
ignored, as vLLM does. ``top_k`` is the one extension (vLLM's name), and responses add
``reasoning_content`` (vLLM's and DeepSeek's name for the chain of thought).

Responses: :class:`ChatCompletion`, :class:`ChatCompletionChunk` (one server-sent event of a
stream), :class:`Completion` (its chunks share the shape), :class:`ModelList`, :class:`ErrorResponse`.
"""

from __future__ import annotations

import time
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatCompletion", "ChatCompletionChunk", "ChatCompletionRequest", "ChatMessage", "ChatMessageIn", "ChunkChoice",
    "Completion", "CompletionChoice", "CompletionRequest", "CompletionTokensDetails", "Delta", "ErrorBody",
    "ErrorResponse", "ModelCard", "ModelList", "StreamOptions", "Usage", "unsupported_fields",
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------- requests


class TextPart(_Request):
    """A text part of a message's content (``{"type": "text", "text": ...}``); images and audio
    are not accepted (the model reads text only)."""

    type: Literal["text"]
    text: str


class ChatMessageIn(_Request):
    """One message of ``messages``: a role and its content (a string, or text parts)."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[TextPart], None] = None
    name: str | None = None

    def text(self) -> str:
        """The content as one string (text parts joined)."""
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(_Request):
    include_usage: bool | None = None


class _Sampling(_Request):
    """The fields both endpoints share. None means: the model's default (its
    ``generation_config.json``, else the reasoning defaults)."""

    model: str | None = None
    frequency_penalty: float | None = 0.0
    presence_penalty: float | None = 0.0
    logit_bias: dict[str, float] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1, le=128)
    seed: int | None = Field(default=None, ge=0)
    stop: Union[str, list[str], None] = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)  # extension (vLLM's); 0 keeps all tokens
    user: str | None = None

    def stop_strings(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Union[str, dict[str, Any], None] = None
    parallel_tool_calls: bool | None = None
    reasoning_effort: str | None = None
    service_tier: str | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None

    def new_tokens(self) -> int | None:
        """``max_completion_tokens`` (the newer name) or ``max_tokens``."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_Sampling):
    """``POST /v1/completions``: the prompt continued as is (no chat template)."""

    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: int | None = Field(default=16, ge=1)  # the OpenAI default of this endpoint
    best_of: int | None = None
    echo: bool | None = False
    logprobs: int | None = None
    suffix: str | None = None

    def new_tokens(self) -> int | None:
        return self.max_tokens


#: Fields accepted only at these values (None counts as the default too).
_UNSUPPORTED: dict[str, Any] = {
    "frequency_penalty": 0.0, "presence_penalty": 0.0, "logit_bias": None, "logprobs": (False, None),
    "top_logprobs": None, "tools": None, "tool_choice": ("none", None), "response_format": None,
    "audio": None, "modalities": (["text"], None), "prediction": None, "best_of": (1, None),
    "echo": False, "suffix": None,
}


def unsupported_fields(request: BaseModel) -> list[str]:
    """Names of the fields set to something this server cannot do."""
    bad = []
    for name, default in _UNSUPPORTED.items():
        if name not in type(request).model_fields:
            continue
        value = getattr(request, name)
        allowed = default if isinstance(default, tuple) else (default,)
        if value is not None and value not in allowed:
            bad.append(name)
    return bad


# ---------------------------------------------------------------------------------- responses


class CompletionTokensDetails(_Response):
    reasoning_tokens: int = 0


class Usage(_Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails | None = None


class ChatMessage(_Response):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning_content: str | None = None
    refusal: str | None = None


class ChatChoice(_Response):
    index: int
    message: ChatMessage
    finish_reason: Literal["stop", "length"] | None
    logprobs: None = None


class ChatCompletion(_Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class Delta(_Response):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None


class ChunkChoice(_Response):
    index: int
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(_Response):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class CompletionChoice(_Response):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class Completion(_Response):
    """A completion, and (``object`` the same, as OpenAI has it) one chunk of a stream of them."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ModelCard(_Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "sambay"
    max_model_len: int | None = None  # vLLM's extension: the context in tokens


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(_Response):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(_Response):
    error: ErrorBody
