"""Security properties, checked on the code and by behaviour.

- No unpickling of user files: an AST scan of softverify/ finds every call that can
  unpickle (torch.load, pickle/cloudpickle/joblib/dill load, pandas read_pickle, numpy load
  with allow_pickle=True, unsafe yaml.load) and every DeepSpeed ``load_checkpoint``; only
  the justified entries in ALLOWED may exist. Model weights load with use_safetensors=True:
  a model directory holding only a pickled ``pytorch_model.bin`` (which would run code) is
  refused and the payload never runs.
- trust_remote_code is False by default in every config and loader signature.
- Serve binds 127.0.0.1 by default and compares API keys with hmac.compare_digest.
"""
from __future__ import annotations

import ast
import inspect
import json
import pickle
from pathlib import Path

import pytest

from relutil import REPO

PKG = REPO / "softverify"

# (file, call) -> why it is safe
ALLOWED: dict[tuple[str, str], str] = {
    ("softverify/learner/rank.py", "engine.load_checkpoint"):
        "DeepSpeed's own checkpoint (torch.load inside DeepSpeed) of a run's output_dir, written by this "
        "process's earlier run; never a user-supplied model file",
}

UNPICKLERS = {"torch.load", "pickle.load", "pickle.loads", "cloudpickle.load", "cloudpickle.loads", "joblib.load",
              "dill.load", "dill.loads", "pd.read_pickle", "pandas.read_pickle", "yaml.load", "yaml.unsafe_load",
              "yaml.full_load", "engine.load_checkpoint", "shelve.open", "marshal.loads"}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return "?"


def _calls():
    for path in sorted(PKG.rglob("*.py")):
        rel = str(path.relative_to(REPO))
        for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
            if isinstance(node, ast.Call):
                yield rel, node, _name(node.func)


def _kw(node: ast.Call, name: str):
    for k in node.keywords:
        if k.arg == name:
            return k.value
    return None


def test_no_unpickling_outside_the_allow_list():
    found = set()
    for rel, node, name in _calls():
        short = ".".join(name.split(".")[-2:])
        if short in UNPICKLERS or name in UNPICKLERS:
            found.add((rel, short))
            assert (rel, short) in ALLOWED, f"{rel}:{node.lineno}: {name}(...) can unpickle; not in the allow list"
        if short in ("np.load", "numpy.load"):
            v = _kw(node, "allow_pickle")
            assert v is None or (isinstance(v, ast.Constant) and v.value is False), f"{rel}:{node.lineno}: allow_pickle"
    assert set(ALLOWED) <= found, f"stale allow-list entries: {set(ALLOWED) - found}"


def test_no_literal_trust_remote_code_true_and_model_loads_use_safetensors():
    for rel, node, name in _calls():
        v = _kw(node, "trust_remote_code")
        assert not (isinstance(v, ast.Constant) and v.value is True), f"{rel}:{node.lineno}: trust_remote_code=True"
        if name.endswith("AutoModelForCausalLM.from_pretrained") and _kw(node, "gguf_file") is None:
            v = _kw(node, "use_safetensors")
            assert isinstance(v, ast.Constant) and v.value is True, f"{rel}:{node.lineno}: needs use_safetensors=True"


def test_trust_remote_code_defaults_false_end_to_end():
    from softverify.config import TrainConfig
    from softverify.engines.hf import HFEngine
    from softverify.engines.vllm_engine import VLLMEngine
    from softverify.model.loading import load_causal_lm
    from softverify.platform.serve.config import ServeConfig

    assert TrainConfig().model.trust_remote_code is False
    assert ServeConfig(model="x").trust_remote_code is False
    for fn in (load_causal_lm, HFEngine.__init__, VLLMEngine.__init__):
        assert inspect.signature(fn).parameters["trust_remote_code"].default is False, fn


class _Payload:
    marker: str = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickled_weights_are_refused_and_never_run(tiny_model_dir, tmp_path):
    from softverify.model.loading import load_causal_lm

    d = tmp_path / "evil-model"
    d.mkdir()
    for f in tiny_model_dir.iterdir():
        if f.suffix == ".json" or f.name.startswith("tokenizer"):
            (d / f.name).write_bytes(f.read_bytes())
    marker = tmp_path / "PWNED"
    _Payload.marker = str(marker)
    (d / "pytorch_model.bin").write_bytes(pickle.dumps({"model.embed_tokens.weight": _Payload()}))
    with pytest.raises(ValueError, match="safetensors"):
        load_causal_lm(str(d))
    assert not marker.exists(), "the pickle payload ran"
    # the pickle really is live: unpickling it would have created the marker
    pickle.loads((d / "pytorch_model.bin").read_bytes())
    assert marker.exists()


def test_serve_binds_loopback_by_default_and_checks_keys_in_constant_time():
    from softverify.cli import build_parser
    from softverify.platform.serve import guards as serve_guards
    from softverify.platform.serve.config import ServeConfig
    from softverify.platform.serve.guards import check_api_key
    from softverify.platform.serve.schema import ApiError
    from softverify.platform.serve.cli import config_from_args

    assert ServeConfig(model="x").host == "127.0.0.1"
    args = build_parser().parse_args(["serve", "some-model"])
    assert config_from_args(args).host == "127.0.0.1"
    assert "hmac.compare_digest" in inspect.getsource(serve_guards.check_api_key)
    check_api_key("Bearer right", "right")
    check_api_key(None, None)  # no key configured: open (loopback default)
    for bad in (None, "", "Bearer wrong", "Basic right", "right", "Bearer righ"):
        with pytest.raises(ApiError) as e:
            check_api_key(bad, "right")
        assert e.value.status == 401 and "right" not in e.value.message


def test_api_key_is_not_part_of_the_deployment_config():
    """The key goes to the replica as a constructor argument, never into the logged config."""
    from softverify.platform.serve import app as serve

    src = inspect.getsource(serve.build_app)
    assert 'model_dump(exclude={"api_key"})' in src
    from softverify.platform.serve.config import ServeConfig

    cfg = ServeConfig(model="x", api_key="sk-secret-value")
    assert "sk-secret-value" not in json.dumps(cfg.model_dump(exclude={"api_key"}))
