"""AXI4 read striper: one wide logical read port built from several 128-bit physical ports.

The linears' weight codes stream through one AXI HP port (16 B/cycle at 250 MHz) while the
KV260's DDR sustains about 58 B/cycle and the shell has three weight masters (``m_axi_w0..w2``,
spec/shell.py). :class:`AxiReadStriper` serves a ``data_width``-bit (512) in-order INCR read
master, e.g. ``WeightStreamer(data_width=512)`` or ``burst_read_master``, and splits each of
its bursts over ``ports`` physical 128-bit masters, so the three HP ports read in parallel.

Split (:func:`stripe_plan`): a logical burst of B beats of 64 bytes (contiguous, beat-aligned,
inside one 4 KiB page) is cut into ``ports`` contiguous chunks of whole 64-byte beats, chunk k
(in address order) on port k, as one 128-bit INCR burst of 4 x (its beats). The sizes are as
even as possible: ``B // ports`` each, and the ``B % ports`` extra beats go to the ports
``first, first+1, ...`` (mod ``ports``), where ``first`` rotates by the extras handed out, so
over a stream every port gets the same share (with a fixed choice, port 0 would get 6 of 16
beats every time and cap the rate at 16/24 = 0.67 beats/cycle). A chunk is empty when
B < ``ports`` (no burst on that port); chunks never cross 4 KiB since the logical burst does not.
:func:`stripe_stream` threads the rotation through a sequence of bursts, as the hardware does.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import fifo, wiring

from tellme.spec.memory_map import ADDR_BITS

from .axi_arbiter import read_port_members

__all__ = ["AxiReadStriper", "chunk_beats", "stripe_plan", "stripe_stream", "report_blocks"]


def chunk_beats(beats: int, ports: int, first: int = 0) -> list[int]:
    """Logical beats per port of a burst of ``beats``: ``beats // ports`` each, one more for
    the ``beats % ports`` ports from ``first`` on (mod ``ports``)."""
    q, r = divmod(beats, ports)
    return [q + ((k - first) % ports < r) for k in range(ports)]


def stripe_plan(addr: int, beats: int, ports: int = 3, *, first: int = 0,
                data_width: int = 512, port_width: int = 128) -> list[tuple[int, int, int]]:
    """The physical bursts of one logical burst: [(port, byte address, port beats)], one per
    non-empty chunk in port (= address) order. ``first``: the port that gets the first extra
    beat (the striper's rotation state; 0 after reset)."""
    nb, ratio = data_width // 8, data_width // port_width
    if addr % nb:
        raise ValueError(f"address {addr:#x} is not aligned to a {nb}-byte beat")
    if beats < 1 or addr // 4096 != (addr + beats * nb - 1) // 4096:
        raise ValueError(f"burst {addr:#x}+{beats} beats is empty or crosses 4 KiB")
    out, a = [], addr
    for k, n in enumerate(chunk_beats(beats, ports, first)):
        if n:
            out.append((k, a, n * ratio))
        a += n * nb
    return out


def stripe_stream(bursts, ports: int = 3, **kw) -> list[list[tuple[int, int, int]]]:
    """:func:`stripe_plan` of each (address, beats) of a stream, the rotation threaded through
    from reset (``first`` advances by ``beats % ports`` per burst)."""
    first, out = 0, []
    for addr, beats in bursts:
        out.append(stripe_plan(addr, beats, ports, first=first, **kw))
        first = (first + beats % ports) % ports
    return out


def _worst(a, b):
    """The worse of two RRESP codes (OKAY 0 < EXOKAY 1 < SLVERR 2 < DECERR 3)."""
    return Mux(a > b, a, b)


class AxiReadStriper(wiring.Component):
    """One ``data_width``-bit AXI4 read slave over ``ports`` ``port_width``-bit read masters.

    Parameters: ``ports`` (default 3), ``addr_width``, ``data_width`` (logical, 512),
    ``port_width`` (physical, 128), ``max_outstanding`` (logical bursts accepted and not yet
    returned in full), ``fifo_depth`` (512-bit words per port FIFO), ``max_burst`` (longest
    logical burst served, in beats; 64 = a whole 4 KiB page, the AXI limit at 512 bits).

    Members
    -------
    s_ar* / s_r*  the logical port, served as an AXI slave (``read_port_members("s", ...,
        master=False)``). Contract, as ``burst_read_master`` and ``WeightStreamer`` issue
        them: INCR bursts of ``arsize`` = log2(data_width / 8) at beat-aligned addresses, at
        most ``max_burst`` beats, never across 4 KiB; ``arid`` 0 (``rid`` is 0); ``arsize``/
        ``arburst``/``arid``/``arcache``... are not looked at. R returns in order: the burst's
        words in address order, RLAST on its last; RRESP of a word = the worst RRESP of its
        ``data_width / port_width`` sub-beats (non-OKAY sub-beat -> non-OKAY word).
    m<k>_ar* / m<k>_r* (k < ports)  physical masters: INCR bursts (``arsize`` log2(port_width
        / 8), ``arcache`` 0b0011, id 0), chunk k of each logical burst (:func:`stripe_plan`).

    Datapath: the logical AR is registered; the cycle after, its chunk sizes (a table of
    ``arlen`` and the rotation) and addresses go into one command FIFO per port and the sizes
    into an order FIFO (``max_outstanding`` deep each; AR waits when one is full). Each port
    issues its chunks in order, each only once the chunk's words are reserved in its data FIFO
    (so ``rready`` stays high, as in ``burst_read_master``); a port packs ``data_width /
    port_width`` R beats into a word (first beat lowest) and writes it with its worst RRESP.
    The R side walks the order FIFO's head, port 0's chunk then port 1's ..., skipping empty
    chunks without a bubble, into a registered R output (1 word/cycle with RREADY high).

    Rate: each port takes one R beat per cycle, so with memory returning a beat a cycle on
    every port the logical side sustains ``ports * port_width / data_width`` beats/cycle
    (3 x 16 B = 48 B/cycle, 0.75 beats/cycle) for streams of long bursts (16 beats: 0.75
    measured, tests/rtl/test_axi_stripe.py), as long as each port's AR latency is covered by the
    bursts reserved ahead (``fifo_depth`` words). A port issues at most one AR every two cycles,
    so very short bursts (1..2 beats) run slower. Latency (idle striper): the physical ARVALID
    rises 3 cycles after the logical AR handshake (AR register, command FIFO, AR register);
    a word is written to its port FIFO with its last sub-beat and reaches RVALID ~3 cycles
    later (FIFO output register, R register). Measured with cocotbext-axi AxiRamRead: 4 cycles
    from the logical to the physical AR handshake, 12 to the first logical R transfer.
    """

    def __init__(self, *, ports: int = 3, addr_width: int = ADDR_BITS, data_width: int = 512,
                 port_width: int = 128, max_outstanding: int = 8, fifo_depth: int = 32,
                 max_burst: int = 64):
        if ports < 1 or data_width % port_width or data_width // port_width < 1 \
                or port_width not in (32, 64, 128, 256, 512) or max_burst < 1 \
                or max_burst * data_width // 8 > 4096:
            self._MustUse__silence = True
            raise ValueError(f"bad striper parameters: ports {ports}, data_width {data_width}, "
                             f"port_width {port_width}, max_burst {max_burst}")
        ratio = data_width // port_width
        self.max_chunk = -(-max_burst // ports)
        if fifo_depth < max(2, self.max_chunk) or self.max_chunk * ratio > 256:
            self._MustUse__silence = True
            raise ValueError(f"fifo_depth {fifo_depth} must hold a chunk of {self.max_chunk} "
                             f"words (and a chunk must fit a 256-beat burst)")
        if max_outstanding < 1:
            self._MustUse__silence = True
            raise ValueError(f"max_outstanding must be >= 1, not {max_outstanding}")
        self.ports, self.addr_width, self.data_width = ports, addr_width, data_width
        self.port_width, self.max_outstanding = port_width, max_outstanding
        self.fifo_depth, self.max_burst = fifo_depth, max_burst
        members = read_port_members("s", addr_width, data_width, master=False)
        for k in range(ports):
            members.update(read_port_members(f"m{k}", addr_width, port_width, master=True))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        P, AW, DW, PW = self.ports, self.addr_width, self.data_width, self.port_width
        R = DW // PW
        lnb, lpb = (DW // 8).bit_length() - 1, (PW // 8).bit_length() - 1
        D = self.fifo_depth
        NW = Signal(range(self.max_chunk + 1)).shape().width   # bits of a chunk size

        # ---- AR: register the logical burst, then split it into the command FIFOs
        held = Signal()
        h_addr = Signal(AW)
        h_len = Signal(8)
        rot = Signal(range(P))                      # port of the next extra beat
        q = Signal(NW)
        r = Signal(range(P))
        with m.Switch(h_len):
            for ln in range(self.max_burst):
                with m.Case(ln):
                    m.d.comb += [q.eq((ln + 1) // P), r.eq((ln + 1) % P)]
        n = [Signal(NW, name=f"n{k}") for k in range(P)]
        with m.Switch(rot):
            for s in range(P):
                with m.Case(s):
                    for k in range(P):
                        m.d.comb += n[k].eq(q + (r > (k - s) % P))
        cmds, addrs = [], []
        off = Const(0, NW + 2)
        for k in range(P):
            a = Signal(AW, name=f"chunk_addr{k}")
            m.d.comb += a.eq(h_addr + (off << lnb))
            addrs.append(a)
            off = off + n[k]
            c = fifo.SyncFIFOBuffered(width=AW + NW, depth=self.max_outstanding)
            m.submodules[f"cmd{k}"] = c
            cmds.append(c)
        order = fifo.SyncFIFOBuffered(width=P * NW, depth=self.max_outstanding)
        m.submodules.order = order
        push = Signal()
        m.d.comb += push.eq(held & order.w_rdy)
        for c in cmds:
            with m.If(~c.w_rdy):
                m.d.comb += push.eq(0)
        for k, c in enumerate(cmds):
            m.d.comb += [c.w_data.eq(Cat(addrs[k], n[k])), c.w_en.eq(push & (n[k] != 0))]
        m.d.comb += [order.w_data.eq(Cat(*n)), order.w_en.eq(push)]
        rot_next = rot + r
        with m.If(push):
            m.d.sync += rot.eq(Mux(rot_next >= P, rot_next - P, rot_next))
        m.d.comb += self.s_arready.eq(~held | push)
        with m.If(self.s_arvalid & self.s_arready):
            m.d.sync += [held.eq(1), h_addr.eq(self.s_araddr), h_len.eq(self.s_arlen)]
        with m.Elif(push):
            m.d.sync += held.eq(0)

        # ---- per port: issue reserved chunks, pack R beats into words
        datas, pops = [], []
        for k, c in enumerate(cmds):
            def ax(name, k=k):
                return getattr(self, f"m{k}_{name}")

            df = fifo.SyncFIFOBuffered(width=DW + 2, depth=D)
            m.submodules[f"data{k}"] = df
            datas.append(df)
            pop = Signal(name=f"pop{k}")
            pops.append(pop)
            c_addr, c_n = c.r_data[:AW], c.r_data[AW:]
            reserved = Signal(range(D + 1), name=f"reserved{k}")
            issue = Signal(name=f"issue{k}")
            m.d.comb += [issue.eq(~ax("arvalid") & c.r_rdy & (reserved + c_n <= D)),
                         c.r_en.eq(issue)]
            m.d.sync += reserved.eq(reserved + Mux(issue, c_n, 0) - pop)
            with m.If(issue):
                m.d.sync += [ax("arvalid").eq(1), ax("araddr").eq(c_addr),
                             ax("arlen").eq((c_n << (R.bit_length() - 1)) - 1)]
            with m.Elif(ax("arready")):
                m.d.sync += ax("arvalid").eq(0)
            m.d.comb += [ax("arsize").eq(lpb), ax("arburst").eq(1), ax("arcache").eq(0b0011),
                         ax("rready").eq(df.w_rdy)]
            beat = Signal(name=f"beat{k}")
            m.d.comb += beat.eq(ax("rvalid") & ax("rready"))
            racc = Signal(2, name=f"racc{k}")
            worst = Signal(2, name=f"worst{k}")
            m.d.comb += worst.eq(_worst(racc, ax("rresp")))
            if R == 1:
                m.d.comb += [df.w_data.eq(Cat(ax("rdata"), ax("rresp"))), df.w_en.eq(beat)]
                continue
            cnt = Signal(range(R), name=f"cnt{k}")
            acc = Signal(PW * (R - 1), name=f"acc{k}")
            m.d.comb += [df.w_data.eq(Cat(acc, ax("rdata"), worst)),
                         df.w_en.eq(beat & (cnt == R - 1))]
            with m.If(beat):
                with m.If(cnt == R - 1):
                    m.d.sync += [cnt.eq(0), racc.eq(0)]
                with m.Else():
                    m.d.sync += [cnt.eq(cnt + 1), racc.eq(worst)]
                    with m.Switch(cnt):
                        for i in range(R - 1):
                            with m.Case(i):
                                m.d.sync += acc[i * PW:(i + 1) * PW].eq(ax("rdata"))

        # ---- R: the head burst's chunks in port order into a registered output
        hn = [order.r_data[k * NW:(k + 1) * NW] for k in range(P)]
        cur = Signal(range(P))                      # first port not finished in the head
        ocnt = Signal(NW)                           # words taken from the current chunk
        eff = Signal(range(P))                      # first non-empty chunk from cur on
        for k in reversed(range(P)):
            with m.If((cur <= k) & (hn[k] != 0)):
                m.d.comb += eff.eq(k)
        later = Signal()                            # a non-empty chunk after eff
        n_eff = Signal(NW)
        src_rdy = Signal()
        src = Signal(DW + 2)
        with m.Switch(eff):
            for k in range(P):
                with m.Case(k):
                    m.d.comb += [later.eq(Cat(*[hn[j] != 0 for j in range(k + 1, P)]).any()
                                          if k + 1 < P else 0),
                                 n_eff.eq(hn[k]), src_rdy.eq(datas[k].r_rdy),
                                 src.eq(datas[k].r_data)]
        end_chunk = Signal()
        end_burst = Signal()
        take = Signal()
        m.d.comb += [end_chunk.eq(ocnt == n_eff - 1), end_burst.eq(end_chunk & ~later),
                     take.eq(order.r_rdy & src_rdy & (~self.s_rvalid | self.s_rready))]
        for k in range(P):
            m.d.comb += [pops[k].eq(take & (eff == k)), datas[k].r_en.eq(pops[k])]
        m.d.comb += [order.r_en.eq(take & end_burst), self.s_rid.eq(0)]
        with m.If(take):
            m.d.sync += [self.s_rvalid.eq(1), self.s_rdata.eq(src[:DW]),
                         self.s_rresp.eq(src[DW:]), self.s_rlast.eq(end_burst)]
            with m.If(end_chunk):
                m.d.sync += [ocnt.eq(0), cur.eq(Mux(end_burst, 0, eff + 1))]
            with m.Else():
                m.d.sync += ocnt.eq(ocnt + 1)
        with m.Elif(self.s_rready):
            m.d.sync += self.s_rvalid.eq(0)
        return m


def report_blocks() -> dict:
    """``{name: (description, maker(HwPreset, StreamFormat))}`` for tellme.hw.report."""
    return {
        "axi_striper": ("AXI4 read striper: one 512-bit read port over 3 128-bit HP ports",
                        lambda hp, fmt: AxiReadStriper(ports=3, addr_width=ADDR_BITS,
                                                       data_width=512, port_width=128)),
    }
