"""The OpenAI-compatible HTTP contract of ``softverify serve``, without Ray or a model.

Everything a request meets before it reaches the engine lives here: the typed serving
config, the request/response models, the input limits, the per-replica rate limiter and
the OpenAI-shaped error body. Keeping it pure means every rule (which status code, which
``param``, when ``Retry-After``) is unit-testable, and the Serve deployment in
:mod:`softverify.platform.serve.app` stays a thin shell around it.

Status codes: 400 malformed JSON / over a limit the client chose (``max_tokens``, prompt
length), 401 missing or wrong API key, 404 unknown model, 413 body, message or message
count too large, 422 well-formed JSON that does not match the schema, 429 rate limited
(with ``Retry-After``).
"""
from __future__ import annotations

import json
import math
import threading
import time
import uuid
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from softverify.config import VerifierCore
from softverify.configbase import DEFAULT_TORCH_THREADS, StrictModel


class ApiError(Exception):
    """An error the client caused; rendered as ``{"error": {...}}`` with ``status``."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ------------------------------------------------------------------ serving config


_Strict = StrictModel


class ReplicaConfig(_Strict):
    """How many copies of the model run and when Serve adds or removes them."""

    num_replicas: int = Field(1, ge=1, description="Fixed replica count (ignored when autoscaling is on).")
    autoscaling: bool = Field(False, description="Let Serve scale between min_replicas and max_replicas by load.")
    min_replicas: int = Field(1, ge=0, description="Autoscaling floor (0 allows scale to zero; first request waits for a cold start).")
    max_replicas: int = Field(4, ge=1, description="Autoscaling ceiling.")
    target_ongoing_requests: float = Field(
        4.0, gt=0, description="Autoscaling target: in-flight requests per replica Serve aims for.")
    max_ongoing_requests: int = Field(
        16, ge=1, description="Requests one replica accepts at once; more wait in the proxy queue.")
    max_queued_requests: int = Field(
        64, ge=-1, description="Requests waiting at the HTTP proxy for a replica; beyond this the proxy answers "
        "503 at once instead of queueing without bound (-1 = unbounded).")
    queue_full_retry_after_s: float = Field(
        1.0, ge=0, description="Retry-After (seconds, rounded up) sent with the proxy's 503 when the queue is full.")
    num_cpus: float = Field(1.0, ge=0, description="CPUs Ray reserves per replica.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs Ray reserves per replica (HF engine on GPU, or vLLM).")
    torch_threads: int | None = Field(
        DEFAULT_TORCH_THREADS, ge=1, description="torch intra-op threads per HF replica; default 1, the one CPU num_cpus reserves "
        "(DEFAULT_TORCH_THREADS, as train and eval use): raise both together, or the replicas use cores Ray "
        "gave to others. None: torch's default, usually all cores.")
    max_batch_size: int = Field(
        8, ge=1, description="HF engine: concurrent non-streaming requests generated together in one batch.")
    batch_wait_timeout_s: float = Field(
        0.1, ge=0, description="HF engine: how long the first request of a batch waits for company "
        "(small next to a CPU generation of seconds; at 0.02 s, 8 simultaneous clients on a busy host "
        "fragmented into batches of 1-4).")

    @model_validator(mode="after")
    def _range(self) -> "ReplicaConfig":
        if self.autoscaling and self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        return self

    def serve_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Deployment.options`` (HF path)."""
        opts: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "backpressure_config": _backpressure(self.queue_full_retry_after_s),
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
        }
        if self.autoscaling:
            opts["autoscaling_config"] = self.autoscaling_config()
            opts["num_replicas"] = "auto"
        else:
            opts["num_replicas"] = self.num_replicas
        return opts

    def autoscaling_config(self) -> dict[str, Any]:
        return {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                "initial_replicas": max(self.min_replicas, 1),
                "target_ongoing_requests": self.target_ongoing_requests}


def _backpressure(retry_after_s: float):
    """Ray Serve's answer to a full proxy queue: 503 with ``Retry-After``."""
    from ray.serve.config import BackpressureConfig

    return BackpressureConfig(status_code=503, retry_after_s=retry_after_s)


class LimitsConfig(_Strict):
    """Input limits; each breach is a 4xx with the offending ``param`` named."""

    max_tokens: int = Field(512, ge=1, description="Largest max_tokens a request may ask for (400 above it).")
    default_max_tokens: int | None = Field(
        None, ge=1, description="max_tokens when the request gives none (default: min(256, max_tokens)).")
    max_prompt_tokens: int = Field(4096, ge=1, description="Largest rendered prompt, in tokens (400 above it).")
    max_messages: int = Field(64, ge=1, description="Most messages in one conversation (413 above it).")
    max_message_chars: int = Field(16_000, ge=1, description="Longest single message content, in characters (413).")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest request body in bytes (413).")
    requests_per_second: float | None = Field(
        10.0, gt=0, description="Sustained request rate each replica admits (token bucket); None disables it.")
    burst: int = Field(20, ge=1, description="Requests a replica admits back to back before the rate applies.")
    max_verify_items: int = Field(
        512, ge=1, description="Most answers one /v1/verify batch may carry (413 above it; a remote verifier "
        "then splits its batch).")

    @model_validator(mode="after")
    def _default_within_max(self) -> "LimitsConfig":
        if self.default_max_tokens is not None and self.default_max_tokens > self.max_tokens:
            raise ValueError(f"default_max_tokens ({self.default_max_tokens}) > max_tokens ({self.max_tokens})")
        return self


class ServeConfig(_Strict):
    """Everything ``softverify serve`` and the RayService application take (YAML, CLI flags)."""

    model: str | None = Field(
        None, description="'smollm2', a local HF model directory (e.g. a run's final/), or a hub id; required "
        "unless verify_only.")
    verify_only: bool = Field(
        False, description="Serve only /health and /v1/verify with the verifiers below, no model: one world model "
        "(or any verifier) loaded once and shared by training runs and sweep trials through `kind: remote`.")
    served_model_name: str | None = Field(
        None, description="Model id clients send in 'model' (default: the directory name, or the reference).")
    engine: Literal["auto", "hf", "vllm"] = Field(
        "auto", description="'hf': Serve deployment around the HF engine (CPU or GPU); 'vllm': Ray Serve LLM "
        "(needs vLLM and GPUs); 'auto': vllm when the cluster has GPUs and ray.serve.llm imports, else hf.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights/compute dtype.")
    trust_remote_code: bool = Field(False, description="Allow model repos to run their own code.")
    host: str = Field("127.0.0.1", description="Address the HTTP proxy binds; 0.0.0.0 exposes it to the network.")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    api_key: str | None = Field(
        None, description="Bearer key clients must send; prefer $SOFTVERIFY_API_KEY over writing it in YAML.")
    assistant_prefix: str | None = Field(
        None, description="Text every assistant turn starts with; it is returned as part of the completion. "
        "None: what the run trained with (its softverify_prompt.json or config.yaml), else none.")
    system_prompt: str | None = Field(
        None, description="System message put in front of a chat that brings none of its own. None: the run's "
        "training system prompt, else none. A client's own system message always wins.")
    trained_stop: list[str] | None = Field(
        None, description="Stop strings that end an answer as in training and stay in the text (e.g. "
        "'</answer>'), used when a request has no 'stop' of its own. None: the run's rollout.stop, else none.")
    max_model_len: int | None = Field(None, ge=1, description="vLLM: context length (default: the model's).")
    accelerator_type: str | None = Field(None, description="vLLM: Ray accelerator type to schedule on, e.g. 'A10G'.")
    replicas: ReplicaConfig = Field(default_factory=ReplicaConfig, description="Replica count and autoscaling.")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Request limits (HF path).")
    verifiers: list[VerifierCore] = Field(
        default_factory=lambda: [VerifierCore(kind="format"), VerifierCore(kind="hard")],
        description="Verifiers /v1/verify scores answers with; empty disables the endpoint.")

    @model_validator(mode="after")
    def _model_or_verify_only(self) -> "ServeConfig":
        if self.verify_only and self.model is not None:
            raise ValueError(f"verify_only serves no model, but model is {self.model!r}: drop one of them")
        if self.verify_only and not self.verifiers:
            raise ValueError("verify_only with no verifiers would serve nothing: list the verifiers to serve")
        if not self.verify_only and self.model is None:
            raise ValueError("model is required (a run's final/, 'smollm2', a hub id), unless verify_only is set "
                             "to serve only /v1/verify")
        return self

    def model_id(self) -> str:
        """``served_model_name``, else a name that tells runs apart: every run saves its policy
        as ``final/`` (checkpoints as ``step_N/hf``), so those take the run's name."""
        if self.served_model_name:
            return self.served_model_name
        if self.model is None:
            return "verifiers"
        parts = [p for p in self.model.rstrip("/").split("/") if p]
        if not parts:
            return self.model
        if parts[-1] == "final" and len(parts) >= 2:
            return parts[-2]
        if parts[-1] == "hf" and len(parts) >= 4 and parts[-3] == "checkpoints":
            return f"{parts[-4]}-{parts[-2]}"
        return parts[-1]

    def with_trained_prompt(self, tp) -> "ServeConfig":
        """Unset prompt fields filled from ``tp``, the :class:`~softverify.task.prompts.TrainedPrompt`
        of the run that trained the model (so the served policy is asked exactly as it was
        trained), or left empty when ``tp`` is None."""
        return self.model_copy(update={
            "assistant_prefix": self.assistant_prefix if self.assistant_prefix is not None
            else (tp.assistant_prefix if tp else ""),
            "system_prompt": self.system_prompt if self.system_prompt is not None else (tp.system_prompt if tp else None),
            "trained_stop": self.trained_stop if self.trained_stop is not None else (list(tp.stop) if tp else []),
        })


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
    ``tool_calls``) are parsed as OpenAI sends them so :func:`check_supported` can refuse
    them by name (400), instead of a schema error about a field the client did send right."""

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
    no-op values and otherwise refused by name (400, :func:`check_supported`), so a client
    never believes a setting took. Names OpenAI does not have are refused as OpenAI does."""

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
    # OpenAI fields accepted at their no-op values only (see check_supported)
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


def stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


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
