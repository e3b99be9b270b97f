"""One world model served by ``softverify serve --verify-only`` (a real subprocess with its own
Ray and Serve on loopback), scored through ``kind: remote``: from this process, where its
scores must equal the local verifiers' on the same samples, and from two ``softverify train``
runs at once, which must log the same rewards through it as through their own local copy.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml

from softverify.infra.cluster import free_port
from softverify.config import VerifierSpec
from softverify.types import Sample
from softverify.verifiers import build_verifier
from softverify.verifiers.base import build_from_spec

REPO = Path(__file__).resolve().parents[2]
KEY = "remote-test-key"
AUTH = {"Authorization": "Bearer ${SOFTVERIFY_API_KEY}"}  # expanded from the environment by the verifier
GENES = ["TP53", "MYC", "GATA1", "KLF1", "CDKN1A", "HBG1", "TAL1", "LMO2"] + [f"G{i:02d}" for i in range(16)]

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def world_model(tmp_path_factory) -> Path:
    """A one-hot pair MLP fitted with the real bio code on every ordered pair of 24 genes
    (the prompt_file fixture's 8 among them), random labels: p varies by pair."""
    import pandas as pd

    from softverify.bio.embeddings import onehot_embedding
    from softverify.bio.worldmodel import FitConfig, WorldModel

    rng = np.random.default_rng(0)
    df = pd.DataFrame([(a, b, int(rng.random() < 0.3)) for a in GENES for b in GENES if a != b],
                      columns=["pert", "gene", "label"])
    wm = WorldModel.fit(df, onehot_embedding(GENES), FitConfig(hidden=(8,), max_epochs=2, batch_size=64),
                        log=lambda m: None)
    return wm.save(tmp_path_factory.mktemp("wm") / "wm")


def served_specs(world_model: Path) -> list[dict]:
    return [{"kind": "world_model", "name": "wm", "threshold": 0.5, "params": {"model_dir": str(world_model)}},
            {"kind": "hard"}, {"kind": "format"}]


class VerifyServer:
    """``softverify serve --verify-only`` in a subprocess with its own Ray temp dir."""

    def __init__(self, config: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.temp_dir = tempfile.mkdtemp(prefix="svrv", dir="/tmp")  # short: Ray's socket paths live under it
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(RAY_TMPDIR=self.temp_dir, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1", SOFTVERIFY_API_KEY=KEY)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "softverify.cli", "serve", "--verify-only", "--config", str(config),
             "--port", str(self.port)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(l.rstrip("\n") for l in self.proc.stdout),
                                        daemon=True)
        self._reader.start()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"serve exited with {self.proc.returncode}:\n{self.output[-4000:]}"
            if any(l.startswith("softverify serve: verifiers") and "ready at" in l for l in self.lines):
                return
            time.sleep(0.5)
        pytest.fail(f"serve not ready after {timeout_s} s:\n{self.output[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._reader.join(timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def served(world_model, tmp_path_factory):
    cfg = tmp_path_factory.mktemp("serve") / "serve.yaml"
    cfg.write_text(yaml.safe_dump({
        "verify_only": True, "verifiers": served_specs(world_model),
        "replicas": {"num_cpus": 0.5, "torch_threads": 1}, "limits": {"requests_per_second": None}}))
    server = VerifyServer(cfg)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("SOFTVERIFY_API_KEY", KEY)


def varied_samples() -> list[Sample]:
    """Answers of every kind on known and unknown genes: yes/no, negated, unanswered, another
    task, no label, a NaN label, a forced answer whose own text had no format, numpy metadata."""
    rng = np.random.default_rng(1)
    out = []
    for i in range(40):
        a, b = rng.choice(GENES, 2, replace=False)
        kind = i % 8
        answer = ["yes", "no"][i % 2]
        text = f"<think>\nreasoning {i}\n</think>\n<answer>\n{answer}\n</answer>"
        meta = {"pert": str(a), "gene": str(b), "label": np.int64(i % 3 == 0), "task": "de",
                "question": f"Is a knockdown of {a} ... {b}?"}
        unforced = None
        if kind == 1:
            meta["negated"] = True
        elif kind == 2:
            text = "<think>\nI am not sure"
        elif kind == 3:
            meta["pert"] = "NOT_A_GENE"
        elif kind == 4:
            meta["task"] = "coexpression"
        elif kind == 5:
            meta.pop("label")
        elif kind == 6:
            meta["label"] = float("nan")
        elif kind == 7:
            unforced, text = "<think>\nno format here", text
        out.append(Sample(prompt_id=str(i), prompt=f"<|im_start|>user\nquestion {i}<|im_end|>", completion=text,
                          metadata=meta, finish_reason="stop" if kind != 2 else "length",
                          unforced_completion=unforced))
    return out


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """NaN in the same places, and the same floats up to float32 rounding: JSON carries them
    exactly, but the world model's float32 forward pass over a batch of 7 rounds a few last
    bits differently from one over 40 (so would a local run's differently sized batches)."""
    return bool(np.array_equal(np.isnan(a), np.isnan(b)) and np.allclose(a[~np.isnan(a)], b[~np.isnan(b)],
                                                                        rtol=0, atol=1e-6))


def test_remote_scores_equal_the_local_verifiers(served, world_model, api_key):
    samples = varied_samples()
    for spec in served_specs(world_model):
        local = build_from_spec(VerifierSpec(**spec))
        name = spec.get("name", spec["kind"])
        remote = build_verifier("remote", name=f"remote_{name}", url=served.url, verifier=name, batch_size=7,
                                headers=AUTH)
        want, got = local.score(samples), remote.score(samples)
        assert same(got, want), (name, got, want)
        assert remote.metrics() == {"remote_requests": 7, "remote_retries": 0, "remote_failed": 0}  # check + 6 batches
        assert np.isfinite(want).sum() >= 10  # real scores, not all abstentions
    wm = build_from_spec(VerifierSpec(**served_specs(world_model)[0])).score(samples)
    assert len(set(wm[np.isfinite(wm)].round(6))) > 5 and np.isnan(wm).sum() >= 5  # p varies; unknown genes abstain
    # the one-answer form of /v1/verify still answers as before
    r = requests.post(f"{served.url}/v1/verify", headers={"Authorization": f"Bearer {KEY}"}, timeout=30,
                      json={"question": "q", "answer": "<answer>yes</answer>", "metadata": {"label": 1}})
    assert r.status_code == 200 and r.json()["scores"] == {"wm": None, "hard": 1.0, "format": 1.0}


@pytest.mark.parametrize("params, message", [
    ({}, r"it serves verifiers \['wm', 'hard', 'format'\]; set params.verifier to the one to use"),
    ({"verifier": "nope"}, r"HTTP 422: unknown verifier\(s\) \['nope'\]; this server has \['format', 'hard', 'wm'\]"),
    ({"verifier": "wm", "headers": None}, r"HTTP 401: missing or invalid API key .*; send a key with params.headers"),
    ({"verifier": "wm", "path": "/v1/verifyy"},
     r"HTTP 404: unknown route POST /v1/verifyy; expected softverify serve's /v1/verify"),
])
def test_a_wrong_remote_spec_is_refused_in_one_line(served, api_key, params, message):
    params = {"headers": AUTH, **params}
    url = served.url + params.pop("path", "")
    with pytest.raises(ValueError, match=message) as info:
        build_verifier("remote", url=url, **params)
    assert "\n" not in str(info.value)


def _train(out: Path, model: Path, prompts: Path, verifiers: str, temp_dir: str) -> subprocess.Popen:
    sets = [f"model.path={model}", "data.source=file", f"data.path={prompts}", f"trainer.output_dir={out}",
            "rollout.num_workers=1", "learner.num_ranks=1", "rollout.prompts_per_step=2",
            "learner.micro_batch_size=2", "algorithm.estimator=enumerate", "rollout.stop=['</answer>']",
            "trainer.progress=false", "trainer.steps=2", "trainer.checkpoint_every=0", "trainer.eval_every=0",
            f"verifiers={verifiers}"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=temp_dir, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1", SOFTVERIFY_API_KEY=KEY)
    cmd = [sys.executable, "-m", "softverify.cli", "train"] + [a for s in sets for a in ("--set", s)]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_training_runs_share_one_served_world_model(served, world_model, tiny_model_dir, prompt_file, tmp_path):
    """Both runs at once: each scores its enumerated answers with its own local copy of the
    world model and through the served one; the two columns must agree step by step."""
    verifiers = json.dumps([
        {"kind": "world_model", "name": "wm_local", "threshold": 0.5, "params": {"model_dir": str(world_model)}},
        {"kind": "remote", "name": "wm_remote", "params": {"url": served.url, "verifier": "wm", "headers": AUTH}},
    ])
    temps = [tempfile.mkdtemp(prefix=f"svtr{i}", dir="/tmp") for i in range(2)]
    procs = [_train(tmp_path / f"run{i}", tiny_model_dir, prompt_file, verifiers, temps[i]) for i in range(2)]
    try:
        outs = [p.communicate(timeout=420)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for t in temps:
            shutil.rmtree(t, ignore_errors=True)
    for i, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"run {i}:\n{out[-4000:]}"
        rows = [json.loads(l) for l in (tmp_path / f"run{i}" / "metrics.jsonl").read_text().splitlines()]
        steps = [r for r in rows if "reward/wm_remote" in r]
        assert [r["step"] for r in steps] == [1, 2], rows
        for r in steps:
            assert r["reward/wm_remote"] == pytest.approx(r["reward/wm_local"], abs=1e-6)
            assert r["reward_std/wm_remote"] == pytest.approx(r["reward_std/wm_local"], abs=1e-6)
            assert r["abstain/wm_remote"] == 0.0 and r["reward_std/wm_remote"] > 0  # p and 1 - p of known pairs
            assert r["verifier/wm_remote/remote_failed"] == 0 and r["verifier/wm_remote/remote_retries"] == 0
        assert 0 < steps[0]["verifier/wm_remote/remote_requests"] < steps[1]["verifier/wm_remote/remote_requests"]
        assert not math.isnan(steps[-1]["reward_mean"])
