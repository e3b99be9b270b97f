"""What the learner runs its forward pass on: merged sequences and shared prompts.

With binary answers and groups of 8-16, most of a group's completions are the same few
tokens ("yes</answer>" eight times), and every completion of a group repeats the same
prompt. Two exact reductions remove that repeated work:

- :func:`merge_identical`: identical (prompt, completion, advantage) samples become one
  sequence with weight = their count. Identical tokens under the same policy have the
  same logprobs and ratio, so weight x loss equals the sum of the copies' losses.
- :func:`completion_logprobs_shared`: each distinct prompt of a micro-batch is encoded
  once; its completions continue from that KV cache (gradients flow back through the
  cache into the prompt's activations), giving the same logprobs as encoding every
  ``prompt + completion`` in full.
- :func:`softverify.model.loading.encode_prompts`: the distinct prompts' common prefix (the
  system prompt and the chat template's header, about half of a direct-style prompt) is
  encoded once and its KV cache shared by every prompt, whose own tokens continue it.
  Also exact.

Both return logprobs aligned to completion tokens, ``[B, C_max]``, so the loss code does
not care which path produced them (:func:`completion_logprobs_packed` is the plain one).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from softverify.learner.microbatch import completion_rows
from softverify.model.loading import MIN_SHARED_PREFIX, encode_prompts, pack_sequences, token_logprobs
from softverify.types import Sample


def _forced_key(s: Sample) -> tuple[int, ...]:
    """A sample's forced mask in a form where "none forced" is one value (empty or all 0)."""
    return tuple(s.forced_mask) if any(s.forced_mask) else ()


def merge_identical(samples: Sequence[Sample], advantages: np.ndarray) -> tuple[list[Sample], np.ndarray, np.ndarray]:
    """``(unique samples, their advantages, weights)``; weight = how many copies merged.
    Order follows first occurrence, so groups stay contiguous. The same tokens with
    different forced masks stay apart: which of them the learner trains differs."""
    if len(samples) != len(advantages):
        raise ValueError(f"{len(samples)} samples but {len(advantages)} advantages")
    first: dict[tuple, int] = {}
    keep: list[int] = []
    weights: list[float] = []
    for i, s in enumerate(samples):
        key = (tuple(s.prompt_token_ids), tuple(s.completion_token_ids), float(advantages[i]), _forced_key(s))
        j = first.get(key)
        if j is None:
            first[key] = len(keep)
            keep.append(i)
            weights.append(1.0)
        else:
            weights[j] += 1.0
    adv = np.asarray(advantages, dtype=np.float64)
    return [samples[i] for i in keep], adv[keep], np.asarray(weights)


@dataclass
class CompletionBatch:
    """Right-padded completion-aligned tensors: ``mask[b, t]`` = 1 on real tokens."""

    logp: torch.Tensor  # [B, C] log p(completion token t | prompt, tokens < t)
    mask: torch.Tensor  # [B, C]
    entropy: torch.Tensor | None  # [B, C] entropy of the tempered distribution at t


def completion_mask(completions: Sequence[Sequence[int]], device=None) -> torch.Tensor:
    C = max(max((len(c) for c in completions), default=0), 1)
    m = torch.zeros((len(completions), C), dtype=torch.float32, device=device)
    for b, c in enumerate(completions):
        m[b, : len(c)] = 1.0
    return m


def completion_logprobs_packed(model, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                               pad_id: int, temperature: float, with_entropy: bool = False,
                               entropy_grad: bool = False, device=None) -> CompletionBatch:
    """The plain path: every ``prompt + completion`` encoded in full (one padded batch)."""
    packed = pack_sequences(prompts, completions, pad_id).to(device or "cpu")
    lp, ent = token_logprobs(model, packed, temperature, with_entropy=with_entropy, entropy_grad=entropy_grad)
    mask = completion_mask(completions, lp.device)
    C = mask.shape[1]
    logp = lp.new_zeros((len(prompts), C))
    ent_out = lp.new_zeros((len(prompts), C)) if ent is not None else None
    for b, (p, c) in enumerate(zip(prompts, completions)):
        s = len(p) - 1
        logp[b, : len(c)] = lp[b, s : s + len(c)]
        if ent_out is not None:
            ent_out[b, : len(c)] = ent[b, s : s + len(c)]
    return CompletionBatch(logp, mask, ent_out)


def packed_rows_mask(prefix: torch.Tensor, seg: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask ``[R, 1, W, P + W]`` for rows of sequences packed back to
    back after a KV cache of ``P`` columns: a query sees the cache columns ``prefix`` [R, P]
    marks (its prompt's real tokens, and in the candidate pass its own head) and the earlier
    tokens of its own segment (``seg`` [R, W], -1 on padding). Padding queries see
    themselves only (their outputs are never read; a fully masked row would give NaN).
    Additive (0 / dtype min), the form both eager and SDPA attention take as is."""
    R, W = seg.shape
    causal = torch.ones((W, W), dtype=torch.bool, device=seg.device).tril()
    same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] >= 0) & causal
    same |= torch.eye(W, dtype=torch.bool, device=seg.device)
    see = torch.cat([prefix.bool()[:, None, :].expand(R, W, -1), same], dim=2)
    return torch.zeros(see.shape, dtype=dtype, device=seg.device).masked_fill(~see, torch.finfo(dtype).min)[:, None]


@dataclass
class PackedRows:
    """Token sequences packed back to back into rows (:func:`softverify.learner.microbatch.completion_rows`),
    each row continuing one prompt's KV cache row: the layout both shared-prompt passes use
    to encode completions (or CoT heads) without padding between them."""

    ids: torch.Tensor  # [R, W] tokens, pad_id on padding
    pos: torch.Tensor  # [R, W] position ids: the prompt's length + the offset in its sequence
    seg: torch.Tensor  # [R, W] which sequence a column holds, -1 on padding
    row_owner: torch.Tensor  # [R] the prompt (cache row) each row continues
    row: list[int]  # per sequence: its row (-1 for an empty one)
    start: list[int]  # per sequence: its first column
    lens: list[int]  # per sequence: its length

    def index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, columns) of every sequence's tokens, sequence by sequence, token by token:
        indexes the pass's output ``[R, W, ...]`` into ``[sum of lengths, ...]``."""
        dev = self.ids.device
        r = [self.row[i] for i, n in enumerate(self.lens) for _ in range(n)]
        c = [self.start[i] + t for i, n in enumerate(self.lens) for t in range(n)]
        return torch.tensor(r, dtype=torch.long, device=dev), torch.tensor(c, dtype=torch.long, device=dev)


def pack_rows(owner: Sequence[int], seqs: Sequence[Sequence[int]], prompt_len: Sequence[int], pad_id: int,
              device=None) -> PackedRows | None:
    """``seqs[i]`` (continuing prompt ``owner[i]`` of length ``prompt_len[owner[i]]``) packed
    into rows; None when every sequence is empty."""
    lens = [len(q) for q in seqs]
    rows = completion_rows(owner, lens)
    if not rows:
        return None
    R, W = len(rows), max(sum(lens[i] for i in r) for r in rows)
    ids = torch.full((R, W), pad_id, dtype=torch.long)
    pos = torch.zeros((R, W), dtype=torch.long)
    seg = torch.full((R, W), -1, dtype=torch.long)
    row, start = [-1] * len(seqs), [0] * len(seqs)
    for r, members in enumerate(rows):
        o = 0
        for i in members:
            n = lens[i]
            ids[r, o: o + n] = torch.tensor(list(seqs[i]), dtype=torch.long)
            pos[r, o: o + n] = prompt_len[owner[i]] + torch.arange(n)
            seg[r, o: o + n] = i
            row[i], start[i] = r, o
            o += n
    row_owner = torch.tensor([owner[r[0]] for r in rows], dtype=torch.long, device=device)
    return PackedRows(ids.to(device), pos.to(device), seg.to(device), row_owner, row, start, lens)


def completion_logprobs_shared(model, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                               pad_id: int, temperature: float, with_entropy: bool = False,
                               entropy_grad: bool = False, device=None,
                               min_shared: int = MIN_SHARED_PREFIX) -> CompletionBatch:
    """Each distinct prompt encoded once, all of them in one batch, their common prefix once
    for all (:func:`softverify.model.loading.encode_prompts`); the completions then continue from
    their prompt's rows of that KV cache, packed back to back without padding
    (:func:`pack_rows`; a block-causal mask keeps each completion to its prompt and itself,
    positions continue each prompt), and only real positions are projected to
    log-probabilities. Indexing the cache is
    differentiable, so gradients reach the prompt's activations. Same logprobs as
    :func:`completion_logprobs_packed`. ``min_shared=0`` turns the shared prefix off."""
    device = device or "cpu"
    mask = completion_mask(completions, device)
    B, C = mask.shape
    first: dict[tuple, int] = {}
    owner = [first.setdefault(tuple(p), len(first)) for p in prompts]
    uniq = list(first)
    out, attn = encode_prompts(model, uniq, pad_id, device, min_shared)
    own = torch.tensor(owner, dtype=torch.long, device=device)
    heads = [out.logits[own, -1, :]]  # [B, V]: predicts completion token 0
    tb, tt = [torch.arange(B, device=device)], [torch.zeros(B, dtype=torch.long, device=device)]
    targets = [torch.tensor([c[0] if len(c) else pad_id for c in completions], dtype=torch.long, device=device)]
    inputs = [list(c[:-1]) for c in completions]  # every token but the last, which predicts nothing
    packed = pack_rows(owner, inputs, [len(u) for u in uniq], pad_id, device)
    if packed is not None:
        qb = [b for b, c in enumerate(inputs) for _ in c]  # logits at packed.index() predict completion qb's token qt
        qt = [t for c in inputs for t in range(1, len(c) + 1)]
        cache = out.past_key_values
        cache.batch_select_indices(packed.row_owner)  # row r of the cache = its prompt's row (repeats allowed)
        amask = packed_rows_mask(attn[packed.row_owner], packed.seg, out.logits.dtype)
        logits = model(input_ids=packed.ids, attention_mask=amask, position_ids=packed.pos,
                       past_key_values=cache, use_cache=False).logits
        heads.append(logits[packed.index()])
        tb.append(torch.tensor(qb, dtype=torch.long, device=device))
        tt.append(torch.tensor(qt, dtype=torch.long, device=device))
        targets.append(torch.tensor([completions[b][t] for b, t in zip(qb, qt)], dtype=torch.long, device=device))
    logp_all = F.log_softmax(torch.cat(heads).float() / temperature, dim=-1)  # [N, V], real positions only
    at = (torch.cat(tb), torch.cat(tt))
    lp = logp_all.gather(-1, torch.cat(targets)[:, None])[:, 0]
    logp = logp_all.new_zeros((B, C)).index_put(at, lp)
    ent = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            ent = logp_all.new_zeros((B, C)).index_put(at, -(logp_all.exp() * logp_all).sum(-1))
    return CompletionBatch(logp * mask, mask, None if ent is None else ent * mask)


def old_logprobs(samples: Sequence[Sample], C: int, device=None) -> torch.Tensor:
    """Behaviour logprobs aligned like :class:`CompletionBatch` ``[B, C]``."""
    old = torch.zeros((len(samples), C), dtype=torch.float32, device=device)
    for b, s in enumerate(samples):
        n = len(s.behaviour_logprobs)
        if n:
            old[b, :n] = torch.tensor(s.behaviour_logprobs, dtype=torch.float32)
    return old


def sampled_mask(samples: Sequence[Sample], C: int, device=None) -> torch.Tensor:
    """``[B, C]``: 0 on the completion tokens the rollout inserted (``Sample.forced_mask``,
    answer forcing), 1 elsewhere. Multiplied into the completion mask, it keeps inserted
    tokens out of the policy gradient, entropy, KL and token counts: the policy never
    sampled them."""
    m = torch.ones((len(samples), C), dtype=torch.float32, device=device)
    for b, s in enumerate(samples):
        if any(s.forced_mask):
            f = torch.tensor(s.forced_mask[:C], dtype=torch.float32, device=device)
            m[b, : len(f)] = 1.0 - f
    return m


def enumerated_heads(samples: Sequence[Sample], K: int, cand_len: Sequence[int]) -> list[list[int]]:
    """Per answer context (rows ``c*K .. c*K+K-1``, cycling through the K candidates), its
    head: the completion without the candidate (reasoning + forcing suffix). Raises when the
    K rows of a context do not share prompt and head: the CoT-enumerate layout of
    :func:`softverify.actors.rollout.enumerated_turns` is what the shared encoding relies on."""
    if len(samples) % K:
        raise ValueError(f"{len(samples)} rows are not whole contexts of {K} candidates")
    heads = []
    for c in range(len(samples) // K):
        rows = samples[c * K: (c + 1) * K]
        cut = [list(s.completion_token_ids[: len(s.completion_token_ids) - cand_len[j]]) for j, s in enumerate(rows)]
        if any(h != cut[0] or s.prompt_token_ids != rows[0].prompt_token_ids for h, s in zip(cut, rows)) or not cut[0]:
            raise ValueError(f"rows {c * K}-{c * K + K - 1} are not one context's {K} candidates after one shared, "
                             f"non-empty head (prompt + reasoning + forcing suffix)")
        heads.append(cut[0])
    return heads


def completion_logprobs_enumerated(model, samples: Sequence[Sample], K: int, cand_len: Sequence[int], pad_id: int,
                                   temperature: float, device=None,
                                   min_shared: int = MIN_SHARED_PREFIX) -> CompletionBatch:
    """CoT enumerate's forward without paying K times for the reasoning, and without padding
    the reasonings to the longest: each distinct prompt is encoded once; the contexts'
    heads (reasoning + forcing suffix) continue their prompt's KV cache packed back to back
    (:func:`pack_rows`, a block-causal mask); each candidate continues its head's columns of
    that cache (cache rows indexed, so gradients reach the prompt's and the head's
    activations), and only real positions are projected to log-probabilities. Same logprobs
    as encoding every ``prompt + completion`` in full (:func:`completion_logprobs_packed`),
    aligned the same way; no entropies (the enumerated loss takes the exact answer-set entropy)."""
    device = device or "cpu"
    heads = enumerated_heads(samples, K, cand_len)
    n_ctx, B = len(heads), len(samples)
    comps = [list(s.completion_token_ids) for s in samples]
    mask = completion_mask(comps, device)
    first: dict[tuple, int] = {}
    owner = [first.setdefault(tuple(samples[c * K].prompt_token_ids), len(first)) for c in range(n_ctx)]
    uniq = list(first)
    out, attn = encode_prompts(model, uniq, pad_id, device, min_shared)
    lp_first = F.log_softmax(out.logits[:, -1, :].float() / temperature, dim=-1)  # [P, V]: predicts head token 0
    plen = [len(u) for u in uniq]
    packed = pack_rows(owner, heads, plen, pad_id, device)  # every head is non-empty (enumerated_heads)
    cache = out.past_key_values
    cache.batch_select_indices(packed.row_owner)
    hlogits = model(input_ids=packed.ids, attention_mask=packed_rows_mask(attn[packed.row_owner], packed.seg,
                                                                          out.logits.dtype),
                    position_ids=packed.pos, past_key_values=cache, use_cache=True).logits
    # every head position: position t of head c predicts its token t + 1, the last one candidate token 0
    lp_h = F.log_softmax(hlogits[packed.index()].float() / temperature, dim=-1)  # [sum of head lengths, V]
    off = np.concatenate([[0], np.cumsum([len(h) for h in heads])]).tolist()
    ctx = [b // K for b in range(B)]
    cands = [comps[b][len(heads[ctx[b]]):] for b in range(B)]
    if not all(cands):
        raise ValueError(f"candidate lengths {list(cand_len)}: every candidate needs at least one token")
    Lc = max(len(c) for c in cands)
    # the candidate pass: sample b continues row packed.row[ctx] of the cache, seeing its prompt and its own head only
    cid = torch.full((B, Lc), pad_id, dtype=torch.long, device=device)
    for b, c in enumerate(cands):
        cid[b, : len(c)] = torch.tensor(c, dtype=torch.long, device=device)
    lp_c = None
    if Lc > 1:
        crow = torch.tensor([packed.row[c] for c in ctx], dtype=torch.long, device=device)
        cache.batch_select_indices(crow)
        ctx_t = torch.tensor(ctx, dtype=torch.long, device=device)
        sees = torch.cat([attn[packed.row_owner[crow]].bool(), packed.seg[crow] == ctx_t[:, None]], dim=1)
        cseg = torch.stack([torch.where(torch.arange(Lc - 1, device=device) < len(c) - 1, b, -1)
                            for b, c in enumerate(cands)])
        cpos = torch.tensor([plen[owner[c]] + len(heads[c]) for c in ctx], device=device)[:, None]
        cout = model(input_ids=cid[:, :-1], attention_mask=packed_rows_mask(sees, cseg, hlogits.dtype),
                     position_ids=cpos + torch.arange(Lc - 1, device=device), past_key_values=cache,
                     use_cache=False).logits
        lp_c = F.log_softmax(cout.float() / temperature, dim=-1).gather(-1, cid[:, 1:, None])[..., 0]  # [B, Lc - 1]
    # values in one vector, then scattered to (row, completion token): head token 0, head tokens 1.., candidate tokens
    head0 = lp_first[torch.tensor(owner, device=device), torch.tensor([h[0] for h in heads], device=device)]
    nxt = [t for h in heads for t in h[1:] + [pad_id]]  # each head's last target is a candidate's: read below
    head_rest = lp_h.gather(-1, torch.tensor(nxt, device=device)[:, None])[:, 0]
    cand0 = lp_h[torch.tensor([off[c + 1] - 1 for c in ctx], device=device), cid[:, 0]]
    parts = [head0, head_rest, cand0] + ([lp_c.reshape(-1)] if lp_c is not None else [])
    base = np.cumsum([0] + [len(p) for p in parts]).tolist()
    src, rb, rt = [], [], []
    for b in range(B):
        c, h, n = ctx[b], len(heads[ctx[b]]), len(cands[b])
        src += [base[0] + c] + list(range(base[1] + off[c], base[1] + off[c] + h - 1)) + [base[2] + b]
        src += [base[3] + b * (Lc - 1) + t for t in range(n - 1)]
        rb += [b] * (h + n)
        rt += range(h + n)
    vals = torch.cat(parts)[torch.tensor(src, device=device)]
    logp = vals.new_zeros(mask.shape).index_put((torch.tensor(rb, device=device), torch.tensor(rt, device=device)),
                                                vals)
    return CompletionBatch(logp * mask, mask, None)
