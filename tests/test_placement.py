"""Per-role placement keys and their check against a cluster's nodes (no Ray needed: the
check reads ``ray.nodes()``-shaped rows; the real multi-node runs are in tests/multinode)."""
from __future__ import annotations

import pytest

from softverify.config import ConfigError, build_config
from softverify.infra.placement import actor_options, check_placement, label_matches, role_requests, totals

PINNED = ["rollout.resources_per_worker={rollout_node: 1}", "learner.resources_per_rank={learner_node: 1}",
          "verifiers=[{kind: hard, node_labels: {role: learner}}, {kind: format, resources: {verifier_node: 0.5}}]"]


def node(cpus: float, labels: dict | None = None, alive: bool = True, **custom: float) -> dict:
    return {"NodeID": "n", "Alive": alive, "Resources": {"CPU": cpus, **custom}, "Labels": labels or {}}


def test_keys_reach_the_role_requests_and_actor_options():
    cfg = build_config({}, PINNED)
    roll, learn, hard, fmt = role_requests(cfg)
    assert (roll.role, roll.count, roll.resources) == ("rollout workers", 2, {"CPU": 0.5, "GPU": 0.0, "rollout_node": 1.0})
    assert learn.resources["learner_node"] == 1.0 and learn.keys["learner_node"] == "learner.resources_per_rank.learner_node"
    assert hard.labels == {"role": "learner"} and hard.keys["labels"] == "verifiers[0].node_labels"
    assert fmt.resources["verifier_node"] == 0.5
    assert totals(role_requests(cfg)) == {"CPU": 2.0, "GPU": 0.0, "rollout_node": 2.0, "learner_node": 2.0,
                                          "verifier_node": 0.5}
    assert actor_options(0.5, 0, {"learner_node": 1}, {"role": "learner"}) == {
        "num_cpus": 0.5, "num_gpus": 0, "resources": {"learner_node": 1}, "label_selector": {"role": "learner"}}
    assert actor_options(0.5, 0, {}, {}) == {"num_cpus": 0.5, "num_gpus": 0}


@pytest.mark.parametrize("bad, match", [
    ("learner.resources_per_rank={CPU: 1}", r"learner\.resources_per_rank.*'CPU' has its own key"),
    ("rollout.resources_per_worker={gpu_box: 0}", r"rollout\.resources_per_worker.*'gpu_box': 0.0; expected .* > 0"),
    ("learner.node_labels={role: 'in(a,'}", r"learner\.node_labels.*Invalid label selector value `in\(a,`"),
    ("verifiers=[{kind: hard, resources: {GPU: 1}}]", r"verifiers\.0\.resources.*'GPU' has its own key"),
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
    cfg = build_config({}, ["learner.resources_per_rank={learner_node: 1}", "learner.num_ranks=1"])
    with pytest.raises(ConfigError) as e:
        check_placement(role_requests(cfg), [node(4, rollout_node=2)])
    # the totals check speaks first: the run needs 1 learner_node, the cluster has none
    assert "the run needs 1 learner_node in total but the Ray cluster has 0; lower learner.resources_per_rank." \
           "learner_node (1)" in str(e.value)
    # one actor asking more than any node has, though the cluster's total would cover it
    cfg = build_config({}, ["learner.resources_per_rank={learner_node: 3}", "learner.num_ranks=1"])
    with pytest.raises(ConfigError, match=r"impossible placement for learner ranks: learner\.resources_per_rank\."
                                          r"learner_node asks 3 learner_node per actor but no node has that much; "
                                          r"the most one node has is 2 \(the cluster has 4 learner_node in all; "
                                          r"declare it with `ray start --resources"):
        check_placement(role_requests(cfg), [node(2, learner_node=2), node(2, learner_node=2)])


def test_dead_nodes_do_not_count():
    cfg = build_config({}, ["learner.resources_per_rank={learner_node: 1}"])
    with pytest.raises(ConfigError, match="needs 2 learner_node in total but the Ray cluster has 0"):
        check_placement(role_requests(cfg), [node(4), node(4, alive=False, learner_node=4)])


def test_labels_no_node_has_and_resources_split_over_nodes():
    cfg = build_config({}, ["learner.node_labels={role: learner}"])
    with pytest.raises(ConfigError, match=r"impossible placement for learner ranks: learner\.node_labels = "
                                          r"\{role: learner\} matches no node; the cluster's nodes have role=rollout"):
        check_placement(role_requests(cfg), [node(4, {"role": "rollout"})])
    # the labelled node exists but is too small for one rank
    cfg = build_config({}, ["learner.node_labels={role: learner}", "learner.num_cpus_per_rank=2"])
    with pytest.raises(ConfigError, match=r"learner\.num_cpus_per_rank asks 2 CPU per actor but no node on the "
                                          r"nodes its labels select has that much; the most one node has is 1"):
        check_placement(role_requests(cfg), [node(4, {"role": "rollout"}), node(1, {"role": "learner"})])
    # each resource exists somewhere, never together
    cfg = build_config({}, ["learner.resources_per_rank={a: 1, b: 1}", "learner.num_ranks=1"])
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
                                          r"\(learner\.resources_per_rank\.learner_node \(2 x 1\).*set "
                                          r"trainer\.ray_address"):
        init_ray(cfg)
    assert not ray.is_initialized()


def test_sweep_trial_bundle_carries_custom_resources():
    from softverify.platform.sweep.run import trial_resources

    cfg = build_config({}, ["learner.resources_per_rank={learner_node: 1}", "learner.num_ranks=1",
                            "rollout.num_workers=1"])
    assert trial_resources(cfg, 0.5) == [{"CPU": 0.5}, {"CPU": 1.0, "learner_node": 1.0}]
