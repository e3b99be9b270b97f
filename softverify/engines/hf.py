"""HF transformers rollout engine: batched sampling with a KV cache on CPU (or any device).

Returns, per completion, the sampled token ids and their behaviour logprobs at the
sampling temperature (computed from the raw logits HF returns with ``output_logits``),
which the learner's importance ratio needs.
"""
from __future__ import annotations

import threading
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from transformers import LogitsProcessor, LogitsProcessorList

from softverify.engines.base import Generation, PromptBatch, SamplingParams, apply_penalties
from softverify.engines.kvcache import reserved_cache
from softverify.engines.packed_linear import prepack_linears, repack
from softverify.model.loading import (MIN_SHARED_PREFIX, encode_prompts, left_pad, load_causal_lm, pack_sequences,
                                      token_logprobs)
from softverify.task.prompts import chat_text


class HFEngine:
    """A policy copy that generates. Knows nothing of Ray; a RolloutWorker owns one."""

    def __init__(
        self,
        model_path: str,
        dtype: str = "float32",
        torch_threads: int | None = None,
        trust_remote_code: bool = False,
        batch_size: int = 16,
        device: str | None = None,
        decode: str = "generate",
        prepack: bool = True,
        shared_prefix: bool = True,
    ):
        """``decode``: 'generate' (HF ``generate`` with ``output_logits``) or 'loop' (own
        decode loop: one prefill per distinct prompt shared by its ``n`` samples, finished
        rows leave the batch, logprobs computed per step instead of keeping all logits, KV
        cache reserved up front). ``prepack``: on CPU, linear layers run on oneDNN-prepacked
        weights (:mod:`softverify.engines.packed_linear`), refreshed at every weight load.
        ``shared_prefix``: :meth:`next_token_logprobs` encodes a batch's common prefix once
        (exact; off only to measure what it saves)."""
        if decode not in ("generate", "loop"):
            raise ValueError(f"decode must be 'generate' or 'loop', got {decode!r}")
        self.decode = decode
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model, self.tokenizer = load_causal_lm(model_path, dtype, trust_remote_code)
        self.model.to(self.device).eval()
        self.packed = prepack_linears(self.model) if prepack and self.device.type == "cpu" else 0
        self.batch_size = batch_size
        self.shared_prefix = shared_prefix
        self.eos_ids = self._eos_ids()

    def _eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        ids = ids if isinstance(ids, list) else [ids]
        ids = [i for i in ids if i is not None]
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return set(ids)

    # ------------------------------------------------------------------ prompts
    def render(self, messages_list: Sequence[Sequence[dict]]) -> PromptBatch:
        """Apply the chat template; returns rendered texts and token ids."""
        texts = [chat_text(self.tokenizer, msgs) for msgs in messages_list]
        return PromptBatch(texts, [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts])

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def generate(
        self, prompt_token_ids: Sequence[Sequence[int]], sampling: SamplingParams, n: int = 1
    ) -> list[list[Generation]]:
        """``n`` completions for each prompt; result[i][j] is the j-th of prompt i."""
        flat = [list(p) for p in prompt_token_ids for _ in range(n)]
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        gens: list[Generation] = []
        if self.decode == "loop":
            per = max(1, self.batch_size // n)  # distinct prompts per batch (their n samples share one prefill)
            for start in range(0, len(prompt_token_ids), per):
                gens.extend(self._decode_loop([list(p) for p in prompt_token_ids[start : start + per]], n, sampling))
            return [gens[i * n : (i + 1) * n] for i in range(len(prompt_token_ids))]
        for start in range(0, len(flat), self.batch_size):
            gens.extend(self._generate_chunk(flat[start : start + self.batch_size], sampling))
        return [gens[i * n : (i + 1) * n] for i in range(len(prompt_token_ids))]

    def _generate_chunk(self, prompts: list[list[int]], sp: SamplingParams) -> list[Generation]:
        pad = self.tokenizer.pad_token_id
        input_ids, attn, _ = left_pad(prompts, pad)
        L = input_ids.shape[1]
        greedy = sp.temperature == 0
        kwargs = dict(
            max_new_tokens=sp.max_new_tokens,
            do_sample=not greedy,
            temperature=None if greedy else sp.temperature,
            top_p=None if greedy else sp.top_p,
            top_k=None if greedy or sp.top_k <= 0 else sp.top_k,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=pad,
        )
        if sp.stop:
            kwargs.update(stop_strings=list(sp.stop), tokenizer=self.tokenizer)
        if sp.presence_penalty or sp.frequency_penalty:
            kwargs["logits_processor"] = LogitsProcessorList([_Penalties(L, sp.presence_penalty, sp.frequency_penalty)])
        out = self.model.generate(
            input_ids=input_ids.to(self.device), attention_mask=attn.to(self.device), **kwargs
        )
        new_tokens = out.sequences[:, L:].cpu()
        # [B, T, V] raw logits -> behaviour logprobs of the sampled tokens at temperature T
        steps = len(out.logits)
        logp = torch.empty(new_tokens.shape[0], steps)
        temp = sp.temperature if sp.temperature > 0 else 1.0  # greedy: report plain logprobs
        tops: list[list[list[tuple[int, float]]]] = [[] for _ in range(new_tokens.shape[0])]
        for t, lg in enumerate(out.logits):
            lp = F.log_softmax(lg.float().cpu() / temp, dim=-1)
            logp[:, t] = lp.gather(-1, new_tokens[:, t : t + 1]).squeeze(-1)
            if sp.top_logprobs:
                v, i = lp.topk(sp.top_logprobs, dim=-1)
                for b in range(lp.shape[0]):
                    tops[b].append(list(zip(i[b].tolist(), v[b].tolist())))
        gens = [self._finish(new_tokens[b].tolist(), logp[b].tolist(), sp) for b in range(new_tokens.shape[0])]
        for g, top in zip(gens, tops):
            g.top_logprobs = top[: len(g.token_ids)]
        return gens

    def _decode_loop(self, prompts: list[list[int]], n: int, sp: SamplingParams) -> list[Generation]:
        """Sample ``n`` completions of each prompt with an explicit KV-cache loop.

        Same contract as the ``generate`` path: logprobs are ``log_softmax(logits / T)`` of
        the sampled token (before top-p/top-k), positions count from the first prompt token.
        A row ends at EOS (kept) or once its text contains a stop string (nothing appended).
        """
        dev, pad = self.device, self.tokenizer.pad_token_id
        ids, attn, pos = left_pad(prompts, pad)
        P = ids.shape[0]
        cache = reserved_cache(self.model.config, ids.shape[1] + sp.max_new_tokens)
        out = self.model(input_ids=ids.to(dev), attention_mask=attn.to(dev), position_ids=pos.to(dev),
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1, :].float()
        if n > 1:  # the n samples of a prompt share its prefill
            cache.batch_repeat_interleave(n)
            logits, attn = logits.repeat_interleave(n, 0), attn.repeat_interleave(n, 0)
        next_pos = torch.tensor([len(p) for p in prompts]).repeat_interleave(n)
        B = P * n
        live = list(range(B))  # original row of each batch row
        toks: list[list[int]] = [[] for _ in range(B)]
        lps: list[list[float]] = [[] for _ in range(B)]
        stopped = [False] * B
        greedy, temp = sp.temperature == 0, (sp.temperature if sp.temperature > 0 else 1.0)
        stops = list(sp.stop or [])
        tail = 2 + max((len(self.tokenizer(s, add_special_tokens=False)["input_ids"]) for s in stops), default=0)
        tops: list[list[list[tuple[int, float]]]] = [[] for _ in range(B)]
        for t in range(sp.max_new_tokens):
            logp = F.log_softmax(logits / temp, dim=-1)  # behaviour logprobs: before penalties, as in generate
            pick = apply_penalties(logits, [toks[r] for r in live], sp.presence_penalty, sp.frequency_penalty)
            plogp = logp if pick is logits else F.log_softmax(pick / temp, dim=-1)
            nxt = pick.argmax(-1) if greedy else sample_rows(_truncated_probs(plogp, sp.top_k, sp.top_p))
            chosen = logp.gather(-1, nxt[:, None])[:, 0]
            if sp.top_logprobs:
                tv, ti = logp.topk(sp.top_logprobs, dim=-1)
                for j, r in enumerate(live):
                    tops[r].append(list(zip(ti[j].tolist(), tv[j].tolist())))
            keep = []
            for j, (r, tok, lp) in enumerate(zip(live, nxt.tolist(), chosen.tolist())):
                toks[r].append(tok)
                lps[r].append(lp)
                if tok in self.eos_ids or (stops and any(s in self.tokenizer.decode(toks[r][-tail:]) for s in stops)):
                    stopped[r] = True
                else:
                    keep.append(j)
            if not keep or t == sp.max_new_tokens - 1:
                break
            if len(keep) < len(live):  # finished rows leave the batch (no compute on padding)
                idx = torch.tensor(keep)
                cache.batch_select_indices(idx.to(dev))
                attn, next_pos, nxt = attn[idx], next_pos[idx], nxt[idx]
                live = [live[j] for j in keep]
            attn = torch.cat([attn, torch.ones((len(live), 1), dtype=attn.dtype)], dim=1)
            out = self.model(input_ids=nxt[:, None].to(dev), attention_mask=attn.to(dev),
                             position_ids=next_pos[:, None].to(dev), past_key_values=cache, use_cache=True)
            logits = out.logits[:, -1, :].float()
            next_pos = next_pos + 1
        return [
            Generation(text=self.tokenizer.decode(toks[r], skip_special_tokens=True), token_ids=toks[r],
                       logprobs=lps[r], finish_reason="stop" if stopped[r] else "length", top_logprobs=tops[r])
            for r in range(B)
        ]

    def _finish(self, toks: list[int], lps: list[float], sp: SamplingParams) -> Generation:
        """Cut a sampled row at its end: EOS (kept, so the learner learns to stop) or the
        padding HF writes after a stop string / finished row."""
        end, reason = len(toks), "length"
        pad = self.tokenizer.pad_token_id
        for i, t in enumerate(toks):
            if t not in self.eos_ids and t != pad:
                continue
            # HF fills a row that completed a stop string with pad (== EOS for SmolLM2): that
            # token was never sampled, so it must not be trained on. A real EOS can only come
            # before a stop string completes (generation stops on the stop string).
            if sp.stop and any(s in self.tokenizer.decode(toks[:i], skip_special_tokens=True) for s in sp.stop):
                end, reason = i, "stop"
                break
            if t in self.eos_ids:
                end, reason = i + 1, "stop"
                break
        toks, lps = toks[:end], lps[:end]
        text = self.tokenizer.decode(toks, skip_special_tokens=True)
        if reason == "length" and sp.stop and any(s in text for s in sp.stop):
            reason = "stop"
        return Generation(text=text, token_ids=toks, logprobs=lps, finish_reason=reason)

    def chat(self, messages_list: Sequence[Sequence[dict]], sampling: SamplingParams) -> list[str]:
        """Convenience for agents and serving: one completion text per conversation."""
        pb = self.render(messages_list)
        return [g[0].text for g in self.generate(pb.token_ids, sampling, n=1)]

    def stream(self, prompt_token_ids: Sequence[int], sampling: SamplingParams) -> "TextStream":
        """One completion whose text arrives while it is generated (for streaming APIs).

        ``generate`` runs in a background thread and feeds a transformers
        ``TextIteratorStreamer``; iterate the returned :class:`TextStream` for text pieces
        (whole words, as the streamer releases them), then read its ``token_ids`` and
        ``finish_reason``. No logprobs: serving does not need them.
        """
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        class _Streamer(TextIteratorStreamer):
            """Also keeps the generated token ids (for usage and finish_reason)."""

            def __init__(self, *a, **kw):
                super().__init__(*a, **kw)
                self.token_ids: list[int] = []

            def put(self, value):
                if not (self.skip_prompt and self.next_tokens_are_prompt):
                    self.token_ids.extend(value.reshape(-1).tolist())
                super().put(value)

        streamer = _Streamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        greedy = sampling.temperature == 0
        kwargs = dict(
            max_new_tokens=sampling.max_new_tokens, do_sample=not greedy,
            temperature=None if greedy else sampling.temperature, top_p=None if greedy else sampling.top_p,
            top_k=None if greedy or sampling.top_k <= 0 else sampling.top_k,
            pad_token_id=self.tokenizer.pad_token_id, streamer=streamer,
        )
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        if sampling.presence_penalty or sampling.frequency_penalty:
            kwargs["logits_processor"] = LogitsProcessorList(
                [_Penalties(len(prompt_token_ids), sampling.presence_penalty, sampling.frequency_penalty)])
        ids = torch.tensor([list(prompt_token_ids)], dtype=torch.long, device=self.device)
        out = TextStream(streamer, self.eos_ids, sampling)

        class _Cancelled(StoppingCriteria):
            """Stops generation once the consumer went away (client disconnected)."""

            def __call__(self, input_ids, scores, **kw):
                return torch.full((input_ids.shape[0],), out.cancelled, dtype=torch.bool, device=input_ids.device)

        kwargs["stopping_criteria"] = StoppingCriteriaList([_Cancelled()])

        def run():
            try:
                if sampling.seed is not None:
                    torch.manual_seed(sampling.seed)
                with torch.no_grad():
                    self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
            except BaseException as e:  # surface it to the consumer instead of hanging it
                out.error = e
                streamer.end()

        out.thread = threading.Thread(target=run, name="hf-stream", daemon=True)
        out.thread.start()
        return out

    # ------------------------------------------------------------------ scoring / sync
    @torch.no_grad()
    def score(
        self, prompt_token_ids: Sequence[Sequence[int]], completion_token_ids: Sequence[Sequence[int]],
        temperature: float = 1.0,
    ) -> list[list[float]]:
        """Teacher-forced logprobs of given completions under the current weights."""
        out: list[list[float]] = []
        for s in range(0, len(prompt_token_ids), self.batch_size):
            p, c = prompt_token_ids[s : s + self.batch_size], completion_token_ids[s : s + self.batch_size]
            batch = pack_sequences(p, c, self.tokenizer.pad_token_id).to(self.device)
            lp, _ = token_logprobs(self.model, batch, temperature)
            for b in range(len(p)):
                start = len(p[b]) - 1
                out.append(lp[b, start : start + len(c[b])].tolist())
        return out

    @torch.no_grad()
    def next_token_logprobs(self, contexts: Sequence[Sequence[int]], token_ids: Sequence[int]) -> list[list[float]]:
        """log p(t | context) for each candidate ``t`` after each context: one forward per
        batch, logits at the last position only. The batch's common prefix (a direct-style
        eval's system prompt and chat header) is encoded once and its KV cache shared
        (:func:`softverify.model.loading.encode_prompts`; exact) unless the engine's
        ``shared_prefix`` is off."""
        cand = torch.tensor(list(token_ids), dtype=torch.long)
        out: list[list[float]] = []
        for s in range(0, len(contexts), self.batch_size):
            res, _ = encode_prompts(self.model, contexts[s : s + self.batch_size], self.tokenizer.pad_token_id,
                                    self.device, MIN_SHARED_PREFIX if self.shared_prefix else 0)
            logits = res.logits[:, -1].float()
            out.extend(torch.log_softmax(logits, -1)[:, cand.to(logits.device)].tolist())
        return out

    def load_weights(self, state: dict[str, torch.Tensor], partial: bool = False) -> None:
        """Replace the weights in place (weight sync from the learner). ``partial``: the
        state holds only the tensors training changes (``learner.train_layers``); the rest
        stays as it is, but every given key must exist."""
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        missing = [] if partial else [k for k in missing if not self._is_tied(k)]
        if missing or unexpected:
            raise ValueError(f"weight sync mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
        if self.packed:
            repack(self.model)

    def _is_tied(self, key: str) -> bool:
        return key == "lm_head.weight" and bool(getattr(self.model.config, "tie_word_embeddings", False))


class _Penalties(LogitsProcessor):
    """:func:`apply_penalties` inside HF ``generate``: tokens after the (padded) prompt of
    length ``prompt_len`` are the generated ones."""

    def __init__(self, prompt_len: int, presence: float, frequency: float):
        self.prompt_len, self.presence, self.frequency = prompt_len, presence, frequency

    def __call__(self, input_ids, scores):
        gen = input_ids[:, self.prompt_len:]
        return apply_penalties(scores, [row.tolist() for row in gen], self.presence, self.frequency)


def sample_rows(probs: torch.Tensor) -> torch.Tensor:
    """One token per row of ``probs`` ``[B, V]`` (rows need not sum to 1) by inverse CDF:
    one uniform per row instead of ``torch.multinomial``'s V exponentials, which cost 7 ms
    of a ~90 ms SmolLM2 decode step at 8 rows. ``right=True`` makes the pick the first
    token whose cumulative mass exceeds ``u * total``, so a zero-probability token is never
    drawn."""
    cdf = probs.float().cumsum(-1)
    u = torch.rand((probs.shape[0], 1), device=probs.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_(max=probs.shape[-1] - 1)[:, 0]


def _truncated_probs(logp: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Sampling distribution after top-k / top-p truncation of tempered logprobs ``[B, V]``."""
    if top_k > 0 and top_k < logp.shape[-1]:
        kth = torch.topk(logp, top_k, dim=-1).values[:, -1:]
        logp = logp.masked_fill(logp < kth, float("-inf"))
    if top_p < 1.0:
        sorted_lp, order = torch.sort(logp, dim=-1, descending=True)
        probs = sorted_lp.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # keep the smallest prefix reaching top_p (at least one)
        logp = logp.scatter(-1, order, sorted_lp.masked_fill(drop, float("-inf")))
    return logp.softmax(-1)


class TextStream:
    """Iterator over the text pieces of one streamed completion (see :meth:`HFEngine.stream`)."""

    def __init__(self, streamer, eos_ids: set[int], sampling: SamplingParams):
        self._streamer, self._eos, self._sp = streamer, eos_ids, sampling
        self.error: BaseException | None = None
        self.cancelled = False
        self.thread: threading.Thread | None = None
        self.text = ""

    def __iter__(self) -> Iterator[str]:
        for piece in self._streamer:
            if piece:
                self.text += piece
                yield piece
        if self.thread is not None:
            self.thread.join()
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        """Ask the generating thread to stop at its next token."""
        self.cancelled = True

    @property
    def token_ids(self) -> list[int]:
        return list(self._streamer.token_ids)

    @property
    def finish_reason(self) -> str:
        toks = self._streamer.token_ids
        if toks and toks[-1] in self._eos:
            return "stop"
        if self._sp.stop and any(s in self.text for s in self._sp.stop):
            return "stop"
        return "length" if len(toks) >= self._sp.max_new_tokens else "stop"
