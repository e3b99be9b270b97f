"""``softverify serve``: the trained model behind an OpenAI-compatible API on Ray Serve.

Two engines, one application entry point (:func:`app_builder`, used by ``serve run``
and the RayService manifest; :func:`build_app` for code):

- ``hf``: a Serve deployment (:class:`ChatServer`) around :class:`~softverify.engines.hf.HFEngine`.
  Runs anywhere (CPU by default). Concurrent non-streaming requests are batched with
  ``@serve.batch`` (one ``generate`` for the batch, the engine's strength on CPU); streaming
  requests get their own generation and send server-sent events as the text appears.
  API key, input limits and a per-replica rate limit come from
  :mod:`softverify.platform.serve.guards`, the request and response shapes from
  :mod:`softverify.platform.serve.schema`; ``/v1/verify`` scores answers with verifiers.
- ``vllm``: Ray Serve LLM (``ray.serve.llm.build_openai_app`` with one ``LLMConfig``), for
  GPUs. Its own OpenAI ingress serves the requests, so the API key, limits and
  ``/v1/verify`` of the hf path do not apply there (put a gateway in front).
"""
# No ``from __future__ import annotations`` here: FastAPI reads the route signatures'
# annotations at runtime (``request: Request``) and Serve's ingress wrapper loses the
# module namespace string annotations would need.
import asyncio
import importlib.util
import logging
import os
import signal
import sys
import time
from typing import Any

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.responses import StreamingResponse
from ray import serve

from softverify.engines.base import SamplingParams, render_turns
from softverify.platform.serve.config import ServeConfig
from softverify.platform.serve.guards import (BackgroundLoad, RateLimiter, check_chat, check_prompt_tokens, parse_body,
                                              parse_verify_body)
from softverify.platform.serve.schema import (SSE_DONE, ApiError, ChatCompletionRequest, chat_chunk, chat_response,
                                              choice, completion_id, models_response, stop_list,
                                              token_logprobs_content, usage)
from softverify.platform.serve.verify import VerifierSet
from softverify.platform.serve.web import (admit, error_response as _error, health_response, http_error,
                                          quiet_probe_access_logs)

api = FastAPI(title="softverify", docs_url=None, redoc_url=None, openapi_url=None)
log = logging.getLogger("ray.serve")

api.add_exception_handler(StarletteHTTPException, http_error)  # OpenAI's error shape for unknown routes


def trim_at_stop(text: str, stops: list[str], keep: list[str] | tuple[str, ...] = ()) -> str:
    """OpenAI returns the text before the first stop sequence, without it; a ``keep`` stop
    (the run's trained answer end, e.g. '</answer>') ends the text after itself instead."""
    ends = [i for i in (text.find(s) for s in stops) if i >= 0]
    ends += [i + len(s) for s in keep if (i := text.find(s)) >= 0]
    return text[: min(ends)] if ends else text


def prompt_ids(engine, messages: list[dict[str, str]], system_prompt: str | None, prefix: str) -> list[int]:
    """A client's chat as the tokens the trained policy saw: its system prompt in front
    unless the chat has one, the assistant turn opened with its prefix (``render_turns``,
    the same function rollout and eval use)."""
    from softverify.task.prompts import with_system

    return render_turns(engine, [with_system(messages, system_prompt)], prefix).token_ids[0]


@serve.deployment(name="ChatServer")
@serve.ingress(api)
class ChatServer:
    """One replica: an HF engine, a rate limiter and the verifiers, behind FastAPI routes."""

    def __init__(self, cfg: dict, model_path: str, api_key: str | None):
        quiet_probe_access_logs()  # in the replica's process, where its access log is written
        self.cfg = ServeConfig.model_validate(cfg)  # prompt fields already resolved by build_app
        r, self.limits = self.cfg.replicas, self.cfg.limits
        self.model_id = self.cfg.model_id()
        self.api_key = api_key
        self.limiter = RateLimiter(self.limits.requests_per_second, self.limits.burst)
        self.created = int(time.time())
        # one generate at a time per replica: a batch or a stream. Two would only fight
        # over the same cores (and a GPU's memory) and make both slower.
        self._gen_lock = asyncio.Lock()
        self._generate_batch.set_max_batch_size(r.max_batch_size)
        self._generate_batch.set_batch_wait_timeout_s(r.batch_wait_timeout_s)
        # the model and verifiers load on a thread: until they are up, requests get a 503
        # with Retry-After instead of waiting in the proxy with no answer
        self._parts = BackgroundLoad(lambda: self._build(model_path), f"model {self.model_id!r}")

    def _build(self, model_path: str):
        from softverify.engines.hf import HFEngine

        r = self.cfg.replicas
        engine = HFEngine(model_path, self.cfg.dtype, r.torch_threads, self.cfg.trust_remote_code,
                          batch_size=r.max_batch_size)
        return engine, VerifierSet(self.cfg.verifiers)

    @property
    def engine(self):
        return self._parts.get()[0]

    @property
    def verifiers(self):
        return self._parts.get()[1]

    def check_health(self) -> None:
        """Ray Serve's periodic replica check: a replica whose model failed to load is
        replaced instead of answering 500 forever."""
        if self._parts.failed:
            raise RuntimeError(f"model {self.model_id!r} failed to load: {self._parts.error!r}")

    # ------------------------------------------------------------------ helpers
    def _admit(self, request: Request, rate_limited: bool = True) -> None:
        admit(request, self.api_key, self.limiter if rate_limited else None, self.limits)

    def _prompt(self, req: ChatCompletionRequest) -> list[int]:
        msgs = req.chat()
        ids = prompt_ids(self.engine, msgs, self.cfg.system_prompt, self.cfg.assistant_prefix)
        check_prompt_tokens(len(ids), self.limits)
        return ids

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def _generate_batch(self, items: list[tuple[list[int], SamplingParams, int]]):
        """Requests that arrived together; those with equal sampling settings (and ``n``)
        share a generate. Each gets its list of ``n`` generations."""
        groups: dict[tuple, list[int]] = {}
        for i, (_, sp, n) in enumerate(items):
            key = (sp.max_new_tokens, sp.temperature, sp.top_p, tuple(sp.stop), sp.seed, sp.presence_penalty,
                   sp.frequency_penalty, sp.top_logprobs, n)
            groups.setdefault(key, []).append(i)
        out: list[Any] = [None] * len(items)
        async with self._gen_lock:
            for idx in groups.values():
                _, sp, n = items[idx[0]]
                t0 = time.perf_counter()
                gens = await asyncio.to_thread(self.engine.generate, [items[i][0] for i in idx], sp, n)
                for i, g in zip(idx, gens):
                    out[i] = g
                log.info("generated a batch of %d request(s), %d new tokens, in %.2f s", len(idx),
                         sum(len(x.token_ids) for g in gens for x in g), time.perf_counter() - t0)
        return out

    # ------------------------------------------------------------------ routes
    @api.get("/health")
    async def health(self):
        """200 once the model is loaded, 503 (with Retry-After) while it loads."""
        return health_response(self._parts.get)

    @api.get("/v1/models")
    async def models(self, request: Request):
        try:
            self._admit(request, rate_limited=False)
            self._parts.get()
        except ApiError as e:
            return _error(e)
        return models_response(self.model_id, self.created)

    @api.post("/v1/chat/completions")
    async def chat(self, request: Request):
        try:
            self._admit(request)
            req = parse_body(await request.body(), ChatCompletionRequest, self.limits)
            max_tokens = check_chat(req, self.limits, self.model_id)
            ids = self._prompt(req)
        except ApiError as e:
            return _error(e)
        trim = stop_list(req.stop)
        keep = [] if req.stop is not None else list(self.cfg.trained_stop or [])  # the client's stop wins
        n_top = (req.top_logprobs or 0) if req.logprobs else 0
        sp = SamplingParams(max_new_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p,
                            stop=trim + keep, seed=req.seed, presence_penalty=req.presence_penalty,
                            frequency_penalty=req.frequency_penalty, top_logprobs=n_top)
        cid, prefix = completion_id(), self.cfg.assistant_prefix
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(self._stream(cid, ids, sp, include_usage, trim, keep),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        gens = await self._generate_batch((ids, sp, req.n))
        decode = lambda t: self.engine.tokenizer.decode([t])  # noqa: E731
        choices = [
            choice(k, prefix + trim_at_stop(g.text, trim, keep), g.finish_reason,
                   token_logprobs_content(decode, g.token_ids, g.logprobs, g.top_logprobs, n_top)
                   if req.logprobs else None)
            for k, g in enumerate(gens)
        ]
        return chat_response(cid, self.model_id, choices, len(ids), sum(len(g.token_ids) for g in gens))

    async def _stream(self, cid: str, ids: list[int], sp: SamplingParams, include_usage: bool,
                      trim: list[str], keep: list[str]):
        """SSE: a role chunk, content chunks as words appear, a finish chunk, [DONE].

        Text is held back by (longest stop sequence - 1) characters so a stop sequence
        split over two pieces is never sent."""
        created = int(time.time())
        yield chat_chunk(cid, self.model_id, created, {"role": "assistant", "content": ""})
        if self.cfg.assistant_prefix:
            yield chat_chunk(cid, self.model_id, created, {"content": self.cfg.assistant_prefix})
        hold = max((len(s) for s in sp.stop), default=1) - 1
        async with self._gen_lock:
            stream = self.engine.stream(ids, sp)
            it, pending, stopped = iter(stream), "", False
            try:
                while (piece := await asyncio.to_thread(next, it, None)) is not None:
                    pending += piece
                    cut = trim_at_stop(pending, trim, keep)
                    if len(cut) < len(pending):  # a stop sequence: send what precedes it, end
                        pending, stopped = cut, True
                        stream.cancel()
                        break
                    send, pending = pending[: len(pending) - hold], pending[len(pending) - hold:]
                    if send:
                        yield chat_chunk(cid, self.model_id, created, {"content": send})
                if pending:
                    yield chat_chunk(cid, self.model_id, created, {"content": pending})
                if stopped:  # let the generating thread see the cancel before the next request
                    await asyncio.to_thread(lambda: [None for _ in it])
            finally:  # client went away mid-stream: stop generating for nobody
                stream.cancel()
        reason = "stop" if stopped else stream.finish_reason
        yield chat_chunk(cid, self.model_id, created, {}, finish_reason=reason)
        if include_usage:
            yield chat_chunk(cid, self.model_id, created, None, usage=usage(len(ids), len(stream.token_ids)))
        yield SSE_DONE

    @api.post("/v1/verify")
    async def verify(self, request: Request):
        try:
            self._admit(request)
            req = parse_verify_body(await request.body(), self.limits)
            return self.verifiers.answer(req)
        except ApiError as e:
            return _error(e)


# ------------------------------------------------------------------ building the app


def select_engine(cfg: ServeConfig) -> str:
    """'auto' means vLLM when it can work: ``ray.serve.llm`` imports and there are GPUs."""
    if cfg.engine != "auto":
        return cfg.engine
    if importlib.util.find_spec("vllm") is None:
        return "hf"
    import ray

    gpus = ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0
    if not gpus:
        import torch

        gpus = torch.cuda.device_count()
    return "vllm" if gpus else "hf"


def vllm_llm_config(cfg: ServeConfig, model_path: str) -> dict[str, Any]:
    """The ``ray.serve.llm.LLMConfig`` fields for this config (a plain dict, so it can be
    checked without vLLM installed)."""
    r = cfg.replicas
    deployment: dict[str, Any] = {"max_ongoing_requests": r.max_ongoing_requests}
    if r.autoscaling:
        deployment["autoscaling_config"] = r.autoscaling_config()
    else:
        deployment["autoscaling_config"] = {"min_replicas": r.num_replicas, "max_replicas": r.num_replicas}
    engine: dict[str, Any] = {"dtype": cfg.dtype}
    if cfg.max_model_len:
        engine["max_model_len"] = cfg.max_model_len
    if cfg.trust_remote_code:
        engine["trust_remote_code"] = True
    out: dict[str, Any] = {
        "model_loading_config": {"model_id": cfg.model_id(), "model_source": model_path},
        "deployment_config": deployment,
        "engine_kwargs": engine,
    }
    if cfg.accelerator_type:
        out["accelerator_type"] = cfg.accelerator_type
    return out


def build_app(cfg: ServeConfig):
    """The Serve application for ``cfg`` (not yet running)."""
    from softverify.model.names import resolve_model_path
    from softverify.task.prompts import load_trained_prompt

    api_key = cfg.api_key or os.environ.get("SOFTVERIFY_API_KEY") or None
    if cfg.verify_only:
        from softverify.platform.serve.verify_app import build_verify_app

        return build_verify_app(cfg, api_key)
    model_path = resolve_model_path(cfg.model)
    tp = load_trained_prompt(model_path)
    print(f"softverify serve: prompts as trained ({tp.style} style, from {tp.source})" if tp else
          "softverify serve: no training prompt found beside the model; chats are rendered as sent",
          file=sys.stderr, flush=True)
    engine = select_engine(cfg)
    if engine == "vllm":
        if api_key:
            raise ValueError("the vllm engine (Ray Serve LLM) does not check API keys; serve with "
                             "engine=hf or put an authenticating gateway in front and unset the key")
        try:
            from ray.serve.llm import LLMConfig, build_openai_app
        except ImportError as e:
            raise ValueError(f"engine=vllm needs Ray Serve LLM and vLLM (pip install 'softverify[gpu]'): {e}") from e
        return build_openai_app({"llm_configs": [LLMConfig(**vllm_llm_config(cfg, model_path))]})
    return ChatServer.options(**cfg.replicas.serve_options()).bind(
        cfg.with_trained_prompt(tp).model_dump(exclude={"api_key"}), model_path, api_key)


def load_serve_config(raw: dict[str, Any]) -> ServeConfig:
    """Validate, turning pydantic's report into one :class:`ConfigError` line per problem."""
    from pydantic import ValidationError

    from softverify.configbase import ConfigError

    try:
        return ServeConfig.model_validate(raw)
    except ValidationError as e:
        lines = [f"{'.'.join(map(str, err['loc'])) or 'config'}: {err['msg']}" for err in e.errors()]
        raise ConfigError("invalid serve config: " + "; ".join(lines)) from None


def app_builder(args: dict[str, Any]):
    """Entry point for ``serve run softverify.platform.serve.app:app_builder model=...`` and the
    RayService's serveConfigV2 ``args``; ``config`` may name a YAML file the args override."""
    from softverify.configbase import read_yaml

    args = dict(args)
    raw = read_yaml(args.pop("config")) if "config" in args else {}
    raw.update(args)
    return build_app(load_serve_config(raw))


def wait_ready(base_url: str, timeout_s: float = 900.0, poll_s: float = 0.5) -> None:
    """Block until ``GET {base_url}/health`` answers 200 (the replica's model is loaded).
    Raises TimeoutError with the last answer if it does not within ``timeout_s``, and
    RuntimeError at once when the replica reports that loading failed."""
    import urllib.error
    import urllib.request

    deadline, last = time.monotonic() + timeout_s, "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=10) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError as e:
            body = e.read()[:500].decode(errors="replace")
            last = f"HTTP {e.code} {body}"
            if e.code == 500:
                raise RuntimeError(f"the served model failed to load: {body}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            last = repr(e)
        time.sleep(poll_s)
    raise TimeoutError(f"{base_url}/health not ready after {timeout_s:.0f} s (last: {last})")


class _Stop(Exception):
    """A stop signal (SIGTERM, SIGINT) turned into an exception in the main thread, so the
    ``finally`` that shuts Serve and Ray down runs wherever the driver was waiting."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _on_stop_signal(signum: int, frame) -> None:
    # A second signal while shutting down is ignored: shutdown is already under way, and
    # an exception raised inside it would cut it short and orphan Ray's processes.
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, signal.SIG_IGN)
    raise _Stop(signum)


def serve_logging() -> dict:
    """``serve.start`` arguments of a quiet server (:mod:`softverify.infra.quiet`): Serve's controller
    and proxies, and this driver's ``ray.serve`` logger, keep WARNING and above ("Deploying new
    version", "Got updated endpoints" ... only with ``--verbose``). Replicas keep INFO: their
    request log and the engine's lines are what a server's operator reads."""
    import logging

    from softverify.infra import quiet

    if not quiet.enabled():
        return {}
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    return {"logging_config": {"log_level": "WARNING"}}


def serve_forever(cfg: ServeConfig, address: str | None = None) -> int:
    """Start Ray (or join ``address``), bind the HTTP proxy, deploy, block until stopped.

    SIGTERM (what Docker, systemd and Kubernetes send) and SIGINT (Ctrl-C) stop it the
    same way: one line, ``serve.shutdown()``, ``ray.shutdown()`` (which ends the local Ray
    it started, agents included), exit code 0 -- a requested stop is a clean exit, as
    uvicorn and gunicorn report it. The handlers are installed after ``ray.init``, which
    installs its own (a C++ stack dump, then an abort that left Ray's agents orphaned)."""
    import ray

    from softverify.model.names import resolve_model_path

    if cfg.verify_only:  # a missing model_dir or a misspelled param is one line here, not a replica's death
        from softverify.platform.serve.verify import check_verifiers

        check_verifiers(cfg.verifiers)
    else:
        resolve_model_path(cfg.model)  # a missing model fails here, in a second, not after Ray has started
    from softverify.infra.cluster import connect

    connect(address)
    previous = {s: signal.signal(s, _on_stop_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        app = build_app(cfg)  # after ray.init: engine=auto looks at the cluster's GPUs
        quiet_probe_access_logs()
        serve.start(http_options={"host": cfg.host, "port": cfg.port}, **serve_logging())
        serve.run(app, name="softverify", route_prefix="/", blocking=False)
        base = f"http://{cfg.host}:{cfg.port}"
        local = f"http://127.0.0.1:{cfg.port}" if cfg.host in ("0.0.0.0", "::") else base
        if cfg.verify_only:
            wait_ready(local)
            names = [s.name or s.kind for s in cfg.verifiers]
            print(f"softverify serve: verifiers {names} ready at {base}/v1/verify (train with kind: remote, "
                  f"url: {base}); Ctrl-C or SIGTERM stops", file=sys.stderr, flush=True)
        else:
            engine = select_engine(cfg)
            if engine == "hf":
                print(f"softverify serve: loading {cfg.model_id()!r} (requests get 503 + Retry-After until it is up)",
                      file=sys.stderr, flush=True)
                wait_ready(local)
            print(f"softverify serve: {cfg.model_id()!r} ready at {base}/v1 "
                  f"(engine {engine}); Ctrl-C or SIGTERM stops", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
    except (_Stop, KeyboardInterrupt) as e:
        name = signal.Signals(e.signum).name if isinstance(e, _Stop) else "SIGINT"
        print(f"softverify serve: {name} received; shutting down", file=sys.stderr, flush=True)
        return 0
    finally:
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
        for s, handler in previous.items():
            signal.signal(s, handler)
