"""Where a run's actors may go: per-role resource requests, checked against a cluster.

Three roles place actors: rollout workers, learner ranks and verifier actors. Each role's
config section has one :class:`Placement` (``rollout.placement``, ``learner.placement``, a
verifier's ``placement``), so the four things an actor asks for are set, checked and read
the same way for all of them: CPUs and GPUs (``num_cpus`` / ``num_gpus``), custom resources
(``resources``: name -> amount, matched against what ``ray start --resources`` declared on a
node) and a node label selector (``node_labels``: Ray's ``label_selector``, matched against
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
from typing import Annotated, Any, Mapping, Sequence

from pydantic import AfterValidator, BeforeValidator, Field, field_validator

from softverify.configbase import ConfigError, StrictModel

#: Resource names that have their own keys (placement.num_cpus / num_gpus) or that Ray manages.
RESERVED_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")
_EPS = 1e-9


class Placement(StrictModel):
    """What one actor of a role reserves and which nodes it may run on. The same section
    for every role, so each is set, validated and checked against the cluster alike; only
    the defaults differ per role (:func:`role_placement`)."""

    num_cpus: float = Field(0.0, ge=0, description="Ray CPUs reserved per actor.")
    num_gpus: float = Field(0.0, ge=0, description="Ray GPUs reserved per actor.")
    resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources reserved per actor (name -> amount), e.g. "
        "{learner_node: 1}: it only starts on a node that declared them (`ray start --resources "
        "'{\"learner_node\": 4}'`, a KubeRay worker group's rayStartParams.resources). Checked against the "
        "cluster before anything starts. {} = none.")
    node_labels: dict[str, str] = Field(
        default_factory=dict, description="Node label selector for each actor (Ray label_selector: label -> "
        "value, '!value', 'in(a,b)' or '!in(a,b)'), e.g. {role: learner}: it only starts on nodes started with "
        "matching `ray start --labels role=learner`. Checked against the cluster before anything starts. Not "
        "supported inside sweeps (use custom resources there). {} = any node.")

    @field_validator("resources")
    @classmethod
    def _resources(cls, v):
        return validate_resource_names(v)

    @field_validator("node_labels")
    @classmethod
    def _labels(cls, v):
        return validate_label_selector(v)


#: A placement's fields, in the order :func:`moved_to_placement` reads a role's old keys in.
PLACEMENT_FIELDS = ("num_cpus", "num_gpus", "resources", "node_labels")


def moved_to_placement(*old: str) -> dict[str, str]:
    """``{old key: 'placement.<field>'}`` for a section whose four placement keys (in the
    order of :data:`PLACEMENT_FIELDS`) used to sit in the section itself under other names:
    the section's ``moved_keys`` (:class:`softverify.configbase.StrictModel`), so a config
    written for that layout fails naming the new key instead of a bare "unknown key"."""
    return {o: f"placement.{f}" for o, f in zip(old, PLACEMENT_FIELDS) if o}


def role_placement(what: str, doc: str = "", cpus_needed: bool = False, **defaults: Any) -> Any:
    """The annotated type of one role's ``placement`` field: a :class:`Placement` whose
    default is the role's own (``defaults``), and a mapping that sets some keys only takes
    the role's defaults for the others (not the class's: a verifier that asks for a custom
    resource still reserves no CPU). ``cpus_needed``: the role's actors compute on CPUs
    Ray must reserve (rollout workers, learner ranks), so 0 is refused."""
    base = Placement(**defaults)

    def fill(v: Any) -> Any:
        return {**base.model_dump(), **v} if isinstance(v, Mapping) else v

    def check(p: Placement) -> Placement:
        if cpus_needed and p.num_cpus <= 0:
            raise ValueError(f"num_cpus must be > 0 (got {p.num_cpus:g}): each {what} computes on the CPUs Ray "
                             "reserves for it")
        return p

    shown = ", ".join(f"{k}={v!r}" for k, v in base.model_dump().items() if v or k in ("num_cpus", "num_gpus"))
    return Annotated[Placement, BeforeValidator(fill), AfterValidator(check), Field(
        default_factory=lambda: base.model_copy(deep=True),
        description=f"Where each {what} runs (num_cpus, num_gpus, resources, node_labels; keys left out take "
                    f"this role's defaults: {shown}). {doc}".rstrip())]


@dataclass(frozen=True)
class RoleRequest:
    """One role's per-actor request. ``keys`` maps each resource name (and ``"labels"``)
    to the config key that sets it, for messages."""

    role: str
    count: int
    resources: dict[str, float]
    labels: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)


def role_request(role: str, count: int, p: Placement, key: str) -> RoleRequest:
    """One role's request from its :class:`Placement`, ``key`` the config path of that
    placement (``rollout.placement``), so messages name the key to change."""
    return RoleRequest(role, count, {"CPU": p.num_cpus, "GPU": p.num_gpus, **p.resources}, dict(p.node_labels),
                       {"CPU": f"{key}.num_cpus", "GPU": f"{key}.num_gpus", "labels": f"{key}.node_labels",
                        **{k: f"{key}.resources.{k}" for k in p.resources}})


def role_requests(cfg: Any) -> list[RoleRequest]:
    """The run's roles (a TrainConfig): rollout workers, learner ranks, one per verifier."""
    out = [role_request("rollout workers", cfg.rollout.num_workers, cfg.rollout.placement, "rollout.placement"),
           role_request("learner ranks", cfg.learner.num_ranks, cfg.learner.placement, "learner.placement")]
    for i, v in enumerate(cfg.verifiers):
        out.append(role_request(f"verifier {v.display_name!r}", 1, v.placement, f"verifiers[{i}].placement"))
    return out


def totals(requests: Sequence[RoleRequest]) -> dict[str, float]:
    """Everything the run reserves at once: CPU and GPU always, custom resources when asked."""
    out: dict[str, float] = {"CPU": 0.0, "GPU": 0.0}
    for q in requests:
        for k, v in q.resources.items():
            if v:
                out[k] = out.get(k, 0.0) + q.count * v
    return out


def actor_options(p: Placement) -> dict[str, Any]:
    """Keyword arguments for ``ActorClass.options(...)`` placing one actor of a role."""
    opts: dict[str, Any] = {"num_cpus": p.num_cpus, "num_gpus": p.num_gpus}
    if p.resources:
        opts["resources"] = dict(p.resources)
    if p.node_labels:
        opts["label_selector"] = dict(p.node_labels)
    return opts


def validate_resource_names(resources: Mapping[str, float]) -> Mapping[str, float]:
    """Field validator: custom resources are positive and not CPU/GPU (they have own keys)."""
    for k, v in resources.items():
        if k in RESERVED_RESOURCES:
            raise ValueError(f"resource {k!r} has its own key (placement.num_cpus / num_gpus) or is managed by Ray; "
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
