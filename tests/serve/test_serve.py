"""softverify serve: a real Ray Serve app on loopback, talked to with the real openai client.

One module-scoped app (tiny random Llama with the SmolLM2 tokenizer) serves every HTTP
test; the rate-limit test drains the replica's bucket, so it runs last. The pure parts
(limits, rate limiter, config, the vLLM config) are tested without Ray first.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import openai
import requests
import pytest
import yaml

from softverify.infra.cluster import free_port
from softverify.platform.serve.config import LimitsConfig, ServeConfig
from softverify.platform.serve.guards import RateLimiter, check_chat, parse_body
from softverify.platform.serve.schema import ApiError, ChatCompletionRequest

KEY = "sk-test-" + "x" * 24
MODEL_ID = "tiny"
PREFIX = "<think>\n"  # the app answers R1-Zero style, as a model trained with the prefix would
LIMITS = dict(max_tokens=64, default_max_tokens=16, max_messages=8, max_message_chars=2000,
              requests_per_second=0.5, burst=60)
REPO = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------ pure parts (no Ray)


def test_rate_limiter_bucket_and_retry_after():
    now = [100.0]
    rl = RateLimiter(rate=0.5, burst=2, clock=lambda: now[0])
    rl.acquire(), rl.acquire()
    with pytest.raises(ApiError) as e:
        rl.acquire()
    assert e.value.status == 429 and e.value.headers["Retry-After"] == "2"  # 1 token / 0.5 per s
    now[0] += 1.0  # half a token back: still refused, 1 s to go
    with pytest.raises(ApiError) as e:
        rl.acquire()
    assert e.value.headers["Retry-After"] == "1"
    now[0] += 1.0
    rl.acquire()
    now[0] += 1000  # refill is capped at the burst
    rl.acquire(), rl.acquire()
    with pytest.raises(ApiError):
        rl.acquire()
    RateLimiter(None, 1).acquire()  # disabled


def test_background_load_answers_503_until_ready_then_the_value():
    """A replica is up at once; until its model is built, requests get 503 + Retry-After."""
    from softverify.platform.serve.guards import BackgroundLoad

    gate = threading.Event()
    load = BackgroundLoad(lambda: (gate.wait(10), "engine")[1], "model 'tiny'", retry_after_s=3)
    with pytest.raises(ApiError) as e:
        load.get()
    assert (e.value.status, e.value.code, e.value.headers) == (503, "model_loading", {"Retry-After": "3"})
    assert "model 'tiny' is still loading" in e.value.body()["error"]["message"] and not load.ready
    gate.set()
    assert load.wait(10) and load.ready and load.get() == "engine"

    def broken():
        raise OSError("no such file: weights.safetensors")

    bad = BackgroundLoad(broken, "model 'x'")
    assert bad.wait(10) and bad.failed and not bad.ready
    with pytest.raises(ApiError) as e:
        bad.get()
    assert e.value.status == 500 and "failed to load: OSError: no such file: weights.safetensors" in e.value.message


def test_wait_ready_polls_health_and_reports_a_failed_load():
    """serve_forever's "ready" line waits on /health: 503 means keep polling, 500 stop."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from softverify.platform.serve.app import wait_ready

    answers = [503, 503, 200]

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            code = answers.pop(0) if len(answers) > 1 else answers[0]
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b'{"status": "failed", "detail": "model failed to load: OSError"}' if code == 500 else b"{}")

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        wait_ready(url, timeout_s=10, poll_s=0.01)
        assert answers == [200]  # it polled through both 503s
        answers[:] = [500]
        with pytest.raises(RuntimeError, match="failed to load: .*OSError"):
            wait_ready(url, timeout_s=10, poll_s=0.01)
        answers[:] = [503]
        with pytest.raises(TimeoutError, match="not ready after"):
            wait_ready(url, timeout_s=0.2, poll_s=0.05)
    finally:
        srv.shutdown()


def test_parse_and_check_limits():
    limits = LimitsConfig(**LIMITS)
    ok = b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}'
    req = parse_body(ok, ChatCompletionRequest, limits)
    assert check_chat(req, limits, "tiny") == 16  # default max_tokens
    cases = [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (b'{"model": "tiny", "messages": []}', 422, "messages"),
        (b'{"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}', 422, "messages.0.role"),
        (b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "best_of": 2}', 400, "best_of"),
        (b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 9}', 422, "n"),
        (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}] * 9}).encode(), 413, "messages"),
        (b" " * 1_000_001, 413, None),
    ]
    for raw, status, param in cases:
        with pytest.raises(ApiError) as e:
            parse_body(raw, ChatCompletionRequest, limits)
        assert (e.value.status, e.value.param) == (status, param), raw[:60]
    big = ChatCompletionRequest(model="tiny", messages=[{"role": "user", "content": "x" * 2001}])
    too_many = ChatCompletionRequest(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=65)
    other = ChatCompletionRequest(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    for req, status, param in [(big, 413, "messages.0.content"), (too_many, 400, "max_tokens"), (other, 404, "model")]:
        with pytest.raises(ApiError) as e:
            check_chat(req, limits, "tiny")
        assert (e.value.status, e.value.param) == (status, param)
        assert set(e.value.body()["error"]) >= {"message", "type", "param"}


def test_serve_config_is_strict_and_cli_flags_win(tmp_path):
    from softverify.config import ConfigError
    from softverify.platform.serve.app import load_serve_config
    from softverify.platform.serve.cli import config_from_args
    from softverify.cli import build_parser

    with pytest.raises(ConfigError, match="replicas.max_replica"):
        load_serve_config({"model": "m", "replicas": {"max_replica": 2}})
    with pytest.raises(ConfigError, match="min_replicas"):
        load_serve_config({"model": "m", "replicas": {"autoscaling": True, "min_replicas": 5, "max_replicas": 2}})
    cfg_file = tmp_path / "serve.yaml"
    cfg_file.write_text(yaml.safe_dump({"model": "m", "port": 9000, "limits": {"max_tokens": 100}}))
    args = build_parser().parse_args(["serve", "other", "--config", str(cfg_file), "--port", "9001",
                                      "--autoscale", "--max-replicas", "3", "--set", "limits.burst=5"])
    cfg = config_from_args(args)
    assert (cfg.model, cfg.port, cfg.host, cfg.limits.max_tokens, cfg.limits.burst) == ("other", 9001, "127.0.0.1", 100, 5)
    opts = cfg.replicas.serve_options()
    assert opts["num_replicas"] == "auto" and opts["autoscaling_config"]["max_replicas"] == 3
    # --set values are read for their field's type (#18 item 9), as in train: text stays text
    args = build_parser().parse_args(["serve", "m", "--set", "api_key=123", "--set", "system_prompt=yes",
                                      "--set", "assistant_prefix=Answer:"])
    cfg = config_from_args(args)
    assert (cfg.api_key, cfg.system_prompt, cfg.assistant_prefix) == ("123", "yes", "Answer:")


def test_rayservice_args_are_a_valid_serve_config():
    from softverify.platform.serve.app import app_builder, load_serve_config

    svc = yaml.safe_load((REPO / "k8s" / "rayservice.yaml").read_text())
    (app,) = yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"]
    assert app["import_path"] == "softverify.platform.serve.app:app_builder" and callable(app_builder)
    cfg = load_serve_config(app["args"])
    assert cfg.model_id() == app["args"]["served_model_name"]


def test_vllm_config_is_accepted_by_ray_serve_llm():
    """The GPU path cannot run here; its LLMConfig fields are checked against Ray's own model."""
    from softverify.platform.serve.app import vllm_llm_config

    try:
        from ray.llm._internal.serve.core.configs.llm_config import LLMConfig
    except ImportError as e:  # pragma: no cover - depends on Ray internals
        pytest.skip(f"Ray Serve LLM config model not importable: {e}")
    cfg = ServeConfig(model="m", served_model_name="k562", max_model_len=4096,
                      replicas={"autoscaling": True, "min_replicas": 1, "max_replicas": 3})
    llm = LLMConfig(**vllm_llm_config(cfg, "/mnt/softverify/runs/k562/final"))
    assert llm.model_loading_config.model_id == "k562"
    assert llm.engine_kwargs["max_model_len"] == 4096


# ------------------------------------------------------------------ the running app


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    import ray
    from ray import serve

    from softverify.platform.serve.app import build_app

    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        cfg = ServeConfig(model=str(tiny_model_dir), served_model_name=MODEL_ID, api_key=KEY, limits=LIMITS,
                          assistant_prefix=PREFIX, replicas={"num_cpus": 0.5, "torch_threads": 1})
        serve.run(build_app(cfg), name="softverify", route_prefix="/")
        from softverify.platform.serve.app import wait_ready

        wait_ready(f"http://127.0.0.1:{port}", timeout_s=120)  # the model loads on a thread
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    """The same model in-process: what greedy decoding must produce (prefix included)."""
    from softverify.engines.base import SamplingParams, with_assistant_prefix
    from softverify.engines.hf import HFEngine

    engine = HFEngine(str(tiny_model_dir), torch_threads=1)

    def greedy(messages, max_tokens, **sampling):
        pb = with_assistant_prefix(engine.render([messages]), engine.tokenizer, PREFIX)
        g = engine.generate(pb.token_ids, SamplingParams(max_new_tokens=max_tokens, temperature=0, **sampling),
                            n=1)[0][0]
        g.text = PREFIX + g.text
        return g, len(pb.token_ids[0])

    return greedy


MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Does MYC regulate CDK4?"}]


def test_models_lists_the_served_model(client, server):
    assert [m.id for m in client.models.list().data] == [MODEL_ID]
    assert requests.get(f"{server}/health", timeout=10).json() == {"status": "ok"}


def test_chat_completion_matches_the_engine(client, reference):
    resp = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=12, temperature=0)
    expected, prompt_len = reference(MESSAGES, 12)
    (choice,) = resp.choices
    assert choice.message.role == "assistant" and choice.message.content == expected.text
    assert choice.finish_reason == expected.finish_reason
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (prompt_len, len(expected.token_ids))
    assert resp.model == MODEL_ID and resp.id.startswith("chatcmpl-")


def test_concurrent_requests_all_answer_correctly(client, reference):
    """Several at once go through @serve.batch; each must still get its own answer."""
    prompts = [[{"role": "user", "content": f"Question number {i}?"}] for i in range(4)]
    results: dict[int, str] = {}

    def ask(i):
        r = client.chat.completions.create(model=MODEL_ID, messages=prompts[i], max_tokens=8, temperature=0)
        results[i] = r.choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    for i in range(4):  # same-length prompts: batching adds no padding, greedy output is exact
        assert results[i] == reference(prompts[i], 8)[0].text, i


def test_streaming_chat_completion(client, reference):
    stream = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=24, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    expected, prompt_len = reference(MESSAGES, 24)
    assert contents[0] == PREFIX and len(contents) > 2, "the text should arrive in pieces"
    assert "".join(contents) == expected.text
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [expected.finish_reason]
    assert chunks[-1].usage.completion_tokens == len(expected.token_ids)
    assert chunks[-1].usage.prompt_tokens == prompt_len


def test_streaming_wire_format(server):
    body = {"model": MODEL_ID, "messages": MESSAGES, "max_tokens": 6, "stream": True}
    with requests.post(f"{server}/v1/chat/completions", json=body, stream=True,
                       headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines(decode_unicode=True) if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    first = json.loads(events[0][len("data: "):])
    assert first["object"] == "chat.completion.chunk" and first["choices"][0]["delta"]["role"] == "assistant"


def test_api_key_is_required(server):
    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=4)
    assert e.value.status_code == 401 and e.value.body["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    r = requests.get(f"{server}/v1/models", timeout=30)  # no header at all
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert requests.get(f"{server}/health", timeout=30).status_code == 200  # probes need no key


@pytest.mark.parametrize("kwargs,error,status,param", [
    (dict(max_tokens=10_000), openai.BadRequestError, 400, "max_tokens"),
    (dict(messages=[{"role": "user", "content": "y" * 2001}]), openai.APIStatusError, 413, "messages.0.content"),
    (dict(messages=[{"role": "user", "content": "y"}] * 9), openai.APIStatusError, 413, "messages"),
    (dict(messages=[]), openai.UnprocessableEntityError, 422, "messages"),
    (dict(model="gpt-4o"), openai.NotFoundError, 404, "model"),
    # OpenAI features this engine does not implement: 400 naming them
    (dict(response_format={"type": "json_object"}), openai.BadRequestError, 400, "response_format"),
    (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]), openai.BadRequestError, 400,
     "tools"),
    (dict(logit_bias={"50256": -100}), openai.BadRequestError, 400, "logit_bias"),
    (dict(n=2, stream=True), openai.BadRequestError, 400, "n"),
    (dict(top_logprobs=2), openai.BadRequestError, 400, "top_logprobs"),
    (dict(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]),
     openai.BadRequestError, 400, "messages.0.content.0.type"),
    (dict(extra_body={"best_of": 3}), openai.BadRequestError, 400, "best_of"),  # not an OpenAI chat field
    # a tool-calling conversation, as an agent framework sends it: refused by the part it cannot serve
    (dict(messages=[{"role": "user", "content": "y"},
                    {"role": "assistant", "content": None, "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "c1", "content": "42"}]),
     openai.BadRequestError, 400, "messages.1.tool_calls"),
    (dict(messages=[{"role": "user", "content": "y"}, {"role": "tool", "tool_call_id": "c1", "content": "42"}]),
     openai.BadRequestError, 400, "messages.1.role"),
])
def test_bad_requests_get_a_reason(client, kwargs, error, status, param):
    args = dict(model=MODEL_ID, messages=MESSAGES, max_tokens=4) | kwargs
    with pytest.raises(error) as e:
        client.chat.completions.create(**args)
    assert e.value.status_code == status
    assert e.value.body["param"] == param and e.value.body["message"]


def test_openai_parameters_that_map_onto_the_engine(client, reference, server):
    """What many clients send by default (zero penalties, text parts, no-op tool fields) is
    accepted and changes nothing; penalties, logprobs, n and seed do what OpenAI says."""
    plain = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=12, temperature=0)
    parts = [MESSAGES[0], {"role": "user", "content": [{"type": "text", "text": "Does MYC "},
                                                       {"type": "text", "text": "regulate CDK4?"}]}]
    same = client.chat.completions.create(model=MODEL_ID, messages=parts, max_tokens=12, temperature=0,
                                          presence_penalty=0, frequency_penalty=0, response_format={"type": "text"},
                                          tool_choice="none", store=False, metadata={"run": "t"})
    assert same.choices[0].message.content == plain.choices[0].message.content == reference(MESSAGES, 12)[0].text
    # penalties: exactly the in-process engine with the same settings
    pen = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=16, temperature=0,
                                         presence_penalty=1.5, frequency_penalty=0.5)
    ref = reference(MESSAGES, 16, presence_penalty=1.5, frequency_penalty=0.5)[0]
    assert pen.choices[0].message.content == ref.text
    # logprobs: one entry per generated token, the chosen token's logprob, 3 alternatives each
    lp = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=6, temperature=0,
                                        logprobs=True, top_logprobs=3)
    g = reference(MESSAGES, 6)[0]
    content = lp.choices[0].logprobs.content
    assert len(content) == lp.usage.completion_tokens == len(g.token_ids)
    for e, want in zip(content, g.logprobs):
        assert abs(e.logprob - want) < 1e-4 and len(e.top_logprobs) == 3
        assert e.top_logprobs[0].logprob >= e.logprob - 1e-6  # greedy picks the most likely token
    # n samples, reproducible with a seed
    a = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=8, n=3, seed=7)
    b = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=8, n=3, seed=7)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert len({c.message.content for c in a.choices}) > 1  # three samples, not one copied


def test_unknown_routes_and_401_speak_openai(server):
    r = requests.get(f"{server}/v1/nope", timeout=30)
    assert r.status_code == 404 and r.json()["error"]["message"] == "unknown route GET /v1/nope"
    r = requests.get(f"{server}/v1/chat/completions", timeout=30)
    assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
    r = requests.get(f"{server}/v1/models", timeout=30)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")


def test_openai_penalties_hand_computed():
    import torch

    from softverify.engines.base import apply_penalties

    logits = torch.zeros((2, 5))
    out = apply_penalties(logits, [[1, 1, 3], []], presence=0.5, frequency=0.25)
    assert out[0].tolist() == [0.0, -1.0, 0.0, -0.75, 0.0] and out[1].tolist() == [0.0] * 5
    assert apply_penalties(logits, [[1], [2]], 0.0, 0.0) is logits


def test_malformed_json_is_400(server):
    r = requests.post(f"{server}/v1/chat/completions", data=b'{"model": "tiny", "messages": [',
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400
    assert "not valid JSON" in r.json()["error"]["message"] and r.json()["error"]["type"] == "invalid_request_error"


def test_verify_scores_a_hand_checked_answer(server):
    def verify(answer, **extra):
        r = requests.post(f"{server}/v1/verify", headers={"Authorization": f"Bearer {KEY}"}, timeout=30,
                       json={"question": "Is a knockdown of MYC in K562 cells likely to result in differential "
                                         "expression of CDK4?", "answer": answer, **extra})
        assert r.status_code == 200, r.text
        return r.json()

    good = "<think>\nMYC activates CDK4 transcription.\n</think>\n<answer>\nyes\n</answer>"
    out = verify(good, metadata={"label": 1})
    assert out["scores"] == {"format": 1.0, "hard": 1.0} and out["parsed_answer"] == "yes"
    assert verify(good, metadata={"label": 0})["scores"]["hard"] == 0.0
    # a direct-style turn (starts with <answer>): only the answer checks apply -> 1.0; no label -> hard abstains
    out = verify("<answer>no</answer>", verifiers=["format", "hard"])
    assert out["scores"] == {"format": 1.0, "hard": None} and out["parsed_answer"] == "no"
    # text before the answer but no think block: checks 1, 2 and 4 fail, 3, 5 and 6 pass -> 3/6
    assert verify("Probably not. <answer>no</answer>", verifiers=["format"])["scores"] == {"format": 0.5}
    r = requests.post(f"{server}/v1/verify", headers={"Authorization": f"Bearer {KEY}"}, timeout=30,
                   json={"question": "q", "answer": "a", "verifiers": ["soft"]})
    assert r.status_code == 422 and r.json()["error"]["param"] == "verifiers"


def test_rate_limit_is_429_with_retry_after(server):
    """Runs last: drains the replica's bucket (burst 60, 0.5/s) with cheap malformed requests."""
    headers = {"Authorization": f"Bearer {KEY}"}
    with requests.Session() as http:
        statuses = []
        for _ in range(3 * LIMITS["burst"]):  # the bucket refills a little while we drain it
            r = http.post(f"{server}/v1/chat/completions", data=b"{", headers=headers, timeout=30)
            statuses.append(r.status_code)
            if r.status_code == 429:
                break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {400}, statuses
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"]["type"] == "rate_limit_error"
    # the openai client sees the same (RateLimitError), and a bad key is refused before the limiter
    c = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        c.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=4)
    assert requests.post(f"{server}/v1/chat/completions", data=b"{", timeout=30).status_code == 401


# ------------------------------------------------------------------ serving a run as it was trained


@pytest.fixture(scope="module")
def trained_run(tiny_model_dir, tmp_path_factory):
    """A run directory as `softverify train` leaves it: final/ with the weights and the
    prompt metadata, config.yaml beside it (direct style)."""
    import shutil

    from softverify.config import build_config
    from softverify.task.prompts import PROMPT_FILE, trained_prompt

    run = tmp_path_factory.mktemp("runs") / "k562_direct"
    shutil.copytree(tiny_model_dir, run / "final")
    cfg = build_config({}, [f"model.path={tiny_model_dir}"])
    (run / "final" / PROMPT_FILE).write_text(trained_prompt(cfg.prompt.style, cfg.rollout).to_json())
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    return run, cfg


QUESTION = "Is a knockdown of TP53 in K562 cells likely to result in differential expression of MYC?"


def test_training_eval_and_serving_render_the_same_tokens(trained_run):
    """The question a client sends as one user message reaches the served policy as the same
    tokens the rollout worker trained it on and the eval asked it with."""
    from softverify.actors.rollout import RolloutCore
    from softverify.engines.base import SamplingParams
    from softverify.engines.hf import HFEngine
    from softverify.evaluation.run import run_eval
    from softverify.platform.serve.app import prompt_ids
    from softverify.task.prompts import load_trained_prompt

    run, cfg = trained_run
    final = str(run / "final")
    row = {"question": QUESTION, "label": 1, "pert": "TP53", "gene": "MYC"}
    core = RolloutCore(final, cfg.model, cfg.rollout)
    sp = SamplingParams(max_new_tokens=2, temperature=0.0, stop=list(cfg.rollout.stop))
    train_ids = core.generate([row], 1, sp)[0].prompt_token_ids

    engine = HFEngine(final, torch_threads=1)
    seen: list[list[int]] = []
    real_generate = engine.generate
    engine.generate = lambda ids, sp, n=1: (seen.extend(list(i) for i in ids), real_generate(ids, sp, n))[1]
    run_eval(engine, [row], max_new_tokens=2, stop=cfg.rollout.stop, assistant_prefix=cfg.rollout.assistant_prefix,
             system_prompt=cfg.rollout.system_prompt, progress=False)
    eval_ids = seen[0]

    served = ServeConfig(model=final).with_trained_prompt(load_trained_prompt(final))
    serve_ids = prompt_ids(engine, [{"role": "user", "content": QUESTION}], served.system_prompt,
                           served.assistant_prefix)
    assert train_ids == eval_ids == serve_ids
    assert served.assistant_prefix == "<answer>" and served.trained_stop == ["</answer>"]
    assert served.model_id() == "k562_direct"  # not 'final', the name every run's directory shares
    # a run saved before the metadata existed: the same prompt from config.yaml beside final/
    (run / "final" / "softverify_prompt.json").rename(run / "prompt.bak")
    try:
        tp = load_trained_prompt(final)
        assert tp is not None and tp.source.endswith("config.yaml")
        assert (tp.system_prompt, tp.assistant_prefix) == (cfg.rollout.system_prompt, cfg.rollout.assistant_prefix)
    finally:
        (run / "prompt.bak").rename(run / "final" / "softverify_prompt.json")
    # a client's own system message and explicit settings win; a model softverify did not train gets none
    assert prompt_ids(engine, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}],
                      served.system_prompt, "") != serve_ids
    plain = ServeConfig(model=str(run.parent)).with_trained_prompt(load_trained_prompt(str(run.parent)))
    assert (plain.assistant_prefix, plain.system_prompt, plain.trained_stop) == ("", None, [])


def test_a_broken_prompt_file_or_run_config_is_named(tmp_path):
    """Serving reads the trained prompt from the model's softverify_prompt.json, else the
    run's config.yaml: a broken one is refused naming the file, not with a raw parser error."""
    from softverify.configbase import ConfigError
    from softverify.task.prompts import PROMPT_FILE, load_trained_prompt

    (tmp_path / "final").mkdir()
    (tmp_path / "config.yaml").write_text("rollout: [a\n")
    with pytest.raises(ConfigError, match=r"config.yaml' is not valid YAML: line 2"):
        load_trained_prompt(tmp_path / "final")
    (tmp_path / "final" / PROMPT_FILE).write_text("{bad")
    with pytest.raises(ConfigError, match=PROMPT_FILE + "' is not the JSON softverify writes"):
        load_trained_prompt(tmp_path / "final")


def test_trained_stop_is_kept_and_client_stop_trimmed():
    from softverify.platform.serve.app import trim_at_stop

    assert trim_at_stop("yes</answer> and more", [], ["</answer>"]) == "yes</answer>"
    assert trim_at_stop("yes</answer> and more", ["</answer>"]) == "yes"
    assert trim_at_stop("yes. STOP</answer>", ["STOP"], ["</answer>"]) == "yes. "


def test_a_served_run_answers_in_its_trained_layout(server, trained_run, tiny_model_dir):
    """`softverify serve RUN/final` with no prompt flags: the reply is what the policy gives
    to its training prompt (system prompt + '<answer>' prefix), under the run's name."""
    from ray import serve

    from softverify.engines.base import SamplingParams, render_turns
    from softverify.engines.hf import HFEngine
    from softverify.platform.serve.app import build_app
    from softverify.task.prompts import row_messages

    run, cfg = trained_run
    serve.run(build_app(ServeConfig(model=str(run / "final"), api_key=KEY, replicas={"num_cpus": 0.5})),
              name="trained", route_prefix="/trained")
    try:
        from softverify.platform.serve.app import wait_ready

        wait_ready(f"{server}/trained", timeout_s=120)
        c = openai.OpenAI(base_url=f"{server}/trained/v1", api_key=KEY, max_retries=0, timeout=60)
        assert [m.id for m in c.models.list().data] == ["k562_direct"]
        resp = c.chat.completions.create(model="k562_direct", messages=[{"role": "user", "content": QUESTION}],
                                         max_tokens=8, temperature=0)
        engine = HFEngine(str(run / "final"), torch_threads=1)
        pb = render_turns(engine, [row_messages({"question": QUESTION}, cfg.rollout.system_prompt)], "<answer>")
        g = engine.generate(pb.token_ids, SamplingParams(max_new_tokens=8, temperature=0, stop=["</answer>"]))[0][0]
        assert resp.choices[0].message.content == "<answer>" + g.text
        assert resp.usage.prompt_tokens == len(pb.token_ids[0])
    finally:
        serve.delete("trained")
