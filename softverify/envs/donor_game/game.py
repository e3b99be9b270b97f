"""Pure rules of the donor game: pairings, arithmetic, punishment, traces, selection.

No model, no I/O, no global randomness: everything random takes a ``numpy.random.Generator``
so a run is reproducible from its seed, and every rule is checkable by hand in tests.
LLM agents (:mod:`.runner`), RLlib policies (:mod:`.rllib_env`) and the GRPO verifier
(:mod:`.verifier`) all play through :class:`DonorGame`, so they share one set of rules.

Pairing. Roles alternate every round for every agent (the paper: "If you were a donor in
one round, you will be a recipient in the next round"). Strict alternation forces each
round's pairs to join the agents donating on even rounds (seats ``0..m-1``) with those
donating on odd rounds (seats ``m..2m-1``), so an agent can meet only ``m`` distinct
partners; 12 rounds with 12 agents therefore meet each partner twice, once in each role.
What never happens is the same *donor -> recipient* pair twice in a game, which bounds
``num_rounds <= num_agents``. (The paper's code builds 6 bipartite rounds and then replays
them with roles swapped; at that seam agents keep their role two rounds running. The
schedule here alternates throughout and, for ``m >= 3``, never lets a pair meet in
consecutive rounds, so a recipient cannot simply pay back the donor it just met.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from softverify.envs.donor_game.config import GameConfig


def pairing_schedule(num_agents: int, num_rounds: int, swap_roles: bool = False) -> list[list[tuple[int, int]]]:
    """``rounds[r]`` = list of ``(donor_seat, recipient_seat)``.

    Seats ``0..m-1`` (group A) donate on even rounds, seats ``m..2m-1`` (group B) on odd
    ones (reversed when ``swap_roles``). Even round ``2t``: A_i -> B_{(i+t) mod m}; odd
    round ``2t+1``: B_{(i+t+s) mod m} -> A_i with ``s = (m+1)//2``. Each ordered pair occurs
    at most once; ``s`` not in {0, 1} (m >= 3) keeps a pair's two meetings non-adjacent.
    """
    if num_agents % 2 or num_agents < 2:
        raise ValueError(f"num_agents must be even and >= 2, got {num_agents}")
    if not 1 <= num_rounds <= num_agents:
        raise ValueError(f"num_rounds must be in [1, {num_agents}], got {num_rounds}")
    m = num_agents // 2
    s = (m + 1) // 2
    rounds = []
    for r in range(num_rounds):
        t = r // 2
        if r % 2 == 0:
            pairs = [(i, m + (i + t) % m) for i in range(m)]
        else:
            pairs = [(m + (i + t + s) % m, i) for i in range(m)]
        if swap_roles:
            pairs = [(b, a) for a, b in pairs]
        rounds.append(pairs)
    return rounds


@dataclass(frozen=True)
class Action:
    """What a donor does: give ``amount`` units (``donate``) or spend them to ``punish``."""

    kind: Literal["donate", "punish"]
    amount: float


@dataclass(frozen=True)
class TraceEntry:
    """One line of reputation: ``donor`` acted on ``recipient`` in ``round`` (None = start)."""

    round: int | None
    donor: str
    recipient: str | None = None
    kind: Literal["donate", "punish", "none"] = "none"
    fraction: float = 0.0  # of the donor's resources at the time
    amount: float = 0.0
    loss: float = 0.0  # units removed from the recipient by a punishment

    def text(self) -> str:
        if self.kind == "none":
            return f"{self.donor} did not have any previous interactions."
        if self.kind == "donate":
            return f"In round {self.round}, {self.donor} donated {self.fraction * 100:.0f}% of their resources to {self.recipient}."
        return (
            f"In round {self.round}, {self.donor} punished {self.recipient} by spending {self.amount:g} units "
            f"to take away {self.loss:g} units from their resources."
        )

    def signed_fraction(self) -> float:
        """Numeric view for policies: +fraction donated, -fraction spent punishing, 0 at start."""
        return -self.fraction if self.kind == "punish" else self.fraction


@dataclass(frozen=True)
class DonationContext:
    """Everything a donor may know when it decides (the paper's donation prompt, as data)."""

    round: int  # 1-based
    donor: str
    recipient: str
    donor_resources: float
    recipient_resources: float
    trace: tuple[TraceEntry, ...]  # about the recipient, most recent first, at most trace_depth

    def trace_text(self) -> str:
        return " ".join(e.text() for e in self.trace)


@dataclass(frozen=True)
class Outcome:
    """The result of one decision, as logged."""

    round: int
    donor: str
    recipient: str
    kind: str
    amount: float
    fraction: float
    donor_before: float
    recipient_before: float
    donor_after: float
    recipient_after: float


class DonorGame:
    """One game: ``num_rounds`` rounds over agents seated in the order of ``names``."""

    def __init__(self, names: list[str], cfg: GameConfig, swap_roles: bool = False):
        if len(names) != cfg.num_agents or len(set(names)) != len(names):
            raise ValueError(f"need {cfg.num_agents} distinct agent names, got {names}")
        self.names = list(names)
        self.cfg = cfg
        self.schedule = pairing_schedule(cfg.num_agents, cfg.num_rounds, swap_roles)
        self.resources = {n: float(cfg.initial_resources) for n in names}
        self.traces: dict[str, list[TraceEntry]] = {n: [TraceEntry(None, n)] for n in names}
        self.round = 0  # rounds played
        self.history: list[Outcome] = []

    @property
    def done(self) -> bool:
        return self.round >= len(self.schedule)

    def pairs(self) -> list[tuple[str, str]]:
        """(donor, recipient) names of the current round."""
        return [(self.names[d], self.names[r]) for d, r in self.schedule[self.round]]

    def visible_trace(self, agent: str) -> tuple[TraceEntry, ...]:
        if self.cfg.trace_depth == 0:
            return ()
        return tuple(reversed(self.traces[agent][-self.cfg.trace_depth :]))

    def contexts(self) -> list[DonationContext]:
        if self.done:
            raise RuntimeError("the game is over")
        return [
            DonationContext(self.round + 1, d, r, self.resources[d], self.resources[r], self.visible_trace(r))
            for d, r in self.pairs()
        ]

    def check_action(self, action: Action, donor_resources: float) -> None:
        """Raise ``ValueError`` for an action the rules forbid (the parser rejects these first)."""
        if action.kind == "punish" and self.cfg.punishment != "costly":
            raise ValueError("punishment is not allowed in this game")
        if action.kind not in ("donate", "punish"):
            raise ValueError(f"unknown action kind {action.kind!r}")
        if not (0.0 <= action.amount <= donor_resources + 1e-9) or not np.isfinite(action.amount):
            raise ValueError(f"amount {action.amount} outside [0, {donor_resources:g}]")

    def play_round(self, actions: list[Action]) -> list[Outcome]:
        """Apply one action per pair of :meth:`pairs` (same order); update traces."""
        pairs = self.pairs()
        if len(actions) != len(pairs):
            raise ValueError(f"round {self.round + 1} has {len(pairs)} donors, got {len(actions)} actions")
        for (d, _), a in zip(pairs, actions):
            self.check_action(a, self.resources[d])
        k = self.round + 1
        outs = []
        # Within a round every agent is donor or recipient, never both, so order is irrelevant.
        for (d, r), a in zip(pairs, actions):
            amount = min(float(a.amount), self.resources[d])
            d0, r0 = self.resources[d], self.resources[r]
            frac = amount / d0 if d0 > 0 else 0.0
            self.resources[d] = d0 - amount
            if a.kind == "donate":
                self.resources[r] = r0 + self.cfg.multiplier * amount
                entry = TraceEntry(k, d, r, "donate", frac, amount)
            else:
                loss = self.cfg.punishment_loss * amount
                self.resources[r] = max(0.0, r0 - loss)
                entry = TraceEntry(k, d, r, "punish", frac, amount, loss)
            # The donor's trace becomes the recipient's trace plus what the donor just did.
            self.traces[d] = self.traces[r] + [entry]
            outs.append(Outcome(k, d, r, a.kind, amount, frac, d0, r0, self.resources[d], self.resources[r]))
        self.round += 1
        self.history.extend(outs)
        return outs


# ---------------------------------------------------------------------- generations


def average_scores(game_results: list[dict[str, float]]) -> dict[str, float]:
    """Mean final resources of each agent over the games of a generation."""
    names = game_results[0].keys()
    return {n: float(np.mean([g[n] for g in game_results])) for n in names}


def select_survivors(scores: dict[str, float], n_survivors: int, rng: np.random.Generator) -> list[str]:
    """The ``n_survivors`` best by score, best first; ties broken at random (seeded)."""
    names = list(scores)
    tie = rng.permutation(len(names))
    order = sorted(range(len(names)), key=lambda i: (-scores[names[i]], tie[i]))
    return [names[i] for i in order[:n_survivors]]


def new_agent_names(generation: int, count: int) -> list[str]:
    """The paper's naming: ``{generation}_{index}`` (1-based), unique across a run."""
    return [f"{generation}_{i + 1}" for i in range(count)]


def seat(names: list[str], rng: np.random.Generator) -> list[str]:
    """Random seating for a generation (which seats, hence partners, an agent gets)."""
    return [names[i] for i in rng.permutation(len(names))]


@dataclass
class GenerationResult:
    generation: int
    seating: list[str]
    game_finals: list[dict[str, float]] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    survivors: list[str] = field(default_factory=list)

    @property
    def average_final_resources(self) -> float:
        return float(np.mean(list(self.scores.values())))
