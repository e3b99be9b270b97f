"""Per-role placement sections and their check against a cluster's nodes (no Ray needed: the
check reads ``ray.nodes()``-shaped rows; the real multi-node runs are in tests/multinode)."""
from __future__ import annotations

import pytest

from softverify.config import ConfigError, build_config
from softverify.infra.placement import Placement, actor_options, check_placement, label_matches, role_requests, totals

PINNED = ["rollout.placement.resources={rollout_node: 1}", "learner.placement.resources={learner_node: 1}",
          "verifiers=[{kind: hard, placement: {node_labels: {role: learner}}}, "
          "{kind: format, placement: {resources: {verifier_node: 0.5}}}]"]


def node(cpus: float, labels: dict | None = None, alive: bool = True, **custom: float) -> dict:
    return {"NodeID": "n", "Alive": alive, "Resources": {"CPU": cpus, **custom}, "Labels": labels or {}}


def test_keys_reach_the_role_requests_and_actor_options():
    cfg = build_config({}, PINNED)
    roll, learn, hard, fmt = role_requests(cfg)
    assert (roll.role, roll.count, roll.resources) == ("rollout workers", 2, {"CPU": 0.5, "GPU": 0.0, "rollout_node": 1.0})
    assert learn.resources["learner_node"] == 1.0
    assert learn.keys["learner_node"] == "learner.placement.resources.learner_node"
    assert learn.keys["CPU"] == "learner.placement.num_cpus" and roll.keys["GPU"] == "rollout.placement.num_gpus"
    assert hard.labels == {"role": "learner"} and hard.keys["labels"] == "verifiers[0].placement.node_labels"
    assert fmt.resources["verifier_node"] == 0.5
    assert totals(role_requests(cfg)) == {"CPU": 2.0, "GPU": 0.0, "rollout_node": 2.0, "learner_node": 2.0,
                                          "verifier_node": 0.5}
    assert actor_options(Placement(num_cpus=0.5, resources={"learner_node": 1}, node_labels={"role": "learner"})) == {
        "num_cpus": 0.5, "num_gpus": 0, "resources": {"learner_node": 1}, "label_selector": {"role": "learner"}}
    assert actor_options(Placement(num_cpus=0.5)) == {"num_cpus": 0.5, "num_gpus": 0}
    assert actor_options(cfg.learner.placement)["resources"] == {"learner_node": 1.0}


def test_each_role_has_its_own_defaults_and_a_partial_section_keeps_the_others():
    cfg = build_config({}, [])
    assert (cfg.rollout.placement.num_cpus, cfg.learner.placement.num_cpus, cfg.verifiers[0].placement.num_cpus) == (
        0.5, 0.5, 0.0)
    assert cfg.rollout.placement is not cfg.learner.placement  # each a fresh default, never shared
    cfg = build_config({}, ["learner.placement.num_gpus=1", "verifiers=[{kind: hard, placement: {num_gpus: 1}}]"])
    assert (cfg.learner.placement.num_cpus, cfg.learner.placement.num_gpus) == (0.5, 1.0)
    assert (cfg.verifiers[0].placement.num_cpus, cfg.verifiers[0].placement.num_gpus) == (0.0, 1.0)
    cfg = build_config({"rollout": {"placement": {"node_labels": {"role": "gpu"}}}})
    assert cfg.rollout.placement == Placement(num_cpus=0.5, node_labels={"role": "gpu"})


@pytest.mark.parametrize("old, new", [
    ("rollout.num_cpus_per_worker", "rollout.placement.num_cpus"),
    ("rollout.num_gpus_per_worker", "rollout.placement.num_gpus"),
    ("rollout.resources_per_worker", "rollout.placement.resources"),
    ("rollout.node_labels", "rollout.placement.node_labels"),
    ("learner.num_cpus_per_rank", "learner.placement.num_cpus"),
    ("learner.num_gpus_per_rank", "learner.placement.num_gpus"),
    ("learner.resources_per_rank", "learner.placement.resources"),
    ("learner.node_labels", "learner.placement.node_labels"),
    ("verifiers.0.num_cpus", "verifiers.0.placement.num_cpus"),
    ("verifiers.0.num_gpus", "verifiers.0.placement.num_gpus"),
    ("verifiers.0.resources", "verifiers.0.placement.resources"),
    ("verifiers.0.node_labels", "verifiers.0.placement.node_labels"),
])
def test_an_old_flat_key_names_its_new_place(old, new, tmp_path):
    """From a YAML file and from --set alike: one line naming the old key and the new one."""
    value = "{a: 1}" if old.endswith(("resources", "resources_per_worker", "resources_per_rank")) else \
        "{role: x}" if old.endswith("node_labels") else "1"
    with pytest.raises(ConfigError) as by_set:
        build_config({}, [f"{old}={value}"])
    assert f"{old} moved to {new}" in str(by_set.value)
    import yaml

    from softverify.config import load_config

    section, *rest = old.split(".")
    raw = {section: [{"kind": "hard", rest[1]: yaml.safe_load(value)}]} if section == "verifiers" else \
        {section: {rest[0]: yaml.safe_load(value)}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as by_file:
        load_config(tmp_path / "c.yaml")
    assert str(by_file.value) == f"invalid config:\n  {old} moved to {new}"


def test_cpus_of_rollout_workers_and_learner_ranks_must_be_positive():
    for role in ("rollout", "learner"):
        with pytest.raises(ConfigError, match=rf"{role}\.placement: .*num_cpus must be > 0 \(got 0\)"):
            build_config({}, [f"{role}.placement.num_cpus=0"])
    assert build_config({}, ["verifiers.0.placement.num_cpus=0"]).verifiers[0].placement.num_cpus == 0
    with pytest.raises(ConfigError, match=r"verifiers\.0\.placement\.num_cpus: Input should be greater than or equal"):
        build_config({}, ["verifiers.0.placement.num_cpus=-1"])


@pytest.mark.parametrize("bad, match", [
    ("learner.placement.resources={CPU: 1}", r"learner\.placement\.resources.*'CPU' has its own key"),
    ("rollout.placement.resources={gpu_box: 0}", r"rollout\.placement\.resources.*'gpu_box': 0.0; expected .* > 0"),
    ("learner.placement.node_labels={role: 'in(a,'}",
     r"learner\.placement\.node_labels.*Invalid label selector value `in\(a,`"),
    ("verifiers=[{kind: hard, placement: {resources: {GPU: 1}}}]",
     r"verifiers\.0\.placement\.resources.*'GPU' has its own key"),
])
def test_bad_placement_keys_are_refused_by_name(bad, match):
    with pytest.raises(ConfigError, match=match):
        build_config({}, [bad])


def test_label_selector_semantics():
    assert label_matches({}, {})
    assert label_matches({"role": "learner"}, {"role": "learner"})
    assert not label_matches({"role": "learner"}, {"role": "rollout"})
    assert not label_matches({"role": "learner"}, {})
    assert label_matches({"role": "!rollout"}, {"role": "learner"}) and label_matches({"role": "!rollout"}, {})
    assert label_matches({"zone": "in(a, b)"}, {"zone": "b"}) and not label_matches({"zone": "in(a,b)"}, {"zone": "c"})
    assert label_matches({"zone": "!in(a,b)"}, {"zone": "c"}) and not label_matches({"zone": "!in(a,b)"}, {"zone": "a"})


def test_a_two_node_cluster_that_fits():
    cfg = build_config({}, PINNED)
    check_placement(role_requests(cfg), [node(2, {"role": "rollout"}, rollout_node=2),
                                         node(2, {"role": "learner"}, learner_node=2, verifier_node=1)])


def test_a_custom_resource_no_node_has_names_role_key_amount_and_cluster():
    cfg = build_config({}, ["learner.placement.resources={learner_node: 1}", "learner.num_ranks=1"])
    with pytest.raises(ConfigError) as e:
        check_placement(role_requests(cfg), [node(4, rollout_node=2)])
    # the totals check speaks first: the run needs 1 learner_node, the cluster has none
    assert "the run needs 1 learner_node in total but the Ray cluster has 0; lower learner.placement.resources." \
           "learner_node (1)" in str(e.value)
    # one actor asking more than any node has, though the cluster's total would cover it
    cfg = build_config({}, ["learner.placement.resources={learner_node: 3}", "learner.num_ranks=1"])
    with pytest.raises(ConfigError, match=r"impossible placement for learner ranks: learner\.placement\.resources\."
                                          r"learner_node asks 3 learner_node per actor but no node has that much; "
                                          r"the most one node has is 2 \(the cluster has 4 learner_node in all; "
                                          r"declare it with `ray start --resources"):
        check_placement(role_requests(cfg), [node(2, learner_node=2), node(2, learner_node=2)])


def test_dead_nodes_do_not_count():
    cfg = build_config({}, ["learner.placement.resources={learner_node: 1}"])
    with pytest.raises(ConfigError, match="needs 2 learner_node in total but the Ray cluster has 0"):
        check_placement(role_requests(cfg), [node(4), node(4, alive=False, learner_node=4)])


def test_labels_no_node_has_and_resources_split_over_nodes():
    cfg = build_config({}, ["learner.placement.node_labels={role: learner}"])
    with pytest.raises(ConfigError, match=r"impossible placement for learner ranks: learner\.placement\.node_labels = "
                                          r"\{role: learner\} matches no node; the cluster's nodes have role=rollout"):
        check_placement(role_requests(cfg), [node(4, {"role": "rollout"})])
    # the labelled node exists but is too small for one rank
    cfg = build_config({}, ["learner.placement.node_labels={role: learner}", "learner.placement.num_cpus=2"])
    with pytest.raises(ConfigError, match=r"learner\.placement\.num_cpus asks 2 CPU per actor but no node on the "
                                          r"nodes its labels select has that much; the most one node has is 1"):
        check_placement(role_requests(cfg), [node(4, {"role": "rollout"}), node(1, {"role": "learner"})])
    # each resource exists somewhere, never together
    cfg = build_config({}, ["learner.placement.resources={a: 1, b: 1}", "learner.num_ranks=1"])
    with pytest.raises(ConfigError, match=r"learner ranks: one actor asks \{CPU: 0.5, a: 1, b: 1\} but no single "
                                          r"node has all of it"):
        check_placement(role_requests(cfg), [node(2, a=1), node(2, b=1)])


def test_a_local_ray_refuses_custom_resources_before_starting(monkeypatch):
    import ray

    from softverify.platform.train.bootstrap import init_ray, required_resources

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = build_config({}, PINNED)
    assert required_resources(cfg)["learner_node"] == 2.0
    assert not ray.is_initialized()
    with pytest.raises(ConfigError, match=r"custom resources \['learner_node', 'rollout_node', 'verifier_node'\] "
                                          r"\(learner\.placement\.resources\.learner_node \(2 x 1\).*set "
                                          r"trainer\.ray_address"):
        init_ray(cfg)
    assert not ray.is_initialized()


def test_sweep_trial_bundle_carries_custom_resources():
    from softverify.platform.sweep.run import trial_resources

    cfg = build_config({}, ["learner.placement.resources={learner_node: 1}", "learner.num_ranks=1",
                            "rollout.num_workers=1"])
    assert trial_resources(cfg, 0.5) == [{"CPU": 0.5}, {"CPU": 1.0, "learner_node": 1.0}]
