"""Numeric baseline for the donor game: shared-policy PPO learning a donation fraction.

Trains PPO (RLlib new API stack, one module shared by all agents) on the donor-game
MultiAgentEnv with a selfish reward (own resources) and a social one (group mean), then
plays one evaluation game with the deterministic policy (Gaussian mean, clipped) and
reports the mean donation fraction and average final resources -- the quantities of the
paper's Figures 2 and 6 for an LLM society.

    python benchmarks/donor_game_ppo.py --iters 15 --agents 12 --rounds 12
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def evaluate(algo, env_config: dict, seed: int = 123) -> dict:
    import torch

    from softverify.envs.donor_game.rllib_env import DonorGameMultiAgentEnv

    env = DonorGameMultiAgentEnv(env_config)
    module = algo.get_module("shared")
    obs, _ = env.reset(seed=seed)
    fractions = []
    while True:
        ids = list(obs)
        batch = torch.tensor(np.stack([obs[a] for a in ids]))
        with torch.no_grad():
            out = module.forward_inference({"obs": batch})
        mean = out["action_dist_inputs"][:, :1].numpy()  # Gaussian: [mean, log_std]
        acts = {a: np.clip(mean[i], env.action_spaces[a].low, 1.0) for i, a in enumerate(ids)}
        obs, _, term, _, info = env.step(acts)
        fractions += [v["fraction"] for v in info.values()]
        if term["__all__"]:
            break
    return {"mean_donation_fraction": float(np.mean(fractions)),
            "average_final_resources": float(np.mean(list(env.game.resources.values())))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--agents", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--batch", type=int, default=288)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import ray
    import torch

    from softverify.envs.donor_game.rllib_env import ppo_config

    torch.set_num_threads(1)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    results = {}
    for reward in ("own", "group"):
        env_config = {"num_agents": args.agents, "num_rounds": args.rounds, "reward": reward, "seed": args.seed}
        algo = ppo_config(env_config, hidden=32, batch=args.batch, seed=args.seed).build_algo()
        t0, curve = time.time(), []
        for _ in range(args.iters):
            res = algo.train()
            curve.append(round(float(res["env_runners"].get("episode_return_mean", float("nan"))), 3))
        results[reward] = {"return_curve": curve, "train_s": round(time.time() - t0, 1), **evaluate(algo, env_config)}
        algo.stop()
        print(reward, json.dumps(results[reward]))
    ray.shutdown()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
