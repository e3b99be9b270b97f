"""A trial whose process Ray kills (memory monitor, crash) fails alone; the sweep goes on.

Ray Tune 2.60 tracks each trial as an actor task. When Ray's memory monitor kills the trial's
process, that task fails with :class:`ray.exceptions.OutOfMemoryError` (or
``WorkerCrashedError`` for any other kill), which are neither ``RayActorError`` nor
``RayTaskError``. Tune's actor manager (``RayActorManager._actor_task_failed``) handles only
those two and raises ``RuntimeError: Caught unexpected exception`` for anything else, out of
``Tuner.fit()``: memory pressure on one trial ended the whole sweep (seen in a real run,
benchmarks/notes/issue5.md). What the user expects -- and what Tune does for a trial whose
actor dies any other way -- is that trial marked ERROR with the reason, and the others going on.

:func:`tolerate_killed_trials` makes Tune treat such a kill as what it is, the trial's actor
dying: the error becomes a :class:`TrialProcessKilled` (a ``RayActorError``) carrying Ray's
own message, which then flows through Tune's normal failure path (``FailureConfig``
retries, then ERROR, the reason in ``results.csv``). The patch is installed once per process,
only around Ray versions whose method we have checked (it refuses to guess on others and
leaves Tune as it is, saying so).
"""
from __future__ import annotations

import functools
import sys

from ray.exceptions import OutOfMemoryError, RayActorError, WorkerCrashedError

#: Ray versions whose ``RayActorManager._actor_task_failed`` has the failure mode above
#: (read in ray/air/execution/_internal/actor_manager.py before adding one).
CHECKED_RAY_VERSIONS = ("2.60.",)

#: Ray's errors for a task whose process it killed
KILLED = (OutOfMemoryError, WorkerCrashedError)


class TrialProcessKilled(RayActorError):
    """The trial's process was killed by Ray (out of memory, or a crash); Ray's message kept."""

    def __init__(self, cause: BaseException):
        super().__init__(error_msg=f"ray.exceptions.{type(cause).__name__}: the trial's process was killed. {cause}")
        self.cause = cause

    def __reduce__(self):  # picklable: Tune saves trial errors in its experiment state
        return TrialProcessKilled, (self.cause,)


def as_actor_death(exception: BaseException) -> BaseException:
    """The error Tune should see for a failed trial task: a process kill becomes an actor
    death (:class:`TrialProcessKilled`, message kept); anything else is returned unchanged."""
    return TrialProcessKilled(exception) if isinstance(exception, KILLED) else exception


def tolerate_killed_trials() -> bool:
    """Install the conversion into Tune's actor manager (idempotent). Returns whether it is
    active; on an unchecked Ray version it prints why not and leaves Tune unchanged."""
    import ray
    from ray.air.execution._internal.actor_manager import RayActorManager

    original = RayActorManager._actor_task_failed
    if getattr(original, "_softverify_tolerates_kills", False):
        return True
    if not ray.__version__.startswith(CHECKED_RAY_VERSIONS):
        print(f"softverify sweep: Ray {ray.__version__} is not one of {CHECKED_RAY_VERSIONS}; an out-of-memory "
              "kill of a trial may abort the sweep (resume it with --resume)", file=sys.stderr)
        return False

    @functools.wraps(original)
    def _actor_task_failed(self, tracked_actor_task, exception):
        return original(self, tracked_actor_task, as_actor_death(exception))

    _actor_task_failed._softverify_tolerates_kills = True
    RayActorManager._actor_task_failed = _actor_task_failed
    return True
