"""The leaf every config in softverify builds on: strict models, one error format,
``--set`` overrides, YAML reading, ``--help-config`` text and the cache directory.

It imports nothing from softverify, so any package (bio, envs, platform, verifiers) may use
it without pulling in the training config, and no import cycle can run through it.
"""
from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic_core import PydanticUndefined


class ConfigError(ValueError):
    """A user mistake in a config file or override; the message says what and where."""


class StrictModel(BaseModel):
    """Config sections reject unknown keys (a typo is an error, not a silent default) and
    re-validate on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    #: keys this model once had -> where each lives now, relative to the model
    #: (``{"num_cpus_per_worker": "placement.num_cpus"}``): a config that still uses one fails
    #: naming both (:func:`format_validation_error`), not with a bare "unknown key"
    moved_keys: ClassVar[dict[str, str]] = {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        _MODELS.setdefault(cls.__name__, []).append(cls)


#: Every StrictModel class by name, so an error report (which names only its root model,
#: ``ValidationError.title``) can find the fields an unknown key was meant to be.
_MODELS: dict[str, list[type[BaseModel]]] = {}


def _owner_at(title: str, loc: tuple) -> type[BaseModel] | None:
    """The model holding the key at ``loc`` under root model ``title``."""
    for root in _MODELS.get(title, []):
        owner = field_annotation(root, [str(p) for p in loc[:-1]]) if len(loc) > 1 else root
        for m in union_members(owner) if owner is not None else []:
            if isinstance(m, type) and issubclass(m, BaseModel):
                return m
    return None


def _fields_at(title: str, loc: tuple) -> list[str]:
    """The field names of the model holding the key at ``loc`` under root model ``title``."""
    owner = _owner_at(title, loc)
    return list(owner.model_fields) if owner is not None else []


def moved_key(model: Any, key: str, prefix: str = "") -> str | None:
    """Where ``key``, no longer a field of ``model``, lives now (``prefix`` + its new
    relative path, ``prefix`` ending in a dot), from the model's ``moved_keys``; None when
    it never moved."""
    new = getattr(model, "moved_keys", {}).get(key)
    return f"{prefix}{new}" if new else None


def suggest_key(key: str, valid: list[str]) -> str:
    """``did you mean 'group_size'?`` for the valid keys closest to a misspelled one; ''
    when none is close (difflib's ratio >= 0.6)."""
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    return "did you mean " + " or ".join(repr(c) for c in close) + "?" if close else ""


def format_validation_error(e: ValidationError, what: str = "config",
                            keys_hint: str = "`softverify train --help-config` lists the keys") -> str:
    """pydantic's report as one line per problem: the dotted path, what was wrong, the bad value."""
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden" and err["loc"]:
            prefix = "".join(f"{p}." for p in err["loc"][:-1])
            new = moved_key(_owner_at(e.title, err["loc"]), str(err["loc"][-1]), prefix)
            if new:
                lines.append(f"  {loc} moved to {new}")
                continue
        if err["type"] == "extra_forbidden":
            hint = suggest_key(str(err["loc"][-1]), _fields_at(e.title, err["loc"])) if err["loc"] else ""
            msg = f"unknown key; {hint} ({keys_hint})" if hint else f"unknown key (check the spelling; {keys_hint})"
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


def parse_typed(text: str, annotation: Any = None) -> Any:
    """An override value for a field of type ``annotation`` (None: unknown, plain YAML).

    YAML alone turns ``yes`` into True and ``123`` into an int, so ``--set
    rollout.system_prompt=yes`` failed with "Input should be a valid string". The field's
    type decides instead: the YAML reading when the type takes it (``8`` for an int,
    ``[a, b]`` for a list, ``null`` for an optional field), else the text as written when the
    type takes that (any string field), else the YAML reading, so validation names the
    value the user meant."""
    value = parse_scalar(text)
    if annotation is None:
        return value
    adapter = _adapter(annotation)
    for candidate in (value, text):
        try:
            adapter.validate_python(candidate)
            return candidate
        except ValidationError:
            continue
    return value


def _adapter(annotation: Any) -> TypeAdapter:
    try:
        return _ADAPTERS[annotation]
    except (KeyError, TypeError):  # TypeError: an unhashable annotation
        adapter = TypeAdapter(annotation)
        try:
            _ADAPTERS[annotation] = adapter
        except TypeError:
            pass
        return adapter


_ADAPTERS: dict[Any, TypeAdapter] = {}


def union_members(annotation: Any) -> list[Any]:
    """The alternatives of ``X | Y | None`` (Annotated and None stripped); ``[X]`` otherwise."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return union_members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) if a is not type(None) for m in union_members(a)]
    return [annotation]


def field_annotation(model: Any, parts: list[str]) -> Any:
    """The declared type at dotted path ``parts`` inside ``model`` (a pydantic model class),
    through sections, list indices and dict keys; None where the path leaves the typed
    part (``verifiers.1.params.threshold``: params is ``dict[str, Any]``) or names no field
    (validation reports the unknown key)."""
    ann = model
    for p in parts:
        nxt = None
        for m in union_members(ann):
            origin, args = typing.get_origin(m), typing.get_args(m)
            if isinstance(m, type) and issubclass(m, BaseModel):
                if p in m.model_fields:
                    nxt = m.model_fields[p].annotation
            elif origin in (list, tuple) and args and re.fullmatch(r"-?[0-9]+", p):
                nxt = args[0]
            elif origin is dict and len(args) == 2:
                nxt = args[1]
            if nxt is not None:
                break
        if nxt is None or nxt is Any:
            return None
        ann = nxt
    return ann


def _default_list(model: Any, parts: list[str]) -> list | None:
    """The default of the list field at ``parts`` (as plain data), so ``--set
    verifiers.1.weight=0.5`` can index the default verifier list when the config sets none."""
    if model is None or not parts:
        return None
    owner = field_annotation(model, parts[:-1]) if len(parts) > 1 else model
    for m in union_members(owner) if owner is not None else []:
        if isinstance(m, type) and issubclass(m, BaseModel) and parts[-1] in m.model_fields:
            default = m.model_fields[parts[-1]].get_default(call_default_factory=True)
            if isinstance(default, list):
                return [d.model_dump(exclude_defaults=True) if isinstance(d, BaseModel) else d for d in default]
    return None


def apply_overrides(raw: dict[str, Any], overrides: list[str], model: Any = None) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a nested dict (copy-on-write of touched parts).

    A part that is an integer indexes an existing list (``verifiers.1.params.threshold=0.05``:
    the second verifier's threshold), so one entry of a list can be changed without
    restating the list; an index past its end is an error naming the list's length.
    With ``model`` (the pydantic class the dict will become) each value is read for its
    field's type (:func:`parse_typed`: ``--set rollout.system_prompt=yes`` stays a string),
    and a list the dict does not set yet is indexed from its default."""
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
                node[p] = parse_typed(value, field_annotation(model, parts) if model is not None else None)
                break
            if child is None and re.fullmatch(r"-?[0-9]+", parts[i + 1]):
                child = _default_list(model, parts[: i + 1])
            child = dict(child) if isinstance(child, dict) else list(child) if isinstance(child, list) else {}
            node[p] = child
            node = child
    return out


def yaml_error_text(e: yaml.YAMLError) -> str:
    """YAML's error as one line: where (line, column, 1-based) and what, with the construct it
    was inside, e.g. ``line 3, column 2: expected <block end>, but found '<block mapping
    start>' (while parsing a block mapping that starts at line 1)``."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if mark is None or not problem:
        return " ".join(str(e).split())
    text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context:
        text += f" ({context}" + (f" that starts at line {cmark.line + 1}" if cmark is not None and
                                  cmark.line != mark.line else "") + ")"
    return text


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} not found")
    try:
        with open(p, encoding="utf-8") as f:  # a stream, so YAML's error marks name the file, not "<unicode string>"
            raw = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {yaml_error_text(e)}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: not UTF-8 text (byte {e.start}: "
                          f"{e.reason})") from None
    except RecursionError:
        raise ConfigError(f"config file {str(p)!r} is nested too deeply to be a config") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top, got {type(raw).__name__}")
    return raw


def _default(f: Any, name: str, owner_default: BaseModel | None) -> Any:
    """A field's default as its section's default instance has it: a section used by
    several roles (``Placement``) carries each role's own defaults, not the class's."""
    if owner_default is not None:
        return getattr(owner_default, name)
    return f.get_default(call_default_factory=True)


def describe(model: type[BaseModel], prefix: str = "", _defaults: BaseModel | None = None) -> list[str]:
    """Lines ``key (default): description`` for every field, for ``--help-config``."""
    lines = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        default = _default(f, name, _defaults)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            lines.extend(describe(ann, f"{prefix}{name}.", default if isinstance(default, BaseModel) else None))
            continue
        if isinstance(default, list) and default and isinstance(default[0], BaseModel):
            default = [d.model_dump(exclude_defaults=True) for d in default]
        lines.append(f"{prefix}{name} = {default!r}: {f.description or ''}")
    return lines


def _default_text(default: Any) -> str:
    if isinstance(default, list) and default and isinstance(default[0], BaseModel):
        default = [d.model_dump(exclude_defaults=True) for d in default]
    return "(required)" if default is PydanticUndefined else repr(default)


def config_sections(model: type[BaseModel]) -> dict[str, list[tuple[str, str, str]]]:
    """``{section: [(dotted key, default, description), ...]}`` for ``--help-config``.

    A section is a top-level field holding a model (``rollout``, ``learner`` with its
    nested ``learner.lora.*``); a list of models (``verifiers``) is a section of its item's
    fields, written ``verifiers[i].kind``; the other top-level fields form ``general``."""
    out: dict[str, list[tuple[str, str, str]]] = {}

    def walk(m: type[BaseModel], prefix: str, section: str, defaults: BaseModel | None = None) -> None:
        for name, f in m.model_fields.items():
            ann = f.annotation
            default = _default(f, name, defaults)
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                if prefix and f.description:  # a nested section's own text (each role's placement says its own)
                    out.setdefault(section, []).append((f"{prefix}{name}", "(section)", f.description))
                walk(ann, f"{prefix}{name}.", section or name, default if isinstance(default, BaseModel) else None)
                continue
            item = typing.get_args(ann)[0] if typing.get_origin(ann) is list and typing.get_args(ann) else None
            if not prefix and isinstance(item, type) and issubclass(item, BaseModel):
                out.setdefault(name, []).append((name, _default_text(default), f.description or ""))
                walk(item, f"{name}[i].", name)
                continue
            out.setdefault(section or "general", []).append((f"{prefix}{name}", _default_text(default),
                                                             f.description or ""))

    walk(model, "", "")
    return out


def help_width() -> int:
    """Columns ``--help-config`` wraps at: the terminal's, at most 100 (longer lines read
    badly); 100 when the output is not a terminal (``$COLUMNS`` still wins)."""
    return max(40, min(100, shutil.get_terminal_size((100, 24)).columns))


def format_config_help(model: type[BaseModel], section: str | None = None, command: str = "softverify train",
                       extra: dict[str, list[str]] | None = None, width: int | None = None) -> str:
    """``--help-config [SECTION]``: each section's keys with their defaults, descriptions
    wrapped to ``width`` (default :func:`help_width`) under the key. ``section`` keeps one
    section (``rollout``) or the keys under a dotted prefix (``learner.lora``); ``extra``
    adds lines at the end of a section (``verifiers``: the kinds and their parameters).
    A section that does not exist is a :class:`ConfigError` naming the valid ones."""
    width = width or help_width()
    sections = config_sections(model)
    extra = extra or {}
    keep = list(sections)
    if section and section != "all":
        if section in sections:
            keep = [section]
        elif "." in section and any(k.startswith(section + ".") for rows in sections.values() for k, _, _ in rows):
            top = section.split(".")[0]
            sections = {top: [r for r in sections[top] if r[0].startswith(section + ".")]}
            keep, extra = [top], {}
        else:
            hint = suggest_key(section, list(sections))
            nested = next((k.rsplit(".", 1)[0] for rows in sections.values() for k, _, _ in rows
                           if k.count(".") >= 2 and "[" not in k), None)
            raise ConfigError(f"no config section {section!r}{f' ({hint})' if hint else ''}: expected one of "
                              f"{', '.join(sections)}{f' (or a dotted prefix such as {nested})' if nested else ''}, "
                              f"or no section for all")
    wrap = textwrap.TextWrapper(width=width, initial_indent="      ", subsequent_indent="      ",
                                break_on_hyphens=False)
    head = textwrap.TextWrapper(width=width, initial_indent="  ", subsequent_indent="      ",
                                break_long_words=True, break_on_hyphens=False)
    lines: list[str] = []
    if len(keep) > 1:
        lines += [f"Config keys by section (one section: {command} --help-config SECTION; sections: "
                  f"{', '.join(keep)}). Set them in a YAML file (--config) or with --set KEY=VALUE.", ""]
        lines = textwrap.wrap(lines[0], width) + [""]
    for name in keep:
        lines.append(f"[{name}]")
        for key, default, desc in sections[name]:
            lines += head.wrap(f"{key} = {default}")
            if desc:
                lines += wrap.wrap(desc)
        lines += extra.get(name, [])
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


#: torch intra-op threads for every command that computes on this machine (eval, verify,
#: verifiers report, worldmodel fit/eval, embed genes), the same as each training rollout
#: worker and learner rank (rollout.torch_threads, learner.torch_threads). One, not torch's
#: all-cores default: on a small machine shared with a run, a server or another command,
#: all-core OpenMP pools oversubscribe it (2 threads ran 13x slower than 1 in the donor game on
#: a shared 2-core box). ``--threads N`` raises it on an otherwise idle machine.
DEFAULT_TORCH_THREADS = 1


def _threads(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--threads must be a whole number >= 1, got {text!r}")
    return n


def add_threads_argument(parser: argparse.ArgumentParser, default: int | None = DEFAULT_TORCH_THREADS,
                         default_text: str | None = None, what: str = "torch intra-op threads") -> None:
    """``--threads N``, documented the same everywhere; ``default_text`` names a default that
    is not a number (eval: rollout.torch_threads)."""
    shown = default_text or "%(default)s"
    parser.add_argument("--threads", type=_threads, default=default, metavar="N",
                        help=f"{what} (default {shown}: one thread, as every command and each "
                             f"training worker and rank use, so commands beside a run do not oversubscribe the "
                             f"cores; raise it on an otherwise idle machine)")


def cache_dir(cfg_value: str | None = None) -> Path:
    """The softverify cache: explicit value, else $SOFTVERIFY_CACHE, else ~/.cache/softverify."""
    d = Path(cfg_value or os.environ.get("SOFTVERIFY_CACHE") or Path.home() / ".cache" / "softverify")
    d.mkdir(parents=True, exist_ok=True)
    return d
