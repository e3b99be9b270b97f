"""Run softverify commands on a Ray cluster through the Ray Jobs API.

Why a class of our own around :class:`ray.job_submission.JobSubmissionClient`: the raw
client speaks in ``ConnectionError`` and ``RuntimeError('... 404 ...')``, streams logs
through an async generator and knows nothing of this project. :class:`JobsClient` turns
those into :class:`JobsError` messages that name the bad address or job id and say what to
do, follows logs synchronously, and maps a finished job to a process exit code, so the CLI
(:mod:`softverify.platform.jobs.cli`) stays a thin shell and tests can drive a real cluster
without argparse.

Jobs run ``python -m softverify.cli ...`` in a runtime env whose ``working_dir`` is this
project by default: Ray uploads the directory, the driver starts in it, and ``python -m``
imports the uploaded code first, so the cluster runs what you have locally even when its
image holds an older softverify (or none, as long as the dependencies are there).
"""
from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from softverify.infra.cluster import auth_hint

DEFAULT_ADDRESS = "http://127.0.0.1:8265"

# Files never worth shipping to the cluster: run outputs, model weights, environments.
# Ray also skips .git and what the project's .gitignore lists.
DEFAULT_EXCLUDES = [
    ".venv", "__pycache__", "*.egg-info", ".pytest_cache", ".hypothesis",
    "runs/", "outputs/", "build/", "*.safetensors", "*.gguf", "*.bin", "*.pt",
]

# Exit code of `softverify submit` for a job someone stopped: 128 + SIGTERM, the code a
# shell reports for a process ended the way `ray job stop` ends a driver.
STOPPED_EXIT_CODE = 143


class JobsError(ValueError):
    """A problem the user can fix (bad address, unknown job id, empty command)."""


class JobNotFoundError(JobsError):
    """The cluster has no job with the given id."""


class JobTimeoutError(JobsError, TimeoutError):
    """A job did not finish within the time the caller allowed."""


def resolve_address(address: str | None = None) -> str:
    """``--address``, else ``$RAY_ADDRESS``, else the local dashboard (:data:`DEFAULT_ADDRESS`)."""
    addr = (address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS).strip()
    if not addr:
        raise JobsError("empty Ray address: expected the dashboard URL, e.g. http://127.0.0.1:8265")
    return addr


def project_dir() -> Path | None:
    """The source tree this softverify was imported from, when it is a project checkout.

    ``None`` for a plain ``pip install`` (site-packages has no pyproject.toml): then there
    is nothing sensible to upload and the cluster image's softverify is used.
    """
    import softverify

    root = Path(softverify.__file__).resolve().parents[1]  # the package's own location, wherever this module sits
    return root if (root / "pyproject.toml").is_file() and (root / "softverify").is_dir() else None


def parse_env_vars(items: Iterable[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` -> dict; the value may be empty, the key may not."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise JobsError(f"bad environment variable {item!r}: expected KEY=VALUE, e.g. WANDB_MODE=offline")
        out[key.strip()] = value
    return out


def build_runtime_env(
    working_dir: str | Path | None = None,
    pip: Sequence[str] = (),
    env_vars: Mapping[str, str] | None = None,
    excludes: Sequence[str] = (),
) -> dict[str, Any]:
    """A Ray runtime env: the code to upload, extra pip requirements, environment variables."""
    env: dict[str, Any] = {}
    if working_dir is not None:
        wd = Path(working_dir).expanduser()
        if not wd.is_dir():
            raise JobsError(f"working dir {str(wd)!r} is not a directory: expected the project folder to upload")
        env["working_dir"] = str(wd.resolve())
        env["excludes"] = list(DEFAULT_EXCLUDES) + list(excludes)
    if pip:
        env["pip"] = list(pip)
    if env_vars:
        env["env_vars"] = dict(env_vars)
    return env


def softverify_entrypoint(command: Sequence[str], known_commands: Iterable[str] | None = None,
                          subdir: str | None = None) -> str:
    """The shell entrypoint that runs ``softverify COMMAND ...`` on the cluster.

    ``command`` is the argv after ``softverify`` (a leading ``softverify`` is tolerated).
    With ``known_commands`` the sub-command is checked here, so a typo fails in a second
    instead of after the upload and the cluster's start-up. ``subdir`` (a folder of the
    working dir) is where the command starts, so relative paths resolve as they did where
    ``submit`` ran.
    """
    argv = list(command)
    if argv and argv[0] == "softverify":
        argv = argv[1:]
    if not argv:
        raise JobsError("no command to run: expected a softverify command, e.g. "
                        "`softverify submit -- train --config my.yaml`")
    if known_commands is not None:
        known = sorted(known_commands)
        if argv[0] not in known:
            raise JobsError(f"unknown softverify command {argv[0]!r}: expected one of {', '.join(known)}")
    run = shlex.join(["python", "-m", "softverify.cli", *argv])
    return f"cd {shlex.quote(subdir)} && {run}" if subdir else run


def exit_code_for(status: str, driver_exit_code: int | None = None) -> int:
    """Process exit code for a finished job: 0 succeeded, the driver's own code (else 1)
    for a failure, :data:`STOPPED_EXIT_CODE` for a stopped job."""
    status = str(status)
    if status == "SUCCEEDED":
        return 0
    if status == "STOPPED":
        return STOPPED_EXIT_CODE
    if status == "FAILED":
        return driver_exit_code if driver_exit_code else 1
    raise JobsError(f"job status {status!r} is not final: expected SUCCEEDED, FAILED or STOPPED")


class _AuthChecked:
    """Ray's JobSubmissionClient whose every call turns Ray's AuthenticationError (a
    30-line traceback) into one :class:`JobsError` line saying what to set."""

    def __init__(self, client, address: str):
        self._client, self._address = client, address

    def __getattr__(self, name: str):
        from ray.exceptions import AuthenticationError

        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*a, **kw):
            try:
                return attr(*a, **kw)
            except AuthenticationError:
                raise JobsError(auth_hint(self._address)) from None
        return call


class JobsClient:
    """The Ray Jobs API of one cluster, with errors a user can act on."""

    def __init__(self, address: str | None = None):
        from ray.exceptions import AuthenticationError
        from ray.job_submission import JobSubmissionClient

        self.address = resolve_address(address)
        try:
            self._client = _AuthChecked(JobSubmissionClient(self.address), self.address)
        except AuthenticationError:
            raise JobsError(auth_hint(self.address)) from None
        except ConnectionError as e:
            raise JobsError(
                f"cannot reach the Ray Jobs API at {self.address!r}: expected a Ray cluster's dashboard "
                "address (start one with `ray start --head`, or pass --address / set RAY_ADDRESS)") from e
        except ValueError as e:  # malformed address; Ray's message names it
            raise JobsError(f"bad Ray address {self.address!r}: {e}") from e

    # --- one call each -------------------------------------------------------------------
    def _call(self, job_id: str, fn: Callable[[str], Any]) -> Any:
        if not job_id or not job_id.strip():
            raise JobsError("empty job id: expected an id such as raysubmit_AbC123 (see `softverify job list`)")
        try:
            return fn(job_id)
        except RuntimeError as e:
            if "404" in str(e) or "does not exist" in str(e):
                raise JobNotFoundError(
                    f"no job {job_id!r} on {self.address}: expected an id that `softverify job list` shows") from e
            raise JobsError(f"Ray Jobs API at {self.address} refused the request for {job_id!r}: {e}") from e
        except ConnectionError as e:
            raise JobsError(f"lost the Ray Jobs API at {self.address!r}: {e}") from e

    def submit(self, entrypoint: str, runtime_env: dict[str, Any] | None = None, *,
               submission_id: str | None = None, num_cpus: float | None = None,
               num_gpus: float | None = None, metadata: dict[str, str] | None = None) -> str:
        """Start ``entrypoint`` on the cluster; returns the submission id."""
        if not entrypoint or not entrypoint.strip():
            raise JobsError("empty entrypoint: expected a command to run on the cluster")
        try:
            return self._client.submit_job(
                entrypoint=entrypoint, runtime_env=runtime_env or None, submission_id=submission_id,
                entrypoint_num_cpus=num_cpus, entrypoint_num_gpus=num_gpus, metadata=metadata)
        except RuntimeError as e:
            raise JobsError(f"the cluster at {self.address} rejected the job: {e}") from e
        except ConnectionError as e:
            raise JobsError(f"lost the Ray Jobs API at {self.address!r} while submitting: {e}") from e

    def status(self, job_id: str) -> str:
        """PENDING, RUNNING, STOPPED, SUCCEEDED or FAILED."""
        return str(self._call(job_id, self._client.get_job_status).value)

    def info(self, job_id: str):
        """Ray's ``JobDetails`` (status, message, entrypoint, times, driver exit code)."""
        return self._call(job_id, self._client.get_job_info)

    def logs(self, job_id: str) -> str:
        """Everything the job's driver printed so far."""
        return self._call(job_id, self._client.get_job_logs)

    def stop(self, job_id: str) -> bool:
        """Ask the cluster to stop the job; False if it had already finished."""
        return bool(self._call(job_id, self._client.stop_job))

    def node_hostnames(self) -> list[str]:
        """Hostnames of the cluster's alive nodes (the dashboard's node list)."""
        resp = self._client._do_request("GET", "/nodes?view=hostNameList")
        resp.raise_for_status()
        data = resp.json()["data"]  # the dashboard writes its keys google-style (hostNameList)
        return list(data.get("hostNameList", data.get("host_name_list")))

    def list(self) -> list:
        """All jobs the cluster knows, oldest first."""
        jobs = self._client.list_jobs()
        return sorted(jobs, key=lambda j: j.start_time or 0)

    # --- waiting -------------------------------------------------------------------------
    def wait(self, job_id: str, timeout: float | None = None, poll_s: float = 0.5) -> str:
        """Poll until the job is finished; returns its final status.

        Raises :class:`JobTimeoutError` if ``timeout`` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status(job_id)
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise JobTimeoutError(f"job {job_id!r} still {status} after {timeout:.0f} s: expected it to finish by then")
            time.sleep(poll_s)

    def follow(self, job_id: str, write: Callable[[str], Any] | None = None) -> str:
        """Stream the job's logs to ``write`` (default stdout) until it ends; returns its final status."""
        out = write or _stdout_write
        self.status(job_id)  # unknown id -> JobNotFoundError before opening a websocket

        async def _tail() -> None:
            async for chunk in self._client.tail_job_logs(job_id):
                out(chunk)

        asyncio.run(_tail())
        return self.wait(job_id)  # the stream can close a moment before the status flips

    def exit_code(self, job_id: str) -> int:
        """:func:`exit_code_for` of a finished job."""
        info = self.info(job_id)
        return exit_code_for(info.status.value, getattr(info, "driver_exit_code", None))


def _stdout_write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
