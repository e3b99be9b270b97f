"""Threshold policies for a soft verifier's reward that avoid the base-rate trap.

On prompts balanced by the experimental label, a world model trained on ~13%-positive
data gives most pairs a low p. With the reward p for "yes" and 1 - p for "no", "always no"
then earns more than most gene-aware answers and GRPO climbs that easy hill. rbio1's
threshold normalisation moves the reward's midpoint to a threshold t; choosing t from the
*training prompts* makes the fixed answers tie:

- ``balanced``: the t at which the expected reward of "always yes" equals that of "always
  no" (= 0.5) over the prompts, found by bisection (the mean normalised p falls as t rises);
- ``median``: t = the median of p over the prompts, so half of the prompts favour "yes"
  (what GRPO's per-group, std-normalised advantages respond to).

Which one is neutral depends on the advantage estimator. GRPO divides by the group's std,
so a binary-answer group's advantages are +-sqrt(q/(1-q))-sized whatever the reward gap:
only the *sign* of p_n - 0.5 per prompt reaches the policy, and the shared "answer yes"
direction gets pushed by (fraction of prompts above t) - 0.5. Under GRPO use ``median``.
Dr. GRPO keeps the reward gap, so its push is proportional to mean(2 p_n - 1): under Dr.
GRPO use ``balanced``. Measured on the K562 train prompts with the RPE1+HepG2 world model:
``balanced`` gives t = 0.026 with 62% of prompts above it, and GRPO collapsed onto "yes" in
7 steps; ``median`` (t = 0.051) keeps the push at 50/50.

The trainer computes p over its training rows and hands t to the verifier. Where a caller
has already built the verifiers (the trainer's pre-flight :func:`softverify.verifiers.suite.check_specs`,
or a :class:`~softverify.verifiers.suite.VerifierSuite`), p comes from the built verifier's own
world model and the chosen t is set on that verifier: a run loads each world model once.
Without them (a stand-alone caller) the world model is loaded from the spec's params.
"""
from __future__ import annotations

import numpy as np

from softverify.rewards import threshold_normalize

POLICIES = ("balanced", "median")


def expected_fixed_rewards(p: np.ndarray, t: float | None, negated: np.ndarray | None = None) -> tuple[float, float]:
    """(E[reward | always yes], E[reward | always no]) over prompts with world-model p,
    after threshold normalisation at ``t``; negated questions flip which answer p supports."""
    p = np.asarray(p, dtype=np.float64)
    ok = np.isfinite(p)
    pn = threshold_normalize(p[ok], t)
    neg = np.zeros(ok.sum(), dtype=bool) if negated is None else np.asarray(negated, dtype=bool)[ok]
    r_yes = np.where(neg, 1 - pn, pn)
    return float(r_yes.mean()), float((1 - r_yes).mean())


def balanced_threshold(p: np.ndarray, negated: np.ndarray | None = None, tol: float = 1e-10) -> float:
    """The t in (0, 1) with E[reward | always yes] = E[reward | always no]."""
    p = np.asarray(p, dtype=np.float64)
    if not np.isfinite(p).any():
        raise ValueError("balanced threshold: the verifier scored none of the training prompts (all p are NaN)")
    gap = lambda t: (lambda a, b: a - b)(*expected_fixed_rewards(p, t, negated))  # noqa: E731
    lo, hi = 1e-9, 1 - 1e-9
    g_lo, g_hi = gap(lo), gap(hi)
    if np.sign(g_lo) == np.sign(g_hi):
        raise ValueError(f"balanced threshold: no t in (0, 1) ties always-yes and always-no "
                         f"(reward gap {g_lo:.3f} at t=0, {g_hi:.3f} at t=1); use a fixed threshold")
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if np.sign(gap(mid)) == np.sign(g_lo):
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def policy_threshold(policy: str, p: np.ndarray, negated: np.ndarray | None = None) -> float:
    if policy == "balanced":
        return balanced_threshold(p, negated)
    if policy == "median":
        ok = np.isfinite(np.asarray(p, dtype=np.float64))
        if not ok.any():
            raise ValueError("median threshold: the verifier scored none of the training prompts")
        return float(np.median(np.asarray(p, dtype=np.float64)[ok]))
    raise ValueError(f"unknown threshold policy {policy!r}; expected one of {POLICIES}")


def _column(rows, key: str, default=None) -> list:
    if hasattr(rows, "column_names"):  # a datasets.Dataset: column access, not row by row
        return list(rows[key]) if key in rows.column_names else [default] * len(rows)
    return [r.get(key, default) for r in rows]


def threshold_policy(spec) -> str | None:
    """The policy (``balanced`` / ``median``) a world-model spec names as its threshold, else None."""
    pol = spec.params.get("threshold")
    return pol if spec.kind == "world_model" and isinstance(pol, str) and pol in POLICIES else None


def held_back(spec):
    """The spec a verifier is built from before its threshold policy is resolved: the policy
    left out (no threshold yet), for :func:`resolve_threshold_policies` to set the number it
    chooses on the verifier built from it. Other specs are returned as they are."""
    if threshold_policy(spec) is None:
        return spec
    return spec.model_copy(update={"params": {**spec.params, "threshold": None}})


def world_model_of(spec, built=None):
    """A world-model spec's p source: the model of its verifier in ``built`` (display name ->
    verifier, built once by the caller), else loaded from the spec's params."""
    verifier = (built or {}).get(spec.display_name)
    if verifier is not None:
        return verifier.model
    from softverify.bio.teacher_table import load_teacher

    return load_teacher(spec.params)


def resolve_threshold_policies(specs, rows, built=None) -> tuple[list, dict[str, float]]:
    """Specs with every world-model ``params.threshold: balanced|median`` replaced by the
    number that policy gives over ``rows`` (the training prompts; a Dataset or dicts),
    and ``{verifier name: chosen threshold}``. ``built`` (display name -> verifier, e.g.
    :func:`~softverify.verifiers.suite.check_specs`'s, built from :func:`held_back` specs):
    p comes from those verifiers' models, and each takes the chosen number, so it scores as
    one built from the resolved spec would; a spec missing from it loads its world model."""
    out, chosen = [], {}
    for spec in specs:
        pol = threshold_policy(spec)
        if pol is not None:
            wm = world_model_of(spec, built)
            de = np.array([(t or "de") == "de" for t in _column(rows, "task", "de")])
            perts = [x for x, k in zip(_column(rows, "pert"), de) if k]
            genes = [x for x, k in zip(_column(rows, "gene"), de) if k]
            neg = np.array(_column(rows, "negated", False), dtype=bool)[de]
            t = policy_threshold(pol, wm.predict_proba(perts, genes), neg)
            chosen[spec.display_name] = t
            verifier = (built or {}).get(spec.display_name)
            if verifier is not None and spec.threshold is None:  # a spec's own threshold wins, as in build_from_spec
                verifier.set_threshold(t)
            spec = spec.model_copy(update={"params": {**spec.params, "threshold": t}})
        out.append(spec)
    return out, chosen


def verifier_decisions(spec, rows, built=None) -> np.ndarray:
    """Per row: 1 where a world-model spec (numeric or 'model' threshold) answers yes, 0 no,
    -1 where it abstains (unknown gene) or the row is not a knockdown question. ``built``
    (display name -> verifier): the spec's verifier there lends its world model, which is
    otherwise loaded from the spec's params."""
    if spec.kind != "world_model":
        raise ValueError(f"stratifying prompts needs a world_model verifier; {spec.display_name!r} is {spec.kind!r}")
    wm = world_model_of(spec, built)
    t = spec.params.get("threshold", "model")
    t = wm.threshold if t in ("model", None) else float(t)
    p = wm.predict_proba(_column(rows, "pert"), _column(rows, "gene"))
    neg = np.array(_column(rows, "negated", False), dtype=bool)
    de = np.array([(x or "de") == "de" for x in _column(rows, "task", "de")])
    yes = np.where(neg, p < t, p >= t)
    return np.where(np.isfinite(p) & de, yes.astype(int), -1)
