"""The donor game as an RLlib MultiAgentEnv: RLlib's checker, spaces over whole episodes,
rewards that add up to final resources, and a short shared-policy PPO run."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ray.rllib")

from ray.rllib.utils.pre_checks.env import check_multiagent_environments  # noqa: E402

from softverify.envs.donor_game.rllib_env import DonorGameMultiAgentEnv, ppo_config  # noqa: E402


def _episode(env, policy, seed=0):
    obs, _ = env.reset(seed=seed)
    returns = {a: 0.0 for a in env.possible_agents}
    steps = 0
    while True:
        for a, o in obs.items():
            assert env.observation_spaces[a].contains(o), (a, o)
        acts = {a: policy(a, o) for a, o in obs.items()}
        obs, rew, term, trunc, info = env.step(acts)
        for a, r in rew.items():
            returns[a] += r
        steps += 1
        if term["__all__"]:
            assert set(obs) == set(env.possible_agents)  # everyone gets a final observation
            for a, o in obs.items():
                assert env.observation_spaces[a].contains(o)
            return returns, steps


def test_passes_rllib_env_checker_and_spaces():
    for cfg in ({}, {"num_agents": 4, "num_rounds": 4, "punishment": "costly", "trace_depth": 1}):
        env = DonorGameMultiAgentEnv(cfg)
        check_multiagent_environments(env)
        space = env.action_spaces["agent_0"]
        _, steps = _episode(env, lambda a, o: space.sample())
        assert steps == env.cfg.num_rounds


def test_only_donors_observe_and_returns_are_resource_gains():
    env = DonorGameMultiAgentEnv({"num_agents": 4, "num_rounds": 4})
    obs, _ = env.reset(seed=0)
    assert len(obs) == 2 and set(obs) == {d for d, _ in env.game.pairs()}
    # first round: no trace yet -> start entry flagged absent, recipient resources = R0
    o = next(iter(obs.values()))
    assert o[0] == pytest.approx(np.log1p(1.0)) and o[1] == pytest.approx(np.log1p(1.0))
    assert list(o[2:]) == [0.0] * 6
    returns, _ = _episode(env, lambda a, o: np.array([0.5], np.float32), seed=0)
    finals = env.game.resources
    for a in env.possible_agents:  # own reward: the return is the agent's final gain / R0
        assert returns[a] == pytest.approx((finals[a] - 10.0) / 10.0)
    genv = DonorGameMultiAgentEnv({"num_agents": 4, "num_rounds": 4, "reward": "group"})
    gret, _ = _episode(genv, lambda a, o: np.array([1.0], np.float32), seed=0)
    mean_gain = (np.mean(list(genv.game.resources.values())) - 10.0) / 10.0
    assert all(r == pytest.approx(mean_gain) for r in gret.values())
    # second observation of a donor carries its recipient's last action (+fraction, present flag)
    env.reset(seed=0)
    obs, *_ = env.step({a: np.array([0.5], np.float32) for a in env._ctx})
    assert all(o[2] == pytest.approx(0.5) and o[3] == 1.0 for o in obs.values())


def test_ppo_trains_a_few_iterations():
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        algo = ppo_config({"num_agents": 4, "num_rounds": 4}, hidden=8, batch=64).build_algo()
        try:
            sampled = []
            for _ in range(2):
                res = algo.train()
                sampled.append(res["env_runners"]["num_env_steps_sampled_lifetime"])
                ret = res["env_runners"]["episode_return_mean"]
                assert np.isfinite(ret)
            assert sampled[1] > sampled[0] >= 64
            # the learned module maps a donor's observation to a donation fraction
            module = algo.get_module("shared")
            assert module is not None
        finally:
            algo.stop()
    finally:
        ray.shutdown()
