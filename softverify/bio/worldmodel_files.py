"""Where a fitted world model's files are, without importing torch.

The driver checks a verifier's ``model_dir`` before training starts; importing
:mod:`softverify.bio.worldmodel` (torch) just to say "no such directory" would make that
one-line error cost seconds.
"""
from __future__ import annotations

import os
from pathlib import Path


def require_world_model_dir(path: str | os.PathLike) -> Path:
    """The world model's ``worldmodel.json``, or the one-line error naming the directory."""
    mp = Path(path) / "worldmodel.json"
    if not mp.is_file():
        raise FileNotFoundError(f"no world model in {str(Path(path))!r} (expected worldmodel.json + "
                                "model.safetensors; train one with `softverify worldmodel fit`)")
    return mp
