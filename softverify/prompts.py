"""From a dataset row to chat messages.

Rows carry ``question`` (the user turn) and optionally ``system``; when a row has no
system prompt, the rbio1 one is used so any question file trains in the same format.
"""
from __future__ import annotations

from typing import Any

RBIO_SYSTEM_PROMPT = (
    "You are a helpful biology assistant. First think about the reasoning process in your mind, "
    "then give the answer. The reasoning is enclosed within <think> </think> tags and the answer "
    "within <answer> </answer> tags, i.e. <think> reasoning here </think> <answer> yes or no </answer>. "
    "The answer is either yes or no."
)


def row_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    if "messages" in row and row["messages"]:
        return list(row["messages"])
    if "question" not in row:
        raise ValueError(f"prompt row has no 'question' (or 'messages') field; its keys are {sorted(row)}")
    system = row.get("system") or RBIO_SYSTEM_PROMPT
    return [{"role": "system", "content": system}, {"role": "user", "content": str(row["question"])}]
