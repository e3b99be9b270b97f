"""Model loading and the one logprob computation shared by rollout engines and learners.

The weight-sync guarantee ("rollout logprobs equal learner logprobs right after a sync")
holds only if both sides compute token logprobs the same way: same temperature scaling,
same position ids. Both call :func:`token_logprobs` on sequences packed by
:func:`pack_sequences`, so there is exactly one definition.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_causal_lm(path: str, dtype: str = "float32", trust_remote_code: bool = False):
    """Load ``(model, tokenizer)`` from a resolved local path; tokenizer pads on the left
    (for generation) and always has a pad token (EOS when the model defines none).
    Weights load from safetensors only (never a pickle); ``trust_remote_code`` is off unless asked."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    try:
        # safetensors only: a pickled pytorch_model.bin from a user path could run code on load
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=_DTYPES[dtype], trust_remote_code=trust_remote_code, use_safetensors=True
        )
    except OSError as e:
        raise ValueError(
            f"could not load safetensors weights from {str(path)!r}: {str(e).splitlines()[0][:300]} "
            "(softverify loads only *.safetensors model weights; re-save a pickled *.bin checkpoint "
            "with save_pretrained(..., safe_serialization=True) in a trusted environment)"
        ) from None
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


@dataclass
class PackedBatch:
    """Right-padded ``prompt + completion`` sequences.

    ``loss_mask[b, t]`` is 1 where ``input_ids[b, t + 1]`` is a completion token, i.e. it is
    aligned with the next-token predictions ``logits[:, :-1]``.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    loss_mask: torch.Tensor

    def to(self, device) -> "PackedBatch":
        return PackedBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.position_ids, self.loss_mask)))


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, position_ids)`` of token sequences left-padded to the
    longest: the layout generation continues from (every row's last token in the last
    column), positions counting from 0 at each row's first real token."""
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long, device=device)
    attn = torch.zeros((len(seqs), L), dtype=torch.long, device=device)
    for i, s in enumerate(seqs):
        ids[i, L - len(s):] = torch.tensor(list(s), dtype=torch.long, device=device)
        attn[i, L - len(s):] = 1
    return ids, attn, (attn.cumsum(-1) - 1).clamp(min=0)


#: A common prefix shorter than this is not split off: the extra forward call costs more
#: than the few tokens it saves.
MIN_SHARED_PREFIX = 8


def common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    """Tokens every sequence starts with, at most one short of the shortest sequence, so
    each keeps a token of its own whose logits predict what follows the prompt."""
    n = min(len(s) for s in seqs) - 1
    first = seqs[0]
    k = 0
    while k < n and all(s[k] == first[k] for s in seqs):
        k += 1
    return k


def encode_prompts(model, prompts: Sequence[Sequence[int]], pad_id: int, device=None,
                   min_shared: int = MIN_SHARED_PREFIX):
    """``(output, attn)``: the prompts' forward with ``use_cache`` (``logits_to_keep=1``: every
    row's last column is its prompt's last token) and the ``[U, cache length]`` mask of the
    cache's real columns, the layout :func:`completion_logprobs_shared` continues from.

    When the prompts share a prefix of at least ``min_shared`` tokens, it is encoded once (one
    row) and its cache repeated for every prompt (an index: differentiable, so each prompt's
    gradient reaches the shared activations); each prompt's own tokens then continue it,
    left-padded *after* the prefix, positions continuing from it. Columns: ``[prefix | pads |
    suffix]``. Same logprobs as encoding each prompt in full, at ``P + U * (L - P)`` tokens
    instead of ``U * L``."""
    P = common_prefix_len(prompts) if len(prompts) > 1 and min_shared else 0
    if not min_shared or P < min_shared:
        ids, attn, pos = left_pad(prompts, pad_id, device)
        return model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1), attn
    head = torch.tensor([list(prompts[0][:P])], dtype=torch.long, device=device)
    cache = model(input_ids=head, use_cache=True, logits_to_keep=1).past_key_values
    cache.batch_select_indices(torch.zeros(len(prompts), dtype=torch.long, device=device))
    ids, sattn, spos = left_pad([p[P:] for p in prompts], pad_id, device)
    attn = torch.cat([torch.ones((len(prompts), P), dtype=sattn.dtype, device=device), sattn], dim=1)
    out = model(input_ids=ids, attention_mask=attn, position_ids=spos + P, past_key_values=cache, use_cache=True,
                logits_to_keep=1)
    return out, attn


def pack_sequences(
    prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], pad_id: int
) -> PackedBatch:
    """Concatenate each prompt with its completion and right-pad to the longest.

    Position ids count from 0 at the first prompt token, which is what HF ``generate``
    uses for left-padded batches, so logits match those seen during sampling.
    """
    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions")
    lengths = [len(p) + len(c) for p, c in zip(prompt_ids, completion_ids)]
    L = max(lengths)
    B = len(lengths)
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)
    attn = torch.zeros((B, L), dtype=torch.long)
    loss_mask = torch.zeros((B, max(L - 1, 1)), dtype=torch.float32)
    for b, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        seq = list(p) + list(c)
        input_ids[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attn[b, : len(seq)] = 1
        if c:
            loss_mask[b, len(p) - 1 : len(p) - 1 + len(c)] = 1.0
    position_ids = torch.arange(L).unsqueeze(0).expand(B, L).contiguous()
    return PackedBatch(input_ids, attn, position_ids, loss_mask)


def token_logprobs(
    model, batch: PackedBatch, temperature: float = 1.0, with_entropy: bool = False, entropy_grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token ``log p(x_{t+1} | x_{<=t})`` at ``temperature``, shape ``[B, L-1]``.

    Only positions from the first loss-mask position on are projected to the vocabulary
    (``logits_to_keep``): the prompt's ``[P, V]`` logits were most of the learner's memory
    (V = 49k for SmolLM2) and never enter the loss. Entries before that position are 0;
    callers read only ``loss_mask`` positions. Entropy of the same tempered distribution is
    returned when asked: detached (metrics only) unless ``entropy_grad`` (an entropy bonus
    in the loss needs its gradient).
    """
    L = batch.input_ids.shape[1]
    active = batch.loss_mask.any(dim=0).nonzero()
    first = int(active[0]) if len(active) else 0
    keep = L - first  # logits at positions first..L-1; the last one predicts nothing
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
        logits_to_keep=keep,
    )
    logits = out.logits[:, -keep:-1, :].float() / temperature
    logp_all = F.log_softmax(logits, dim=-1)
    labels = batch.input_ids[:, first + 1 :].unsqueeze(-1)
    B = batch.input_ids.shape[0]
    logp = logits.new_zeros((B, L - 1))
    logp[:, first:] = logp_all.gather(-1, labels).squeeze(-1)
    ent = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            ent = logits.new_zeros((B, L - 1))
            ent[:, first:] = -(logp_all.exp() * logp_all).sum(-1)
    return logp, ent
