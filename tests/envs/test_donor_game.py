"""Donor game: rules on hand-checked cases, parsing, config, the generations loop with
numeric agents, JSONL, plots, CLI and the GRPO verifier. No model, no Ray: fast."""
from __future__ import annotations

import json
import logging
from itertools import chain

import numpy as np
import pytest

from softverify.config import ConfigError
from softverify.envs.donor_game.agents import FixedFractionAgent, Request
from softverify.envs.donor_game.config import GameConfig, build_donor_config, load_donor_config
from softverify.envs.donor_game.game import (
    Action,
    DonorGame,
    average_scores,
    new_agent_names,
    pairing_schedule,
    select_survivors,
)
from softverify.envs.donor_game.parsing import RejectionLog, parse_donation, parse_strategy, summary_mismatches
from softverify.envs.donor_game.runner import DonorGameRunner, JsonlWriter, read_jsonl


# ----------------------------------------------------------------------------- pairing
def test_pairing_schedule_hand_checked_4_agents():
    # m = 2; even round 2t: A_i -> B_(i+t); odd round 2t+1: B_(i+t+1) -> A_i
    assert pairing_schedule(4, 4) == [
        [(0, 2), (1, 3)],
        [(3, 0), (2, 1)],
        [(0, 3), (1, 2)],
        [(2, 0), (3, 1)],
    ]
    assert pairing_schedule(4, 2, swap_roles=True) == [[(2, 0), (3, 1)], [(0, 3), (1, 2)]]


@pytest.mark.parametrize("n", [2, 4, 6, 8, 12, 16])
@pytest.mark.parametrize("swap", [False, True])
def test_pairing_rules_hold_for_every_size(n, swap):
    sched = pairing_schedule(n, n, swap)
    assert len(sched) == n
    seen = set()
    role = {}  # seat -> donor in previous round?
    for r, pairs in enumerate(sched):
        seats = list(chain.from_iterable(pairs))
        assert sorted(seats) == list(range(n)), "everyone plays every round, once"
        for d, rc in pairs:
            assert (d, rc) not in seen, "a donor->recipient pair never repeats"
            seen.add((d, rc))
            for seat, is_donor in ((d, True), (rc, False)):
                if r:
                    assert role[seat] != is_donor, "roles alternate every round"
                role[seat] = is_donor
    assert len(seen) == n * n // 2  # every A->B and B->A pair exactly once
    # no agent meets the same partner in consecutive rounds when m > 2
    if n >= 6:
        for r in range(n - 1):
            now = {frozenset(p) for p in sched[r]}
            nxt = {frozenset(p) for p in sched[r + 1]}
            assert not now & nxt


def test_pairing_rejects_impossible_shapes():
    with pytest.raises(ValueError):
        pairing_schedule(5, 4)
    with pytest.raises(ValueError):
        pairing_schedule(4, 5)  # would repeat an ordered pair


# ----------------------------------------------------------------------------- arithmetic
def _cfg(**kw) -> GameConfig:
    return GameConfig(**{"num_agents": 4, "num_rounds": 4, **kw})


def test_donation_arithmetic_and_traces_hand_checked():
    g = DonorGame(["a", "b", "c", "d"], _cfg())
    assert g.pairs() == [("a", "c"), ("b", "d")]
    c1 = g.contexts()
    assert c1[0].trace_text() == "c did not have any previous interactions."
    g.play_round([Action("donate", 5), Action("donate", 0)])
    assert g.resources == {"a": 5, "b": 10, "c": 20, "d": 10}
    assert g.pairs() == [("d", "a"), ("c", "b")]
    outs = g.play_round([Action("donate", 10), Action("donate", 4)])
    assert g.resources == {"a": 25, "b": 18, "c": 16, "d": 0}
    assert [o.fraction for o in outs] == [1.0, 0.2]
    # round 3: a -> d; d's trace is a's trace plus what d did: chain d -> a -> c
    ctx = g.contexts()[0]
    assert (ctx.donor, ctx.recipient, ctx.donor_resources, ctx.recipient_resources) == ("a", "d", 25, 0)
    assert ctx.trace_text() == (
        "In round 2, d donated 100% of their resources to a. "
        "In round 1, a donated 50% of their resources to c. c did not have any previous interactions."
    )
    assert g.contexts()[1].trace_text() == (
        "In round 2, c donated 20% of their resources to b. "
        "In round 1, b donated 0% of their resources to d. d did not have any previous interactions."
    )


@pytest.mark.parametrize("depth,expected", [
    (1, "In round 2, d donated 100% of their resources to a."),
    (2, "In round 2, d donated 100% of their resources to a. In round 1, a donated 50% of their resources to c."),
    (0, ""),
])
def test_trace_depth_variants(depth, expected):
    g = DonorGame(["a", "b", "c", "d"], _cfg(trace_depth=depth))
    g.play_round([Action("donate", 5), Action("donate", 0)])
    g.play_round([Action("donate", 10), Action("donate", 4)])
    assert g.contexts()[0].trace_text() == expected


@pytest.mark.parametrize("mult,expected_c", [(1.5, 16.0), (3.0, 22.0)])
def test_multiplier_variants(mult, expected_c):
    g = DonorGame(["a", "b", "c", "d"], _cfg(multiplier=mult))
    g.play_round([Action("donate", 4), Action("donate", 0)])
    assert g.resources["a"] == 6 and g.resources["c"] == expected_c


def test_costly_punishment_hand_checked():
    g = DonorGame(["a", "b", "c", "d"], _cfg(punishment="costly", punishment_loss=2.0))
    g.play_round([Action("punish", 3), Action("punish", 8)])
    # a spends 3 to remove 6 from c; b spends 8 to remove 16 from d, floored at 0
    assert g.resources == {"a": 7, "b": 2, "c": 4, "d": 0}
    ctx = g.contexts()[0]  # round 2: d -> a; d sees what a did
    assert (ctx.donor, ctx.recipient) == ("d", "a")
    assert ctx.trace_text().startswith(
        "In round 1, a punished c by spending 3 units to take away 6 units from their resources."
    )
    assert ctx.trace[0].signed_fraction() == pytest.approx(-0.3)


def test_illegal_actions_are_refused_by_the_rules():
    g = DonorGame(["a", "b", "c", "d"], _cfg())
    with pytest.raises(ValueError, match="outside"):
        g.play_round([Action("donate", 13), Action("donate", 0)])
    with pytest.raises(ValueError, match="not allowed"):
        g.play_round([Action("punish", 1), Action("donate", 0)])
    with pytest.raises(ValueError, match="2 donors"):
        g.play_round([Action("donate", 1)])
    assert g.round == 0 and g.resources["a"] == 10  # nothing applied


def test_total_wealth_identity_over_a_full_game():
    """sum(final) = N * R0 + (multiplier - 1) * sum(donated), for any donations."""
    rng = np.random.default_rng(3)
    cfg = GameConfig(num_agents=12, num_rounds=12, multiplier=2.0)
    g = DonorGame([f"x{i}" for i in range(12)], cfg)
    donated = 0.0
    while not g.done:
        acts = [Action("donate", float(rng.uniform()) * c.donor_resources) for c in g.contexts()]
        donated += sum(a.amount for a in acts)
        g.play_round(acts)
    assert sum(g.resources.values()) == pytest.approx(12 * 10 + donated)
    assert g.round == 12 and g.done


# ----------------------------------------------------------------------------- selection
def test_selection_and_naming():
    scores = average_scores([{"w": 1, "x": 5, "y": 9, "z": 8}, {"w": 3, "x": 5, "y": 9, "z": 10}])
    assert scores == {"w": 2, "x": 5, "y": 9, "z": 9}
    s1 = select_survivors(scores, 2, np.random.default_rng(0))
    assert set(s1) == {"y", "z"}
    # ties are broken by the seeded generator: same seed -> same order
    assert s1 == select_survivors(scores, 2, np.random.default_rng(0))
    orders = {tuple(select_survivors(scores, 2, np.random.default_rng(s))) for s in range(20)}
    assert orders == {("y", "z"), ("z", "y")}
    assert new_agent_names(3, 2) == ["3_1", "3_2"]


# ----------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("text,res,ok,amount,err", [
    ("Justification: fair.\nAnswer: 5", 10, True, 5.0, None),
    ("Answer: 10", 10, True, 10.0, None),
    ("Answer: 4.5 units", 10, True, 4.5, None),
    ("Answer: 40%", 5, True, 2.0, None),
    ("Answer: 13", 10, False, None, "out_of_range"),
    ("Answer: 130%", 10, False, None, "out_of_range"),
    ("Answer: -2", 10, False, None, "negative"),
    ("I would donate 5", 10, False, None, "no_answer"),
    ("Answer: nothing much", 10, False, None, "no_number"),
    ("Answer: The round 3 partner", 10, False, None, "no_number"),
    ("Answer: 1_0", 10, False, None, "no_number"),
    ("Answer: [2.5]", 10, True, 2.5, None),
    ("Answer: 7.\n\nJustification: x", 10, True, 7.0, None),
    ("Form: Answer: [answer here]\nJustification: ok\nAnswer: 3", 10, True, 3.0, None),
    ("Answer: Punish, 2", 10, False, None, "punish_not_allowed"),
])
def test_parse_donation(text, res, ok, amount, err):
    p = parse_donation(text, res, punishment_allowed=False)
    assert p.ok is ok and p.error == err
    if ok:
        assert p.action.kind == "donate" and p.action.amount == pytest.approx(amount)


def test_parse_punishment_and_strategy():
    p = parse_donation("Answer: Punish, 2", 10, punishment_allowed=True)
    assert p.action == Action("punish", 2.0)
    assert parse_donation("Answer: Donate, 3.5", 10, True).action == Action("donate", 3.5)
    assert parse_strategy("Think... My strategy will be to give 50%.") == ("My strategy will be to give 50%.", True)
    assert parse_strategy("give half") == ("give half", False)


def test_rejections_are_counted_and_logged(caplog):
    log = RejectionLog()
    with caplog.at_level(logging.WARNING):
        for t in ("Answer: 13", "Answer: 130%", "nope", "Answer: 4"):
            log.record(parse_donation(t, 10, False), "1_1", t)
    log.record_strategy(True), log.record_strategy(False)
    log.record_decision(True)  # the fourth answer was accepted
    for t in ("Answer: 11", "Answer: 12", "Answer: 15"):  # a second decision: every retry rejected
        log.record(parse_donation(t, 10, False), "1_2", t)
    log.record_decision(False)
    # the numbers ("attempts": 8, "rejected": 13) mixed strategies and given-up
    # decisions into the rejections; apart, each group adds up
    assert log.summary() == {"decisions": {"total": 2, "accepted": 1, "given_up": 1},
                             "donation_answers": {"attempts": 7, "accepted": 1, "rejected": 6,
                                                  "by_reason": {"out_of_range": 5, "no_answer": 1}},
                             "strategies": {"written": 2, "with_sentence": 1, "without_sentence": 1}}
    assert summary_mismatches(log.summary()) == []
    assert sum("rejected answer from 1_1 (out_of_range" in r.message for r in caplog.records) == 2
    broken = log.summary()
    broken["donation_answers"]["rejected"] += 1  # e.g. a given-up decision counted as a rejection
    assert summary_mismatches(broken) == ["donation_answers.attempts = accepted + rejected",
                                          "donation_answers.rejected = sum(by_reason)"]


# ----------------------------------------------------------------------------- config
def test_config_validation(tmp_path):
    with pytest.raises(ConfigError, match="game.num_agnets: unknown key"):
        build_donor_config({"game": {"num_agnets": 4}})
    with pytest.raises(ConfigError, match="even"):
        build_donor_config({}, ["game.num_agents=5", "game.num_rounds=4"])
    with pytest.raises(ConfigError, match="pair would repeat"):
        build_donor_config({}, ["game.num_agents=4"])
    with pytest.raises(ConfigError, match="base_url"):
        build_donor_config({}, ["agent.backend=openai"])
    p = tmp_path / "c.yaml"
    p.write_text("game: {num_agents: 4, num_rounds: 4, multiplier: 1.5}\nagent: {backend: fixed}\n")
    cfg = load_donor_config(p, ["game.trace_depth=1"])
    assert (cfg.game.multiplier, cfg.game.trace_depth, cfg.game.num_survivors) == (1.5, 1, 2)
    d = GameConfig()  # the paper's defaults
    assert (d.num_agents, d.initial_resources, d.multiplier, d.num_rounds, d.games_per_generation,
            d.num_generations, d.trace_depth, d.num_survivors) == (12, 10.0, 2.0, 12, 2, 10, 3, 6)


# ----------------------------------------------------------------------------- runner
def _run_cfg(tmp_path, **game):
    g = {"num_agents": 4, "num_rounds": 4, "games_per_generation": 2, "num_generations": 3, **game}
    return build_donor_config({"game": g, "agent": {"backend": "fixed", "max_retries": 1},
                               "run": {"output_dir": str(tmp_path / "run"), "progress": False}})


class ScriptedAgent:
    """Per-agent fractions; answers 130% on the first ask of selected donors; records prompts."""

    name = "scripted"

    def __init__(self, fractions, overshoot=(), always_bad=()):
        self.fractions, self.overshoot, self.always_bad = fractions, set(overshoot), set(always_bad)
        self.requests: list[Request] = []
        self._asked: set = set()

    def respond(self, requests):
        out = []
        for r in requests:
            self.requests.append(r)
            f = self.fractions.get(r.agent, 0.5)
            if r.kind == "strategy":
                out.append(f"Reasoning. My strategy will be to give {f:.0%} ({r.agent}).")
                continue
            key = (r.agent, r.context.round, id(r.context))
            if r.agent in self.always_bad or (r.agent in self.overshoot and key not in self._asked):
                self._asked.add(key)
                out.append(f"Answer: {1.3 * r.context.donor_resources:g}")
            else:
                out.append(f"Justification: rule.\nAnswer: {f * r.context.donor_resources:g}")
        return out


def test_full_run_with_numeric_agents(tmp_path):
    cfg = _run_cfg(tmp_path)
    # gen-1 agents 1_1..1_4: 1_1 gives everything, the others nothing
    agent = ScriptedAgent({"1_1": 1.0, "1_2": 0.0, "1_3": 0.0, "1_4": 0.0}, overshoot={"1_3"}, always_bad={"1_4"})
    summary = DonorGameRunner(cfg, agent).run()
    recs = read_jsonl(tmp_path / "run" / "decisions.jsonl")
    types = [r["type"] for r in recs]
    assert types[0] == "config" and types.count("generation") == 3
    dec = [r for r in recs if r["type"] == "decision"]
    assert len(dec) == 3 * 2 * 4 * 2  # generations x games x rounds x donors
    # 1_3 overshoots once per decision then complies: logged error, valid, 2 attempts
    d13 = [d for d in dec if d["donor"] == "1_3"]
    assert d13 and all(d["valid"] and d["attempts"] == 2 and d["errors"][0].startswith("out_of_range") for d in d13)
    # 1_4 always asks for 130%: never accepted, donation 0, marked invalid
    d14 = [d for d in dec if d["donor"] == "1_4"]
    assert d14 and all((not d["valid"]) and d["amount"] == 0 and len(d["errors"]) == 2 for d in d14)
    rej = summary["rejections"]
    answers = rej["donation_answers"]
    assert answers["by_reason"] == {"out_of_range": len(d13) + 2 * len(d14)}  # gave-ups are not rejections
    assert answers["attempts"] == sum(d["attempts"] for d in dec) and answers["rejected"] <= answers["attempts"]
    assert rej["decisions"] == {"total": len(dec), "accepted": len(dec) - len(d14), "given_up": len(d14)}
    assert rej["strategies"]["written"] == len([r for r in recs if r["type"] == "strategy"])
    assert summary_mismatches(rej) == []
    assert all(summary_mismatches(g["rejections"]) == [] for g in recs if g["type"] == "generation")
    # generation 1: wealth identity per game, hand-computable scores
    gen1 = [r for r in recs if r["type"] == "generation"][0]
    for game_no in (1, 2):
        ds = [d for d in dec if d["generation"] == 1 and d["game"] == game_no]
        assert np.mean(gen1["game_averages"][game_no - 1]) == pytest.approx(10 + sum(d["amount"] for d in ds) / 4)
    # the giver 1_1 gives everything away, so it is never among the survivors
    assert "1_1" not in gen1["survivors"] and len(gen1["survivors"]) == 2
    # newcomers of generation 2 saw the survivors' strategies and scores
    strat2 = [r for r in agent.requests if r.kind == "strategy" and r.agent.startswith("2_")]
    assert len(strat2) == 2
    text = strat2[0].messages[1]["content"]
    for s in gen1["survivors"]:
        assert f"{s} (score {gen1['scores'][s]:.1f}): My strategy will be" in text
    srecs = [r for r in recs if r["type"] == "strategy" and r["generation"] == 2]
    assert [r["agent"] for r in srecs] == ["2_1", "2_2"] and srecs[0]["inherited_from"] == gen1["survivors"]
    # gen-2 population = survivors + newcomers
    gen2 = [r for r in recs if r["type"] == "generation"][1]
    assert set(gen2["seating"]) == set(gen1["survivors"]) | {"2_1", "2_2"}
    # donation prompts never reveal the number of rounds
    dprompt = next(r for r in agent.requests if r.kind == "donation").messages
    assert "12 rounds" not in json.dumps(dprompt) and "4 rounds" not in json.dumps(dprompt)
    assert summary["average_final_resources"] == [r["average_final_resources"] for r in recs if r["type"] == "generation"]


def test_all_defect_and_all_cooperate_baselines(tmp_path):
    cfg = _run_cfg(tmp_path, num_generations=1)
    s0 = DonorGameRunner(cfg, FixedFractionAgent(0.0)).run()
    assert s0["average_final_resources"] == [10.0] and s0["rejections"]["donation_answers"]["rejected"] == 0
    s1 = DonorGameRunner(cfg, FixedFractionAgent(1.0)).run()
    # all give everything, 4 agents, x2: r1 A->B: A=0, B=10+20=30; r2 B->A: A=60, B=0;
    # r3: B=120; r4: A=240. Every game ends with two agents at 240 and two at 0: mean 120
    assert s1["average_final_resources"] == [120.0]


def test_jsonl_writer_is_append_only_and_reader_skips_torn_line(tmp_path):
    p = tmp_path / "x.jsonl"
    w = JsonlWriter(p)
    w.write([{"a": 1}, {"b": np.float32(2.5)}])
    w.close()
    with open(p, "a") as f:
        f.write('{"torn": ')
    assert read_jsonl(p) == [{"a": 1}, {"b": 2.5}]


def test_plots_and_cli(tmp_path, capsys):
    from softverify.cli import main
    from softverify.envs.donor_game.plots import figure_numbers

    out = tmp_path / "cli"
    rc = main(["donor-game", "run", "--set", "agent.backend=fixed", "--set", "agent.fixed_fraction=0.5",
               "--set", "game.num_agents=4", "--set", "game.num_rounds=4", "--set", "run.progress=false",
               "--generations", "2", "--output-dir", str(out)])
    assert rc == 0
    assert (out / "average_resources.png").stat().st_size > 1000
    assert (out / "donation_fractions.png").stat().st_size > 1000
    nums = figure_numbers(read_jsonl(out / "decisions.jsonl"))
    summary = json.loads((out / "summary.json").read_text())
    assert nums["average_final_resources"] == [round(x, 4) for x in summary["average_final_resources"]]
    assert nums["mean_donation_fraction"] == [0.5, 0.5] and len(nums["fraction_by_round"]["1"]) == 4
    capsys.readouterr()
    # two runs: each gets its own "by round" panel
    other = tmp_path / "cli2"
    assert main(["donor-game", "run", "--set", "agent.backend=fixed", "--set", "agent.fixed_fraction=0.2",
                 "--set", "game.num_agents=4", "--set", "game.num_rounds=4", "--set", "run.progress=false",
                 "--generations", "2", "--output-dir", str(other), "--no-plot"]) == 0
    import matplotlib.pyplot as plt

    from softverify.envs.donor_game import plots

    titles = []
    real_close = plt.close
    plt.close = lambda fig=None: (titles.extend(a.get_title() for a in fig.axes), real_close(fig))
    try:
        plots.plot_runs([out, other], tmp_path / "both")
    finally:
        plt.close = real_close
    assert "By round: cli" in titles and "By round: cli2" in titles
    # runs with the same directory name are told apart; a decisions.jsonl is named by its run
    assert plots.run_labels([str(tmp_path / "a" / "seed0"), str(tmp_path / "b" / "seed0" / "decisions.jsonl")]) == {
        str(tmp_path / "a" / "seed0"): "a/seed0", str(tmp_path / "b" / "seed0" / "decisions.jsonl"): "b/seed0"}
    assert main(["donor-game", "plot", str(out), "-o", str(tmp_path / "p")]) == 0
    assert "average_final_resources" in capsys.readouterr().out
    assert (tmp_path / "p" / "figure_numbers.json").exists()
    assert main(["donor-game", "run", "--set", "game.num_agnets=3"]) == 2
    assert main(["donor-game", "plot", str(tmp_path / "missing")]) == 2


# ----------------------------------------------------------------------------- verifier
def test_verifier_registered_and_configurable():
    from softverify.config import build_config
    from softverify.verifiers import available_kinds, build_verifier

    assert "donor_game" in available_kinds()
    cfg = build_config({"verifiers": [{"kind": "donor_game", "params": {"objective": "group", "multiplier": 3.0}}]})
    v = build_verifier(cfg.verifiers[0].kind, **cfg.verifiers[0].params)
    assert v.objective == "group" and v.game_cfg.multiplier == 3.0
    with pytest.raises(ValueError, match="bad parameters|objective"):
        build_verifier("donor_game", objective="selfish")
    with pytest.raises(Exception):
        build_verifier("donor_game", num_agnets=4)


def test_verifier_scores_outcomes():
    from softverify.envs.donor_game.verifier import DonorGameVerifier, make_prompts, play_fixed_fraction
    from softverify.types import Sample

    cfg = GameConfig(num_agents=6, num_rounds=6)
    # against defectors, a focal agent that gives nothing keeps exactly its endowment
    assert play_fixed_fraction(cfg, 0.0, "defect", 0.5, seed=0) == (10.0, 10.0)
    # ...and one that gives everything ends with nothing, the group gaining its doubled gifts
    own, group = play_fixed_fraction(cfg, 1.0, "defect", 0.5, seed=0)
    assert own == 0.0 and group == pytest.approx(10 + 10 / 6)
    v = DonorGameVerifier(co_players="defect")
    assert v.score_fraction(0.0) == 1.0 and v.score_fraction(1.0) == 0.0
    r = DonorGameVerifier(co_players="reciprocal")  # reciprocators reward giving
    assert r.score_fraction(0.0) == 0.0 and r.score_fraction(0.75) > r.score_fraction(0.25) > 0
    samples = [Sample("a", "p", c, {"donor_resources": 10.0, "task": "donor_game"})
               for c in ["Answer: 7.5", "Answer: 13", "Answer: 130%", "no idea"]]
    samples.append(Sample("b", "p", "Answer: 3", {"task": "perturbqa"}))
    s = r.score(samples)
    assert s[0] == pytest.approx(r.score_fraction(0.75))
    assert list(s[1:4]) == [0.0, 0.0, 0.0] and np.isnan(s[4])
    rows = make_prompts(5, seed=1)
    assert len(rows) == 5 and all(x["task"] == "donor_game" and "Answer:" in x["question"] for x in rows)
    assert all(0 <= x["donor_resources"] for x in rows)


def test_prompts_cli_feeds_a_training_config(tmp_path):
    """`donor-game prompts` writes a file the trainer's data.source=file accepts."""
    from softverify.cli import main
    from softverify.config import build_config
    from softverify.data import load_prompts
    from softverify.task.prompts import row_messages

    out = tmp_path / "p.jsonl"
    assert main(["donor-game", "prompts", "-n", "6", "-o", str(out), "--game", "multiplier=1.5"]) == 0
    cfg = build_config({"data": {"source": "file", "path": str(out)},
                        "verifiers": [{"kind": "donor_game", "params": {"multiplier": 1.5}}],
                        "rollout": {"stop": []}})
    ds = load_prompts(cfg.data, "train")
    assert len(ds) == 6 and "1.5x the number of units" in ds[0]["system"]
    msgs = row_messages(ds[0])
    assert msgs[0]["content"] == ds[0]["system"] and "How many units do you give up?" in msgs[1]["content"]
    assert main(["donor-game", "prompts", "-n", "2", "-o", str(out), "--game", "num_agnets=4"]) == 2
