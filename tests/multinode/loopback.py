"""A real multi-node Ray cluster on loopback: `ray start --head` plus worker nodes, each
with its own temp dir, free ports and small CPU/object-store sizes.

Teardown kills only the processes whose command line names one of this cluster's temp
dirs, and their children, by PID -- never `ray stop`, which ends every Ray instance on the
machine (other test runs', the lead's). One node can be killed alone (node-loss tests).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import psutil

OBJECT_STORE_BYTES = 300 * 1024 * 1024


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def ray_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="disabled", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               RAY_USAGE_STATS_ENABLED="0")
    return env


def procs_of(temp_dir: str) -> list[psutil.Process]:
    """The daemons whose command line names ``temp_dir``, and all their children."""
    mine = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(temp_dir in a for a in (p.info["cmdline"] or [])):
                mine.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    out: dict[int, psutil.Process] = {}
    for p in mine:
        try:
            for c in [p, *p.children(recursive=True)]:
                out[c.pid] = c
        except psutil.NoSuchProcess:
            pass
    return list(out.values())


def kill_procs(procs: list[psutil.Process], grace: float = 3.0) -> None:
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


@dataclass
class Node:
    temp_dir: str
    resources: dict[str, float]
    labels: dict[str, str]
    head: bool = False

    def kill(self, grace: float = 0.0) -> None:
        """SIGKILL (grace 0) this node's raylet, its object store and its workers."""
        procs = procs_of(self.temp_dir)
        if grace:
            kill_procs(procs, grace)
            return
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=10)


@dataclass
class LoopbackCluster:
    gcs_port: int
    dashboard_port: int | None
    nodes: list[Node] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        assert self.dashboard_port, "this cluster was started without a dashboard"
        return f"http://127.0.0.1:{self.dashboard_port}"

    def add_node(self, num_cpus: float, resources: dict[str, float] | None = None,
                 labels: dict[str, str] | None = None) -> Node:
        """`ray start --address` a worker node with its own temp dir and ports."""
        node = Node(tempfile.mkdtemp(prefix="svmn", dir="/tmp"), resources or {}, labels or {})
        self.nodes.append(node)
        nm, om, agent, agent_grpc, env_agent, metrics = free_ports(6)
        _ray_start([f"--address={self.address}", f"--temp-dir={node.temp_dir}",
                    f"--node-manager-port={nm}", f"--object-manager-port={om}",
                    f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
                    f"--runtime-env-agent-port={env_agent}", f"--metrics-export-port={metrics}",
                    *_sizes(num_cpus, node.resources, node.labels)])
        return node

    def wait_for_nodes(self, n: int, timeout: float = 120) -> None:
        """Block until ``n`` nodes are alive (the driver must be connected)."""
        import ray

        t = time.monotonic()
        while sum(x["Alive"] for x in ray.nodes()) < n:
            if time.monotonic() - t > timeout:
                raise AssertionError(f"only {sum(x['Alive'] for x in ray.nodes())} of {n} Ray nodes came up")
            time.sleep(0.5)

    def ensure_nodes(self, n: int, num_cpus: float, resources: dict[str, float], labels: dict[str, str],
                     timeout: float = 120) -> None:
        """At least ``n`` alive nodes, adding workers of the given shape when fewer are: a
        module-scoped cluster outlives a test that killed a node and failed before re-forming
        it, and the next test must not inherit that (it would fail for the first one's reason)."""
        import ray

        alive = sum(x["Alive"] for x in ray.nodes())
        for _ in range(n - alive):
            self.add_node(num_cpus, resources, labels)
        self.wait_for_nodes(n, timeout)

    def node_ids(self) -> dict[str, str]:
        """Node id per node, found by the temp dir it was started with (``ray.nodes()``)."""
        import ray

        out = {}
        for x in ray.nodes():
            if not x["Alive"]:
                continue
            for n in self.nodes:
                if n.temp_dir in str(x.get("ObjectStoreSocketName", "")) or n.temp_dir in str(x.get("RayletSocketName", "")):
                    out[n.temp_dir] = x["NodeID"]
        return out

    def shutdown(self) -> None:
        for n in reversed(self.nodes):
            kill_procs(procs_of(n.temp_dir))
        for n in self.nodes:
            shutil.rmtree(n.temp_dir, ignore_errors=True)


def _sizes(num_cpus: float, resources: dict, labels: dict) -> list[str]:
    args = [f"--num-cpus={num_cpus}", "--num-gpus=0", f"--object-store-memory={OBJECT_STORE_BYTES}",
            "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    if resources:
        args.append(f"--resources={json.dumps(resources)}")
    if labels:
        args.append("--labels=" + ",".join(f"{k}={v}" for k, v in labels.items()))
    return args


def _ray_start(args: list[str]) -> None:
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", *args]
    proc = subprocess.run(cmd, env=ray_env(), capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        raise RuntimeError(f"ray start failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def start_head(num_cpus: float, resources: dict[str, float] | None = None, labels: dict[str, str] | None = None,
               dashboard: bool = False) -> LoopbackCluster:
    """`ray start --head` on 127.0.0.1 with free ports and its own temp dir; the dashboard
    (needed by Ray Jobs) only when asked: it costs a few hundred MB."""
    gcs, dash, client, nm, om, agent, agent_grpc, env_agent, metrics = free_ports(9)
    head = Node(tempfile.mkdtemp(prefix="svmn", dir="/tmp"), resources or {}, labels or {}, head=True)
    cluster = LoopbackCluster(gcs, dash if dashboard else None, [head])
    args = ["--head", f"--port={gcs}", f"--temp-dir={head.temp_dir}", f"--ray-client-server-port={client}",
            f"--node-manager-port={nm}", f"--object-manager-port={om}", f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={env_agent}",
            f"--metrics-export-port={metrics}", *_sizes(num_cpus, head.resources, head.labels),
            # the GCS declares a silent node dead after 5 missed health checks: every 1 s here
            # (Ray's default 3 s), so node-loss tests wait ~5 s, not ~15 s, for what they test
            "--system-config=" + json.dumps({"health_check_period_ms": 1000})]
    args += (["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}"]
             if dashboard else ["--include-dashboard=false"])
    try:
        _ray_start(args)
    except BaseException:
        cluster.shutdown()
        raise
    return cluster
