"""Cycle model of the integer attention engine (hw/attention/int_engine.py).

Exact for the RTL when every input is offered without gaps and the output is never stalled
(asserted by tests/rtl/tb_attn_int.py). A call has two parts that overlap across calls:

* front (command to hand-off): 1 (command) + nq * bpr (q load) + nq * (1 + 2 * bpr) (q
  quantiser) + per K/V segment of ``kv_schedule``: rows * bpr + DRAIN;
* finish (one lane after the other): DIV (1/L) + head_dim (normaliser, one output per cycle)
  + NEXT, on the other accumulator bank, while the next call's front runs.

The hand-off waits for the previous call's finish; the next command is taken the cycle after
the hand-off. :func:`calls_cycles` runs that recurrence over a list of calls (from the first
command to the last output, inclusive); :func:`call_cycles` is one call alone.
``layer_cycles`` gives one layer's attention (decode or prefill) for the rate analysis:
``engines`` independent engines (MHA lanes across heads: one head per engine) take the calls
round-robin.
"""

from __future__ import annotations

from tellme.spec.attention import decode_calls, kv_schedule, prefill_calls

DRAIN = 11           # cycles between K/V segments (input register + stages A..J)
DIV = 26             # 1/L per lane: init, 24 restoring steps, rounding
NEXT = 2             # normaliser drain between lanes
TAIL = 3             # last issue -> last output (N1, N2, output register)


def front_cycles(n: int, nq: int, *, head_dim: int, beat: int, depth: int) -> int:
    """Command accept to hand-off (exclusive) of one call."""
    bpr = -(-head_dim // beat)
    stream = sum(rows * bpr + DRAIN for _, _, rows in kv_schedule(n, depth))
    return 1 + nq * bpr + nq * (1 + 2 * bpr) + stream


def calls_cycles(calls, *, head_dim: int, beat: int, depth: int) -> int:
    """Cycles of back-to-back calls [(n, nq), ...]: first command to last output."""
    bpr = -(-head_dim // beat)
    lane = DIV + bpr * beat + NEXT
    c, xfree, last = 0, 0, 0
    for n, nq in calls:
        h = max(c + front_cycles(n, nq, head_dim=head_dim, beat=beat, depth=depth), xfree)
        xfree = h + 1 + nq * lane
        last = xfree - NEXT - 1 + TAIL
        c = h + 1
    return last + 1


def call_cycles(n: int, nq: int, *, head_dim: int, beat: int, depth: int) -> int:
    """Cycles of one engine call alone (command to last output, inclusive)."""
    return calls_cycles([(n, nq)], head_dim=head_dim, beat=beat, depth=depth)


def layer_cycles(kind: str, *, pos: int = 0, n_q: int = 1, start: int = 0, heads: int,
                 kv_heads: int, head_dim: int, lanes: int, beat: int, depth: int,
                 engines: int = 1) -> int:
    """Cycles of one layer's attention on ``engines`` engines (calls dealt round-robin, each
    engine's calls back to back; the busiest engine)."""
    if kind == "decode":
        calls = decode_calls(pos, heads, kv_heads, lanes)
    elif kind == "prefill":
        calls = prefill_calls(n_q, start, heads, kv_heads, lanes)
    else:
        raise ValueError(f"kind must be 'decode' or 'prefill', got {kind!r}")
    per = [[] for _ in range(engines)]
    for i, c in enumerate(calls):
        per[i % engines].append((c.n, len(c.lim)))
    return max(calls_cycles(p, head_dim=head_dim, beat=beat, depth=depth) for p in per if p)
