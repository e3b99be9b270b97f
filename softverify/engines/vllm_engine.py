"""vLLM rollout engine (GPU extra: ``pip install -e '.[gpu]'``).

Same contract as :class:`softverify.engines.hf.HFEngine`. Weight sync goes through a
worker extension (``collective_rpc``) so the new weights are loaded inside vLLM's own
worker process, where the model lives. Behaviour logprobs are requested in
``processed_logprobs`` mode, i.e. after temperature scaling, which is what the learner's
importance ratio compares against.

Not exercised by the CPU test suite (no GPU there); the HF engine is the tested path.
"""
from __future__ import annotations

from typing import Sequence

import torch

from softverify.engines.base import Generation, PromptBatch, SamplingParams


class WeightLoaderExtension:
    """Mixed into vLLM's GPU worker (``worker_extension_cls``): receives a state dict."""

    def softverify_load_weights(self, state: dict) -> bool:  # runs inside the vLLM worker
        self.model_runner.model.load_weights(weights=list(state.items()))
        return True


class VLLMEngine:
    def __init__(self, model_path: str, dtype: str = "bfloat16", trust_remote_code: bool = False,
                 gpu_memory_utilization: float = 0.5, max_model_len: int = 4096):
        from vllm import LLM

        self.llm = LLM(
            model=model_path, dtype=dtype, trust_remote_code=trust_remote_code,
            gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
            enable_prefix_caching=True, logprobs_mode="processed_logprobs",
            worker_extension_cls="softverify.engines.vllm_engine.WeightLoaderExtension",
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.eos_ids = {self.tokenizer.eos_token_id} - {None}

    def render(self, messages_list: Sequence[Sequence[dict]]) -> PromptBatch:
        texts = [self.tokenizer.apply_chat_template(list(m), tokenize=False, add_generation_prompt=True)
                 for m in messages_list]
        return PromptBatch(texts, [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts])

    def generate(self, prompt_token_ids: Sequence[Sequence[int]], sampling: SamplingParams, n: int = 1):
        from vllm import SamplingParams as VSP
        from vllm.inputs import TokensPrompt

        greedy = sampling.temperature == 0
        sp = VSP(
            n=n, temperature=0.0 if greedy else sampling.temperature, top_p=1.0 if greedy else sampling.top_p,
            top_k=0 if greedy or sampling.top_k <= 0 else sampling.top_k, max_tokens=sampling.max_new_tokens,
            stop=list(sampling.stop) or None, include_stop_str_in_output=True, logprobs=0, seed=sampling.seed,
        )
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompt_token_ids], sp, use_tqdm=False)
        result = []
        for o in outs:
            gens = []
            for c in o.outputs:
                lps = [float(lp[t].logprob) for t, lp in zip(c.token_ids, c.logprobs or [])]
                gens.append(Generation(text=c.text, token_ids=list(c.token_ids), logprobs=lps,
                                       finish_reason="stop" if c.finish_reason == "stop" else "length"))
            result.append(gens)
        return result

    def chat(self, messages_list, sampling: SamplingParams) -> list[str]:
        pb = self.render(messages_list)
        return [g[0].text for g in self.generate(pb.token_ids, sampling, n=1)]

    def score(self, prompt_token_ids, completion_token_ids, temperature: float = 1.0) -> list[list[float]]:
        """Teacher-forced logprobs via ``prompt_logprobs`` on prompt+completion."""
        from vllm import SamplingParams as VSP
        from vllm.inputs import TokensPrompt

        seqs = [list(p) + list(c) for p, c in zip(prompt_token_ids, completion_token_ids)]
        sp = VSP(max_tokens=1, prompt_logprobs=0, temperature=temperature)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=s) for s in seqs], sp, use_tqdm=False)
        res = []
        for o, p, c in zip(outs, prompt_token_ids, completion_token_ids):
            pl = o.prompt_logprobs
            res.append([float(pl[len(p) + j][t].logprob) for j, t in enumerate(c)])
        return res

    def next_token_logprobs(self, contexts: Sequence[Sequence[int]], token_ids: Sequence[int]) -> list[list[float]]:
        """log p(t | context) per candidate: each candidate teacher-forced as a one-token
        continuation (prefix caching makes the repeated contexts cheap)."""
        cols = [[lp[0] for lp in self.score(contexts, [[t]] * len(contexts), 1.0)] for t in token_ids]
        return [list(row) for row in zip(*cols)]

    def load_weights(self, state: dict[str, torch.Tensor], partial: bool = False) -> None:
        # vLLM's model.load_weights loads exactly the names it is given: partial is natural
        self.llm.collective_rpc("softverify_load_weights", args=(state,))
