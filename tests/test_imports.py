"""softverify's modules import each other without cycles, counting the imports written
inside functions too (a lazy import still ties the two modules together)."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "softverify"


def _modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(PKG.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """softverify modules ``name`` imports (module level or inside functions)."""
    targets: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            targets += [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
    out = set()
    for t in targets:
        while t and t not in mods:  # `from a.b import func` -> module a.b
            t = t.rpartition(".")[0]
        if t.startswith("softverify") and t != name:
            out.add(t)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_softverify():
    mods = _modules()
    graph = {m: _imports(m, f, mods) for m, f in mods.items()}
    assert sum(len(v) for v in graph.values()) > 100  # the walker sees the imports at all
    assert "softverify.configbase" in graph["softverify.config"]
    cycles = _cycles(graph)
    detail = "\n".join(" <-> ".join(c) + "\n  " + "\n  ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c)
                       for c in cycles)
    assert not cycles, "import cycles:\n" + detail


def test_leaf_modules_import_nothing_from_softverify():
    mods = _modules()
    for leaf in ("softverify.configbase", "softverify.registry", "softverify.learner.losses"):
        assert _imports(leaf, mods[leaf], mods) == set(), leaf


def test_the_verifier_host_and_the_driver_do_not_import_torch():
    """The verifier host actor (one per run) scores rule verifiers and normalises rewards with
    numpy; the driver builds batches and advantages and holds the actor classes (whose torch
    imports happen inside the actors). Neither needs torch, whose import costs ~1-1.5 s of CPU
    and ~180 MB in every such process (a run's set-up pays it once per host)."""
    import subprocess
    import sys

    code = ("import sys; import softverify.actors.verifier_pool, softverify.platform.train.trainer, "
            "softverify.actors.learner_group, softverify.actors.rollout, "  # what Trainer.setup imports
            "softverify.rewards, softverify.learner.advantages; "
            "from softverify.config import build_config; from softverify.verifiers.suite import VerifierSuite; "
            "from softverify.types import Sample; "
            "s = VerifierSuite(build_config({}, []).verifiers); "
            "s.rewards(s.score([Sample('p', 'q', '<answer>yes</answer>', {'label': 1})])); "
            "print(sorted(m for m in ('torch', 'transformers', 'deepspeed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PKG.parent, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
