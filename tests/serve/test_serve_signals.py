"""`softverify serve` as Docker, systemd and Kubernetes run it: a process that gets SIGTERM.

The server runs as a real subprocess on loopback with a tiny model and its own Ray temp
dir (RAY_TMPDIR), so every Ray process it starts can be told apart from other runs': the
processes of its tree, snapshot while it serves, and any process whose command line names
that temp dir. Nothing here kills by name.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests

from softverify.infra.cluster import free_port

REPO = Path(__file__).resolve().parents[2]


class Server:
    """``softverify serve`` in a subprocess, its output collected line by line."""

    def __init__(self, model_dir: Path, temp_dir: str):
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(RAY_TMPDIR=temp_dir, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "softverify.cli", "serve", str(model_dir), "--port", str(self.port),
             "--num-cpus", "0.5", "--torch-threads", "1"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_healthy(self, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"serve exited with {self.proc.returncode}:\n{self.output[-4000:]}"
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        pytest.fail(f"serve not healthy after {timeout_s} s:\n{self.output[-4000:]}")

    def tree(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def stop(self, sig: int, timeout_s: float = 90) -> int:
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"serve still running {timeout_s} s after signal {sig}:\n{self.output[-4000:]}")
        self._reader.join(timeout=10)
        return rc


def _alive(procs: list[psutil.Process]) -> list[str]:
    """The processes of ``procs`` still running (the same process: pid and start time)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            continue
    return out


def _naming(temp_dir: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(temp_dir in arg for arg in (p.info["cmdline"] or [])):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _end(procs: list[psutil.Process]) -> None:
    """Clean up after a failed test: only the processes this test's server started."""
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_stops_serve_cleanly_and_leaves_no_ray_process(tiny_model_dir, sig):
    """SIGTERM (a container's stop) and SIGINT (Ctrl-C): exit 0 after one line, no stack
    dump, no access-log line for the /health probes, no process of its Ray left."""
    temp_dir = tempfile.mkdtemp(prefix="svsig", dir="/tmp")  # short: Ray's socket paths live under it
    server = Server(tiny_model_dir, temp_dir)
    tree: list[psutil.Process] = []
    try:
        server.wait_healthy()
        for _ in range(5):  # what a load balancer or kubelet does
            assert requests.get(f"http://127.0.0.1:{server.port}/health", timeout=5).status_code == 200
        time.sleep(1)  # let any access-log line reach the driver's output
        tree = server.tree()
        names = " ".join(" ".join(p.cmdline()) for p in tree)
        assert "raylet" in names and "gcs_server" in names, names  # the tree holds the Ray it started
        rc = server.stop(sig)
        out = server.output
        assert rc == 0, out[-4000:]
        # neither a Python traceback nor the stack dump Ray's C++ signal handler prints
        assert "Traceback" not in out and "received at time=" not in out, out[-4000:]
        mine = [line for line in server.lines if line.startswith("softverify serve:")]
        assert mine[-1] == f"softverify serve: {signal.Signals(sig).name} received; shutting down", out[-4000:]
        assert not [line for line in server.lines if "GET /health" in line], out[-4000:]  # probes not logged
        # quiet by default: no Ray start-up notices, no INFO lines of Serve's controller, proxy or driver logger
        noise = [line for line in server.lines if "Started a local Ray instance" in line
                 or "Started Serve in namespace" in line
                 or (("ServeController pid=" in line or "ProxyActor pid=" in line) and " INFO " in line)]
        assert not noise, "\n".join(noise)
        deadline = time.monotonic() + 15  # the raylet's children can outlive it by a moment
        while (left := _alive(tree) + _alive(_naming(temp_dir))) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not left, "processes of the server's Ray session left behind:\n" + "\n".join(left)
        print(f"\nserve output: {len(server.lines)} lines, {len(mine)} the product's")
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
        _end(tree + _naming(temp_dir))
        shutil.rmtree(temp_dir, ignore_errors=True)
