"""What ``softverify serve`` and its RayService application are configured with (YAML, CLI
flags): the model and engine, the replicas and their autoscaling, the request limits, the
verifiers ``/v1/verify`` scores with. Strict models, so a misspelled key is refused before
anything starts; no Ray, FastAPI or model import, so the CLI and the tests read them cheaply.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from softverify.config import VerifierCore
from softverify.configbase import DEFAULT_TORCH_THREADS, StrictModel


class ReplicaConfig(StrictModel):
    """How many copies of the model run and when Serve adds or removes them."""

    num_replicas: int = Field(1, ge=1, description="Fixed replica count (ignored when autoscaling is on).")
    autoscaling: bool = Field(False, description="Let Serve scale between min_replicas and max_replicas by load.")
    min_replicas: int = Field(
        1, ge=0, description="Autoscaling floor (0 allows scale to zero; first request waits for a cold start).")
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
        DEFAULT_TORCH_THREADS, ge=1, description="torch intra-op threads per HF replica; default 1, the one CPU "
        "num_cpus reserves (DEFAULT_TORCH_THREADS, as train and eval use): raise both together, or the replicas use "
        "cores Ray gave to others. None: torch's default, usually all cores.")
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


class LimitsConfig(StrictModel):
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


class ServeConfig(StrictModel):
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
            "system_prompt": self.system_prompt if self.system_prompt is not None
            else (tp.system_prompt if tp else None),
            "trained_stop": self.trained_stop if self.trained_stop is not None else (list(tp.stop) if tp else []),
        })
