"""Typed settings of a donor-game experiment, YAML in, validated in one place.

Defaults are the paper's (Vallinder & Hughes 2024): 12 agents, 10 units each, donations
doubled, 12 rounds, 2 games per generation, top half survive, 10 generations, traces of
depth 3. Unknown keys are errors (``extra="forbid"``) so a typo never silently falls back
to a default; ``--set section.key=value`` overrides use the platform's parser.
"""
from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from softverify.configbase import ConfigError, StrictModel, apply_overrides, format_validation_error, read_yaml


_Section = StrictModel


class GameConfig(_Section):
    num_agents: int = Field(12, ge=2, description="Agents per generation (even: the pairing is bipartite).")
    initial_resources: float = Field(10.0, gt=0, description="Units every agent holds at the start of each game.")
    multiplier: float = Field(
        2.0, gt=0, description="A donation of x costs the donor x and gives the recipient multiplier*x (paper: 2; 1.5 and 3 tested)."
    )
    num_rounds: int = Field(
        12, ge=1, description="Rounds per game; at most num_agents (no ordered donor->recipient pair repeats). "
        "Agents are never told this number."
    )
    games_per_generation: int = Field(
        2, ge=1, description="Games per generation; resources and traces reset between games, the second game swaps roles."
    )
    num_generations: int = Field(10, ge=1, description="Generations of play, selection and transmission.")
    survivor_fraction: float = Field(0.5, gt=0, lt=1, description="Top fraction by average final resources that survives.")
    trace_depth: int = Field(3, ge=0, le=12, description="Reputation trace entries a donor sees about its recipient (0 = none).")
    punishment: Literal["none", "costly"] = Field(
        "none", description="'costly': a donor may instead spend x to remove punishment_loss*x from the recipient."
    )
    punishment_loss: float = Field(2.0, gt=0, description="Units removed per unit spent on punishment.")
    seed: int = Field(0, description="Seed for seating, tie-breaking and sampling; a run is reproducible given it.")

    @model_validator(mode="after")
    def _shape(self) -> "GameConfig":
        if self.num_agents % 2:
            raise ValueError(f"game.num_agents must be even (bipartite pairing), got {self.num_agents}")
        if self.num_rounds > self.num_agents:
            raise ValueError(
                f"game.num_rounds = {self.num_rounds} > game.num_agents = {self.num_agents}: with strictly "
                "alternating roles a donor->recipient pair would repeat"
            )
        n_surv = int(self.num_agents * self.survivor_fraction)
        if not 1 <= n_surv < self.num_agents:
            raise ValueError(f"survivor_fraction {self.survivor_fraction} leaves {n_surv} survivors of {self.num_agents}")
        return self

    @property
    def num_survivors(self) -> int:
        return int(self.num_agents * self.survivor_fraction)


class AgentConfig(_Section):
    backend: Literal["engine", "openai", "fixed"] = Field(
        "engine", description="'engine': the platform's HF rollout engine on a local model; 'openai': any "
        "OpenAI-compatible endpoint (e.g. `softverify serve`); 'fixed': every agent donates fixed_fraction (baseline)."
    )
    model: str = Field(
        "smollm2", description="engine: 'smollm2' or a local HF model directory; openai: the model name sent to the endpoint."
    )
    base_url: str | None = Field(None, description="openai: endpoint base URL, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai: environment variable holding the key ('EMPTY' if unset).")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="engine: compute dtype.")
    torch_threads: int | None = Field(
        1, ge=1, description="engine: torch intra-op threads. 1 by default: on a shared 2-core box, 2 threads ran 13x slower (OpenMP oversubscription)."
    )
    batch_size: int = Field(16, ge=1, description="engine: conversations generated at once.")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling.")
    max_new_tokens: int = Field(96, ge=1, description="Token budget of one donation answer (justification + answer).")
    strategy_max_new_tokens: int = Field(160, ge=1, description="Token budget of one strategy (reasoning + strategy sentence).")
    answer_prefix: str | None = Field(
        None, description="engine: text the assistant's donation turn starts with (e.g. 'Answer:'). The paper asks for a "
        "justification first; SmolLM2-135M almost never reaches 'Answer:' on its own, so small-model runs set this."
    )
    strategy_prefix: str | None = Field(
        None, description="engine: text the assistant's strategy turn starts with (e.g. 'My strategy will be')."
    )
    max_retries: int = Field(
        2, ge=0, description="Re-asks after a rejected answer (unparseable or out of range); then the donation is 0 and "
        "the decision is logged as invalid."
    )
    request_timeout_s: float = Field(120.0, gt=0, description="openai: per-request timeout.")
    concurrency: int = Field(8, ge=1, description="openai: requests in flight at once.")
    fixed_fraction: float = Field(0.5, ge=0, le=1, description="fixed: fraction of current resources every donor gives.")


class RunConfig(_Section):
    output_dir: str = Field("runs/donor_game", description="decisions.jsonl, summary.json and plots go here.")
    progress: bool = Field(True, description="Show a tqdm progress bar over rounds.")


class DonorGameConfig(_Section):
    """A whole experiment: the game, who plays it, where results go."""

    game: GameConfig = Field(default_factory=GameConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _backend_needs(self) -> "DonorGameConfig":
        if self.agent.backend == "openai" and not self.agent.base_url:
            raise ValueError("agent.backend='openai' needs agent.base_url (e.g. http://127.0.0.1:8000/v1)")
        return self


def build_donor_config(raw: dict | None = None, overrides: list[str] | None = None) -> DonorGameConfig:
    raw = apply_overrides(raw or {}, overrides or [], DonorGameConfig)  # values read for their fields' types
    try:
        return DonorGameConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, keys_hint="`softverify donor-game run --help-config` lists the keys")) from None


def load_donor_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> DonorGameConfig:
    """Read a YAML file (optional), apply ``a.b=value`` overrides, validate."""
    return build_donor_config(read_yaml(path) if path else {}, overrides)
