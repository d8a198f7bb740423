"""The accelerator top (docs/hw/top.md): the shell of ``tellme.spec.shell`` around the
register file, the sequencer and the execution units (the row unit: EMBED, NORM, QUANT,
LINEAR, ROPE, RESIDUAL, GATED_ACT, KV_WRITE and ATTENTION's control; the LM head: LM_HEAD).

``make_top(target, build_hash=0)`` is what the Vivado flow (``hw/vivado.py`` through
``hw.regs.stamp``) and the RTL simulation device (``sim/rtl_device.py``) elaborate; its
Verilog module is ``spec.shell.TOP_MODULE`` and its ports are exactly ``spec.shell.top_ports()``
(flat ``<prefix>_<signal>`` members, Amaranth's ``clk``/``rst``, ``irq``).

What is inside:

* ``RegisterFile`` (``hw/regs.py``) on ``s_axil_*``;
* ``Sequencer`` (``hw/sequencer.py``) fetching programs through the read channel of
  ``m_axi_kv``; its ports meet the register file's by name, the 64-bit values as the LO/HI
  pairs joined;
* ``EwUnit`` (``hw/exec_ew.py``), the row unit, on the ``ew``, ``head`` and ``linear``
  command streams (the head class: EMBED; LM_HEAD goes to ``HeadCtl``): rows through
  ``RowDMA`` (``hw/row_dma.py``), LINEAR's codes through its ``LinearUnit`` on ``m_axi_w0``;
* ``HeadCtl`` (``hw/exec_head.py``) and ``LmHead`` (``hw/lm_head.py``): LM_HEAD, its reads on
  ``m_axi_w1``, its logits through ``m_axi_kv``'s write channels while it is busy;
* ``AxiReadArbiter`` (``hw/axi_arbiter.py``) on the read channel of ``m_axi_kv``: the
  sequencer's program fetch and the EW unit's two row readers; the write channel is the EW
  unit's row writer;
* ``NoExecUnit``: each command stream without a unit (``EXECUTION_UNITS``) ends in a
  responder that accepts the command and answers, instead of ``done``, with the program error
  UNSUPPORTED_OP (``spec.program.ERRORS``): a run on this build stops at its first record of
  such a class with ``ERR_FLAGS.BAD_PROGRAM``, ``ERR_INFO.CODE`` 11 and the record's index,
  and is idle again. Nothing is dropped or faked;
* the weight master ``m_axi_w2`` idle: every output driven to 0 (no VALID ever rises), so the
  interconnect sees a legal, silent master;
* ``irq``: a register, OR(IRQ_STATUS & CTRL enables).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, ResetInserter
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import Flow, In, Out

from tellme.spec import shell
from tellme.spec.memory_map import ADDR_BITS
from tellme.spec.program import ERROR_CODES, OPS
from tellme.spec.registers import const_values

from .attention.int_engine import IntAttentionEngine
from .attention.kv_dma import KVInt8Reader
from .attention.kv_quant import KV_QUANT_PRESETS, KVQuantWriter
from .attention.presets import INT_PRESETS
from .axi_arbiter import AR_SIGNALS, R_SIGNALS, AxiReadArbiter
from .exec_ew import EwUnit
from .exec_head import HeadCtl
from .lm_head import make_lm_head
from .presets import preset
from .regs import RegisterFile
from .sequencer import CLASSES, Sequencer, command_layout

__all__ = ["Top", "NoExecUnit", "make_top", "report_blocks", "EXECUTION_UNITS",
           "ACCELERATOR_BLOCKS"]

#: class -> the unit that executes it in this build (docs/hw/top.md); None: not yet (the
#: class's commands are answered UNSUPPORTED_OP)
EXECUTION_UNITS = dict.fromkeys(CLASSES)
EXECUTION_UNITS["ew"] = "EwUnit (hw/exec_ew.py): NORM, QUANT, ROPE, RESIDUAL, GATED_ACT"
EXECUTION_UNITS["linear"] = "EwUnit (hw/exec_ew.py): LINEAR through its LinearUnit on m_axi_w0"
EXECUTION_UNITS["head"] = ("EwUnit (hw/exec_ew.py): EMBED (the row movers are shared); HeadCtl "
                           "(hw/exec_head.py) + LmHead: LM_HEAD on m_axi_w1")
EXECUTION_UNITS["kv"] = "EwUnit's AttnCtl (hw/exec_attn.py): KV_WRITE through KVQuantWriter"
EXECUTION_UNITS["attn"] = ("EwUnit's AttnCtl (hw/exec_attn.py): ATTENTION through KVInt8Reader "
                           "and IntAttentionEngine")
_JOINED = ("prog_addr", "win_base", "win_size", "err_addr")     # 64-bit LO/HI pairs
#: the top's child modules as registry blocks (``tellme hw report --block accelerator`` sums
#: them), with ``top_glue``, the top's own logic: submodule name -> block
ACCELERATOR_BLOCKS = {"": "top_glue", "regs": "regs", "seq": "sequencer",
                      "kv_rd": "shell_kv_arbiter", "ew": "ew_unit",
                      "kv_writer": "kv_quant_writer", "kv_reader": "kv_reader",
                      "attn": "attention_int", "lm_head": "lm_head",
                      "lm_head_ctl": "lm_head_ctl", "noexec": None}      # noexec: tied off
_ENGINE_KEYS = ("lanes", "beat", "head_dim", "ctx_bits", "q_beat", "o_beat")


def attn_params(target: str) -> dict:
    """The row unit's ``attn`` parameters for ``target``: the integer engine's (INT_PRESETS)
    and the KV quantiser's (KV_QUANT_PRESETS) geometry."""
    e, q = INT_PRESETS[target], KV_QUANT_PRESETS[target]
    return {"engine": {k: e[k] for k in _ENGINE_KEYS},
            "quant": {"beat": q["beat"], "max_head_dim": q["max_head_dim"]}}


def ew_unit(target: str, fmt=None) -> EwUnit:
    """The row unit of ``target``'s top (also the ``ew_unit`` of the block registry)."""
    from tellme.spec.targets import TARGETS

    tgt = TARGETS[target]
    return EwUnit(lanes=tgt.ew_lanes, fmt=fmt, addr_width=ADDR_BITS,
                  max_rows=tgt.tlmm["tok_max"], max_cols=tgt.row_max, preset=preset(target),
                  attn=attn_params(target))


def _shell_members() -> dict:
    """The top's members from the shell contract (``clk``/``rst`` come from the domain)."""
    members = {}
    for i in shell.INTERFACES:
        for sig, width, d in i.signals():
            members[f"{i.top_prefix}_{sig}"] = (Out if d == "out" else In)(width)
    for p in shell.SCALARS:
        if p.top_name not in ("clk", "rst"):
            members[p.top_name] = (Out if p.direction == "out" else In)(1)
    return members


class NoExecUnit(wiring.Component):
    """The stand-in for the execution units this build does not have: every command of every
    class is accepted at once and answered one cycle later on ``<class>_error`` with
    ``code`` (UNSUPPORTED_OP), never with ``done``.

    Members: ``i_<class>`` (In(stream.Signature(command_layout(class)))), ``<class>_done``
    (Out(1), always 0), ``<class>_error`` (Out(8))."""

    def __init__(self, *, addr_width: int = ADDR_BITS,
                 code: int = ERROR_CODES["UNSUPPORTED_OP"]):
        self._code = code
        members = {}
        for cls in CLASSES:
            members[f"i_{cls}"] = In(stream.Signature(command_layout(cls, addr_width)))
            members[f"{cls}_done"] = Out(1)
            members[f"{cls}_error"] = Out(8)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for cls in CLASSES:
            i = getattr(self, f"i_{cls}")
            err = getattr(self, f"{cls}_error")
            m.d.comb += i.ready.eq(1)
            m.d.sync += err.eq(0)
            with m.If(i.valid):
                m.d.sync += err.eq(self._code)
        return m


class Top(wiring.Component):
    """The accelerator's shell for ``target`` (``spec.targets``): constant registers from
    ``spec.registers.const_values(target, build_hash, fmt)``; ports per ``spec.shell``."""

    def __init__(self, target: str, build_hash: int = 0, fmt=None, *,
                 max_records: int = 4096):
        self._consts = const_values(target, build_hash, fmt)
        self._target, self._max_records, self._fmt = target, max_records, fmt
        super().__init__(_shell_members())

    def elaborate(self, platform):
        m = Module()
        m.submodules.regs = regs = RegisterFile(self._consts)
        m.submodules.seq = seq = Sequencer(addr_width=ADDR_BITS, max_records=self._max_records,
                                           kv_beat=INT_PRESETS[self._target]["beat"])
        m.submodules.noexec = noexec = NoExecUnit(addr_width=ADDR_BITS)
        m.submodules.ew = ew = ew_unit(self._target, self._fmt)
        # KV_WRITE and ATTENTION blocks; the row unit's AttnCtl drives them. The writer's and
        # reader's sticky error flags are cleared at each of its records.
        t = self._target
        e = INT_PRESETS[t]
        kvq = _kv_quant_writer(t, self._fmt)
        kvr = KVInt8Reader(beat=e["beat"], depth=e["depth"], max_head_dim=e["head_dim"],
                           ctx_bits=e["ctx_bits"], addr_width=ADDR_BITS, fmt=self._fmt)
        m.submodules.kv_writer = ResetInserter(ew.kv_clear)(kvq)
        m.submodules.kv_reader = ResetInserter(ew.kv_clear)(kvr)
        m.submodules.attn = eng = IntAttentionEngine(**e, fmt=self._fmt)
        wiring.connect(m, ew.kvq_cmd, kvq.i_cmd)
        wiring.connect(m, ew.kvq, kvq.i)
        wiring.connect(m, ew.eng_cmd, eng.i_cmd)
        wiring.connect(m, ew.eng_q, eng.i_q)
        wiring.connect(m, eng.o, ew.eng_o)
        wiring.connect(m, ew.kvr_cmd, kvr.i_cmd)
        m.d.comb += [eng.i_kv.payload.eq(kvr.o.payload), eng.i_kv.valid.eq(kvr.o.valid),
                     kvr.o.ready.eq(eng.i_kv.ready),
                     ew.kvq_busy.eq(kvq.busy), ew.kvq_error.eq(kvq.error),
                     ew.kvr_error.eq(kvr.error)]
        # m_axi_kv's read channel: program fetch (client 0), the row unit's two row readers,
        # the KV reader
        m.submodules.kv_rd = arb = AxiReadArbiter(clients=4, addr_width=ADDR_BITS)
        # LM_HEAD: the LM-head unit and its control (reads on m_axi_w1, logits out through
        # m_axi_kv's write channels while it is busy)
        m.submodules.lm_head = lmu = make_lm_head(t, self._fmt)
        m.submodules.lm_head_ctl = lmc = HeadCtl(unit=lmu, addr_width=ADDR_BITS, fmt=self._fmt)
        wiring.connect(m, lmc.u_cmd, lmu.cmd)
        wiring.connect(m, lmc.u_q, lmu.q)
        wiring.connect(m, lmc.u_w, lmu.w)
        wiring.connect(m, lmu.o, lmc.u_o)

        # -- AXI4-Lite slave: the register file's own port names --------------------------------
        for name, _, d in shell.CONTROL.signals():
            top, sub = getattr(self, f"s_axil_{name}"), getattr(regs, f"s_axil_{name}")
            m.d.comb += (top.eq(sub) if d == "out" else sub.eq(top))

        # -- register file <-> sequencer, by name ---------------------------------------------
        seq_ports = set(seq.signature.members)
        reg_ports = set(regs.signature.members)
        for name in sorted(seq_ports & reg_ports):
            if name.startswith("m_axi_"):
                continue
            if seq.signature.members[name].flow == Flow.Out:
                m.d.comb += getattr(regs, name).eq(getattr(seq, name))
            else:
                m.d.comb += getattr(seq, name).eq(getattr(regs, name))
        for name in _JOINED:
            lo, hi = getattr(regs, f"{name}_lo"), getattr(regs, f"{name}_hi")
            if seq.signature.members[name].flow == Flow.Out:
                m.d.comb += [lo.eq(getattr(seq, name)[:32]), hi.eq(getattr(seq, name)[32:])]
            else:
                m.d.comb += getattr(seq, name).eq(Cat(lo, hi))

        # -- m_axi_kv: reads through the arbiter; writes from the row unit's writer, or from the
        # KV writer during a KV_WRITE (the row writer is idle then: the record only reads rows)
        kv = shell.IFACES["m_axi_kv"]
        read_sigs = {s for s, _, _ in kv.signals() if s[:2] == "ar" or s[0] == "r"}
        sel, hsel = ew.kv_sel, lmc.busy
        for sig, _, d in kv.signals():
            top = getattr(self, f"m_axi_kv_{sig}")
            if sig in read_sigs:
                sub = getattr(arb, f"m_axi_{sig}")
                m.d.comb += (top.eq(sub) if d == "out" else sub.eq(top))
                continue
            row, kvw = getattr(ew, f"w_{sig}"), getattr(kvq, f"m_axi_{sig}")
            hdw = getattr(lmc, f"w_{sig}")
            if d == "out":
                m.d.comb += top.eq(Mux(hsel, hdw, Mux(sel, kvw, row)))
            elif sig.endswith(("ready", "valid")):
                m.d.comb += [kvw.eq(top & sel & ~hsel), row.eq(top & ~sel & ~hsel),
                             hdw.eq(top & hsel)]
            else:
                m.d.comb += [kvw.eq(top), row.eq(top), hdw.eq(top)]
        rd_sigs = [s for s, _ in AR_SIGNALS] + ["arvalid", "rready"]
        for k, (client, prefix) in enumerate(((seq, "m_axi"), (ew, "r0"), (ew, "r1"),
                                              (kvr, "m_axi"))):
            for sig in rd_sigs:
                m.d.comb += getattr(arb, f"s{k}_{sig}").eq(getattr(client, f"{prefix}_{sig}"))
            for sig in [s for s, _ in R_SIGNALS] + ["arready", "rvalid"]:
                m.d.comb += getattr(client, f"{prefix}_{sig}").eq(getattr(arb, f"s{k}_{sig}"))
        # -- weight masters: w0 the LinearUnit's streamer, w1 the LM head's reads, w2 idle -----
        for i in shell.INTERFACES:
            if i.name in ("m_axi_w0", "m_axi_w1"):
                unit, pre = (ew, "wt") if i.name == "m_axi_w0" else (lmc, "r")
                for sig, _, d in i.signals():
                    top, sub = getattr(self, f"{i.top_prefix}_{sig}"), getattr(unit, f"{pre}_{sig}")
                    m.d.comb += (top.eq(sub) if d == "out" else sub.eq(top))
            elif i.name.startswith("m_axi_w"):
                for sig, _, d in i.signals():
                    if d == "out":
                        m.d.comb += getattr(self, f"{i.top_prefix}_{sig}").eq(0)

        # -- command streams: the execution units, else the "no execution unit" responder -------
        units = {"ew": (ew, ew.i_cmd), "linear": (ew, ew.i_linear),
                 "kv": (ew, ew.i_kv), "attn": (ew, ew.i_attn)}
        # the head class: EMBED to the row unit, LM_HEAD to its control
        o_head = seq.o_head
        is_lm = o_head.payload.opcode == OPS["LM_HEAD"].code
        m.d.comb += [ew.i_head.payload.eq(o_head.payload), lmc.i_cmd.payload.eq(o_head.payload),
                     ew.i_head.valid.eq(o_head.valid & ~is_lm),
                     lmc.i_cmd.valid.eq(o_head.valid & is_lm),
                     o_head.ready.eq(Mux(is_lm, lmc.i_cmd.ready, ew.i_head.ready)),
                     seq.head_done.eq(ew.done | lmc.done),
                     seq.head_error.eq(ew.error | lmc.error),
                     noexec.i_head.valid.eq(0)]
        for cls in CLASSES:
            if cls == "head":
                continue
            unit, port = units.get(cls, (None, None))
            if unit is None:
                wiring.connect(m, getattr(seq, f"o_{cls}"), getattr(noexec, f"i_{cls}"))
                m.d.comb += [getattr(seq, f"{cls}_done").eq(getattr(noexec, f"{cls}_done")),
                             getattr(seq, f"{cls}_error").eq(getattr(noexec, f"{cls}_error"))]
            else:
                wiring.connect(m, getattr(seq, f"o_{cls}"), port)
                m.d.comb += [getattr(seq, f"{cls}_done").eq(unit.done),
                             getattr(seq, f"{cls}_error").eq(unit.error)]
                noexec_in = getattr(noexec, f"i_{cls}")
                m.d.comb += noexec_in.valid.eq(0)
        m.d.comb += [seq.unit_axi_error.eq(ew.axi_error | lmc.axi_error),
                     seq.unit_axi_port.eq(Mux(lmc.axi_error, lmc.axi_port, ew.axi_port)),
                     seq.progress.eq(arb.active[1:].any()
                                     | (self.m_axi_w0_rvalid & self.m_axi_w0_rready)
                                     | (self.m_axi_w1_rvalid & self.m_axi_w1_rready)
                                     | (self.m_axi_kv_wvalid & self.m_axi_kv_wready)
                                     | (self.m_axi_kv_bvalid & self.m_axi_kv_bready)),
                     regs.busy_ew_inc.eq(ew.busy), regs.stall_ew_inc.eq(ew.stall)]

        # -- counters and the interrupt --------------------------------------------------------
        r_hs = self.m_axi_kv_rvalid & self.m_axi_kv_rready
        w_hs = self.m_axi_kv_wvalid & self.m_axi_kv_wready
        w0_hs = self.m_axi_w0_rvalid & self.m_axi_w0_rready
        w1_hs = self.m_axi_w1_rvalid & self.m_axi_w1_rready
        kv_busy = kvq.busy | kvr.busy
        m.d.comb += [regs.cycles_inc.eq(seq.status_busy),
                     regs.rd_beats_inc.eq(r_hs + w0_hs + w1_hs), regs.wr_beats_inc.eq(w_hs),
                     # stall: busy and no beat moved on the block's streams or its AXI port
                     regs.busy_attn_inc.eq(eng.busy),
                     regs.stall_attn_inc.eq(eng.busy & ~(eng.i_kv.valid & eng.i_kv.ready)
                                            & ~(eng.o.valid & eng.o.ready)),
                     regs.busy_kvdma_inc.eq(kv_busy),
                     regs.stall_kvdma_inc.eq(kv_busy & ~(kvr.m_axi_rvalid & kvr.m_axi_rready)
                                             & ~(kvq.m_axi_wvalid & kvq.m_axi_wready)),
                     regs.busy_wstream_inc.eq(ew.linear_busy),
                     regs.stall_wstream_inc.eq(ew.linear_busy & ~w0_hs)]
        m.d.sync += self.irq.eq((regs.irq_status_done & regs.ctrl_irq_en_done)
                                | (regs.irq_status_error & regs.ctrl_irq_en_error))
        return m


def make_top(target: str, build_hash: int = 0, fmt=None) -> Top:
    """The top of ``target`` with BUILD_HASH ``build_hash`` (the Vivado flow's entry,
    ``hw.regs.stamp(lambda h: make_top(target, build_hash=h), spec.shell.TOP_MODULE)``)."""
    return Top(target, build_hash, fmt)


def _kv_quant_writer(target: str, fmt=None) -> KVQuantWriter:
    q, e = KV_QUANT_PRESETS[target], INT_PRESETS[target]
    return KVQuantWriter(beat=q["beat"], kv_beat=e["beat"], lanes=q["lanes"],
                         max_head_dim=q["max_head_dim"], addr_width=ADDR_BITS, fmt=fmt)


def report_blocks() -> dict:
    """``{name: (description, maker(HwPreset, StreamFormat))}`` for the block registry."""
    from tellme.spec.targets import TARGETS

    from .convert import FloatToStream
    from .row_dma import RowDMA

    def lanes(hp):
        return TARGETS[hp.name].ew_lanes

    return {
        "top": ("accelerator top: AXI shell, registers, sequencer, the execution units",
                lambda hp, fmt: Top(hp.name, fmt=fmt)),
        "top_glue": ("the top's own logic (its submodules black boxes): the m_axi_kv write "
                     "multiplexer, the irq register, the wiring",
                     lambda hp, fmt: Top(hp.name, fmt=fmt)),
        "lm_head_ctl": ("LM_HEAD's control: absmax, codes and head reads on m_axi_w1, the "
                        "logit writer",
                        lambda hp, fmt: HeadCtl(unit=make_lm_head(hp.name, fmt),
                                                addr_width=ADDR_BITS, fmt=fmt)),
        "kv_quant_writer": ("the top's quantising KV writer (kv_quant + kv_writer)",
                            lambda hp, fmt: _kv_quant_writer(hp.name, fmt)),
        "shell_kv_arbiter": ("m_axi_kv read arbiter: program fetch, the row readers, the KV "
                             "reader",
                             lambda hp, fmt: AxiReadArbiter(clients=4, addr_width=ADDR_BITS)),
        "row_dma": ("row movers of an execution unit: 2 row readers + 1 row writer",
                    lambda hp, fmt: RowDMA(readers=2, lanes=lanes(hp), fmt=fmt,
                                           addr_width=ADDR_BITS)),
        "ew_unit": ("row unit (EMBED, NORM, QUANT, LINEAR, ROPE, RESIDUAL, GATED_ACT; KV_WRITE "
                    "and ATTENTION control): movers, LinearUnit, blocks",
                    lambda hp, fmt: ew_unit(hp.name, fmt)),
        "row_convert": ("weight-file floats to the stream format (EMBED rows, NORM gains)",
                        lambda hp, fmt: FloatToStream(lanes=lanes(hp), fmt=fmt)),
    }
