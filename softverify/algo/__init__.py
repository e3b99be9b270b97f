"""Training modes: one module per way a step's questions become a policy update.

A mode owns everything that differs between estimators -- the samples it asks of a prompt,
the rollout worker's call, whether the workers need the new weights every step, what the
learner gets per sample, how a step's samples split over the learner ranks, and the loss
one rank backpropagates. The trainer, the learner group, the learner rank and the config
ask the step's mode and never branch on ``algorithm.estimator`` themselves (the rule
prime-rl's ``orchestrator/algo/`` states).

A mode is chosen by ``(algorithm.estimator, prompt.style)``; the table names each class by
module, imported the first time it is used, so this package imports nothing heavy and
:mod:`softverify.config` can read :data:`ESTIMATORS` at load time. A new estimator is one new
module beside these and its rows in :data:`MODES`.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from softverify.algo.base import Mode

#: (algorithm.estimator, prompt.style) -> "module:Class"
MODES: dict[tuple[str, str], str] = {
    ("sample", "direct"): "softverify.algo.sampled:Sampled",
    ("sample", "cot"): "softverify.algo.sampled:Sampled",
    ("enumerate", "direct"): "softverify.algo.enumerate_direct:EnumerateDirect",
    ("enumerate", "cot"): "softverify.algo.enumerate_cot:EnumerateCoT",
}

#: the values ``algorithm.estimator`` accepts
ESTIMATORS: tuple[str, ...] = tuple(dict.fromkeys(e for e, _ in MODES))


def mode_class(estimator: str, style: str) -> type["Mode"]:
    """The mode class for an estimator in a prompt style; a clear error for a pair with none."""
    try:
        where = MODES[(estimator, style)]
    except KeyError:
        raise ValueError(f"no training mode for algorithm.estimator={estimator!r} with prompt.style={style!r}; "
                         f"expected one of {sorted(MODES)}") from None
    module, name = where.split(":")
    return getattr(importlib.import_module(module), name)


def mode_for(cfg) -> "Mode":
    """The training mode a :class:`~softverify.config.TrainConfig` asks for, bound to it."""
    return mode_class(cfg.algorithm.estimator, cfg.prompt.style)(cfg)
