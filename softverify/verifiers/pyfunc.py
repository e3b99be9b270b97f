"""A user's own reward function, named by path in the config (``kind: python``).

What TRL's ``reward_funcs`` and verl's ``custom_reward_function.path`` offer: a reward that
is a few lines of Python needs no package, no entry point and no class. The config names the
function as ``module:function`` (importable, the current directory included, as uvicorn's
``app:app``) or ``path/to/file.py:function``; the verifier calls it by keyword on each sample
(or once per batch with ``batched: true``) and passes any other params through.

Everything that can be known before training is checked when the verifier is built, which the
trainer does in the driver before Ray starts (:func:`softverify.verifiers.suite.check_specs`):
a module that does not import, a file that does not exist, a missing or non-callable attribute,
and a signature that asks for an argument this verifier never passes (or does not take one of
the extra params). Each is one ``ValueError`` naming the ``function`` value.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
import numbers
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from softverify.types import Sample
from softverify.task.answer import parse_answer
from softverify.verifiers.base import Verifier, register

#: keyword arguments a per-sample function may declare (any subset, or ``**kwargs``)
SAMPLE_ARGS = ("completion", "answer", "prompt", "row")
#: keyword arguments a batched function may declare: the same, one list each
BATCH_ARGS = ("completions", "answers", "prompts", "rows")

_FORM = "'module:function' or 'path/to/file.py:function'"


def load_function(ref: str) -> Callable:
    """The callable ``ref`` names; ``ValueError`` naming ``ref`` when it cannot be had."""
    if not isinstance(ref, str) or ref.count(":") < 1:
        raise ValueError(f"python verifier function={ref!r} is not {_FORM}")
    target, _, attr = ref.rpartition(":")
    if not target or not attr:
        raise ValueError(f"python verifier function={ref!r} is not {_FORM}")
    module = _load_file(ref, target) if target.endswith(".py") or os.sep in target or "/" in target \
        else _import_module(ref, target)
    obj: Any = module
    for part in attr.split("."):  # "mod:Class.method" reaches a nested attribute
        if not hasattr(obj, part):
            public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
            raise ValueError(f"python verifier function={ref!r}: {target!r} has no attribute {part!r}; "
                             f"its callables are {public or 'none'}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"python verifier function={ref!r}: {attr!r} is not callable (type {type(obj).__name__})")
    return obj


def _import_module(ref: str, name: str):
    """Import ``name``; the current directory is searched too (a console script's
    ``sys.path[0]`` is its bin directory, not where the user stands)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        raise ValueError(f"python verifier function={ref!r}: cannot import module {name!r} ({e}); give an "
                         "importable module or a file path ending in .py") from None
    except Exception as e:  # noqa: BLE001  (a user's module failing at import: say where)
        raise ValueError(f"python verifier function={ref!r}: importing {name!r} raised "
                         f"{type(e).__name__}: {_first_line(e)}") from None


def _load_file(ref: str, path: str):
    """Execute the file at ``path`` (relative to the current directory) as a module of its own.

    The module's name is derived from the absolute path, so two files called ``reward.py``
    do not replace each other in ``sys.modules`` and loading the same file twice reuses it."""
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise ValueError(f"python verifier function={ref!r}: file {str(p)!r} not found")
    name = f"softverify_reward_{p.stem}_{hashlib.sha1(str(p).encode()).hexdigest()[:10]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, p)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001  (a SyntaxError or a failing import in the user's file)
        del sys.modules[name]
        where = f" (line {e.lineno})" if isinstance(e, SyntaxError) and e.lineno else ""
        raise ValueError(f"python verifier function={ref!r}: loading {str(p)!r} raised "
                         f"{type(e).__name__}{where}: {_first_line(e)}") from None
    return module


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _check_signature(ref: str, fn: Callable, offered: Sequence[str], extra: dict[str, Any]) -> list[str]:
    """The keyword names to pass ``fn``: those of ``offered`` it declares (all of them when
    it takes ``**kwargs``) and every extra param. ``ValueError`` when it requires an argument
    nobody passes, has positional-only parameters without defaults, or does not take an extra."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as e:
        raise ValueError(f"python verifier function={ref!r}: its signature cannot be read ({e})") from None
    params = sig.parameters.values()
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    named = {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    clash = sorted(set(extra) & set(offered))
    if clash:
        raise ValueError(f"python verifier function={ref!r}: params {clash} collide with the arguments it is "
                         f"given ({', '.join(offered)}); rename them")
    posonly = [p.name for p in params if p.kind is p.POSITIONAL_ONLY and p.default is p.empty]
    required = [n for n, p in named.items() if p.default is p.empty and n not in offered and n not in extra]
    unknown = [] if var_kw else sorted(k for k in extra if k not in named)
    if posonly or required or unknown:
        why = []
        if posonly or required:
            why.append(f"it requires {posonly + required}, which are never passed")
        if unknown:
            why.append(f"it takes no parameter(s) {unknown} given in params")
        raise ValueError(f"python verifier function={ref!r}: wrong signature {fn.__name__}{sig}: {'; '.join(why)}. "
                         f"It is called with keywords, any of: {', '.join(offered)}, the extra params, or **kwargs")
    return [n for n in offered if var_kw or n in named] + list(extra)


@register("python")
class PythonFunctionVerifier(Verifier):
    """A reward function of your own, by path (``function: 'module:fn'`` or ``'path/file.py:fn'``),
    called by keyword with those of ``completion``, ``answer``, ``prompt``, ``row`` it declares and
    the other params (``batched: true``: once per batch, with lists); it returns a float in [0, 1],
    or None/NaN to abstain.

    Per sample it is called with any of the keywords ``completion`` (the text), ``answer``
    (``'yes'``/``'no'``/None, the parsed ``<answer>``), ``prompt`` (the rendered prompt) and
    ``row`` (the prompt row's fields, e.g. ``pert``, ``gene``, ``label``, ``question``) that it
    declares, plus every other param; it returns a float in [0, 1], or NaN / None to abstain.
    With ``batched: true`` it is called once per batch with ``completions``, ``answers``,
    ``prompts``, ``rows`` (lists) and returns one value per sample.
    """

    def __init__(self, name: str | None = None, function: str | None = None, batched: bool = False, **kwargs: Any):
        super().__init__(name)
        if function is None:
            raise ValueError(f"python verifier needs params.function: {_FORM}")
        if not isinstance(batched, bool):
            raise ValueError(f"python verifier batched={batched!r} is not true/false")
        self.function = function
        self.batched = batched
        self.kwargs = dict(kwargs)
        self.fn = load_function(function)
        self.names = _check_signature(function, self.fn, BATCH_ARGS if batched else SAMPLE_ARGS, self.kwargs)

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        samples = list(samples)
        if self.batched:
            values = {"completions": [s.completion for s in samples],
                      "answers": [parse_answer(s.completion) for s in samples],
                      "prompts": [s.prompt for s in samples],
                      "rows": [dict(s.metadata) for s in samples]}
            got = self._call({k: values[k] for k in self.names if k in values})
            try:
                got = list(got)
            except TypeError:
                raise ValueError(f"reward function {self.function!r} (batched) returned {type(got).__name__}, "
                                 f"expected a sequence of {len(samples)} floats") from None
            if len(got) != len(samples):
                raise ValueError(f"reward function {self.function!r} (batched) returned {len(got)} values for "
                                 f"{len(samples)} samples")
            return np.array([self._value(v, s) for v, s in zip(got, samples)], dtype=np.float64)
        out = np.empty(len(samples), dtype=np.float64)
        for i, s in enumerate(samples):
            values = {"completion": s.completion, "answer": parse_answer(s.completion), "prompt": s.prompt,
                      "row": dict(s.metadata)}
            out[i] = self._value(self._call({k: values[k] for k in self.names if k in values}), s)
        return out

    def _call(self, args: dict[str, Any]):
        try:
            return self.fn(**args, **self.kwargs)
        except Exception as e:  # noqa: BLE001  (the user's code: name it in the error)
            raise RuntimeError(f"reward function {self.function!r} raised {type(e).__name__}: {_first_line(e)}") from e

    def _value(self, v: Any, s: Sample) -> float:
        """``v`` as a score: None and NaN abstain, a bool is 0/1; anything else must be a number in [0, 1]."""
        if v is None:
            return math.nan
        if isinstance(v, (bool, np.bool_)):  # `return answer == row["label"]` is a 0/1 reward
            return float(v)
        if not isinstance(v, numbers.Real):
            raise ValueError(f"reward function {self.function!r} returned {v!r} ({type(v).__name__}) for sample "
                             f"{s.prompt_id!r}; expected a float in [0, 1], or NaN/None to abstain")
        f = float(v)
        if not math.isnan(f) and not 0.0 <= f <= 1.0:
            raise ValueError(f"reward function {self.function!r} returned {f!r} for sample {s.prompt_id!r}; "
                             "expected a float in [0, 1], or NaN/None to abstain")
        return f
