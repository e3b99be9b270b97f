"""Learner rank process settings: with ``learner.huge_page_alloc`` the rank's process starts
with torch's huge-page allocation switched on (a real Ray actor made with the options reads
its own environment), and without it nothing is added; with ``learner.retain_freed_memory``
(the default) a real rank actor re-uses the memory it frees without mapping pages afresh."""
from __future__ import annotations

import ray

from softverify.actors.learner_group import LearnerActor, rank_options
from softverify.config import build_config


@ray.remote
class _Env:
    def get(self, key: str):
        import os

        return os.environ.get(key)


def test_huge_page_alloc_reaches_the_rank_process_and_off_adds_nothing(ray_cluster):
    on = rank_options(build_config({}, ["learner.huge_page_alloc=true"]).learner)
    off = rank_options(build_config({}, []).learner)
    assert "runtime_env" not in off and off["num_cpus"] == on["num_cpus"]
    a = _Env.options(**on).remote()
    b = _Env.options(**off).remote()
    assert ray.get(a.get.remote("THP_MEM_ALLOC_ENABLE")) == "1"
    assert ray.get(b.get.remote("THP_MEM_ALLOC_ENABLE")) is None


def _realloc_faults(actor) -> int:
    """Minor page faults of three 64 MB allocate-touch-free rounds inside the actor's process."""
    def rounds(self):
        from softverify.infra.procmem import minor_faults

        bytearray(64 << 20)
        f = minor_faults()
        for _ in range(3):
            bytearray(64 << 20)
        return self.retains_memory, minor_faults() - f

    return ray.get(actor.__ray_call__.remote(rounds))


def test_rank_actor_retains_freed_memory_unless_switched_off(ray_cluster, realloc_fault_bounds):
    """The actor is only constructed (no model is loaded before ``start``)."""
    opts = {"num_cpus": 0}
    keep = LearnerActor.options(**opts).remote(build_config({}, []), "unused", 0, 1)
    drop = LearnerActor.options(**opts).remote(build_config({}, ["learner.retain_freed_memory=false"]), "unused", 0, 1)
    (kept, kept_faults), (dropped, dropped_faults) = _realloc_faults(keep), _realloc_faults(drop)
    assert kept and not dropped
    retained_max, fresh_min = realloc_fault_bounds
    assert kept_faults < retained_max and dropped_faults > fresh_min
    ray.kill(keep)
    ray.kill(drop)


def test_rank_actor_reserves_its_heap_at_construction(ray_cluster, realloc_fault_bounds):
    """``learner.reserve_memory_gb``: the actor maps the heap when it is made, so even its
    first allocations after that (no warm-up round here) take no page faults."""
    def first_rounds(self):
        from softverify.infra.procmem import minor_faults

        f = minor_faults()
        for _ in range(3):
            bytearray(64 << 20)
        return self.reserve_faults, minor_faults() - f

    cfg = build_config({}, ["learner.reserve_memory_gb=0.25"])
    actor = LearnerActor.options(num_cpus=0).remote(cfg, "unused", 0, 1)
    took, faults = ray.get(actor.__ray_call__.remote(first_rounds))
    retained_max, fresh_min = realloc_fault_bounds
    assert took > fresh_min and faults < retained_max
    ray.kill(actor)
