"""DDR side of the attention engine: the KV-cache reader that feeds ``AttentionEngine.i_kv``.

``KVReader`` turns one engine call (a KV head's K and V regions of :mod:`tellme.sim.kv_layout`
and the key count ``n``) into the row segments of :func:`kv_schedule` (K 0..n-1 for pass 1,
V of the last tile, then K and V of every earlier tile), and fetches each segment as one
forward address range with the AXI4 INCR burst master of :class:`tellme.hw.weight_stream.
WeightStreamer` (bursts capped at ``max_burst`` beats and split at 4 KiB pages, several in
flight, an R FIFO reserved before each request). The streamer's gearbox cuts the range into
engine beats of ``beat`` FP16 elements, whatever the AXI data width, so rows need not be
aligned to AXI beats.

Scope: FP16 KV rows whose run-time ``head_dim`` is a multiple of ``beat`` (row = ``bpr`` whole
engine beats, no padding needed). The int8 mode (codes + per-row FP16 scale) and the writer of
new rows are not built yet (docs/hw/attention.md, "DDR side").
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tellme.hw.weight_stream import WeightStreamer

from .schedule import kv_schedule

__all__ = ["KVReader", "read_command_layout", "reader_command", "reader_plan",
           "reader_beats"]


def read_command_layout(addr_width: int, ctx_bits: int) -> data.StructLayout:
    """``k_addr``/``v_addr``: byte address of row 0 of the KV head's K / V region;
    ``n``: keys of the call (1 .. 2**ctx_bits - 1); ``bpr``: engine beats per row
    (run-time head_dim / beat)."""
    return data.StructLayout({
        "k_addr": unsigned(addr_width),
        "v_addr": unsigned(addr_width),
        "n": unsigned(ctx_bits + 1),
        "bpr": unsigned(8),
    })


def reader_command(layout, layer: int, head: int, n: int, beat: int) -> dict:
    """The reader command for one call over ``layout`` (a :class:`tellme.sim.kv_layout.KVLayout`)."""
    if layout.dtype != "fp16":
        raise ValueError(f"KVReader reads FP16 KV only, layout dtype is {layout.dtype!r}")
    if layout.head_dim % beat:
        raise ValueError(f"head_dim {layout.head_dim} is not a multiple of the engine beat {beat}")
    if not 1 <= n <= layout.max_ctx:
        raise ValueError(f"n = {n} keys outside 1..max_ctx {layout.max_ctx}")
    return dict(k_addr=layout.row_addr(layer, "K", head, 0),
                v_addr=layout.row_addr(layer, "V", head, 0),
                n=n, bpr=layout.head_dim // beat)


def reader_plan(cmd: dict, *, depth: int, beat: int, data_width: int,
                max_burst: int) -> list[tuple[int, int]]:
    """Reference list of the (byte address, beats) bursts the reader issues for ``cmd``."""
    out = []
    for kind, first, rows in kv_schedule(cmd["n"], depth):
        base = cmd["k_addr"] if kind == "K" else cmd["v_addr"]
        out += _plan(base, first * cmd["bpr"], rows * cmd["bpr"], 16 * beat, data_width,
                     max_burst)
    return out


def _plan(addr, first, count, vb, dw, max_burst):
    # stream_plan with a vector of vb bits (stream_plan itself assumes 5*t-bit code vectors)
    nbytes = dw // 8
    start_bit = addr * 8 + first * vb
    a0 = (start_bit // dw) * nbytes
    beats = -(-(start_bit % dw + count * vb) // dw) if count else 0
    out, cur = [], a0
    while beats:
        n = min(beats, max_burst, (4096 - cur % 4096) // nbytes)
        out.append((cur, n))
        cur += n * nbytes
        beats -= n
    return out


def reader_beats(rows_k, rows_v, n: int, depth: int, beat: int) -> list[list[int]]:
    """The ``i_kv`` beats of one call: ``rows_k``/``rows_v`` are [n, head_dim] uint16 (FP16 bit
    patterns); each row is cut into head_dim / beat beats of ``beat`` elements."""
    out = []
    for kind, first, rows in kv_schedule(n, depth):
        src = rows_k if kind == "K" else rows_v
        for r in range(first, first + rows):
            row = [int(x) for x in src[r]]
            out += [row[i:i + beat] for i in range(0, len(row), beat)]
    return out


class KVReader(wiring.Component):
    """AXI4 KV-cache reader: one command per engine call -> the ``i_kv`` beats of the call.

    Parameters: ``beat`` (FP16 per engine beat, = the engine's), ``depth`` (score tile, = the
    engine's; power of two), ``max_head_dim`` (largest head_dim, multiple of ``beat``),
    ``ctx_bits`` (n <= 2**ctx_bits - 1), ``data_width`` (AXI, 128 or 256), ``addr_width``,
    ``max_burst``, ``max_outstanding`` (passed to the burst master).

    Ports
    -----
    i_cmd : In(stream read_command_layout)  accepted when idle (``busy`` low).
    o     : Out(stream ArrayLayout(unsigned(16), beat))  connect to ``AttentionEngine.i_kv``:
            the rows of ``kv_schedule(n, depth)``, ``bpr`` beats each, element 0 in the low bits.
    busy  : Out(1)  from acceptance until the last beat of the call has left.
    done  : Out(1)  one-cycle pulse after the last beat of the call.
    error : Out(1)  sticky: an R beat came back with a non-OKAY response.
    m_axi_ar* / m_axi_r*  AXI4 read channels (cocotbext-axi ``AxiReadBus.from_prefix(dut,
            "m_axi")``), INCR bursts only, ids 0, in-order data.

    Timing: one segment command to the burst master per cycle once it takes commands; the
    master requests the next segment's bursts while the gearbox still emits the previous one,
    so segments follow each other without exposing the read latency. Throughput: one engine
    beat per cycle at most, bounded by ``data_width`` bits per cycle of memory data.
    Backpressure: ``o.ready`` low stalls only the gearbox; the R FIFO absorbs the bursts in
    flight (``m_axi_rready`` stays high).
    """

    def __init__(self, *, beat: int = 4, depth: int = 8, max_head_dim: int = 16,
                 ctx_bits: int = 12, data_width: int = 128, addr_width: int = 40,
                 max_burst: int = 16, max_outstanding: int = 4):
        if data_width not in (128, 256):
            raise ValueError(f"KVReader data_width must be 128 or 256, not {data_width!r}")
        if depth < 1 or depth & (depth - 1):
            raise ValueError(f"score-buffer depth {depth} must be a power of two")
        if max_head_dim % beat:
            raise ValueError(f"max_head_dim {max_head_dim} is not a multiple of beat {beat}")
        if max_head_dim // beat > 255:
            raise ValueError(f"max_head_dim / beat = {max_head_dim // beat} > 255 beats per row")
        self.beat, self.depth, self.ctx_bits = beat, depth, ctx_bits
        self.max_head_dim, self.data_width, self.addr_width = max_head_dim, data_width, addr_width
        self.max_burst, self.max_outstanding = max_burst, max_outstanding
        self._cw = ctx_bits + 1 + (max_head_dim // beat).bit_length()
        self._streamer = WeightStreamer(
            t=1, lanes=1, vector_bits=16 * beat, data_width=data_width, addr_width=addr_width,
            max_burst=max_burst, max_outstanding=max_outstanding, count_width=self._cw)
        sig = {
            "i_cmd": In(stream.Signature(read_command_layout(addr_width, ctx_bits))),
            "o": Out(stream.Signature(data.ArrayLayout(unsigned(16), beat))),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(1),
        }
        for name, member in self._streamer.signature.members.items():
            if name.startswith("m_axi_"):
                sig[name] = Out(member.shape) if member.flow == Out else In(member.shape)
        super().__init__(sig)

    def elaborate(self, platform):
        m = Module()
        m.submodules.burst = ws = self._streamer
        D, CB = self.depth, self.ctx_bits
        log2d = D.bit_length() - 1

        for name in self.signature.members:
            if name.startswith("m_axi_"):
                if self.signature.members[name].flow == Out:
                    m.d.comb += getattr(self, name).eq(getattr(ws, name))
                else:
                    m.d.comb += getattr(ws, name).eq(getattr(self, name))

        # ---- call registers and segment sequencer (kv_schedule in hardware)
        k_addr = Signal(self.addr_width)
        v_addr = Signal(self.addr_width)
        n = Signal(CB + 1)
        bpr = Signal(8)
        last = Signal(CB + 1)           # first key of the last tile
        t = Signal(CB + 1)              # current earlier tile
        phase = Signal(range(4))        # 0: K[0,n)  1: V[last,n)  2: K tile t  3: V tile t
        active = Signal()

        accept = Signal()
        m.d.comb += [
            self.i_cmd.ready.eq(~self.busy),
            accept.eq(self.i_cmd.valid & self.i_cmd.ready),
        ]
        with m.If(accept):
            c = self.i_cmd.payload
            m.d.sync += [k_addr.eq(c.k_addr), v_addr.eq(c.v_addr), n.eq(c.n), bpr.eq(c.bpr),
                         last.eq(((c.n - 1) >> log2d) << log2d), t.eq(0), phase.eq(0),
                         active.eq(c.n != 0)]

        row = Signal(CB + 1)
        rows = Signal(CB + 1)
        with m.Switch(phase):
            with m.Case(0):
                m.d.comb += [row.eq(0), rows.eq(n)]
            with m.Case(1):
                m.d.comb += [row.eq(last), rows.eq(n - last)]
            with m.Default():
                m.d.comb += [row.eq(t), rows.eq(D)]
        scmd = ws.i_cmd.payload
        m.d.comb += [
            ws.i_cmd.valid.eq(active),
            scmd.addr.eq(Mux(phase[0], v_addr, k_addr)),     # phases 1, 3 are V
            scmd.first.eq(row * bpr),
            scmd.count.eq(rows * bpr),
        ]
        with m.If(ws.i_cmd.valid & ws.i_cmd.ready):
            with m.Switch(phase):
                with m.Case(0):
                    m.d.sync += phase.eq(1)
                with m.Case(1):
                    m.d.sync += phase.eq(2)
                    with m.If(last == 0):
                        m.d.sync += active.eq(0)
                with m.Case(2):
                    m.d.sync += phase.eq(3)
                with m.Case(3):
                    m.d.sync += [phase.eq(2), t.eq(t + D)]
                    with m.If(t + D == last):
                        m.d.sync += active.eq(0)

        # ---- beats out; busy until the burst master has emitted everything
        m.d.comb += [
            self.o.payload.as_value().eq(ws.o.payload.vectors[0]),
            self.o.valid.eq(ws.o.valid),
            ws.o.ready.eq(self.o.ready),
            self.busy.eq(active | ws.busy),
            self.error.eq(ws.error),
        ]
        busy_q = Signal()
        m.d.sync += busy_q.eq(self.busy)
        m.d.comb += self.done.eq(busy_q & ~self.busy)
        return m
