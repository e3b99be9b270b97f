"""Verifiers: hard (labels), soft (world models), knowledge (GO), format.

Importing this package registers every built-in verifier kind with
:func:`softverify.verifiers.base.build_verifier`.
"""
from softverify.verifiers.base import Resources, Verifier, available_kinds, build_verifier, register
from softverify.verifiers import format as _format  # noqa: F401  (registers "format")
from softverify.verifiers import hard as _hard  # noqa: F401  (registers "hard")
from softverify.envs.donor_game import verifier as _donor_game  # noqa: F401  (registers "donor_game")

__all__ = ["Resources", "Verifier", "available_kinds", "build_verifier", "register"]
