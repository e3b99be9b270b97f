"""Verifiers: hard (labels), soft (world model, co-expression), knowledge (GO), format, mention.

Kinds are resolved by :mod:`softverify.registry`: a verifier's module is imported the first
time its kind is built, so importing this package loads no model and no environment.
"""
from softverify.verifiers.base import (
    Verifier, available_kinds, build_from_spec, build_verifier, register, verifier_class,
)

__all__ = ["Verifier", "available_kinds", "build_from_spec", "build_verifier", "register", "verifier_class"]
