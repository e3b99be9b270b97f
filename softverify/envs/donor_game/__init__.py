"""The Donor Game of Vallinder & Hughes (2024), "Cultural evolution of cooperation among
LLM agents", as a platform environment.

Modules, one job each: :mod:`.config` (typed settings), :mod:`.game` (pure rules),
:mod:`.prompts` (the paper's prompt wording), :mod:`.parsing` (answers -> actions, with
counted rejections), :mod:`.agents` (LLM and numeric decision makers), :mod:`.runner`
(generations loop + JSONL), :mod:`.plots`, :mod:`.rllib_env`, :mod:`.verifier`, :mod:`.cli`.
"""
from softverify.envs.donor_game.config import DonorGameConfig, GameConfig, load_donor_config
from softverify.envs.donor_game.game import Action, DonorGame, pairing_schedule

__all__ = ["Action", "DonorGame", "DonorGameConfig", "GameConfig", "load_donor_config", "pairing_schedule"]
