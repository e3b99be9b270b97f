"""`softverify serve` under overload on loopback: bounded, refusing politely, never crashing.

The real CLI serves the tiny model with a deliberately small capacity (1 replica, 2 requests
in flight, 2 queued at the proxy, a 2 req/s bucket with burst 6). 16 concurrent clients x 3
requests (bounded at 60 s) then get 200, 429 (rate limit, with ``Retry-After``) or 503
(proxy queue full) - nothing else; afterwards the server is healthy, answers again, its
memory has not run away, it listens on 127.0.0.1 only, and the API key never appears in
its output.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import psutil
import pytest
import requests

from relutil import REPO, cli_env, descendants, kill_tree, wait_for
from softverify.infra.cluster import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

KEY = "sk-reliability-" + "k" * 24
CLIENTS, PER_CLIENT = 16, 3


def _rss(pid: int) -> int:
    total = 0
    for p in [psutil.Process(pid)] + descendants(pid):
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def test_overload_gets_429_503_and_the_server_survives(tiny_model_dir, tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    env = dict(cli_env(), SOFTVERIFY_API_KEY=KEY)
    args = [sys.executable, "-m", "softverify.cli", "serve", str(tiny_model_dir), "--port", str(port),
            "--served-model-name", "tiny", "--num-cpus", "0.5", "--torch-threads", "1", "--max-ongoing-requests", "2",
            "--set", "replicas.max_queued_requests=2", "--rate-limit", "2", "--burst", "6", "--max-tokens", "16"]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Does MYC regulate CDK4?"}], "max_tokens": 16}
    tree: list = []
    try:
        def up():
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                return requests.get(f"{base}/v1/models", headers=headers, timeout=5).status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, 400, "softverify serve to answer", interval=1.0)
        tree = descendants(proc.pid)
        # binds loopback only
        listening = [c for p in [psutil.Process(proc.pid)] + tree for c in _conns(p)
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
        assert listening and {c.laddr.ip for c in listening} == {"127.0.0.1"}, listening
        rss0 = _rss(proc.pid)

        results: list[tuple[int, str | None]] = []
        lock = threading.Lock()
        t_end = time.monotonic() + 60

        def client():
            with requests.Session() as s:
                for _ in range(PER_CLIENT):
                    if time.monotonic() > t_end:
                        return
                    try:
                        r = s.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=60)
                        out = (r.status_code, r.headers.get("Retry-After"))
                    except requests.RequestException as e:
                        out = (-1, type(e).__name__)
                    with lock:
                        results.append(out)

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        elapsed = time.monotonic() - t0
        assert not any(t.is_alive() for t in threads) and elapsed < 90
        codes = Counter(c for c, _ in results)
        print(f"overload: {len(results)} requests in {elapsed:.1f}s -> {dict(codes)}")
        assert set(codes) <= {200, 429, 503}, results  # no 500s, no dropped connections
        assert codes[200] >= 1 and codes[429] + codes[503] >= 1, codes
        # every refusal says when to come back: 429 from the rate limiter, 503 from the full proxy queue
        assert all(ra is not None and int(ra) >= 1 for c, ra in results if c in (429, 503)), results

        # still healthy: answers again once the bucket refills, memory bounded
        assert proc.poll() is None
        time.sleep(3)
        r = requests.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=120)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] is not None
        growth = _rss(proc.pid) - rss0
        assert growth < 500 * 2**20, f"server processes grew by {growth / 2**20:.0f} MiB under load"
    finally:
        tree = tree or descendants(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # serve_forever shuts Serve and Ray down on Ctrl-C
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        kill_tree([p for p in tree if p.is_running()])
    text = log.read_text()
    assert KEY not in text, "the API key leaked into the server's output"
    assert "Traceback" not in text, text[-3000:]


def _conns(p: psutil.Process):
    try:
        return p.net_connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
