"""AXI4 weight streamer: reads the packed layout-v1 code stream from DDR and emits index vectors.

The weight file stores the TLMM codes of a linear as one packed little-endian bit stream of
index vectors (``T`` 5-bit codes each, ``T*5`` bits per vector, vectors in buffer order
``[nb][kb][q]``; :mod:`tellme.spec.codes`). A ping-pong tile is a run of consecutive column
blocks, hence one contiguous range of that stream. This block fetches such a range with AXI4
INCR read bursts and repacks the data beats into words of ``lanes`` consecutive vectors, the
unit the weight buffer writes per cycle.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from tellme.spec.codes import CODE_BITS

from .weight_buffer import fill_layout

__all__ = ["WeightStreamer", "StreamCommand", "stream_plan", "split_bursts"]


def _is_pow2(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


class StreamCommand(data.StructLayout):
    """One fetch: vectors ``first .. first+count-1`` of the stream that starts at byte ``addr``.

    ``count`` is in vectors and must be a multiple of the streamer's ``lanes`` (its low bits are
    ignored); ``count == 0`` completes at once.
    """

    def __init__(self, addr_width: int, count_width: int):
        super().__init__({
            "addr": unsigned(addr_width),
            "first": unsigned(count_width),
            "count": unsigned(count_width),
        })


def stream_plan(*, addr: int, first: int, count: int, t: int | None = None, lanes: int,
                data_width: int, max_burst: int,
                vector_bits: int | None = None) -> list[tuple[int, int]]:
    """Reference model of the bursts the streamer issues: a list of (byte address, beats).

    Vectors are ``vector_bits`` wide (default: T 5-bit codes, as in the streamer). Bursts are
    INCR, beat-aligned, at most ``max_burst`` beats and never cross a 4 KB page.
    """
    nbytes = data_width // 8
    if vector_bits is None:
        if t is None:
            raise TypeError("stream_plan needs t or vector_bits")
        vector_bits = CODE_BITS * t
    words = count // lanes
    start_bit = addr * 8 + first * vector_bits
    a0 = (start_bit // data_width) * nbytes
    skip = start_bit % data_width
    beats = -(-(skip + words * lanes * vector_bits) // data_width) if words else 0
    return split_bursts(a0, beats, nbytes=nbytes, max_burst=max_burst)


def split_bursts(addr: int, beats: int, *, nbytes: int, max_burst: int
                 ) -> list[tuple[int, int]]:
    """``beats`` beats of ``nbytes`` bytes from the beat-aligned byte ``addr`` as INCR bursts:
    [(byte address, beats)], at most ``max_burst`` beats each, never across a 4 KB page."""
    out = []
    while beats:
        n = min(beats, max_burst, (4096 - addr % 4096) // nbytes)
        out.append((addr, n))
        addr += n * nbytes
        beats -= n
    return out


class WeightStreamer(wiring.Component):
    """AXI4 read master + gearbox: packed layout-v1 code stream -> words of ``lanes`` vectors.

    Parameters
    ----------
    t : int
        Codes per index vector (T); a vector is ``5*t`` bits (20 for the ``sim`` tiling, 140
        for ``kv260``).
    lanes : int
        Vectors per output word (the weight buffer's fill beat ``v``, a power of two).
        ``lanes*5*t`` bits leave per cycle at most.
    data_width : int
        AXI data width in bits: 128, 256 or 512 (512 stands for several 128-bit PS HP ports
        merged by an interconnect).
    addr_width : int
        AXI address width (40 covers the Zynq UltraScale+ HP port map).
    max_burst : int
        Longest burst in beats (1..256; AXI4 INCR limit 256).
    max_outstanding : int
        Read bursts in flight at most.
    fifo_depth : int
        Beats of the R-channel FIFO. Defaults to ``max_burst*max_outstanding``. A burst is only
        requested once FIFO space for all of its beats is reserved, so ``m_axi_rready`` stays
        high and a slow consumer never stalls the DDR port (it only delays new requests).
    count_width : int
        Width of the command's ``first`` and ``count`` fields.
    jobs : int
        Commands in progress at most (issued bursts not yet emitted as words).
    vector_bits : int, optional
        Bits per vector when the stream is not TLMM codes (default ``5*t``; the KV-cache
        reader of hw/attention/kv_dma.py streams engine beats of ``beat * fmt.bits`` bits, e.g.
        192 bits for 8 FP24 elements). Any width: a vector may start at any bit of an AXI beat
        and span several beats (the gearbox keeps enough beats for the widest case).

    Members
    -------
    i_cmd : In(stream.Signature(StreamCommand))
        Fetch command, accepted once the bursts of the previous one are all requested (and
        fewer than ``jobs`` commands are in progress): the next tile's reads start while the
        gearbox still emits the previous tile, so no read latency is exposed between tiles.
    o : Out(stream.Signature(weight_buffer.fill_layout(t, lanes)))
        Output words ``{vectors, last}``: lane ``j`` of word ``i`` is vector
        ``first + i*lanes + j``; ``last`` marks the final word of a command (one command per
        ping-pong tile, so it connects straight to ``WeightBuffer.i``).
    busy : Out(1)
        High while any accepted command has words left to transfer.
    done : Out(1)
        One-cycle pulse after the last word of each command has been transferred (a zero-count
        command pulses it one cycle after acceptance).
    error : Out(1)
        Sticky until reset: an R beat returned a non-OKAY response (data still flows).
    m_axi_ar* / m_axi_r* : AXI4 read address / read data channels (``arid``/``rid`` are 1 bit,
        always 0: the streamer relies on in-order return). Names bind to cocotbext-axi's
        ``AxiReadBus.from_prefix(dut, "m_axi")``.

    Timing
    ------
    Latency: first AR one cycle after the command is accepted; the first word leaves one cycle
    after its last bit's beat has been read out of the FIFO (the FIFO adds 2 cycles from R beat to
    gearbox). Throughput: one R beat and one output word per cycle at most, so the sustained rate
    is ``min(data_width, lanes*5*t)`` bits per cycle (and what the memory delivers).
    Requests: one AR every other cycle at most. Backpressure: ``o.ready`` low stalls the gearbox;
    the FIFO absorbs the bursts in flight; no data is dropped and ``m_axi_rready`` is driven by the
    FIFO's ``w_rdy`` (never low under the reservation rule).
    """

    def __init__(self, *, t: int, lanes: int = 1, data_width: int = 128,
                 addr_width: int = 40, max_burst: int = 16, max_outstanding: int = 8,
                 fifo_depth: int | None = None, count_width: int = 24, jobs: int = 4,
                 vector_bits: int | None = None):
        try:
            self._init(t, lanes, data_width, addr_width, max_burst, max_outstanding,
                       fifo_depth, count_width, jobs, vector_bits)
        except (TypeError, ValueError):
            self._MustUse__silence = True      # not elaborated: do not warn about it
            raise

    def _init(self, t, lanes, data_width, addr_width, max_burst, max_outstanding,
              fifo_depth, count_width, jobs, vector_bits):
        for name, v in (("t", t), ("lanes", lanes), ("jobs", jobs),
                        ("addr_width", addr_width), ("max_burst", max_burst),
                        ("max_outstanding", max_outstanding), ("count_width", count_width)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise TypeError(f"{name} must be a positive integer, not {v!r}")
        if not _is_pow2(lanes):
            raise ValueError(f"lanes must be a power of two, not {lanes}")
        if data_width not in (128, 256, 512):
            raise ValueError(f"data_width must be 128, 256 or 512, not {data_width!r}")
        if max_burst > 256:
            raise ValueError(f"max_burst must be at most 256 (AXI4 INCR), not {max_burst}")
        if max_burst * data_width // 8 > 4096:
            max_burst = 4096 // (data_width // 8)   # a longer burst could never be issued
        if fifo_depth is None:
            fifo_depth = max_burst * max_outstanding
        if not isinstance(fifo_depth, int) or fifo_depth < max_burst:
            raise ValueError(f"fifo_depth must be an integer >= max_burst ({max_burst}), "
                             f"not {fifo_depth!r}")
        if addr_width < 13:
            raise ValueError(f"addr_width must be at least 13, not {addr_width}")
        if vector_bits is not None and (not isinstance(vector_bits, int) or vector_bits <= 0):
            raise TypeError(f"vector_bits must be a positive integer, not {vector_bits!r}")
        self._t = t
        self._vb = CODE_BITS * t if vector_bits is None else vector_bits
        self._lanes = lanes
        self._dw = data_width
        self._aw = addr_width
        self._max_burst = max_burst
        self._max_out = max_outstanding
        self._depth = fifo_depth
        self._cw = count_width
        self._jobs = jobs
        super().__init__({
            "i_cmd": In(stream.Signature(StreamCommand(addr_width, count_width))),
            "o": Out(stream.Signature(fill_layout(t, lanes) if vector_bits is None else
                                      data.StructLayout({
                                          "vectors": data.ArrayLayout(unsigned(vector_bits),
                                                                      lanes),
                                          "last": 1}))),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(1),
            "m_axi_arid": Out(1),
            "m_axi_araddr": Out(addr_width),
            "m_axi_arlen": Out(8),
            "m_axi_arsize": Out(3),
            "m_axi_arburst": Out(2),
            "m_axi_arlock": Out(1),
            "m_axi_arcache": Out(4),
            "m_axi_arprot": Out(3),
            "m_axi_arqos": Out(4),
            "m_axi_arvalid": Out(1),
            "m_axi_arready": In(1),
            "m_axi_rid": In(1),
            "m_axi_rdata": In(data_width),
            "m_axi_rresp": In(2),
            "m_axi_rlast": In(1),
            "m_axi_rvalid": In(1),
            "m_axi_rready": Out(1),
        })

    t = property(lambda self: self._t)
    lanes = property(lambda self: self._lanes)
    data_width = property(lambda self: self._dw)
    addr_width = property(lambda self: self._aw)
    max_burst = property(lambda self: self._max_burst)
    max_outstanding = property(lambda self: self._max_out)
    count_width = property(lambda self: self._cw)

    def elaborate(self, platform):
        m = Module()
        dw, vb, lanes = self._dw, self._vb, self._lanes
        wb = vb * lanes                       # bits per output word
        nbytes = dw // 8
        lg_bytes = (nbytes - 1).bit_length()
        lg_dw = (dw - 1).bit_length()
        bitaddr_w = self._aw + 3
        beats_w = self._cw + wb.bit_length()

        m.submodules.fifo = fifo = SyncFIFOBuffered(width=dw, depth=self._depth)
        # Commands whose bursts are issued but whose words are not all out: the AR side runs
        # ahead into the next command while the gearbox finishes the previous one.
        job_layout = data.StructLayout({"skip": range(dw), "words": unsigned(self._cw),
                                        "beats": unsigned(beats_w)})
        m.submodules.jobs = jobs = SyncFIFOBuffered(width=job_layout.size, depth=self._jobs)

        beats_left = Signal(beats_w)          # beats of the current command still to request
        ar_addr = Signal(self._aw)            # next burst address (beat-aligned)
        reserved = Signal(range(self._depth + 1))   # FIFO beats requested or buffered
        outstanding = Signal(range(self._max_out + 1))

        # --- command: compute the aligned start and the number of beats --------------------
        cmd = self.i_cmd.payload
        start_bit = Signal(bitaddr_w + 1)
        n_words = Signal(self._cw)
        total_bits = Signal(self._cw + wb.bit_length() + lg_dw + 1)
        n_beats = Signal(beats_w)
        m.d.comb += [
            start_bit.eq(Cat(Const(0, 3), cmd.addr) + cmd.first * vb),
            n_words.eq(cmd.count >> (lanes - 1).bit_length()),
            total_bits.eq(start_bit[:lg_dw] + n_words * wb),
            n_beats.eq((total_bits + (dw - 1)) >> lg_dw),
            self.i_cmd.ready.eq((beats_left == 0) & jobs.w_rdy),
        ]
        accept = Signal()
        m.d.comb += accept.eq(self.i_cmd.valid & self.i_cmd.ready)
        job_in = data.View(job_layout, jobs.w_data)
        m.d.comb += [
            job_in.skip.eq(start_bit[:lg_dw]),
            job_in.words.eq(n_words),
            job_in.beats.eq(n_beats),
            jobs.w_en.eq(accept & (n_words != 0)),
        ]
        with m.If(accept):
            m.d.sync += [
                beats_left.eq(Mux(n_words != 0, n_beats, 0)),
                ar_addr.eq(start_bit[lg_dw:] << lg_bytes),
            ]

        # --- AR channel: bursts capped by max_burst, the 4 KB page and FIFO space ------------
        to_page = Signal(range(4096 // nbytes + 1))
        blen = Signal(range(self._max_burst + 1))
        m.d.comb += to_page.eq((4096 - ar_addr[:12]) >> lg_bytes)
        with m.If((beats_left <= self._max_burst) & (beats_left <= to_page)):
            m.d.comb += blen.eq(beats_left)
        with m.Elif(to_page <= self._max_burst):
            m.d.comb += blen.eq(to_page)
        with m.Else():
            m.d.comb += blen.eq(self._max_burst)

        r_last_beat = Signal()
        m.d.comb += r_last_beat.eq(self.m_axi_rvalid & self.m_axi_rready & self.m_axi_rlast)
        issue = Signal()
        m.d.comb += issue.eq(~self.m_axi_arvalid & (beats_left != 0)
                             & ((outstanding < self._max_out) | r_last_beat)
                             & (reserved + blen <= self._depth))
        pop = Signal()                          # gearbox takes a beat from the FIFO
        m.d.sync += reserved.eq(reserved + Mux(issue, blen, 0) - pop)
        m.d.sync += outstanding.eq(outstanding + issue - r_last_beat)
        with m.If(issue):
            m.d.sync += [
                self.m_axi_arvalid.eq(1),
                self.m_axi_araddr.eq(ar_addr),
                self.m_axi_arlen.eq(blen - 1),
                ar_addr.eq(ar_addr + (blen << lg_bytes)),
                beats_left.eq(beats_left - blen),
            ]
        with m.Elif(self.m_axi_arready):
            m.d.sync += self.m_axi_arvalid.eq(0)
        m.d.comb += [
            self.m_axi_arid.eq(0),
            self.m_axi_arsize.eq(lg_bytes),
            self.m_axi_arburst.eq(1),             # INCR
            self.m_axi_arcache.eq(0b0011),        # normal non-cacheable bufferable
        ]

        # --- R channel into the FIFO ------------------------------------------------------
        m.d.comb += [
            fifo.w_data.eq(self.m_axi_rdata),
            fifo.w_en.eq(self.m_axi_rvalid),
            self.m_axi_rready.eq(fifo.w_rdy),
        ]
        with m.If(self.m_axi_rvalid & self.m_axi_rready & (self.m_axi_rresp != 0)):
            m.d.sync += self.error.eq(1)

        # --- gearbox: beats sit in `slots` (beat-aligned); a word is read at bit offset `off`
        # of slot 0, so the only variable shifter is the word extraction (offset < data_width).
        n_slots = -(-(dw - 1 + wb) // dw)     # enough for any offset plus one word
        g_active = Signal()
        g_words = Signal(self._cw)            # words of the current job still to emit
        g_beats = Signal(beats_w)             # beats of the current job still to load
        job_out = data.View(job_layout, jobs.r_data)
        slots = [Signal(dw, name=f"slot{i}") for i in range(n_slots)]
        cnt = Signal(range(n_slots + 1))      # valid slots
        off = Signal(range(dw))               # bit offset of the next word in slot 0
        m.d.comb += jobs.r_en.eq(~g_active)
        with m.If(~g_active & jobs.r_rdy):
            m.d.sync += [g_active.eq(1), g_words.eq(job_out.words), g_beats.eq(job_out.beats),
                         off.eq(job_out.skip)]

        # The word extraction shifts by `off`, always a multiple of g = gcd(8, vector bits):
        # the skip is a byte address times 8 plus a vector index times the vector bits, and a
        # word (lanes vectors) advances it by a multiple of g. So the shifter is g shifters of
        # every g-th bit by off / g, log2(g) mux levels fewer than one by off (timing proxy:
        # 7 levels instead of 9 at T=28, docs/hw/timing.md).
        g = 1 << min(3, (vb & -vb).bit_length() - 1)
        lg_g = g.bit_length() - 1
        flat = Cat(*slots)
        planes = [Signal(-(-wb // g), name=f"plane{p}") for p in range(g)]
        m.d.comb += [planes[p].eq(flat[p::g] >> off[lg_g:]) for p in range(g)]
        word = Cat(*(planes[j % g][j // g] for j in range(wb)))
        take = Signal()
        m.d.comb += [
            self.o.payload.vectors.eq(word),
            self.o.payload.last.eq(g_words == 1),
            self.o.valid.eq(g_active & (off + wb <= (cnt << lg_dw))),
            take.eq(self.o.valid & self.o.ready),
        ]
        end_bit = Signal(range(dw + wb))
        drop = Signal(range(n_slots + 1))     # slots fully consumed by this cycle's word
        cnt_k = Signal(range(n_slots + 1))
        m.d.comb += [
            end_bit.eq(off + wb),
            drop.eq(Mux(take, end_bit >> lg_dw, 0)),
            cnt_k.eq(cnt - drop),
            pop.eq(g_active & (g_beats != 0) & fifo.r_rdy & (cnt_k < n_slots)),
            fifo.r_en.eq(pop),
        ]
        with m.If(take):
            m.d.sync += off.eq(end_bit[:lg_dw])
        m.d.sync += cnt.eq(cnt_k + pop)
        with m.If(pop):
            m.d.sync += g_beats.eq(g_beats - 1)
        for i in range(n_slots):
            kept = Signal(dw, name=f"kept{i}")
            with m.Switch(drop):
                for d in range(n_slots + 1):
                    with m.Case(d):
                        m.d.comb += kept.eq(slots[i + d] if i + d < n_slots else 0)
            m.d.sync += slots[i].eq(Mux(pop & (cnt_k == i), fifo.r_data, kept))
        m.d.sync += self.done.eq(accept & (n_words == 0))
        with m.If(take):
            m.d.sync += g_words.eq(g_words - 1)
            with m.If(g_words == 1):
                # The last word needs the job's last beat, so every beat has been loaded; the
                # bits past the end of the range (tail of that beat) are dropped here.
                m.d.sync += [g_active.eq(0), self.done.eq(1), cnt.eq(0), off.eq(0)]
        m.d.comb += self.busy.eq((beats_left != 0) | jobs.r_rdy | g_active)
        return m


def report_blocks() -> dict:
    """``{name: (description, maker(HwPreset, StreamFormat))}`` for tellme.hw.report (yosys
    estimates; the streamer does not depend on the stream format): the
    streamer as the benchmark configures it (512-bit AXI, bursts of 16, 8 outstanding)."""
    return {
        "weight_stream": ("AXI4 weight streamer, 512-bit, gearbox to v vectors/cycle",
                          lambda hp, fmt: WeightStreamer(t=hp.t, lanes=hp.v, data_width=512,
                                                    max_burst=16, max_outstanding=8)),
        # the top's LinearUnit today: one 128-bit HP port (hw/linear.py's defaults)
        "weight_stream_hp0": ("AXI4 weight streamer on one 128-bit port, as the top's "
                              "LinearUnit builds it",
                              lambda hp, fmt: WeightStreamer(t=hp.t, lanes=hp.v,
                                                             data_width=128, max_burst=16,
                                                             max_outstanding=8)),
    }
