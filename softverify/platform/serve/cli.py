"""``softverify serve MODEL``: argument parsing only; the work is in :mod:`softverify.platform.serve.app`.

Settings come from (later wins): ServeConfig defaults, ``--config serve.yaml``, the flags
below, ``--set section.key=value``. The API key comes from ``--api-key`` or
``$SOFTVERIFY_API_KEY`` (prefer the variable: flags show up in ``ps``).
"""
from __future__ import annotations

import argparse

# flag dest -> dotted ServeConfig key
_FLAG_KEYS = {
    "host": "host", "port": "port", "api_key": "api_key", "served_model_name": "served_model_name",
    "engine": "engine", "dtype": "dtype", "assistant_prefix": "assistant_prefix",
    "num_replicas": "replicas.num_replicas", "min_replicas": "replicas.min_replicas",
    "max_replicas": "replicas.max_replicas", "target_ongoing_requests": "replicas.target_ongoing_requests",
    "max_ongoing_requests": "replicas.max_ongoing_requests", "num_cpus": "replicas.num_cpus",
    "num_gpus": "replicas.num_gpus", "torch_threads": "replicas.torch_threads",
    "max_batch_size": "replicas.max_batch_size", "max_tokens": "limits.max_tokens",
    "max_prompt_tokens": "limits.max_prompt_tokens", "max_messages": "limits.max_messages",
    "max_message_chars": "limits.max_message_chars", "rate_limit": "limits.requests_per_second",
    "burst": "limits.burst",
}


def _set(raw: dict, dotted: str, value) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def config_from_args(args):
    """ServeConfig from YAML + flags + --set; every mistake is a ConfigError."""
    from softverify.configbase import apply_overrides, read_yaml
    from softverify.platform.serve.config import ServeConfig
    from softverify.platform.serve.app import load_serve_config

    raw = read_yaml(args.config) if args.config else {}
    if args.model:
        raw["model"] = args.model
    for dest, key in _FLAG_KEYS.items():
        value = getattr(args, dest)
        if value is not None:
            _set(raw, key, value)
    if args.autoscale:
        _set(raw, "replicas.autoscaling", True)
    if args.no_rate_limit:
        _set(raw, "limits.requests_per_second", None)
    if args.no_verify:
        raw["verifiers"] = []
    if args.verify_only:
        raw["verify_only"] = True
    return load_serve_config(apply_overrides(raw, args.overrides, ServeConfig))  # values typed per field


def cmd_serve(args) -> int:
    import sys

    from softverify.configbase import format_config_help
    from softverify.platform.serve.config import ServeConfig

    if args.help_config:
        sys.stdout.write(format_config_help(ServeConfig, args.help_config, "softverify serve"))
        return 0
    from softverify.infra import quiet

    quiet.configure(args.verbose)  # before Ray and the libraries load: their chatter off unless --verbose
    cfg = config_from_args(args)
    from softverify.platform.serve.app import serve_forever

    return serve_forever(cfg, address=args.address)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="serve a model behind an OpenAI-compatible API with Ray Serve",
        description="OpenAI-compatible /v1/chat/completions (streaming too), /v1/models and /v1/verify on "
        "Ray Serve: the HF engine on CPU, or Ray Serve LLM (vLLM) on GPUs. Binds 127.0.0.1 unless --host says "
        "otherwise. Example: softverify serve runs/k562/final --port 8000. With --verify-only, /v1/verify alone "
        "(e.g. a world model that training runs share through kind: remote).",
    )
    p.add_argument("model", nargs="?", help="'smollm2', a HF model directory (a run's final/), or a hub id "
                   "(none with --verify-only)")
    p.add_argument("--config", help="serve YAML (see --help-config); flags override it")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set limits.max_tokens=1024 (repeatable)")
    p.add_argument("--help-config", nargs="?", const="all", metavar="SECTION",
                   help="print the config keys with their defaults and meanings, by section (SECTION keeps one, "
                   "e.g. replicas or limits)")
    p.add_argument("--address", help="join this Ray cluster (default: $RAY_ADDRESS or a new local one)")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="keep the libraries' log lines (Ray's start-up notices, Serve's controller and proxy INFO "
                   "lines, load bars); by default the terminal shows the product's lines, request logs and errors")
    g = p.add_argument_group("network and access")
    g.add_argument("--host", help="bind address (default 127.0.0.1; 0.0.0.0 exposes the server)")
    g.add_argument("--port", type=int, help="HTTP port (default 8000)")
    g.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: $SOFTVERIFY_API_KEY)")
    g = p.add_argument_group("model")
    g.add_argument("--served-model-name", help="model id clients use (default: the directory name)")
    g.add_argument("--engine", choices=["auto", "hf", "vllm"], help="default auto: vllm with GPUs, else hf")
    g.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    g.add_argument("--assistant-prefix", help="text every answer starts with (default: what the model was trained "
                   "with, from its softverify_prompt.json; else none)")
    g = p.add_argument_group("replicas and autoscaling")
    g.add_argument("--num-replicas", type=int)
    g.add_argument("--autoscale", action="store_true", help="scale between --min-replicas and --max-replicas")
    g.add_argument("--min-replicas", type=int)
    g.add_argument("--max-replicas", type=int)
    g.add_argument("--target-ongoing-requests", type=float)
    g.add_argument("--max-ongoing-requests", type=int)
    g.add_argument("--num-cpus", type=float, help="CPUs per replica")
    g.add_argument("--num-gpus", type=float, help="GPUs per replica")
    g.add_argument("--torch-threads", type=int)
    g.add_argument("--max-batch-size", type=int, help="HF engine: requests generated together")
    g = p.add_argument_group("limits")
    g.add_argument("--max-tokens", type=int, help="largest max_tokens a request may ask for")
    g.add_argument("--max-prompt-tokens", type=int)
    g.add_argument("--max-messages", type=int)
    g.add_argument("--max-message-chars", type=int)
    g.add_argument("--rate-limit", type=float, metavar="RPS", help="requests/s admitted per replica")
    g.add_argument("--burst", type=int, help="requests a replica admits back to back")
    g.add_argument("--no-rate-limit", action="store_true",
                   help="admit every request (--set limits.requests_per_second=null)")
    g.add_argument("--no-verify", action="store_true", help="disable /v1/verify")
    g.add_argument("--verify-only", action="store_true",
                   help="serve only /v1/verify with the configured verifiers, no model (give no MODEL): one world "
                   "model shared by training runs and sweep trials through verifiers of kind: remote")
    _help_from_config(p)
    p.set_defaults(func=cmd_serve)


def _help_from_config(p: argparse.ArgumentParser) -> None:
    """Flags without their own help text show their ServeConfig key's description and
    default, so ``--help`` and ``--help-config`` can never disagree."""
    from softverify.platform.serve.config import ServeConfig

    for action in p._actions:
        key = _FLAG_KEYS.get(action.dest)
        if action.help is not None or key is None:
            continue
        model, *path, leaf = [ServeConfig, *key.split(".")]
        for sec in path:
            model = model.model_fields[sec].annotation
        field = model.model_fields[leaf]
        default = field.get_default(call_default_factory=True)
        action.help = f"{(field.description or '').rstrip('.')} (--set {key}; default {default})".replace("%", "%%")
