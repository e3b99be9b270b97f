"""Every shipped config trains: each configs/*.yaml, run through ``softverify train`` for a few
steps on a tiny random model, with its runs/assets/ paths pointed at small real assets made
here (a world model fitted on real K562 rows, the real gene KB, a real co-expression matrix and
its questions), must train questions with rewards that vary. A config whose verifiers pay every
sample alike, or whose completions never reach an answer, trains nothing and fails here --
the failure the world-model config once shipped with."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from softverify.cli import main

pytestmark = pytest.mark.timeout(900)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SHIPPED = sorted(CONFIGS.glob("*.yaml"))


@pytest.fixture(scope="module")
def assets(wm_dir, kb_params, coexpr_npz, tmp_path_factory) -> dict[str, str]:
    """runs/assets/<name> -> a small real asset of the same kind (configs/README.md builds the
    full ones). Both world models map to the small one: the test asks whether a config trains,
    not how well its teacher ranks."""
    out = tmp_path_factory.mktemp("assets")
    questions = out / "coexpr_questions.parquet"
    assert main(["coexpr", "questions", "--matrix", str(coexpr_npz), "--n", "64", "--out", str(questions)]) == 0
    wm = str(wm_dir[0])
    return {"runs/assets/wm_go64": wm, "runs/assets/wm_xline": wm, "runs/assets/kb": kb_params["kb_dir"],
            "runs/assets/coexpr_pbmc68k_npmi.npz": str(coexpr_npz),
            "runs/assets/coexpr_questions.parquet": str(questions)}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_trains(path, assets, ray_cluster, tiny_model_dir, data_root, tmp_path):
    text = path.read_text()
    for name in sorted(assets, key=len, reverse=True):
        text = text.replace(name, assets[name])
    assert "runs/assets/" not in text, f"{path.name} names an asset this test does not make"
    cfg = tmp_path / path.name
    cfg.write_text(text)
    out = tmp_path / "run"
    rc = main(["train", "--config", str(cfg), "--model", str(tiny_model_dir), "--output-dir", str(out),
               "--data-mirror", str(data_root / "perturbqa"), "--steps", "3",
               "--set", "rollout.num_workers=1", "--set", "learner.num_ranks=1",
               "--set", "rollout.prompts_per_step=4", "--set", "rollout.max_new_tokens=16",
               "--set", "data.max_prompts=64", "--set", "trainer.eval_every=0",
               "--set", "trainer.checkpoint_every=0", "--set", "trainer.progress=false"])
    assert rc == 0, f"{path.name}: train exited {rc}"
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    trained = sum(r.get("questions_trained") or 0 for r in rows)
    assert trained > 0, f"{path.name} trained no question in 3 steps: {[r.get('reward_std') for r in rows]}"
    assert any((r.get("reward_std") or 0) > 0 for r in rows), f"{path.name}: every reward alike"


TUNE = sorted((CONFIGS.parent / "tune_configs").glob("*.yaml"))


def _tune_trials() -> list[tuple[Path, str | None]]:
    """(tune config, verifier set) pairs: every verifier set of every shipped sweep."""
    import yaml

    out = []
    for path in TUNE:
        sets = ((yaml.safe_load(path.read_text()).get("search") or {}).get("verifier_sets") or {})
        sets = sets.get("grid", sets)
        out += [(path, name) for name in sets] or [(path, None)]
    return out


@pytest.mark.parametrize("path,vset", _tune_trials(), ids=lambda x: x.name if isinstance(x, Path) else str(x))
def test_shipped_sweep_trial_trains(path, vset, assets, kb_params, ray_cluster, tiny_model_dir, data_root, tmp_path):
    """Each verifier set of each shipped sweep, as its trial config (the sweep's base with the
    set in place; other searched keys at the base's values), trains on a tiny random model."""
    import yaml

    from softverify.platform.sweep.spec import VERIFIER_SET_KEY, load_sweep

    text = path.read_text().replace("./worldmodels/loco_k562", assets["runs/assets/wm_go64"])
    # knowledge verifiers without kb_dir build the KB from downloaded gene files: point them at the small one
    text = text.replace("{kind: go_rouge, params: {", "{kind: go_rouge, params: {kb_dir: %s, " % kb_params["kb_dir"])
    text = text.replace("{kind: go_rouge, weight: 0.5, params: {",
                        "{kind: go_rouge, weight: 0.5, params: {kb_dir: %s, " % kb_params["kb_dir"])
    spec = tmp_path / path.name
    spec.write_text(text)
    sweep = load_sweep(spec, [f"base.model.path={tiny_model_dir}", f"base.data.mirror={data_root / 'perturbqa'}"])
    raw = sweep.trial_raw({VERIFIER_SET_KEY: vset} if vset else {})
    cfg = tmp_path / "trial.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    rc = main(["train", "--config", str(cfg), "--output-dir", str(out), "--steps", "3",
               "--set", "rollout.prompts_per_step=4", "--set", "rollout.max_new_tokens=16",
               "--set", "data.max_prompts=64", "--set", "trainer.eval_every=0",
               "--set", "trainer.checkpoint_every=0", "--set", "trainer.progress=false"])
    assert rc == 0, f"{path.name} [{vset}]: train exited {rc}"
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(r.get("questions_trained") or 0 for r in rows) > 0, f"{path.name} [{vset}] trained no question"
    assert any((r.get("reward_std") or 0) > 0 for r in rows), f"{path.name} [{vset}]: every reward alike"
