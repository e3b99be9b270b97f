"""From a dataset row to chat messages, and the two prompt styles.

Rows carry ``question`` (the user turn) and optionally ``system``, a system prompt of their
own; a row without one is asked with the prompt style's (or the config's) system prompt.

Two styles (``prompt.style``) share all of the machinery:

- ``cot``: ``<think> reasoning </think> <answer> yes|no </answer>``; the assistant turn
  starts with ``<think>\n``.
- ``direct``: rbio1's non-CoT setting. The assistant turn is opened up to ``<answer>``, so
  the first generated token *is* the answer and a completion is ``yes</answer>`` -- a few
  tokens instead of a hundred, which is what lets a CPU see thousands of questions an hour.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The rbio1 system prompt. It spells the exact output layout out as an example: small
#: models (SmolLM2-135M) almost never produce the tags from a prose description alone,
#: and with no well-formed answer every reward in a group is equal and GRPO learns nothing.
RBIO_SYSTEM_PROMPT = (
    "You are a biology expert. Answer the user's question about a gene knockdown experiment. "
    "Think step by step about what the perturbed gene does and whether it regulates the target gene, "
    "then answer yes or no, using exactly this format:\n"
    "<think>\nyour reasoning\n</think>\n<answer>\nyes or no\n</answer>"
)


#: A CoT system prompt whose layout example names concrete answers, written inline as in the
#: direct style's. With answers forced (``rollout.force_answer``: ``</think>`` ``<answer>``
#: appended to a turn left open), SmolLM2-135M copies the rbio1 prompt's example line
#: ``yes or no`` after the forced ``<answer>``. benchmarks/cot_forced_parse.py (32 K562 train
#: questions x 2, 32 reasoning tokens, base model): 7/63 forced answers parse under the rbio1
#: prompt, 54/62 under this one (0.87, Wilson 95% [0.77, 0.93]); newline-separated examples
#: reached 0.41-0.53. The science ladder's cot rung and configs/ladder_cot.yaml use it.
COT_ANSWER_PROMPT = (
    "You are a biology expert. Answer the user's question about a gene knockdown experiment. "
    "Think step by step about what the perturbed gene does and whether it regulates the target gene, "
    "then answer yes or no, using exactly this format:\n"
    "<think>\nyour reasoning\n</think>\n<answer>yes</answer> or <answer>no</answer>"
)


#: The direct style's system prompt: the answer layout only, no reasoning asked for.
DIRECT_SYSTEM_PROMPT = (
    "You are a biology expert. Answer the user's question about a gene knockdown experiment "
    "with yes or no, using exactly this format:\n<answer>yes</answer> or <answer>no</answer>"
)

#: What each style sets where the config leaves ``rollout.assistant_prefix``,
#: ``rollout.max_new_tokens`` or ``rollout.system_prompt`` unset. Direct needs 4 tokens
#: for ``yes</answer>`` with SmolLM2's tokenizer; 6 leaves room for a space or newline.
STYLE_DEFAULTS: dict[str, dict[str, Any]] = {
    "direct": {"assistant_prefix": "<answer>", "max_new_tokens": 6, "system_prompt": DIRECT_SYSTEM_PROMPT},
    "cot": {"assistant_prefix": "<think>\n", "max_new_tokens": 128, "system_prompt": RBIO_SYSTEM_PROMPT},
}


def row_messages(row: dict[str, Any], system: str | None = None) -> list[dict[str, str]]:
    """Chat messages of a row. A row's own system prompt (another task's, e.g. the
    co-expression questions') is kept; a row with none (the knockdown questions carry an
    empty one) gets ``system``, the style's or the config's, else the rbio1 prompt. Question
    files written by older softverify versions carry the rbio1 prompt itself: it counts as
    none of their own. Rows with ``messages`` are used as they are."""
    if "messages" in row and row["messages"]:
        return list(row["messages"])
    if "question" not in row:
        raise ValueError(f"prompt row has no 'question' (or 'messages') field; its keys are {sorted(row)}")
    own = row.get("system")
    if own and own != RBIO_SYSTEM_PROMPT:
        sys_text = own
    else:
        sys_text = system or own or RBIO_SYSTEM_PROMPT
    return [{"role": "system", "content": sys_text}, {"role": "user", "content": str(row["question"])}]


def chat_text(tokenizer, messages: list[dict[str, str]], prefix: str = "") -> str:
    """One conversation as the policy reads it: the tokenizer's chat template with the assistant
    turn opened, then ``prefix``; a plain model without a template gets the contents one per
    line. The only place a chat template is applied, so the engines and the benchmarks' peers
    (TRL takes text prompts) cannot render a prompt differently."""
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    else:
        text = "\n".join(m["content"] for m in messages) + "\n"
    return text + prefix


def with_system(messages: list[dict[str, str]], system: str | None) -> list[dict[str, str]]:
    """A client's chat with ``system`` in front when it brings no system message of its own
    (its own wins: serving lets the client override what training used)."""
    if not system or any(m.get("role") == "system" for m in messages):
        return list(messages)
    return [{"role": "system", "content": system}, *messages]


#: Written into every saved model directory (final/, checkpoint hf/): how its policy was prompted.
PROMPT_FILE = "softverify_prompt.json"


@dataclass(frozen=True)
class TrainedPrompt:
    """How a trained policy saw its prompts, so serving can ask it the same way."""

    style: str
    system_prompt: str | None
    assistant_prefix: str
    stop: list[str]
    source: str = ""  # the file it was read from

    def to_json(self) -> str:
        return json.dumps({"style": self.style, "system_prompt": self.system_prompt,
                           "assistant_prefix": self.assistant_prefix, "stop": list(self.stop)}, indent=2)


def trained_prompt(style: str, rollout: Any) -> TrainedPrompt:
    """From a resolved config's ``prompt.style`` and ``rollout`` section."""
    return TrainedPrompt(style, rollout.system_prompt, rollout.assistant_prefix or "", list(rollout.stop))


def load_trained_prompt(model_dir: str | Path) -> TrainedPrompt | None:
    """The prompt a saved policy was trained with: ``model_dir/softverify_prompt.json``, or
    for runs saved before it existed, the run's ``config.yaml`` beside ``final/``. None for
    a model softverify did not train (a hub id, the embedded SmolLM2)."""
    d = Path(model_dir)
    meta = d / PROMPT_FILE
    if meta.is_file():
        try:
            raw = json.loads(meta.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            from softverify.configbase import ConfigError

            raise ConfigError(f"{str(meta)!r} is not the JSON softverify writes ({e}); delete it to serve the model "
                              f"with its run's config.yaml, or re-save the model") from None
        return TrainedPrompt(raw.get("style", "cot"), raw.get("system_prompt"), raw.get("assistant_prefix", ""),
                             list(raw.get("stop", [])), str(meta))
    cfg_file = d.parent / "config.yaml"
    if d.is_dir() and cfg_file.is_file():
        from softverify.configbase import read_yaml

        raw = read_yaml(cfg_file)  # a broken file is named, with YAML's line and column
        ro, style = raw.get("rollout") or {}, (raw.get("prompt") or {}).get("style", "cot")
        if "assistant_prefix" in ro or "system_prompt" in ro:
            defaults = STYLE_DEFAULTS.get(style, {})
            return TrainedPrompt(style, ro.get("system_prompt") or defaults.get("system_prompt"),
                                 ro.get("assistant_prefix") if ro.get("assistant_prefix") is not None
                                 else defaults.get("assistant_prefix", ""), list(ro.get("stop") or []), str(cfg_file))
    return None
