"""Verifier mistakes are refused in the driver, before Ray starts, with one line."""
from __future__ import annotations

import pytest
import ray

from softverify.config import build_config
from softverify.configbase import ConfigError
from softverify.platform.train.trainer import Trainer


@pytest.mark.parametrize("verifiers, message", [
    ("[{kind: format, params: {max_charz: 10}}]", r"verifiers.0 \('format', kind 'format'\): verifier 'format' has no "
                                                  r"parameter\(s\) \['max_charz'\]"),
    ("[{kind: hard}, {kind: world_model, params: {p_table: /nonexistent/t.parquet, threshold: 0.5}}]",
     r"verifiers.1 \('world_model', kind 'world_model'\): teacher table '/nonexistent/t.parquet' not found"),
])
def test_a_bad_verifier_fails_before_ray_starts(tiny_model_dir, prompt_file, tmp_path, verifiers, message):
    cfg = build_config({}, [f"model.path={tiny_model_dir}", "data.source=file", f"data.path={prompt_file}",
                            f"trainer.output_dir={tmp_path / 'run'}", f"verifiers={verifiers}"])
    tr = Trainer(cfg)
    try:
        with pytest.raises(ConfigError, match=message):
            tr.setup()
        assert not ray.is_initialized()
    finally:
        tr.lock.release()


def test_wandb_without_the_package_fails_before_ray_starts(tiny_model_dir, prompt_file, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    cfg = build_config({}, [f"model.path={tiny_model_dir}", "data.source=file", f"data.path={prompt_file}",
                            f"trainer.output_dir={tmp_path / 'run'}", "trainer.wandb=true"])
    tr = Trainer(cfg)
    try:
        with pytest.raises(ConfigError, match="trainer.wandb=true needs the wandb package"):
            tr.setup()
        assert not ray.is_initialized()
    finally:
        tr.lock.release()


def test_tensorboard_without_the_package_fails_before_ray_starts(tiny_model_dir, prompt_file, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # Python's own "this package cannot be imported"
    cfg = build_config({}, [f"model.path={tiny_model_dir}", "data.source=file", f"data.path={prompt_file}",
                            f"trainer.output_dir={tmp_path / 'run'}", "trainer.tensorboard=true"])
    tr = Trainer(cfg)
    try:
        with pytest.raises(ConfigError, match=r"^trainer.tensorboard=true needs the tensorboard package: pip install "
                                              r"'softverify\[tensorboard\]'"):
            tr.setup()
        assert not ray.is_initialized()
    finally:
        tr.lock.release()
