"""ActorGroup on a real local Ray: the same call to every actor, one shard per actor, results
in actor order, slices, and the round-robin split the trainer deals rows with."""
from __future__ import annotations

import pytest
import ray

from softverify.actors.group import ActorGroup, round_robin


@ray.remote(num_cpus=0)
class Echo:
    def __init__(self, rank: int):
        self.rank = rank

    def whoami(self, tag: str = "") -> tuple[int, str]:
        return self.rank, tag

    def scale(self, xs: list[int], factor: int = 1, offset: int = 0) -> list[int]:
        return [self.rank * 100 + x * factor + offset for x in xs]

    @ray.method(num_returns=2)
    def pair(self) -> tuple[int, int]:
        return self.rank, -self.rank


def test_calls_reach_every_actor_and_results_come_back_in_actor_order(ray_cluster):
    group = ActorGroup(Echo.remote(r) for r in range(3))
    assert len(group) == 3 and list(group) == group.actors
    refs = group.call("whoami", "t")
    assert len(refs) == 3 and ray.get(refs) == [(0, "t"), (1, "t"), (2, "t")]
    assert group.run("whoami", tag="k") == [(0, "k"), (1, "k"), (2, "k")]
    # one shard per actor, several per-actor arguments, keywords shared by all
    refs = group.call_split("scale", [[1], [2, 3], []], [2, 3, 4], offset=5)
    assert ray.get(refs) == [[7], [111, 114], []]
    # a method with two returns: one pair of refs per actor, rank 0's first
    pairs = group.call("pair")
    assert [ray.get(list(p)) for p in pairs] == [[0, 0], [1, -1], [2, -2]]
    # a slice is a group of the first actors, in order; an index is the handle itself
    assert isinstance(group[:2], ActorGroup) and group[:2].run("whoami") == [(0, ""), (1, "")]
    assert ray.get(group[2].whoami.remote()) == (2, "")
    with pytest.raises(ValueError, match="2 shards for 3 actors"):
        group.call_split("scale", [[1], [2]])
    group.kill()
    with pytest.raises(ray.exceptions.RayActorError):
        group.run("whoami")


def test_an_empty_group_calls_nothing():
    group = ActorGroup()
    assert len(group) == 0 and group.call("anything") == [] and group.call_split("anything", []) == []
    group.kill()


def test_round_robin_deals_items_in_turn_and_drops_empty_parts():
    assert round_robin(range(5), 2) == [[0, 2, 4], [1, 3]]
    assert round_robin(["a", "b"], 3) == [["a"], ["b"]]  # fewer items than actors: the first actors only
    assert round_robin([], 2) == []
    # what the trainer relied on: the parts are each actor's strided slice, empty ones left off
    rows = list(range(7))
    k = 3
    assert round_robin(rows, k) == [rows[w::k] for w in range(k) if rows[w::k]]
