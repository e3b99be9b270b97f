"""The one way softverify connects to Ray: join a cluster, or start a local one.

Training, sweeps and serving all come here, so they agree on how an address is found
(the argument, else ``$RAY_ADDRESS``) and on how a local Ray is started.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path

#: How long the token-auth probe waits for the cluster's GCS before leaving it to ray.init.
AUTH_PROBE_TIMEOUT_S = 5.0


class ClusterAuthError(ValueError):
    """The Ray cluster wants a token this client did not send (or sent a wrong one)."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a process group's rendezvous, a test server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cgroup_cpu_limit(cpu_max: str | None = None, cfs_quota: str | None = None,
                     cfs_period: str | None = None) -> float | None:
    """CPUs a cgroup quota allows, from cgroup v2's ``cpu.max`` text (``"200000 100000"``,
    ``"max 100000"``) or v1's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; None when
    unlimited or unknown."""
    try:
        if cpu_max is not None:
            quota, _, period = cpu_max.strip().partition(" ")
            return None if quota == "max" else int(quota) / int(period or 100000)
        if cfs_quota is not None and int(cfs_quota) > 0:
            return int(cfs_quota) / int(cfs_period or 100000)
    except ValueError:
        return None
    return None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def usable_cpus() -> int:
    """The cores this process can really use: its CPU affinity, capped by a cgroup CPU
    quota (a container's ``--cpus``, a pod's limit), rounded down, at least 1.

    ``os.cpu_count()`` counts the host's cores, which a container may not use; a local Ray
    advertising them would schedule more work than the cores can run."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cpu_max=_read("/sys/fs/cgroup/cpu.max"))
    if limit is None:
        limit = cgroup_cpu_limit(cfs_quota=_read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
                                 cfs_period=_read("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
    if limit is not None:
        n = min(n, int(limit + 1e-9))
    return max(1, n)


def connect(address: str | None = None, num_cpus: int | None = None) -> str:
    """Join ``address`` (or ``$RAY_ADDRESS``); else start a local Ray with ``num_cpus``
    logical CPUs (default: :func:`usable_cpus`). Returns the address joined, or ``"local"``.
    A no-op when Ray is already initialised in this process (a test's cluster, a Tune trial).

    The local Ray keeps more idle task workers than its default soft limit (the CPU count):
    a run's six actors already exceed that on a small machine, so each step's small tasks
    (merge, split, select) would start a fresh Python process (~3 s of CPU each; measured:
    a 2-core step went from 11.5 to 23-26 s)."""
    import ray

    from softverify.infra import quiet

    if ray.is_initialized():
        return "existing"
    # a quiet run (softverify.infra.quiet; the CLI's default) hands its library switches to every
    # worker through the job's runtime_env and keeps Ray's own INFO/WARNING lines in the driver off
    extra = {"runtime_env": quiet.runtime_env()} if quiet.enabled() else {}
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        if needs_token(address):
            raise ClusterAuthError(auth_hint(address))
        ray.init(address=address, log_to_driver=True, logging_level=quiet.ray_logging_level(), **extra)
        return address
    ray.init(num_cpus=num_cpus or usable_cpus(), include_dashboard=False, log_to_driver=True,
             logging_level=quiet.ray_logging_level(), _system_config={"num_workers_soft_limit": 64}, **extra)
    return "local"


def auth_hint(address: str) -> str:
    """One line saying what to set when a cluster refuses this client's credentials.

    Ray 2.60's ``ray start --head`` turns token auth on when ``RAY_AUTH_MODE=token`` or a
    token file (``~/.ray/auth_token``, written by any earlier local ``ray.init()``) exists,
    while a client connecting to an explicit address keeps auth off unless told."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        return (f"the Ray cluster at {address!r} rejected this client's token: set RAY_AUTH_TOKEN (or "
                f"~/.ray/auth_token) to the cluster's token (`ray get-auth-token` on the head prints it), then retry")
    if (Path.home() / ".ray" / "auth_token").is_file() or os.environ.get("RAY_AUTH_TOKEN"):
        return (f"the Ray cluster at {address!r} requires token authentication and this client sent none: set "
                f"RAY_AUTH_MODE=token (the token in RAY_AUTH_TOKEN or ~/.ray/auth_token is then sent; if the "
                f"cluster's differs, `ray get-auth-token` on the head prints it), then retry")
    return (f"the Ray cluster at {address!r} requires token authentication and this client sent none: set "
            f"RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=<the cluster's token> (`ray get-auth-token` on the head "
            f"prints it; or put it in ~/.ray/auth_token), then retry")


@contextlib.contextmanager
def _stderr_silenced():
    """fd 2 to /dev/null: Ray's C++ client logs a warning line per refused attempt there."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def needs_token(address: str, timeout_s: float = AUTH_PROBE_TIMEOUT_S) -> bool:
    """Whether the GCS at ``address`` (host:port) refuses this client's credentials.

    Why probe before ``ray.init``: refused, ``ray.init`` retries for ~20 s, prints a C++
    warning per try and ends in a 60-line ``ConnectionError`` traceback. One GCS client
    (what ``ray.init`` builds first) answers in under a second. Anything but an
    authentication refusal -- success, another error, no answer within ``timeout_s`` -- is
    left to ``ray.init`` and its own messages. ``ray://`` (Ray Client) and ``auto`` are not
    probed."""
    if "://" in address or address in ("auto", "local"):
        return False
    try:
        from ray._raylet import GcsClient
        from ray.exceptions import AuthenticationError
    except ImportError:  # another Ray: no probe, ray.init speaks for itself
        return False
    refused: list[bool] = []

    def probe() -> None:
        try:
            GcsClient(address=address)
        except AuthenticationError:
            refused.append(True)
        except Exception:  # noqa: BLE001  (unreachable, bad address...: ray.init reports those)
            pass

    t = threading.Thread(target=probe, name="softverify-auth-probe", daemon=True)
    with _stderr_silenced():
        t.start()
        t.join(timeout_s)
    return bool(refused)
