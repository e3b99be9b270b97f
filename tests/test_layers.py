"""softverify's packages form layers, and no import runs upwards (counting imports written
inside functions: a lazy import still ties the two modules together).

From the bottom: the foundation (the root modules: types, config, rewards...; the folders
infra/, model/, metrics/, sync/ and learner/'s math; the training-mode table ``softverify.algo``
and its interface ``algo.base``), then engines/ and
bio/, verifiers/, then the three users of those: the training modes (algo/'s modules),
evaluation/ and envs/, then the Ray actors, then platform/ (train, serve, sweep, jobs).
A leaf module (one that imports nothing from softverify) can be used from any layer: it
cannot carry a dependency upwards. The command-line modules (``softverify.cli`` and each
``*.cli``) are the shell around all of it and are not ranked."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_imports import _imports, _modules  # noqa: E402

#: a package's layer (second name of the dotted module); a package not named here is foundation (0)
PACKAGE_LAYER = {"infra": 0, "model": 0, "metrics": 0, "sync": 0, "learner": 0, "engines": 1, "bio": 1,
                 "verifiers": 2, "algo": 3, "evaluation": 3, "envs": 3, "actors": 4, "platform": 5}
#: modules whose layer is not their package's: the mode table and interface the config reads
#: at load time, and the root modules that assemble a higher layer (the prompt loader reads
#: bio/ and verifiers/, the learner rank runs a training mode)
MODULE_LAYER = {"softverify.algo": 0, "softverify.algo.base": 0, "softverify.data": 2, "softverify.learner.rank": 3}


def layer(module: str) -> int:
    if module in MODULE_LAYER:
        return MODULE_LAYER[module]
    parts = module.split(".")
    return PACKAGE_LAYER.get(parts[1], 0) if len(parts) > 1 else 0


def _is_cli(module: str) -> bool:
    return module.rsplit(".", 1)[-1] == "cli"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Each ``a -> b`` where b's layer is above a's, b is no leaf, and neither is a CLI module."""
    out = []
    for a, targets in sorted(graph.items()):
        if _is_cli(a):
            continue
        for b in sorted(targets):
            if not _is_cli(b) and graph.get(b) and layer(b) > layer(a):
                out.append(f"{a} (layer {layer(a)}) -> {b} (layer {layer(b)})")
    return out


def test_the_rule_flags_an_upward_import():
    graph = {"softverify.engines.hf": {"softverify.actors.rollout"}, "softverify.actors.rollout": {"softverify.types"},
             "softverify.types": set()}
    assert upward_imports(graph) == ["softverify.engines.hf (layer 1) -> softverify.actors.rollout (layer 4)"]
    # downwards, into a leaf, or from a CLI module: allowed
    graph = {"softverify.actors.rollout": {"softverify.engines.hf"}, "softverify.engines.hf": {"softverify.types"},
             "softverify.config": {"softverify.engines.rules"}, "softverify.engines.rules": set(),
             "softverify.verifiers.cli": {"softverify.platform.x"}, "softverify.platform.x": {"softverify.types"},
             "softverify.types": set()}
    assert upward_imports(graph) == []


def test_no_upward_imports_in_softverify():
    mods = _modules()
    graph = {m: _imports(m, f, mods) for m, f in mods.items()}
    assert {"softverify.actors.rollout", "softverify.platform.train.trainer", "softverify.algo.sampled"} <= set(graph)
    bad = upward_imports(graph)
    assert not bad, "imports that run upwards:\n  " + "\n  ".join(bad)
