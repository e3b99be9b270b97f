"""Which sequences share a micro-batch: the order that makes the forward pass smallest.

The tokens the model really processes depend on how a rank's sequences are split into its
``gas`` micro-batches. Two splits are useful, and which one is cheaper depends on the step:

- ``contiguous`` (rollout order): a group's completions sit together, so the shared-prompt
  path (:func:`softverify.learner.seqbatch.completion_logprobs_shared`) encodes each prompt once
  and packs its completions back to back (:func:`completion_rows`); the packed path pads
  every sequence to the micro-batch's longest.
- ``length``: sorted by completion length (then prompt, so equal prompts stay adjacent), so
  each micro-batch pads only to similar lengths; but a prompt may now be encoded in several
  micro-batches.

``fewest_tokens`` counts both (:func:`encoded_tokens`, padding included) and takes the
smaller. Any split into the same ``gas`` micro-batches gives the same loss and gradient:
every micro-batch loss is normalised by the step's global token and sequence counts and
the micro-batch gradients add up (exact up to float summation order).
"""
from __future__ import annotations

from typing import Literal, Sequence

Order = Literal["contiguous", "length", "fewest_tokens"]


def contiguous_split(n: int, parts: int) -> list[list[int]]:
    """``range(n)`` cut into ``parts`` contiguous near-equal pieces (sizes differ by at most
    one, larger first; some empty when n < parts)."""
    base, extra = divmod(n, parts)
    out, start = [], 0
    for r in range(parts):
        size = base + (1 if r < extra else 0)
        out.append(list(range(start, start + size)))
        start += size
    return out


def balanced_shards(costs: Sequence[float], unit: int, parts: int) -> list[list[int]]:
    """The step's samples dealt to ``parts`` learner ranks in whole units of ``unit``
    consecutive samples (a prompt's group: its prompt is then encoded once, on one rank),
    balancing the units' summed ``costs`` (tokens to encode): longest unit first, each to the
    least-loaded rank (ties: the lower rank). The ranks step in lockstep, so the step waits
    for the most loaded one; a rank's indices stay in rollout order. Any assignment gives the
    same loss and gradient (losses are normalised by the step's global counts)."""
    if unit < 1 or len(costs) % unit:
        raise ValueError(f"{len(costs)} samples are not whole units of {unit}")
    n_units = len(costs) // unit
    unit_cost = [sum(costs[u * unit: (u + 1) * unit]) for u in range(n_units)]
    load = [0.0] * parts
    owned: list[list[int]] = [[] for _ in range(parts)]
    for u in sorted(range(n_units), key=lambda u: (-unit_cost[u], u)):
        r = min(range(parts), key=lambda r: (load[r], r))
        load[r] += unit_cost[u]
        owned[r].append(u)
    return [[u * unit + j for u in sorted(us) for j in range(unit)] for us in owned]


def length_split(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                 parts: int) -> list[list[int]]:
    """The same piece sizes as :func:`contiguous_split`, filled in order of completion length
    (ties: by prompt, so a group's equal-length completions stay together)."""
    order = sorted(range(len(completions)), key=lambda i: (len(completions[i]), tuple(prompts[i]), i))
    return [sorted(order[k] for k in piece) for piece in contiguous_split(len(order), parts)]


def completion_rows(owner: Sequence[int], lengths: Sequence[int]) -> list[list[int]]:
    """Rows of the shared-prompt path's completion pass, padding-free: each row holds
    completions of one prompt (``owner[i]``) back to back, filled first-fit by decreasing
    length up to the longest completion's length, so no row is wider than the padded layout
    it replaces and there are never more rows than completions. Completions of length 0
    (nothing to encode) get no row. Returns sample indices per row, in row order."""
    if len(owner) != len(lengths):
        raise ValueError(f"{len(owner)} owners but {len(lengths)} lengths")
    cap = max(lengths, default=0)
    rows: list[list[int]] = []
    room: list[int] = []
    open_rows: dict[int, list[int]] = {}  # owner -> indices of its rows
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        if lengths[i] <= 0:
            continue
        mine = open_rows.setdefault(owner[i], [])
        r = next((r for r in mine if room[r] >= lengths[i]), None)
        if r is None:
            r = len(rows)
            rows.append([])
            room.append(cap)
            mine.append(r)
        rows[r].append(i)
        room[r] -= lengths[i]
    return rows


def token_counts(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                 split: Sequence[Sequence[int]], shared_prompt: bool) -> tuple[int, int]:
    """``(processed, real)``: token positions the forward passes of ``split`` process,
    padding included, and how many of them are not padding.

    Shared-prompt path: per micro-batch, its distinct prompts left-padded to the longest of
    them, then the completions' inputs (every token but the last, which predicts nothing)
    packed into :func:`completion_rows`, rows padded to the widest. Packed path: every
    ``prompt + completion`` right-padded to the longest."""
    processed = real = 0
    for idx in split:
        if not idx:
            continue
        if shared_prompt:
            uniq: dict[tuple, int] = {}
            owner = [uniq.setdefault(tuple(prompts[i]), len(uniq)) for i in idx]
            lens = [max(len(completions[i]) - 1, 0) for i in idx]
            rows = completion_rows(owner, lens)
            width = max((sum(lens[j] for j in r) for r in rows), default=0)
            processed += len(uniq) * max(len(p) for p in uniq) + len(rows) * width
            real += sum(len(p) for p in uniq) + sum(lens)
        else:
            processed += len(idx) * max(len(prompts[i]) + len(completions[i]) for i in idx)
            real += sum(len(prompts[i]) + len(completions[i]) for i in idx)
    return processed, real


def encoded_tokens(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                   split: Sequence[Sequence[int]], shared_prompt: bool) -> int:
    """Token positions the forward passes of ``split`` process, padding included (see
    :func:`token_counts`): what ``fewest_tokens`` minimises."""
    return token_counts(prompts, completions, split, shared_prompt)[0]


def plan_micro_batches(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], parts: int,
                       order: Order, shared_prompt: bool) -> list[list[int]]:
    """Exactly ``parts`` micro-batches (index lists) of near-equal size under ``order``."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    if order not in ("contiguous", "length", "fewest_tokens"):
        raise ValueError(f"micro-batch order {order!r}: expected 'contiguous', 'length' or 'fewest_tokens'")
    contiguous = contiguous_split(len(prompts), parts)
    if order == "contiguous":
        return contiguous
    by_length = length_split(prompts, completions, parts)
    if order == "length":
        return by_length
    return min((contiguous, by_length), key=lambda s: encoded_tokens(prompts, completions, s, shared_prompt))
