"""vLLM rollout engine (GPU extra: ``pip install -e '.[gpu]'``; CPU build: ``scripts/vllm_cpu_env.sh``).

Same contract as :class:`softverify.engines.hf.HFEngine`. Written against the vLLM source
(paths relative to the installed ``vllm`` package): every call below was run in the CPU build
(``vllm-cpu`` 0.32.0) and read, with the same name and signature, in the GPU pin (``vllm``
0.33.0's wheel), see docs/gpu.md.

Weight updates, the way vLLM takes them. vLLM runs its engine core, and with it the worker
that holds the model, in a process of its own (``VLLM_ENABLE_V1_MULTIPROCESSING=1``, the
default). ``LLM.collective_rpc`` (``entrypoints/llm.py``) reaches that worker, but its
msgpack serializer is meant for control messages -- the method's own docstring says to
"set up data-plane communication to pass data" -- and tensors do not arrive as tensors. So:

- :class:`WeightReceiverExtension` is vLLM's ``worker_extension_cls``: vLLM mixes it into
  its worker class (``v1/worker/worker_base.py``: ``WorkerWrapperBase.init_worker``), so
  its methods run inside the worker process, next to ``self.model_runner.model``;
- the worker joins a torch.distributed group with the sender
  (:class:`softverify.sync.collective.WeightBroadcaster`: gloo on CPU, NCCL between GPUs,
  one code path) and receives the tensors by broadcast;
- only metadata goes over ``collective_rpc``: names, shapes and dtypes
  (:func:`encode_specs`) and the bucket size, from which the worker computes the same bucket
  plan as the sender (:func:`softverify.sync.collective.plan_buckets`);
- after every load the prefix cache is reset (``LLM.reset_prefix_cache``): otherwise the KV
  cache of a prompt prefix computed under the old weights is reused, and behaviour logprobs
  silently mix two policies.

Two senders use this: :meth:`VLLMEngine.load_weights` (a state dict that reached the rollout
actor, e.g. from the object store: the actor is rank 0 of a small group of its own with the
engine's workers), and the learner's rank 0 (``learner.sync_method=collective``: the
worker joins the learner's group, :meth:`VLLMEngine.join_weight_group`, and receives the
header from the broadcast itself). vLLM's own weight-transfer engines
(``distributed/weight_transfer``, ``WeightTransferConfig``) are NCCL/IPC only, so they
could not be run here on a CPU; the extension is what OpenRLHF and verl do as well.

Behaviour logprobs are requested as ``processed_logprobs`` (``v1/sample/sampler.py``:
``Sampler.sample``): after temperature -- the learner's quantity -- but also after
top-k/top-p truncation, so those are refused (:mod:`softverify.engines.sampling_rules`).
Prompt logprobs skip the sampler entirely (``v1/worker/gpu_model_runner.py``:
``_get_prompt_logprobs_dict``: "prompt tokens skip sampling processors"), so :meth:`score`
is the temperature-1 distribution and refuses any other temperature.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Sequence

import torch

from softverify.infra.cluster import free_port
from softverify.sync.collective import _DTYPES, BUCKET_BYTES, TensorSpec, WeightBroadcaster, specs_of
from softverify.engines.base import Generation, PromptBatch, SamplingParams
from softverify.engines.sampling_rules import vllm_sampling_problem
from softverify.task.prompts import chat_text

#: The dotted path vLLM resolves for ``worker_extension_cls`` (``utils``: ``resolve_obj_by_qualname``).
EXTENSION = "softverify.engines.vllm_engine.WeightReceiverExtension"


# ---------------------------------------------------------------- metadata protocol (pure)
def encode_specs(specs: Sequence[TensorSpec]) -> list[list]:
    """The header as plain lists of str/int, which vLLM's msgpack encoder
    (``v1/serial_utils.py``: ``MsgpackEncoder``) carries unchanged to the engine core."""
    return [[s.name, [int(d) for d in s.shape], s.dtype] for s in specs]


def decode_specs(obj: Any) -> list[TensorSpec]:
    """Inverse of :func:`encode_specs`, checked: a malformed header fails here, in the worker,
    with the entry that is wrong, instead of as a size mismatch inside a collective."""
    if not isinstance(obj, (list, tuple)):
        raise ValueError(f"weight header must be a list of [name, shape, dtype]; got {type(obj).__name__}")
    out = []
    for i, entry in enumerate(obj):
        if not (isinstance(entry, (list, tuple)) and len(entry) == 3):
            raise ValueError(f"weight header entry {i} is {entry!r}; expected [name, shape, dtype]")
        name, shape, dtype = entry
        if not isinstance(name, str) or not name:
            raise ValueError(f"weight header entry {i}: name {name!r} is not a non-empty string")
        if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError(f"weight header entry {i} ({name}): shape {shape!r} is not a list of sizes")
        if dtype not in _DTYPES:
            raise ValueError(f"weight header entry {i} ({name}): dtype {dtype!r} is not one of {sorted(_DTYPES)}")
        out.append(TensorSpec(name, tuple(shape), dtype))
    return out


def update_message(state: dict[str, torch.Tensor], bucket_bytes: int = BUCKET_BYTES) -> dict:
    """What ``collective_rpc`` carries for one weight update: the header and the bucket size
    (the receiver's bucket plan must be the sender's), never a tensor."""
    return {"specs": encode_specs(specs_of(state)), "bucket_bytes": int(bucket_bytes)}


def receive_update(group: WeightBroadcaster, message: dict | None) -> dict[str, torch.Tensor]:
    """The receiving half of one update: ``message`` from :func:`update_message` (the sender
    broadcasts no header), or None when the header comes in the broadcast (the learner's
    ``WeightBroadcaster.send``)."""
    if message is None:
        return group.receive()
    group.bucket_bytes = int(message["bucket_bytes"])
    return group.receive(decode_specs(message["specs"]))


# ---------------------------------------------------------------- inside vLLM's worker process
@contextlib.contextmanager
def _quiet_partial_reload():
    """vLLM's in-place reload warns about every layer a partial state leaves alone (one line per
    layer, then every untouched parameter name), which a partial sync (``learner.train_layers``)
    does on purpose each step; errors still show."""
    names = ("vllm.model_executor.model_loader.reload.inplace", "vllm.model_executor.model_loader.reload.layerwise")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class WeightReceiverExtension:
    """vLLM's ``worker_extension_cls``: these methods become methods of vLLM's worker
    (``Worker`` in ``v1/worker/gpu_worker.py``, ``CPUWorker`` in ``v1/worker/cpu_worker.py``),
    called by name through ``LLM.collective_rpc`` on every worker of the engine."""

    def softverify_join_weight_group(self, host: str, port: int, first_rank: int, world_size: int,
                                     backend: str, timeout_s: float = 300.0) -> int:
        """Join a weight group as rank ``first_rank + tensor-parallel rank``; returns that rank.
        NCCL receives on this worker's own GPU (``self.device``), gloo in host memory."""
        from vllm.distributed.parallel_state import get_tensor_model_parallel_rank

        rank = first_rank + get_tensor_model_parallel_rank()
        device = self.device if backend == "nccl" else "cpu"
        self._softverify_group = WeightBroadcaster(rank, world_size, host, port, backend=backend, device=device,
                                                   timeout_s=timeout_s)
        return rank

    def softverify_receive_weights(self, message: dict | None) -> int:
        """Receive one update and load it; returns the number of tensors received.

        Loaded through the worker's ``reload_weights`` (``v1/worker/gpu_worker.py``:
        ``Worker.reload_weights``, which the CPU worker inherits; it runs
        ``model_executor/model_loader/reload/inplace.py``: ``reload_weights``), not the
        model's bare ``load_weights``: after the first load vLLM post-processes weights into
        kernel form (on CPUs ``model_executor/layers/utils.py``:
        ``dispatch_cpu_unquantized_gemm`` repacks every linear weight for oneDNN and leaves
        an empty parameter behind), so a bare ``load_weights`` fails on the empty parameter or
        would leave the kernels on the old weights. The layerwise reload restores each layer's
        parameters, loads the checkpoint-format tensors (HF names; the model's
        ``load_weights`` fuses q/k/v and gate/up and shards for tensor parallelism) and runs
        the post-processing again. Layers a partial state does not touch keep their kernels
        (vLLM logs them as not loaded)."""
        state = receive_update(self._softverify_group, message)
        with _quiet_partial_reload():
            self.reload_weights(weights_iterator=list(state.items()), is_checkpoint_format=True)
        return len(state)

    def softverify_weight_sums(self, names: list[str]) -> list[float | None]:
        """fp64 sums of the engine's own parameters (vLLM names, e.g. ``...qkv_proj.weight``):
        for checks that an update landed; plain floats, so they travel back over msgpack. None
        for a parameter vLLM emptied after packing it into a kernel's own layout (CPU linears)."""
        params = dict(self.model_runner.get_model().named_parameters())  # V1 and V2 runners alike
        return [float(params[n].detach().double().sum()) if params[n].numel() else None for n in names]

    def softverify_weight_names(self) -> list[str]:
        return [n for n, _ in self.model_runner.get_model().named_parameters()]

    def destroy_worker_extension(self) -> None:
        """vLLM 0.33's teardown hook for extensions (``v1/worker/worker_base.py``:
        ``WorkerWrapperBase.shutdown``; 0.32 has none): leave the weight group before the worker
        exits, so no process-group thread outlives its peers."""
        self._softverify_group = None


# ---------------------------------------------------------------- the engine
class VLLMEngine:
    """The rollout-engine contract over ``vllm.LLM``. ``settings``: ``rollout.vllm``
    (:class:`softverify.config.VLLMEngineConfig`); None takes its defaults."""

    def __init__(self, model_path: str, dtype: str = "bfloat16", trust_remote_code: bool = False,
                 settings=None, seed: int = 0):
        from vllm import LLM

        from softverify.config import VLLMEngineConfig

        s = settings if settings is not None else VLLMEngineConfig()
        self.settings = s
        extra = {"enable_sleep_mode": True} if s.enable_sleep_mode else {}
        self.llm = LLM(
            model=model_path, dtype=dtype, trust_remote_code=trust_remote_code, seed=seed,
            gpu_memory_utilization=s.gpu_memory_utilization, max_model_len=s.max_model_len,
            tensor_parallel_size=s.tensor_parallel_size, enforce_eager=s.enforce_eager,
            enable_prefix_caching=True, logprobs_mode="processed_logprobs", worker_extension_cls=EXTENSION, **extra,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.eos_ids = {self.tokenizer.eos_token_id} - {None}
        # where the model lives; the rollout actor reads it to pick the broadcast device
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.prefix_cache_resets = 0
        self.last_cached_tokens: list[int | None] = []  # per prompt of the last generate: prefix-cache hits
        self._local: WeightBroadcaster | None = None  # rank 0 of the actor's own group with the workers

    # ------------------------------------------------------------ generation
    def render(self, messages_list: Sequence[Sequence[dict]]) -> PromptBatch:
        texts = [chat_text(self.tokenizer, m) for m in messages_list]
        return PromptBatch(texts, [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts])

    def generate(self, prompt_token_ids: Sequence[Sequence[int]], sampling: SamplingParams, n: int = 1):
        problem = vllm_sampling_problem(sampling.temperature, sampling.top_p, sampling.top_k)
        if problem:
            raise ValueError(problem)
        from vllm import SamplingParams as VSP
        from vllm.inputs import TokensPrompt

        greedy = sampling.temperature == 0
        sp = VSP(
            n=n, temperature=0.0 if greedy else sampling.temperature, top_p=1.0, top_k=0,
            max_tokens=sampling.max_new_tokens, stop=list(sampling.stop) or None, include_stop_str_in_output=True,
            logprobs=sampling.top_logprobs, seed=sampling.seed, presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
        )
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompt_token_ids], sp,
                                 use_tqdm=False)
        self.last_cached_tokens = [o.num_cached_tokens for o in outs]
        result = []
        for o in outs:
            gens = []
            for c in o.outputs:
                steps = c.logprobs or []
                lps = [float(lp[t].logprob) for t, lp in zip(c.token_ids, steps)]
                top = ([sorted(((int(k), float(v.logprob)) for k, v in lp.items()), key=lambda kv: -kv[1])
                        [:sampling.top_logprobs] for lp in steps] if sampling.top_logprobs else [])
                gens.append(Generation(text=c.text, token_ids=list(c.token_ids), logprobs=lps,
                                       finish_reason="stop" if c.finish_reason == "stop" else "length",
                                       top_logprobs=top))
            result.append(gens)
        return result

    def chat(self, messages_list, sampling: SamplingParams) -> list[str]:
        pb = self.render(messages_list)
        return [g[0].text for g in self.generate(pb.token_ids, sampling, n=1)]

    def score(self, prompt_token_ids, completion_token_ids, temperature: float = 1.0) -> list[list[float]]:
        """Teacher-forced logprobs via ``prompt_logprobs`` on prompt + completion: the
        temperature-1 distribution, the only one vLLM computes for prompt tokens."""
        if temperature != 1.0:
            raise ValueError(f"VLLMEngine.score at temperature {temperature}: vLLM's prompt logprobs skip the "
                             "sampler and are always at temperature 1, so they would not be the policy's "
                             "logprobs at this temperature; score at temperature 1, or use the HF engine")
        from vllm import SamplingParams as VSP
        from vllm.inputs import TokensPrompt

        seqs = [list(p) + list(c) for p, c in zip(prompt_token_ids, completion_token_ids)]
        sp = VSP(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=s) for s in seqs], sp, use_tqdm=False)
        res = []
        for o, p, c in zip(outs, prompt_token_ids, completion_token_ids):
            pl = o.prompt_logprobs
            res.append([float(pl[len(p) + j][t].logprob) for j, t in enumerate(c)])
        return res

    def next_token_logprobs(self, contexts: Sequence[Sequence[int]], token_ids: Sequence[int]) -> list[list[float]]:
        """log p(t | context) of each candidate at temperature 1, one prefill per context: a
        one-token greedy request asking for exactly these tokens' logprobs
        (``SamplingParams.logprob_token_ids``, at most ``MAX_LOGPROB_TOKEN_IDS``; greedy
        ``processed_logprobs`` are the full log-softmax of the logits, ``Sampler.sample``).
        More candidates than that: each teacher-forced as a one-token continuation."""
        from vllm import SamplingParams as VSP
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import MAX_LOGPROB_TOKEN_IDS

        ids = [int(t) for t in token_ids]
        if len(set(ids)) > MAX_LOGPROB_TOKEN_IDS:
            cols = [[lp[0] for lp in self.score(contexts, [[t]] * len(contexts), 1.0)] for t in ids]
            return [list(row) for row in zip(*cols)]
        sp = VSP(max_tokens=1, temperature=0.0, logprob_token_ids=sorted(set(ids)))
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(c)) for c in contexts], sp, use_tqdm=False)
        return [[float(o.outputs[0].logprobs[0][t].logprob) for t in ids] for o in outs]

    # ------------------------------------------------------------ weights
    def _after_load(self) -> None:
        """``LLM.reset_prefix_cache`` (``entrypoints/llm.py``): returns False while requests run,
        which would leave old-policy KV in the cache, so that is an error here."""
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM refused to reset its prefix cache after a weight load (requests still "
                               "running?); cached KV of the old weights would be reused")
        self.prefix_cache_resets += 1

    def _rpc_in_thread(self, method: str, *args) -> tuple[threading.Thread, dict]:
        """``collective_rpc`` blocks until every worker returns, and the workers return only after
        the collective with this process has run: so it runs beside the caller's half."""
        box: dict = {}

        def run():
            try:
                box["result"] = self.llm.collective_rpc(method, args=args)
            except BaseException as e:  # re-raised in the caller's thread
                box["error"] = e

        t = threading.Thread(target=run, name=f"vllm-rpc-{method}", daemon=True)
        t.start()
        return t, box

    @staticmethod
    def _join(t: threading.Thread, box: dict):
        t.join()
        if "error" in box:
            raise box["error"]
        return box["result"]

    def _local_group(self) -> WeightBroadcaster:
        """This process as rank 0 and the engine's workers as ranks 1..tp, formed on first use.
        Always gloo: the workers may share this actor's GPU, and NCCL refuses two ranks on one
        device; the worker's ``load_weights`` copies host tensors onto its GPU."""
        if self._local is None:
            host, port = "127.0.0.1", free_port()
            world = 1 + self.settings.tensor_parallel_size
            t, box = self._rpc_in_thread("softverify_join_weight_group", host, port, 1, world, "gloo")
            group = WeightBroadcaster(0, world, host, port, backend="gloo", device="cpu")
            self._join(t, box)
            self._local = group
        return self._local

    def load_weights(self, state: dict[str, torch.Tensor], partial: bool = False) -> None:
        """Push ``state`` (HF names; any subset: vLLM's ``load_weights`` loads exactly the names
        it is given, so ``partial`` needs nothing) into every worker, then reset the prefix cache."""
        group = self._local_group()
        state = {k: v.detach().contiguous() for k, v in state.items()}
        t, box = self._rpc_in_thread("softverify_receive_weights", update_message(state, group.bucket_bytes))
        try:
            group.send(state, header=False)
        finally:
            counts = self._join(t, box)
        if any(c != len(state) for c in counts):
            raise RuntimeError(f"vLLM workers received {counts} tensors of {len(state)} sent")
        self._after_load()

    def join_weight_group(self, host: str, port: int, rank: int, world_size: int, backend: str) -> None:
        """``learner.sync_method=collective``: the engine's worker joins the learner's
        broadcast group as ``rank`` (blocks until every member has joined)."""
        if self.settings.tensor_parallel_size != 1:
            raise ValueError("the learner's broadcast group has one rank per rollout worker; with "
                             f"tensor_parallel_size={self.settings.tensor_parallel_size} use the object-store sync")
        self.llm.collective_rpc("softverify_join_weight_group", args=(host, port, rank, world_size, backend))

    def receive_weights(self) -> int:
        """Receive one broadcast of the learner's group (header included) into the workers."""
        n = self.llm.collective_rpc("softverify_receive_weights", args=(None,))[0]
        self._after_load()
        return n

    # ------------------------------------------------------------ checks and memory
    def weight_sums(self, names: list[str] | None = None) -> dict[str, float]:
        """fp64 sum of each named engine parameter (vLLM names; all of them by default), from the
        first worker."""
        names = names or self.llm.collective_rpc("softverify_weight_names")[0]
        return dict(zip(names, self.llm.collective_rpc("softverify_weight_sums", args=(names,))[0]))

    def shutdown(self) -> None:
        """Leave the local weight group, then stop vLLM's engine process, in that order: a gloo
        group whose peer process is gone aborts this process when it is destroyed ("terminate
        called without an active exception"), which is what interpreter exit does otherwise."""
        import gc

        self._local = None
        gc.collect()
        self.llm.llm_engine.engine_core.shutdown()

    def sleep(self, level: int = 1) -> None:
        """``LLM.sleep``: weights to host (level 1) or dropped (level 2), KV cache freed; needs
        ``rollout.vllm.enable_sleep_mode``."""
        self.llm.sleep(level=level)

    def wake_up(self) -> None:
        self.llm.wake_up()
