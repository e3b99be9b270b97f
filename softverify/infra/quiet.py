"""Quiet logs: the terminal of ``softverify train`` (and ``sweep``) carries the product's own
lines, the progress bar and errors; library chatter is off unless ``--verbose``.

Why this exists: a two-step run printed ~15 lines of which 3 were the product's (Ray's
token-auth notice, DeepSpeed's "Setting accelerator to CPU" and "shm ... built" per learner
rank, transformers' "Loading weights" / "Writing model shards" bars from the actors, which
land in the middle of the GRPO bar). Every switch used here is the library's own:

- environment variables read at import (:data:`LIBRARY_ENV`): huggingface_hub's, transformers'
  and datasets' progress-bar and verbosity switches. The driver sets them in its own
  environment before it imports those libraries (a local Ray's workers inherit it) and hands
  them to a cluster's workers as the job's Ray ``runtime_env``;
- in each process (:func:`apply`): transformers' ``set_verbosity_error()`` and
  ``disable_progress_bar()``, datasets' ``disable_progress_bars()``, huggingface_hub's, a
  level filter on DeepSpeed's logger (installed before ``import deepspeed``, whose
  accelerator probe warns during the import and whose ``create_logger`` resets the level),
  and Python warnings raised by library code. Ray workers run it through the job's
  ``worker_process_setup_hook`` (:func:`setup_worker`) and again in each actor's constructor,
  since a Ray that was already running (a test's, a Tune trial's) has no such hook;
- in the driver: Ray's own logger level (``ray.init(logging_level=...)``).

Errors still show everywhere: an actor's exception reaches the driver as a Ray error, and
each switch keeps its library's ERROR level. The product's own warnings are printed by the
product, not through these loggers.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from typing import Any, Iterator

#: set to "1" in every process of a quiet run (the driver's environment and the job's runtime_env)
QUIET_ENV_VAR = "SOFTVERIFY_QUIET"

#: the libraries' own environment switches, read when each library is imported
LIBRARY_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # huggingface_hub; transformers' bars follow it
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "DATASETS_VERBOSITY": "error",
}

#: the loggers whose records below ERROR a quiet run drops (DeepSpeed's logger does not propagate)
_LIBRARY_LOGGERS = ("DeepSpeed", "torch.distributed", "datasets", "huggingface_hub", "accelerate")
#: Ray's library loggers whose INFO lines a sweep's trial processes print ("Checkpoint successfully
#: created at ..." per trial step); their warnings still show
_RAY_LIBRARY_LOGGERS = ("ray.train", "ray.tune")


#: modules whose Python warnings a quiet run hides: the field's libraries this product runs on
_LIBRARY_WARNING_MODULES = (r"(torch|transformers|deepspeed|ray|datasets|huggingface_hub|accelerate|peft|trl|"
                            r"tokenizers|safetensors|pydantic|sklearn|scipy|numpy|pandas|pyarrow|lightgbm|"
                            r"matplotlib|tqdm|urllib3|requests|fastapi|starlette|uvicorn|google|grpc|jinja2|"
                            r"anndata|sentence_transformers|tensorboard|wandb|optuna)(\.|$)")


def enabled() -> bool:
    """Whether this process belongs to a quiet run."""
    return os.environ.get(QUIET_ENV_VAR) == "1"


class _BelowError(logging.Filter):
    """Keeps ERROR and above. A filter, not a level: DeepSpeed's ``create_logger`` sets its
    logger's level at import, after this was installed, but keeps the logger's filters."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


_FILTER = _BelowError()


def configure(verbose: bool) -> None:
    """The driver's choice, made once by the CLI before it imports the libraries: quiet
    (the default) sets :data:`LIBRARY_ENV` and :data:`QUIET_ENV_VAR` in this process's
    environment and applies :func:`apply`; ``verbose`` leaves every library as it is."""
    if verbose:
        os.environ.pop(QUIET_ENV_VAR, None)
        return
    os.environ[QUIET_ENV_VAR] = "1"
    for k, v in LIBRARY_ENV.items():
        os.environ.setdefault(k, v)  # a user's own setting wins
    apply()


def apply() -> None:
    """Turn the libraries' chatter off in this process, through their own switches; libraries
    not yet imported are left to :data:`LIBRARY_ENV` (importing them here would cost every
    Ray worker, small task workers included, seconds of CPU)."""
    for name in _LIBRARY_LOGGERS:
        lg = logging.getLogger(name)
        if _FILTER not in lg.filters:
            lg.addFilter(_FILTER)
    for name in _RAY_LIBRARY_LOGGERS:  # their module loggers inherit this level (a filter would not reach them)
        logging.getLogger(name).setLevel(logging.WARNING)
    # the libraries' own Python warnings (FutureWarning, UserWarning...); softverify's and a user's
    # (a reward function's module) still show
    warnings.filterwarnings("ignore", module=_LIBRARY_WARNING_MODULES)
    if "transformers" in sys.modules:
        from transformers.utils import logging as tf_logging

        tf_logging.set_verbosity_error()
        tf_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def setup_worker() -> None:
    """Ray's ``worker_process_setup_hook`` for a quiet run: :func:`apply` in every worker
    process before it runs anything."""
    if enabled():
        apply()


def in_actor(*preload: str) -> None:
    """An actor's constructor calls this in a quiet run: import ``preload`` (the libraries
    the actor is about to load anyway, e.g. "transformers") and :func:`apply`, so their
    functions, not only their environment switches, are set before a model loads."""
    if enabled():
        import importlib

        for name in preload:
            importlib.import_module(name)
        apply()


def runtime_env(job_config_json: str | None = None) -> dict[str, Any]:
    """The Ray job ``runtime_env`` of a quiet run: the switches' environment and the setup
    hook, so a cluster's workers (which do not inherit the driver's environment) are quiet too.

    A driver started by ``ray job submit`` (``softverify submit``) already runs under the
    job's runtime_env, given in ``RAY_JOB_CONFIG_JSON_ENV_VAR`` (or ``job_config_json``);
    ``ray.init`` merges the two and refuses an environment variable or field both set, so
    whatever the job already sets (``submit --env TRANSFORMERS_VERBOSITY=info``) is left to it."""
    import json

    raw = job_config_json if job_config_json is not None else os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    job = (json.loads(raw).get("runtime_env") or {}) if raw else {}
    taken = set(job.get("env_vars") or {})
    out: dict[str, Any] = {"env_vars": {k: v for k, v in {QUIET_ENV_VAR: "1", **LIBRARY_ENV}.items() if k not in taken}}
    if "worker_process_setup_hook" not in job:
        out["worker_process_setup_hook"] = "softverify.infra.quiet.setup_worker"
    return out


def ray_handler_filter(on: bool = True) -> None:
    """Keep only ERROR and above on the handler Ray installs on its ``ray`` logger (``on``), or
    restore it. For Ray's client-side lines (``submit``'s packaging, upload and websocket INFO,
    the '.git is now ignored' notice): several of those loggers pin their own level to INFO, so
    a level on ``ray`` would not reach them; the shared handler does."""
    import ray  # noqa: F401  (installs the handler)

    for h in logging.getLogger("ray").handlers:
        (h.addFilter if on else h.removeFilter)(_FILTER)  # both idempotent


def ray_logging_level() -> int:
    """The driver's ``ray`` logger level: Ray's own INFO/WARNING lines (token-auth notice,
    "Started a local Ray instance") only with ``--verbose``."""
    return logging.ERROR if enabled() else logging.INFO


@contextlib.contextmanager
def library_stdout() -> Iterator[None]:
    """Swallow what library code prints to stdout inside the block in a quiet run: DeepSpeed
    prints "DeepSpeed ... shm_comm_op built successfully" with a bare ``print`` and has no
    switch for it. Exceptions pass through untouched."""
    if not enabled():
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield
