"""The OpenAI-compatible HTTP contract of ``softverify serve``: what a request may carry and
what an answer looks like, including the OpenAI-shaped error body, without Ray or a model.

Requests are pydantic models that forbid unknown names (OpenAI refuses them too); the
responses are plain dicts built by the functions below, so the Serve deployment in
:mod:`softverify.platform.serve.app` and the tests build exactly the same JSON. Which
request is refused and how (status, ``param``) is :mod:`softverify.platform.serve.guards`.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field


class ApiError(Exception):
    """An error the client caused; rendered as ``{"error": {...}}`` with ``status``."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ------------------------------------------------------------------ requests


class TextPart(BaseModel):
    """One part of a message's content given as a list (OpenAI's content parts). Other
    part types (image_url, input_audio, file) carry their own fields: they are parsed so
    :meth:`ChatMessage.text` can refuse them by type."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """One chat message. Tool and function turns (``role: tool``, an assistant's
    ``tool_calls``) are parsed as OpenAI sends them so
    :func:`~softverify.platform.serve.guards.check_supported` can refuse them by name (400),
    instead of a schema error about a field the client did send right."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[Any] | None = None
    function_call: Any = None
    refusal: str | None = None

    def text(self, i: int) -> str:
        """The content as one string; a part that is not text is refused by name."""
        if self.content is None:
            raise ApiError(400, f"messages.{i}.content is missing: every message needs text content",
                           param=f"messages.{i}.content", code="missing_content")
        if isinstance(self.content, str):
            return self.content
        for j, part in enumerate(self.content):
            if part.type != "text" or part.text is None:
                raise ApiError(400, f"content part type {part.type!r} is not supported: this server answers text "
                               f"only", param=f"messages.{i}.content.{j}.type", code="unsupported_content")
        return "".join(p.text or "" for p in self.content)

    def as_chat(self, i: int) -> dict[str, str]:
        """``developer`` is OpenAI's newer name for the system role."""
        return {"role": "system" if self.role == "developer" else self.role, "content": self.text(i)}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat request. Fields that map onto the engine are honoured; OpenAI fields
    that do not (tools, JSON mode, logit_bias, audio...) are accepted only at their
    no-op values and otherwise refused by name (400,
    :func:`~softverify.platform.serve.guards.check_supported`), so a client never believes a
    setting took. Names OpenAI does not have are refused as OpenAI does."""

    model_config = ConfigDict(extra="forbid")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=8)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    # OpenAI fields accepted at their no-op values only (see guards.check_supported)
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    logit_bias: dict[str, float] | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    modalities: list[str] | None = None
    audio: Any = None
    prediction: Any = None
    web_search_options: Any = None
    reasoning_effort: str | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None

    def chat(self) -> list[dict[str, str]]:
        return [m.as_chat(i) for i, m in enumerate(self.messages)]


class VerifyItem(BaseModel):
    """One answer to score: ``metadata`` is the dataset row's fields the verifiers read (e.g.
    ``label`` for the hard verifier: 1 = yes, 0 = no). ``finish_reason`` and
    ``unforced_answer`` carry what a training sample knows (whether the turn ended, the text
    before the rollout forced an answer), so a remote verifier scores as a local one would."""

    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1)
    answer: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    finish_reason: Literal["stop", "length"] = "stop"
    unforced_answer: str | None = None


class VerifyRequest(VerifyItem):
    """Score an answer to a question with the configured verifiers; ``verifiers`` picks a
    subset by name."""

    verifiers: list[str] | None = None


class VerifyBatchRequest(BaseModel):
    """Score many answers in one request: what a training run's ``kind: remote`` verifier
    (:mod:`softverify.verifiers.remote`, whose docstring holds the contract) sends. The answer
    is ``{"object": "list", "verifiers": [names scored], "data": [one verification per item]}``;
    an empty ``items`` is valid (a client's check that the endpoint and its verifiers exist)."""

    model_config = ConfigDict(extra="forbid")
    items: list[VerifyItem]
    verifiers: list[str] | None = None


def stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


# ------------------------------------------------------------------ responses


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def choice(index: int, text: str, finish_reason: str, logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"index": index, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason,
            "logprobs": logprobs}


def token_logprobs_content(decode: Callable[[int], str], token_ids: list[int], logprobs: list[float],
                           top: list[list[tuple[int, float]]] | None, n_top: int) -> dict[str, Any]:
    """OpenAI's ``choices[i].logprobs``: one entry per generated token, with the
    ``n_top`` most likely alternatives at that step."""
    def entry(tid: int, lp: float) -> dict[str, Any]:
        t = decode(tid)
        return {"token": t, "logprob": float(lp), "bytes": list(t.encode("utf-8"))}

    out = []
    for k, (tid, lp) in enumerate(zip(token_ids, logprobs)):
        e = entry(tid, lp)
        e["top_logprobs"] = [entry(a, b) for a, b in (top[k][:n_top] if top and k < len(top) else [])]
        out.append(e)
    return {"content": out}


def chat_response(cid: str, model: str, choices: list[dict[str, Any]], prompt_tokens: int,
                  completion_tokens: int, created: int | None = None) -> dict[str, Any]:
    return {
        "id": cid, "object": "chat.completion", "created": created or int(time.time()), "model": model,
        "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def chat_chunk(cid: str, model: str, created: int, delta: dict[str, str] | None,
               finish_reason: str | None = None, usage: dict[str, int] | None = None) -> str:
    """One server-sent event; ``delta=None`` makes the usage-only chunk (empty choices)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                                         "logprobs": None}]
    body: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created,
                            "model": model, "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n"


SSE_DONE = "data: [DONE]\n\n"


def models_response(model_id: str, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": model_id, "object": "model", "created": created,
                                        "owned_by": "softverify"}]}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
