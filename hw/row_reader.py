"""Byte-granular row reader of the execution units (docs/hw/top.md): one AXI4 read master
that turns a byte range of ``count`` vectors of ``lanes`` elements into a stream of vectors,
with the element size chosen per command (2, 3 or 4 bytes: a 16-bit float, FP24, a float32 or
a u32 id), so the same mover reads stream-format rows, weight-file float rows and token ids.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from tellme.spec.memory_map import ADDR_BITS

from .attention.kv_dma import burst_read_master
from .axi_arbiter import read_port_members
from .convert import float_row_layout

__all__ = ["RowReader", "row_read_layout", "row_read_beats"]


def row_read_layout(addr_width: int, count_width: int) -> data.StructLayout:
    """``count`` vectors of ``lanes`` elements of ``ebytes`` bytes (2, 3 or 4) from byte
    ``addr`` (any byte)."""
    return data.StructLayout({"addr": unsigned(addr_width), "count": unsigned(count_width),
                              "ebytes": unsigned(3)})


def row_read_beats(addr: int, count: int, ebytes: int, lanes: int, data_width: int = 128
                   ) -> int:
    """AXI beats a command reads: those holding its bytes (0 for ``count`` 0)."""
    nb = data_width // 8
    if count == 0:
        return 0
    return (addr % nb + count * ebytes * lanes + nb - 1) // nb


class RowReader(wiring.Component):
    """Vectors of ``lanes`` elements of 2, 3 or 4 bytes from DDR.

    Parameters: ``lanes`` (a power of two, at most ``data_width / 32``), ``data_width`` (AXI:
    128 or 256), ``addr_width``, ``count_width`` (vectors per command), ``max_burst``,
    ``max_outstanding`` (read bursts in flight; the R FIFO holds their beats), ``jobs``
    (commands queued between the address and the data side).

    Members
    -------
    i_cmd : In(stream row_read_layout)  taken once the previous command's bursts are all
        requested and a job slot is free (the reader runs ahead by ``jobs`` commands).
    o : Out(stream float_row_layout(lanes))  ``count`` vectors per command: element i in the
        low ``8 * ebytes`` bits of word i (zero above), ``last`` on the command's final vector.
        A command with ``count`` 0 reads and emits nothing.
    busy : Out(1)  a command is queued or in flight.
    error : Out(1)  sticky: an R response was not OKAY (reset the reader to clear it).
    m_axi_ar* / m_axi_r*  AXI4 read channels (``burst_read_master``: INCR bursts within
        4 KiB pages, id 0, in order).

    Datapath: the AXI beats holding the command's bytes (``row_read_beats``) pass through the
    R FIFO into a window of two beats; a vector is the ``lanes * ebytes`` bytes at the window
    pointer (a byte multiplexer per output byte), split into elements. The pointer starts at
    ``addr``'s offset in its beat and advances by the vector's bytes; a window beat is dropped
    once used up, and after a command's last vector the beats it touched are dropped, so the
    next command starts on its own first beat.

    Timing: the command is registered, its beat count computed the cycle after. Throughput:
    one vector per cycle while the memory keeps up (a vector is at most one AXI beat), with
    a cycle lost when a command ends on a beat that the window has to refill twice.
    Backpressure: ``o.ready`` low stalls the data side; the R FIFO absorbs the bursts in
    flight, so ``rready`` stays high.
    """

    def __init__(self, *, lanes: int = 2, data_width: int = 128, addr_width: int = ADDR_BITS,
                 count_width: int = 16, max_burst: int = 16, max_outstanding: int = 2,
                 jobs: int = 2):
        if data_width not in (128, 256) or lanes < 1 or lanes & (lanes - 1) \
                or 32 * lanes > data_width:
            self._MustUse__silence = True           # never elaborated: no warning for it
            if data_width not in (128, 256):
                raise ValueError(f"RowReader data_width must be 128 or 256, not {data_width!r}")
            raise ValueError(f"RowReader lanes must be a power of two <= {data_width // 32}, "
                             f"not {lanes!r}")
        self.lanes, self.data_width, self.addr_width = lanes, data_width, addr_width
        self.count_width, self.max_burst = count_width, min(max_burst, 4096 * 8 // data_width)
        self.max_outstanding, self.jobs = max_outstanding, jobs
        sig = {"i_cmd": In(stream.Signature(row_read_layout(addr_width, count_width))),
               "o": Out(stream.Signature(float_row_layout(lanes))),
               "busy": Out(1), "error": Out(1)}
        sig.update(read_port_members("m_axi", addr_width, data_width, master=True))
        super().__init__(sig)

    def elaborate(self, platform):
        m = Module()
        L, dw, AW, CW = self.lanes, self.data_width, self.addr_width, self.count_width
        NB = dw // 8
        lnb, ll = NB.bit_length() - 1, L.bit_length() - 1
        VB = 4 * L                                   # widest vector, bytes

        # ---- address side: register the command, then its beat range and a job
        c = self.i_cmd.payload
        q_addr, q_count, q_eb = Signal(AW), Signal(CW), Signal(3)
        load = Signal()
        r_addr = Signal(AW)
        r_beats = Signal(CW + 4)
        job_lay = data.StructLayout({"ptr": unsigned(lnb), "count": unsigned(CW),
                                     "eb": unsigned(3)})
        m.submodules.jobs = jobs = fifo.SyncFIFOBuffered(width=job_lay.size, depth=self.jobs)
        m.d.comb += self.i_cmd.ready.eq(~load & (r_beats == 0) & jobs.w_rdy)
        m.d.sync += load.eq(self.i_cmd.valid & self.i_cmd.ready)
        with m.If(self.i_cmd.valid & self.i_cmd.ready):
            m.d.sync += [q_addr.eq(c.addr), q_count.eq(c.count), q_eb.eq(c.ebytes)]
        elems = Mux(q_eb == 3, (q_count << 1) + q_count, Mux(q_eb == 4, q_count << 2,
                                                            q_count << 1))
        nbytes = (elems << ll) + q_addr[:lnb]
        job = Signal(job_lay)
        m.d.comb += [job.ptr.eq(q_addr[:lnb]), job.count.eq(q_count), job.eb.eq(q_eb),
                     jobs.w_data.eq(job), jobs.w_en.eq(load)]
        pop = Signal()
        rf = burst_read_master(m, self, "m_axi", addr=r_addr, beats=r_beats, pop=pop,
                               max_burst=self.max_burst, max_outstanding=self.max_outstanding,
                               error=self.error)
        with m.If(load):
            m.d.sync += [r_addr.eq(Cat(Const(0, lnb), q_addr[lnb:])),
                         r_beats.eq(Mux(q_count == 0, 0, (nbytes + NB - 1) >> lnb))]

        # ---- data side: a window of two beats, a byte pointer into it
        g_active = Signal()
        g = Signal(job_lay)
        left = Signal(CW)
        ptr = Signal(lnb)
        w = [Signal(dw, name=f"w{i}") for i in range(2)]
        v = [Signal(name=f"v{i}") for i in range(2)]
        with m.If(~g_active & jobs.r_rdy):
            jd = data.View(job_lay, jobs.r_data)
            m.d.comb += jobs.r_en.eq(1)
            m.d.sync += [g.eq(jd), left.eq(jd.count), ptr.eq(jd.ptr),
                         g_active.eq(jd.count != 0)]
        nb = Signal(range(VB + 1))                   # bytes of a vector
        m.d.comb += nb.eq(g.eb << ll)
        need = Signal(lnb + 2)                       # window bytes used after this vector
        m.d.comb += need.eq(ptr + nb)
        last = left == 1
        m.d.comb += self.o.valid.eq(g_active & v[0] & ((need <= NB) | v[1]))
        window = Cat(*w)
        vbytes = [Signal(8, name=f"b{k}") for k in range(VB)]
        for k, b in enumerate(vbytes):
            with m.Switch(ptr):
                for p in range(NB):
                    if p + k < 2 * NB:
                        with m.Case(p):
                            m.d.comb += b.eq(window[(p + k) * 8:(p + k + 1) * 8])
        for i in range(L):
            word = self.o.payload.data[i]
            with m.Switch(g.eb):
                for eb in (2, 3, 4):
                    with m.Case(eb):
                        m.d.comb += word.eq(Cat(*vbytes[i * eb:(i + 1) * eb]))
        m.d.comb += self.o.payload.last.eq(last)

        fire = Signal()
        m.d.comb += fire.eq(self.o.valid & self.o.ready)
        used = Signal(range(3))                      # window beats dropped this cycle
        with m.If(fire):
            m.d.sync += [left.eq(left - 1), ptr.eq(need[:lnb])]
            with m.If(last):
                m.d.sync += g_active.eq(0)
                m.d.comb += used.eq(Mux(need > NB, 2, 1))
            with m.Else():
                m.d.comb += used.eq(need >= NB)
        # shift the window by ``used`` beats, then fill its first empty slot from the FIFO
        kept = [Mux(used == 0, w[0], w[1]), w[1]]
        kept_v = [Mux(used == 0, v[0], Mux(used == 1, v[1], 0)), (used == 0) & v[1]]
        m.d.comb += pop.eq(rf.r_rdy & ~(kept_v[0] & kept_v[1]))
        m.d.sync += [w[0].eq(kept[0]), w[1].eq(kept[1]), v[0].eq(kept_v[0]),
                     v[1].eq(kept_v[1])]
        with m.If(pop):
            with m.If(~kept_v[0]):
                m.d.sync += [w[0].eq(rf.r_data), v[0].eq(1)]
            with m.Else():
                m.d.sync += [w[1].eq(rf.r_data), v[1].eq(1)]

        m.d.comb += self.busy.eq(load | (r_beats != 0) | jobs.r_rdy | g_active | v[0])
        return m
