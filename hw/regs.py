"""The control register file: an AXI4-Lite slave generated from ``tellme.spec.registers``
(docs/hw/registers.md is generated from the same table).

``RegisterFile(consts=spec.registers.const_values(target, build_hash))`` has the AXI4-Lite
slave port ``s_axil_*`` and one port per register field for the top:

* RW field: ``Out(width)`` ``<port>`` (the stored value);
* RO field: ``In(width)`` ``<port>`` (sampled when read); constant fields have no port;
* W1C field: ``In(1)`` ``<port>_set`` (sets the sticky bit; a set wins over a clear in the
  same cycle) and ``Out(1)`` ``<port>`` (the bit);
* W1S field: ``Out(1)`` ``<port>``, high for one cycle per written 1;
* counter: ``In(inc_bits)`` ``<reg>_inc`` added every cycle; ``In(1)`` ``counters_clear``
  zeroes all counters.

Port names come from :func:`tellme.spec.registers.port_name`. Timing: a write takes effect
(and its W1S pulse fires) the cycle after both AW and W are held, B follows; a read samples
the registers in the cycle AR is accepted, R follows. One write and one read in flight
(ready = not holding one). Unmapped offsets answer OKAY (reads 0) and set
``ERR_FLAGS.BAD_REG``; nothing ever waits on the top, so no access can hang.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tellme.spec.registers import ADDR_WIDTH, DATA_BITS, REGISTERS, UNMAPPED_FLAG, port_name

__all__ = ["RegisterFile", "axil_members", "build_hash", "check_consts", "stamp"]


def axil_members(addr_width: int = ADDR_WIDTH, prefix: str = "s_axil") -> dict:
    """The flat AXI4-Lite slave members (``<prefix>_awaddr`` ...) as Vivado and cocotbext-axi
    name them."""
    m = {"awaddr": In(addr_width), "awprot": In(3), "awvalid": In(1), "awready": Out(1),
         "wdata": In(DATA_BITS), "wstrb": In(DATA_BITS // 8), "wvalid": In(1), "wready": Out(1),
         "bresp": Out(2), "bvalid": Out(1), "bready": In(1),
         "araddr": In(addr_width), "arprot": In(3), "arvalid": In(1), "arready": Out(1),
         "rdata": Out(DATA_BITS), "rresp": Out(2), "rvalid": Out(1), "rready": In(1)}
    return {f"{prefix}_{k}": v for k, v in m.items()}


def build_hash(verilog: str) -> int:
    """The BUILD_HASH of a design: the first 32 bits of the SHA-256 of its Verilog text."""
    return int(hashlib.sha256(verilog.encode()).hexdigest()[:8], 16)


def stamp(make: Callable[[int], wiring.Component], name: str) -> tuple[str, int]:
    """Elaborate ``make(build_hash)`` so that BUILD_HASH names the design: the hash is taken
    of the Verilog generated with hash 0, then the design is generated again with it.
    Returns (Verilog text, hash)."""
    from tellme.hw.toolchain import elaborate_verilog

    h = build_hash(elaborate_verilog(make(0), name))
    return elaborate_verilog(make(h), name), h


def check_consts(consts: dict) -> dict:
    """``consts`` if it gives every constant field of the map a value that fits, else
    ValueError."""
    want = {(r.name, f.name): f.width for r in REGISTERS for f in r.fields if f.const}
    if set(consts) != set(want):
        raise ValueError(f"constant fields missing or unknown: {sorted(set(want) ^ set(consts))}")
    for key, v in consts.items():
        if not 0 <= v < 1 << want[key]:
            raise ValueError(f"constant {key} = {v} does not fit {want[key]} bits")
    return dict(consts)


class RegisterFile(wiring.Component):
    """The register map of ``tellme.spec.registers`` behind an AXI4-Lite slave.

    Parameters
    ----------
    consts : dict
        ``{(register, field): value}`` of every constant field
        (:func:`tellme.spec.registers.const_values`).
    addr_width : int
        Byte-address bits of the slave (the map's window, default 12).

    Members
    -------
    s_axil_* : the AXI4-Lite slave (responses always OKAY).
    <field ports> : see the module docstring and docs/hw/registers.md.
    counters_clear : In(1)
    """

    def __init__(self, consts: dict, *, addr_width: int = ADDR_WIDTH):
        self._consts = check_consts(consts)
        self._aw = addr_width
        members = axil_members(addr_width)
        for r in REGISTERS:
            if r.counter:
                members[f"{r.name.lower()}_inc"] = In(r.inc_bits)
                continue
            for f in r.fields:
                p = port_name(r, f)
                if f.const:
                    continue
                if r.access in ("RW", "W1S"):
                    members[p] = Out(f.width)
                elif r.access == "RO":
                    members[p] = In(f.width)
                else:                                     # W1C
                    members[p] = Out(f.width)
                    members[p + "_set"] = In(f.width)
        members["counters_clear"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        aw = self._aw

        def port(name):
            return getattr(self, name)

        # -- AXI4-Lite handshakes: one write and one read held at a time -------------------
        aw_full, w_full = Signal(), Signal()
        aw_addr, w_data, w_strb = Signal(aw), Signal(DATA_BITS), Signal(DATA_BITS // 8)
        bvalid, rvalid, rdata = Signal(), Signal(), Signal(DATA_BITS)
        m.d.comb += [port("s_axil_awready").eq(~aw_full), port("s_axil_wready").eq(~w_full),
                     port("s_axil_bvalid").eq(bvalid), port("s_axil_bresp").eq(0),
                     port("s_axil_arready").eq(~rvalid), port("s_axil_rvalid").eq(rvalid),
                     port("s_axil_rdata").eq(rdata), port("s_axil_rresp").eq(0)]
        with m.If(port("s_axil_awvalid") & ~aw_full):
            m.d.sync += [aw_full.eq(1), aw_addr.eq(port("s_axil_awaddr"))]
        with m.If(port("s_axil_wvalid") & ~w_full):
            m.d.sync += [w_full.eq(1), w_data.eq(port("s_axil_wdata")),
                         w_strb.eq(port("s_axil_wstrb"))]
        do_write = Signal()
        m.d.comb += do_write.eq(aw_full & w_full & ~bvalid)
        with m.If(do_write):
            m.d.sync += [aw_full.eq(0), w_full.eq(0), bvalid.eq(1)]
        with m.Elif(bvalid & port("s_axil_bready")):
            m.d.sync += bvalid.eq(0)
        do_read = Signal()
        m.d.comb += do_read.eq(port("s_axil_arvalid") & ~rvalid)
        with m.If(do_read):
            m.d.sync += rvalid.eq(1)
        with m.Elif(rvalid & port("s_axil_rready")):
            m.d.sync += rvalid.eq(0)

        mask = Signal(DATA_BITS)               # written bits: the byte strobes widened
        m.d.comb += mask.eq(Cat(*(b.replicate(8) for b in w_strb)))
        wbits = Signal(DATA_BITS)
        m.d.comb += wbits.eq(w_data & mask)
        w_word, r_word = aw_addr[2:], port("s_axil_araddr")[2:aw]

        # -- registers ------------------------------------------------------------------------
        mapped = [r.offset // 4 + w for r in REGISTERS for w in range(r.words)]
        w_hit, r_hit = Signal(), Signal()
        m.d.comb += [w_hit.eq(Cat(*(w_word == i for i in mapped)).any()),
                     r_hit.eq(Cat(*(r_word == i for i in mapped)).any())]
        unmapped = Signal()
        m.d.comb += unmapped.eq((do_write & ~w_hit) | (do_read & ~r_hit))
        reads = {}                             # word index -> value read
        self.counters = {}                     # name -> counter signal (for tests)
        for r in REGISTERS:
            idx = r.offset // 4
            if r.counter:
                self._counter(m, r, do_read & (r_word == idx), reads)
                continue
            wsel = do_write & (w_word == idx)
            word = Signal(DATA_BITS, name=f"{r.name.lower()}_word")
            for f in r.fields:
                p, bits = port_name(r, f), slice(f.lsb, f.lsb + f.width)
                if f.const:
                    val = Const(self._consts[(r.name, f.name)], f.width)
                elif r.access == "RO":
                    val = port(p)
                elif r.access == "RW":
                    val = Signal(f.width, init=f.reset, name=p)
                    with m.If(wsel):
                        m.d.sync += val.eq((val & ~mask[bits]) | wbits[bits])
                    m.d.comb += port(p).eq(val)
                elif r.access == "W1C":
                    val = Signal(f.width, init=f.reset, name=p)
                    set_ = port(p + "_set")
                    if (r.name, f.name) == UNMAPPED_FLAG:
                        set_ = set_ | unmapped
                    m.d.sync += val.eq((val & ~_gate(wsel, wbits[bits])) | set_)
                    m.d.comb += port(p).eq(val)
                else:                                         # W1S: a pulse, reads 0
                    pulse = Signal(f.width, name=p + "_pulse")
                    m.d.sync += pulse.eq(_gate(wsel, wbits[bits]))
                    m.d.comb += port(p).eq(pulse)
                    continue
                m.d.comb += word[bits].eq(val)
            reads[idx] = word

        with m.If(do_read):
            with m.Switch(r_word):
                for idx, v in reads.items():
                    with m.Case(idx):
                        m.d.sync += rdata.eq(v)
                with m.Default():
                    m.d.sync += rdata.eq(0)
        return m

    def _counter(self, m, r, read_lo, reads):
        """``r.counter``-bit counter; a 64-bit one latches its HI word when LO is read."""
        name = r.name.lower()
        cnt = Signal(r.counter, name=f"{name}_count")
        with m.If(self.counters_clear):
            m.d.sync += cnt.eq(0)
        with m.Else():
            m.d.sync += cnt.eq(cnt + getattr(self, f"{name}_inc"))
        self.counters[r.name] = cnt
        idx = r.offset // 4
        reads[idx] = cnt[:32]
        if r.counter == 64:
            hi = Signal(32, name=f"{name}_hi")
            with m.If(read_lo):
                m.d.sync += hi.eq(cnt[32:])
            reads[idx + 1] = hi


def _gate(sel, value):
    """``value`` when ``sel`` is 1, else 0."""
    return value & sel.replicate(len(value))
