"""Every config shipped in configs/ loads and validates, and the cot rung's file asks the
policy with the prompt the ladder benchmark uses (they would drift apart silently)."""
from pathlib import Path

import pytest

from softverify.config import load_config
from softverify.configbase import ConfigError
from softverify.task.prompts import COT_ANSWER_PROMPT, RBIO_SYSTEM_PROMPT
from softverify.task.answer import forcing_suffix, parse_answer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_config_loads(path):
    """Valid, or refused only because an asset configs/README.md says to build first
    (under runs/assets/) is absent -- never for a key or a value."""
    try:
        cfg = load_config(str(path), [])
    except ConfigError as e:
        lines = [l for l in str(e).splitlines()[1:] if l.strip()]
        assert lines and all("runs/assets/" in l and "does not exist" in l for l in lines), str(e)
        return
    assert cfg.verifiers, f"{path.name} names no verifiers"


def test_ladder_cot_config_uses_the_cot_answer_prompt():
    """The cot_enumerate rung: every reasoning closed for both answers (no sampled forced answer)."""
    cfg = load_config(str(CONFIGS / "ladder_cot.yaml"), [])
    assert cfg.prompt.style == "cot" and cfg.algorithm.estimator == "enumerate" and not cfg.rollout.force_answer
    assert cfg.rollout.system_prompt == COT_ANSWER_PROMPT


def test_cot_answer_prompt_examples_parse_after_the_forcing_suffix():
    """Its examples are what a forced turn continues with: each one, after the suffix,
    must read as that answer; the rbio1 example line does not parse at all."""
    turn = "<think>\nthe knockdown lowers it"
    for word in ("yes", "no"):
        assert f"<answer>{word}</answer>" in COT_ANSWER_PROMPT
        assert parse_answer(turn + forcing_suffix(turn) + f"{word}</answer>") == word
    assert parse_answer(turn + forcing_suffix(turn) + "\nyes or no\n</answer>") is None
    assert "yes or no\n</answer>" in RBIO_SYSTEM_PROMPT
