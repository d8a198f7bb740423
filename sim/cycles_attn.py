"""Cycle and DDR-traffic model of the attention engine (hw/attention/engine.py).

``call_cycles`` is exact for the RTL when every input is offered without gaps and the output
is never stalled (checked by tests/rtl/tb_attn_engine.py): counted from the cycle the command
is accepted to the cycle the last result beat transfers, inclusive: 1 (command) + q beats +
per K/V segment (rows x bpr + DRAIN) + per lane (DIV + bpr x (1 + PER_ELEM x beat)), with
bpr = ceil(head_dim / beat) beats per row. The engine's pipeline is the same for every stream
format (FP16, FP24), so cycles do not depend on it; bytes do (``fmt.bits / 8`` per element).
"""

from __future__ import annotations

from tellme.spec.attention import Call, kv_schedule, layer_calls
from tellme.spec.numerics import StreamFormat, stream_format

DRAIN = 5            # cycles between K/V segments (input register + 4 pipeline stages)
DIV = 26             # 1/L per lane: init, 24 restoring steps, rounding
PER_ELEM = 3         # RN32(A), product + RN_fmt, emit


def call_cycles(n: int, nq: int, *, head_dim: int, beat: int, depth: int) -> int:
    """Cycles of one engine call with ``n`` keys and ``nq`` active lanes."""
    bpr = -(-head_dim // beat)
    segs = kv_schedule(n, depth)
    stream = sum(rows * bpr + DRAIN for _, _, rows in segs)
    return 1 + nq * bpr + stream + nq * (DIV + bpr * (1 + PER_ELEM * beat))


def kv_rows(n: int, depth: int) -> int:
    """K plus V rows one call reads from DDR."""
    return sum(rows for _, _, rows in kv_schedule(n, depth))


def calls_cycles(calls: list[Call], *, head_dim: int, beat: int, depth: int) -> int:
    return sum(call_cycles(c.n, len(c.lim), head_dim=head_dim, beat=beat, depth=depth)
               for c in calls)


def expected_cycles(kind: str, *, pos: int = 0, n_q: int = 1, start: int = 0, heads: int,
                    kv_heads: int, head_dim: int, lanes: int, beat: int, depth: int,
                    fmt: StreamFormat | None = None) -> dict:
    """Cycles and DDR bytes (K/V, q and o in the stream format ``fmt``, None: STREAM_FORMAT)
    of one layer's attention on one engine.

    kind ``decode``: token at position ``pos``; ``prefill``: ``n_q`` rows from ``start``.
    Returns {cycles, kv_bytes, q_bytes, out_bytes}.
    """
    eb = stream_format(fmt).bits // 8
    calls = layer_calls(kind, pos=pos, n_q=n_q, start=start, heads=heads, kv_heads=kv_heads,
                        lanes=lanes)
    cyc = calls_cycles(calls, head_dim=head_dim, beat=beat, depth=depth)
    kv = sum(kv_rows(c.n, depth) for c in calls) * head_dim * eb
    lanes_total = sum(len(c.lim) for c in calls)
    return {"cycles": cyc, "kv_bytes": kv, "q_bytes": lanes_total * head_dim * eb,
            "out_bytes": lanes_total * head_dim * eb}
