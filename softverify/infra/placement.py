"""Where a run's actors may go: per-role resource requests, checked against a cluster.

Three roles place actors: rollout workers, learner ranks and verifier actors. Each asks
for CPUs and GPUs (``num_cpus_*`` / ``num_gpus_*``), custom resources (``resources_*``:
name -> amount, matched against what ``ray start --resources`` declared on a node) and a
node label selector (``node_labels``: Ray's ``label_selector``, matched against
``ray start --labels``). Custom resources pin a role to the nodes that declare them; labels
do the same without consuming anything.

The check runs before any actor starts, against the nodes Ray reports: a request no node
can satisfy is an error naming the role, the config key, the amount asked for and what
the cluster has -- not an actor that waits forever for a node that will never come.
These are pure functions over plain dicts (``ray.nodes()`` rows), so they are testable
without a cluster.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from softverify.configbase import ConfigError

#: Resource names that have their own keys (num_cpus_*, num_gpus_*) or that Ray manages.
RESERVED_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")
_EPS = 1e-9


@dataclass(frozen=True)
class RoleRequest:
    """One role's per-actor request. ``keys`` maps each resource name (and ``"labels"``)
    to the config key that sets it, for messages."""

    role: str
    count: int
    resources: dict[str, float]
    labels: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)


def role_requests(cfg: Any) -> list[RoleRequest]:
    """The run's roles (a TrainConfig): rollout workers, learner ranks, one per verifier."""
    r, l = cfg.rollout, cfg.learner
    out = [
        RoleRequest("rollout workers", r.num_workers,
                    {"CPU": r.num_cpus_per_worker, "GPU": r.num_gpus_per_worker, **r.resources_per_worker},
                    dict(r.node_labels),
                    {"CPU": "rollout.num_cpus_per_worker", "GPU": "rollout.num_gpus_per_worker",
                     "labels": "rollout.node_labels",
                     **{k: f"rollout.resources_per_worker.{k}" for k in r.resources_per_worker}}),
        RoleRequest("learner ranks", l.num_ranks,
                    {"CPU": l.num_cpus_per_rank, "GPU": l.num_gpus_per_rank, **l.resources_per_rank},
                    dict(l.node_labels),
                    {"CPU": "learner.num_cpus_per_rank", "GPU": "learner.num_gpus_per_rank",
                     "labels": "learner.node_labels",
                     **{k: f"learner.resources_per_rank.{k}" for k in l.resources_per_rank}}),
    ]
    for i, v in enumerate(cfg.verifiers):
        out.append(RoleRequest(f"verifier {v.display_name!r}", 1,
                               {"CPU": v.num_cpus, "GPU": v.num_gpus, **v.resources}, dict(v.node_labels),
                               {"CPU": f"verifiers[{i}].num_cpus", "GPU": f"verifiers[{i}].num_gpus",
                                "labels": f"verifiers[{i}].node_labels",
                                **{k: f"verifiers[{i}].resources.{k}" for k in v.resources}}))
    return out


def totals(requests: Sequence[RoleRequest]) -> dict[str, float]:
    """Everything the run reserves at once: CPU and GPU always, custom resources when asked."""
    out: dict[str, float] = {"CPU": 0.0, "GPU": 0.0}
    for q in requests:
        for k, v in q.resources.items():
            if v:
                out[k] = out.get(k, 0.0) + q.count * v
    return out


def actor_options(num_cpus: float, num_gpus: float, resources: Mapping[str, float],
                  labels: Mapping[str, str]) -> dict[str, Any]:
    """Keyword arguments for ``ActorClass.options(...)`` placing one actor of a role."""
    opts: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus}
    if resources:
        opts["resources"] = dict(resources)
    if labels:
        opts["label_selector"] = dict(labels)
    return opts


def validate_resource_names(resources: Mapping[str, float]) -> Mapping[str, float]:
    """Field validator: custom resources are positive and not CPU/GPU (they have own keys)."""
    for k, v in resources.items():
        if k in RESERVED_RESOURCES:
            raise ValueError(f"resource {k!r} has its own key (num_cpus_* / num_gpus_*) or is managed by Ray; "
                             f"custom resources are names declared with `ray start --resources`")
        if not k or v <= 0:
            raise ValueError(f"custom resource {k!r}: {v!r}; expected a non-empty name and an amount > 0")
    return resources


def validate_label_selector(labels: Mapping[str, str]) -> Mapping[str, str]:
    """Field validator: Ray's own syntax check of a label selector (``value``, ``!value``,
    ``in(a,b)``, ``!in(a,b)``)."""
    if labels:
        from ray._private.label_utils import validate_label_selector as ray_check

        err = ray_check(dict(labels))
        if err:
            raise ValueError(err)
    return labels


def label_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether a node with ``labels`` satisfies ``selector`` (Ray's selector semantics)."""
    for key, expr in selector.items():
        neg = expr.startswith("!")
        body = expr[1:] if neg else expr
        values = [v.strip() for v in body[3:-1].split(",")] if body.startswith("in(") and body.endswith(")") else [body]
        hit = labels.get(key) in values
        if hit == neg:
            return False
    return True


def _fmt(d: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" if isinstance(v, float) else f"{k}: {v}" for k, v in sorted(d.items())) + "}"


def check_placement(requests: Sequence[RoleRequest], nodes: Sequence[Mapping[str, Any]]) -> None:
    """Refuse a request no alive node can satisfy (``nodes``: ``ray.nodes()`` rows).

    Per run: the cluster's totals must cover every role's actors together. Per actor: some
    node must carry the role's labels and hold every resource it asks for at once."""
    alive = [n for n in nodes if n.get("Alive", n.get("alive", True))]
    have: dict[str, float] = {}
    for n in alive:
        for k, v in n.get("Resources", {}).items():
            have[k] = have.get(k, 0.0) + v
    for res, amount in totals(requests).items():
        if amount > have.get(res, 0.0) + _EPS:
            raise ConfigError(
                f"impossible resource request: the run needs {amount:g} {res} in total but the Ray cluster has "
                f"{have.get(res, 0.0):g}; lower {breakdown(requests, res)}")
    for q in requests:
        asked = {k: v for k, v in q.resources.items() if v}
        fits_labels = [n for n in alive if label_matches(q.labels, n.get("Labels", {}))]
        if q.labels and not fits_labels:
            seen = sorted({f"{k}={v}" for n in alive for k, v in n.get("Labels", {}).items()
                           if k in q.labels})
            raise ConfigError(
                f"impossible placement for {q.role}: {q.keys['labels']} = {_fmt(q.labels)} matches no node; "
                f"the cluster's nodes have {', '.join(seen) if seen else 'no such labels'} "
                f"(set node labels with `ray start --labels key=value`)")
        for k, v in asked.items():
            best = max((n.get("Resources", {}).get(k, 0.0) for n in fits_labels), default=0.0)
            if v > best + _EPS:
                where = " on the nodes its labels select" if q.labels else ""
                raise ConfigError(
                    f"impossible placement for {q.role}: {q.keys.get(k, k)} asks {v:g} {k} per actor but no node"
                    f"{where} has that much; the most one node has is {best:g} (the cluster has "
                    f"{have.get(k, 0.0):g} {k} in all"
                    + ("" if k in ("CPU", "GPU") else f"; declare it with `ray start --resources '{{\"{k}\": N}}'`")
                    + ")")
        if asked and not any(all(n.get("Resources", {}).get(k, 0.0) + _EPS >= v for k, v in asked.items())
                             for n in fits_labels):
            raise ConfigError(
                f"impossible placement for {q.role}: one actor asks {_fmt(asked)} but no single node has all of it; "
                f"nodes: " + "; ".join(_fmt(n.get("Resources", {})) for n in fits_labels))


def breakdown(requests: Sequence[RoleRequest], res: str) -> str:
    """Which config keys ask for ``res``, and how much each."""
    parts = [(q.keys.get(res, res), q.count, q.resources.get(res, 0.0)) for q in requests]
    return ", ".join(f"{k} ({n} x {v:g})" if n > 1 else f"{k} ({v:g})" for k, n, v in parts if v > 0) + \
        " (or rollout.num_workers / learner.num_ranks)"
