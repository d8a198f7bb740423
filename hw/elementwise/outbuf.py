"""TLMM output buffer: the second accumulator bank between the TLMM's Q-wide output burst and
the ``lanes``-wide element-wise streams (a FIFO of Q-wide beats with a width-down gearbox)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from tellme.hw.tlmm import out_layout

from .common import check_lanes

LATENCY = 2     # input transfer edge -> first output sub-beat transfer edge (stall-free)


class TlmmOutBuffer(wiring.Component):
    """Buffer of TLMM output beats drained ``lanes`` accumulators per cycle.

    The TLMM emits a token's ``nbt`` column blocks back to back during its last K block's
    sweep (Q accumulators per cycle), then nothing for the next ``kb - 1`` sweeps: its burst is
    Q per cycle, its average Q/kb. This buffer stores whole Q-wide beats in one block RAM
    (``depth`` words of ``Q*acc_width + 1`` bits) and emits each as ``Q/lanes`` beats of
    ``lanes`` accumulators, so a ``lanes``-wide dequantiser follows the TLMM at its average rate.
    With ``depth = 2*nbt_max`` (two tiles: a double buffer) the TLMM never waits while one
    token's burst drains as long as ``kb >= Q/lanes`` (every BitNet linear: kb >= 19 at
    kv260's 3T = 84, Q/lanes = 8); `outbuf_run` in sim/cycles_ew.py is its cycle model.
    The output is the input, reordered only by width (golden: identity).

    Parameters
    ----------
    q : int
        Accumulators per input beat (the TLMM's Q).
    lanes : int
        Accumulators per output beat (divides ``q``).
    acc_width : int
        Signed accumulator width.
    depth : int
        Q-wide beats held (>= 2).

    Members
    -------
    i : In(stream.Signature(tlmm.out_layout(q, acc_width)))
        The TLMM's ``{acc[q], last}``.
    o : Out(stream.Signature(tlmm.out_layout(lanes, acc_width)))
        Sub-beat k of input beat b carries ``acc[k*lanes:(k+1)*lanes]``; ``last`` on the final
        sub-beat of a beat with ``last``.

    Timing: ``i.ready`` = not full (a register: no combinational path from ``o.ready``);
    stall-free, the first output sub-beat transfers LATENCY (2) edges after the first input
    transfer, then one sub-beat per cycle with no bubble between beats (the RAM's read
    register is the output word).
    """

    def __init__(self, *, q: int, lanes: int, acc_width: int, depth: int):
        check_lanes(q, "q")
        check_lanes(lanes)
        if q % lanes:
            raise ValueError(f"lanes={lanes} must divide q={q}")
        if not isinstance(depth, int) or depth < 2:
            raise ValueError(f"depth must be an integer >= 2, got {depth!r}")
        self._q, self._lanes, self._aw, self._depth = q, lanes, acc_width, depth
        super().__init__({
            "i": In(stream.Signature(out_layout(q=q, acc_width=acc_width))),
            "o": Out(stream.Signature(out_layout(q=lanes, acc_width=acc_width))),
        })

    def elaborate(self, platform):
        m = Module()
        Q, L, AW, D = self._q, self._lanes, self._aw, self._depth
        R = Q // L
        W = Q * AW + 1
        m.submodules.mem = mem = memory.Memory(shape=W, depth=D, init=[])
        wr = mem.write_port()
        rd = mem.read_port(domain="sync")

        wptr = Signal(range(D))
        rptr = Signal(range(D))
        level = Signal(range(D + 1))     # words written and not yet read into rd.data
        dv = Signal()                    # rd.data holds a word being emitted
        k = Signal(range(R))             # its sub-beat

        w_fire = Signal()
        m.d.comb += [self.i.ready.eq(level != D), w_fire.eq(self.i.valid & self.i.ready),
                     wr.addr.eq(wptr), wr.data.eq(self.i.payload.as_value()),
                     wr.en.eq(w_fire)]

        o_fire = Signal()
        done = Signal()                  # the word in rd.data leaves this cycle
        m.d.comb += [self.o.valid.eq(dv), o_fire.eq(self.o.valid & self.o.ready),
                     done.eq(o_fire & (k == R - 1))]
        load = Signal()
        m.d.comb += [load.eq((level != 0) & (~dv | done)), rd.addr.eq(rptr), rd.en.eq(load)]

        word = rd.data
        m.d.comb += [
            self.o.payload.acc.as_value().eq(
                word.word_select(k, L * AW) if R > 1 else word[:Q * AW]),
            self.o.payload.last.eq(word[Q * AW] & (k == R - 1)),
        ]

        def inc(p):
            return Mux(p == D - 1, 0, p + 1)

        with m.If(w_fire):
            m.d.sync += wptr.eq(inc(wptr))
        with m.If(load):
            m.d.sync += [rptr.eq(inc(rptr)), dv.eq(1)]
        with m.Elif(done):
            m.d.sync += dv.eq(0)
        with m.If(o_fire):
            m.d.sync += k.eq(Mux(k == R - 1, 0, k + 1))
        m.d.sync += level.eq(level + w_fire - load)
        return m
