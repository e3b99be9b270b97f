"""Plain data records that travel between actors.

They are dataclasses of Python/numpy values so that they pickle cheaply through the Ray
object store and can be built by hand in tests without Ray or a model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PolicyWeights:
    """The policy a rollout call must sample from, handed to every generate call.

    ``version``: the trainer step whose weights these are. ``ref``: an ObjectRef of their
    wire state dict (a field, not an argument, so Ray does not fetch the weights on every
    call, only when a worker needs them); None with ``learner.sync_method=collective``,
    where no object-store copy exists. ``partial``: only the trainable tensors (enough for a
    restarted worker too: the frozen rest never changed from the initial weights)."""

    version: int
    ref: Any = None
    partial: bool = False


@dataclass
class Sample:
    """One completion of one prompt, plus everything a verifier or the learner needs.

    ``metadata`` carries the dataset row's fields (for the rbio1 task: ``pert``, ``gene``,
    ``cell_line``, ``label`` -- already flipped for negated paraphrases -- ``template``,
    ``negated``, ``task``). Verifiers read only ``completion`` and ``metadata``.
    """

    prompt_id: str
    prompt: str  # the rendered prompt text (chat template applied)
    completion: str
    metadata: dict[str, Any] = field(default_factory=dict)
    group: int = 0  # the prompt's position in the step (set by the trainer); samples of one group share it
    prompt_token_ids: list[int] = field(default_factory=list)
    completion_token_ids: list[int] = field(default_factory=list)
    behaviour_logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "length"  # "stop" when EOS was produced, else "length"
    #: per completion token: 1 = inserted by the rollout (``rollout.force_answer``'s ``</think>``
    #: ``<answer>``), not sampled by the policy, so the learner masks it out. Empty = none forced.
    forced_mask: list[int] = field(default_factory=list)
    #: the completion as the policy wrote it before answer forcing (None: nothing forced); the
    #: format verifier judges this text, so inserted tags earn no format credit
    unforced_completion: str | None = None

    @property
    def n_forced(self) -> int:
        """Completion tokens the rollout inserted (0 when none)."""
        return int(sum(self.forced_mask))

    @property
    def n_sampled(self) -> int:
        """Completion tokens the policy sampled: what the learner's token-mean loss counts."""
        return len(self.completion_token_ids) - self.n_forced
