"""Learner rank placement options: with ``learner.huge_page_alloc`` the rank's process starts
with torch's huge-page allocation switched on (a real Ray actor made with the options reads
its own environment), and without it nothing is added."""
from __future__ import annotations

import ray

from softverify.actors.learner_group import rank_options
from softverify.config import build_config


@ray.remote
class _Env:
    def get(self, key: str):
        import os

        return os.environ.get(key)


def test_huge_page_alloc_reaches_the_rank_process_and_off_adds_nothing(ray_cluster):
    on = rank_options(build_config({}, []).learner)
    off = rank_options(build_config({}, ["learner.huge_page_alloc=false"]).learner)
    assert "runtime_env" not in off and off["num_cpus"] == on["num_cpus"]
    a = _Env.options(**on).remote()
    b = _Env.options(**off).remote()
    assert ray.get(a.get.remote("THP_MEM_ALLOC_ENABLE")) == "1"
    assert ray.get(b.get.remote("THP_MEM_ALLOC_ENABLE")) is None
