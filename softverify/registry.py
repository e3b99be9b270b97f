"""Verifier kinds by name, resolved without importing any verifier up front.

Three sources, in this order:
- classes registered in this process with :func:`register` (every verifier module's
  decorator; a user's own class the same way);
- the built-in kinds below, each named by the module that defines it and imported the
  first time the kind is used;
- the ``softverify.verifiers`` entry-point group, so an installed package adds kinds
  without softverify importing it (``[project.entry-points."softverify.verifiers"]``).

Because this module imports nothing from softverify, :mod:`softverify.config` can check
kind names when a config is loaded, and an environment (the donor game) adds its verifier
without ``verifiers/`` importing ``envs/``: no import cycle runs through the registry.
"""
from __future__ import annotations

import importlib
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import Callable

ENTRY_POINT_GROUP = "softverify.verifiers"

#: kind -> module whose import registers it
BUILTIN: dict[str, str] = {
    "hard": "softverify.verifiers.hard",
    "format": "softverify.verifiers.format",
    "length": "softverify.verifiers.format",
    "mention": "softverify.verifiers.mention",
    "world_model": "softverify.verifiers.soft",
    "coexpression": "softverify.verifiers.soft",
    "go_rouge": "softverify.verifiers.knowledge",
    "go_keywords": "softverify.verifiers.knowledge",
    "go_likelihood": "softverify.verifiers.likelihood",
    "python": "softverify.verifiers.pyfunc",  # a user's reward function by path (module:function, file.py:function)
    "remote": "softverify.verifiers.remote",  # another process's verifier over HTTP (softverify serve's /v1/verify)
    "donor_game": "softverify.envs.donor_game.verifier",
}

_CLASSES: dict[str, type] = {}


def register(kind: str) -> Callable[[type], type]:
    """Class decorator: make a verifier constructible by its ``kind`` from config."""

    def deco(cls: type) -> type:
        cls.kind = kind
        _CLASSES[kind] = cls
        return cls

    return deco


@lru_cache(maxsize=1)
def _plugins() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def kinds() -> list[str]:
    """Every kind a config may name (nothing is imported to list them)."""
    return sorted(set(_CLASSES) | set(BUILTIN) | set(_plugins()))


def verifier_class(kind: str) -> type:
    """The class of ``kind``, importing its module on first use; a ValueError names an
    unknown kind and the known ones."""
    if kind not in _CLASSES:
        if kind in BUILTIN:
            importlib.import_module(BUILTIN[kind])
        elif kind in _plugins():
            _CLASSES.setdefault(kind, _plugins()[kind].load())
    if kind not in _CLASSES:
        raise ValueError(f"unknown verifier kind {kind!r}; expected one of {kinds()}")
    return _CLASSES[kind]
