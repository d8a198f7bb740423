"""DDR side of the attention engine: the KV-cache reader that feeds ``AttentionEngine.i_kv``.

``KVReader`` turns one engine call (a KV head's K and V regions of :mod:`tellme.spec.kv_layout`
and the key count ``n``) into the row segments of :func:`kv_schedule` (K 0..n-1 for pass 1,
V of the last tile, then K and V of every earlier tile), and fetches each segment as one
forward address range with the AXI4 INCR burst master of :class:`tellme.hw.weight_stream.
WeightStreamer` (bursts capped at ``max_burst`` beats and split at 4 KiB pages, several in
flight, an R FIFO reserved before each request). The streamer's gearbox cuts the range into
engine beats of ``beat`` elements of ``fmt.bits`` bits (16 or 24), whatever the AXI data
width, so rows need not be aligned to AXI beats (an FP24 engine beat of 4 is 96 bits, of 8 is
192 bits: neither divides nor is a multiple of a 128-bit AXI beat).

``KVWriter`` stores the new K/V rows of a prefill block or a decode step (AXI4 INCR write
bursts, byte strobes for partial first/last beats, rows at any byte address);
``KVCacheDMA`` puts both on one AXI4 port.

The element format ``fmt`` is a :class:`~tellme.spec.numerics.StreamFormat` (None: the
contract's ``STREAM_FORMAT``); a layout's elements are ``fmt.bits // 8`` bytes each,
little-endian (:mod:`tellme.spec.kv_layout`).

Scope: run-time ``head_dim`` a multiple of ``beat`` (row = ``bpr`` whole engine beats, no
padding needed). ``KVReader(int8=True)`` reads an int8 cache (codes + per-row scale in the
stream format) into the engine's int8 beats; the writer stores stream-format rows only (an
int8 cache is written by ``KVQuantWriter``, hw/attention/kv_quant.py; docs/hw/attention.md,
"DDR side").
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tellme.hw.weight_stream import WeightStreamer, stream_plan
from tellme.spec.attention import kv_schedule
from tellme.spec.numerics import StreamFormat, stream_format

__all__ = ["KVReader", "KVWriter", "KVCacheDMA", "read_command_layout", "reader_command",
           "reader_plan", "scale_plan", "reader_beats", "reader_beats_int8",
           "write_command_layout", "writer_commands"]


def _format(fmt) -> StreamFormat:
    fmt = stream_format(fmt)
    if not isinstance(fmt, StreamFormat) or fmt.bits % 8:
        raise TypeError(f"fmt must be a StreamFormat of whole bytes (FP16, FP24), not {fmt!r}")
    return fmt


def _check_layout(layout, beat: int, who: str):
    if layout.dtype == "int8":
        raise ValueError(f"{who} handles KV rows in the stream format only, layout dtype is "
                         f"'int8' (int8 rows: KVQuantWriter, quant_writer_commands in "
                         f"hw/attention/kv_quant.py)")
    if layout.head_dim % beat:
        raise ValueError(f"head_dim {layout.head_dim} is not a multiple of the engine beat {beat}")


def read_command_layout(addr_width: int, ctx_bits: int, int8: bool = False
                        ) -> data.StructLayout:
    """``k_addr``/``v_addr``: byte address of row 0 of the KV head's K / V region;
    ``n``: keys of the call (1 .. 2**ctx_bits - 1); ``bpr``: engine beats per row
    (run-time head_dim / beat). int8 builds add ``ks_addr``/``vs_addr``: byte address of the
    scale of row 0 in the K / V scale region."""
    f = {"k_addr": unsigned(addr_width), "v_addr": unsigned(addr_width),
         "n": unsigned(ctx_bits + 1), "bpr": unsigned(8)}
    if int8:
        f.update(ks_addr=unsigned(addr_width), vs_addr=unsigned(addr_width))
    return data.StructLayout(f)


def reader_command(layout, layer: int, head: int, n: int, beat: int) -> dict:
    """The reader command for one call over ``layout`` (a :class:`~tellme.spec.kv_layout.
    KVLayout`): row 0 of the KV head's K and V regions (and scale regions for int8), ``n``
    keys, beats per row."""
    if layout.head_dim % beat:
        raise ValueError(f"head_dim {layout.head_dim} is not a multiple of the engine beat {beat}")
    if not 1 <= n <= layout.max_ctx:
        raise ValueError(f"n = {n} keys outside 1..max_ctx {layout.max_ctx}")
    cmd = dict(k_addr=layout.row_addr(layer, "K", head, 0),
               v_addr=layout.row_addr(layer, "V", head, 0),
               n=n, bpr=layout.head_dim // beat)
    if layout.dtype == "int8":
        cmd.update(ks_addr=layout.scale_addr(layer, "K", head, 0),
                   vs_addr=layout.scale_addr(layer, "V", head, 0))
    return cmd


def reader_plan(cmd: dict, *, depth: int, beat: int, data_width: int,
                max_burst: int, fmt: StreamFormat | None = None) -> list[tuple[int, int]]:
    """Reference list of the (byte address, beats) bursts the reader issues for ``cmd``
    (elements of ``fmt.bits`` bits). For an int8 command (with ``ks_addr``): the bursts of
    the code rows (id 0); :func:`scale_plan` gives those of the scales (id 1)."""
    vb = 8 * beat if "ks_addr" in cmd else _format(fmt).bits * beat
    out = []
    for kind, first, rows in kv_schedule(cmd["n"], depth):
        base = cmd["k_addr"] if kind == "K" else cmd["v_addr"]
        out += stream_plan(addr=base, first=first * cmd["bpr"], count=rows * cmd["bpr"],
                           lanes=1, vector_bits=vb, data_width=data_width,
                           max_burst=max_burst)
    return out


def scale_plan(cmd: dict, *, depth: int, data_width: int, max_burst: int,
               fmt: StreamFormat | None = None) -> list[tuple[int, int]]:
    """int8 command: the (byte address, beats) bursts of the row scales (``fmt``), one range
    per segment of :func:`kv_schedule`, in order."""
    out = []
    for kind, first, rows in kv_schedule(cmd["n"], depth):
        base = cmd["ks_addr"] if kind == "K" else cmd["vs_addr"]
        out += stream_plan(addr=base, first=first, count=rows, lanes=1,
                           vector_bits=_format(fmt).bits, data_width=data_width,
                           max_burst=max_burst)
    return out


def reader_beats(rows_k, rows_v, n: int, depth: int, beat: int) -> list[list[int]]:
    """The ``i_kv`` beats of one call: ``rows_k``/``rows_v`` are [n, head_dim] element bit
    patterns (``fmt.to_bits``); each row is cut into head_dim / beat beats of ``beat``
    elements."""
    out = []
    for kind, first, rows in kv_schedule(n, depth):
        src = rows_k if kind == "K" else rows_v
        for r in range(first, first + rows):
            row = [int(x) for x in src[r]]
            out += [row[i:i + beat] for i in range(0, len(row), beat)]
    return out


def reader_beats_int8(codes_k, scales_k, codes_v, scales_v, n: int, depth: int, beat: int,
                      fmt: StreamFormat | None = None) -> list[int]:
    """The ``i_kv`` beats of one int8 call as integers (the engine's int8 beat layout): codes
    ``[n, head_dim]`` int8, scales ``[n]`` bit patterns (``fmt.to_bits``); a beat holds
    ``beat`` codes (two's complement bytes, code 0 lowest) in bits [0, 8*beat) and its row's
    scale in the next ``fmt.bits`` bits."""
    fmt = _format(fmt)
    out = []
    for kind, first, rows in kv_schedule(n, depth):
        codes, scales = (codes_k, scales_k) if kind == "K" else (codes_v, scales_v)
        for r in range(first, first + rows):
            row = [int(x) & 0xFF for x in codes[r]]
            sc = int(scales[r]) << (8 * beat)
            for i in range(0, len(row), beat):
                out.append(sum(c << (8 * j) for j, c in enumerate(row[i:i + beat])) | sc)
    return out


class KVReader(wiring.Component):
    """AXI4 KV-cache reader: one command per engine call -> the ``i_kv`` beats of the call.

    Parameters: ``beat`` (elements per engine beat, = the engine's), ``fmt`` (element format,
    default the stream format), ``depth`` (score tile, = the engine's; power of two),
    ``max_head_dim`` (largest head_dim, multiple of ``beat``), ``ctx_bits`` (n <= 2**ctx_bits -
    1), ``data_width`` (AXI, 128 or 256), ``addr_width``, ``max_burst``, ``max_outstanding``
    (passed to the burst master), ``int8`` (build for an int8 KV cache: see below).

    int8 build: the rows are int8 codes (``head_dim`` bytes) and each row's scale (``fmt``)
    sits in the layout's scale region. A second burst master fetches the scales of each segment
    (one range per segment, AXI id 1; codes use id 0, R beats are routed by ``rid``, the two
    masters' AR requests alternate), and every output beat is the engine's int8 beat: ``beat``
    codes in bits [0, 8*beat), the row's scale in the next ``fmt.bits`` bits, zeros above
    (the engine's command must have ``int8`` set). Each row's scale is taken once, with the
    row's last beat.

    Ports
    -----
    i_cmd : In(stream read_command_layout)  accepted when idle (``busy`` low).
    o     : Out(stream ArrayLayout(unsigned(fmt.bits), beat))  connect to
            ``AttentionEngine.i_kv``:
            the rows of ``kv_schedule(n, depth)``, ``bpr`` beats each, element 0 in the low bits.
    busy  : Out(1)  from acceptance until the last beat of the call has left.
    done  : Out(1)  one-cycle pulse after the last beat of the call.
    error : Out(1)  sticky: an R beat came back with a non-OKAY response.
    m_axi_ar* / m_axi_r*  AXI4 read channels (cocotbext-axi ``AxiReadBus.from_prefix(dut,
            "m_axi")``), INCR bursts only, id 0 (int8 build: ids 0 and 1), in-order data per
            id.

    Timing: one segment command to the burst master per cycle once it takes commands; the
    master requests the next segment's bursts while the gearbox still emits the previous one,
    so segments follow each other without exposing the read latency. Throughput: one engine
    beat per cycle at most, bounded by ``data_width`` bits per cycle of memory data (an FP24
    beat of 8 on 128-bit AXI: two engine beats per three AXI beats).
    Backpressure: ``o.ready`` low stalls only the gearbox; the R FIFO absorbs the bursts in
    flight (``m_axi_rready`` stays high).
    """

    def __init__(self, *, beat: int = 4, depth: int = 8, max_head_dim: int = 16,
                 ctx_bits: int = 12, data_width: int = 128, addr_width: int = 40,
                 max_burst: int = 16, max_outstanding: int = 4,
                 fmt: StreamFormat | None = None, int8: bool = False):
        try:
            self._init(beat=beat, depth=depth, max_head_dim=max_head_dim, ctx_bits=ctx_bits,
                       data_width=data_width, addr_width=addr_width, max_burst=max_burst,
                       max_outstanding=max_outstanding, fmt=fmt, int8=int8)
        except (TypeError, ValueError):
            self._MustUse__silence = True      # not elaborated: do not warn about it
            raise

    def _init(self, *, beat: int = 4, depth: int = 8, max_head_dim: int = 16,
                 ctx_bits: int = 12, data_width: int = 128, addr_width: int = 40,
                 max_burst: int = 16, max_outstanding: int = 4, fmt=None, int8=False):
        self.fmt = fmt = _format(fmt)
        self.int8 = int8 = bool(int8)
        if int8 and 8 * beat + fmt.bits > fmt.bits * beat:
            raise ValueError(f"beat {beat}: {beat} int8 codes and a {fmt.name} scale do not fit "
                             f"one engine beat")
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
            t=1, lanes=1, vector_bits=(8 if int8 else fmt.bits) * beat, data_width=data_width,
            addr_width=addr_width, max_burst=max_burst, max_outstanding=max_outstanding,
            count_width=self._cw)
        # int8: the scales' burst master (a scale per row: short ranges, a small FIFO)
        self._scales = WeightStreamer(
            t=1, lanes=1, vector_bits=fmt.bits, data_width=data_width, addr_width=addr_width,
            max_burst=max_burst, max_outstanding=2, count_width=self._cw) if int8 else None
        sig = {
            "i_cmd": In(stream.Signature(read_command_layout(addr_width, ctx_bits, int8))),
            "o": Out(stream.Signature(data.ArrayLayout(unsigned(fmt.bits), beat))),
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
        ss = self._scales
        if ss is None:
            for name in self.signature.members:
                if name.startswith("m_axi_"):
                    if self.signature.members[name].flow == Out:
                        m.d.comb += getattr(self, name).eq(getattr(ws, name))
                    else:
                        m.d.comb += getattr(ws, name).eq(getattr(self, name))
        else:
            m.submodules.scales = ss
            self._share_port(m, ws, ss)

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
        ks_addr = Signal(self.addr_width)
        vs_addr = Signal(self.addr_width)
        with m.If(accept):
            c = self.i_cmd.payload
            m.d.sync += [k_addr.eq(c.k_addr), v_addr.eq(c.v_addr), n.eq(c.n), bpr.eq(c.bpr),
                         last.eq(((c.n - 1) >> log2d) << log2d), t.eq(0), phase.eq(0),
                         active.eq(c.n != 0)]
            if ss is not None:
                m.d.sync += [ks_addr.eq(c.ks_addr), vs_addr.eq(c.vs_addr)]

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
            scmd.addr.eq(Mux(phase[0], v_addr, k_addr)),     # phases 1, 3 are V
            scmd.first.eq(row * bpr),
            scmd.count.eq(rows * bpr),
        ]
        advance = Signal()                   # the segment has gone to the burst master(s)
        if ss is None:
            m.d.comb += [ws.i_cmd.valid.eq(active),
                         advance.eq(ws.i_cmd.valid & ws.i_cmd.ready)]
        else:
            # the same segment to both masters; each may take it in a different cycle
            c_took, s_took = Signal(), Signal()
            c_fire, s_fire = Signal(), Signal()
            sc = ss.i_cmd.payload
            m.d.comb += [
                ws.i_cmd.valid.eq(active & ~c_took),
                ss.i_cmd.valid.eq(active & ~s_took),
                sc.addr.eq(Mux(phase[0], vs_addr, ks_addr)),
                sc.first.eq(row),
                sc.count.eq(rows),
                c_fire.eq(ws.i_cmd.valid & ws.i_cmd.ready),
                s_fire.eq(ss.i_cmd.valid & ss.i_cmd.ready),
                advance.eq(active & (c_took | c_fire) & (s_took | s_fire)),
            ]
            with m.If(advance):
                m.d.sync += [c_took.eq(0), s_took.eq(0)]
            with m.Else():
                with m.If(c_fire):
                    m.d.sync += c_took.eq(1)
                with m.If(s_fire):
                    m.d.sync += s_took.eq(1)
        with m.If(advance):
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
        if ss is None:
            m.d.comb += [
                self.o.payload.as_value().eq(ws.o.payload.vectors[0]),
                self.o.valid.eq(ws.o.valid),
                ws.o.ready.eq(self.o.ready),
                self.busy.eq(active | ws.busy),
                self.error.eq(ws.error),
            ]
        else:
            # codes beat | row scale above it; the scale leaves with the row's last beat
            W, EB = self.beat, self.fmt.bits
            col = Signal(8)                  # beat within the row
            row_end = Signal()
            m.d.comb += [
                self.o.payload.as_value()[:8 * W].eq(ws.o.payload.vectors[0]),
                self.o.payload.as_value()[8 * W:8 * W + EB].eq(ss.o.payload.vectors[0]),
                self.o.valid.eq(ws.o.valid & ss.o.valid),
                row_end.eq(col == bpr - 1),
                ws.o.ready.eq(self.o.ready & ss.o.valid),
                ss.o.ready.eq(self.o.ready & ws.o.valid & row_end),
                self.busy.eq(active | ws.busy | ss.busy),
                self.error.eq(ws.error | ss.error),
            ]
            with m.If(accept):
                m.d.sync += col.eq(0)
            with m.Elif(self.o.valid & self.o.ready):
                m.d.sync += col.eq(Mux(row_end, 0, col + 1))
        busy_q = Signal()
        m.d.sync += busy_q.eq(self.busy)
        m.d.comb += self.done.eq(busy_q & ~self.busy)
        return m

    def _share_port(self, m, ws, ss):
        """int8 build: two burst masters on one AXI read port. AR: a registered grant toggles to
        the other master whenever the granted one is idle or its request is taken (each master
        holds ``arvalid`` until ``arready``, so a request is never withdrawn); ``arid`` = the
        master (0 codes, 1 scales). R: routed by ``rid``; both masters keep ``rready`` high (their
        FIFO space is reserved before each request)."""
        sel = Signal()
        ar = ("araddr", "arlen", "arsize", "arburst", "arlock", "arcache", "arprot", "arqos")
        cur_v = Mux(sel, ss.m_axi_arvalid, ws.m_axi_arvalid)
        for f in ar:
            m.d.comb += getattr(self, "m_axi_" + f).eq(
                Mux(sel, getattr(ss, "m_axi_" + f), getattr(ws, "m_axi_" + f)))
        m.d.comb += [
            self.m_axi_arvalid.eq(cur_v),
            self.m_axi_arid.eq(sel),
            ws.m_axi_arready.eq(self.m_axi_arready & ~sel),
            ss.m_axi_arready.eq(self.m_axi_arready & sel),
        ]
        with m.If(~cur_v | self.m_axi_arready):
            m.d.sync += sel.eq(~sel)
        rid = self.m_axi_rid[0]
        for k, st in ((0, ws), (1, ss)):
            m.d.comb += [st.m_axi_rdata.eq(self.m_axi_rdata), st.m_axi_rresp.eq(self.m_axi_rresp),
                         st.m_axi_rlast.eq(self.m_axi_rlast), st.m_axi_rid.eq(0),
                         st.m_axi_rvalid.eq(self.m_axi_rvalid & (rid == k))]
        m.d.comb += self.m_axi_rready.eq(Mux(rid, ss.m_axi_rready, ws.m_axi_rready))


def write_command_layout(addr_width: int, count_width: int) -> data.StructLayout:
    """``addr``: byte address of the first engine beat (any byte); ``beats``: engine beats that
    follow on ``i``."""
    return data.StructLayout({"addr": unsigned(addr_width), "beats": unsigned(count_width)})


def writer_commands(layout, layer: int, start: int, count: int, beat: int) -> list[dict]:
    """Writer commands that store rows ``start .. start+count-1`` of every KV head of ``layer``
    (a prefill block, or one decode row with count 1): for kind K then V, for each KV head one
    command; the ``i`` stream then carries those rows in the same order, ``bpr`` beats each."""
    _check_layout(layout, beat, "KVWriter")
    if count < 1 or start < 0 or start + count > layout.max_ctx:
        raise ValueError(f"rows {start}..{start + count - 1} outside the KV cache "
                         f"(max_ctx {layout.max_ctx})")
    bpr = layout.head_dim // beat
    return [dict(addr=layout.row_addr(layer, kind, h, start), beats=count * bpr)
            for kind in ("K", "V") for h in range(layout.num_kv_heads)]


def _burst_len(m, addr, left, max_burst, lg_bytes, nbytes, name):
    """Beats of the next INCR burst from ``addr``: min(left, max_burst, beats to the 4 KB page)."""
    to_page = Signal(range(4096 // nbytes + 1), name=f"{name}_to_page")
    blen = Signal(range(max_burst + 1), name=f"{name}_blen")
    m.d.comb += to_page.eq((4096 - addr[:12]) >> lg_bytes)
    with m.If((left <= max_burst) & (left <= to_page)):
        m.d.comb += blen.eq(left)
    with m.Elif(to_page <= max_burst):
        m.d.comb += blen.eq(to_page)
    with m.Else():
        m.d.comb += blen.eq(max_burst)
    return blen


class KVWriter(wiring.Component):
    """AXI4 write master: a stream of engine beats -> one increasing DDR range per command.

    Parameters: ``beat`` (elements per engine beat), ``fmt`` (element format, default the stream
    format: an engine beat is ``beat * fmt.bits`` bits, any whole number of bytes, narrower or
    wider than an AXI beat), ``data_width`` (128 or 256), ``addr_width``, ``count_width`` (beats
    per command), ``max_burst`` (<= 256 beats), ``max_outstanding`` (bursts awaiting B).

    Ports
    -----
    i_cmd : In(stream write_command_layout)  accepted when idle (``busy`` low).
    i     : In(stream ArrayLayout(unsigned(fmt.bits), beat))  ``beats`` engine beats per
            command, stored back to back from byte ``addr`` (element 0 at the lowest address,
            ``fmt.bits // 8`` bytes per element, little-endian).
    busy, done (one-cycle pulse once the last B response is in), error (sticky: non-OKAY B).
    m_axi_aw* / m_axi_w* / m_axi_b*  AXI4 write channels (``AxiWriteBus.from_prefix(dut,
            "m_axi")``): INCR bursts that never cross a 4 KB page, bytes outside the range
            masked by ``wstrb`` (partial first / last AXI beat), ids 0.

    Datapath: a byte accumulator of ``data_width/8 - 1 + beat*fmt.bits/8`` bytes with a fill
    count; an engine beat is shifted in at the fill position (the first at ``addr``'s offset in
    its AXI beat, strobes off below it); the low ``data_width`` bits go to the W register
    whenever a whole AXI beat is filled (or, after the last engine beat, the remainder).
    Timing: the first W beat one cycle after the engine beat that completes it. Throughput:
    ``i`` takes one engine beat per cycle while the accumulator holds less than an AXI beat
    after this cycle's W load, i.e. every cycle for engine beats up to ``data_width`` bits;
    wider beats are taken at ``data_width`` bits per cycle. Backpressure: ``wready`` low stalls
    ``i``; AW runs ahead of W by at most ``max_outstanding`` bursts.
    """

    def __init__(self, *, beat: int = 4, data_width: int = 128, addr_width: int = 40,
                 count_width: int = 20, max_burst: int = 16, max_outstanding: int = 4,
                 fmt: StreamFormat | None = None):
        try:
            self._init(beat=beat, data_width=data_width, addr_width=addr_width,
                       count_width=count_width, max_burst=max_burst,
                       max_outstanding=max_outstanding, fmt=fmt)
        except (TypeError, ValueError):
            self._MustUse__silence = True      # not elaborated: do not warn about it
            raise

    def _init(self, *, beat, data_width, addr_width, count_width, max_burst, max_outstanding,
              fmt):
        self.fmt = fmt = _format(fmt)
        if data_width not in (128, 256):
            raise ValueError(f"KVWriter data_width must be 128 or 256, not {data_width!r}")
        if not isinstance(beat, int) or beat < 1:
            raise ValueError(f"beat must be a positive integer, not {beat!r}")
        if not 1 <= max_burst <= 256:
            raise ValueError(f"max_burst must be 1..256 (AXI4 INCR), not {max_burst}")
        self.beat, self.data_width, self.addr_width = beat, data_width, addr_width
        self.count_width = count_width
        self.max_burst = min(max_burst, 4096 // (data_width // 8))
        self.max_outstanding = max_outstanding
        super().__init__({
            "i_cmd": In(stream.Signature(write_command_layout(addr_width, count_width))),
            "i": In(stream.Signature(data.ArrayLayout(unsigned(fmt.bits), beat))),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(1),
            "m_axi_awid": Out(1),
            "m_axi_awaddr": Out(addr_width),
            "m_axi_awlen": Out(8),
            "m_axi_awsize": Out(3),
            "m_axi_awburst": Out(2),
            "m_axi_awlock": Out(1),
            "m_axi_awcache": Out(4),
            "m_axi_awprot": Out(3),
            "m_axi_awqos": Out(4),
            "m_axi_awvalid": Out(1),
            "m_axi_awready": In(1),
            "m_axi_wdata": Out(data_width),
            "m_axi_wstrb": Out(data_width // 8),
            "m_axi_wlast": Out(1),
            "m_axi_wvalid": Out(1),
            "m_axi_wready": In(1),
            "m_axi_bid": In(1),
            "m_axi_bresp": In(2),
            "m_axi_bvalid": In(1),
            "m_axi_bready": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        dw = self.data_width
        nbytes = dw // 8
        eb = self.fmt.bits * self.beat // 8          # bytes per engine beat
        cap = nbytes - 1 + eb                         # accumulator bytes
        lg_bytes = nbytes.bit_length() - 1
        aw_w = self.count_width + eb.bit_length() + 1
        mb = self.max_burst

        aw_addr = Signal(self.addr_width)
        aw_left = Signal(aw_w)               # AXI beats still to request on AW
        w_addr = Signal(self.addr_width)     # W side's copy of the burst walk (for WLAST)
        w_left = Signal(aw_w)
        w_cnt = Signal(range(mb + 1))        # beats of the current W burst already loaded
        e_left = Signal(self.count_width)    # engine beats still to take on i
        acc = Signal(8 * cap)
        acc_strb = Signal(cap)
        fill = Signal(range(cap + 1))        # bytes of acc in use (strobed or skipped)
        outstanding = Signal(range(self.max_outstanding + 1))

        c = self.i_cmd.payload
        accept = Signal()
        skip = Signal(lg_bytes)
        m.d.comb += [
            self.i_cmd.ready.eq(~self.busy),
            accept.eq(self.i_cmd.valid & self.i_cmd.ready),
            skip.eq(c.addr[:lg_bytes]),
        ]

        # ---- AW: bursts as the reader's (max_burst, 4 KB pages), outstanding-limited
        blen = _burst_len(m, aw_addr, aw_left, mb, lg_bytes, nbytes, "aw")
        b_fire = Signal()
        m.d.comb += [self.m_axi_bready.eq(1), b_fire.eq(self.m_axi_bvalid)]
        issue = Signal()
        m.d.comb += issue.eq(~self.m_axi_awvalid & (aw_left != 0)
                             & (outstanding < self.max_outstanding))
        m.d.sync += outstanding.eq(outstanding + issue - b_fire)
        with m.If(issue):
            m.d.sync += [self.m_axi_awvalid.eq(1), self.m_axi_awaddr.eq(aw_addr),
                         self.m_axi_awlen.eq(blen - 1),
                         aw_addr.eq(aw_addr + (blen << lg_bytes)), aw_left.eq(aw_left - blen)]
        with m.Elif(self.m_axi_awready):
            m.d.sync += self.m_axi_awvalid.eq(0)
        m.d.comb += [self.m_axi_awsize.eq(lg_bytes), self.m_axi_awburst.eq(1),
                     self.m_axi_awcache.eq(0b0011)]
        with m.If(b_fire & (self.m_axi_bresp != 0)):
            m.d.sync += self.error.eq(1)

        # ---- W: byte accumulator; emit its low AXI beat, shift the next engine beat in at
        # the fill position (any byte: FP24 beats do not tile an AXI beat)
        wblen = _burst_len(m, w_addr, w_left, mb, lg_bytes, nbytes, "w")
        w_free = Signal()
        emit = Signal()
        fill_e = Signal(range(cap + 1))      # fill after this cycle's W load
        acc_e = Signal(8 * cap)
        strb_e = Signal(cap)
        take = Signal()
        m.d.comb += [
            w_free.eq(~self.m_axi_wvalid | self.m_axi_wready),
            emit.eq(w_free & ((fill >= nbytes) | ((e_left == 0) & (fill != 0)))),
            fill_e.eq(Mux(emit, Mux(fill >= nbytes, fill - nbytes, 0), fill)),
            acc_e.eq(Mux(emit, acc[dw:], acc)),
            strb_e.eq(Mux(emit, acc_strb[nbytes:], acc_strb)),
            self.i.ready.eq((e_left != 0) & (fill_e < nbytes)),
            take.eq(self.i.valid & self.i.ready),
        ]
        sh = fill_e[:lg_bytes]               # < nbytes whenever an engine beat is taken
        with m.If(take):
            m.d.sync += [acc.eq(acc_e | (self.i.payload.as_value() << (sh * 8))),
                         acc_strb.eq(strb_e | (Const((1 << eb) - 1, eb) << sh)),
                         fill.eq(fill_e + eb), e_left.eq(e_left - 1)]
        with m.Else():
            m.d.sync += [acc.eq(acc_e), acc_strb.eq(strb_e), fill.eq(fill_e)]
        with m.If(self.m_axi_wready):
            m.d.sync += self.m_axi_wvalid.eq(0)     # a load below keeps it high
        with m.If(emit):
            m.d.sync += [self.m_axi_wvalid.eq(1), self.m_axi_wdata.eq(acc[:dw]),
                         self.m_axi_wstrb.eq(acc_strb[:nbytes]),
                         self.m_axi_wlast.eq(w_cnt == wblen - 1)]
            with m.If(w_cnt == wblen - 1):
                m.d.sync += [w_cnt.eq(0), w_addr.eq(w_addr + (wblen << lg_bytes)),
                             w_left.eq(w_left - wblen)]
            with m.Else():
                m.d.sync += w_cnt.eq(w_cnt + 1)

        # the command load comes last: it overrides the idle datapath's updates above
        with m.If(accept):
            nb = (skip + c.beats * eb + nbytes - 1) >> lg_bytes
            base = (c.addr >> lg_bytes) << lg_bytes
            none = c.beats == 0
            m.d.sync += [aw_addr.eq(base), w_addr.eq(base), aw_left.eq(Mux(none, 0, nb)),
                         w_left.eq(Mux(none, 0, nb)), w_cnt.eq(0), e_left.eq(c.beats),
                         fill.eq(Mux(none, 0, skip)), acc.eq(0), acc_strb.eq(0)]

        m.d.comb += self.busy.eq((e_left != 0) | (fill != 0) | (aw_left != 0)
                                 | self.m_axi_awvalid | self.m_axi_wvalid | (outstanding != 0))
        busy_q = Signal()
        m.d.sync += busy_q.eq(self.busy)
        m.d.comb += self.done.eq(busy_q & ~self.busy)
        return m


class KVCacheDMA(wiring.Component):
    """The engine's DDR side on one AXI4 port: :class:`KVReader` on the read channels and
    :class:`KVWriter` on the write channels (independent in AXI4, so they run concurrently).

    Ports: ``rd_cmd``/``o``/``rd_busy``/``rd_done`` (the reader's ``i_cmd``/``o``/``busy``/
    ``done``), ``wr_cmd``/``wr``/``wr_busy``/``wr_done`` (the writer's), ``error`` (either's),
    ``m_axi_*`` (all five AXI4 channels, ``AxiBus.from_prefix(dut, "m_axi")``).
    Parameters: those of :class:`KVReader`; the writer takes ``beat``, ``fmt``, ``data_width``,
    ``addr_width``, ``max_burst``, ``max_outstanding`` and ``count_width = ctx_bits + 8``.
    """

    def __init__(self, **params):
        self._rd = KVReader(**params)
        self._wr = KVWriter(beat=self._rd.beat, data_width=self._rd.data_width,
                            addr_width=self._rd.addr_width, count_width=self._rd.ctx_bits + 8,
                            max_burst=self._rd.max_burst,
                            max_outstanding=self._rd.max_outstanding, fmt=self._rd.fmt)
        sig = {}
        for pre, comp, names in (("rd_", self._rd, ("i_cmd", "o", "busy", "done")),
                                 ("wr_", self._wr, ("i_cmd", "i", "busy", "done"))):
            for name, member in comp.signature.members.items():
                if name.startswith("m_axi_"):
                    sig[name] = member
                elif name in names:
                    new = {"rd_i_cmd": "rd_cmd", "rd_o": "o", "wr_i_cmd": "wr_cmd",
                           "wr_i": "wr"}.get(pre + name, pre + name)
                    sig[new] = member
        sig["error"] = Out(1)
        super().__init__(sig)

    def elaborate(self, platform):
        m = Module()
        m.submodules.rd = rd = self._rd
        m.submodules.wr = wr = self._wr
        ren = {"rd": {"rd_cmd": "i_cmd", "o": "o", "rd_busy": "busy", "rd_done": "done"},
               "wr": {"wr_cmd": "i_cmd", "wr": "i", "wr_busy": "busy", "wr_done": "done"}}
        for name, member in self.signature.members.items():
            if name == "error":
                continue
            if name.startswith("m_axi_"):
                sub = rd if name in rd.signature.members else wr
                inner = name
            else:
                sub = rd if name in ren["rd"] else wr
                inner = ren["rd" if sub is rd else "wr"][name]
            outer_v, inner_v = getattr(self, name), getattr(sub, inner)
            if isinstance(member, wiring.Member) and member.is_signature:
                wiring.connect(m, wiring.flipped(outer_v), inner_v) if member.flow == In \
                    else wiring.connect(m, inner_v, wiring.flipped(outer_v))
            elif member.flow == Out:
                m.d.comb += outer_v.eq(inner_v)
            else:
                m.d.comb += inner_v.eq(outer_v)
        m.d.comb += self.error.eq(rd.error | wr.error)
        return m


def call_traffic(n: int, *, head_dim: int, beat: int, depth: int, data_width: int,
                 max_burst: int, fmt: StreamFormat | None = None) -> dict:
    """Bursts and bytes of one reader call (n keys, one KV head, rows in ``fmt``) from
    :func:`reader_plan`, for a KV head whose regions start on a 4 KB page (as the layout
    places them)."""
    from tellme.spec.kv_layout import KVLayout

    fmt = _format(fmt)
    lay = KVLayout(num_layers=1, num_kv_heads=1, head_dim=head_dim, max_ctx=max(n, 1), fmt=fmt)
    plan = reader_plan(reader_command(lay, 0, 0, n, beat), depth=depth, beat=beat,
                       data_width=data_width, max_burst=max_burst, fmt=fmt)
    beats = sum(b for _, b in plan)
    return {"segments": len(kv_schedule(n, depth)), "bursts": len(plan),
            "bytes": beats * data_width // 8, "payload": sum(
                r for _, _, r in kv_schedule(n, depth)) * lay.row_bytes}
