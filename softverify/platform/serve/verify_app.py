"""``softverify serve --verify-only``: verifiers behind ``/v1/verify`` on Ray Serve, no model.

Why: a world model (or any verifier with heavy state) loaded once, in one Serve deployment,
and scored by every training run and sweep trial that names it with ``kind: remote``,
instead of loaded by each run's verifier actor. Replicas, autoscaling, the API key, the
rate limit and the request limits are the chat server's (``ServeConfig``, admission in
:mod:`~softverify.platform.serve.web`); the routes are ``/health`` and ``/v1/verify`` only.
"""
# No ``from __future__ import annotations``: FastAPI reads the routes' annotations at runtime
# (see app.py).
from fastapi import FastAPI, Request
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from softverify.platform.serve.config import ServeConfig
from softverify.platform.serve.guards import BackgroundLoad, RateLimiter, parse_verify_body
from softverify.platform.serve.schema import ApiError
from softverify.platform.serve.verify import VerifierSet
from softverify.platform.serve.web import admit, error_response, health_response, http_error, quiet_probe_access_logs

verify_api = FastAPI(title="softverify verifiers", docs_url=None, redoc_url=None, openapi_url=None)
verify_api.add_exception_handler(StarletteHTTPException, http_error)


@serve.deployment(name="VerifierServer")
@serve.ingress(verify_api)
class VerifierServer:
    """One replica: the configured verifiers (built on a thread, 503 until they are up) behind
    ``/v1/verify``, with the API key and rate limit of :class:`ChatServer`."""

    def __init__(self, cfg: dict, api_key: str | None):
        quiet_probe_access_logs()
        self.cfg = ServeConfig.model_validate(cfg)
        self.limits, self.api_key = self.cfg.limits, api_key
        self.limiter = RateLimiter(self.limits.requests_per_second, self.limits.burst)
        names = [s.name or s.kind for s in self.cfg.verifiers]
        self._set = BackgroundLoad(self._build, f"verifiers {names}")

    def _build(self) -> VerifierSet:
        threads = self.cfg.replicas.torch_threads
        if threads:  # a world model's forward pass: the cores Ray reserved for this replica, not all of them
            import torch

            torch.set_num_threads(threads)
        return VerifierSet(self.cfg.verifiers)

    def check_health(self) -> None:
        """Serve's periodic check: a replica whose verifiers failed to build is replaced."""
        if self._set.failed:
            raise RuntimeError(f"verifiers failed to load: {self._set.error!r}")

    @verify_api.get("/health")
    async def health(self):
        return health_response(self._set.get)

    @verify_api.post("/v1/verify")
    async def verify(self, request: Request):
        try:
            admit(request, self.api_key, self.limiter, self.limits)
            req = parse_verify_body(await request.body(), self.limits)
            return self._set.get().answer(req)
        except ApiError as e:
            return error_response(e)


def build_verify_app(cfg: ServeConfig, api_key: str | None):
    """The verify-only Serve application for ``cfg`` (not yet running)."""
    return VerifierServer.options(**cfg.replicas.serve_options()).bind(cfg.model_dump(exclude={"api_key"}), api_key)
