"""Shared pieces of the reliability suite (the prompt file and tiny model come from tests/conftest.py).

Fault tests run real components (Ray, DeepSpeed on gloo, the HF engine with a 2-layer random
Llama) and inject real faults: SIGKILL of actor and driver processes, exceptions inside a
checkpoint write. They are marked ``slow`` (registered here) but run in the default suite.
"""
from __future__ import annotations


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: real-cluster fault injection (runs by default; -m 'not slow' skips)")
