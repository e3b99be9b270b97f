"""VerifierPool: one Ray actor per configured verifier, each scoring whole batches.

Each actor reserves the resources its verifier declares (a GPU world model gets a GPU),
so Ray places them; the pool fans a batch out to all of them at once and stacks the
columns into the ``[n_samples, n_verifiers]`` score matrix (NaN = abstain).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import ray

from softverify.config import VerifierSpec
from softverify.types import Sample
from softverify.verifiers.base import Verifier, build_verifier


class VerifierHost:
    """Holds one verifier; validates its output shape and range."""

    def __init__(self, spec: VerifierSpec):
        self.verifier: Verifier = build_verifier(spec.kind, name=spec.display_name, **spec.params)

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        s = np.asarray(self.verifier.score(samples), dtype=np.float64)
        if s.shape != (len(samples),):
            raise ValueError(f"verifier {self.verifier.name!r} returned shape {s.shape}, expected ({len(samples)},)")
        bad = ~np.isnan(s) & ((s < 0) | (s > 1))
        if bad.any():
            raise ValueError(f"verifier {self.verifier.name!r} returned scores outside [0, 1]: {s[bad][:5]}")
        return s


@ray.remote(max_restarts=3, max_task_retries=3)
class VerifierActor(VerifierHost):
    def ping(self) -> bool:
        return True


class VerifierPool:
    """Driver-side handle: owns the verifier actors and fans batches out to them."""

    def __init__(self, specs: Sequence[VerifierSpec]):
        self.specs = list(specs)
        self.names = [s.display_name for s in self.specs]
        self.actors = [
            VerifierActor.options(num_cpus=s.num_cpus, num_gpus=s.num_gpus, name=None).remote(s) for s in self.specs
        ]
        ray.get([a.ping.remote() for a in self.actors])

    def score(self, samples_ref) -> np.ndarray:
        """Scores for a batch (an ObjectRef or list of samples): ``[n, n_verifiers]``."""
        cols = ray.get([a.score.remote(samples_ref) for a in self.actors])
        return np.column_stack(cols) if cols else np.zeros((0, 0))

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
