"""Call plans of the attention engine (pure Python: used by the sequencer model, the cycle and
traffic models and the testbenches).

One engine call = one KV head x up to ``lanes`` query lanes. A call streams the K/V rows of
:func:`kv_schedule` (K and V of one KV head are contiguous in DDR, docs/hw/attention.md), so the
K/V of a head are fetched once per call and shared by every lane of the call:

* decode: lanes = the ``group`` query heads of the KV head (GQA without re-fetching);
* prefill: lanes = ``n_pe`` query rows x ``group`` heads, ``n_pe = lanes // group``; a block of
  rows at positions p0..p1 reads only keys 0..p1 (causal half skipped, forward bursts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Fixed-point points of the attention arithmetic (docs/numerics.md §4); the engine and the golden
# functions both read them from here.
QK_FRAC = 20                     # QK^T products rounded to LSB 2**-20
SCORE_SCALE_FRAC = 18            # score scale constant C = RN(log2(e)/sqrt(hd) * 2**18)
SCORE_SAT = 2 ** 44 - 1          # raw score saturation (|q.k| < 2**24)
SV_FRAC = 24                     # S.V terms rounded to LSB 2**-24
LM_FRAC = 16                     # LM-head products rounded to LSB 2**-16
MAX_KEYS = 2 ** 20               # S.V accumulator bound (terms < 2**40)


def score_scale(head_dim: int) -> int:
    """C = RN(log2(e) / sqrt(head_dim) * 2**18): the host-set integer that turns raw scores into
    base-2 logits (softmax(x/sqrt(hd)) = 2**(x*log2(e)/sqrt(hd)) normalised)."""
    # log2(e) as a float64 literal (no libm); sqrt is correctly rounded (IEEE)
    return round(1.4426950408889634 / math.sqrt(head_dim) * 2 ** SCORE_SCALE_FRAC)


def kv_schedule(n: int, depth: int) -> list[tuple[str, int, int]]:
    """The K/V row segments one call consumes: [(kind 'K'|'V', first row, row count), ...].

    pass 1: K[0, n); pass 2: V of the last tile (its scores are still on chip), then for every
    earlier tile K (rebuild its scores) and V. ``depth`` is the score-buffer tile.
    """
    if n < 1:
        raise ValueError("attention needs at least one key")
    if depth < 1:
        raise ValueError("score-buffer depth must be >= 1")
    last = (n - 1) // depth * depth
    segs = [("K", 0, n), ("V", last, n - last)]
    for t in range(0, last, depth):
        segs += [("K", t, depth), ("V", t, depth)]
    return segs


@dataclass(frozen=True)
class Call:
    """One engine call: KV head ``kv``; lane i serves (query row ``rows[i]``, head
    ``heads[i]``) and sees keys 0..``lim[i]``; ``n`` = keys streamed = max(lim) + 1."""
    kv: int
    rows: tuple[int, ...]
    heads: tuple[int, ...]
    lim: tuple[int, ...]

    @property
    def n(self) -> int:
        return max(self.lim) + 1


def _check(heads: int, kv_heads: int, lanes: int) -> int:
    if heads % kv_heads:
        raise ValueError(f"heads {heads} not a multiple of kv_heads {kv_heads}")
    group = heads // kv_heads
    if lanes < group:
        raise ValueError(f"engine has {lanes} lanes < GQA group {group}")
    return group


def decode_calls(pos: int, heads: int, kv_heads: int, lanes: int) -> list[Call]:
    """Decode of the token at position ``pos`` (keys 0..pos): one call per KV head."""
    group = _check(heads, kv_heads, lanes)
    return [Call(kv, (0,) * group, tuple(range(kv * group, (kv + 1) * group)), (pos,) * group)
            for kv in range(kv_heads)]


def prefill_calls(n_q: int, start: int, heads: int, kv_heads: int, lanes: int) -> list[Call]:
    """Prefill of query rows 0..n_q-1 at positions start..start+n_q-1: blocks of n_pe rows
    (the last block may be partial), one call per (block, KV head)."""
    group = _check(heads, kv_heads, lanes)
    n_pe = lanes // group
    calls = []
    for r0 in range(0, n_q, n_pe):
        rows = range(r0, min(r0 + n_pe, n_q))
        for kv in range(kv_heads):
            rr = tuple(r for r in rows for _ in range(group))
            hh = tuple(kv * group + g for _ in rows for g in range(group))
            calls.append(Call(kv, rr, hh, tuple(start + r for r in rr)))
    return calls


def layer_calls(kind: str, *, pos: int = 0, n_q: int = 1, start: int = 0, heads: int,
                kv_heads: int, lanes: int) -> list[Call]:
    """One layer's calls: ``decode`` of the token at ``pos`` or ``prefill`` of ``n_q`` rows from
    ``start`` (the engines' cycle models take this)."""
    if kind == "decode":
        return decode_calls(pos, heads, kv_heads, lanes)
    if kind == "prefill":
        return prefill_calls(n_q, start, heads, kv_heads, lanes)
    raise ValueError(f"kind must be 'decode' or 'prefill', got {kind!r}")
