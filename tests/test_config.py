"""Config validation: every user mistake gets a clear message naming the field."""
import subprocess
import sys

import pytest

from softverify.config import ConfigError, TrainConfig, apply_overrides, build_config, describe, load_config


def test_defaults_are_the_embedded_job():
    cfg = build_config()
    assert cfg.model.path == "smollm2"
    assert cfg.data.source == "perturbqa" and cfg.data.cell_lines == ["k562"]
    assert cfg.rollout.num_workers >= 2 and cfg.learner.num_ranks == 2
    assert [v.kind for v in cfg.verifiers] == ["hard", "format"]
    # the default job evaluates what the policy believes, on enough questions to mean something
    assert cfg.trainer.eval_every > 0 and cfg.data.eval_size >= 256
    assert cfg.prompt.style == "direct" and cfg.rollout.assistant_prefix == "<answer>"


def test_prompt_style_fills_only_unset_rollout_fields():
    cot = build_config({}, ["prompt.style=cot"])
    assert cot.rollout.assistant_prefix == "<think>\n" and cot.rollout.max_new_tokens == 128
    assert "Think step by step" in cot.rollout.system_prompt
    mine = build_config({}, ["prompt.style=cot", "rollout.max_new_tokens=32", "rollout.assistant_prefix=''"])
    assert mine.rollout.max_new_tokens == 32 and mine.rollout.assistant_prefix == ""
    with pytest.raises(ConfigError, match=r"prompt\.style"):
        build_config({}, ["prompt.style=verbose"])
    with pytest.raises(ConfigError, match="choose one"):
        build_config({}, ["learner.lora.enabled=true", "learner.train_layers=2"])


def test_unknown_key_names_the_path():
    with pytest.raises(ConfigError, match=r"rollout\.grup_size: unknown key"):
        build_config({"rollout": {"grup_size": 4}})


def test_unknown_keys_get_the_closest_valid_keys_suggested(tmp_path):
    """A misspelled key, in a YAML file or in --set, at any depth (a section, a nested
    section, a list item), gets 'did you mean'; a key like nothing valid gets no guess."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rollout:\n  group_sise: 4\nlearner:\n  lora:\n    alpah: 8\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg, ["rollot.group_size=2", "verifiers=[{kind: hard, wieght: 2}]", "trainer.zzzz=1"])
    lines = str(e.value).splitlines()
    for expected in ("rollout.group_sise: unknown key; did you mean 'group_size'?",
                     "learner.lora.alpah: unknown key; did you mean 'alpha'?",
                     "rollot: unknown key; did you mean 'rollout'?",
                     "verifiers.0.wieght: unknown key; did you mean 'weight'?",
                     "trainer.zzzz: unknown key (check the spelling;"):
        assert any(line.strip().startswith(expected) for line in lines), (expected, lines)
    assert "did you mean" not in next(line for line in lines if "zzzz" in line)


def test_bad_type_names_field_and_value():
    with pytest.raises(ConfigError, match=r"learner\.lr: .*got 'fast'"):
        build_config({}, ["learner.lr=fast"])


def test_out_of_range_and_cross_field_checks():
    with pytest.raises(ConfigError, match=r"rollout\.group_size"):
        build_config({}, ["rollout.group_size=1"])
    with pytest.raises(ConfigError, match="smaller than rollout.num_workers"):
        build_config({}, ["rollout.prompts_per_step=1", "rollout.num_workers=2"])


def test_verifier_errors():
    with pytest.raises(ConfigError, match="unknown verifier kind 'oracle'"):
        build_config({"verifiers": [{"kind": "oracle"}]})
    with pytest.raises(ConfigError, match="all verifier weights are 0"):
        build_config({"verifiers": [{"kind": "hard", "weight": 0}]})
    with pytest.raises(ConfigError, match="repeated: \\['hard'\\]"):
        build_config({"verifiers": [{"kind": "hard"}, {"kind": "hard"}]})


def test_missing_data_file(tmp_path):
    with pytest.raises(ConfigError, match="data.path .*does not exist"):
        build_config({}, ["data.source=file", f"data.path={tmp_path / 'nope.jsonl'}"])
    with pytest.raises(ConfigError, match="needs data.path"):
        build_config({}, ["data.source=file"])


def test_yaml_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(notmap)


def test_overrides_parse_like_yaml():
    raw = apply_overrides({"rollout": {"group_size": 4}}, ["rollout.group_size=8", "rollout.stop=[a, b]"])
    assert raw["rollout"] == {"group_size": 8, "stop": ["a", "b"]}
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        apply_overrides({}, ["rollout.group_size"])


def test_yaml_round_trip(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("rollout:\n  group_size: 6\nverifiers:\n  - {kind: hard, weight: 2}\n")
    cfg = load_config(p, ["trainer.steps=3"])
    assert cfg.rollout.group_size == 6 and cfg.trainer.steps == 3 and cfg.verifiers[0].weight == 2


def test_describe_documents_every_field():
    lines = describe()
    assert any(l.startswith("rollout.group_size = 8:") for l in lines)
    assert any(l.startswith("learner.lora.r = 16:") for l in lines)  # nested sections are listed too
    assert all(":" in l and not l.endswith(": ") for l in lines)


def test_cli_reports_config_errors_without_traceback():
    r = subprocess.run([sys.executable, "-m", "softverify.cli", "train", "--set", "rollout.grup_size=3"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "rollout.grup_size: unknown key; did you mean 'group_size'?" in r.stderr
    assert "Traceback" not in r.stderr


def test_overrides_index_into_lists_copy_on_write():
    raw = {"verifiers": [{"kind": "hard"}, {"kind": "world_model", "params": {"threshold": "median"}}]}
    out = apply_overrides(raw, ["verifiers.1.params.threshold=0.05", "verifiers.0.weight=0.5"])
    assert out["verifiers"] == [{"kind": "hard", "weight": 0.5},
                                {"kind": "world_model", "params": {"threshold": 0.05}}]
    assert raw["verifiers"][1]["params"]["threshold"] == "median" and "weight" not in raw["verifiers"][0]
    assert apply_overrides(raw, ["verifiers.-1.kind=format"])["verifiers"][1]["kind"] == "format"
    with pytest.raises(ConfigError, match="verifiers is a list of 2; '2' is not an index"):
        apply_overrides(raw, ["verifiers.2.weight=1"])
    with pytest.raises(ConfigError, match="'x' is not an index"):
        apply_overrides(raw, ["verifiers.x=1"])
    with pytest.raises(ConfigError, match="is not an index"):  # a Unicode digit is not an index either
        apply_overrides(raw, ["verifiers.\u00b2=1"])
    cfg = build_config({"verifiers": [{"kind": "hard"}, {"kind": "format"}]}, ["verifiers.1.weight=0.25"])
    assert [v.weight for v in cfg.verifiers] == [1.0, 0.25]


def test_override_values_that_yaml_would_turn_into_mappings_stay_strings(tmp_path):
    from softverify.config import ConfigError, apply_overrides, read_yaml

    assert apply_overrides({}, ["a.b=Answer:", "a.c=[1, 2]", "a.d={x: 1}"]) == {"a": {"b": "Answer:", "c": [1, 2],
                                                                                    "d": {"x": 1}}}
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  steps: [1,\n")
    with pytest.raises(ConfigError) as e:
        read_yaml(bad)
    assert str(e.value) == (f"config file {str(bad)!r} is not valid YAML: line 3, column 1: expected the node "
                            "content, but found '<stream end>' (while parsing a flow node)")  # the file and the line
    bad.write_text("trainer:\n  steps: 3\n rollout: x\n")
    with pytest.raises(ConfigError, match=r"bad.yaml' is not valid YAML: line 3, column 2: .*starts at line 1\)$"):
        read_yaml(bad)


def test_overrides_read_values_for_their_field_types():
    """A string field keeps the text as written (YAML alone makes `yes` True and `123` an int: "Input
    should be a valid string"); typed fields still get YAML's reading; list entries are typed too."""
    cfg = build_config({}, ["rollout.system_prompt=yes", "rollout.assistant_prefix=Answer:", "trainer.output_dir=2024",
                            "model.path=1e5", "rollout.group_size=6", "learner.lr=1e-3", "data.balance=no",
                            "data.mirror=null", "rollout.stop=[a, 'b: c']"])
    assert (cfg.rollout.system_prompt, cfg.rollout.assistant_prefix) == ("yes", "Answer:")
    assert (cfg.trainer.output_dir, cfg.model.path) == ("2024", "1e5")
    assert (cfg.rollout.group_size, cfg.learner.lr, cfg.data.balance, cfg.data.mirror) == (6, 1e-3, False, None)
    assert cfg.rollout.stop == ["a", "b: c"]
    assert build_config({}, ["rollout.assistant_prefix='yes'"]).rollout.assistant_prefix == "yes"  # quoting still works
    # list-indexed keys: a typed field of an entry, an untyped param, and the default list when the config sets none
    raw = {"verifiers": [{"kind": "hard"}, {"kind": "format"}]}
    cfg = build_config(raw, ["verifiers.1.name=no", "verifiers.1.params.max_chars=300", "verifiers.0.weight=0.5"])
    assert (cfg.verifiers[1].name, cfg.verifiers[1].params, cfg.verifiers[0].weight) == ("no", {"max_chars": 300}, 0.5)
    assert apply_overrides(raw, ["verifiers.1.params.threshold=median"], TrainConfig)["verifiers"][1]["params"] == {
        "threshold": "median"}
    cfg = build_config({}, ["verifiers.1.threshold=0.05"])  # indexes the default [hard, format]
    assert [(v.kind, v.threshold) for v in cfg.verifiers] == [("hard", None), ("format", 0.05)]
    with pytest.raises(ConfigError, match="rollout.group_size: Input should be a valid integer.*'eight'"):
        build_config({}, ["rollout.group_size=eight"])  # a value no type takes is reported as written
    from softverify.envs.donor_game.config import build_donor_config

    assert build_donor_config({}, ["agent.answer_prefix=Answer:", "agent.strategy_prefix=no"]).agent.strategy_prefix == "no"


def test_sync_dtype_follows_the_rollout_engines_unless_set():
    assert build_config({}, []).learner.sync_dtype == "float32"
    assert build_config({}, ["rollout.dtype=bfloat16"]).learner.sync_dtype == "bfloat16"  # what the engine rounds to
    pinned = build_config({}, ["rollout.dtype=bfloat16", "learner.sync_dtype=float32"])
    assert pinned.learner.sync_dtype == "float32"


def test_a_heap_reserve_needs_retention():
    with pytest.raises(ValueError, match=r"reserve_memory_gb=2.0 needs learner.retain_freed_memory=true"):
        build_config({}, ["learner.reserve_memory_gb=2", "learner.retain_freed_memory=false"])
    with pytest.raises(ValueError, match="reserve_memory_gb"):
        build_config({}, ["learner.reserve_memory_gb=-1"])


def test_a_world_model_verifier_gets_the_recipe_that_trains_unless_told_otherwise():
    """threshold 'median' over the training prompts and steps stratified by its decisions; a
    threshold or stratify_by the user set is kept, and extra tasks (whose rows the world model
    cannot score, so stratifying would leave them out) or a prompt file turn 'auto' off."""
    from softverify.config import build_config

    wm = {"kind": "world_model", "params": {"model_dir": "wm"}}
    cfg = build_config({"verifiers": [{"kind": "hard"}, dict(wm, name="teacher"), {"kind": "format", "weight": 0.25}]})
    assert cfg.verifiers[1].params == {"model_dir": "wm", "threshold": "median"}
    assert cfg.data.stratify_by == "teacher"
    assert build_config({}).data.stratify_by is None  # hard + format: nothing to stratify by
    kept = build_config({"verifiers": [{"kind": "world_model", "threshold": 0.3, "params": {"model_dir": "wm"}},
                                       {"kind": "world_model", "name": "b", "params": {"model_dir": "wm",
                                                                                    "threshold": 0.2}}],
                         "data": {"stratify_by": None}})
    assert "threshold" not in kept.verifiers[0].params and kept.verifiers[1].params["threshold"] == 0.2
    assert kept.data.stratify_by is None
    assert build_config({"verifiers": [dict(wm, weight=0.0), {"kind": "hard"}]}).data.stratify_by is None
    assert build_config({"verifiers": [wm], "data": {"stratify_by": "label"}}).data.stratify_by == "label"
    extra = {"task": "coexpression", "matrix": __file__, "num_prompts": 4}
    assert build_config({"verifiers": [wm], "data": {"extra_tasks": [extra]}}).data.stratify_by is None
    assert build_config({"verifiers": [wm], "data": {"source": "file", "path": __file__}}).data.stratify_by is None
