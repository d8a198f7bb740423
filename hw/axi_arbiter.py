"""AXI4 read arbiter: several in-order read masters share one AXI4 read port (docs/hw/top.md).

The top's ``m_axi_kv`` read channel serves the sequencer's program fetch and the execution
units' row readers. Every client issues INCR bursts with id 0 and relies on in-order return,
so one id suffices on the shared port too: the arbiter grants one AR at a time, remembers the
owner of every burst in flight in an order FIFO, and routes R beats to the owner at the FIFO's
head until its ``rlast``.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

__all__ = ["AxiReadArbiter", "AR_SIGNALS", "R_SIGNALS", "read_port_members"]

# (name, width or None for the address/data width) of the master's outputs on AR and inputs on R
AR_SIGNALS = (("arid", 1), ("araddr", None), ("arlen", 8), ("arsize", 3), ("arburst", 2),
              ("arlock", 1), ("arcache", 4), ("arprot", 3), ("arqos", 4))
R_SIGNALS = (("rid", 1), ("rdata", None), ("rresp", 2), ("rlast", 1))


def read_port_members(prefix: str, addr_width: int, data_width: int, *, master: bool) -> dict:
    """Members of one AXI4 read port named ``<prefix>_ar*`` / ``<prefix>_r*``: ``master`` True
    for the port a master drives (AR out, R in), False for the side that serves one."""
    out_, in_ = (Out, In) if master else (In, Out)
    mem = {f"{prefix}_{n}": out_(w or addr_width) for n, w in AR_SIGNALS}
    mem[f"{prefix}_arvalid"] = out_(1)
    mem[f"{prefix}_arready"] = in_(1)
    mem.update({f"{prefix}_{n}": in_(w or data_width) for n, w in R_SIGNALS})
    mem[f"{prefix}_rvalid"] = in_(1)
    mem[f"{prefix}_rready"] = out_(1)
    return mem


class AxiReadArbiter(wiring.Component):
    """``clients`` read masters -> one AXI4 read port.

    Members
    -------
    s<i>_ar* / s<i>_r* (i < clients)
        Client ports, served like an AXI slave (connect a master's ``m_axi_*`` to them).
    m_axi_ar* / m_axi_r*
        The shared port (id 0).
    active : Out(clients)
        Per client: an R beat of it was transferred this cycle (for activity counters).

    Grant: round-robin over the clients with ARVALID, one AR at a time; a grant is held until
    its AR handshake (AXI keeps ARVALID and the address stable until then). The owner enters
    the order FIFO (``outstanding`` bursts in flight at most; AR waits when it is full).
    R: the head owner sees RVALID and drives RREADY; its RLAST pops the FIFO. Latency: one
    cycle from a client's ARVALID to the shared ARVALID; R passes combinationally.
    """

    def __init__(self, *, clients: int, addr_width: int = 40, data_width: int = 128,
                 outstanding: int = 16):
        if clients < 1:
            raise ValueError(f"an arbiter needs at least one client, not {clients}")
        self.clients, self.outstanding = clients, outstanding
        self.addr_width, self.data_width = addr_width, data_width
        members = read_port_members("m_axi", addr_width, data_width, master=True)
        for i in range(clients):
            members.update(read_port_members(f"s{i}", addr_width, data_width, master=False))
        members["active"] = Out(clients)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        n = self.clients
        order = SyncFIFOBuffered(width=max(1, (n - 1).bit_length()), depth=self.outstanding)
        m.submodules.order = order

        def port(i, sig):
            return getattr(self, f"s{i}_{sig}")

        # ---- AR: pick, hold until the handshake
        granted = Signal()
        sel = Signal(range(n))
        rr = Signal(range(n))             # the client after the last grant goes first
        arvalids = [port(i, "arvalid") for i in range(n)]
        pick = Signal(range(n))
        found = Signal()
        for k in reversed(range(n)):       # later assignments win: rotated index 0 first
            cand = Signal(range(n), name=f"cand{k}")
            m.d.comb += cand.eq(Mux(rr + k >= n, rr + k - n, rr + k))
            with m.If(_sel_bit(m, arvalids, cand)):
                m.d.comb += [pick.eq(cand), found.eq(1)]
        with m.If(~granted & found):
            m.d.sync += [granted.eq(1), sel.eq(pick)]
        hs = Signal()
        m.d.comb += hs.eq(self.m_axi_arvalid & self.m_axi_arready)
        for sig, _ in AR_SIGNALS:
            m.d.comb += getattr(self, f"m_axi_{sig}").eq(
                _mux(m, [port(i, sig) for i in range(n)], sel, f"ar_{sig}"))
        m.d.comb += self.m_axi_arvalid.eq(granted & order.w_rdy & _sel_bit(m, arvalids, sel))
        for i in range(n):
            m.d.comb += port(i, "arready").eq(granted & (sel == i) & order.w_rdy
                                              & self.m_axi_arready)
        m.d.comb += [order.w_data.eq(sel), order.w_en.eq(hs)]
        with m.If(hs):
            m.d.sync += [granted.eq(0), rr.eq(Mux(sel == n - 1, 0, sel + 1))]

        # ---- R: to the head owner
        head = order.r_data
        for i in range(n):
            mine = order.r_rdy & (head == i)
            for sig, _ in R_SIGNALS:
                m.d.comb += port(i, sig).eq(getattr(self, f"m_axi_{sig}"))
            m.d.comb += [port(i, "rvalid").eq(mine & self.m_axi_rvalid),
                         self.active[i].eq(mine & self.m_axi_rvalid & port(i, "rready"))]
        m.d.comb += self.m_axi_rready.eq(
            order.r_rdy & _sel_bit(m, [port(i, "rready") for i in range(n)], head))
        m.d.comb += order.r_en.eq(self.m_axi_rvalid & self.m_axi_rready & self.m_axi_rlast)
        return m


def _sel_bit(m, bits, idx):
    """bits[idx] for a run-time index (0 past the end)."""
    out = Signal()
    with m.Switch(idx):
        for i, b in enumerate(bits):
            with m.Case(i):
                m.d.comb += out.eq(b)
    return out


def _mux(m, values, idx, name):
    out = Signal.like(values[0], name=name)
    with m.Switch(idx):
        for i, v in enumerate(values):
            with m.Case(i):
                m.d.comb += out.eq(v)
    return out
