"""Donor game with real language models: a tiny random Llama behind the platform's HF engine
(a full small run), and the same model behind a real OpenAI-compatible HTTP server on
127.0.0.1 driven by the ``openai`` client."""
from __future__ import annotations

import threading
import time

import pytest

from softverify.envs.donor_game.agents import EngineAgent, OpenAIAgent, Request
from softverify.envs.donor_game.config import build_donor_config
from softverify.envs.donor_game.parsing import summary_mismatches
from softverify.envs.donor_game.runner import DonorGameRunner, read_jsonl
from softverify.infra.cluster import free_port


@pytest.fixture(scope="module")
def tiny_engine(tiny_model_dir):
    from softverify.engines.hf import HFEngine

    return HFEngine(str(tiny_model_dir), torch_threads=1, batch_size=8)


def _cfg(tmp_path, **agent):
    return build_donor_config({
        "game": {"num_agents": 4, "num_rounds": 2, "games_per_generation": 2, "num_generations": 2, "seed": 1},
        "agent": {"backend": "engine", "max_new_tokens": 4, "strategy_max_new_tokens": 6, "max_retries": 1,
                  "temperature": 1.0, **agent},
        "run": {"output_dir": str(tmp_path / "run"), "progress": False},
    })


def test_full_small_run_with_tiny_model(tmp_path, tiny_engine):
    cfg = _cfg(tmp_path, answer_prefix="Answer:", strategy_prefix="My strategy will be")
    agent = EngineAgent(cfg.agent, engine=tiny_engine, seed=1)
    summary = DonorGameRunner(cfg, agent).run()
    recs = read_jsonl(tmp_path / "run" / "decisions.jsonl")
    dec = [r for r in recs if r["type"] == "decision"]
    assert len(dec) == 2 * 2 * 2 * 2
    for d in dec:
        assert d["response"].startswith("Answer:")  # the prefix is part of what was parsed
        assert 0 <= d["amount"] <= d["donor_before"] + 1e-9  # whatever the model said, only legal moves
        assert d["valid"] == (len(d["errors"]) < d["attempts"])
        if not d["valid"]:
            assert d["amount"] == 0
    n_err = sum(len(d["errors"]) for d in dec)
    answers = summary["rejections"]["donation_answers"]
    assert answers["rejected"] == n_err and answers["attempts"] == sum(d["attempts"] for d in dec)
    assert summary["rejections"]["decisions"]["given_up"] == sum(not d["valid"] for d in dec)
    assert summary_mismatches(summary["rejections"]) == []
    strat = [r for r in recs if r["type"] == "strategy"]
    assert [r["agent"] for r in strat] == ["1_1", "1_2", "1_3", "1_4", "2_1", "2_2"]
    assert all(r["strategy"].startswith("My strategy will be") for r in strat)
    assert len(summary["average_final_resources"]) == 2
    # identical seeds -> identical run (sampling seeded per call)
    again = DonorGameRunner(cfg.model_copy(update={"run": cfg.run.model_copy(update={"output_dir": str(tmp_path / "b")})}),
                            EngineAgent(cfg.agent, engine=tiny_engine, seed=1)).run()
    assert again["average_final_resources"] == summary["average_final_resources"]


@pytest.fixture(scope="module")
def openai_server(tiny_engine):
    """A minimal OpenAI-compatible /v1/chat/completions over the HF engine (real HTTP)."""
    import uvicorn
    from fastapi import FastAPI

    from softverify.engines.base import SamplingParams

    app = FastAPI()
    seen: list[dict] = []

    @app.post("/v1/chat/completions")
    def chat(body: dict):
        seen.append(body)
        sp = SamplingParams(max_new_tokens=int(body.get("max_tokens") or 16), temperature=float(body.get("temperature", 1.0)),
                            top_p=float(body.get("top_p", 1.0)), seed=0)
        text = tiny_engine.chat([body["messages"]], sp)[0]
        return {
            "id": "cmpl-1", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}/v1", seen
    server.should_exit = True
    th.join(timeout=10)


def test_openai_agent_against_a_real_local_server(tmp_path, openai_server):
    base_url, seen = openai_server
    cfg = build_donor_config({
        "game": {"num_agents": 4, "num_rounds": 2, "games_per_generation": 1, "num_generations": 1},
        "agent": {"backend": "openai", "base_url": base_url, "model": "tiny", "max_new_tokens": 4,
                  "strategy_max_new_tokens": 4, "max_retries": 0, "concurrency": 2},
        "run": {"output_dir": str(tmp_path / "oa"), "progress": False},
    })
    agent = OpenAIAgent(cfg.agent)
    texts = agent.respond([Request("1_1", "strategy", [{"role": "user", "content": "hi"}])] * 2)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert seen[-1]["model"] == "tiny" and seen[-1]["max_tokens"] == 4
    n0 = len(seen)
    summary = DonorGameRunner(cfg, agent).run()
    # 4 strategies + 2 rounds x 2 donors, one request each (no retries)
    assert len(seen) - n0 == 4 + 4
    recs = read_jsonl(tmp_path / "oa" / "decisions.jsonl")
    dec = [r for r in recs if r["type"] == "decision"]
    assert len(dec) == 4 and summary["rejections"]["donation_answers"]["attempts"] == 4
    assert summary["rejections"]["decisions"] == {"total": 4, "accepted": 0, "given_up": 4}
    assert summary_mismatches(summary["rejections"]) == []
    # a random tiny model does not produce "Answer: x": every decision is a logged rejection
    assert all(not d["valid"] and d["amount"] == 0 and d["errors"] for d in dec)
    assert summary["average_final_resources"] == [10.0]
    sys_prompt = seen[-1]["messages"][0]["content"]
    assert "initial endowment of 10 units" in sys_prompt and "2x the number of units" in sys_prompt
