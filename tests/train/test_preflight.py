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


def test_cli_mistakes_are_one_line_in_under_three_seconds(tiny_model_dir, prompt_file, tmp_path):
    """Through the real CLI in a fresh process: a missing world model, a misspelled verifier
    parameter and a bad label in the prompt file each exit 2 with one ``error:`` line and no
    traceback, before Ray starts (no Ray session directory appears), in under 3 s of wall time."""
    import os
    import subprocess
    import sys
    import time

    bad = tmp_path / "bad.jsonl"
    lines = prompt_file.read_text().splitlines()
    bad.write_text("\n".join(lines[:3] + [lines[3].replace('"label": 0', '"label": "maybe"')
                                          .replace('"label": 1', '"label": "maybe"')] + lines[4:]) + "\n")
    base = ["--model", str(tiny_model_dir), "--set", "data.source=file", "--set", f"data.path={prompt_file}"]
    cases = [
        (base + ["--set", "verifiers=[{kind: world_model, params: {model_dir: /nonexistent/wm}}]"],
         "no world model in '/nonexistent/wm'"),
        (base + ["--set", "verifiers=[{kind: format, params: {max_charz: 3}}]"],
         "verifier 'format' has no parameter(s) ['max_charz']"),
        (["--model", str(tiny_model_dir), "--set", "data.source=file", "--set", f"data.path={bad}"],
         f"prompt file '{bad}', line 4: label 'maybe' is not a yes/no label"),
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(tmp_path / "ray")
    for i, (argv, message) in enumerate(cases):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "softverify.cli", "train", *argv, "--output-dir",
                            str(tmp_path / f"run{i}")], env=env, capture_output=True, text=True, timeout=120)
        wall = time.perf_counter() - t0
        err = [l for l in r.stderr.splitlines() if l.strip()]
        assert r.returncode == 2, r.stderr[-3000:]
        assert len(err) == 1 and err[0].startswith("softverify train: error: ") and message in err[0], r.stderr
        assert not (tmp_path / "ray").exists()  # Ray never started
        assert wall < 3.0, f"{message}: {wall:.2f} s"
