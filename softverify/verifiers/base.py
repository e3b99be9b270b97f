"""The verifier contract.

A verifier is a plain class: it never sees the trainer, Ray or the policy. The
``VerifierPool`` actor hosts instances and calls :meth:`Verifier.score` on batches, so
every verifier is testable with a list of :class:`~softverify.types.Sample` built by hand.
"""
from __future__ import annotations

import re
from typing import Any, ClassVar, Sequence

import numpy as np

from softverify.registry import kinds, register, verifier_class  # noqa: F401  (re-exported)
from softverify.types import Sample


class Verifier:
    """Base class. Subclasses set ``kind`` and implement :meth:`score`.

    ``score`` returns a float array of shape ``[len(samples)]`` with values in ``[0, 1]``,
    or ``NaN`` where the verifier abstains (the question is outside what it knows, e.g. a
    gene with no embedding). Abstentions are excluded from reward composition per sample.
    """

    kind: ClassVar[str] = "base"
    #: True when the score needs the *current policy* (e.g. likelihood of a GO sentence);
    #: such verifiers run on a rollout worker instead of the verifier pool.
    needs_policy: ClassVar[bool] = False
    #: True when the verifier applies ``VerifierSpec.threshold`` itself (to an underlying
    #: probability, before mapping it to a reward); composition then must not apply it again.
    owns_threshold: ClassVar[bool] = False

    def __init__(self, name: str | None = None):
        self.name = name or self.kind

    def score(self, samples: Sequence[Sample]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def metrics(self) -> dict[str, float]:
        """Counters the verifier keeps across calls that a run should see (a remote verifier's
        requests and failures), logged each step as ``verifier/<name>/<key>``; most keep none."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def keeps_metrics(kind: str) -> bool:
    """Whether the kind overrides :meth:`Verifier.metrics` (so a pool need not ask the others)."""
    return verifier_class(kind).metrics is not Verifier.metrics


def available_kinds() -> list[str]:
    return kinds()


def build_verifier(kind: str, name: str | None = None, **params: Any) -> Verifier:
    """Build a verifier from its registered kind and keyword parameters.

    Raises ``ValueError`` naming the unknown kind and the known ones.
    """
    cls = verifier_class(kind)
    valid, open_kw = verifier_params(kind)
    unknown = sorted(set(params) - set(valid))
    if unknown and open_kw is None:
        raise ValueError(f"verifier {kind!r} has no parameter(s) {unknown}; its parameters are "
                         + (_format_params(valid, None) or "none"))
    for k, v in params.items():
        if k in _numeric_params(kind) and not _is_number(v, none_ok=valid.get(k) is None):
            raise ValueError(f"verifier {kind!r} parameter {k}={v!r} is not a number (its default is "
                             f"{valid[k]!r}); its parameters are " + _format_params(valid, open_kw))
    try:
        return cls(name=name, **params)
    except TypeError as e:  # e.g. a required parameter missing
        why = re.sub(r"^[\w.]+\(\) ", "", str(e))  # "X.__init__() missing 1 required ... argument: 'url'"
        raise ValueError(f"bad parameters for verifier {kind!r}: {why}; its parameters are "
                         + ", ".join(valid)) from e


_REQUIRED = object()  # marks a parameter without a default in verifier_params


def _is_number(v: Any, none_ok: bool) -> bool:
    return (v is None and none_ok) or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _numeric_params(kind: str) -> set[str]:
    """Constructor parameters annotated as numbers only (``int``, ``float``, ``float | None``):
    a string there (``max_chars=abc`` from the CLI) is refused by name up front instead of
    failing later with "'<=' not supported between instances of 'str' and 'int'"."""
    import inspect
    import typing

    from softverify.configbase import union_members

    out = set()
    for cls in verifier_class(kind).__mro__:
        if "__init__" not in vars(cls) or not issubclass(cls, Verifier):
            continue
        try:
            hints = typing.get_type_hints(cls.__init__)
        except Exception:  # an annotation that does not resolve: no check for this class
            continue
        for pname in inspect.signature(cls.__init__).parameters:
            members = union_members(hints.get(pname))  # None stripped: float | None counts as a number
            if members and all(m in (int, float) for m in members):
                out.add(pname)
    return out


def verifier_params(kind: str) -> tuple[dict[str, Any], str | None]:
    """The user-settable parameters of a verifier kind and their defaults (``_REQUIRED``
    when there is none), read from its constructor, and the name of a ``**kwargs`` that
    takes any other key (None when unknown keys are errors). ``name`` is a spec field, not a
    param, so it is left out (so is where its actor runs: ``VerifierSpec.placement``)."""
    import inspect

    out: dict[str, Any] = {}
    chain = [c for c in verifier_class(kind).__mro__ if "__init__" in vars(c) and issubclass(c, Verifier)]
    for i, cls in enumerate(chain):
        params = list(inspect.signature(cls.__init__).parameters.values())
        for p in params:
            if p.name not in ("self", "name") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                out.setdefault(p.name, _REQUIRED if p.default is inspect.Parameter.empty else p.default)
        var_kw = next((p.name for p in params if p.kind is p.VAR_KEYWORD), None)
        if var_kw is None:
            return out, None
        if i + 1 == len(chain) or chain[i + 1] is Verifier:  # the **kwargs stop here: any key is taken
            return out, var_kw
    return out, None


def describe_kind(kind: str) -> tuple[str, str]:
    """(first docstring paragraph without reST markup, parameters with defaults) for
    ``softverify verify --list``."""
    import re

    cls = verifier_class(kind)
    doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
    doc = re.sub(r":(?:mod|class|func|meth|attr|data):`~?([^`]+)`", lambda m: m.group(1).split(".")[-1], doc)
    doc = doc.replace("``", "")
    return doc, _format_params(*verifier_params(kind))


def kinds_help(width: int = 100, indent: str = "", policy_note: str = "needs the policy") -> list[str]:
    """Every verifier kind as ``verify --list`` and ``train --help-config verifiers`` show
    it: the kind (``[policy_note]`` when it scores with the policy), the first paragraph of
    its docstring and its parameters with their defaults, wrapped to ``width``."""
    import textwrap

    lines = []
    for k in available_kinds():
        doc, params = describe_kind(k)
        flag = f" [{policy_note}]" if verifier_class(k).needs_policy else ""
        lines.append(indent + k + flag)
        lines += textwrap.wrap(doc, width, initial_indent=indent + "    ", subsequent_indent=indent + "    ")
        lines += textwrap.wrap(f"params: {params or 'none'}", width, initial_indent=indent + "    ",
                               subsequent_indent=indent + "      ", break_on_hyphens=False)
    return lines


def _format_params(valid: dict[str, Any], open_kw: str | None) -> str:
    """``name=default, ...`` (bare name when required), ``**kw`` last when any key is taken."""
    return ", ".join([k if v is _REQUIRED else f"{k}={v!r}" for k, v in valid.items()]
                     + ([f"**{open_kw}"] if open_kw else []))


def build_from_spec(spec) -> Verifier:
    """Build the verifier of a :class:`~softverify.config.VerifierSpec`; a verifier that
    owns its threshold receives ``spec.threshold`` (when set) as its ``threshold`` param."""
    params = dict(spec.params)
    if spec.threshold is not None and verifier_class(spec.kind).owns_threshold:
        params["threshold"] = spec.threshold
    return build_verifier(spec.kind, name=spec.display_name, **params)


def composition_thresholds(specs) -> list[float | None]:
    """Thresholds for :func:`softverify.rewards.compose`: the spec's, except None for
    verifiers that already applied it themselves."""
    return [None if verifier_class(s.kind).owns_threshold else s.threshold for s in specs]
