"""``softverify train --help-config [SECTION]``: the training config's reference, by section.

Why a module of its own: the text joins two sources that live in different layers -- the
config's fields and their descriptions (:mod:`softverify.config`) and the verifier kinds
with their parameters (:mod:`softverify.verifiers`, each kind's class read for its
docstring and constructor) -- and only the CLI side may import both.
"""
from __future__ import annotations


def train_config_help(section: str | None = None, width: int | None = None) -> str:
    """Every TrainConfig key with its default and meaning, grouped by section and wrapped
    (:func:`softverify.configbase.format_config_help`); the ``verifiers`` section ends with
    the verifier kinds a spec may name and their ``params``. ``section`` keeps one section
    (``rollout``) or a dotted prefix (``learner.lora``); ``None``/``"all"`` keeps all."""
    from softverify.config import TrainConfig
    from softverify.configbase import format_config_help, help_width

    width = width or help_width()
    extra = {}
    if section in (None, "all", "verifiers"):  # the kinds import every verifier module: only when shown
        from softverify.verifiers.base import kinds_help

        extra["verifiers"] = ["", "  verifier kinds (verifiers[i].kind) and their parameters (verifiers[i].params):",
                              *kinds_help(width, indent="  ")]
    return format_config_help(TrainConfig, section, "softverify train", extra, width)
