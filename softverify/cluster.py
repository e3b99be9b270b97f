"""The one way softverify connects to Ray: join a cluster, or start a local one.

Training, sweeps and serving all come here, so they agree on how an address is found
(the argument, else ``$RAY_ADDRESS``) and on how a local Ray is started.
"""
from __future__ import annotations

import os
import socket


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a process group's rendezvous, a test server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(address: str | None = None, num_cpus: int | None = None) -> str:
    """Join ``address`` (or ``$RAY_ADDRESS``); else start a local Ray with ``num_cpus``
    logical CPUs (default: this machine's). Returns the address joined, or ``"local"``.
    A no-op when Ray is already initialised in this process (a test's cluster, a Tune trial).

    The local Ray keeps more idle task workers than its default soft limit (the CPU count):
    a run's six actors already exceed that on a small machine, so each step's small tasks
    (merge, split, select) would start a fresh Python process (~3 s of CPU each; measured:
    a 2-core step went from 11.5 to 23-26 s)."""
    import ray

    if ray.is_initialized():
        return "existing"
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=True)
        return address
    ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=True,
             _system_config={"num_workers_soft_limit": 64})
    return "local"
