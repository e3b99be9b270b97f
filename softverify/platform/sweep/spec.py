"""Sweep definitions: parse, validate, and translate a ``tune_configs/*.yaml`` into Tune objects.

A sweep file has four parts::

    base:            a training config (TrainConfig schema), or `base_config: path.yaml`
    search:          dotted TrainConfig paths -> one distribution each, plus `verifier_sets`
    tune:            metric, mode, num_samples, scheduler, search_alg, concurrency, resources
    output_dir:      where the Tune experiment, the trial runs and the results go

Why validate so much before Tune starts: a sweep is many expensive trials, and a typo
found by trial 7 after an hour is a wasted hour. So every key is checked against the
TrainConfig schema, every distribution's range is checked, and a set of representative
trial configs (every categorical value, both ends of every range) is built as a real
``TrainConfig`` -- an unknown verifier kind or a threshold of 1.5 fails here, naming the key.

Verifier fields are addressed by the verifier's display name: ``verifiers.hard.weight``
sets the weight of the verifier named ``hard`` in whichever verifier set the trial uses
(trials whose set lacks that verifier simply do not use the value); its placement's fields
are one level down (``verifiers.hard.placement.num_cpus``).
"""
from __future__ import annotations

import copy
import itertools
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from softverify.config import ConfigError, StrictModel, TrainConfig, VerifierSpec, apply_overrides, build_config, read_yaml
from softverify.configbase import moved_key
from softverify.infra.placement import Placement

#: Param name under which the chosen verifier combination travels in a trial's config.
VERIFIER_SET_KEY = "verifier_set"
DIST_KINDS = ("choice", "grid", "uniform", "loguniform", "randint")
#: Sweeping these would change the held-out eval questions, making trials incomparable.
EVAL_SET_KEYS = ("data.source", "data.path", "data.mirror", "data.cell_lines", "data.eval_split",
                 "data.eval_size", "data.seed", "data.holdout_cell_line", "data.holdout_gene_fraction",
                 "data.val_fraction", "data.val_seed", "data.eval_genes", "data.eval_negatives_per_gene")
#: Trial-managed keys: the sweep sets them per trial.
MANAGED_KEYS = ("trainer.output_dir", "trainer.ray_address", "trainer.progress")
_VERIFIER_FIELDS = set(VerifierSpec.model_fields)
#: Prefixes of the metrics periodic eval logs: the free reading and the forced yes/no reading.
EVAL_PREFIXES = ("eval/", "eval_forced/")


_Strict = StrictModel


class AshaConfig(_Strict):
    grace_period: int = Field(1, ge=1, description="Steps every trial runs before it can be stopped.")
    reduction_factor: float = Field(2.0, gt=1, description="Keep 1/reduction_factor of trials at each rung.")
    brackets: int = Field(1, ge=1, description="ASHA brackets.")


class TrialResources(_Strict):
    driver_cpus: float = Field(
        0.5, gt=0, description="CPUs of the trial's driver (the Trainer loop; mostly waits on actors)."
    )


class TuneSection(_Strict):
    metric: str | None = Field(
        None, description="Metric Tune optimises and best_config.yaml ranks trials by (final value): a held-out "
        "eval metric or, when every trial has the same reward function, a training one (reward_mean). Default: "
        "eval_forced/auc_per_gene (PerturbQA's per-gene AUROC of the forced score, what a knockdown ranking "
        "knows beyond 'this gene is often DE') when the base config evaluates whole target genes "
        "(data.source perturbqa with data.eval_genes), else eval_forced/auroc (the forced score's pooled AUROC; "
        "also eval/mcc, eval/f1, eval/balanced_accuracy, ...). A trial that does not log it fails, naming the "
        "metrics it does log.")
    mode: Literal["max", "min"] = Field("max", description="Maximise or minimise the metric.")
    num_samples: int = Field(4, ge=1, description="Samples of the search space (grid axes multiply this).")
    scheduler: Literal["asha", "fifo"] = Field("asha", description="'asha' stops poor trials early; 'fifo' runs all.")
    asha: AshaConfig = Field(default_factory=AshaConfig)
    search_alg: Literal["random", "grid", "optuna"] = Field(
        "random", description="'random' (grid entries expand), 'grid' (every choice becomes a grid axis), "
        "'optuna' (TPE; needs the optuna package).")
    max_concurrent_trials: int = Field(1, ge=1, description="Trials running at once.")
    max_failures: int = Field(0, ge=0, description="Retries of a failing trial (then it is reported as ERROR).")
    seed: int | None = Field(0, description="Seed of the search algorithm (random/optuna sampling).")
    resources: TrialResources = Field(default_factory=TrialResources)


class SweepSpec(_Strict):
    name: str = Field("sweep", description="Experiment name (Tune's directory name is always 'tune').")
    output_dir: str = Field("sweeps/default", description="Experiment, trials and results go here.")
    base: dict[str, Any] | None = Field(None, description="Base training config (TrainConfig schema).")
    base_config: str | None = Field(None, description="Path to a training config YAML used as the base.")
    search: dict[str, Any] = Field(..., description="Dotted TrainConfig path -> distribution; plus verifier_sets.")
    tune: TuneSection = Field(default_factory=TuneSection)

    @model_validator(mode="after")
    def _one_base(self) -> "SweepSpec":
        if self.base is not None and self.base_config is not None:
            raise ValueError("give either 'base' or 'base_config', not both")
        return self


# ---------------------------------------------------------------------------- distributions


def _parse_dist(key: str, value: Any) -> tuple[str, list[Any]]:
    """``{uniform: [0, 1]}`` -> ("uniform", [0, 1]), with the range checked."""
    if not isinstance(value, dict) or len(value) != 1:
        raise ConfigError(
            f"search.{key}: expected one distribution like {{choice: [a, b]}} or {{uniform: [lo, hi]}} "
            f"(one of {list(DIST_KINDS)}), got {value!r}")
    (kind, args), = value.items()
    if kind not in DIST_KINDS:
        raise ConfigError(f"search.{key}: unknown distribution {kind!r}; expected one of {list(DIST_KINDS)}")
    if not isinstance(args, list) or not args:
        raise ConfigError(f"search.{key}: {kind} needs a non-empty list, got {args!r} (empty search space)")
    if kind in ("choice", "grid"):
        return kind, list(args)
    if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise ConfigError(f"search.{key}: {kind} needs [low, high] numbers, got {args!r}")
    lo, hi = args
    if not lo < hi:
        raise ConfigError(f"search.{key}: {kind} range [{lo}, {hi}] is empty or reversed (need low < high)")
    if kind == "loguniform" and lo <= 0:
        raise ConfigError(f"search.{key}: loguniform needs low > 0, got {lo}")
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        raise ConfigError(f"search.{key}: randint needs integers [low, high) , got {args!r}")
    return kind, [lo, hi]


def _representatives(kind: str, args: list[Any]) -> list[Any]:
    """Values whose configs must all validate: every choice, both ends of a range."""
    if kind in ("choice", "grid"):
        return args
    if kind == "randint":
        return [args[0], args[1] - 1]
    return args


# ---------------------------------------------------------------------------- the parsed sweep


class Sweep:
    """A validated sweep: base config dict, parsed search space, Tune settings."""

    def __init__(self, spec: SweepSpec, base_raw: dict[str, Any], dists: dict[str, tuple[str, list[Any]]],
                 verifier_sets: dict[str, list[dict[str, Any]]], verifier_sets_mode: str = "choice"):
        self.verifier_sets_mode = verifier_sets_mode
        self.spec = spec
        self.base_raw = base_raw
        self.dists = dists
        self.verifier_sets = verifier_sets

    @property
    def output_dir(self) -> Path:
        return Path(self.spec.output_dir)

    @property
    def uses_eval(self) -> bool:
        """Whether the metric comes from periodic eval (then trials report at eval steps)."""
        return self.spec.tune.metric.startswith(EVAL_PREFIXES)

    def trial_raw(self, params: dict[str, Any]) -> dict[str, Any]:
        """The user-level training config dict of one trial (what ``best_config.yaml`` holds)."""
        raw = copy.deepcopy(self.base_raw)
        if VERIFIER_SET_KEY in params:
            raw["verifiers"] = copy.deepcopy(self.verifier_sets[params[VERIFIER_SET_KEY]])
        elif not raw.get("verifiers"):  # the defaults, spelled out so per-name values apply
            raw["verifiers"] = [v.model_dump(exclude_defaults=True) | {"kind": v.kind} for v in TrainConfig().verifiers]
        for key, value in params.items():
            if key == VERIFIER_SET_KEY:
                continue
            parts = key.split(".")
            if parts[0] == "verifiers":
                for v in raw.get("verifiers") or []:
                    if (v.get("name") or v.get("kind")) == parts[1]:
                        if len(parts) == 4:  # verifiers.<name>.placement.<field>
                            v[parts[2]] = {**(v.get(parts[2]) or {}), parts[3]: value}
                        else:
                            v[parts[2]] = value
                continue
            node = raw
            for p in parts[:-1]:
                node[p] = dict(node.get(p) or {})
                node = node[p]
            node[parts[-1]] = value
        return raw

    def unused_params(self, params: dict[str, Any]) -> set[str]:
        """Searched ``verifiers.<name>.<field>`` keys that this trial's verifier set does not
        contain: Tune still samples them, but they change nothing, so the report leaves
        them empty instead of showing a weight the trial never used."""
        names = {v.get("name") or v.get("kind") for v in self.trial_raw(params).get("verifiers") or []}
        return {k for k in params if k.startswith("verifiers.") and k.split(".")[1] not in names}

    @property
    def varies_reward(self) -> bool:
        """Whether trials are scored by different reward functions (verifier sets, verifier
        fields, reward composition), so their rewards cannot be compared with each other."""
        return len(self.verifier_sets) > 1 or any(k.startswith(("verifiers.", "reward.")) for k in self.dists)

    def trial_config(self, params: dict[str, Any], output_dir: str | Path) -> TrainConfig:
        """The config a trial actually runs: its raw config plus the sweep-managed keys."""
        raw = self.trial_raw(params)
        raw.setdefault("trainer", {})
        raw["trainer"] = {**raw["trainer"], "output_dir": str(output_dir), "ray_address": None, "progress": False}
        return build_config(raw)

    def _axes(self) -> dict[str, list[Any]]:
        axes = {k: _representatives(*d) for k, d in self.dists.items()}
        if self.verifier_sets:
            axes = {VERIFIER_SET_KEY: list(self.verifier_sets), **axes}
        return axes

    def representative_params(self) -> list[dict[str, Any]]:
        """Param sets covering every value of every key (one key at a time), plus the full
        cartesian product when it is small (catches interactions such as
        prompts_per_step * group_size < learner.num_ranks)."""
        axes = self._axes()
        first = {k: vals[0] for k, vals in axes.items()}
        out = [{k: v} for k, vals in axes.items() for v in vals]  # each value alone on the base
        out += [dict(first, **{k: v}) for k, vals in axes.items() for v in vals]
        n = 1
        for vals in axes.values():
            n *= len(vals)
        if n <= 256:
            out += [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
        return out

    def validate_trials(self) -> None:
        """Build representative trial configs; the first invalid one raises, naming the key
        that was varied (or every sampled value when only a combination is invalid)."""
        seen = set()
        for params in self.representative_params():
            sig = repr(sorted(params.items(), key=lambda kv: kv[0]))
            if sig in seen:
                continue
            seen.add(sig)
            try:
                self.trial_config(params, "unused")
            except ConfigError as e:
                if len(params) == 1:
                    (k, v), = params.items()
                    what = f"search.{k} = {v!r}"
                else:
                    what = "the combination " + _show(params)
                raise ConfigError(f"invalid trial config for {what}:\n{e}") from None


def eval_metric_names() -> dict[str, set[str]]:
    """prefix -> the metric names periodic eval logs under it (``eval/``: the free reading's
    classification metrics; ``eval_forced/``: those of the forced reading plus the forced
    score's AUROC/AUPRC, intervals and Spearman correlation), read off the evaluation
    functions themselves so this list cannot drift from what the trainer logs."""
    from softverify.evaluation.classification import classification_metrics
    from softverify.evaluation.run import per_gene_metrics
    from softverify.evaluation.scores import score_metrics

    y = [0, 1, 0, 1]
    free = set(classification_metrics(y, y))
    forced = free | set(score_metrics(y, [0.1, 0.9, 0.2, 0.8], answers=y, reference=[0.1, 0.9, 0.2, 0.8], n_boot=2))
    # knockdown questions add PerturbQA's per-gene AUROC (and the teacher's, when the run has one)
    recs = [{"gene": g, "label": v, "margin": m, "wm_p": m}
            for g, v, m in zip("AAABBB", [0, 1, 1, 0, 1, 0], [0.1, 0.9, 0.5, 0.2, 0.8, 0.4])]
    forced |= set(per_gene_metrics(recs, n_boot=2))
    return {"eval/": free, "eval_forced/": forced}


def check_eval_metric(metric: str) -> None:
    """Refuse an eval metric the trainer never logs (``eval/auc``) before any trial starts:
    Tune would otherwise end the whole sweep at the first report without it."""
    import difflib

    prefix = next((p for p in EVAL_PREFIXES if metric.startswith(p)), None)
    if prefix is None:
        return
    every = eval_metric_names()
    names, suffix = every[prefix], metric[len(prefix):]
    if suffix not in names:
        full = sorted(prefix + n for n in names)
        # near names under either prefix: 'eval/auroc' is logged as eval_forced/auroc
        near = [prefix + n if n in names else next(p + n for p in EVAL_PREFIXES if n in every[p])
                for n in difflib.get_close_matches(suffix, sorted(set().union(*every.values())), n=3)]
        raise ConfigError(f"tune.metric={metric!r}: periodic eval logs no such metric"
                          f"{' (did you mean ' + ', '.join(near) + '?)' if near else ''}; "
                          f"{prefix}* metrics: {', '.join(full)}")


def missing_metric_error(metric: str, step: int, logged: dict[str, Any]) -> ConfigError:
    """The error of a trial whose report at ``step`` lacks the sweep metric: names the
    metric, its closest logged names and how many are logged (Tune's own error dumps the
    whole result and ends the sweep)."""
    import difflib

    near = difflib.get_close_matches(metric, list(logged), n=3, cutoff=0.5)
    return ConfigError(f"tune.metric={metric!r} is not among the {len(logged)} metrics this trial logs at step "
                       f"{step}{' (closest: ' + ', '.join(near) + ')' if near else ''}; set tune.metric to a "
                       "key of the trial's metrics.jsonl")


def _show(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


# ---------------------------------------------------------------------------- parsing


def _check_key(key: str, verifier_names: set[str]) -> None:
    parts = key.split(".")
    if key in MANAGED_KEYS:
        raise ConfigError(f"search.{key}: set per trial by the sweep; it cannot be searched")
    if key in EVAL_SET_KEYS:
        raise ConfigError(f"search.{key}: changes the held-out eval questions, so trials would not be comparable")
    if parts[0] == "verifiers":
        if len(parts) >= 3 and (new := moved_key(VerifierSpec, parts[2], f"verifiers.{parts[1]}.")):
            raise ConfigError(f"search.{'.'.join(parts[:3])} moved to search.{new}")
        nested = len(parts) >= 3 and parts[2] == "placement"
        if len(parts) != (4 if nested else 3):
            raise ConfigError(f"search.{key}: verifier keys look like verifiers.<name>.<field> (e.g. "
                              "verifiers.hard.weight) or verifiers.<name>.placement.<field>")
        if parts[1] not in verifier_names:
            raise ConfigError(f"search.{key}: no verifier named {parts[1]!r} in the base or any verifier set; "
                              f"known: {sorted(verifier_names)}")
        if parts[2] not in _VERIFIER_FIELDS or parts[2] in ("kind", "name"):
            raise ConfigError(f"search.{key}: unknown verifier field {parts[2]!r}; searchable: "
                              f"{sorted(_VERIFIER_FIELDS - {'kind', 'name'})}")
        if nested and parts[3] not in Placement.model_fields:
            raise ConfigError(f"search.{key}: unknown placement field {parts[3]!r}; searchable: "
                              f"{list(Placement.model_fields)}")
        return
    model: type[BaseModel] = TrainConfig
    for i, p in enumerate(parts):
        field = model.model_fields.get(p)
        if field is None and (new := moved_key(model, p, "".join(f"{q}." for q in parts[:i]))):
            raise ConfigError(f"search.{'.'.join(parts[:i + 1])} moved to search.{new}")
        if field is None:
            raise ConfigError(f"search.{key}: unknown config key {'.'.join(parts[:i + 1])!r} "
                              f"(`softverify train --help-config` lists the keys)")
        ann = field.annotation
        last = i == len(parts) - 1
        is_section = isinstance(ann, type) and issubclass(ann, BaseModel)
        if last and is_section:
            raise ConfigError(f"search.{key}: is a whole section; search one of its fields")
        if not last:
            if not is_section:
                raise ConfigError(f"search.{key}: {'.'.join(parts[:i + 1])!r} is not a section")
            model = ann


def _spec_error(er: dict) -> str:
    """One problem of a verifier spec in a verifier set, a key that moved named with its new place."""
    loc = ".".join(map(str, er["loc"]))
    new = moved_key(VerifierSpec, loc) if er["type"] == "extra_forbidden" else None
    return f"{loc} moved to {new}" if new else f"{loc}: {er['msg']}"


def _parse_verifier_sets(value: Any) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """``{name: [specs]}`` (sampled like ``choice``) or ``{grid: {name: [specs]}}`` (every set
    is tried, ``num_samples`` times each -- what an ablation table wants)."""
    mode = "choice"
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("grid", "choice") \
            and isinstance(next(iter(value.values())), dict):
        (mode, value), = value.items()
    if not isinstance(value, dict) or not value:
        raise ConfigError("search.verifier_sets: expected a non-empty mapping name -> list of verifier specs "
                          "(empty search space)")
    from softverify.verifiers import available_kinds

    known = available_kinds()
    out = {}
    for name, specs in value.items():
        if not isinstance(specs, list) or not specs:
            raise ConfigError(f"search.verifier_sets.{name}: expected a non-empty list of verifier specs")
        for j, s in enumerate(specs):
            try:
                VerifierSpec.model_validate(s)
            except ValidationError as e:
                msg = "; ".join(_spec_error(er) for er in e.errors())
                raise ConfigError(f"search.verifier_sets.{name}[{j}]: {msg}") from None
            if s["kind"] not in known:
                raise ConfigError(f"search.verifier_sets.{name}[{j}]: unknown verifier kind {s['kind']!r}; "
                                  f"expected one of {known}")
        out[str(name)] = [dict(s) for s in specs]
        for s in out[str(name)]:
            _absolute_params(s)
    return mode, out


def _abs_if_local(value: Any) -> Any:
    if isinstance(value, str) and (value.startswith((".", "~")) or Path(value).expanduser().exists()):
        return str(Path(value).expanduser().resolve())
    return value


def _absolute_params(verifier: dict[str, Any]) -> None:
    """Verifier params that name local files (``model_dir: ./worldmodels/k562``) become absolute."""
    params = verifier.get("params")
    if isinstance(params, dict):
        verifier["params"] = {k: _abs_if_local(v) if isinstance(v, str) and ("/" in v or Path(v).exists()) else v
                              for k, v in params.items()}


def _absolute_paths(raw: dict[str, Any]) -> dict[str, Any]:
    """Tune runs each trial in its own working directory, so relative paths (resolved, like
    ``softverify train`` does, against the directory the command runs in) become absolute."""
    raw = copy.deepcopy(raw)
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    if not data.get("mirror") and os.environ.get("SOFTVERIFY_DATA_MIRROR"):  # a relative env path too
        raw["data"] = {**data, "mirror": os.environ["SOFTVERIFY_DATA_MIRROR"]}
    for v in raw.get("verifiers") or []:
        _absolute_params(v)
    for section, key in (("model", "path"), ("model", "cache_dir"), ("data", "path"), ("data", "mirror")):
        sec = raw.get(section)
        if isinstance(sec, dict) and sec.get(key):
            sec[key] = _abs_if_local(sec[key])
    return raw


def parse_sweep(raw: dict[str, Any], base_dir: Path | None = None) -> Sweep:
    """Validate a sweep dict completely (schema, keys, ranges, representative trials)."""
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "<root>"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"  {loc}: {msg}")
        raise ConfigError("invalid sweep file:\n" + "\n".join(lines)) from None
    if spec.base_config is not None:
        p = Path(spec.base_config)
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        base_raw = read_yaml(p)
    else:
        base_raw = copy.deepcopy(spec.base or {})
    base_raw = _absolute_paths(base_raw)
    try:
        build_config(base_raw)
    except ConfigError as e:
        raise ConfigError(f"base config: {e}") from None
    if not spec.search:
        raise ConfigError("search: empty search space (give at least one key or verifier_sets)")
    search = dict(spec.search)
    vmode, vsets = (_parse_verifier_sets(search.pop(VERIFIER_SET_KEY + "s")) if VERIFIER_SET_KEY + "s" in search
                    else ("choice", {}))
    names = {v.get("name") or v.get("kind") for v in base_raw.get("verifiers") or []}
    if not base_raw.get("verifiers"):
        names |= {v.display_name for v in TrainConfig().verifiers}
    for specs in vsets.values():
        names |= {s.get("name") or s.get("kind") for s in specs}
    dists = {}
    for key, value in search.items():
        _check_key(key, names)
        dists[key] = _parse_dist(key, value)
        if key == "model.path":
            dists[key] = (dists[key][0], [_abs_if_local(v) for v in dists[key][1]])
    t = spec.tune
    if t.search_alg == "grid":
        bad = [k for k, (kind, _) in dists.items() if kind not in ("choice", "grid")]
        if bad:
            raise ConfigError(f"tune.search_alg=grid needs finite spaces; continuous keys: {bad}")
    if t.search_alg == "optuna" and any(kind == "grid" for kind, _ in dists.values()):
        raise ConfigError("tune.search_alg=optuna cannot expand 'grid' axes; use 'choice'")
    spec = spec.model_copy(update={"output_dir": str(Path(spec.output_dir).expanduser().resolve())})
    if vmode == "grid" and t.search_alg == "optuna":
        raise ConfigError("tune.search_alg=optuna cannot expand a verifier_sets grid; use a plain mapping (choice)")
    if t.metric is None:
        d = build_config(base_raw).data
        metric = "eval_forced/auc_per_gene" if d.source == "perturbqa" and d.eval_genes else "eval_forced/auroc"
        t = t.model_copy(update={"metric": metric})
        spec = spec.model_copy(update={"tune": t})
    check_eval_metric(t.metric)
    sweep = Sweep(spec, base_raw, dists, vsets, vmode)
    if sweep.varies_reward and not t.metric.startswith("eval"):
        varied = ([f"search.{VERIFIER_SET_KEY}s"] if len(vsets) > 1 else []) + \
            [f"search.{k}" for k in dists if k.startswith(("verifiers.", "reward."))]
        raise ConfigError(f"tune.metric={t.metric!r}: {', '.join(varied)} give trials different reward functions, "
                          "so their rewards are not comparable; rank by a held-out eval metric instead "
                          "(tune.metric: eval_forced/auc_per_gene, eval_forced/auroc, eval/mcc, eval/f1 or "
                          "eval/balanced_accuracy)")
    steps = build_config(base_raw).trainer.steps
    if sweep.uses_eval:
        every = build_config(base_raw).trainer.eval_every or 1
        if steps % every:
            raise ConfigError(f"tune.metric={t.metric!r} is reported at eval steps: trainer.steps ({steps}) must be "
                              f"a multiple of trainer.eval_every ({every})")
    if t.scheduler == "asha" and t.asha.grace_period > steps:
        raise ConfigError(f"tune.asha.grace_period ({t.asha.grace_period}) exceeds trainer.steps ({steps})")
    sweep.validate_trials()
    return sweep


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> Sweep:
    """Read a sweep YAML, apply ``--set key=value`` overrides (e.g. ``base.model.path=...``), validate."""
    raw = read_yaml(path)
    plain = []
    for ov in overrides or []:
        key, sep, value = ov.partition("=")
        if key.startswith("search.") and sep:  # search keys are dotted paths themselves
            search = dict(raw.get("search") or {})
            sub = key[len("search."):]
            if sub.startswith(VERIFIER_SET_KEY + "s."):
                search[VERIFIER_SET_KEY + "s"] = {**(search.get(VERIFIER_SET_KEY + "s") or {}),
                                                  sub.split(".", 1)[1]: yaml.safe_load(value)}
            else:
                search[sub] = yaml.safe_load(value)
            raw["search"] = search
        elif key.startswith("base.") and sep and raw.get("base_config") is None:
            # the base is a TrainConfig dict: its values are read for TrainConfig's field types
            raw["base"] = apply_overrides(raw.get("base") or {}, [ov[len("base."):]], TrainConfig)
        else:
            plain.append(ov)
    raw = apply_overrides(raw, plain, SweepSpec)
    return parse_sweep(raw, Path(path).resolve().parent)


# ---------------------------------------------------------------------------- Tune objects


def param_space(sweep: Sweep) -> dict[str, Any]:
    """The search space as Tune sample objects (a flat dict keyed by dotted path)."""
    from ray import tune

    grid_all = sweep.spec.tune.search_alg == "grid"
    space: dict[str, Any] = {}
    if sweep.verifier_sets:
        names = list(sweep.verifier_sets)
        grid = grid_all or sweep.verifier_sets_mode == "grid"
        space[VERIFIER_SET_KEY] = tune.grid_search(names) if grid else tune.choice(names)
    for key, (kind, args) in sweep.dists.items():
        if kind == "grid" or (kind == "choice" and grid_all):
            space[key] = tune.grid_search(args)
        elif kind == "choice":
            space[key] = tune.choice(args)
        elif kind == "uniform":
            space[key] = tune.uniform(*args)
        elif kind == "loguniform":
            space[key] = tune.loguniform(*args)
        else:
            space[key] = tune.randint(*args)
    return space
