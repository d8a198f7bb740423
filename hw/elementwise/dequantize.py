"""Dequantise: y = RN_fmt(acc * s_tok) (golden ``dequantize``) on the TLMM output stream."""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from tellme.hw.tlmm import out_layout

from .common import check_lanes, row_layout, row_scale_pipe
from .stream_fp import (
    MUL_LATENCY,
    ROUND_FP_STAGES,
    abs_signed,
    fmt_of,
    pipe_mul,
    round_fp,
    unpack32,
)

LATENCY = 1 + MUL_LATENCY + ROUND_FP_STAGES


class Dequantize(wiring.Component):
    """Accumulators to the stream format with the per-token dequantisation scale, ``lanes`` per
    cycle.

    Parameters
    ----------
    lanes : int
        Accumulators per beat: the element-wise lanes (the target's ``ew_lanes``), fed by the
        TLMM output buffer (outbuf.TlmmOutBuffer) that splits the TLMM's Q-wide beats; with
        ``lanes = Q`` it takes the TLMM's output directly.
    acc_width : int
        Signed accumulator width (the TLMM's ``acc_bits``; <= 29 bits in the golden contract).
    fmt : StreamFormat or None
        Output stream format (default: the contract's ``STREAM_FORMAT``).

    Members
    -------
    i_scale : In(stream.Signature(32))
        s_tok (FP32 bits, golden ``dequant_scale``), one per row, taken before the row's first
        beat.
    i : In(stream.Signature(tlmm.out_layout(q=lanes, acc_width)))
        ``{acc[lanes], last}`` as the TLMM emits them (a row = beats up to ``last``).
    o : Out(stream.Signature(row_layout(lanes, fmt)))
        y = RN_fmt(acc*s_tok): |acc| times the 24-bit significand (<= 53 bits, exact), one
        rounding; acc = 0 gives +0.

    Timing: LATENCY (7) cycles (|acc|, the product's partial products, their sum, the
    four-stage rounder), one beat per cycle, global stall on ``o``; a row's beats wait for
    its scale.
    """

    def __init__(self, *, lanes: int, acc_width: int, fmt=None):
        self._lanes = check_lanes(lanes)
        self._fmt = fmt = fmt_of(fmt)
        if not 2 <= acc_width <= 30:
            raise ValueError(f"acc_width must be in [2, 30], got {acc_width}")
        self._aw = acc_width
        super().__init__({"i_scale": In(stream.Signature(32)),
                          "i": In(stream.Signature(out_layout(q=lanes, acc_width=acc_width))),
                          "o": Out(stream.Signature(row_layout(lanes, fmt)))})

    def elaborate(self, platform):
        m = Module()
        scale, sp = row_scale_pipe(m, self.i_scale, self.i)
        sm, se = unpack32(scale)
        for lane in range(self._lanes):
            neg, mag = abs_signed(m, self.i.payload.acc[lane])
            prod = pipe_mul(sp, sp.reg(mag), sp.reg(sm))
            y = round_fp(sp, sp.delay(neg, 1 + MUL_LATENCY), prod,
                         sp.delay(se, 1 + MUL_LATENCY), self._fmt, stages=ROUND_FP_STAGES)
            m.d.comb += self.o.payload.data[lane].eq(y)
        m.d.comb += self.o.payload.last.eq(sp.delay(self.i.payload.last, LATENCY))
        sp.finish(self.o, LATENCY)
        return m
