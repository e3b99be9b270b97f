"""A learner rank starts without compiling anything: DeepSpeed's ZeRO imports its Muon optimizer,
whose kernels are wrapped in ``torch.compile`` at import; the learner defers those wrappers to
their first call (``deepspeed_compat.import_deepspeed_muon_lazily``), which on this machine took a tiny
Learner's start from 6.7 s to ~1 s."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CODE = """
import sys
sys.path.insert(0, {tests!r})
import numpy as np
from conftest import make_tiny_model
from softverify.infra.cluster import free_port
from softverify.config import build_config
from softverify.learner.deepspeed_compat import DEEPSPEED_MUON_MODULE
from softverify.learner.rank import LearnBatch, Learner
from softverify.types import Sample
cfg = build_config({{"model": {{"path": {model!r}}}, "learner": {{"num_ranks": 1, "zero_stage": {stage}}},
                    "algorithm": {{"estimator": "sample"}}}}, [])
learner = Learner(cfg, {model!r}, master_port=free_port())
s = [Sample("p", "q", "a", {{}}, prompt_token_ids=[1, 2, 3], completion_token_ids=[4, 5], behaviour_logprobs=[-1.0, -1.0]),
     Sample("p", "q", "b", {{}}, prompt_token_ids=[1, 2, 3], completion_token_ids=[6], behaviour_logprobs=[-1.0])]
m = learner.train_step(LearnBatch(s, np.array([1.0, -1.0]), 3, 2))
sd = learner.state_dict()  # the weight-sync payload: ZeRO's parameters are views of one flat buffer
flat = any(p.untyped_storage().nbytes() > p.numel() * p.element_size() for p in learner.engine.module.parameters())
own = all(v.untyped_storage().nbytes() == v.numel() * v.element_size() for v in sd.values())
print("views of a flat buffer:", flat, "payload in own storages:", own)
import pickle, torch
from softverify.sync.wire import from_wire, state_bytes, to_wire
wire = to_wire(learner.state_dict(copy=False))  # the object-store sync: no copy, views of the flat buffer
bufs = []
pickle.dumps(wire, protocol=5, buffer_callback=bufs.append)  # what Ray's serialiser does with numpy arrays
print("wire out of band:", sum(b.raw().nbytes for b in bufs) == state_bytes(sd) == state_bytes(wire),
      "wire equal:", sorted(from_wire(wire)) == sorted(sd) and all(torch.equal(v, sd[k]) for k, v in from_wire(wire).items()))
from deepspeed.runtime.zero.muon import original_muon
print("compiled at start:", "torch._inductor.compile_fx" in sys.modules, DEEPSPEED_MUON_MODULE in sys.modules,
      hasattr(original_muon.muon_update, "__wrapped__"), np.isfinite(m["grad_norm"]))
"""


def test_a_learner_rank_starts_and_steps_without_loading_the_compiler(tiny_model_dir):
    # ZeRO-1 (the default; ZeRO-3 reaches the same module and is trained in tests/train)
    code = CODE.format(tests=str(REPO / "tests"), model=str(tiny_model_dir), stage=1)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    # the Muon module is imported (DeepSpeed's isinstance checks need it) with its kernels
    # wrapped for a deferred compile, the step ran, and inductor's compiler was never loaded
    assert out.stdout.strip().splitlines()[-1] == "compiled at start: False True True True", out.stdout
    # Learner.state_dict copies each tensor into its own storage: pickling a view of ZeRO's flat
    # buffer (Ray does, at every object-store weight sync) writes the whole buffer per tensor
    assert "views of a flat buffer: True payload in own storages: True" in out.stdout, out.stdout
    # the object-store sync's wire form takes views without a copy, and a view's pickle carries
    # its own bytes only (out of band, as Ray writes numpy arrays into shared memory): the
    # buffers add up to the payload's size, not a flat buffer per tensor
    assert "wire out of band: True wire equal: True" in out.stdout, out.stdout
