"""Quantise: q = clamp(RNE(h * s_q), -128, 127) (golden ``quantize``), repacked into the TLMM's
activation beats of 3*T int8."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .common import check_lanes, row_layout, row_scale_pipe
from .stream_fp import (
    MUL_LATENCY,
    ROUND_INT8_LATENCY,
    fmt_of,
    pipe_mul,
    round_int8,
    unpack,
    unpack32,
)

LATENCY = MUL_LATENCY + ROUND_INT8_LATENCY


def int8_row_layout(lanes: int) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(signed(8), lanes), "last": 1})


class Repack(wiring.Component):
    """Gearbox: rows of ``in_lanes`` int8 per beat -> beats of ``out_lanes`` int8; each row
    ends with a beat zero-padded to ``out_lanes`` (the TLMM's K padding).

    Members
    -------
    i : In(stream.Signature(int8_row_layout(in_lanes)))
    o : Out(stream.Signature(ArrayLayout(signed(8), out_lanes)))
        ceil(n / out_lanes) beats per row of n elements.

    Timing: a buffer of ``out_lanes + in_lanes - 1`` bytes; a cycle either accepts an input beat
    (while fewer than ``out_lanes`` bytes are held) or emits an output beat, so a row of n
    elements takes n/in_lanes + ceil(n/out_lanes) cycles.
    """

    def __init__(self, *, in_lanes: int, out_lanes: int):
        self._li, self._lo = check_lanes(in_lanes), check_lanes(out_lanes, "out_lanes")
        super().__init__({"i": In(stream.Signature(int8_row_layout(in_lanes))),
                          "o": Out(stream.Signature(data.ArrayLayout(signed(8), out_lanes)))})

    def elaborate(self, platform):
        m = Module()
        Li, Lo = self._li, self._lo
        B = Lo + Li - 1
        buf = [Signal(8, name=f"buf{b}") for b in range(B)]
        count = Signal(range(B + 1))
        flush = Signal()
        ovalid = (count >= Lo) | (flush & (count != 0))
        m.d.comb += [self.o.valid.eq(ovalid), self.i.ready.eq(~ovalid & ~flush)]
        for j in range(Lo):
            m.d.comb += self.o.payload[j].eq(buf[j])
        with m.If(self.o.valid & self.o.ready):
            for b in range(B):
                m.d.sync += buf[b].eq(buf[b + Lo] if b + Lo < B else 0)
            with m.If(count > Lo):
                m.d.sync += count.eq(count - Lo)
            with m.Else():
                m.d.sync += [count.eq(0), flush.eq(0)]
        with m.If(self.i.valid & self.i.ready):
            for b in range(B):
                sel = b - count
                with m.If((sel >= 0) & (sel < Li)):
                    m.d.sync += buf[b].eq(self.i.payload.data.as_value().word_select(
                        sel.as_unsigned()[:max(1, (Li - 1).bit_length())], 8))
            m.d.sync += [count.eq(count + Li), flush.eq(self.i.payload.last)]
        return m


class Quantize(wiring.Component):
    """Per-token int8 quantiser with the stream resize to the TLMM's activation beats.

    Parameters
    ----------
    lanes : int
        Stream elements per input beat.
    out_lanes : int
        int8 per output beat (3*T of the TLMM).
    fmt : StreamFormat or None
        Stream format of h (default: the contract's ``STREAM_FORMAT``).

    Members
    -------
    i_scale : In(stream.Signature(32))
        s_q (FP32 bits, golden ``quant_scale``), one per row, taken before the row's first beat.
    i : In(stream.Signature(row_layout(lanes, fmt)))
        h (stream bits), ``last`` on the row's final beat.
    o : Out(stream.Signature(ArrayLayout(signed(8), out_lanes)))
        q = clamp(RNE(h*s_q), -128, 127), element k of a row at lane k % out_lanes of beat
        k // out_lanes; the last beat of a row is zero-padded.

    Timing: the multiply/round pipeline (partial products, their sum, the three-stage int8
    rounder) has LATENCY (5) cycles at one beat per cycle; the
    repacker then limits a row of n to n/lanes + ceil(n/out_lanes) cycles (far above the
    TLMM's consumption of one activation beat per K block, >= 28 cycles at T=28).
    """

    def __init__(self, *, lanes: int, out_lanes: int, fmt=None):
        self._lanes = check_lanes(lanes)
        self._out_lanes = check_lanes(out_lanes, "out_lanes")
        self._fmt = fmt = fmt_of(fmt)
        super().__init__({"i_scale": In(stream.Signature(32)),
                          "i": In(stream.Signature(row_layout(lanes, fmt))),
                          "o": Out(stream.Signature(data.ArrayLayout(signed(8), out_lanes)))})

    def elaborate(self, platform):
        m = Module()
        L = self._lanes
        m.submodules.repack = rp = Repack(in_lanes=L, out_lanes=self._out_lanes)
        scale, sp = row_scale_pipe(m, self.i_scale, self.i)
        sm, se = unpack32(scale)
        se1 = sp.reg(se)
        for lane in range(L):
            h = self.i.payload.data[lane]
            _, sig, _ = unpack(h, self._fmt)
            prod = pipe_mul(sp, sig, sm)
            # the exponent from a registered copy (no logic shared with the DSP inputs)
            sign, _, sh = unpack(sp.reg(h), self._fmt)
            exp = sp.reg(sh - self._fmt.frac + se1)
            q = round_int8(sp, sp.reg(sign), prod, exp)
            m.d.comb += rp.i.payload.data[lane].eq(q)
        m.d.comb += rp.i.payload.last.eq(sp.delay(self.i.payload.last, LATENCY))
        sp.finish(rp.i, LATENCY)
        m.d.comb += [self.o.valid.eq(rp.o.valid), self.o.payload.eq(rp.o.payload),
                     rp.o.ready.eq(self.o.ready)]
        return m
