"""The game's outcome as a GRPO reward: a completion's donation, played out, scored in [0, 1].

How a completion becomes a score. The completion answers a donation prompt (``Answer: x``,
parsed by :mod:`.parsing` against the donor's resources in the sample's metadata). Its
fraction ``f = x / resources`` is taken as the focal agent's policy and played for a whole
game, seated among co-players with a fixed rule (``co_players``):

* ``reciprocal`` -- give the recipient the fraction the recipient itself last gave
  (its trace's most recent entry; ``opening`` when it has none; 0 after it punished);
* ``cooperate`` / ``defect`` -- always give everything / nothing;
* ``mixed`` -- seats alternate reciprocal, cooperate, defect.

Outcome: the focal agent's final resources (``objective="own"``) or the mean of all agents
(``"group"``), averaged over ``games`` random seatings. It is normalised by the best and
worst outcome of any fixed fraction on an 11-point grid in the same setting, so 1 means
"as good as the best fixed fraction" and 0 "as bad as the worst". An unparseable or
out-of-range answer scores ``invalid_score`` (default 0), never a clipped donation.
Samples whose metadata names another task abstain (NaN).

:func:`make_prompts` writes training rows (``question``, ``system`` and this metadata) from
game states reached by random play, so ``data.source=file`` can train on the game.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

from softverify.envs.donor_game import prompts
from softverify.envs.donor_game.config import GameConfig
from softverify.envs.donor_game.game import Action, DonationContext, DonorGame
from softverify.envs.donor_game.parsing import parse_donation
from softverify.types import Sample
from softverify.verifiers.base import Verifier, register

TASK = "donor_game"
_GRID = tuple(np.linspace(0.0, 1.0, 11))


def _co_player_fraction(rule: str, ctx: DonationContext, opening: float) -> float:
    if rule == "cooperate":
        return 1.0
    if rule == "defect":
        return 0.0
    last = ctx.trace[0] if ctx.trace else None
    if last is None or last.kind == "none":
        return opening
    return max(0.0, last.signed_fraction())


def play_fixed_fraction(cfg: GameConfig, focal_fraction: float, co_players: str, opening: float, seed: int,
                        punish: bool = False) -> tuple[float, float]:
    """(focal final resources, mean final resources) of one game; the focal agent is ``"focal"``."""
    names = ["focal"] + [f"p{i}" for i in range(1, cfg.num_agents)]
    rng = np.random.default_rng(seed)
    seating = [names[i] for i in rng.permutation(len(names))]
    rules = {n: co_players for n in names[1:]}
    if co_players == "mixed":
        kinds = ("reciprocal", "cooperate", "defect")
        rules = {n: kinds[i % 3] for i, n in enumerate(names[1:])}
    game = DonorGame(seating, cfg)
    while not game.done:
        acts = []
        for c in game.contexts():
            if c.donor == "focal":
                kind = "punish" if punish else "donate"
                acts.append(Action(kind, focal_fraction * c.donor_resources))
            else:
                acts.append(Action("donate", _co_player_fraction(rules[c.donor], c, opening) * c.donor_resources))
        game.play_round(acts)
    return game.resources["focal"], float(np.mean(list(game.resources.values())))


@register(TASK)
class DonorGameVerifier(Verifier):
    """Reward = normalised outcome of the donor game played with the completion's donation."""

    def __init__(
        self,
        name: str | None = None,
        objective: str = "own",
        co_players: str = "reciprocal",
        opening: float = 0.5,
        games: int = 2,
        seed: int = 0,
        invalid_score: float = 0.0,
        **game: object,
    ):
        super().__init__(name)
        if objective not in ("own", "group"):
            raise ValueError(f"objective must be 'own' or 'group', got {objective!r}")
        if co_players not in ("reciprocal", "cooperate", "defect", "mixed"):
            raise ValueError(f"co_players must be reciprocal|cooperate|defect|mixed, got {co_players!r}")
        if not 0.0 <= invalid_score <= 1.0:
            raise ValueError(f"invalid_score must be in [0, 1], got {invalid_score}")
        defaults = {"num_agents": 6, "num_rounds": 6}
        self.game_cfg = GameConfig(**{**defaults, **game})  # unknown keys -> pydantic error
        self.objective, self.co_players, self.opening = objective, co_players, float(opening)
        self.games, self.seed, self.invalid_score = int(games), int(seed), float(invalid_score)
        lo, hi = min(self._outcome_grid()), max(self._outcome_grid())
        self._lo, self._span = lo, hi - lo

    def _outcome(self, fraction: float, punish: bool = False) -> float:
        return _cached_outcome(self.game_cfg.model_dump_json(), round(float(fraction), 6), punish, self.objective,
                               self.co_players, self.opening, self.games, self.seed)

    def _outcome_grid(self) -> list[float]:
        return [self._outcome(f) for f in _GRID]

    def score_fraction(self, fraction: float, punish: bool = False) -> float:
        """Normalised outcome of playing ``fraction`` (the testable core of :meth:`score`)."""
        if self._span <= 1e-12:  # every fraction is equally good: no signal
            return 0.5
        return float(np.clip((self._outcome(fraction, punish) - self._lo) / self._span, 0.0, 1.0))

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        out = np.full(len(samples), np.nan)
        allowed = self.game_cfg.punishment == "costly"
        for i, s in enumerate(samples):
            task = s.metadata.get("task", TASK)
            if task != TASK:
                continue
            res = float(s.metadata.get("donor_resources", self.game_cfg.initial_resources))
            p = parse_donation(s.completion, res, allowed)
            if not p.ok:
                out[i] = self.invalid_score
                continue
            frac = p.action.amount / res if res > 0 else 0.0
            out[i] = self.score_fraction(frac, punish=p.action.kind == "punish")
        return out


@lru_cache(maxsize=4096)
def _cached_outcome(cfg_json: str, fraction: float, punish: bool, objective: str, co_players: str,
                    opening: float, games: int, seed: int) -> float:
    cfg = GameConfig.model_validate_json(cfg_json)
    vals = []
    for g in range(games):
        own, group = play_fixed_fraction(cfg, fraction, co_players, opening, seed + g, punish)
        vals.append(own if objective == "own" else group)
    return float(np.mean(vals))


def make_prompts(n: int, seed: int = 0, **game: object) -> list[dict]:
    """``n`` training rows: donation prompts from states reached by random fixed-fraction play."""
    cfg = GameConfig(**{"num_agents": 6, "num_rounds": 6, **game})
    rng = np.random.default_rng(seed)
    system = prompts.system_prompt(cfg)
    rows = []
    while len(rows) < n:
        names = [f"1_{i + 1}" for i in range(cfg.num_agents)]
        game_ = DonorGame([names[i] for i in rng.permutation(len(names))], cfg)
        stop = int(rng.integers(0, cfg.num_rounds))
        fr = {a: float(rng.uniform()) for a in names}
        for _ in range(stop):
            game_.play_round([Action("donate", fr[c.donor] * c.donor_resources) for c in game_.contexts()])
        ctx = game_.contexts()[int(rng.integers(0, cfg.num_agents // 2))]
        strategy = "My strategy will be to decide each donation from what the recipient did before."
        rows.append({
            "prompt_id": f"donor-{seed}-{len(rows)}", "system": system,
            "question": prompts.donation_prompt(cfg, ctx, strategy, 1),
            "task": TASK, "donor_resources": ctx.donor_resources, "round": ctx.round,
        })
    return rows
