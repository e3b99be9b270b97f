"""The HTTP pieces both Serve deployments share (the chat server in
:mod:`~softverify.platform.serve.app`, the verifier server in
:mod:`~softverify.platform.serve.verify_app`): admission (API key, rate limit, body size),
OpenAI's error shape, the readiness answer of ``/health``, and the access-log filter that keeps
health probes out of the log.
"""
# No ``from __future__ import annotations``: FastAPI reads ``http_error``'s annotations at runtime.
import logging

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from softverify.platform.serve.config import LimitsConfig
from softverify.platform.serve.guards import RateLimiter, check_api_key
from softverify.platform.serve.schema import ApiError

log = logging.getLogger("ray.serve")

#: Routes whose requests get no access-log line: load balancers, kubelets and ``serve``'s
#: own start-up wait poll ``/health`` every second or so, which buried every other line.
QUIET_ROUTES = ("/health",)


class QuietRoutesFilter(logging.Filter):
    """Drops Ray Serve's access-log record of a request to one of :data:`QUIET_ROUTES`.

    Ray Serve's ``LoggingConfig(enable_access_log=False)`` turns the access log off for
    every route; a probe's lines are the noise, a client's requests are not. The replica
    logs each request on the ``ray.serve`` logger with the route in the record's ``route``
    attribute (``extra=``), so a filter on that logger drops just those records, from the
    terminal and the replica's log file alike."""

    def filter(self, record: logging.LogRecord) -> bool:
        route = getattr(record, "route", None)
        if route is None:
            return True
        return str(route).split("?")[0] not in QUIET_ROUTES


def quiet_probe_access_logs() -> None:
    """Install :class:`QuietRoutesFilter` on the ``ray.serve`` logger (once)."""
    if not any(isinstance(f, QuietRoutesFilter) for f in log.filters):
        log.addFilter(QuietRoutesFilter())


def health_response(get):
    """``/health``: 200 once ``get()`` (the deployment's lazily loaded parts) returns, 503 with
    Retry-After while it loads, the load's own status when it failed -- a readiness probe for
    Kubernetes and for ``serve_forever``'s "ready" line."""
    try:
        get()
    except ApiError as e:
        return JSONResponse(status_code=e.status, headers=e.headers,
                            content={"status": "loading" if e.status == 503 else "failed", "detail": e.message})
    return {"status": "ok"}


def error_response(e: ApiError) -> JSONResponse:
    return JSONResponse(status_code=e.status, content=e.body(), headers=e.headers)


async def http_error(request: Request, exc: StarletteHTTPException):
    """Unknown routes and wrong methods answer in OpenAI's error shape, not FastAPI's."""
    what = {404: f"unknown route {request.method} {request.url.path}", 405: f"method {request.method} is not "
            f"allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
    return error_response(ApiError(exc.status_code, what, code="not_found" if exc.status_code == 404 else None))


def admit(request: Request, api_key: str | None, limiter: RateLimiter | None, limits: LimitsConfig) -> None:
    """Auth first (a stranger must not drain the bucket), then the rate limit (``limiter``
    None: not rate limited), then the declared body size."""
    check_api_key(request.headers.get("authorization"), api_key)
    if limiter is not None:
        limiter.acquire()
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise ApiError(413, f"request body is {declared} bytes; the limit is {limits.max_body_bytes}")
