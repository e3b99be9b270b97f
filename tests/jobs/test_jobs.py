"""`softverify submit` / `softverify job ...` against a real single-node Ray cluster.

The cluster is started with `ray start --head` on loopback, free ports and its own temp
dir, and torn down by killing only the processes of that temp dir (never `ray stop`, which
would end every Ray instance on the machine, including other test runs').
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from softverify import cli
from softverify.platform.jobs.client import (
    STOPPED_EXIT_CODE,
    JobNotFoundError,
    JobsClient,
    JobsError,
    build_runtime_env,
    exit_code_for,
    parse_env_vars,
    project_dir,
    resolve_address,
    softverify_entrypoint,
)
from softverify.platform.jobs.outputs import OUTPUT_ROOT_ENV, OUTPUTS, command_path, resolve_job_outputs

REPO = Path(__file__).resolve().parents[2]


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _kill_cluster(temp_dir: str) -> None:
    """End the daemons whose command line names our temp dir, and their children."""
    mine = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(temp_dir in arg for arg in (p.info["cmdline"] or [])):
                mine.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    procs = []
    for p in mine:
        try:
            procs += p.children(recursive=True) + [p]
        except psutil.NoSuchProcess:
            pass
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=3)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def _start_head(temp_dir: str, env: dict) -> str:
    """`ray start --head` on loopback with free ports under ``temp_dir``; its dashboard address."""
    return _start_head_addresses(temp_dir, env)[0]


def _start_head_addresses(temp_dir: str, env: dict) -> tuple[str, str]:
    """Like :func:`_start_head`; returns (dashboard URL, GCS host:port)."""
    (gcs, dash, client, agent, agent_grpc, env_agent, metrics, nm, om) = _free_ports(9)
    cmd = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={gcs}",
        "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
        "--include-dashboard=true", "--num-cpus=1", "--num-gpus=0", f"--temp-dir={temp_dir}",
        f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={env_agent}",
        f"--metrics-export-port={metrics}", f"--node-manager-port={nm}", f"--object-manager-port={om}",
        "--disable-usage-stats",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"ray start failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return f"http://127.0.0.1:{dash}", f"127.0.0.1:{gcs}"


def test_a_token_cluster_gets_one_line_saying_what_to_set(tiny_model_dir):
    """A head started with token auth; a client without the token gets one line (no Ray
    traceback) naming RAY_AUTH_MODE / RAY_AUTH_TOKEN, and with them it works. Both ways in:
    the Jobs API (submit, job ...) and a driver joining the GCS (train, sweep, serve), which
    without the check retries for ~20 s and ends in a 60-line traceback."""
    temp_dir = tempfile.mkdtemp(prefix="svauth", dir="/tmp")
    token = "0123456789abcdef0123456789abcdef"
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    base["HOME"] = temp_dir  # no ~/.ray/auth_token of this machine's user
    with_token = dict(base, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    try:
        address, gcs = _start_head_addresses(temp_dir, with_token)
        cmd = [sys.executable, "-m", "softverify.cli", "job", "list", "--address", address]
        deadline = time.monotonic() + 60
        while True:  # the dashboard comes up a moment after `ray start` returns
            ok = subprocess.run(cmd, env=with_token, capture_output=True, text=True, timeout=120, cwd=REPO)
            if ok.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert ok.returncode == 0 and ok.stdout.strip() == "no jobs", ok.stderr[-2000:]
        serve = [sys.executable, "-m", "softverify.cli", "serve", str(tiny_model_dir), "--address", gcs,
                 "--port", str(_free_ports(1)[0])]
        for argv in (cmd, serve):
            t0 = time.monotonic()
            bad = subprocess.run(argv, env=base, capture_output=True, text=True, timeout=120, cwd=REPO)
            assert bad.returncode == 2, bad.stderr[-3000:]
            assert "requires token authentication" in bad.stderr and "RAY_AUTH_TOKEN=<the cluster's token>" in bad.stderr
            assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
            assert time.monotonic() - t0 < 15, argv  # not Ray's ~20 s of retries
        wrong = subprocess.run(serve, env=dict(with_token, RAY_AUTH_TOKEN="f" * 32), capture_output=True, text=True,
                               timeout=120, cwd=REPO)
        assert wrong.returncode == 2 and "rejected this client's token" in wrong.stderr, wrong.stderr[-3000:]
    finally:
        _kill_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_auth_hint_says_what_to_set(tmp_path, monkeypatch):
    from softverify.infra.cluster import auth_hint, needs_token

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=<the cluster's token>" in auth_hint("h:6379")
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("x" * 32)  # a local ray.init() wrote one: the mode is enough
    assert "set RAY_AUTH_MODE=token (the token in RAY_AUTH_TOKEN or ~/.ray/auth_token is then sent" in \
        auth_hint("h:6379")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert "rejected this client's token: set RAY_AUTH_TOKEN" in auth_hint("h:6379")
    assert not needs_token("ray://h:10001") and not needs_token("auto")  # not probed


@pytest.fixture(scope="module")
def ray_address():
    # Short path: Ray's unix sockets live under it and must stay under ~107 characters.
    temp_dir = tempfile.mkdtemp(prefix="svjobs", dir="/tmp")
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    try:
        address = _start_head(temp_dir, env)
        deadline = time.monotonic() + 60
        while True:
            try:
                JobsClient(address).list()
                break
            except JobsError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield address
    finally:
        _kill_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


# ---------------------------------------------------------------- no cluster needed


def test_entrypoint_runs_softverify_module_and_checks_the_command():
    assert softverify_entrypoint(["train", "--config", "a b.yaml"], ["train", "eval"]) == \
        "python -m softverify.cli train --config 'a b.yaml'"
    # a leading "softverify" is the user repeating the program name, not a sub-command
    assert softverify_entrypoint(["softverify", "eval", "x"]) == "python -m softverify.cli eval x"
    with pytest.raises(JobsError, match="no command to run"):
        softverify_entrypoint([])
    with pytest.raises(JobsError, match=r"unknown softverify command 'trian': expected one of eval, train"):
        softverify_entrypoint(["trian"], ["train", "eval"])


def test_env_vars_runtime_env_and_exit_codes(tmp_path):
    assert parse_env_vars(["A=1", "B=", "C=x=y"]) == {"A": "1", "B": "", "C": "x=y"}
    with pytest.raises(JobsError, match="'NOVALUE'.*KEY=VALUE"):
        parse_env_vars(["NOVALUE"])
    env = build_runtime_env(tmp_path, ["wandb==0.31.0"], {"A": "1"}, ["data/"])
    assert env["working_dir"] == str(tmp_path.resolve())
    assert env["pip"] == ["wandb==0.31.0"] and env["env_vars"] == {"A": "1"}
    assert "data/" in env["excludes"] and "runs/" in env["excludes"]
    assert build_runtime_env(None) == {}
    with pytest.raises(JobsError, match="missing.*not a directory"):
        build_runtime_env(tmp_path / "missing")
    assert exit_code_for("SUCCEEDED") == 0
    assert exit_code_for("FAILED", 2) == 2 and exit_code_for("FAILED", None) == 1
    assert exit_code_for("STOPPED") == STOPPED_EXIT_CODE
    with pytest.raises(JobsError, match="'RUNNING' is not final"):
        exit_code_for("RUNNING")
    assert project_dir() == REPO


def test_address_precedence(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address(None) == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://10.0.0.5:8265")
    assert resolve_address(None) == "http://10.0.0.5:8265"
    assert resolve_address("http://head:8265") == "http://head:8265"


def test_cli_user_errors_are_one_line(capsys):
    dead = f"http://127.0.0.1:{_free_ports(1)[0]}"
    cases = [
        (["submit", "--address", dead], "no command to run"),
        (["submit", "--address", dead, "--"], "no command to run"),
        (["submit", "--address", dead, "train", "--steps", "1"], "put the command after '--'"),
        (["submit", "--address", dead, "--", "trian"], "unknown softverify command 'trian'"),
        (["submit", "--address", dead, "--", "train", "--help-config"], f"cannot reach the Ray Jobs API at '{dead}'"),
        (["job", "list", "--address", dead], f"cannot reach the Ray Jobs API at '{dead}'"),
        (["submit", "--address", dead, "--working-dir", "/no/such/dir", "--", "train", "--output-dir", "/srv/r"],
         "'/no/such/dir' is not a directory"),
        (["submit", "--address", dead, "--env", "JUSTKEY", "--", "train", "--output-dir", "/srv/r"],
         "bad environment variable 'JUSTKEY'"),
        # the default trainer.output_dir is relative: refused before anything is uploaded
        (["submit", "--address", dead, "--", "train"], "trainer.output_dir 'runs/default' is relative"),
        (["submit", "--address", dead, "--output-root", "shared", "--", "train"], "must be an absolute path"),
    ]
    for argv, msg in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert msg in err, (argv, err)
        assert "Traceback" not in err


def test_relative_output_dirs_are_refused_or_placed_under_the_root(tmp_path, monkeypatch):
    monkeypatch.delenv(OUTPUT_ROOT_ENV, raising=False)
    with pytest.raises(JobsError, match=r"trainer.output_dir 'runs/default' is relative.*--output-root DIR"):
        resolve_job_outputs(["train"])
    cmd, outs = resolve_job_outputs(["train", "--set", "trainer.output_dir=runs/k562"], "/mnt/shared")
    assert outs == ["/mnt/shared/runs/k562"] and cmd[-2:] == ["--output-dir", "/mnt/shared/runs/k562"]
    # a whole section set at once, and a config file's value, count too
    assert resolve_job_outputs(["train", "--set", "trainer={output_dir: x/y, steps: 2}"], "/r")[1] == ["/r/x/y"]
    assert resolve_job_outputs(["train", "-c", "configs/verifiers_hard.yaml"], "/r")[1] == ["/r/runs/issue4/hard"]
    assert resolve_job_outputs(["train", "--output-dir", "/abs/run"]) == (["train", "--output-dir", "/abs/run"],
                                                                          ["/abs/run"])
    # softverify writes with local file APIs: a bucket must be mounted, not named
    with pytest.raises(JobsError, match=r"'s3://bucket/run' is a URI.*mount"):
        resolve_job_outputs(["train", "--output-dir", "s3://bucket/run"])
    with pytest.raises(JobsError, match=r"--output-root 's3://b' is a URI"):
        resolve_job_outputs(["train"], "s3://b")
    assert resolve_job_outputs(["train", "--help-config"])[1] == []
    # a config only the cluster has: explicit overrides are still checked
    assert resolve_job_outputs(["train", "--config", "/etc/sv/train.yaml"]) == (["train", "--config",
                                                                                "/etc/sv/train.yaml"], [])
    with pytest.raises(JobsError, match="'rel/x' is relative"):
        resolve_job_outputs(["train", "--config", "/etc/sv/train.yaml", "--output-dir", "rel/x"])


def test_every_command_that_writes_has_its_outputs_checked(monkeypatch):
    """Sweeps, eval, donor-game, the bio and verifier commands: each relative output path is
    refused without a root and placed under it with one; the root may come from the env."""
    monkeypatch.delenv(OUTPUT_ROOT_ENV, raising=False)
    cases = [
        (["sweep", "tune_configs/smoke_cpu.yaml"], "the sweep's output_dir 'sweeps/smoke_cpu'", "sweeps/smoke_cpu"),
        (["sweep", "tune_configs/smoke_cpu.yaml", "--set", "output_dir=s2"], "output_dir 's2'", "s2"),
        (["eval", "smollm2", "-o", "m.json"], "--output 'm.json'", "m.json"),
        (["donor-game", "run"], "run.output_dir 'runs/donor_game'", "runs/donor_game"),
        (["donor-game", "plot", "runs/a", "runs/b"], "--output 'runs/a'", "runs/a"),  # no -o: the first run dir
        (["donor-game", "prompts", "-o", "p.jsonl"], "--output 'p.jsonl'", "p.jsonl"),
        (["verify", "in.jsonl", "--verifier", "hard", "--out", "s.jsonl"], "--out 's.jsonl'", "s.jsonl"),
        (["verifiers", "report", "--out", "rep"], "--out 'rep'", "rep"),
        (["data", "questions", "--out", "q.parquet"], "--out 'q.parquet'", "q.parquet"),
        (["embed", "genes", "--kind", "onehot", "--out", "emb"], "--out 'emb'", "emb"),
        (["worldmodel", "fit", "--out", "wm"], "--out 'wm'", "wm"),
        (["coexpr", "build", "--h5ad", "/d/x.h5ad", "--out", "m.npz"], "--out 'm.npz'", "m.npz"),
    ]
    for argv, named, rel in cases:
        with pytest.raises(JobsError, match=re.escape(named) + " is relative"):
            resolve_job_outputs(argv)
        cmd, outs = resolve_job_outputs(argv, "/mnt/shared")
        assert outs == [f"/mnt/shared/{rel}"], argv
        assert cmd[:len(argv)] == argv and cmd[-1] == f"/mnt/shared/{rel}", cmd
    monkeypatch.setenv(OUTPUT_ROOT_ENV, "/srv/out")
    assert resolve_job_outputs(["eval", "smollm2", "-o", "m.json"])[1] == ["/srv/out/m.json"]
    monkeypatch.setenv(OUTPUT_ROOT_ENV, "rel")
    with pytest.raises(JobsError, match=rf"\${OUTPUT_ROOT_ENV} 'rel' must be an absolute path"):
        resolve_job_outputs(["train"])
    monkeypatch.delenv(OUTPUT_ROOT_ENV)
    # nothing written: unchanged, no outputs (a typo'd command reaches the entrypoint check as given)
    for argv in (["eval", "smollm2"], ["sweep", "x.yaml", "--check"], ["verify", "--list"], ["serve", "smollm2"],
                 ["genes", "build", "--gene-info", "/d/i", "--gene2go", "/d/g", "--obo", "/d/o"], ["trian", "x"]):
        assert resolve_job_outputs(argv) == (argv, []), argv


def test_the_output_table_covers_every_output_option():
    """A new command with --out/--output/--output-dir must be listed in OUTPUTS, or a
    submitted job of it could lose what it writes."""
    parser = cli.build_parser()
    missing = []

    def walk(p, path):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    walk(sub, path + (name,))
            elif a.dest in ("out", "output", "output_dir") and path not in OUTPUTS:
                missing.append(" ".join(path))
    walk(parser, ())
    assert not missing, f"commands whose outputs submit does not check: {missing}"
    assert command_path(parser, ["donor-game", "run", "--set", "x=1"]) == ("donor-game", "run")
    assert all(command_path(parser, list(path)) == path for path in OUTPUTS)


def test_help_examples_name_shipped_files(capsys):
    """Every file a submit/job --help example names is in the repo; paths under the
    /mnt/shared placeholder are the outputs a user picks."""
    from softverify.platform.jobs.cli import HELP_TEXT

    examples = [line.strip() for line in HELP_TEXT.splitlines() if line.strip().startswith("softverify ")]
    assert len(examples) >= 5
    named = [tok for line in examples for tok in shlex.split(line.split("#")[0])
             if "/" in tok and not tok.startswith("/mnt/shared")]
    assert named, examples
    absent = [f for f in named if not (REPO / f).is_file()]
    assert not absent, f"help examples name files the repo lacks: {absent}"
    assert "module" not in HELP_TEXT  # no developer notes in what a user reads
    for argv in (["submit", "--help"], ["job", "submit", "--help"], ["job", "--help"]):
        with pytest.raises(SystemExit):
            cli.main(argv)
        assert examples[0] in capsys.readouterr().out, argv


# ---------------------------------------------------------------- real cluster


def _submitted_id(stderr: str) -> str:
    m = re.search(r"submitted (raysubmit_\w+)", stderr)
    assert m, stderr
    return m.group(1)


def test_submit_follows_logs_and_reports_success(ray_address, capsys):
    from softverify.config import describe

    rc = cli.main(["submit", "--address", ray_address, "--", "train", "--help-config"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    # the job printed the real config reference, streamed to our stdout while it ran
    first_key = describe()[0].split(" ")[0]
    assert first_key in out and "trainer.output_dir" in out
    job_id = _submitted_id(err)
    assert f"job {job_id} SUCCEEDED" in err

    assert cli.main(["submit", "status", job_id, "--address", ray_address]) == 0
    assert capsys.readouterr().out.strip() == f"{job_id}: SUCCEEDED (Job finished successfully.)"
    assert cli.main(["job", "logs", "--address", ray_address, job_id]) == 0
    assert "trainer.output_dir" in capsys.readouterr().out


def test_submit_is_quiet_unless_verbose(ray_address):
    """The job client's packaging, upload and websocket lines (Ray's loggers, through Ray's
    own handler) show only with --verbose. A fresh process each: Ray's logger levels are
    process state that other tests' ray.init calls change."""
    noise = ("Uploading package", "Creating a file package", "WebSocket closed")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}

    def submit(*flags: str) -> str:
        r = subprocess.run([sys.executable, "-m", "softverify.cli", "submit", *flags, "--address", ray_address, "--",
                            "train", "--help-config", "trainer"], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "trainer.output_dir" in r.stdout and "SUCCEEDED" in r.stderr
        return r.stdout + r.stderr

    quiet = submit()
    assert not [n for n in noise if n in quiet], quiet[-3000:]
    assert [n for n in noise if n in submit("--verbose")]


def test_failed_job_exit_code_and_list_via_ray_address(ray_address, capsys, monkeypatch):
    rc = cli.main(["submit", "--address", ray_address, "--no-wait", "--", "train", "--config", "/no/such.yaml"])
    out, err = capsys.readouterr()
    assert rc == 0
    job_id = out.strip()
    assert re.fullmatch(r"raysubmit_\w+", job_id), out
    # following later exits with the driver's own exit code: softverify's 2 for a user error
    assert cli.main(["job", "logs", "--follow", "--address", ray_address, job_id]) == 2
    out, err = capsys.readouterr()
    assert "config file '/no/such.yaml' not found" in out
    assert f"job {job_id} FAILED" in err

    monkeypatch.setenv("RAY_ADDRESS", ray_address)  # no --address: the env var is used
    assert cli.main(["submit", "list"]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith(job_id)]
    assert len(row) == 1 and "FAILED" in row[0] and "train --config /no/such.yaml" in row[0]


def test_stop_a_running_job_with_its_own_working_dir_and_env(ray_address, tmp_path, capsys):
    (tmp_path / "marker.txt").write_text("uploaded-dir-ok")
    script = ("import os, time; print(open('marker.txt').read(), os.environ['SV_PROBE'], flush=True); "
              "time.sleep(600)")
    client = JobsClient(ray_address)
    job_id = client.submit(shlex.join([sys.executable, "-c", script]),
                           build_runtime_env(tmp_path, env_vars={"SV_PROBE": "env-ok"}))
    deadline = time.monotonic() + 60
    while "uploaded-dir-ok env-ok" not in client.logs(job_id):
        assert client.status(job_id) in ("PENDING", "RUNNING"), client.logs(job_id)
        assert time.monotonic() < deadline, client.logs(job_id)
        time.sleep(0.3)
    assert client.status(job_id) == "RUNNING"

    assert cli.main(["job", "stop", "--address", ray_address, job_id]) == 0
    assert capsys.readouterr().out.strip() == f"{job_id}: STOPPED"
    assert client.exit_code(job_id) == STOPPED_EXIT_CODE
    # stopping a finished job is not an error, and says so
    assert cli.main(["submit", "stop", job_id, "--address", ray_address]) == 0
    assert "already finished: STOPPED" in capsys.readouterr().out


def test_unknown_job_id(ray_address, capsys):
    client = JobsClient(ray_address)
    for call in (client.status, client.logs, client.stop, client.follow):
        with pytest.raises(JobNotFoundError, match="no job 'raysubmit_nosuchjob' on http://127.0.0.1"):
            call("raysubmit_nosuchjob")
    for argv in (["submit", "status", "raysubmit_nosuchjob"], ["job", "logs", "-f", "raysubmit_nosuchjob"],
                 ["job", "stop", "raysubmit_nosuchjob"]):
        assert cli.main([*argv, "--address", ray_address]) == 2
        err = capsys.readouterr().err
        assert "no job 'raysubmit_nosuchjob'" in err and "softverify job list" in err and "Traceback" not in err


def test_a_submitted_train_job_keeps_its_outputs(ray_address, tiny_model_dir, prompt_file, tmp_path, capsys):
    """The default relative output dir, placed under --output-root: the final model is
    there after the job ends (without the root it would be in the job's deleted copy)."""
    root = tmp_path / "shared"
    argv = ["submit", "--address", ray_address, "--output-root", str(root), "--", "train",
            "--model", str(tiny_model_dir), "--steps", "1",
            "--set", "data.source=file", "--set", f"data.path={prompt_file}", "--set", "trainer.eval_every=0",
            "--set", "trainer.progress=false", "--set", "rollout.num_workers=1", "--set", "rollout.prompts_per_step=2",
            "--set", "rollout.group_size=2", "--set", "rollout.placement.num_cpus=0.25", "--set", "learner.num_ranks=1",
            "--set", "learner.placement.num_cpus=0.25", "--set", "learner.micro_batch_size=4",
            "--set", "verifiers=[{kind: hard, placement: {num_cpus: 0.25}}]", "--set", "trainer.diagnostics=false"]
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, err[-3000:] + out[-3000:]
    assert f"writes its outputs to {root / 'runs' / 'default'}" in err
    final = root / "runs" / "default" / "final"
    assert (final / "model.safetensors").is_file() and (final / "softverify_prompt.json").is_file()


# ---------------------------------------------------------------- input paths


def _ctx(cwd, wd, **kw):
    from softverify.platform.jobs.inputs import InputContext

    return InputContext(cwd=Path(cwd), working_dir=None if wd is None else Path(wd), **kw)


def _workdir(tmp_path) -> Path:
    """A working dir with an input, a sub-folder, an ignored folder and a model whose
    weights submit's default excludes (*.safetensors) leave out; a file outside it."""
    wd = tmp_path / "proj"
    for d in ("data", "exp", "cache", "model"):
        (wd / d).mkdir(parents=True)
    (wd / "data" / "rows.jsonl").write_text('{"completion": "yes</answer>", "label": 1}\n')
    (wd / "cache" / "x.txt").write_text("x")
    (wd / ".gitignore").write_text("cache/\n")
    (wd / "model" / "config.json").write_text("{}")
    (wd / "model" / "model.safetensors").write_bytes(b"0")
    (tmp_path / "outside.jsonl").write_text("{}\n")
    return wd


def test_relative_inputs_pass_inside_the_upload_and_are_refused_outside_it(tmp_path):
    """The README's own `--data-mirror ../shared/...` shape, a config's ignored asset, a path
    that is not there, and what passes: relative paths Ray uploads, from a sub-folder too."""
    from softverify.platform.jobs.inputs import check_job_inputs, job_subdir

    wd = _workdir(tmp_path)
    ok = _ctx(wd, wd)
    assert check_job_inputs(["verify", "data/rows.jsonl", "--verifier", "hard"], ok) == []
    assert check_job_inputs(["verify", "../data/rows.jsonl", "--verifier", "hard"], _ctx(wd / "exp", wd)) == []
    assert job_subdir(wd / "exp", wd) == "exp" and job_subdir(wd, wd) is None
    # a sweep's base_config is read beside the sweep file, and a system prompt is not a path
    (wd / "exp" / "base.yaml").write_text("rollout: {system_prompt: 'Answer yes or no.\\n" + "x" * 300 + "'}\n")
    (wd / "exp" / "sweep.yaml").write_text("base_config: base.yaml\n")
    assert check_job_inputs(["sweep", "exp/sweep.yaml"], ok) == []
    assert check_job_inputs(["train", "-c", "exp/base.yaml"], ok) == []
    (wd / "exp" / "sweep.yaml").write_text("base_config: ../../outside.jsonl\n")
    with pytest.raises(JobsError, match=re.escape("base_config (beside exp/sweep.yaml) 'exp/../../outside.jsonl' is "
                                                  "outside the working dir")):
        check_job_inputs(["sweep", "exp/sweep.yaml"], ok)
    cases = [
        (["train", "--data-mirror", "../outside.jsonl"], wd,
         "data.mirror (--data-mirror) '../outside.jsonl' is outside the working dir"),
        (["train", "--set", "data.mirror=../shared/data/perturbqa"], wd,
         "data.mirror '../shared/data/perturbqa' does not exist here"),
        (["train", "--set", "verifiers=[{kind: world_model, params: {model_dir: cache}}]"], wd,
         "verifiers.0.params.model_dir 'cache' would not reach the cluster: Ray leaves 'cache/x.txt' (excluded by "
         f"{wd / '.gitignore'})"),
        (["eval", "model"], wd, "MODEL_DIR 'model' would not reach the cluster: Ray leaves 'model/model.safetensors' "
                                "(excluded by submit's excludes"),
        (["train", "--config", "../nope.yaml"], wd, "--config '../nope.yaml' does not exist here"),
        (["verify", "data/rows.jsonl", "--verifier", "world_model model_dir=../outside.jsonl"], wd,
         "--verifier world_model model_dir '../outside.jsonl' is outside the working dir"),
        (["verify", "../outside.jsonl"], wd, "INPUT '../outside.jsonl' is outside the working dir"),
    ]
    for argv, cwd, msg in cases:
        with pytest.raises(JobsError, match=re.escape(msg)):
            check_job_inputs(argv, _ctx(cwd, wd))
    with pytest.raises(JobsError, match=r"'data/rows.jsonl' is relative, but the job would upload nothing"):
        check_job_inputs(["verify", "data/rows.jsonl"], _ctx(wd, None))
    with pytest.raises(JobsError, match=r"relative to .*, which is outside the working dir"):
        check_job_inputs(["verify", "outside.jsonl"], _ctx(tmp_path, wd))
    # names that are not paths, URIs, outputs and help pass untouched
    for argv in (["eval", "smollm2"], ["train", "--model", "HuggingFaceTB/SmolLM2-135M", "--output-dir", "cache/r"],
                 ["train", "--set", "data.mirror=s3://bucket/pqa"], ["train", "--help-config"]):
        assert check_job_inputs(argv, _ctx(wd, wd)) == [], argv


def test_absolute_inputs_need_the_cluster_to_have_them(tmp_path):
    from softverify.platform.jobs.inputs import check_job_inputs

    wd = _workdir(tmp_path)
    here = str(tmp_path / "outside.jsonl")
    remote = _ctx(wd, wd, cluster_is_local=lambda: False)
    with pytest.raises(JobsError, match=re.escape(f"INPUT {here!r} is a path on this machine, and the cluster's nodes "
                                                  f"are other machines: if every node has it at the same path (a "
                                                  f"shared mount), say so with --cluster-has {here}")):
        check_job_inputs(["verify", here], remote)
    inside = str(wd / "data" / "rows.jsonl")
    with pytest.raises(JobsError, match="or pass it relative"):
        check_job_inputs(["verify", inside], remote)
    assert check_job_inputs(["verify", here], _ctx(wd, wd, shared=[str(tmp_path)])) == []
    assert check_job_inputs(["verify", here], _ctx(wd, wd, cluster_is_local=lambda: True)) == []
    notes = check_job_inputs(["train", "--data-mirror", "/cluster/only/pqa"], remote)
    assert notes == ["data.mirror (--data-mirror) /cluster/only/pqa is not on this machine; the job expects it on "
                     "the cluster"]


def test_submit_refuses_an_input_before_uploading(ray_address, tmp_path, monkeypatch, capsys):
    """Through the CLI against the real cluster: refused in one line, nothing submitted."""
    wd = _workdir(tmp_path)
    monkeypatch.chdir(wd)
    before = len(JobsClient(ray_address).list())
    rc = cli.main(["submit", "--address", ray_address, "--working-dir", str(wd), "--output-root", str(tmp_path),
                   "--", "train", "--data-mirror", "../outside.jsonl"])
    err = capsys.readouterr().err
    assert rc == 2 and "is outside the working dir" in err and len(err.strip().splitlines()) == 1, err
    assert len(JobsClient(ray_address).list()) == before
    assert cli.main(["submit", "--address", ray_address, "--cluster-has", "rel", "--", "eval", "smollm2"]) == 2
    assert "--cluster-has 'rel' must be an absolute path" in capsys.readouterr().err


def test_a_job_reads_relative_inputs_from_the_folder_submit_ran_in(ray_address, tmp_path, monkeypatch, capsys):
    """`verify ../data/rows.jsonl` from a sub-folder of the working dir: the job starts in
    that sub-folder of its uploaded copy, so the path resolves there as it did here."""
    wd = _workdir(tmp_path)
    monkeypatch.chdir(wd / "exp")
    rc = cli.main(["submit", "--address", ray_address, "--working-dir", str(wd), "--env", f"PYTHONPATH={REPO}",
                   "--", "verify", "../data/rows.jsonl", "--verifier", "hard"])
    out, err = capsys.readouterr()
    assert rc == 0, err[-3000:] + out[-3000:]
    assert "cd exp && python -m softverify.cli verify ../data/rows.jsonl" in err
    assert re.search(r"^hard\s+hard\s+1\s+1\s", out, re.M), out[-2000:]
