"""What a request of ``softverify serve`` meets before it reaches the engine: the body's size
and JSON, the schema, the features this server does not implement, the input limits, the API
key, the per-replica rate limit, and a replica's parts still loading. Each rule raises an
:class:`~softverify.platform.serve.schema.ApiError` naming the offending ``param``, so every
rule (which status code, which ``param``, when ``Retry-After``) is unit-testable without Ray.

Status codes: 400 malformed JSON / over a limit the client chose (``max_tokens``, prompt
length), 401 missing or wrong API key, 404 unknown model, 413 body, message or message
count too large, 422 well-formed JSON that does not match the schema, 429 rate limited
(with ``Retry-After``), 503 still loading (with ``Retry-After``).
"""
from __future__ import annotations

import json
import math
import threading
import time
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from softverify.platform.serve.config import LimitsConfig
from softverify.platform.serve.schema import ApiError, ChatCompletionRequest, VerifyBatchRequest, VerifyRequest


def check_supported(req: ChatCompletionRequest) -> None:
    """400, naming the parameter, for an OpenAI feature this engine does not implement."""
    def refuse(param: str, what: str) -> None:
        raise ApiError(400, f"{param}: {what} is not supported by this server", param=param,
                       code="unsupported_parameter")

    if req.response_format not in (None, {"type": "text"}):
        refuse("response_format", f"response_format {req.response_format.get('type', req.response_format)!r} "
               "(only {'type': 'text'})")
    if req.tools:
        refuse("tools", "tool calling")
    if req.tool_choice not in (None, "none") and not (req.tool_choice == "auto" and not req.tools):
        refuse("tool_choice", "tool calling")
    if req.functions or req.function_call not in (None, "none"):
        refuse("functions" if req.functions else "function_call", "function calling")
    if req.logit_bias:
        refuse("logit_bias", "logit_bias")
    for i, m in enumerate(req.messages):
        if m.role in ("tool", "function"):
            refuse(f"messages.{i}.role", f"a {m.role!r} message (tool results; this server has no tool calling)")
        if m.tool_calls or m.function_call is not None:
            refuse(f"messages.{i}.{'tool_calls' if m.tool_calls else 'function_call'}",
                   "an assistant turn with tool calls (this server has no tool calling)")
    if req.modalities not in (None, ["text"]):
        refuse("modalities", f"modalities {req.modalities!r} (only ['text'])")
    for name in ("audio", "prediction", "web_search_options", "reasoning_effort"):
        if getattr(req, name) is not None:
            refuse(name, name)
    if req.top_logprobs and not req.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs=true", param="top_logprobs")
    if req.stream and req.n > 1:
        refuse("n", "n > 1 with stream=true")
    if req.stream and req.logprobs:
        refuse("logprobs", "logprobs with stream=true")


def parse_verify_body(raw: bytes, limits: "LimitsConfig") -> VerifyRequest | VerifyBatchRequest:
    """``/v1/verify``'s body: a batch when it has ``items``, else one answer; a batch over
    ``limits.max_verify_items`` is a 413 naming ``items`` (the client splits it)."""
    data = load_json_object(raw, limits)
    if "items" not in data:
        return validate_body(data, VerifyRequest)
    if isinstance(data["items"], list) and len(data["items"]) > limits.max_verify_items:
        raise ApiError(413, f"{len(data['items'])} items; the limit is {limits.max_verify_items}", param="items")
    return validate_body(data, VerifyBatchRequest)


def _loc(err: dict) -> str:
    return ".".join(str(p) for p in err.get("loc", ()))


def parse_body(raw: bytes, model: type[BaseModel], limits: LimitsConfig) -> BaseModel:
    """Bytes -> validated request, or :class:`ApiError` (413 size, 400 JSON, 422 schema)."""
    return validate_body(load_json_object(raw, limits), model)


def load_json_object(raw: bytes, limits: LimitsConfig) -> dict[str, Any]:
    """Bytes -> a JSON object within the size limits, or :class:`ApiError` (413, 400)."""
    if len(raw) > limits.max_body_bytes:
        raise ApiError(413, f"request body is {len(raw)} bytes; the limit is {limits.max_body_bytes}")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"request body must be a JSON object, got {type(data).__name__}")
    if isinstance(data.get("messages"), list) and len(data["messages"]) > limits.max_messages:
        raise ApiError(413, f"{len(data['messages'])} messages; the limit is {limits.max_messages}", param="messages")
    return data


def validate_body(data: dict[str, Any], model: type[BaseModel]) -> BaseModel:
    """A JSON object -> ``model``, or :class:`ApiError` (400 unknown field, 422 schema)."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        unknown = [err for err in e.errors() if err["type"] == "extra_forbidden"]
        if unknown:  # OpenAI's answer to a name it does not have
            raise ApiError(400, f"Unrecognized request argument supplied: {_loc(unknown[0])}",
                           param=_loc(unknown[0]), code="unrecognized_argument") from None
        msg = "; ".join(f"{_loc(err) or 'body'}: {err['msg']}" for err in e.errors()[:5])
        raise ApiError(422, msg, param=_loc(first) or None) from None


def check_chat(req: ChatCompletionRequest, limits: LimitsConfig, model_id: str) -> int:
    """Limits that need the parsed request; returns the effective max_tokens."""
    if req.model != model_id:
        raise ApiError(404, f"model {req.model!r} does not exist; this server serves {model_id!r}",
                       param="model", code="model_not_found")
    check_supported(req)
    for i, m in enumerate(req.messages):
        n = len(m.text(i))
        if n > limits.max_message_chars:
            raise ApiError(413, f"messages[{i}].content has {n} characters; the limit is "
                           f"{limits.max_message_chars}", param=f"messages.{i}.content")
    asked = req.max_completion_tokens or req.max_tokens
    param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
    if asked is not None and asked > limits.max_tokens:
        raise ApiError(400, f"{param} is {asked}; this server allows at most {limits.max_tokens}", param=param)
    return asked or limits.default_max_tokens or min(256, limits.max_tokens)


def check_prompt_tokens(n: int, limits: LimitsConfig) -> None:
    if n > limits.max_prompt_tokens:
        raise ApiError(400, f"the rendered prompt has {n} tokens; the limit is {limits.max_prompt_tokens}",
                       param="messages", code="context_length_exceeded")


# ------------------------------------------------------------------ access control


def check_api_key(authorization: str | None, expected: str | None) -> None:
    """``Authorization: Bearer <key>``; constant-time comparison."""
    import hmac

    if expected is None:
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise ApiError(401, "missing or invalid API key (send 'Authorization: Bearer <key>')",
                       type="authentication_error", code="invalid_api_key",
                       headers={"WWW-Authenticate": 'Bearer realm="softverify"'})


class BackgroundLoad:
    """Builds a replica's heavy parts (engine, verifiers) on a thread, so the replica is up
    at once and can answer "still loading" instead of leaving clients hanging.

    Ray Serve queues requests in the proxy until a replica's constructor returns; a model
    that takes a minute to load meant ``/v1/models`` hung for that minute. With the load on
    a thread, :meth:`get` raises a 503 with ``Retry-After`` until the parts are built, and a
    500 naming the failure if building them failed (``failed`` lets Serve's health check
    replace such a replica).
    """

    def __init__(self, build: Callable[[], Any], what: str, retry_after_s: int = 5):
        self.what, self.retry_after_s = what, retry_after_s
        self._value: Any = None
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(build,), name=f"load {what}", daemon=True)
        self._thread.start()

    def _run(self, build: Callable[[], Any]) -> None:
        try:
            self._value = build()
        except BaseException as e:  # reported to every request and to the health check
            self.error = e
        finally:
            self._done.set()

    @property
    def ready(self) -> bool:
        return self._done.is_set() and self.error is None

    @property
    def failed(self) -> bool:
        return self.error is not None

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def get(self) -> Any:
        if not self._done.is_set():
            raise ApiError(503, f"{self.what} is still loading; retry in {self.retry_after_s} s", type="server_error",
                           code="model_loading", headers={"Retry-After": str(self.retry_after_s)})
        if self.error is not None:
            raise ApiError(500, f"{self.what} failed to load: {type(self.error).__name__}: {self.error}",
                           type="server_error", code="model_load_failed")
        return self._value


class RateLimiter:
    """Token bucket: ``burst`` requests at once, refilled at ``rate`` per second.

    One per replica (Serve scales capacity by adding replicas, so the limit scales with it).
    Thread-safe; ``clock`` is injectable so tests need not sleep.
    """

    def __init__(self, rate: float | None, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.stamp = float(burst), clock()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Take one token or raise 429 with the whole seconds until one is available."""
        if self.rate is None:
            return
        with self._lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            wait = (1 - self.tokens) / self.rate
        retry = max(1, math.ceil(wait))
        raise ApiError(429, f"rate limit exceeded ({self.rate:g} requests/s per replica, burst {self.burst}); "
                       f"retry after {retry} s", type="rate_limit_error", code="rate_limit_exceeded",
                       headers={"Retry-After": str(retry)})
