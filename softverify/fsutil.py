"""Atomic filesystem writes shared by everything that saves a directory or file.

A reader (a resumed run, a verifier loading a world model) must never see a half-written
artifact, so writers fill a hidden temporary sibling and move it into place with one rename.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``out_dir``; on success it replaces ``out_dir``.

    On an exception the temporary directory is removed and ``out_dir`` is left as it was.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
