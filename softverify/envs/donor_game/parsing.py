"""Turn an agent's text into a legal :class:`Action`, or a counted, logged rejection.

Why strict: the paper's public code accepts the first number after "Answer:" and, when it
exceeds the donor's resources, silently records "an invalid action". Here an answer is
either a legal action or a rejection with a reason (``no_answer``, ``out_of_range``,
``negative``, ``punish_not_allowed``, ...) that the runner counts, logs and writes to JSONL,
then re-asks. A donation of 130% (``Answer: 13`` with 10 units, or ``Answer: 130%``) is
rejected, never clipped to 100%.

Accepted answers (case-insensitive, the *last* ``Answer:`` wins so an echoed template does
not count): ``Answer: 4``, ``Answer: 4.5 units``, ``Answer: 40%`` (of current resources),
and with costly punishment ``Answer: Donate, 4`` / ``Answer: Punish, 2``. The amount must start the
answer line: ``Answer: The round 3 partner`` is ``no_number``, not 3 units (as a reward, a
lenient first-number rule paid completions that never stated an amount).
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass

from softverify.envs.donor_game.game import Action

log = logging.getLogger(__name__)

_ANSWER = re.compile(r"answer\s*[:：]\s*(.*)", re.IGNORECASE)
# The answer line must *start* with the amount (after brackets/punctuation and, with
# punishment, "Donate,"/"Punish,"): "Answer: The round 3 ..." or "Answer: 1_0" is not an amount.
_VALUE = re.compile(
    r"^[^\w-]*(?:(?P<kind>donate|punish)\b[^\w-]*)?(?P<num>-?\d+(?:[.,]\d+)?)(?![\w])\s*(?P<pct>%|percent)?",
    re.IGNORECASE,
)
_STRATEGY = re.compile(r"my strategy will be", re.IGNORECASE)


@dataclass(frozen=True)
class Parsed:
    action: Action | None
    error: str | None = None  # rejection reason; None when action is legal
    detail: str = ""
    justification: str = ""

    @property
    def ok(self) -> bool:
        return self.action is not None


def parse_donation(text: str, donor_resources: float, punishment_allowed: bool) -> Parsed:
    """Parse one donation answer against the donor's current resources."""
    matches = list(_ANSWER.finditer(text or ""))
    if not matches:
        return Parsed(None, "no_answer", "no 'Answer:' in the response")
    last = matches[-1]
    justification = text[: last.start()].replace("Justification:", "").strip()
    tail = last.group(1).strip().splitlines()[0] if last.group(1).strip() else ""
    m = _VALUE.match(tail)
    if not m:
        return Parsed(None, "no_number", f"no amount at the start of the answer: {tail[:60]!r}", justification)
    kind = (m.group("kind") or "donate").lower()
    if kind == "punish" and not punishment_allowed:
        return Parsed(None, "punish_not_allowed", "punishment is not an option in this game", justification)
    value = float(m.group("num").replace(",", "."))
    if value < 0:
        return Parsed(None, "negative", f"negative amount {value:g}", justification)
    if m.group("pct"):
        if value > 100:
            return Parsed(None, "out_of_range", f"{value:g}% of resources is more than 100%", justification)
        amount = donor_resources * value / 100.0
    else:
        amount = value
        if amount > donor_resources + 1e-9:
            pct = 100 * amount / donor_resources if donor_resources > 0 else float("inf")
            return Parsed(
                None, "out_of_range", f"{amount:g} units ({pct:.0f}%) but the donor holds {donor_resources:g}", justification
            )
    return Parsed(Action(kind, min(amount, donor_resources)), None, "", justification)


def parse_strategy(text: str) -> tuple[str, bool]:
    """``(strategy, found)``: the sentence from "My strategy will be" on, else the whole text."""
    m = None
    for m in _STRATEGY.finditer(text or ""):
        pass
    if m is None:
        return (text or "").strip(), False
    return ("My strategy will be" + text[m.end() :]).strip(), True


class RejectionLog:
    """What went wrong, counted apart so the numbers add up (``summary.json``'s
    ``rejections``; each generation record carries the running totals):

    * ``decisions``: donor decisions made. ``total = accepted + given_up``; ``accepted``
      decisions got a legal answer within ``agent.max_retries`` re-asks, ``given_up`` ones
      did not (the donor gave 0 and the decision is logged ``valid: false``).
    * ``donation_answers``: every answer asked for, re-asks included. ``attempts =
      accepted + rejected``, ``rejected = sum(by_reason)``; each decision has at most one
      accepted answer, so ``donation_answers.accepted = decisions.accepted``.
    * ``strategies``: strategies written, ``written = with_sentence + without_sentence``
      (those lacking "My strategy will be" keep their whole text). Not answers: never
      counted as rejections.

    Each rejected answer is also logged (who, what, why)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()  # rejected donation answers by reason
        self.attempts = 0
        self.accepted = 0
        self.decisions = 0
        self.gave_up = 0
        self.strategies = 0
        self.strategies_without_sentence = 0

    def record(self, parsed: Parsed, who: str, text: str) -> None:
        """One donation answer, accepted or rejected."""
        self.attempts += 1
        if parsed.ok:
            self.accepted += 1
            return
        self.counts[parsed.error or "unknown"] += 1
        log.warning("rejected answer from %s (%s: %s): %r", who, parsed.error, parsed.detail, (text or "")[-160:])

    def record_decision(self, valid: bool) -> None:
        """One decision, after its answers: ``valid`` = one was accepted, else given up."""
        self.decisions += 1
        self.gave_up += not valid

    def record_strategy(self, found_sentence: bool) -> None:
        self.strategies += 1
        self.strategies_without_sentence += not found_sentence

    @property
    def rejected(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> dict:
        """The counts (see the class docstring for how they add up)."""
        return {"decisions": {"total": self.decisions, "accepted": self.decisions - self.gave_up,
                              "given_up": self.gave_up},
                "donation_answers": {"attempts": self.attempts, "accepted": self.accepted, "rejected": self.rejected,
                                     "by_reason": dict(self.counts)},
                "strategies": {"written": self.strategies,
                               "with_sentence": self.strategies - self.strategies_without_sentence,
                               "without_sentence": self.strategies_without_sentence}}


def summary_mismatches(summary: dict) -> list[str]:
    """The identities of :meth:`RejectionLog.summary` that do not hold (empty = the counts
    add up); a test and a reader of an old ``summary.json`` can check them."""
    d, a, s = summary["decisions"], summary["donation_answers"], summary["strategies"]
    checks = {
        "decisions.total = accepted + given_up": d["total"] == d["accepted"] + d["given_up"],
        "donation_answers.attempts = accepted + rejected": a["attempts"] == a["accepted"] + a["rejected"],
        "donation_answers.rejected = sum(by_reason)": a["rejected"] == sum(a["by_reason"].values()),
        "donation_answers.accepted = decisions.accepted": a["accepted"] == d["accepted"],
        "strategies.written = with_sentence + without_sentence":
            s["written"] == s["with_sentence"] + s["without_sentence"],
    }
    return [k for k, ok in checks.items() if not ok]
