"""From a dataset row to chat messages, and the two prompt styles.

Rows carry ``question`` (the user turn) and optionally ``system``; when a row has no
system prompt, the rbio1 one is used so any question file trains in the same format.

Two styles (``prompt.style``) share all of the machinery:

- ``cot``: ``<think> reasoning </think> <answer> yes|no </answer>``; the assistant turn
  starts with ``<think>\n``.
- ``direct``: rbio1's non-CoT setting. The assistant turn is opened up to ``<answer>``, so
  the first generated token *is* the answer and a completion is ``yes</answer>`` -- a few
  tokens instead of a hundred, which is what lets a CPU see thousands of questions an hour.
"""
from __future__ import annotations

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
    """Chat messages of a row. ``system`` (a style's or the config's system prompt)
    replaces the built-in rbio1 prompt the question tables carry, but not a row's own
    custom one; rows with ``messages`` are used as they are."""
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
