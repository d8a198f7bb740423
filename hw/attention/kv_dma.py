"""DDR side of the attention engines: the KV-cache readers that feed ``i_kv``, the KV writer.

``KVReader`` turns one engine call (a KV head's K and V regions of :mod:`tellme.spec.kv_layout`
and the key count ``n``) into the row segments of :func:`kv_schedule` (K 0..n-1 for pass 1,
V of the last tile, then K and V of every earlier tile), and fetches each segment as one
forward address range with the AXI4 INCR burst master of :class:`tellme.hw.weight_stream.
WeightStreamer` (bursts capped at ``max_burst`` beats and split at 4 KiB pages, several in
flight, an R FIFO reserved before each request). The streamer's gearbox cuts the range into
engine beats of ``beat`` elements of ``fmt.bits`` bits (16 or 24), whatever the AXI data
width, so rows need not be aligned to AXI beats (an FP24 engine beat of 4 is 96 bits, of 8 is
192 bits: neither divides nor is a multiple of a 128-bit AXI beat).

``KVInt8Reader`` feeds the integer engine (``IntAttentionEngine.i_kv``) from the int8 layout
(K rows with their blocks' scale headers, V blocks channel-major): one range per block, a
fixed width conversion and no gearbox.

``KVWriter`` stores the new K/V rows of a prefill block or a decode step (AXI4 INCR write
bursts, byte strobes for partial first/last beats, rows at any byte address);
``KVCacheDMA`` puts ``KVReader`` and ``KVWriter`` on one AXI4 port.

The element format ``fmt`` is a :class:`~tellme.spec.numerics.StreamFormat` (None: the
contract's ``STREAM_FORMAT``); a layout's elements are ``fmt.bits // 8`` bytes each,
little-endian (:mod:`tellme.spec.kv_layout`).

Scope: ``KVReader``/``KVWriter`` take run-time ``head_dim`` a multiple of ``beat`` (row =
``bpr`` whole engine beats, no padding needed) and stream-format rows only; an int8 cache is
written by ``KVQuantWriter`` (hw/attention/kv_quant.py) and read by ``KVInt8Reader``
(docs/hw/attention.md, "DDR side").
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from tellme.hw.axi_arbiter import read_port_members
from tellme.hw.weight_stream import WeightStreamer, split_bursts, stream_plan
from tellme.spec.attention import kv_schedule
from tellme.spec.numerics import StreamFormat, stream_format

__all__ = ["KVReader", "KVInt8Reader", "KVWriter", "KVCacheDMA", "read_command_layout",
           "reader_command", "reader_plan", "reader_beats", "reader_beats_int8",
           "int8_blocks", "int8_call_traffic", "int8_reader_cycles", "write_command_layout",
           "writer_commands"]


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


HD_BITS = 10           # int8 command: run-time head_dim field


def read_command_layout(addr_width: int, ctx_bits: int, int8: bool = False
                        ) -> data.StructLayout:
    """``k_addr``/``v_addr``: byte address of the KV head's K / V region (row 0; int8: block
    0); ``n``: keys of the call (1 .. 2**ctx_bits - 1). Stream-format build: ``bpr``, engine
    beats per row (run-time head_dim / beat); int8 build (:class:`KVInt8Reader`): ``hd``, the
    run-time head_dim."""
    f = {"k_addr": unsigned(addr_width), "v_addr": unsigned(addr_width),
         "n": unsigned(ctx_bits + 1)}
    f.update(hd=unsigned(HD_BITS)) if int8 else f.update(bpr=unsigned(8))
    return data.StructLayout(f)


def reader_command(layout, layer: int, head: int, n: int, beat: int) -> dict:
    """The reader command for one call over ``layout`` (a :class:`~tellme.spec.kv_layout.
    KVLayout`): the KV head's K and V regions, ``n`` keys, beats per row (int8: head_dim;
    ``beat`` must be the layout's)."""
    if not 1 <= n <= layout.max_ctx:
        raise ValueError(f"n = {n} keys outside 1..max_ctx {layout.max_ctx}")
    k, v = layout.region_addr(layer, "K", head), layout.region_addr(layer, "V", head)
    if layout.dtype == "int8":
        if layout.beat != beat:
            raise ValueError(f"the int8 layout is built for beat {layout.beat}, not {beat}")
        return dict(k_addr=k, v_addr=v, n=n, hd=layout.head_dim)
    if layout.head_dim % beat:
        raise ValueError(f"head_dim {layout.head_dim} is not a multiple of the engine beat {beat}")
    return dict(k_addr=k, v_addr=v, n=n, bpr=layout.head_dim // beat)


def _int8_layout(hd: int, beat: int, fmt):
    from tellme.spec.kv_layout import KVLayout

    return KVLayout(1, 1, hd, 1, dtype="int8", fmt=_format(fmt), beat=beat)


def int8_blocks(cmd: dict, *, depth: int, beat: int, data_width: int,
                fmt: StreamFormat | None = None) -> list[tuple[str, int, int, int]]:
    """An int8 command's ranges, one per block, in the order :class:`KVInt8Reader` fetches
    them: ``(kind, byte address, AXI beats, keys)``. A K block: its scale header
    (``k_header_bytes``) then the rows of its keys in the segment (``keys``; the segment's
    last block may be partial); a V block: ``hd`` channels of ``beat`` bytes (``keys``: the
    block's keys in the segment, all ``beat`` of them are fetched)."""
    lay = _int8_layout(cmd["hd"], beat, fmt)
    nb = data_width // 8
    out = []
    for kind, first, rows in kv_schedule(cmd["n"], depth):
        for b in range(first // beat, -(-(first + rows) // beat)):
            keys = min(first + rows, b * beat + beat) - b * beat
            if kind == "K":
                addr = cmd["k_addr"] + b * lay.k_block_bytes
            else:
                addr = cmd["v_addr"] + b * lay.v_block_bytes
            out.append((kind, addr, -(-lay.block_read_bytes(kind, keys) // nb), keys))
    return out


def reader_plan(cmd: dict, *, depth: int, beat: int, data_width: int,
                max_burst: int, fmt: StreamFormat | None = None) -> list[tuple[int, int]]:
    """Reference list of the (byte address, beats) bursts the reader issues for ``cmd``
    (elements of ``fmt.bits`` bits; an int8 command (with ``hd``): :class:`KVInt8Reader`'s,
    the ranges of :func:`int8_blocks`)."""
    if "hd" in cmd:
        nb = data_width // 8
        return [b for _, addr, beats, _ in int8_blocks(cmd, depth=depth, beat=beat,
                                                       data_width=data_width, fmt=fmt)
                for b in split_bursts(addr // nb * nb, beats, nbytes=nb, max_burst=max_burst)]
    vb = _format(fmt).bits * beat
    out = []
    for kind, first, rows in kv_schedule(cmd["n"], depth):
        base = cmd["k_addr"] if kind == "K" else cmd["v_addr"]
        out += stream_plan(addr=base, first=first * cmd["bpr"], count=rows * cmd["bpr"],
                           lanes=1, vector_bits=vb, data_width=data_width,
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
    """The ``i_kv`` beats of one call of the integer engine as integers
    (``8 * beat + 2 * fmt.bits`` bits): codes ``[>= n, hd]`` int8, scales ``[>= n]`` bit
    patterns (``fmt.to_bits``). A K row is ``ceil(hd / beat)`` beats: ``beat`` codes (two's
    complement bytes, code 0 lowest; zeros past hd) in bits [0, 8*beat), the K scale in the
    next ``fmt.bits`` bits, the V scale of the same key above it. A V segment is whole blocks
    of ``beat`` keys, ``hd`` beats each: beat c holds channel c of the block's keys (key j of
    the block in byte j; keys past ``len(codes_v)`` zero), scale bits zero. This is what
    :class:`KVInt8Reader` delivers from the layout's image (``KVLayout.encode_k_region`` /
    ``encode_v_region`` of the same arrays)."""
    eb = _format(fmt).bits
    hd = len(codes_k[0]) if len(codes_k) else len(codes_v[0])
    bpr = -(-hd // beat)
    out = []
    for kind, first, rows in kv_schedule(n, depth):
        if kind == "K":
            for r in range(first, first + rows):
                row = [int(x) & 0xFF for x in codes_k[r]] + [0] * (bpr * beat - hd)
                sc = (int(scales_k[r]) | int(scales_v[r]) << eb) << (8 * beat)
                for i in range(0, bpr * beat, beat):
                    out.append(sum(c << (8 * j) for j, c in enumerate(row[i:i + beat])) | sc)
            continue
        for b in range(first // beat, -(-(first + rows) // beat)):
            keys = [int(k) for k in range(b * beat, b * beat + beat)]
            blk = [[int(x) & 0xFF for x in codes_v[k]] if k < len(codes_v) else [0] * hd
                   for k in keys]
            for ch in range(hd):
                out.append(sum(blk[j][ch] << (8 * j) for j in range(beat)))
    return out


def int8_call_traffic(n: int, *, head_dim: int, beat: int, depth: int, data_width: int,
                      max_burst: int, fmt: StreamFormat | None = None) -> dict:
    """Ranges, bursts and bytes :class:`KVInt8Reader` fetches for one call (one KV head, n
    keys), against the payload (codes and both scales of the rows of ``kv_schedule``)."""
    lay = _int8_layout(head_dim, beat, fmt)
    cmd = dict(k_addr=0, v_addr=1 << 30, n=n, hd=head_dim)
    kw = dict(depth=depth, beat=beat, data_width=data_width, fmt=fmt)
    blocks = int8_blocks(cmd, **kw)
    plan = reader_plan(cmd, max_burst=max_burst, **kw)
    sched = kv_schedule(n, depth)
    payload = sum(r * (head_dim + (lay.scale_bytes if k == "V" else 0)
                       + (lay.scale_bytes if k == "K" else 0)) for k, _, r in sched)
    return {"segments": len(sched), "blocks": len(blocks), "bursts": len(plan),
            "bytes": sum(b for _, b in plan) * data_width // 8, "payload": payload,
            "beats_out": sum(k * lay.bpr if kind == "K" else head_dim
                             for kind, _, _, k in blocks)}


def int8_reader_cycles(n: int, *, head_dim: int, beat: int, depth: int,
                       data_width: int, fmt: StreamFormat | None = None) -> int:
    """Lower bound on :class:`KVInt8Reader`'s cycles for one call without stalls: per block
    one cycle to take its job, one per header beat, then one per AXI beat of codes (an engine
    beat of ``8 * beat >= data_width`` bits is ``8 * beat / data_width`` of them) or one per
    engine beat (narrower beats: an AXI beat holds several). A DDR with latency adds it once
    per call when the R FIFO keeps up (the testbench's rate check)."""
    lay = _int8_layout(head_dim, beat, fmt)
    nb = data_width // 8
    hb = lay.k_header_bytes // nb
    cyc = 0
    for kind, _, beats, keys in int8_blocks(dict(k_addr=0, v_addr=0, n=n, hd=head_dim),
                                            depth=depth, beat=beat, data_width=data_width,
                                            fmt=fmt):
        e = keys * lay.bpr if kind == "K" else head_dim
        h = hb if kind == "K" else 0
        cyc += 1 + h + (beats - h if 8 * beat >= data_width else e)
    return cyc


class KVReader(wiring.Component):
    """AXI4 KV-cache reader (stream-format rows): one command per engine call -> the ``i_kv``
    beats of the call.

    Parameters: ``beat`` (elements per engine beat, = the engine's), ``fmt`` (element format,
    default the stream format), ``depth`` (score tile, = the engine's; power of two),
    ``max_head_dim`` (largest head_dim, multiple of ``beat``), ``ctx_bits`` (n <= 2**ctx_bits -
    1), ``data_width`` (AXI, 128 or 256), ``addr_width``, ``max_burst``, ``max_outstanding``
    (passed to the burst master). An int8 cache is read by :class:`KVInt8Reader`.

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
            "m_axi")``), INCR bursts only, id 0, in-order data.

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
                 fmt: StreamFormat | None = None):
        try:
            self._init(beat=beat, depth=depth, max_head_dim=max_head_dim, ctx_bits=ctx_bits,
                       data_width=data_width, addr_width=addr_width, max_burst=max_burst,
                       max_outstanding=max_outstanding, fmt=fmt)
        except (TypeError, ValueError):
            self._MustUse__silence = True      # not elaborated: do not warn about it
            raise

    def _init(self, *, beat, depth, max_head_dim, ctx_bits, data_width, addr_width, max_burst,
              max_outstanding, fmt):
        self.fmt = fmt = _format(fmt)
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
            t=1, lanes=1, vector_bits=fmt.bits * beat, data_width=data_width,
            addr_width=addr_width, max_burst=max_burst, max_outstanding=max_outstanding,
            count_width=self._cw)
        sig = {
            "i_cmd": In(stream.Signature(read_command_layout(addr_width, ctx_bits))),
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
            scmd.addr.eq(Mux(phase[0], v_addr, k_addr)),     # phases 1, 3 are V
            scmd.first.eq(row * bpr),
            scmd.count.eq(rows * bpr),
            ws.i_cmd.valid.eq(active),
        ]
        advance = Signal()                   # the segment has gone to the burst master
        m.d.comb += advance.eq(ws.i_cmd.valid & ws.i_cmd.ready)
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


class KVInt8Reader(wiring.Component):
    """AXI4 reader of the int8 KV layout: one command per call of the integer engine -> the
    ``IntAttentionEngine.i_kv`` beats of the call (:func:`reader_beats_int8`).

    Parameters: ``beat`` (the engine's and the layout's: codes per K beat, keys per V block; a
    power of two), ``depth`` (score tile, = the engine's; a power of two, multiple of
    ``beat``), ``max_head_dim``, ``ctx_bits`` (n <= 2**ctx_bits - 1), ``fmt`` (scale format),
    ``data_width`` (AXI: 128, 256 or 512), ``addr_width``, ``max_burst``, ``max_outstanding``
    (read bursts in flight; the R FIFO holds ``max_burst * max_outstanding`` beats).

    Ports
    -----
    i_cmd : In(stream read_command_layout(int8=True))  ``{k_addr, v_addr, n, hd}``: the KV
            head's K and V regions (``reader_command``), keys, run-time head_dim; accepted
            when idle (``busy`` low).
    o     : Out(stream unsigned(8 * beat + 2 * fmt.bits))  connect to ``i_kv``: the segments
            of ``kv_schedule(n, depth)``; a K row is ceil(hd / beat) beats (codes, K scale, V
            scale); a V segment its blocks, hd beats each (channel-major, scale bits 0).
    busy, done (one-cycle pulse after the call's last beat), error (sticky non-OKAY R).
    m_axi_ar* / m_axi_r*  AXI4 read channels, INCR bursts (at most ``max_burst`` beats, never
            across 4 KiB), id 0, in-order.

    Structure: a sequencer walks ``kv_schedule`` block by block (per K block: its header and
    the rows of its keys in the segment, one range; per V block: its ``hd`` channels, one
    range; K and V block pointers advance by the run-time block sizes, the V pointer of the
    last tile is summed while K[0, n) passes the earlier tiles) and hands each range to a
    burst master (requests split at ``max_burst`` and 4 KiB pages, each only once its beats
    have room in the R FIFO, so ``rready`` stays high) and a job (kind, keys) to the data
    side through a 4-deep FIFO. The data side writes a K block's header beats into a LUTRAM
    of ``beat`` scale pairs, then builds engine beats from whole AXI beats: for
    ``8 * beat >= data_width`` it collects ``8 * beat / data_width`` beats (all but the last
    in registers, the last straight from the FIFO), for a narrower beat it selects engine
    beat k of an AXI beat; a K beat takes the scale pair of its key from the LUTRAM.

    Rate: the engine takes at most one beat per cycle (64 B at kv260); the DDR gives about
    58 B/cycle and a 128-bit HP port 16 B/cycle. The port is the limit, so the reader is
    sized for one AXI beat per cycle: one 64-code beat every 4 cycles on 128 bits (2 on 256,
    1 on 512), plus a cycle per block and the header beats of each K block (beat * 8 bytes at
    FP24: 6 % of a head_dim-128 block). ``int8_reader_cycles`` is the bound at zero stalls
    (reached up to the read latency). Backpressure: ``o.ready`` low stalls the data side only.
    """

    def __init__(self, *, beat: int = 4, depth: int = 8, max_head_dim: int = 16,
                 ctx_bits: int = 12, data_width: int = 128, addr_width: int = 40,
                 max_burst: int = 16, max_outstanding: int = 4,
                 fmt: StreamFormat | None = None):
        try:
            self.fmt = fmt = _format(fmt)
            if not isinstance(beat, int) or beat < 1 or beat & (beat - 1):
                raise ValueError(f"beat {beat!r} must be a power of two")
            if depth < beat or depth & (depth - 1):
                raise ValueError(f"score-buffer depth {depth} must be a power of two >= beat")
            if data_width not in (128, 256, 512):
                raise ValueError(f"KVInt8Reader data_width must be 128, 256 or 512, "
                                 f"not {data_width!r}")
            if not 1 <= max_head_dim < 1 << HD_BITS:
                raise ValueError(f"max_head_dim {max_head_dim} outside 1..{(1 << HD_BITS) - 1}")
            if not 1 <= max_burst <= 256:
                raise ValueError(f"max_burst must be 1..256 (AXI4 INCR), not {max_burst}")
        except (TypeError, ValueError):
            self._MustUse__silence = True
            raise
        self.beat, self.depth, self.ctx_bits = beat, depth, ctx_bits
        self.max_head_dim, self.data_width, self.addr_width = max_head_dim, data_width, addr_width
        self.max_burst = min(max_burst, 4096 // (data_width // 8))
        self.max_outstanding = max_outstanding
        sig = {"i_cmd": In(stream.Signature(read_command_layout(addr_width, ctx_bits, True))),
               "o": Out(stream.Signature(unsigned(8 * beat + 2 * fmt.bits))),
               "busy": Out(1), "done": Out(1), "error": Out(1)}
        sig.update(read_port_members("m_axi", addr_width, data_width, master=True))
        super().__init__(sig)

    def elaborate(self, platform):
        m = Module()
        B, D, CB, EB = self.beat, self.depth, self.ctx_bits, self.fmt.bits
        dw, AW = self.data_width, self.addr_width
        NB = dw // 8
        lb, lnb, ld = B.bit_length() - 1, NB.bit_length() - 1, D.bit_length() - 1
        lay = _int8_layout(1, B, self.fmt)
        pair, khdr = lay.pair_bytes, lay.k_header_bytes
        H = khdr // NB                       # header AXI beats (khdr is a 64-byte multiple)
        HU = -(-B * pair // NB)              # of them holding scale pairs
        EPW = NB // pair                     # pairs per AXI beat
        up = dw <= 8 * B
        R = 8 * B // dw if up else NB // B   # AXI beats per engine beat / engine beats per AXI
        lr = R.bit_length() - 1
        MBPR = -(-self.max_head_dim // B)
        mb, MO = self.max_burst, self.max_outstanding

        # ---- call registers and per-call geometry (run-time hd)
        c = self.i_cmd.payload
        k_addr = Signal(AW)
        n = Signal(CB + 1)
        hd = Signal(HD_BITS)
        last = Signal(CB + 1)                # first key of the last tile
        nl = Signal(CB + 1)                  # n - last: keys of V[last, n)
        bpr = Signal(range(MBPR + 1))
        kblock = Signal(AW)
        vblock = Signal(AW)
        vbeats = Signal(HD_BITS + lb + 1)
        accept = Signal()
        m.d.comb += [self.i_cmd.ready.eq(~self.busy),
                     accept.eq(self.i_cmd.valid & self.i_cmd.ready)]
        c_last = ((c.n - 1) >> ld) << ld
        c_bpr = (c.hd + B - 1) >> lb
        vb_bytes = c.hd << lb
        with m.If(accept):
            m.d.sync += [k_addr.eq(c.k_addr), n.eq(c.n), hd.eq(c.hd), last.eq(c_last),
                         nl.eq(c.n - c_last), bpr.eq(c_bpr),
                         kblock.eq(((khdr + (c_bpr << 2 * lb)) + 63) >> 6 << 6),
                         vblock.eq((vb_bytes + 63) >> 6 << 6),
                         vbeats.eq((vb_bytes + NB - 1) >> lnb)]

        # ---- sequencer: kv_schedule, one range per block
        active = Signal()
        phase = Signal(range(4))             # 0: K[0,n)  1: V[last,n)  2: K tile t  3: V tile t
        left = Signal(CB + 1)                # keys of the segment still to request
        t_end = Signal(CB + 1)               # end of the current earlier tile
        kp, vp, vl = Signal(AW), Signal(AW), Signal(AW)   # K, V-tile, V-last block pointers
        r_addr = Signal(AW)                  # current range (AXI-beat aligned)
        r_beats = Signal(range(H + B * MBPR * max(1, R if up else 1) + 2))
        m.submodules.jobs = jobs = fifo.SyncFIFO(width=lb + 2, depth=4)
        keys = Signal(lb + 1)
        m.d.comb += keys.eq(Mux(left >= B, B, left[:lb + 1]))
        kbytes_b = Signal(len(r_beats))      # AXI beats of the block's rows
        prod = keys * bpr
        if up:
            m.d.comb += kbytes_b.eq(prod << lr)
        else:
            m.d.comb += kbytes_b.eq((prod + R - 1) >> lr)
        is_k = ~phase[0]
        load = Signal()
        m.d.comb += [
            load.eq(active & (r_beats == 0) & jobs.w_rdy),
            jobs.w_en.eq(load),
            jobs.w_data.eq(Cat(keys, phase[0])),
        ]
        seg_end = keys == left
        with m.If(accept):
            m.d.sync += [active.eq(c.n != 0), phase.eq(0), left.eq(c.n), kp.eq(c.k_addr),
                         vp.eq(c.v_addr), vl.eq(c.v_addr), t_end.eq(D)]
        with m.Elif(load):
            m.d.sync += [r_addr.eq(Mux(is_k, kp, Mux(phase == 1, vl, vp))),
                         r_beats.eq(Mux(is_k, H + kbytes_b, vbeats)),
                         left.eq(left - keys)]
            with m.Switch(phase):
                with m.Case(0):
                    m.d.sync += kp.eq(kp + kblock)
                    with m.If(left > nl):          # a block before the last tile
                        m.d.sync += vl.eq(vl + vblock)
                    with m.If(seg_end):
                        m.d.sync += [phase.eq(1), left.eq(nl)]
                with m.Case(1):
                    m.d.sync += vl.eq(vl + vblock)
                    with m.If(seg_end):
                        m.d.sync += [phase.eq(2), left.eq(D), kp.eq(k_addr)]
                        with m.If(last == 0):
                            m.d.sync += active.eq(0)
                with m.Case(2):
                    m.d.sync += kp.eq(kp + kblock)
                    with m.If(seg_end):
                        m.d.sync += [phase.eq(3), left.eq(D)]
                with m.Case(3):
                    m.d.sync += vp.eq(vp + vblock)
                    with m.If(seg_end):
                        m.d.sync += [phase.eq(2), left.eq(D), t_end.eq(t_end + D)]
                        with m.If(t_end == last):
                            m.d.sync += active.eq(0)

        # ---- burst master: INCR bursts <= max_burst, never across 4 KiB, FIFO space reserved
        pop = Signal()
        rf = burst_read_master(m, self, "m_axi", addr=r_addr, beats=r_beats, pop=pop,
                               max_burst=mb, max_outstanding=MO, error=self.error)

        # ---- data side: header beats -> scale LUTRAM; code beats -> engine beats
        g_active = Signal()
        g_v = Signal()                       # V block
        g_keys = Signal(lb + 1)
        hcnt = Signal(range(H + 1))
        j = Signal(lb + 1)                   # key within the block (K)
        col = Signal(range(MBPR + 1))        # beat within the row (K)
        ch = Signal(HD_BITS)                 # channel (V)
        in_hdr = Signal()
        m.d.comb += [in_hdr.eq(~g_v & (hcnt != H)), jobs.r_en.eq(~g_active)]
        with m.If(~g_active & jobs.r_rdy):
            m.d.sync += [g_active.eq(1), g_keys.eq(jobs.r_data[:lb + 1]),
                         g_v.eq(jobs.r_data[lb + 1]), hcnt.eq(0), j.eq(0), col.eq(0),
                         ch.eq(0)]
        hdr_pop = Signal()
        m.d.comb += hdr_pop.eq(g_active & in_hdr & rf.r_rdy)
        smem = memory.Memory(shape=unsigned(EPW * 2 * EB), depth=max(HU, 2), init=[])
        m.submodules.smem = smem
        swp = smem.write_port()
        srp = smem.read_port(domain="comb")
        m.d.comb += [
            swp.addr.eq(hcnt),
            swp.data.eq(Cat(*(rf.r_data[e * pair * 8:e * pair * 8 + 2 * EB]
                              for e in range(EPW)))),
            swp.en.eq(hdr_pop & (hcnt < HU)),
            srp.addr.eq(j >> (EPW.bit_length() - 1)),
        ]
        with m.If(hdr_pop):
            m.d.sync += hcnt.eq(hcnt + 1)
        sel = srp.data.word_select(j[:EPW.bit_length() - 1], 2 * EB) if EPW > 1 else srp.data
        scale = Mux(g_v, 0, sel)

        code_ok = Signal()
        fire = Signal()
        m.d.comb += [code_ok.eq(g_active & ~in_hdr & rf.r_rdy),
                     fire.eq(self.o.valid & self.o.ready)]
        if up:
            parts = [Signal(dw, name=f"part{i}") for i in range(R - 1)]
            fill = Signal(range(max(R, 2)))
            m.d.comb += [
                self.o.valid.eq(code_ok & (fill == R - 1)),
                self.o.payload.eq(Cat(*parts, rf.r_data, scale)),
                pop.eq(hdr_pop | (code_ok & ((fill != R - 1) | self.o.ready))),
            ]
            if R > 1:
                with m.If(code_ok & (fill != R - 1)):
                    m.d.sync += fill.eq(fill + 1)
                    for i, p in enumerate(parts):
                        with m.If(fill == i):
                            m.d.sync += p.eq(rf.r_data)
                with m.If(fire):
                    m.d.sync += fill.eq(0)
        else:
            sub = Signal(range(max(R, 2)))
            m.d.comb += [self.o.valid.eq(code_ok),
                         self.o.payload.eq(Cat(rf.r_data.word_select(sub, 8 * B), scale))]
        # beat counters; the job ends with its last beat
        row_end = col == bpr - 1
        job_end = Signal()
        m.d.comb += job_end.eq(Mux(g_v, ch == hd - 1, (j == g_keys - 1) & row_end))
        with m.If(fire):
            m.d.sync += ch.eq(ch + 1)
            with m.If(row_end):
                m.d.sync += [col.eq(0), j.eq(j + 1)]
            with m.Else():
                m.d.sync += col.eq(col + 1)
            with m.If(job_end):
                m.d.sync += g_active.eq(0)
        if not up:
            m.d.comb += pop.eq(hdr_pop | (fire & ((sub == R - 1) | job_end)))
            with m.If(fire):
                m.d.sync += sub.eq(Mux(job_end, 0, sub + 1))

        m.d.comb += self.busy.eq(active | (r_beats != 0) | jobs.r_rdy | g_active)
        busy_q = Signal()
        m.d.sync += busy_q.eq(self.busy)
        m.d.comb += self.done.eq(busy_q & ~self.busy)
        return m


def write_command_layout(addr_width: int, count_width: int, beat: int = 1
                         ) -> data.StructLayout:
    """``addr``: byte address of the first engine beat (any byte); ``beats``: engine beats that
    follow on ``i``; ``tail``: elements of the last engine beat that are stored (0: all of
    them; the others are masked off, so a range need not be a whole number of beats)."""
    return data.StructLayout({"addr": unsigned(addr_width), "beats": unsigned(count_width),
                              "tail": unsigned(max(1, (beat - 1).bit_length()))})


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


def burst_read_master(m: Module, comp, prefix: str, *, addr: Signal, beats: Signal, pop: Signal,
                      max_burst: int, max_outstanding: int, error: Signal) -> fifo.SyncFIFOBuffered:
    """The read side of an in-order AXI4 reader, shared by the KV and row readers: requests the
    ``beats`` AXI beats from ``addr`` (beat-aligned; both advance as bursts are issued, the
    caller loads a new range while ``beats`` is 0) as INCR bursts of at most ``max_burst``
    beats that never cross 4 KiB, each only once its beats have room in the R FIFO (so
    ``rready`` stays high), at most ``max_outstanding`` in flight. Returns the R FIFO
    (``max_burst * max_outstanding`` beats); the caller reads ``r_data``/``r_rdy`` and drives
    ``pop``. A non-OKAY RRESP sets ``error`` (sticky). ``comp``'s ``<prefix>_ar*``/``_r*``
    members are the AXI channels (``axi_arbiter.read_port_members``)."""
    def ax(name):
        return getattr(comp, f"{prefix}_{name}")

    dw = len(ax("rdata"))
    NB = dw // 8
    lnb = NB.bit_length() - 1
    FD = max_burst * max_outstanding
    m.submodules.rfifo = rf = fifo.SyncFIFOBuffered(width=dw, depth=FD)
    reserved = Signal(range(FD + 1))
    outstanding = Signal(range(max_outstanding + 1))
    blen = _burst_len(m, addr, beats, max_burst, lnb, NB, "ar")
    r_last = Signal()
    issue = Signal()
    m.d.comb += [
        r_last.eq(ax("rvalid") & ax("rready") & ax("rlast")),
        issue.eq(~ax("arvalid") & (beats != 0)
                 & ((outstanding < max_outstanding) | r_last) & (reserved + blen <= FD)),
    ]
    m.d.sync += [reserved.eq(reserved + Mux(issue, blen, 0) - pop),
                 outstanding.eq(outstanding + issue - r_last)]
    with m.If(issue):
        m.d.sync += [ax("arvalid").eq(1), ax("araddr").eq(addr), ax("arlen").eq(blen - 1),
                     addr.eq(addr + (blen << lnb)), beats.eq(beats - blen)]
    with m.Elif(ax("arready")):
        m.d.sync += ax("arvalid").eq(0)
    m.d.comb += [
        ax("arsize").eq(lnb), ax("arburst").eq(1), ax("arcache").eq(0b0011),
        rf.w_data.eq(ax("rdata")), rf.w_en.eq(ax("rvalid")),
        ax("rready").eq(rf.w_rdy), rf.r_en.eq(pop),
    ]
    with m.If(ax("rvalid") & ax("rready") & (ax("rresp") != 0)):
        m.d.sync += error.eq(1)
    return rf


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
            ``fmt.bits // 8`` bytes per element, little-endian); of the last one only the
            first ``tail`` elements when ``tail`` is not 0 (the rest strobed off).
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
            "i_cmd": In(stream.Signature(write_command_layout(addr_width, count_width, beat))),
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
        tail = Signal(len(c.tail))
        beat_strb = Signal(eb)               # strobes of the engine beat taken
        m.d.comb += beat_strb.eq((1 << eb) - 1)
        ebe = self.fmt.bits // 8
        if self.beat > 1 and self.fmt.bits % 8 == 0:
            with m.If((e_left == 1) & (tail != 0)):
                with m.Switch(tail):
                    for t in range(1, self.beat):
                        with m.Case(t):
                            m.d.comb += beat_strb.eq((1 << (t * ebe)) - 1)
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
                         acc_strb.eq(strb_e | (beat_strb << sh)),
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
                         tail.eq(c.tail),
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
