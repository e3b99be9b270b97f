"""From a dataset row to chat messages.

Rows carry ``question`` (the user turn) and optionally ``system``; when a row has no
system prompt, the rbio1 one is used so any question file trains in the same format.
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


def row_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    if "messages" in row and row["messages"]:
        return list(row["messages"])
    if "question" not in row:
        raise ValueError(f"prompt row has no 'question' (or 'messages') field; its keys are {sorted(row)}")
    system = row.get("system") or RBIO_SYSTEM_PROMPT
    return [{"role": "system", "content": system}, {"role": "user", "content": str(row["question"])}]
