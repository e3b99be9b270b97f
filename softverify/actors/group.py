"""ActorGroup: alike Ray actors in a fixed order, addressed as one.

The driver talks to each of its groups (a learner's DeepSpeed ranks, the rollout workers,
the verifier hosts) in the same few ways: every actor runs one method with the same
arguments (a collective step, a checkpoint, a weight load), or each runs it on its own part
of a batch. Results come back in the actors' order, so result ``r`` is actor ``r``'s (rank
``r``'s, for a learner), which is what lets a caller read rank 0's state or stack columns.
Written once here, each call site says only what differs. OpenRLHF's ``RayActorGroup``
(``openrlhf/trainer/ray/launcher.py``) is the model.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

import ray


class ActorGroup:
    """An ordered list of actor handles: ``group[r]`` is actor ``r``, a slice is a smaller
    group in the same order, and iteration yields the handles."""

    def __init__(self, actors: Iterable = ()):
        self.actors = list(actors)

    def __len__(self) -> int:
        return len(self.actors)

    def __iter__(self) -> Iterator:
        return iter(self.actors)

    def __getitem__(self, i):
        return ActorGroup(self.actors[i]) if isinstance(i, slice) else self.actors[i]

    def call(self, method: str, *args: Any, **kwargs: Any) -> list:
        """Start ``method(*args, **kwargs)`` on every actor at once; its result refs in actor
        order (a method with ``num_returns > 1`` gives one list of refs per actor)."""
        return [getattr(a, method).remote(*args, **kwargs) for a in self.actors]

    def call_split(self, method: str, *shards: Sequence, **kwargs: Any) -> list:
        """Start ``method`` on every actor, actor ``r`` with the ``r``-th item of each of
        ``shards`` as its positional arguments (its part of a batch) and ``kwargs`` as every
        actor's; result refs in actor order. A shard list whose length is not the group's is
        refused: an actor left without its part would stall a collective call."""
        for s in shards:
            if len(s) != len(self.actors):
                raise ValueError(f"{method}: {len(s)} shards for {len(self.actors)} actors")
        return [getattr(a, method).remote(*parts, **kwargs) for a, *parts in zip(self.actors, *shards)]

    def run(self, method: str, *args: Any, **kwargs: Any) -> list:
        """:meth:`call` and wait: the results in actor order (the first failure raises)."""
        return ray.get(self.call(method, *args, **kwargs))

    def kill(self) -> None:
        for a in self.actors:
            ray.kill(a)


def round_robin(items: Sequence, k: int) -> list[list]:
    """``items`` dealt to ``k`` actors in turn (actor ``w`` gets items ``w, w + k, ...``),
    leaving off the parts that get nothing: with fewer items than actors, the parts are
    those of the first ``len(items)`` actors."""
    items = list(items)
    return [part for part in (items[w::k] for w in range(k)) if part]
