"""The accelerator's shell contract: the top-level ports of the accelerator (``hw/top.py``) and
how the block design joins them to the Zynq UltraScale+ PS. NumPy-free data.

One source for three consumers: the future ``hw/top.py`` (its Amaranth signature), the Verilog
wrapper and Vivado Tcl that ``tellme hw bitstream`` generates (``tellme.hw.vivado``), and the
test that checks the top's Verilog ports against this table (:func:`check_top_ports`).
docs/board.md explains the choices; ../shared/reference/board.md has the sources.

**Naming.** The Amaranth top exposes flat members ``<top prefix>_<signal>`` (as
``hw/regs.py`` and ``hw/weight_stream.py`` do: cocotbext-axi's ``from_prefix`` binds them),
plus Amaranth's own ``clk`` and ``rst`` (domain ``sync``: one clock, synchronous active-high
reset) and ``irq``. A nested signature (``s_axil.awvalid`` -> Verilog ``s_axil__awvalid``) is
accepted too. The Verilog wrapper that Vivado packages renames every port to
``<interface>_<signal>`` (``s_axi_control_awvalid``, ``m_axi_w0_araddr``, ``ap_clk``,
``ap_rst``, ``interrupt``): the ``<if>_<sig>`` names Vivado's IP packager infers AXI interfaces
from, with ``X_INTERFACE_*`` attributes for the clock (ASSOCIATED_BUSIF/RESET), the
active-high reset and the level interrupt, so inference is not guesswork.

**PS ports.** Weights on HP0, HP1 and HP3 (HP1 and HP2 share one DDR controller port, so two
weight streams never share one). The KV/activation/program master is on HPC0: through the CCI
it reaches the DDR controller on the APU's ports, so it competes with no weight stream at the
DDR controller's port arbiter (on HP2 it would share HP1's port), and the APU is idle while a
call runs. It is used non-coherently (AxCACHE = 0b0011, AxPROT = 0: no snoops; the host's
buffers are non-cacheable CMA), the way PYNQ's ``allocate`` expects. Switching it to HP2 is a
one-word change here (``ps_port``). Control on M_AXI_HPM0_LPD at 0x8000_0000, the address
PYNQ's base overlays use for their control IPs (the 32-bit LPD port; HPM0/1_FPD are turned
off), the AXI interrupt controller behind it at 0x8001_0000 drives pl_ps_irq0[0] (PYNQ 3.0
finds interrupts only behind an ``axi_intc``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .memory_map import ADDR_BITS
from .registers import ADDR_WIDTH as CONTROL_ADDR_WIDTH, DATA_BITS as CONTROL_DATA_BITS

SHELL_VERSION = 1
VIVADO_VERSION = "2022.1"       # the version Kria-PYNQ 3.0.1 / PYNQ 3.0.1 images are built with
PYNQ_VERSION = "3.0.1"
IP_VLNV = ("tellme", "tellme", "tellme_accel", "1.0")   # vendor, library, name, version
WRAPPER = "tellme_accel"        # the packaged Verilog wrapper's module name
TOP_MODULE = "tellme_top"       # the Amaranth top's module name inside the wrapper
BD_NAME = "tellme_bd"
IP_INSTANCE = "tellme_0"
MASTER_DATA_BITS = 128
MASTER_ID_BITS = 1              # in-order masters (the weight streamer drives ID 0)
AXCACHE = 0b0011                # normal, non-cacheable, bufferable: non-coherent on HPC0 too
CONTROL_BASE = 0x8000_0000      # M_AXI_HPM0_LPD
INTC_BASE = 0x8001_0000
INTC_RANGE = 64 << 10
FREQ_TOLERANCE = 0.005          # |actual - wanted| / wanted the PL clock may be off by

# AXI4 channel signals: (name, width or a key of the interface's widths, direction as seen by
# the master: "O" master drives, "I" master receives, required).
_AR = (("arid", "id", "O"), ("araddr", "addr", "O"), ("arlen", 8, "O"), ("arsize", 3, "O"),
       ("arburst", 2, "O"), ("arlock", 1, "O"), ("arcache", 4, "O"), ("arprot", 3, "O"),
       ("arqos", 4, "O"), ("arvalid", 1, "O"), ("arready", 1, "I"))
_R = (("rid", "id", "I"), ("rdata", "data", "I"), ("rresp", 2, "I"), ("rlast", 1, "I"),
      ("rvalid", 1, "I"), ("rready", 1, "O"))
_AW = tuple((("aw" + n[2:]), w, d) for n, w, d in _AR)
_W = (("wdata", "data", "O"), ("wstrb", "strb", "O"), ("wlast", 1, "O"), ("wvalid", 1, "O"),
      ("wready", 1, "I"))
_B = (("bid", "id", "I"), ("bresp", 2, "I"), ("bvalid", 1, "I"), ("bready", 1, "O"))
# AXI4-Lite, as hw.regs.axil_members names it (direction seen by the master).
_LITE = (("awaddr", "addr", "O"), ("awprot", 3, "O"), ("awvalid", 1, "O"), ("awready", 1, "I"),
         ("wdata", "data", "O"), ("wstrb", "strb", "O"), ("wvalid", 1, "O"), ("wready", 1, "I"),
         ("bresp", 2, "I"), ("bvalid", 1, "I"), ("bready", 1, "O"),
         ("araddr", "addr", "O"), ("arprot", 3, "O"), ("arvalid", 1, "O"), ("arready", 1, "I"),
         ("rdata", "data", "I"), ("rresp", 2, "I"), ("rvalid", 1, "I"), ("rready", 1, "O"))


@dataclass(frozen=True)
class PsPort:
    """A PS AXI port: its block-design pin, clock pin and the CONFIG parameters that enable it
    and set its data width."""
    name: str           # short name: HP0, HPC0, HPM0_LPD ...
    pin: str            # the zynq_ultra_ps_e interface pin
    clock_pin: str
    use_param: str      # CONFIG.<use_param> = 1 turns it on
    width_param: str    # CONFIG.<width_param> = data width
    ddrc_port: str = ""  # the DDR controller port behind it (slave ports)


_DDRC = {"HP0": "S3 (with DisplayPort)", "HP1": "S4 (shared with HP2)",
         "HP2": "S4 (shared with HP1)", "HP3": "S5 (with FPD-DMA)",
         "HPC0": "S1/S2 via the CCI (with the APU)", "HPC1": "S1/S2 via the CCI (with the APU)"}


def _slave_port(name: str, gp: int) -> PsPort:
    """A PS slave port (PL masters into the PS): HPn is AXI GP n+2, HPCn is GP n."""
    return PsPort(name, f"S_AXI_{name}_FPD", f"saxi{name.lower()}_fpd_aclk",
                  f"PSU__USE__S_AXI_GP{gp}", f"PSU__SAXIGP{gp}__DATA_WIDTH", _DDRC[name])


def _master_port(name: str, gp: int) -> PsPort:
    """A PS master port (the PS into the PL): HPM0/1_FPD are GP 0/1, HPM0_LPD is GP 2."""
    return PsPort(name, f"M_AXI_{name}", f"maxi{name.lower()}_aclk", f"PSU__USE__M_AXI_GP{gp}",
                  f"PSU__MAXIGP{gp}__DATA_WIDTH")


PS_PORTS = {p.name: p for p in (
    *(_slave_port(f"HP{n}", n + 2) for n in range(4)),
    *(_slave_port(f"HPC{n}", n) for n in range(2)),
    _master_port("HPM0_FPD", 0), _master_port("HPM1_FPD", 1), _master_port("HPM0_LPD", 2),
)}


@dataclass(frozen=True)
class BusInterface:
    """One AXI interface of the top.

    ``name``: the wrapper's (Vivado) interface name; ``top_prefix``: the Amaranth top's member
    prefix; ``mode``: ``slave`` (AXI4-Lite control) or ``master`` (AXI4); ``channels``: ``r``
    (read only) or ``rw``; ``ps_port``: a key of :data:`PS_PORTS`."""
    name: str
    top_prefix: str
    role: str
    mode: str
    protocol: str       # AXI4LITE | AXI4
    data_bits: int
    addr_bits: int
    ps_port: str
    channels: str = "rw"
    id_bits: int = 0

    def signals(self) -> tuple:
        """((signal, width, direction at this port: "in" | "out"), ...) in channel order."""
        if self.protocol == "AXI4LITE":
            table = _LITE
        else:
            table = (_AR + _R) if self.channels == "r" else (_AW + _W + _B + _AR + _R)
        widths = {"id": self.id_bits, "addr": self.addr_bits, "data": self.data_bits,
                  "strb": self.data_bits // 8}
        out = []
        for sig, w, d in table:
            is_out = (d == "O") == (self.mode == "master")
            out.append((sig, widths[w] if isinstance(w, str) else w, "out" if is_out else "in"))
        return tuple(out)


CONTROL = BusInterface("s_axi_control", "s_axil", "control registers (spec/registers.py)",
                       "slave", "AXI4LITE", CONTROL_DATA_BITS, CONTROL_ADDR_WIDTH, "HPM0_LPD")
INTERFACES = (
    CONTROL,
    BusInterface("m_axi_w0", "m_axi_w0", "weights, stream 0", "master", "AXI4",
                 MASTER_DATA_BITS, ADDR_BITS, "HP0", "r", MASTER_ID_BITS),
    BusInterface("m_axi_w1", "m_axi_w1", "weights, stream 1", "master", "AXI4",
                 MASTER_DATA_BITS, ADDR_BITS, "HP1", "r", MASTER_ID_BITS),
    BusInterface("m_axi_w2", "m_axi_w2", "weights, stream 2", "master", "AXI4",
                 MASTER_DATA_BITS, ADDR_BITS, "HP3", "r", MASTER_ID_BITS),
    BusInterface("m_axi_kv", "m_axi_kv", "KV cache, activations, program fetch", "master",
                 "AXI4", MASTER_DATA_BITS, ADDR_BITS, "HPC0", "rw", MASTER_ID_BITS),
)
IFACES = {i.name: i for i in INTERFACES}


@dataclass(frozen=True)
class ScalarPort:
    """A single-wire port: wrapper name, top name, role, direction at the top."""
    name: str
    top_name: str
    role: str
    direction: str


CLOCK = ScalarPort("ap_clk", "clk", "the one clock (PS pl_clk0)", "in")
RESET = ScalarPort("ap_rst", "rst", "synchronous active-high reset (proc_sys_reset "
                   "peripheral_reset)", "in")
INTERRUPT = ScalarPort("interrupt", "irq", "level-high interrupt -> axi_intc -> pl_ps_irq0[0]",
                       "out")
SCALARS = (CLOCK, RESET, INTERRUPT)


@dataclass(frozen=True)
class Board:
    """How one target is built: part, board files, PL clock and the pins the PL drives.

    ``pins``: ((port, package pin, IO standard, constant value), ...) board outputs the
    block design drives with a constant."""
    target: str
    part: str
    board_part: str
    board_connections: str = ""
    pins: tuple = ()


BOARDS = {
    # Kria K26 SOM on the KV260 carrier; fan_en_b (active low) held at 0: fan always on,
    # since no TTC drives it in this design (AMD's designs use TTC0 EMIO wave_o[2]).
    "kv260": Board("kv260", "xck26-sfvc784-2LV-c", "xilinx.com:kv260_som:part0:1.4",
                   "som240_1_connector xilinx.com:kv260_carrier:som240_1_connector:1.3",
                   (("fan_en_b", "A12", "LVCMOS33", 0),)),
    "zcu104": Board("zcu104", "xczu7ev-ffvc1156-2-e", "xilinx.com:zcu104:part0:1.1"),
}


def board(target: str) -> Board:
    """The build record of ``target``; ValueError for targets without a board (``sim``)."""
    try:
        return BOARDS[target]
    except KeyError:
        raise ValueError(f"no board build for target {target!r}; boards: "
                         f"{', '.join(BOARDS)}") from None


def top_ports() -> dict:
    """{top Verilog port (flat naming): (width, "in" | "out")} the Amaranth top must have."""
    ports = {p.top_name: (1, p.direction) for p in SCALARS}
    for i in INTERFACES:
        for sig, w, d in i.signals():
            ports[f"{i.top_prefix}_{sig}"] = (w, d)
    return ports


def wrapper_ports() -> dict:
    """{wrapper (Vivado) port: (width, direction, top port with flat naming)}."""
    ports = {p.name: (1, p.direction, p.top_name) for p in SCALARS}
    for i in INTERFACES:
        for sig, w, d in i.signals():
            ports[f"{i.name}_{sig}"] = (w, d, f"{i.top_prefix}_{sig}")
    return ports


def resolve_top_names(found: dict) -> tuple[dict, list[str]]:
    """Map the contract's flat top names to the ports ``found`` ({name: (width, dir)}) of a
    generated top (flat ``a_b`` or nested ``a__b``). Returns ({flat: actual}, problems)."""
    names, problems = {}, []
    want = top_ports()
    for i in INTERFACES:
        for sig, _, _ in i.signals():
            flat = f"{i.top_prefix}_{sig}"
            for cand in (flat, f"{i.top_prefix}__{sig}"):
                if cand in found:
                    names[flat] = cand
                    break
    for p in SCALARS:
        if p.top_name in found:
            names[p.top_name] = p.top_name
    for flat, (w, d) in want.items():
        actual = names.get(flat)
        if actual is None:
            problems.append(f"missing port {flat} ({d} {w})")
        elif found[actual] != (w, d):
            fw, fd = found[actual]
            problems.append(f"port {actual} is {fd} {fw}, the contract says {d} {w}")
    extra = sorted(set(found) - set(names.values()))
    problems += [f"port {e} is not in the shell contract (spec/shell.py)" for e in extra]
    return names, problems


def check_top_ports(found: dict) -> dict:
    """{flat: actual} for a top whose ports ``found`` match the contract, else ValueError
    listing every difference."""
    names, problems = resolve_top_names(found)
    if problems:
        raise ValueError("the top's ports differ from the shell contract:\n  "
                         + "\n  ".join(problems))
    return names


__all__ = ["SHELL_VERSION", "VIVADO_VERSION", "PYNQ_VERSION", "IP_VLNV", "WRAPPER",
           "TOP_MODULE", "BD_NAME", "IP_INSTANCE", "MASTER_DATA_BITS", "MASTER_ID_BITS",
           "AXCACHE", "CONTROL_BASE", "INTC_BASE", "INTC_RANGE", "FREQ_TOLERANCE", "PsPort",
           "PS_PORTS", "BusInterface", "CONTROL", "INTERFACES", "IFACES", "ScalarPort",
           "CLOCK", "RESET", "INTERRUPT", "SCALARS", "Board", "BOARDS", "board", "top_ports",
           "wrapper_ports", "resolve_top_names", "check_top_ports", "CONTROL_ADDR_WIDTH",
           "CONTROL_DATA_BITS"]
