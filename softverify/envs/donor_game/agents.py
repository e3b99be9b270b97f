"""Who decides: LLM backends (local rollout engine, OpenAI-compatible endpoint) and a
numeric baseline, behind one small batched protocol.

Why batched: a round has ``num_agents / 2`` independent donors, and the HF engine is
several times faster per token at batch 6-16 than one at a time, so the runner asks for a
whole round at once. Every backend answers with *text*; the runner parses it with
:mod:`.parsing`, so a numeric baseline goes through the same checks as an LLM.
"""
from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

from softverify.envs.donor_game.config import AgentConfig
from softverify.envs.donor_game.game import DonationContext


@dataclass(frozen=True)
class Request:
    """One question to one agent: the chat messages, plus the game state they were made from
    (numeric agents read ``context``; LLM agents read ``messages``)."""

    agent: str
    kind: str  # "strategy" | "donation"
    messages: list[dict]
    context: DonationContext | None = None


@runtime_checkable
class Agent(Protocol):
    """A decision maker for a whole population: one text answer per request, same order."""

    name: str

    def respond(self, requests: Sequence[Request]) -> list[str]: ...


class FixedFractionAgent:
    """Donates ``fraction`` of current resources, always; states that as its strategy.

    A baseline (all-cooperate at 1.0, all-defect at 0.0) and the test double for the
    runner: it exercises prompts, parsing, logging and selection without a model.
    ``fractions`` optionally overrides the fraction per agent name prefix.
    """

    def __init__(self, fraction: float = 0.5, fractions: dict[str, float] | None = None):
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        self.fraction = fraction
        self.fractions = dict(fractions or {})
        self.name = f"fixed-{fraction:g}"

    def _fraction(self, agent: str) -> float:
        return self.fractions.get(agent, self.fraction)

    def respond(self, requests: Sequence[Request]) -> list[str]:
        out = []
        for r in requests:
            f = self._fraction(r.agent)
            if r.kind == "strategy":
                out.append(f"My strategy will be to always donate {f * 100:g}% of my resources.")
            else:
                assert r.context is not None, "donation requests carry their context"
                out.append(f"Justification: fixed policy.\nAnswer: {r.context.donor_resources * f:.6g}")
        return out


class EngineAgent:
    """The platform's HF rollout engine (any local HF model; default SmolLM2-135M-Instruct)."""

    def __init__(self, cfg: AgentConfig, engine=None, seed: int = 0):
        from softverify.engines.base import SamplingParams

        if engine is None:
            from softverify.engines.hf import HFEngine
            from softverify.model.names import resolve_model_path

            engine = HFEngine(
                resolve_model_path(cfg.model), dtype=cfg.dtype, torch_threads=cfg.torch_threads, batch_size=cfg.batch_size
            )
        self.engine = engine
        self.cfg = cfg
        self.name = f"engine:{cfg.model}"
        self._sampling = {
            kind: SamplingParams(max_new_tokens=n, temperature=cfg.temperature, top_p=cfg.top_p)
            for kind, n in (("strategy", cfg.strategy_max_new_tokens), ("donation", cfg.max_new_tokens))
        }
        self._seed = seed * 1_000_003
        self._calls = 0

    def respond(self, requests: Sequence[Request]) -> list[str]:
        out: list[str | None] = [None] * len(requests)
        for kind in ("strategy", "donation"):
            idx = [i for i, r in enumerate(requests) if r.kind == kind]
            if not idx:
                continue
            sp = self._sampling[kind]
            # A fresh seed per call keeps a run reproducible without repeating samples.
            self._calls += 1
            sp = dataclasses.replace(sp, seed=self._seed + self._calls)
            prefix = self.cfg.answer_prefix if kind == "donation" else self.cfg.strategy_prefix
            texts = self._complete([requests[i].messages for i in idx], sp, prefix)
            for i, t in zip(idx, texts):
                out[i] = t
        return [t or "" for t in out]

    def _complete(self, conversations: list[list[dict]], sp, prefix: str | None) -> list[str]:
        """Chat completions; with ``prefix`` the assistant turn is started with it (and the
        returned text includes it, so parsing sees exactly what the model was made to say)."""
        from softverify.engines.base import render_turns

        pb = render_turns(self.engine, conversations, prefix or "")  # the tokens rollout would give the policy
        return [(prefix or "") + g[0].text for g in self.engine.generate(pb.token_ids, sp, n=1)]


class OpenAIAgent:
    """Any OpenAI-compatible chat endpoint (OpenAI, vLLM, `softverify serve` on loopback)."""

    def __init__(self, cfg: AgentConfig, client=None):
        from openai import OpenAI

        self.cfg = cfg
        self.name = f"openai:{cfg.model}"
        self.client = client or OpenAI(
            base_url=cfg.base_url,
            api_key=os.environ.get(cfg.api_key_env) or "EMPTY",
            timeout=cfg.request_timeout_s,
            max_retries=2,
        )

    def _one(self, r: Request) -> str:
        n = self.cfg.strategy_max_new_tokens if r.kind == "strategy" else self.cfg.max_new_tokens
        resp = self.client.chat.completions.create(
            model=self.cfg.model, messages=r.messages, max_tokens=n, temperature=self.cfg.temperature, top_p=self.cfg.top_p
        )
        return resp.choices[0].message.content or ""

    def respond(self, requests: Sequence[Request]) -> list[str]:
        if len(requests) <= 1 or self.cfg.concurrency == 1:
            return [self._one(r) for r in requests]
        with ThreadPoolExecutor(max_workers=min(self.cfg.concurrency, len(requests))) as pool:
            return list(pool.map(self._one, requests))


def build_agent(cfg: AgentConfig, seed: int = 0) -> Agent:
    """The backend named by ``cfg.backend``."""
    if cfg.backend == "fixed":
        return FixedFractionAgent(cfg.fixed_fraction)
    if cfg.backend == "openai":
        return OpenAIAgent(cfg)
    return EngineAgent(cfg, seed=seed)
