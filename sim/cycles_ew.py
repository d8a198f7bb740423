"""Cycle models (``expected_cycles``) of the element-wise blocks (tellme.hw.elementwise).

Stall-free: inputs are valid whenever a block asks, outputs always ready. Counts are clock
edges from the edge that accepts the first input beat of a block's ``i`` (or ``i_x``/
``i_gate``) stream to the edge that transfers the last output beat; the cocotb tests
(tests/rtl/tb_ew.py) assert measured counts equal to these.

* Per-element pipelines (residual, gated act, RoPE): ``beats - 1 + LATENCY``.
* Dequantise / quantise: a row's beats wait for its scale (one ``i_scale`` beat per row, taken
  when the previous row's last beat has entered): one bubble per row; quantise adds the
  repacker (a cycle-exact simulation of its accept-or-emit rule is below).
* Scalar unit: normalisation (16-bit or 1-bit steps, both operands in parallel) + one cycle per
  quotient bit (26, or 51/52 for a square root) + 26 square-root steps + fixed overhead.
* RMSNorm: pass 1 (n/lanes) + drain/start (``norm_start``, 7) + rsqrt + pass 2 (n/lanes) +
  EMIT_LATENCY.
* TLMM output buffer ("ob"): a FIFO of Q-wide beats drained ``lanes`` per cycle:
  ``beats * Q/lanes - 1 + outbuf.LATENCY`` stall-free; ``outbuf_run`` simulates it cycle by
  cycle for any arrival pattern and backpressure (the TLMM's bursts: ``tlmm_burst_arrivals``).

The stream format (``fmt``, a ``StreamFormat``; None: the contract's STREAM_FORMAT) matters
for RMSNorm (the rsqrt operands, accumulator width and exponent 2F) and the token scale (the
amax significand); the pipeline latencies are the same for every format.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

SCALAR_FIXED = 4          # accept->NORM, DIV->SQRT_OR_ROUND, ROUND, OUT
SQRT_EXTRA = 27           # 26 square-root steps + SQRT_DONE


def norm_start() -> int:
    """Edges from the last pass-1 beat's acceptance to the scalar unit accepting the rsqrt:
    the square pipeline drains (rmsnorm.SQ_STAGES), then DRAIN (eps * n), SUM, RSQRT (7)."""
    from tellme.hw.elementwise.rmsnorm import SQ_STAGES

    return SQ_STAGES + 3


def _latency(block: str) -> int:
    from tellme.hw.elementwise import dequantize, gated_act, quantize, residual, rmsnorm, rope

    return {"res": residual.LATENCY, "ga": gated_act.LATENCY, "rope": rope.LATENCY,
            "dq": dequantize.LATENCY, "quant": quantize.LATENCY,
            "norm": rmsnorm.EMIT_LATENCY}[block]


def norm_shifts(x: int, width: int) -> tuple[int, int]:
    """(cycles, total shift) to bring x's top bit to ``width-1`` with 16-bit / 1-bit steps."""
    if x <= 0 or x >= 1 << width:
        raise ValueError(f"operand {x} not in (0, 2**{width})")
    cycles = shift = 0
    while not (x >> (width - 1)) & 1:
        step = 16 if x >> (width - 16) == 0 else 1
        x <<= step
        shift += step
        cycles += 1
    return cycles, shift


def scalar_cycles(num: int, den: int, exp: int, sqrt: bool, width: int) -> int:
    """Edges from the scalar unit accepting an operation to its result transfer."""
    cn, sn = norm_shifts(num, width)
    cd, sd = norm_shifts(den, width)
    e = exp - sn + sd
    bits = 51 + (e & 1) if sqrt else 26
    return max(cn, cd) + bits + SCALAR_FIXED + (SQRT_EXTRA if sqrt else 0)


def pipe_cycles(block: str, beats: int) -> int:
    """Residual ("res"), gated act ("ga"), RoPE ("rope"): stall-free stream of ``beats``."""
    return beats - 1 + _latency(block)


def _fmt(fmt):
    from tellme.spec.numerics import stream_format

    return stream_format(fmt)


def rsqrt_operands(x16_row: np.ndarray, eps, fmt=None) -> tuple[int, int]:
    """(num, den) the RMS-MAX unit hands the scalar unit: n and S + n*eps*2**2F (S the exact
    sum of squares in units 2**-2F, F = fmt.frac)."""
    from tellme.spec.numerics import sum_squares

    fmt = _fmt(fmt)
    x16_row = np.asarray(x16_row, dtype=fmt.dtype)
    n = x16_row.shape[-1]
    s = sum_squares(fmt, x16_row[None, :])[0]
    epsn = Fraction(float(np.float32(eps))) * n * 2 ** (2 * fmt.frac)
    if epsn.denominator != 1:
        raise ValueError(f"eps must be >= 2**{23 - 2 * fmt.frac}"
                         f" (n*eps*2**{2 * fmt.frac} an integer)")
    return n, s + int(epsn)


def rmsnorm_cycles(x16_rows, lanes: int, eps, fmt=None) -> int:
    """Rows back to back through RMSNormAbsmax: edges from the first row's first input beat
    to the last row's last output beat (each row starts one edge after the previous ends)."""
    from tellme.hw.elementwise.rmsnorm import acc_bits

    fmt = _fmt(fmt)
    total = 0
    for k, row in enumerate(x16_rows):
        n = len(row)
        beats = n // lanes
        num, den = rsqrt_operands(row, eps, fmt)
        c = scalar_cycles(num, den, 2 * fmt.frac, True, acc_bits(fmt))
        row_cycles = (beats - 1) + norm_start() + c + beats + _latency("norm")
        total += row_cycles + (1 if k else 0)
    return total


def token_scale_cycles(amax16: np.ndarray, ws, fmt=None) -> int:
    """TokenScale: edges from accepting amax to the transfer of {s_q, s_tok} (one token)."""
    from tellme.spec.numerics import QUANT_EPS

    fmt = _fmt(fmt)
    M = fmt.man
    bits = int(fmt.to_bits(np.asarray(amax16, dtype=fmt.dtype))) & ((1 << (fmt.bits - 1)) - 1)
    if Fraction(bits, 2 ** fmt.frac) < Fraction(float(QUANT_EPS)):
        dm = int(np.float32(QUANT_EPS).view(np.uint32)) & 0x7FFFFF | 0x800000
    else:
        dm = (bits & ((1 << M) - 1)) | ((1 << M) if bits >> M else 0)
    wm = int(np.float32(ws).view(np.uint32)) & 0x7FFFFF | 0x800000
    c1 = scalar_cycles(127, dm, 0, False, 48)
    c2 = scalar_cycles(dm * wm, 127, 0, False, 48)
    return 1 + c1 + 1 + c2


def scaled_rows_cycles(block: str, row_beats: list[int], *, lanes: int = 1,
                       out_lanes: int = 1) -> int:
    """Dequantise ("dq") or quantise ("quant", with the repacker: ``lanes`` in, ``out_lanes``
    out) over rows of ``row_beats`` beats, scales always available: cycle-exact simulation of
    the scale handshake, the global-stall pipeline and the repacker's accept-or-emit rule."""
    lat = _latency(block)
    beats = [(k == b - 1) for b in row_beats for k in range(b)]
    n_scales = len(row_beats)
    pipe = [None] * lat                  # stage contents: None or the beat's `last`
    have = False
    count, flush = 0, False
    bi = si = 0
    edge = 0
    first = last_out = None
    pending_out = sum(-(-b * lanes // out_lanes) for b in row_beats) if block == "quant" \
        else len(beats)
    while pending_out:
        edge += 1
        tail = pipe[-1]
        if block == "quant":
            o_valid = count >= out_lanes or (flush and count > 0)
            rp_ready = not o_valid and not flush
            stall = tail is not None and not rp_ready
            o_fire = o_valid
            rp_fire = tail is not None and rp_ready
        else:
            stall = False
            o_fire = tail is not None
            rp_fire = False
        en = not stall
        fire_scale = not have and si < n_scales
        fire_in = have and bi < len(beats) and en
        if fire_in and first is None:
            first = edge
        if o_fire:
            pending_out -= 1
            last_out = edge
            if block == "quant":
                if count > out_lanes:
                    count -= out_lanes
                else:
                    count, flush = 0, False
        if rp_fire:
            count += lanes
            flush = tail
        if en:
            pipe = [beats[bi] if fire_in else None] + pipe[:-1]
        if fire_scale:
            have, si = True, si + 1
        if fire_in:
            if beats[bi]:
                have = False
            bi += 1
        if edge > 10 ** 7:
            raise RuntimeError("cycle model did not finish")
    return last_out - first


def dequantize_cycles(row_beats: list[int]) -> int:
    return scaled_rows_cycles("dq", row_beats)


def quantize_cycles(row_beats: list[int], lanes: int, out_lanes: int) -> int:
    return scaled_rows_cycles("quant", row_beats, lanes=lanes, out_lanes=out_lanes)


def outbuf_cycles(beats: int, q: int, lanes: int) -> int:
    """TlmmOutBuffer, stall-free: edges from the first input transfer to the last output
    transfer of ``beats`` Q-wide beats (each leaves as q/lanes sub-beats, no bubbles)."""
    from tellme.hw.elementwise.outbuf import LATENCY

    return beats * (q // lanes) - 1 + LATENCY


def outbuf_run(arrivals, q: int, lanes: int, depth: int, ready=None,
               max_cycles: int = 10 ** 8) -> tuple[list[int], list[int]]:
    """Cycle-exact model of TlmmOutBuffer. Input beat j is offered from cycle ``arrivals[j]``
    (non-decreasing) until accepted; ``ready(c)`` says whether the sink takes a sub-beat in
    cycle c (None: always). Returns (accept cycle of each input beat, transfer cycle of each
    output sub-beat); a beat accepted in cycle c was offered ``c - arrivals[j]`` cycles."""
    r_per = q // lanes
    level = 0
    dv = False
    k = 0
    j = 0
    acc_c, out_c = [], []
    n_out = len(arrivals) * r_per
    c = 0
    while len(out_c) < n_out:
        w_fire = j < len(arrivals) and arrivals[j] <= c and level != depth
        o_fire = dv and (ready is None or ready(c))
        done = o_fire and k == r_per - 1
        load = level != 0 and (not dv or done)
        if w_fire:
            acc_c.append(c)
            j += 1
        if o_fire:
            out_c.append(c)
            k = 0 if k == r_per - 1 else k + 1
        level += int(w_fire) - int(load)
        dv = True if load else (False if done else dv)
        c += 1
        if c > max_cycles:
            raise RuntimeError("output buffer model did not finish")
    return acc_c, out_c


def tlmm_burst_arrivals(nbt: int, kb: int, n_tokens: int, table: str = "full") -> list[int]:
    """When the TLMM offers its output beats over one command, in steady state: token t's
    ``nbt`` column blocks back to back during its last K block's sweep, every K block taking
    ``ceil(cycles.steady_kb_cycles)`` cycles (= nbt for tiles of >= E + 2 column blocks)."""
    import math

    from .cycles import steady_kb_cycles

    sweep = math.ceil(steady_kb_cycles(table=table, nbt=nbt))
    return [(t * kb + kb - 1) * sweep + i for t in range(n_tokens) for i in range(nbt)]


def outbuf_wait(nbt: int, kb: int, n_tokens: int, q: int, lanes: int, depth: int,
                table: str = "full") -> int:
    """Cycles the TLMM's output beats wait on a full TlmmOutBuffer over ``n_tokens`` tokens of
    one tile drained at ``lanes`` per cycle (0: the engine never stalls on the drain)."""
    arr = tlmm_burst_arrivals(nbt, kb, n_tokens, table)
    acc, _ = outbuf_run(arr, q, lanes, depth)
    return sum(a - b for a, b in zip(acc, arr, strict=True))


def expected_cycles(block: str, **kw) -> int:
    """Dispatch by block name: ``res``/``ga``/``rope`` (beats), ``dq`` (row_beats), ``quant``
    (row_beats, lanes, out_lanes), ``norm`` (x16_rows, lanes, eps, [fmt]), ``ts`` (amax16, ws,
    [fmt]), ``ob`` (beats, q, lanes); x16_rows / amax16 hold values of the stream format ``fmt``."""
    if block in ("res", "ga", "rope"):
        return pipe_cycles(block, kw["beats"])
    if block == "dq":
        return dequantize_cycles(kw["row_beats"])
    if block == "quant":
        return quantize_cycles(kw["row_beats"], kw["lanes"], kw["out_lanes"])
    if block == "norm":
        return rmsnorm_cycles(kw["x16_rows"], kw["lanes"], kw["eps"], kw.get("fmt"))
    if block == "ts":
        return token_scale_cycles(kw["amax16"], kw["ws"], kw.get("fmt"))
    if block == "ob":
        return outbuf_cycles(kw["beats"], kw["q"], kw["lanes"])
    raise ValueError(f"unknown element-wise block {block!r}")
