"""A verifier that scores through HTTP (``kind: remote``): another ``softverify serve``'s
``/v1/verify``, or any endpoint that speaks the same JSON.

Why: a verifier with heavy state (a world model, a GPU model, a large table) is loaded once,
served, and shared by every training run, sweep trial and actor that points at it, instead of
loaded by each of them; the peers' equivalents are OpenRLHF's ``--remote_rm_url``, verl's
reward loop and slime's ``remote_rm``.

The wire contract, what ``softverify serve`` implements and another endpoint must::

    POST <url>     {"items": [{"question": "<the rendered prompt>", "answer": "<the completion>",
                               "metadata": {<the dataset row: label, pert, gene, ...>},
                               "finish_reason": "stop" | "length",
                               "unforced_answer": "<completion before answer forcing>" | null}, ...],
                    "verifiers": ["<name>"]}          # omitted: every verifier the endpoint hosts
    200            {"object": "list", "verifiers": ["<names scored>"],
                    "data": [{"scores": {"<name>": <float in [0, 1]> | null}}, ...]}  # one per item, in order

A null score means the verifier abstains. Any other status is an error: 429 and 5xx are
retried (after ``Retry-After`` when the endpoint sends one), 413 splits the batch in two,
the rest fail at once. ``"verifiers"`` in the answer is optional; an empty ``items`` list
must be answered too (the build-time check sends one).

This module knows no Ray and no serving code (verifiers sit below the platform): the contract
is restated in :mod:`softverify.platform.serve.schema` for the server side, and the tests hold
the two together.
"""
from __future__ import annotations

import json
import logging
import math
import numbers
import os
import re
import time
from typing import Any, Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from softverify.types import Sample
from softverify.verifiers.base import Verifier, register

log = logging.getLogger(__name__)

#: statuses worth another attempt: rate limited, the server failing or still loading
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: the longest a backoff or a Retry-After makes one attempt wait
MAX_WAIT_S = 30.0
#: the path a URL without one gets: ``softverify serve``'s endpoint
DEFAULT_PATH = "/v1/verify"
_ENV_REF = re.compile(r"\$\{(\w+)\}|\$(\w+)")


class RemoteFailure(Exception):
    """A request that got no usable answer; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def endpoint_url(url: Any) -> str:
    """``url`` checked as an http(s) URL; a bare server address (no path) gets ``/v1/verify``."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"remote verifier url={url!r} is not a URL; expected e.g. "
                         f"'http://127.0.0.1:8000{DEFAULT_PATH}'")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"remote verifier url={url!r} is not an http(s) URL with a host; expected e.g. "
                         f"'http://127.0.0.1:8000{DEFAULT_PATH}'")
    if parts.path in ("", "/"):
        parts = parts._replace(path=DEFAULT_PATH)
    return urlunsplit(parts)


def expand_headers(headers: Any) -> dict[str, str]:
    """Header values with ``$VAR`` / ``${VAR}`` taken from the environment, so a key need not
    be written into a config (``Authorization: 'Bearer ${SOFTVERIFY_API_KEY}'``)."""
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        raise ValueError(f"remote verifier headers={headers!r} is not a mapping; expected e.g. "
                         "{Authorization: 'Bearer ${SOFTVERIFY_API_KEY}'}")
    out = {}
    for k, v in headers.items():
        if not isinstance(k, str) or not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise ValueError(f"remote verifier header {k!r}: {v!r} is not a string")

        def env(m: re.Match) -> str:
            var = m.group(1) or m.group(2)
            if var not in os.environ:
                raise ValueError(f"remote verifier header {k!r} names ${var}, which is not set in the environment")
            return os.environ[var]

        out[k] = _ENV_REF.sub(env, str(v))
    return out


def jsonable(v: Any) -> Any:
    """``v`` as plain JSON: numpy numbers and arrays as numbers and lists, NaN and infinities
    as null (JSON has none; a missing label abstains either way), anything else as its text."""
    if v is None or isinstance(v, (str, bool)):
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return [jsonable(x) for x in v.tolist()]
    return str(v)


def request_item(s: Sample) -> dict[str, Any]:
    """One sample as an item of the request (module docstring)."""
    return {"question": s.prompt, "answer": s.completion, "metadata": jsonable(s.metadata),
            "finish_reason": "stop" if s.finish_reason == "stop" else "length",
            "unforced_answer": s.unforced_completion}


def _connect_reason(e: Exception) -> str:
    """The OS's words for a failed connection ("[Errno 111] Connection refused") out of the
    exceptions requests and urllib3 wrap around it, else the start of the message."""
    m = re.search(r"\[Errno -?\d+\] [^'\")\]]+", str(e))
    return m.group(0).strip() if m else f"{type(e).__name__}: {str(e)[:160]}"


def _error_text(r) -> str:
    """The endpoint's own message (OpenAI's ``{"error": {"message"}}`` shape, or ``detail``),
    else the start of its body."""
    try:
        body = r.json()
    except ValueError:
        return (r.text or "").strip()[:200] or r.reason or ""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if body.get("detail"):
            return str(body["detail"])
    return json.dumps(body)[:200]


@register("remote")
class RemoteVerifier(Verifier):
    """Scores through HTTP with a verifier served elsewhere: ``verifier`` (default: the
    endpoint's only one) of a ``softverify serve --verify-only`` at ``url``, or of any endpoint
    with its request/response. Batched, with timeouts and retries; samples whose request fails
    abstain (NaN), counted in ``verifier/<name>/remote_failed``; a wrong endpoint is refused when
    the verifier is built.

    ``url`` may be the server's address (the path defaults to /v1/verify). ``batch_size``
    samples go in a request, each with ``timeout_s`` and ``retries`` (exponential backoff from
    ``backoff_s``, or the endpoint's Retry-After); ``headers`` go with each (``${VAR}`` read
    from the environment, e.g. ``Authorization: 'Bearer ${SOFTVERIFY_API_KEY}'``). A malformed
    answer makes its samples abstain and counts them too. The build-time check refuses an
    unreachable URL, a 404 or 401, an unknown ``verifier`` and another schema, each in one
    line. Set thresholds on the served verifier's spec: the score that comes back is already
    its reward, and a threshold on this spec would normalise that reward again.
    """

    def __init__(self, name: str | None = None, *, url: str, verifier: str | None = None, batch_size: int = 64,
                 timeout_s: float = 30.0, retries: int = 2, backoff_s: float = 0.5,
                 headers: dict[str, str] | None = None):
        super().__init__(name)
        import requests

        self.url = endpoint_url(url)
        if verifier is not None and (not isinstance(verifier, str) or not verifier):
            raise ValueError(f"remote verifier verifier={verifier!r} is not a verifier name")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"remote verifier batch_size={batch_size!r}: expected an integer >= 1")
        if not timeout_s > 0:
            raise ValueError(f"remote verifier timeout_s={timeout_s!r}: expected seconds > 0")
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ValueError(f"remote verifier retries={retries!r}: expected an integer >= 0")
        if not backoff_s >= 0:
            raise ValueError(f"remote verifier backoff_s={backoff_s!r}: expected seconds >= 0")
        self.verifier, self.batch_size = verifier, batch_size
        self.timeout_s, self.retries, self.backoff_s = float(timeout_s), retries, float(backoff_s)
        self._session = requests.Session()
        self._session.headers.update({"Content-Type": "application/json", **expand_headers(headers)})
        #: counters since the verifier was built (:meth:`metrics`)
        self.requests = self.retried = self.failed = 0
        self._check_endpoint()

    # ------------------------------------------------------------------ build-time check
    def _check_endpoint(self) -> None:
        """An empty batch: the endpoint must exist, accept us, know ``verifier`` and answer
        in the contract's shape. Each way it does not is one ``ValueError`` naming the URL."""
        body: dict[str, Any] = {"items": []}
        if self.verifier:
            body["verifiers"] = [self.verifier]
        where = f"remote verifier url={self.url!r}"
        try:
            out = self._post(body)
        except RemoteFailure as e:
            hint = {404: f"; expected softverify serve's {DEFAULT_PATH} (e.g. http://127.0.0.1:8000{DEFAULT_PATH}) "
                         "or an endpoint with the same request/response",
                    401: "; send a key with params.headers, e.g. {Authorization: 'Bearer ${SOFTVERIFY_API_KEY}'}",
                    403: "; send a key with params.headers, e.g. {Authorization: 'Bearer ${SOFTVERIFY_API_KEY}'}",
                    None: "; is `softverify serve --verify-only` running there?"}.get(e.status, "")
            raise ValueError(f"{where}: {e}{hint}") from None
        if not isinstance(out, dict) or not isinstance(out.get("data"), list) or out["data"]:
            raise ValueError(f"{where}: the answer to an empty batch is {json.dumps(out)[:120]}, not "
                             '{"data": []}: not a verify endpoint (the request/response is in docs/verifiers.md, '
                             '"Remote verifiers")')
        served = out.get("verifiers")
        if served is not None and (not isinstance(served, list) or not all(isinstance(n, str) for n in served)):
            raise ValueError(f"{where}: 'verifiers' in its answer is {served!r}, not a list of names")
        if self.verifier is None:
            if not served or len(served) != 1:
                raise ValueError(f"{where}: it serves verifiers {served}; set params.verifier to the one to use"
                                 if served else f"{where}: it does not list its verifiers; set params.verifier")
            self.verifier = served[0]
        elif served is not None and self.verifier not in served:
            raise ValueError(f"{where}: it has no verifier {self.verifier!r}; it serves {served}")

    # ------------------------------------------------------------------ HTTP
    def _post(self, body: dict[str, Any]) -> Any:
        """POST ``body`` with retries; the decoded JSON of a 2xx answer, else
        :class:`RemoteFailure` saying what the last attempt got."""
        import requests

        payload = json.dumps(body, allow_nan=False).encode()
        last = RemoteFailure("no attempt made")
        for attempt in range(self.retries + 1):
            wait = min(self.backoff_s * 2 ** attempt, MAX_WAIT_S)
            self.requests += 1
            try:
                r = self._session.post(self.url, data=payload, timeout=self.timeout_s)
            except requests.Timeout:
                last = RemoteFailure(f"no answer within timeout_s={self.timeout_s:g}")
            except requests.RequestException as e:  # refused, reset, DNS, TLS
                last = RemoteFailure(f"cannot connect ({_connect_reason(e)})")
            else:
                if r.status_code < 300:
                    try:
                        return r.json()
                    except ValueError:
                        raise RemoteFailure(f"the answer is not JSON: {r.text[:120]!r}", r.status_code) from None
                last = RemoteFailure(f"HTTP {r.status_code}: {_error_text(r)}", r.status_code)
                if r.status_code not in RETRY_STATUSES:
                    raise last
                after = r.headers.get("Retry-After", "")
                if after.replace(".", "", 1).isdigit():
                    wait = min(float(after), MAX_WAIT_S)
            if attempt < self.retries:
                self.retried += 1
                time.sleep(wait)
        if self.retries:
            last.args = (f"{last.args[0]} (after {self.retries + 1} attempts)",)
        raise last

    # ------------------------------------------------------------------ scoring
    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        samples = list(samples)
        out = np.full(len(samples), np.nan)
        # Once the endpoint is unreachable (no answer, or a retryable status, after the
        # retries), the rest of this call abstains at once: a step waits for one request's
        # retries, not every batch's. A refusal of one batch (e.g. 422) leaves the others to try.
        down = False
        n_failed, reason = 0, "malformed scores in the answer"
        for start in range(0, len(samples), self.batch_size):
            chunk = samples[start:start + self.batch_size]
            if not down:
                try:
                    out[start:start + len(chunk)], bad = self._score_chunk(chunk)
                    n_failed += bad
                    continue
                except RemoteFailure as e:
                    reason, down = str(e), e.status is None or e.status in RETRY_STATUSES
            n_failed += len(chunk)
        self.failed += n_failed
        if n_failed:
            log.warning("remote verifier %r: %d of %d samples abstain: %s", self.name, n_failed, len(samples), reason)
        return out

    def _score_chunk(self, chunk: list[Sample]) -> tuple[np.ndarray, int]:
        """Scores of one request's samples and how many of them came back malformed; a
        413 (too large) splits the request in two."""
        try:
            body = self._post({"items": [request_item(s) for s in chunk], "verifiers": [self.verifier]})
        except RemoteFailure as e:
            if e.status == 413 and len(chunk) > 1:
                half = len(chunk) // 2
                (a, na), (b, nb) = self._score_chunk(chunk[:half]), self._score_chunk(chunk[half:])
                return np.concatenate([a, b]), na + nb
            raise
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or len(data) != len(chunk):
            raise RemoteFailure(f"malformed answer: expected 'data' with {len(chunk)} items, got "
                                f"{json.dumps(body)[:120]}", status=200)  # answered: not a reason to stop trying
        out, bad = np.full(len(chunk), np.nan), 0
        for i, d in enumerate(data):
            scores = d.get("scores") if isinstance(d, dict) else None
            v = scores.get(self.verifier, ...) if isinstance(scores, dict) else ...
            if v is None:  # the verifier abstains
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0:
                out[i] = float(v)
            else:  # missing, not a number, outside [0, 1]: the contract is broken for this item
                bad += 1
        return out, bad

    def metrics(self) -> dict[str, float]:
        """Requests sent (retries included), retries, and samples that abstained because a
        request failed or its answer was malformed (not the served verifier's own abstentions)."""
        return {"remote_requests": self.requests, "remote_retries": self.retried, "remote_failed": self.failed}

    def __del__(self):
        session = getattr(self, "_session", None)
        if session is not None:
            session.close()
