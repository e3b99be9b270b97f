"""The leaf every config in softverify builds on: strict models, one error format,
``--set`` overrides, YAML reading, ``--help-config`` text and the cache directory.

It imports nothing from softverify, so any package (bio, envs, platform, verifiers) may use
it without pulling in the training config, and no import cycle can run through it.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """A user mistake in a config file or override; the message says what and where."""


class StrictModel(BaseModel):
    """Config sections reject unknown keys (a typo is an error, not a silent default) and
    re-validate on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def format_validation_error(e: ValidationError, what: str = "config",
                            keys_hint: str = "`softverify train --help-config` lists the keys") -> str:
    """pydantic's report as one line per problem: the dotted path, what was wrong, the bad value."""
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown key (check the spelling; {keys_hint})"
        inp = err.get("input")
        shown = "" if isinstance(inp, (dict, list)) or err["type"] == "extra_forbidden" else f" (got {inp!r})"
        lines.append(f"  {loc}: {msg}{shown}")
    return f"invalid {what}:\n" + "\n".join(lines)


def parse_scalar(text: str) -> Any:
    """Parse an override value the way YAML would (``8`` -> int, ``[a, b]`` -> list).
    A mapping or list only when written in flow style (``{...}`` / ``[...]``): YAML reads
    ``Answer:`` as ``{'Answer': None}``, which is never what ``--set key=Answer:`` means."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, (dict, list)) and not text.strip().startswith(("{", "[")):
        return text
    return value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a nested dict (copy-on-write of touched parts).

    A part that is an integer indexes an existing list (``verifiers.1.params.threshold=0.05``:
    the second verifier's threshold), so one entry of a list can be changed without
    restating the list; an index past its end is an error naming the list's length."""
    out = dict(raw)
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} must look like section.key=value")
        key, value = ov.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {ov!r} has an empty key part")
        node = out
        for i, p in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not re.fullmatch(r"-?[0-9]+", p) or not -len(node) <= int(p) < len(node):
                    raise ConfigError(f"override {ov!r}: {'.'.join(parts[:i]) or 'the config'} is a list of "
                                      f"{len(node)}; {p!r} is not an index into it")
                p = int(p)
                child = node[p]
            else:
                child = node.get(p)
            if last:
                node[p] = parse_scalar(value)
                break
            child = dict(child) if isinstance(child, dict) else list(child) if isinstance(child, list) else {}
            node[p] = child
            node = child
    return out


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} not found")
    try:
        with open(p, encoding="utf-8") as f:  # a stream, so YAML's error marks name the file, not "<unicode string>"
            raw = yaml.safe_load(f) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
    except RecursionError:
        raise ConfigError(f"config file {str(p)!r} is nested too deeply to be a config") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top, got {type(raw).__name__}")
    return raw


def describe(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Lines ``key (default): description`` for every field, for ``--help-config``."""
    lines = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            lines.extend(describe(ann, f"{prefix}{name}."))
            continue
        default = f.get_default(call_default_factory=True)
        if isinstance(default, list) and default and isinstance(default[0], BaseModel):
            default = [d.model_dump(exclude_defaults=True) for d in default]
        lines.append(f"{prefix}{name} = {default!r}: {f.description or ''}")
    return lines


def cache_dir(cfg_value: str | None = None) -> Path:
    """The softverify cache: explicit value, else $SOFTVERIFY_CACHE, else ~/.cache/softverify."""
    d = Path(cfg_value or os.environ.get("SOFTVERIFY_CACHE") or Path.home() / ".cache" / "softverify")
    d.mkdir(parents=True, exist_ok=True)
    return d
