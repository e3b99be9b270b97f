"""``kind: remote`` against endpoints that misbehave, each a real HTTP server on 127.0.0.1.

Every server here implements the documented request/response itself (http.server, no
softverify code behind it), so these tests also hold the contract of
:mod:`softverify.verifiers.remote` for "any endpoint": a toy verifier scores
``len(answer) / 10``. The scenarios are the ones a shared verifier meets in a long run:
a server that is slow (timeouts, then abstention), flaky (503 then fine), too small for a
batch (413: split), or broken (malformed answers), and an endpoint that is wrong from the
start (refused when the verifier is built, one line, before any Ray starts).
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from softverify.infra.cluster import free_port
from softverify.config import VerifierSpec
from softverify.configbase import ConfigError
from softverify.types import Sample
from softverify.verifiers import build_verifier
from softverify.verifiers.suite import check_specs


def toy_score(item: dict) -> float:
    return min(len(item["answer"]), 10) / 10


class Endpoint:
    """A verify endpoint on a free loopback port whose behaviour per request is ``answer``:
    ``(status, body_dict_or_text, headers)`` from the parsed request and its 0-based count."""

    def __init__(self, answer):
        self.hits: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.hits.append({"body": body, "auth": self.headers.get("Authorization")})
                status, out, headers = answer(body, len(outer.hits) - 1)
                data = out.encode() if isinstance(out, str) else json.dumps(out).encode()
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/score"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def scored(self) -> list[dict]:
        """The requests that carried items (not the build-time check's empty batch)."""
        return [h for h in self.hits if h["body"]["items"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def contract(body: dict, *_):
    """A correct answer: one verification per item, in order."""
    return 200, {"object": "list", "verifiers": ["toy"],
                 "data": [{"scores": {"toy": toy_score(it)}} for it in body["items"]]}, {}


@pytest.fixture
def endpoint():
    made = []

    def make(answer=contract):
        made.append(Endpoint(answer))
        return made[-1]

    yield make
    for e in made:
        e.close()


def samples(n: int) -> list[Sample]:
    return [Sample(prompt_id=str(i), prompt=f"q{i}", completion="x" * i, metadata={"label": i % 2, "k": np.int64(i)},
                   finish_reason="stop") for i in range(n)]


def test_any_endpoint_with_the_contract_scores_in_batches_with_headers(endpoint, monkeypatch):
    e = endpoint()
    monkeypatch.setenv("TOY_KEY", "s3cret")
    v = build_verifier("remote", url=e.url, batch_size=3, headers={"Authorization": "Bearer ${TOY_KEY}"})
    assert v.verifier == "toy"  # the endpoint's only verifier, from its answer to the empty batch
    out = v.score(samples(7))
    assert out.tolist() == [i / 10 for i in range(7)]
    assert [len(h["body"]["items"]) for h in e.scored()] == [3, 3, 1]
    assert all(h["auth"] == "Bearer s3cret" for h in e.hits)
    first = e.scored()[0]["body"]
    assert first["verifiers"] == ["toy"]
    assert first["items"][2] == {"question": "q2", "answer": "xx", "metadata": {"label": 0, "k": 2},
                                 "finish_reason": "stop", "unforced_answer": None}
    assert v.metrics() == {"remote_requests": 4, "remote_retries": 0, "remote_failed": 0}


def test_a_slow_endpoint_times_out_and_its_samples_abstain(endpoint):
    def slow(body, _):
        if body["items"]:
            time.sleep(3)
        return contract(body)

    e = endpoint(slow)
    v = build_verifier("remote", url=e.url, batch_size=2, timeout_s=0.3, retries=1, backoff_s=0.05)
    t0 = time.monotonic()
    out = v.score(samples(5))
    took = time.monotonic() - t0
    assert np.isnan(out).all()
    # the first batch tried twice (retries=1); after that the call stops waiting: the other batches abstain at once
    assert took < 2.0, took
    deadline = time.monotonic() + 5  # the server's handler threads log a request when they get to it
    while len(e.scored()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [len(h["body"]["items"]) for h in e.scored()] == [2, 2]
    assert v.metrics() == {"remote_requests": 3, "remote_retries": 1, "remote_failed": 5}
    # the next call tries again, and counts on
    v.score(samples(1))
    assert v.metrics()["remote_failed"] == 6


def test_a_flaky_endpoint_is_retried_after_its_retry_after(endpoint):
    e = endpoint(lambda body, n: (503, {"error": {"message": "busy"}}, {"Retry-After": "0"})
                 if n in (1, 2) else contract(body))
    v = build_verifier("remote", url=e.url, retries=2, backoff_s=5.0)  # Retry-After 0 wins over the backoff
    t0 = time.monotonic()
    assert v.score(samples(4)).tolist() == [0.0, 0.1, 0.2, 0.3]
    assert time.monotonic() - t0 < 2.0
    assert v.metrics() == {"remote_requests": 4, "remote_retries": 2, "remote_failed": 0}
    # out of retries: the samples abstain, with the endpoint's own message in the warning
    e2 = endpoint(lambda body, n: (503, {"error": {"message": "busy"}}, {}) if n else contract(body))
    v2 = build_verifier("remote", url=e2.url, retries=1, backoff_s=0.01)
    assert np.isnan(v2.score(samples(2))).all() and v2.metrics()["remote_failed"] == 2


def test_a_batch_too_large_for_the_endpoint_is_split(endpoint):
    e = endpoint(lambda body, n: (413, {"error": {"message": "too many"}}, {}) if len(body["items"]) > 2
                 else contract(body))
    v = build_verifier("remote", url=e.url, batch_size=5)
    assert v.score(samples(5)).tolist() == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert [len(h["body"]["items"]) for h in e.scored()] == [5, 2, 3, 1, 2]


def test_malformed_answers_abstain_and_are_counted(endpoint):
    def broken(body, n):
        items = body["items"]
        if not items:
            return contract(body)
        if len(items) == 3:  # one verification short: the whole request is unusable
            return 200, {"data": [{"scores": {"toy": 0.5}}] * 2}, {}
        if len(items) == 2:  # per item: outside [0, 1], a string, the verifier missing; null is an abstention
            return 200, {"data": [{"scores": {"toy": 1.5}}, {"scores": {"toy": "0.3"}}]}, {}
        return 200, {"data": [{"scores": {"other": 0.2}}] if items[0]["question"] == "q0" else
                     [{"scores": {"toy": None}}]}, {}

    e = endpoint(broken)
    v = build_verifier("remote", url=e.url, batch_size=3, retries=0)
    assert np.isnan(v.score(samples(3))).all()
    assert v.metrics()["remote_failed"] == 3
    v.batch_size = 2
    assert np.isnan(v.score(samples(2))).all() and v.metrics()["remote_failed"] == 5
    v.batch_size = 1
    assert np.isnan(v.score(samples(2))).all()
    assert v.metrics()["remote_failed"] == 6  # q0's missing verifier counts; q1's null is the verifier abstaining
    e2 = endpoint(lambda body, n: contract(body) if not body["items"] else (200, "<html>oops</html>", {}))
    v2 = build_verifier("remote", url=e2.url, retries=3)
    assert np.isnan(v2.score(samples(2))).all()
    assert v2.metrics() == {"remote_requests": 2, "remote_retries": 0, "remote_failed": 2}  # not JSON: no retry


@pytest.mark.parametrize("answer, message", [
    (lambda b, n: (200, {"ok": True}, {}), r"the answer to an empty batch is \{\"ok\": true\}, not \{\"data\": \[\]\}"),
    (lambda b, n: (200, "<html/>", {}), r"the answer is not JSON"),
    (lambda b, n: (404, {"detail": "Not Found"}, {}), r"HTTP 404: Not Found; expected softverify serve's /v1/verify"),
    (lambda b, n: (401, {"error": {"message": "bad key"}}, {}), r"HTTP 401: bad key; send a key with params.headers"),
    (lambda b, n: (200, {"data": [], "verifiers": ["a", "b"]}, {}),
     r"it serves verifiers \['a', 'b'\]; set params.verifier to the one to use"),
    (lambda b, n: (200, {"data": []}, {}), r"it does not list its verifiers; set params.verifier"),
])
def test_a_wrong_endpoint_is_refused_when_built(endpoint, answer, message):
    e = endpoint(answer)
    with pytest.raises(ValueError, match=r"remote verifier url='http://127\.0\.0\.1:\d+/score': " + message):
        build_verifier("remote", url=e.url, retries=0)


def test_an_unreachable_url_is_one_line_before_ray_starts():
    """check_specs (the trainer's preflight) with the default retries and backoff."""
    import ray

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    spec = VerifierSpec(kind="remote", name="wm", params={"url": url})
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as info:
        check_specs([spec])
    assert time.monotonic() - t0 < 3.0
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"verifiers.0 ('wm', kind 'remote'): remote verifier url='{url}/v1/verify': cannot connect")
    assert msg.endswith("cannot connect ([Errno 111] Connection refused) (after 3 attempts); is `softverify serve "
                        "--verify-only` running there?"), msg
    assert not ray.is_initialized()


@pytest.mark.parametrize("params, message", [
    ({}, r"missing 1 required keyword-only argument: 'url'"),
    ({"url": "127.0.0.1:8000"}, r"url='127.0.0.1:8000' is not an http\(s\) URL with a host"),
    ({"url": "http://x", "batch_size": 0}, r"batch_size=0: expected an integer >= 1"),
    ({"url": "http://x", "timeout_s": "fast"}, r"timeout_s='fast' is not a number"),
    ({"url": "http://x", "headers": ["Authorization"]}, r"headers=\['Authorization'\] is not a mapping"),
    ({"url": "http://x", "headers": {"Authorization": "Bearer ${NO_SUCH_VAR_XYZ}"}},
     r"header 'Authorization' names \$NO_SUCH_VAR_XYZ, which is not set"),
])
def test_bad_params_name_the_value(params, message):
    with pytest.raises(ValueError, match=message):
        build_verifier("remote", **params)


def test_verify_only_serve_config_and_its_mistakes_before_ray_starts(tmp_path):
    """``serve --verify-only`` takes no model; a verifier that cannot be built is one line
    before Ray starts, as in training."""
    import ray

    from softverify.cli import build_parser
    from softverify.platform.serve.app import app_builder, load_serve_config, serve_forever
    from softverify.platform.serve.cli import config_from_args

    args = build_parser().parse_args(["serve", "--verify-only", "--set", "verifiers=[{kind: hard, name: h}]"])
    cfg = config_from_args(args)
    assert cfg.verify_only and cfg.model is None and [v.name for v in cfg.verifiers] == ["h"]
    app = app_builder({"verify_only": True, "verifiers": [{"kind": "hard"}]})  # the RayService entry point
    assert app._bound_deployment.name == "VerifierServer"  # Serve has no public getter for it
    for raw, message in [({}, "model is required"), ({"verify_only": True, "model": "m"}, "verify_only serves no model"),
                         ({"verify_only": True, "verifiers": []}, "verify_only with no verifiers would serve nothing")]:
        with pytest.raises(ConfigError, match=message):
            load_serve_config(raw)
    missing = tmp_path / "no_wm"
    cfg = load_serve_config({"verify_only": True, "verifiers": [{"kind": "world_model", "name": "wm",
                                                                 "params": {"model_dir": str(missing)}}]})
    with pytest.raises(ConfigError, match=r"^verifiers.0 \('wm', kind 'world_model'\): .*no_wm"):
        serve_forever(cfg)
    assert not ray.is_initialized()
