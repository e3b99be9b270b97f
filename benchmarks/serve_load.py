"""Bounded load test of ``softverify serve``: latency and throughput at N concurrent clients.

Starts ``softverify serve MODEL`` on loopback (or uses ``--url``), then for each
concurrency level runs that many client threads (the real ``openai`` client) until
``--requests`` completions are done or ``--time-cap`` seconds pass, whichever first.
Reports p50/p95 latency, requests/s and completion tokens/s per level, plus
time-to-first-token of streamed requests (evidence that streaming is incremental),
and writes JSON. Loopback only; nothing leaves the machine.

    python benchmarks/serve_load.py --model smollm2 --concurrency 1 8 --requests 16 --max-tokens 32 \
        --out benchmarks/results/serve_load.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai


PAIRS = [("MYC", "CDK4"), ("GATA1", "HBG1"), ("TP53", "CDKN1A"), ("SPI1", "CEBPA"),
         ("BRCA1", "RAD51"), ("STAT5A", "BCL2L1"), ("TAL1", "KLF1"), ("RUNX1", "GFI1")]


def messages(i: int) -> list[dict[str, str]]:
    """An open question, so answers run to max_tokens: the rbio1 yes/no prompt gets a
    2-6 token answer from SmolLM2 ("No"), which measures prefill, not generation."""
    p, g = PAIRS[i % len(PAIRS)]
    return [{"role": "user", "content": f"Explain in a few sentences whether a knockdown of {p} in K562 cells "
                                        f"changes the expression of {g}."}]


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def run_level(base_url: str, model: str, api_key: str, concurrency: int, n_requests: int, time_cap: float,
              max_tokens: int) -> dict:
    lock, counter = threading.Lock(), [0]
    lat, toks, errors = [], [], []
    deadline = time.monotonic() + time_cap

    def worker():
        client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=300)
        while time.monotonic() < deadline:
            with lock:
                if counter[0] >= n_requests:
                    return
                i = counter[0]
                counter[0] += 1
            msgs = messages(i)
            t0 = time.perf_counter()
            try:
                r = client.chat.completions.create(model=model, messages=msgs, max_tokens=max_tokens, temperature=0)
            except openai.APIError as e:
                with lock:
                    errors.append(f"{type(e).__name__}: {e}"[:200])
                continue
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)
                toks.append(r.usage.completion_tokens)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    wall = time.perf_counter() - t0
    return {
        "concurrency": concurrency, "requests_ok": len(lat), "errors": len(errors), "error_samples": errors[:3],
        "wall_s": round(wall, 2), "requests_per_s": round(len(lat) / wall, 3),
        "completion_tokens_per_s": round(sum(toks) / wall, 1),
        "latency_p50_s": round(percentile(lat, 0.5), 3), "latency_p95_s": round(percentile(lat, 0.95), 3),
        "latency_mean_s": round(statistics.fmean(lat), 3) if lat else None,
        "mean_completion_tokens": round(statistics.fmean(toks), 1) if toks else None,
        "hit_time_cap": len(lat) + len(errors) < n_requests,
    }


def stream_ttft(base_url: str, model: str, api_key: str, n: int, max_tokens: int) -> dict:
    """Time to first content chunk vs total time, one streamed request at a time."""
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=300)
    ttft, total, chunks = [], [], []
    for i in range(n):
        t0 = time.perf_counter()
        first, count = None, 0
        for c in client.chat.completions.create(
                model=model, messages=messages(i),
                max_tokens=max_tokens, temperature=0, stream=True):
            if c.choices and c.choices[0].delta.content:
                count += 1
                first = first or time.perf_counter() - t0
        total.append(time.perf_counter() - t0)
        ttft.append(first if first is not None else float("nan"))
        chunks.append(count)
    return {"requests": n, "ttft_p50_s": round(percentile(ttft, 0.5), 3),
            "total_p50_s": round(percentile(total, 0.5), 3), "content_chunks_mean": statistics.fmean(chunks)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base_url: str, api_key: str, proc: subprocess.Popen | None, timeout: float) -> None:
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=5)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"softverify serve exited with {proc.returncode}")
        try:
            client.models.list()
            return
        except openai.APIError:
            time.sleep(2)
    raise TimeoutError(f"server at {base_url} not ready after {timeout} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--url", help="use a running server (e.g. http://127.0.0.1:8000/v1) instead of starting one")
    ap.add_argument("--served-model-name", default="smollm2")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--requests", type=int, default=16, help="completions per concurrency level")
    ap.add_argument("--time-cap", type=float, default=150, help="seconds per level at most")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--stream-requests", type=int, default=4)
    ap.add_argument("--serve-args", default="--no-rate-limit",
                    help="extra flags for softverify serve (the default rate limit would cap throughput)")
    ap.add_argument("--out", default="benchmarks/results/serve_load.json")
    args = ap.parse_args()

    api_key = "bench-" + os.urandom(8).hex()
    proc, base_url = None, args.url
    if base_url is None:
        port = free_port()
        base_url = f"http://127.0.0.1:{port}/v1"
        cmd = ["softverify", "serve", args.model, "--host", "127.0.0.1", "--port", str(port),
               "--served-model-name", args.served_model_name, *args.serve_args.split()]
        env = dict(os.environ, SOFTVERIFY_API_KEY=api_key, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"))
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    else:
        api_key = os.environ.get("SOFTVERIFY_API_KEY", "none")
    try:
        wait_ready(base_url, api_key, proc, timeout=300)
        startup = time.perf_counter() - t0 if proc else None
        run_level(base_url, args.served_model_name, api_key, 1, 1, 120, args.max_tokens)  # warm-up
        levels = [run_level(base_url, args.served_model_name, api_key, c, args.requests, args.time_cap,
                            args.max_tokens) for c in args.concurrency]
        try:
            stream = stream_ttft(base_url, args.served_model_name, api_key, args.stream_requests, args.max_tokens)
        except openai.APIError as e:  # keep the levels' numbers if the server dies late (e.g. host OOM)
            stream = {"error": f"{type(e).__name__}: {e}"[:300]}
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGINT)  # serve_forever shuts Serve and Ray down on Ctrl-C
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    result = {
        "model": args.model, "max_tokens": args.max_tokens, "temperature": 0, "requests_per_level": args.requests,
        "serve_args": args.serve_args, "startup_s": round(startup, 1) if startup else None,
        "levels": levels, "streaming": stream,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_at_end": os.getloadavg()},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    for lv in levels:
        print(f"c={lv['concurrency']}: {lv['requests_ok']} ok / {lv['errors']} err in {lv['wall_s']} s, "
              f"{lv['requests_per_s']} req/s, {lv['completion_tokens_per_s']} tok/s, "
              f"p50 {lv['latency_p50_s']} s, p95 {lv['latency_p95_s']} s")
    if "error" in stream:
        print(f"streaming: failed: {stream['error']}")
    else:
        print(f"streaming: TTFT p50 {stream['ttft_p50_s']} s of {stream['total_p50_s']} s total, "
              f"{stream['content_chunks_mean']} chunks/request")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
