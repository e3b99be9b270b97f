"""A run's verifiers are built once: the trainer's pre-flight builds each one (check_specs),
and the threshold policy, the base-rate check, the stratified prompt order and eval's p all
read those verifiers' world models instead of loading them again. Ray-free: the pre-flight
runs before any cluster starts, so it is called here on a Trainer that never sets up."""
from __future__ import annotations

import json
from itertools import permutations

import numpy as np
import pandas as pd
import pytest

from softverify.bio import teacher_table
from softverify.bio.teacher_table import make_table, save_table
from softverify.config import build_config
from softverify.data import StratifiedOrder, load_prompts
from softverify.platform.train.evaluate import Evaluator
from softverify.platform.train.trainer import Trainer
from softverify.verifiers.balance import resolve_threshold_policies, verifier_decisions
from softverify.verifiers.report import verifier_report
from softverify.verifiers.soft import WorldModelVerifier

GENES = ["TP53", "MYC", "GATA1", "KLF1", "CDKN1A", "HBG1", "TAL1", "LMO2"]  # tests/conftest.py's prompt_file


@pytest.fixture
def table(tmp_path):
    """A teacher table over every ordered pair of the prompt file's genes, p spread over (0, 1)."""
    pairs = pd.DataFrame(list(permutations(GENES, 2)), columns=["pert", "gene"])
    p = np.random.default_rng(0).uniform(0.05, 0.95, len(pairs))
    return save_table(make_table(pairs, p), tmp_path / "teacher.parquet")


@pytest.fixture
def loads(monkeypatch) -> list[dict]:
    """Every world-model load (teacher_table.load_teacher, which every consumer imports at call time)."""
    seen, real = [], teacher_table.load_teacher

    def counting(params):
        seen.append(dict(params))
        return real(params)

    monkeypatch.setattr(teacher_table, "load_teacher", counting)
    return seen


def _cfg(prompt_file, table, tmp_path):
    return build_config({}, [
        "data.source=file", f"data.path={prompt_file}", f"trainer.output_dir={tmp_path / 'run'}",
        "rollout.prompts_per_step=2", "learner.num_ranks=1", "trainer.eval_every=1",
        f"verifiers=[{{kind: hard}}, {{kind: world_model, name: teacher, params: {{p_table: {table}}}}}]",
        "data.stratify_by=teacher",
    ])


def test_a_runs_preflight_loads_each_world_model_once(prompt_file, table, tmp_path, loads):
    cfg = _cfg(prompt_file, table, tmp_path)
    assert cfg.verifiers[1].params["threshold"] == "median"  # the config's default policy for a world model
    tr = Trainer(cfg)
    tr.train_rows = load_prompts(cfg.data, cfg.data.split)
    tr._preflight_verifiers()
    order = tr._prompt_order()
    rows = [json.loads(line) for line in prompt_file.read_text().splitlines()]
    p_eval = Evaluator(tr.cfg, workers=None, rows=None, world_models=tr.world_models).world_model_p(rows)
    assert loads == [{"model_dir": None, "p_table": str(table)}]  # built once, by check_specs

    # what the shared verifier gave is what loading the world model for each consumer gave
    t = tr.thresholds_chosen["teacher"]
    assert tr.cfg.verifiers[1].params["threshold"] == t and tr.world_models["teacher"].threshold == t
    assert tr.base_rate is not None and tr.base_rate["n_questions"] == len(tr.train_rows)
    alone, chosen = resolve_threshold_policies(cfg.verifiers, tr.train_rows)
    assert chosen == {"teacher": t}
    fresh = WorldModelVerifier(p_table=str(table), threshold=t)
    decisions = verifier_decisions(alone[1], tr.train_rows)
    assert isinstance(order, StratifiedOrder)
    assert sorted(order.pools[0]) == np.nonzero(decisions == 1)[0].tolist()
    assert sorted(order.pools[1]) == np.nonzero(decisions == 0)[0].tolist()
    p = fresh.model.predict_proba([r["pert"] for r in rows], [r["gene"] for r in rows])
    np.testing.assert_allclose(p_eval, p)  # no negated rows: the p itself


def test_the_report_builds_its_verifiers_once_or_takes_the_callers(prompt_file, table, tmp_path, loads):
    cfg = _cfg(prompt_file, table, tmp_path)
    rows = [json.loads(line) for line in prompt_file.read_text().splitlines()]
    rep = verifier_report(cfg.verifiers, rows)  # stand-alone, as `softverify verifiers report` calls it
    assert len(loads) == 1 and set(rep["thresholds_chosen"]) == {"teacher"}
    from softverify.verifiers.suite import VerifierSuite

    suite = VerifierSuite(cfg.verifiers, defer_threshold_policies=True)
    assert len(loads) == 2
    again = verifier_report(cfg.verifiers, rows, built=suite.verifiers)
    assert len(loads) == 2  # the suite's verifiers, no load of its own
    assert again["thresholds_chosen"] == rep["thresholds_chosen"]
    for key in ("fixed_strategies", "verifiers"):  # as JSON: NaN (an empty reliability bin) equals NaN there
        assert json.dumps(again[key], sort_keys=True) == json.dumps(rep[key], sort_keys=True)
