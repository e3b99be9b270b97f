"""The generations loop: strategies -> games -> selection -> transmission, all logged.

Every strategy, every decision (including each rejected answer and why) and every
generation's scores go to ``decisions.jsonl``; ``summary.json`` holds the per-generation
numbers the plots show. Writes are crash-safe: each batch of JSONL lines is one
``O_APPEND`` write followed by fsync (a reader never sees half a record except possibly a
torn last line, which :func:`read_jsonl` skips), and the summary is replaced atomically.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from softverify.envs.donor_game import prompts
from softverify.envs.donor_game.agents import Agent, Request, build_agent
from softverify.envs.donor_game.config import DonorGameConfig
from softverify.envs.donor_game.game import (
    Action,
    DonationContext,
    DonorGame,
    GenerationResult,
    average_scores,
    new_agent_names,
    seat,
    select_survivors,
)
from softverify.envs.donor_game.parsing import RejectionLog, parse_donation, parse_strategy
from softverify.infra.fsutil import write_text_atomic

log = logging.getLogger(__name__)


class JsonlWriter:
    """Append-only JSONL; one ``os.write`` per batch so records are never interleaved or split."""

    def __init__(self, path: str | os.PathLike, fresh: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if fresh else 0)
        self._fd = os.open(self.path, flags, 0o644)

    def write(self, records: Iterable[dict]) -> None:
        data = "".join(json.dumps(r, default=_jsonable) + "\n" for r in records).encode()
        if data:
            os.write(self._fd, data)
            os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All complete records; a torn final line (crash mid-write) is skipped."""
    out = []
    with open(path) as f:
        for line in f:
            if not line.endswith("\n"):
                break
            out.append(json.loads(line))
    return out


def write_json_atomic(path: str | os.PathLike, obj: dict) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=_jsonable))


class DonorGameRunner:
    """Runs one experiment with one backend (the paper: one base model per society)."""

    def __init__(self, cfg: DonorGameConfig, agent: Agent | None = None):
        self.cfg = cfg
        self.g = cfg.game
        self.agent = agent or build_agent(cfg.agent, seed=cfg.game.seed)
        self.system = prompts.system_prompt(self.g)
        self.rejections = RejectionLog()
        self.strategies: dict[str, str] = {}
        self.out_dir = Path(cfg.run.output_dir)

    # ------------------------------------------------------------------ asking
    def _strategies(self, names: list[str], generation: int, inherited: list[tuple[str, float, str]]) -> list[dict]:
        reqs = [
            Request(n, "strategy", prompts.messages(self.system, prompts.strategy_prompt(self.g, n, inherited)))
            for n in names
        ]
        texts = self.agent.respond(reqs)
        records = []
        for n, t in zip(names, texts):
            strategy, found = parse_strategy(t)
            self.rejections.record_strategy(found)
            if not found:
                log.warning("strategy of %s lacks 'My strategy will be'; keeping the whole text", n)
            self.strategies[n] = strategy
            records.append({
                "type": "strategy", "generation": generation, "agent": n, "strategy": strategy,
                "found_sentence": found, "inherited_from": [i[0] for i in inherited], "raw": t,
            })
        return records

    def _decide(self, ctxs: list[DonationContext], generation: int) -> tuple[list[Action], list[dict]]:
        """Ask every donor of a round; re-ask rejected ones up to ``max_retries`` times."""
        allowed = self.g.punishment == "costly"
        actions: list[Action | None] = [None] * len(ctxs)
        info = [{"errors": [], "response": "", "attempts": 0} for _ in ctxs]
        pending = list(range(len(ctxs)))
        for _ in range(1 + self.cfg.agent.max_retries):
            if not pending:
                break
            reqs = [
                Request(
                    ctxs[i].donor, "donation",
                    prompts.messages(self.system, prompts.donation_prompt(self.g, ctxs[i], self.strategies[ctxs[i].donor], generation)),
                    ctxs[i],
                )
                for i in pending
            ]
            texts = self.agent.respond(reqs)
            still = []
            for i, t in zip(pending, texts):
                p = parse_donation(t, ctxs[i].donor_resources, allowed)
                self.rejections.record(p, ctxs[i].donor, t)
                info[i]["attempts"] += 1
                info[i]["response"] = t
                if p.ok:
                    actions[i] = p.action
                else:
                    info[i]["errors"].append(f"{p.error}: {p.detail}")
                    still.append(i)
            pending = still
        for i in pending:  # gave up: the donor keeps everything, and the record says so
            actions[i] = Action("donate", 0.0)
        for i in range(len(ctxs)):
            info[i]["valid"] = i not in pending
            self.rejections.record_decision(info[i]["valid"])
        return [a for a in actions if a is not None], info

    # ------------------------------------------------------------------ loop
    def run(self) -> dict:
        from tqdm.auto import tqdm

        g, t0 = self.g, time.time()
        rng = np.random.default_rng(g.seed)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        writer = JsonlWriter(self.out_dir / "decisions.jsonl")
        writer.write([{"type": "config", "config": self.cfg.model_dump(), "backend": self.agent.name, "system_prompt": self.system}])
        total = g.num_generations * g.games_per_generation * g.num_rounds
        bar = tqdm(total=total, desc="donor game", unit="round", disable=not self.cfg.run.progress)
        names = new_agent_names(1, g.num_agents)
        writer.write(self._strategies(names, 1, []))
        generations: list[dict] = []
        try:
            for gen in range(1, g.num_generations + 1):
                res = GenerationResult(gen, seat(names, rng))
                fractions: list[float] = []
                for game_no in range(1, g.games_per_generation + 1):
                    game = DonorGame(res.seating, g, swap_roles=(game_no % 2 == 0))
                    while not game.done:
                        ctxs = game.contexts()
                        actions, info = self._decide(ctxs, gen)
                        outs = game.play_round(actions)
                        recs = []
                        for c, o, inf in zip(ctxs, outs, info):
                            fractions.append(o.fraction)
                            recs.append({
                                "type": "decision", "generation": gen, "game": game_no, **o.__dict__,
                                "trace_shown": c.trace_text(), **inf,
                            })
                        writer.write(recs)
                        bar.update(1)
                        bar.set_postfix(gen=gen, game=game_no, rejected=self.rejections.rejected)
                    res.game_finals.append(dict(game.resources))
                res.scores = average_scores(res.game_finals)
                last = gen == g.num_generations
                res.survivors = [] if last else select_survivors(res.scores, g.num_survivors, rng)
                summary = {
                    "type": "generation", "generation": gen, "average_final_resources": res.average_final_resources,
                    "game_averages": [float(np.mean(list(f.values()))) for f in res.game_finals],
                    "mean_donation_fraction": float(np.mean(fractions)) if fractions else 0.0,
                    "scores": res.scores, "survivors": res.survivors, "seating": res.seating,
                    "rejections": self.rejections.summary(),
                }
                generations.append(summary)
                writer.write([summary])
                log.info("generation %d: average final resources %.2f", gen, res.average_final_resources)
                if not last:
                    newcomers = new_agent_names(gen + 1, g.num_agents - g.num_survivors)
                    inherited = [(s, res.scores[s], self.strategies[s]) for s in res.survivors]
                    writer.write(self._strategies(newcomers, gen + 1, inherited))
                    names = res.survivors + newcomers
        finally:
            bar.close()
            writer.close()
        out = {
            "backend": self.agent.name, "config": self.cfg.model_dump(), "elapsed_s": round(time.time() - t0, 2),
            "average_final_resources": [x["average_final_resources"] for x in generations],
            "mean_donation_fraction": [x["mean_donation_fraction"] for x in generations],
            "rejections": self.rejections.summary(),
        }
        write_json_atomic(self.out_dir / "summary.json", out)
        return out


def run_experiment(cfg: DonorGameConfig, agent: Agent | None = None) -> dict:
    return DonorGameRunner(cfg, agent).run()
