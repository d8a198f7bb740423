"""Integrated linear unit: weight streamer -> ping-pong weight buffer -> TLMM engine.

Beyond TeLLMe v2 (which loads a whole linear, then computes), the weights of tile n+1 stream
from DDR into one buffer half while the engine computes tile n from the other half, and the
fill side runs ahead across linear commands, so the next linear's first tile streams while the
current linear computes.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .presets import HwPreset, make_tlmm_core
from .tlmm import act_layout, out_layout
from .weight_stream import WeightStreamer

__all__ = ["LinearUnit", "linear_cmd_layout", "AXI_PORTS"]

AXI_PORTS = ("arid", "araddr", "arlen", "arsize", "arburst", "arlock", "arcache", "arprot",
             "arqos", "arvalid", "arready", "rid", "rdata", "rresp", "rlast", "rvalid", "rready")


def linear_cmd_layout(p: HwPreset, addr_width: int) -> data.StructLayout:
    """One linear: packed codes at ``addr`` (layout v1 for the preset's T, Q), ``kb`` K blocks,
    ``nb`` column blocks, cut into tiles of ``tile_nb`` column blocks, ``n_tokens`` tokens."""
    return data.StructLayout({
        "addr": unsigned(addr_width),
        "n_tokens": range(p.tok_max + 1),
        "kb": range(p.kb_max + 1),
        "nb": unsigned(16),
        "tile_nb": range(p.nbt_max + 1),
    })


class LinearUnit(wiring.Component):
    """One ternary linear (or a queue of them) from DDR weights to integer accumulators.

    Parameters
    ----------
    preset : HwPreset
        Engine and buffer geometry (``tellme.hw.presets``); the streamer emits ``preset.v``
        vectors per beat, the buffer's fill width.
    data_width, max_burst, max_outstanding, addr_width :
        Of the AXI4 read master (:class:`~tellme.hw.weight_stream.WeightStreamer`).
    queue : int
        Linear commands the unit holds (each side has its own queue of this depth).

    Members
    -------
    i_cmd : In(stream.Signature(linear_cmd_layout))
        One linear. ``tile_nb * kb`` must fit a buffer half (``preset.half_depth`` words):
        use ``tellme.hw.weight_buffer.size_weight_buffer`` for the plan; a larger tile sets
        ``overflow``. Accepted while both queues have room.
    i_act : In(stream.Signature(ArrayLayout(signed(8), 3*T)))
        Activations, ``n_tokens*kb`` beats per tile, token-major then K block (the engine
        consumes them once per tile: the producer replays them for each tile).
    o : Out(stream.Signature(tlmm.out_layout))
        Per tile, per token: ``nbt`` beats of Q accumulators (output columns
        ``(nb0 + j)*Q + q``), ``last`` on a token's final beat of the tile.
    busy : Out(1)
        Commands queued or in progress, or outputs still to come.
    overflow, error : Out(1)
        Sticky: buffer overflow (tile too big) / AXI read error response.
    m_axi_ar* / m_axi_r* :
        The streamer's AXI4 read master (see :class:`WeightStreamer`).

    Timing
    ------
    Fill side: one streamer command per tile, issued as soon as the streamer is idle; the buffer
    holds the streamer (and through its FIFO reservation, the AR channel) while both halves are
    full. Compute side: one engine command per tile, issued as soon as the engine is idle.
    Steady-state time per tile is ``max(fill, compute)``: fill is ``bytes / DDR rate`` (at most
    ``data_width`` and ``v*5*T`` bits per cycle), compute is ``sim.cycles.expected_cycles``.
    Backpressure on ``o`` stalls the engine only.
    """

    def __init__(self, preset: HwPreset, *, data_width: int = 128, max_burst: int = 16,
                 max_outstanding: int = 8, addr_width: int = 40, queue: int = 4):
        self._p = preset
        self._core = make_tlmm_core(preset)
        self._streamer = WeightStreamer(t=preset.t, lanes=preset.v, data_width=data_width,
                                        addr_width=addr_width, max_burst=max_burst,
                                        max_outstanding=max_outstanding)
        self._aw = addr_width
        self._queue = queue
        s = self._streamer
        ports = {
            "i_cmd": In(stream.Signature(linear_cmd_layout(preset, addr_width))),
            "i_act": In(stream.Signature(act_layout(t=preset.t))),
            "o": Out(stream.Signature(out_layout(q=preset.q,
                                                 acc_width=self._core.engine.acc_width))),
            "busy": Out(1),
            "overflow": Out(1),
            "error": Out(1),
        }
        for name in AXI_PORTS:
            member = s.signature.members[f"m_axi_{name}"]
            ports[f"m_axi_{name}"] = member
        super().__init__(ports)

    @property
    def acc_width(self) -> int:
        """Bits of one output accumulator."""
        return self._core.engine.acc_width

    def elaborate(self, platform):
        m = Module()
        p = self._p
        m.submodules.core = core = self._core
        m.submodules.streamer = ws = self._streamer
        wiring.connect(m, ws.o, core.i_w)
        wiring.connect(m, wiring.flipped(self.i_act), core.i_act)
        wiring.connect(m, core.o, wiring.flipped(self.o))
        for name in AXI_PORTS:
            port, inner = getattr(self, f"m_axi_{name}"), getattr(ws, f"m_axi_{name}")
            flow = ws.signature.members[f"m_axi_{name}"].flow
            m.d.comb += (port.eq(inner) if flow == wiring.Out else inner.eq(port))
        m.d.comb += [self.overflow.eq(core.overflow), self.error.eq(ws.error)]

        layout = linear_cmd_layout(p, self._aw)
        m.submodules.fill_q = fill_q = SyncFIFOBuffered(width=layout.size, depth=self._queue)
        m.submodules.comp_q = comp_q = SyncFIFOBuffered(width=layout.size, depth=self._queue)
        accept = Signal()
        m.d.comb += [
            self.i_cmd.ready.eq(fill_q.w_rdy & comp_q.w_rdy),
            accept.eq(self.i_cmd.valid & self.i_cmd.ready),
            fill_q.w_data.eq(self.i_cmd.payload), fill_q.w_en.eq(accept),
            comp_q.w_data.eq(self.i_cmd.payload), comp_q.w_en.eq(accept),
        ]

        # Outputs still to come: n_tokens*nb per accepted command.
        pending = Signal(32)
        o_xfer = self.o.valid & self.o.ready
        cmd = self.i_cmd.payload
        m.d.sync += pending.eq(pending + Mux(accept, cmd.n_tokens * cmd.nb, 0) - o_xfer)

        # ---- fill side: one streamer command per tile ---------------------------------
        fc = data.View(layout, fill_q.r_data)
        f_active = Signal()
        f_addr = Signal(self._aw)
        f_first = Signal(ws.count_width)        # first vector of the next tile
        f_total = Signal(ws.count_width)        # vectors of the linear
        f_step = Signal(ws.count_width)         # vectors of a full tile
        q = p.q
        m.d.comb += fill_q.r_en.eq(~f_active)
        with m.If(~f_active & fill_q.r_rdy):
            m.d.sync += [
                f_active.eq(1), f_addr.eq(fc.addr), f_first.eq(0),
                f_total.eq(fc.nb * fc.kb * q), f_step.eq(fc.tile_nb * fc.kb * q),
            ]
        f_rest = Signal(ws.count_width)
        m.d.comb += [
            f_rest.eq(f_total - f_first),
            ws.i_cmd.payload.addr.eq(f_addr),
            ws.i_cmd.payload.first.eq(f_first),
            ws.i_cmd.payload.count.eq(Mux(f_rest < f_step, f_rest, f_step)),
            ws.i_cmd.valid.eq(f_active),
        ]
        with m.If(ws.i_cmd.valid & ws.i_cmd.ready):
            m.d.sync += f_first.eq(f_first + f_step)
            with m.If(f_rest <= f_step):
                m.d.sync += f_active.eq(0)

        # ---- compute side: one engine command per tile --------------------------------
        cc = data.View(layout, comp_q.r_data)
        c_active = Signal()
        c_left = Signal(16)                    # column blocks not yet commanded
        c_tile = Signal.like(cc.tile_nb)
        c_kb = Signal.like(cc.kb)
        c_tok = Signal.like(cc.n_tokens)
        m.d.comb += comp_q.r_en.eq(~c_active)
        with m.If(~c_active & comp_q.r_rdy):
            m.d.sync += [c_active.eq(1), c_left.eq(cc.nb), c_tile.eq(cc.tile_nb),
                         c_kb.eq(cc.kb), c_tok.eq(cc.n_tokens)]
        nbt = Signal(16)
        m.d.comb += [
            nbt.eq(Mux(c_left < c_tile, c_left, c_tile)),
            core.i_cmd.payload.n_tokens.eq(c_tok),
            core.i_cmd.payload.kb.eq(c_kb),
            core.i_cmd.payload.nbt.eq(nbt),
            core.i_cmd.valid.eq(c_active),
        ]
        with m.If(core.i_cmd.valid & core.i_cmd.ready):
            m.d.sync += c_left.eq(c_left - nbt)
            with m.If(c_left <= c_tile):
                m.d.sync += c_active.eq(0)

        m.d.comb += self.busy.eq(fill_q.r_rdy | comp_q.r_rdy | f_active | c_active | ws.busy
                                 | (pending != 0))
        return m
