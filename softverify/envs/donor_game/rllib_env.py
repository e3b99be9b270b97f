"""The donor game as an RLlib ``MultiAgentEnv`` (new API stack), for numeric baselines.

Same rules as the LLM runner (it plays :class:`~.game.DonorGame`), so a PPO policy that
learns a donation fraction is directly comparable with LLM societies. One episode = one
game. Turn-based like the game: only the round's donors receive an observation and act.

Observation of a donor (``Box``, float32, length ``2 + 2 * trace_depth``):
``log1p(own resources / R0)``, ``log1p(recipient resources / R0)``, then for each trace
entry about the recipient (most recent first): the signed fraction (+ donated, - spent
punishing, 0 for "no previous interactions") and a present flag (1 = a real action,
0 = padding or the start-of-game entry).

Action: ``Box(0, 1, (1,))`` = fraction of current resources donated; with costly
punishment ``Box(-1, 1, (1,))`` where a negative value spends that fraction punishing.
Out-of-range actions are clipped (RLlib samples unsquashed Gaussians; clipping is the
documented convention for Box actions), unlike LLM answers, which are rejected.

Reward (``reward``): ``"own"`` = change of the agent's own resources each round / R0
(an episode's return is its final gain: the selfish objective of the paper's agents);
``"group"`` = change of the mean resources of all agents / R0 (the social objective).
Rewards reach recipients too; RLlib holds them until the agent's next observation.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from softverify.envs.donor_game.config import GameConfig
from softverify.envs.donor_game.game import Action, DonationContext, DonorGame

_ENV_KEYS = {"reward", "swap_roles"}


class DonorGameMultiAgentEnv(MultiAgentEnv):
    """``config``: any :class:`GameConfig` field, plus ``reward`` ("own"|"group")."""

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__()
        config = dict(config or {})
        self.reward_mode = config.pop("reward", "own")
        if self.reward_mode not in ("own", "group"):
            raise ValueError(f"reward must be 'own' or 'group', got {self.reward_mode!r}")
        self.swap_roles = bool(config.pop("swap_roles", False))
        self.cfg = GameConfig(**{k: v for k, v in config.items() if k not in _ENV_KEYS})
        n, d = self.cfg.num_agents, self.cfg.trace_depth
        self.possible_agents = [f"agent_{i}" for i in range(n)]
        self.agents = list(self.possible_agents)
        # Largest reachable resources: everyone's wealth funnelled to one agent every round.
        hi = float(np.log1p(n * (1 + self.cfg.multiplier) ** self.cfg.num_rounds)) + 1.0
        low = np.array([0.0, 0.0] + [-1.0, 0.0] * d, np.float32)
        high = np.array([hi, hi] + [1.0, 1.0] * d, np.float32)
        obs_space = gym.spaces.Box(low, high, dtype=np.float32)
        lo_a = -1.0 if self.cfg.punishment == "costly" else 0.0
        act_space = gym.spaces.Box(lo_a, 1.0, (1,), np.float32)
        self.observation_spaces = {a: obs_space for a in self.possible_agents}
        self.action_spaces = {a: act_space for a in self.possible_agents}
        self.game: DonorGame | None = None
        self._rng = np.random.default_rng(self.cfg.seed)

    # ------------------------------------------------------------------ observations
    def _features(self, own: float, other: float, trace) -> np.ndarray:
        r0 = self.cfg.initial_resources
        x = [np.log1p(own / r0), np.log1p(other / r0)]
        for k in range(self.cfg.trace_depth):
            if k < len(trace):
                e = trace[k]
                x += [e.signed_fraction(), 0.0 if e.kind == "none" else 1.0]
            else:
                x += [0.0, 0.0]
        return np.asarray(x, np.float32)

    def _donor_obs(self) -> dict[str, np.ndarray]:
        assert self.game is not None
        self._ctx: dict[str, DonationContext] = {c.donor: c for c in self.game.contexts()}
        return {a: self._features(c.donor_resources, c.recipient_resources, c.trace) for a, c in self._ctx.items()}

    def _final_obs(self) -> dict[str, np.ndarray]:
        assert self.game is not None
        return {a: self._features(self.game.resources[a], 0.0, ()) for a in self.possible_agents}

    # ------------------------------------------------------------------ API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        seating = [self.possible_agents[i] for i in self._rng.permutation(self.cfg.num_agents)]
        self.game = DonorGame(seating, self.cfg, swap_roles=self.swap_roles)
        return self._donor_obs(), {}

    def step(self, action_dict: dict[str, Any]):
        assert self.game is not None, "call reset() first"
        missing = set(self._ctx) - set(action_dict)
        if missing:
            raise ValueError(f"actions missing for donors {sorted(missing)}")
        before = dict(self.game.resources)
        actions = []
        for donor, _ in self.game.pairs():
            v = float(np.clip(np.asarray(action_dict[donor], np.float64).reshape(-1)[0], self.action_spaces[donor].low[0], 1.0))
            res = self.game.resources[donor]
            actions.append(Action("punish", -v * res) if v < 0 else Action("donate", v * res))
        outs = self.game.play_round(actions)
        r0 = self.cfg.initial_resources
        if self.reward_mode == "own":
            touched = {o.donor for o in outs} | {o.recipient for o in outs}
            rewards = {a: float((self.game.resources[a] - before[a]) / r0) for a in touched}
        else:
            delta = float(np.mean([self.game.resources[a] - before[a] for a in self.possible_agents]) / r0)
            rewards = {a: delta for a in self.possible_agents}
        infos = {o.donor: {"fraction": o.fraction, "kind": o.kind} for o in outs}
        if self.game.done:
            return self._final_obs(), rewards, {"__all__": True}, {"__all__": False}, infos
        return self._donor_obs(), rewards, {"__all__": False}, {"__all__": False}, infos


def ppo_config(env_config: dict | None = None, hidden: int = 16, batch: int = 144, seed: int = 0):
    """A small shared-policy PPO on the env (all agents map to one module "shared")."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    return (
        PPOConfig()
        .environment(DonorGameMultiAgentEnv, env_config=dict(env_config or {}))
        .multi_agent(policies={"shared"}, policy_mapping_fn=lambda agent_id, episode, **kw: "shared")
        .env_runners(num_env_runners=0, rollout_fragment_length="auto")
        .learners(num_learners=0)
        .training(train_batch_size_per_learner=batch, minibatch_size=batch // 2, num_epochs=2, lr=3e-3)
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[hidden], head_fcnet_hiddens=[]))
        .debugging(seed=seed)
    )
