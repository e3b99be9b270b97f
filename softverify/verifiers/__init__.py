"""Verifiers: hard (labels), soft (world model, co-expression), knowledge (GO), format, mention.

Importing this package registers every built-in verifier kind with
:func:`softverify.verifiers.base.build_verifier`.
"""
from softverify.verifiers.base import (
    Resources, Verifier, available_kinds, build_from_spec, build_verifier, register, verifier_class,
)
from softverify.verifiers import format as _format  # noqa: F401  (registers "format")
from softverify.verifiers import hard as _hard  # noqa: F401  (registers "hard")
from softverify.verifiers import mention as _mention  # noqa: F401  (registers "mention")
from softverify.verifiers import soft as _soft  # noqa: F401  (registers "world_model", "coexpression")
from softverify.verifiers import knowledge as _knowledge  # noqa: F401  (registers "go_rouge", "go_keywords")
from softverify.verifiers import likelihood as _likelihood  # noqa: F401  (registers "go_likelihood")
from softverify.envs.donor_game import verifier as _donor_game  # noqa: F401  (registers "donor_game")

__all__ = ["Resources", "Verifier", "available_kinds", "build_from_spec", "build_verifier", "register", "verifier_class"]
