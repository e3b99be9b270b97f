"""``kind: python``: a user's reward function by path, called on real samples; every way of
naming a function wrongly is one error naming the value, before Ray starts."""
from __future__ import annotations

import math
import textwrap
import time

import numpy as np
import pytest
from _vtools import completion, nan_equal, sample

from softverify.cli import main
from softverify.config import VerifierSpec
from softverify.configbase import ConfigError
from softverify.verifiers.base import build_verifier
from softverify.verifiers.suite import VerifierSuite, check_specs


def _write(path, code: str):
    path.write_text(textwrap.dedent(code))
    return path


@pytest.fixture
def reward_file(tmp_path):
    return _write(tmp_path / "my_reward.py", """
        import math

        def score(completion, answer, row, prompt, bonus=0.5):
            if row.get("gene") == "SKIP":
                return None                     # abstain
            if row.get("gene") == "NAN":
                return math.nan                 # abstain too
            assert completion.startswith("<think>") and prompt == "Q?"
            return bonus if answer == row["want"] else 0.0

        def only_answer(answer):
            return answer == "yes"              # a bool is a 0/1 reward

        def batch(completions, answers, rows, **kwargs):
            return [kwargs["scale"] * (a == "no") for a in answers]

        def wrong_batch(completions):
            return [0.5]

        def out_of_range(completion):
            return 2.0

        def text(completion):
            return "good"

        def boom(completion):
            raise KeyError("gene")

        NOT_A_FUNCTION = 3
    """)


def _samples():
    s = [sample(completion("yes"), gene="A", want="yes"), sample(completion("no"), gene="A", want="yes"),
         sample(completion("yes"), gene="SKIP", want="yes"), sample(completion("no"), gene="NAN", want="no"),
         sample(completion(None), gene="B", want="no")]
    for x in s:
        x.prompt = "Q?"
    return s


def test_per_sample_function_gets_the_row_the_answer_and_extra_params(reward_file):
    v = build_verifier("python", name="mine", function=f"{reward_file}:score", bonus=0.75)
    assert nan_equal(v.score(_samples()), [0.75, 0.0, np.nan, np.nan, 0.0])
    # through the suite (the pool's host): the score contract holds and NaN abstains in the reward
    suite = VerifierSuite([VerifierSpec(kind="python", name="mine", params={"function": f"{reward_file}:score"})])
    scores = suite.score(_samples())
    assert nan_equal(scores[:, 0], [0.5, 0.0, np.nan, np.nan, 0.0])
    assert nan_equal(suite.rewards(scores), [0.5, 0.0, np.nan, np.nan, 0.0])


def test_a_function_declares_only_what_it_needs_and_may_return_a_bool(reward_file):
    v = build_verifier("python", function=f"{reward_file}:only_answer")
    assert v.score(_samples()).tolist() == [1.0, 0.0, 1.0, 0.0, 0.0]


def test_batched_function_is_called_once_with_lists(reward_file):
    v = build_verifier("python", function=f"{reward_file}:batch", batched=True, scale=0.5)
    assert v.score(_samples()).tolist() == [0.0, 0.5, 0.0, 0.5, 0.0]


def test_module_form_imports_from_the_current_directory(tmp_path, monkeypatch):
    _write(tmp_path / "rewards_by_module_xyz.py", "def score(answer):\n    return 0.25 if answer else 0.0\n")
    monkeypatch.chdir(tmp_path)
    v = build_verifier("python", function="rewards_by_module_xyz:score")
    assert v.score(_samples()).tolist() == [0.25, 0.25, 0.25, 0.25, 0.0]


@pytest.mark.parametrize("fn, message", [
    ("out_of_range", r"returned 2.0 for sample 'p'; expected a float in \[0, 1\], or NaN/None to abstain"),
    ("text", r"returned 'good' \(str\) for sample 'p'; expected a float in \[0, 1\]"),
    ("boom", r"reward function '.*my_reward.py:boom' raised KeyError: 'gene'"),
])
def test_bad_return_values_name_the_function_and_the_value(reward_file, fn, message):
    v = build_verifier("python", function=f"{reward_file}:{fn}")
    with pytest.raises((ValueError, RuntimeError), match=message):
        v.score(_samples())


def test_batched_function_returning_the_wrong_length_is_named(reward_file):
    v = build_verifier("python", function=f"{reward_file}:wrong_batch", batched=True)
    with pytest.raises(ValueError, match=r"wrong_batch' \(batched\) returned 1 values for 5 samples"):
        v.score(_samples())


@pytest.mark.parametrize("params, message", [
    ({"function": "no_such_module_qq:score"},
     r"function='no_such_module_qq:score': cannot import module 'no_such_module_qq'"),
    ({"function": "{d}/missing.py:score"}, r"function='{d}/missing.py:score': file '{d}/missing.py' not found"),
    ({"function": "{d}/my_reward.py:nope"}, r"function='{d}/my_reward.py:nope': '{d}/my_reward.py' has no attribute "
                                           r"'nope'; its callables are \['batch', 'boom', .*'score'"),
    ({"function": "{d}/my_reward.py:NOT_A_FUNCTION"}, r"'NOT_A_FUNCTION' is not callable \(type int\)"),
    ({"function": "{d}/my_reward.py"}, r"function='{d}/my_reward.py' is not 'module:function' or "
                                      r"'path/to/file.py:function'"),
    ({"function": "{d}/my_reward.py:score", "extra": 1},
     r"wrong signature score\(completion, answer, row, prompt, bonus=0.5\): it takes no parameter\(s\) \['extra'\]"),
    ({"function": "{d}/my_reward.py:score", "batched": True},
     r"wrong signature score\(.*\): it requires \['completion', 'answer', 'row', 'prompt'\], which are never passed"),
    ({"function": "{d}/my_reward.py:batch", "completion": "x"}, r"params \['completion'\] collide"),
    ({"function": "{d}/my_reward.py:score", "batched": "yes"}, r"batched='yes' is not true/false"),
    ({"function": "{d}/broken.py:score"}, r"loading '{d}/broken.py' raised SyntaxError \(line 2\)"),
    ({}, r"python verifier needs params.function"),
])
def test_naming_a_function_wrongly_is_one_line_before_ray_starts(reward_file, params, message):
    import ray

    d = str(reward_file.parent)
    _write(reward_file.parent / "broken.py", "def score(completion):\n    return (\n")
    params = {k: v.format(d=d) if isinstance(v, str) else v for k, v in params.items()}
    spec = VerifierSpec(kind="python", name="mine", params=params)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        check_specs([VerifierSpec(kind="hard"), spec])
    assert time.perf_counter() - t0 < 3
    text = str(e.value)
    assert "\n" not in text and text.startswith("verifiers.1 ('mine', kind 'python'): ")
    import re

    assert re.search(message.format(d=re.escape(d)) if "{d}" in message else message, text), text
    assert not ray.is_initialized()


def test_train_refuses_a_bad_function_with_one_line_and_no_ray(tiny_model_dir, tmp_path, capsys):
    import ray

    prompts = tmp_path / "q.jsonl"
    prompts.write_text('{"question": "Is it?", "label": 1, "split": "train"}\n')
    rc = main(["train", "--model", str(tiny_model_dir), "--output-dir", str(tmp_path / "run"),
               "--set", "data.source=file", "--set", f"data.path={prompts}", "--set", "trainer.eval_every=0",
               "--set", "verifiers=[{kind: python, params: {function: 'os.path:sep'}}]"])
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("softverify")]  # not datasets' bars
    assert rc == 2
    assert err == ["softverify train: error: verifiers.0 ('python', kind 'python'): python verifier "
                   "function='os.path:sep': 'sep' is not callable (type str)"], err
    assert not ray.is_initialized()


def test_verify_list_names_the_kind_and_its_params(capsys):
    assert main(["verify", "--list"]) == 0
    out = capsys.readouterr().out
    i = out.splitlines().index("python")
    block = " ".join(out.splitlines()[i + 1:i + 8])
    assert "module:fn" in block and "params: function=None, batched=False, **kwargs" in block


def test_nan_is_not_mistaken_for_a_number_out_of_range(reward_file):
    v = build_verifier("python", function=f"{reward_file}:score")
    got = v.score([_samples()[3]])
    assert math.isnan(got[0])
