"""The accelerator's control registers: the one definition the RTL (``tellme.hw.regs``), the
host driver and docs/hw/registers.md are generated from. NumPy-free.

The host reads offsets and fields from here (``REGS["CTRL"].offset``, ``encode``, ``decode``);
nothing copies an offset by hand. ``tellme hw regs --markdown > docs/hw/registers.md``
regenerates the page (a test checks that it is current).
"""

from __future__ import annotations

from dataclasses import dataclass

from .memory_map import ADDR_BITS, MEMORY_MAP_VERSION
from .numerics import StreamFormat, stream_format
from .program import ERRORS, KV_DTYPES, PROGRAM_VERSION
from .targets import TARGET_NAMES, Target, target as get_target

REGMAP_VERSION = 1
ID_MAGIC = 0x544C4D45           # "TLME" read as a big-endian word
DATA_BITS = 32
ADDR_WIDTH = 12                 # the slave decodes a 4 KiB window (Vivado's smallest range)
ACCESS = {
    "RO": "read-only; writes are ignored",
    "RW": "read/write; byte strobes honoured",
    "W1C": "read; writing 1 clears a bit (a hardware set in the same cycle wins)",
    "W1S": "write 1 for a one-cycle pulse to the hardware; reads 0",
}
BLOCKS = {"SEQ": "sequencer (program fetch and decode)", "WSTREAM": "weight streamer (AXI)",
          "TLMM": "TLMM engine", "EW": "element-wise pipeline", "ATTN": "attention engine",
          "KVDMA": "KV cache DMA (AXI)"}
PORTS = ("weights0", "weights1", "weights2", "kv/act", "program")


@dataclass(frozen=True)
class Field:
    """Bits ``[lsb, lsb + width)`` of a register. ``const``: a build-time value (ID,
    capabilities) given when the register file is generated; no hardware port."""
    name: str
    lsb: int
    width: int = 1
    reset: int = 0
    doc: str = ""
    const: bool = False

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb


@dataclass(frozen=True)
class Register:
    """One 32-bit register at ``offset`` (``counter`` 64: two words, LO then HI).

    ``counter``: 0, or the width (32, 64) of a cycle/event counter that adds its
    ``inc_bits``-wide input every cycle and clears on the ``counters_clear`` input."""
    name: str
    offset: int
    access: str
    fields: tuple
    doc: str = ""
    counter: int = 0
    inc_bits: int = 1

    @property
    def words(self) -> int:
        return 2 if self.counter == 64 else 1

    @property
    def reset(self) -> int:
        return sum(f.reset << f.lsb for f in self.fields)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"register {self.name} has no field {name!r}")


def _value(name="VALUE", doc="", **kw):
    return (Field(name, 0, 32, doc=doc, **kw),)


def _const(name, lsb, width, doc):
    return Field(name, lsb, width, doc=doc, const=True)


def _pair(name, offset, access, doc, note=""):
    """A 64-bit value as the registers ``<name>_LO`` and ``<name>_HI``."""
    return (Register(f"{name}_LO", offset, access, _value(doc="bits 31:0" + note), doc),
            Register(f"{name}_HI", offset + 4, access, _value(doc="bits 63:32")))


def _counters():
    regs = [Register("CYCLES", 0x080, "RO", _value(doc="cycles while STATUS.BUSY"),
                     "clock cycles of the last run (64 bits: read LO, then HI)", counter=64),
            Register("RD_BEATS", 0x088, "RO", _value(doc="read beats"),
                     "AXI read data beats over all masters", counter=32, inc_bits=3),
            Register("WR_BEATS", 0x08C, "RO", _value(doc="write beats"),
                     "AXI write data beats over all masters", counter=32, inc_bits=2)]
    off = 0x090
    for blk, what in BLOCKS.items():
        regs.append(Register(f"BUSY_{blk}", off, "RO", _value(doc="cycles"),
                             f"{what}: cycles with work in progress", counter=32))
        regs.append(Register(f"STALL_{blk}", off + 4, "RO", _value(doc="cycles"),
                             f"{what}: cycles stalled on input, output or memory", counter=32))
        off += 8
    return regs


REGISTERS = (
    Register("ID", 0x000, "RO", (_const("MAGIC", 0, 32, "0x544C4D45 (\"TLME\")"),),
             "identifies a tellme accelerator"),
    Register("VERSION", 0x004, "RO", (
        _const("REGMAP", 0, 8, "register map version"),
        _const("PROGRAM", 8, 8, "sequencer program format version (docs/hw/sequencer.md)"),
        _const("MEMORY_MAP", 16, 8, "memory map version (docs/hw/memory-map.md)")),
        "format versions the build implements"),
    Register("BUILD_HASH", 0x008, "RO", (_const("HASH", 0, 32, "first 32 bits of the SHA-256 "
                                                "of the generated Verilog (with HASH = 0)"),),
             "which generated design this is"),
    Register("CAP_BUILD", 0x00C, "RO", (
        _const("TARGET", 0, 8, "index into the target table: " +
               ", ".join(f"{i} {n}" for i, n in enumerate(TARGET_NAMES))),
        _const("FMT_MAN", 8, 8, "stream format fraction bits (10 FP16, 18 FP24)"),
        _const("KV_FORMATS", 16, 8, "bit i: KV dtype " +
               ", ".join(f"{i} {n}" for i, n in enumerate(KV_DTYPES)) + " supported"),
        _const("ADDR_BITS", 24, 8, "address bits of the AXI masters")),
        "build parameters"),
    Register("CAP_TLMM", 0x010, "RO", (
        _const("T", 0, 8, "tables per cycle (tiling T)"),
        _const("Q", 8, 8, "output columns per cycle (tiling Q)"),
        _const("KB_MAX", 16, 8, "largest K block count of a linear"),
        _const("NBT_MAX", 24, 8, "largest tile in column blocks")), "TLMM geometry"),
    Register("CAP_BUFFERS", 0x014, "RO", (
        _const("HALF_DEPTH", 0, 16, "weight-buffer words per bank in a ping-pong half"),
        _const("TOK_MAX", 16, 16, "tokens per call")), "buffer limits"),
    Register("CAP_ATTN", 0x018, "RO", (
        _const("LANES", 0, 8, "attention lanes (largest GQA group)"),
        _const("HEAD_DIM_MAX", 8, 8, "largest head_dim"),
        _const("CTX_MAX", 16, 16, "longest context")), "attention limits"),
    Register("CAP_ROWS", 0x01C, "RO", (
        _const("ROW_MAX", 0, 16, "longest element-wise row"),
        _const("LM_HEAD_LANES", 16, 8, "int8 MACs per cycle of the PL LM head (LM_HEAD; 0: "
                                       "none, the host applies the head to hidden rows); "
                                       "hidden sizes are multiples of spec.lm_head.Q_BEAT"),
        _const("LM_HEAD_MAX_D", 24, 8, "longest hidden size of LM_HEAD, in units of 256")),
        "element-wise and LM-head limits"),
    Register("CTRL", 0x020, "RW", (
        Field("IRQ_EN_DONE", 0, doc="interrupt on IRQ_STATUS.DONE"),
        Field("IRQ_EN_ERROR", 1, doc="interrupt on IRQ_STATUS.ERROR")),
        "interrupt enables; irq = OR(IRQ_STATUS & enables)"),
    Register("CMD", 0x024, "W1S", (
        Field("START", 0, doc="run the program at PROG_ADDR (ignored while BUSY)"),
        Field("SOFT_RESET", 1, doc="abort and return the datapath to idle; registers keep "
                                   "their values")), "commands"),
    Register("STATUS", 0x028, "RO", (
        Field("BUSY", 0, doc="a program is running"),
        Field("DONE", 1, doc="the last run reached END (cleared by START)"),
        Field("ERROR", 2, doc="the last run stopped on an error (ERR_FLAGS)"),
        Field("RECORD", 16, 16, doc="index of the record being executed")), "run state"),
    Register("IRQ_STATUS", 0x02C, "W1C", (
        Field("DONE", 0, doc="a run reached END"),
        Field("ERROR", 1, doc="a run stopped on an error")), "interrupt causes"),
    Register("ERR_FLAGS", 0x030, "W1C", (
        Field("AXI_SLVERR", 0, doc="an AXI master saw SLVERR (port in ERR_INFO)"),
        Field("AXI_DECERR", 1, doc="an AXI master saw DECERR (port in ERR_INFO)"),
        Field("BAD_PROGRAM", 2, doc="the program failed a check (code in ERR_INFO)"),
        Field("TIMEOUT", 3, doc="no AXI progress for TIMEOUT cycles while busy"),
        Field("BAD_REG", 4, doc="an access to an unmapped register offset (set by the "
                                "register file itself)")),
        "sticky error causes; a run that sets one stops and returns to idle"),
    Register("ERR_INFO", 0x034, "RO", (
        Field("PORT", 0, 4, doc="AXI port of an AXI error: " +
              ", ".join(f"{i} {n}" for i, n in enumerate(PORTS))),
        Field("CODE", 8, 8, doc="program error code (table below)"),
        Field("RECORD", 16, 16, doc="record index of the error")), "first error's details"),
    *_pair("ERR_ADDR", 0x038, "RO", "address of the failing access or record"),
    *_pair("PROG_ADDR", 0x040, "RW", "program address (latched at START)",
           " (64-byte aligned)"),
    *_pair("WIN_BASE", 0x048, "RW",
           "DDR window: every access must lie in [WIN_BASE, WIN_BASE + WIN_SIZE)"),
    *_pair("WIN_SIZE", 0x050, "RW", "DDR window size in bytes", "; WIN_SIZE 0: no check"),
    Register("TIMEOUT", 0x058, "RW", _value("CYCLES", "0 disables the watchdog",
                                            reset=1 << 24),
             "watchdog: cycles without an AXI handshake while busy"),
    *_counters(),
)
REGS = {r.name: r for r in REGISTERS}
UNMAPPED_FLAG = ("ERR_FLAGS", "BAD_REG")


def _check_map():
    used = {}
    for r in REGISTERS:
        if r.access not in ACCESS or r.offset % 4 or r.offset >= 1 << ADDR_WIDTH:
            raise AssertionError(f"register {r.name}: bad access or offset")
        for w in range(r.words):
            off = r.offset + 4 * w
            if off in used:
                raise AssertionError(f"{r.name} overlaps {used[off]} at {off:#x}")
            used[off] = r.name
        bits = 0
        for f in r.fields:
            if f.lsb + f.width > DATA_BITS or bits & f.mask or f.reset >> f.width:
                raise AssertionError(f"{r.name}.{f.name}: bad bits or reset")
            bits |= f.mask
            if f.const and r.access != "RO":
                raise AssertionError(f"{r.name}.{f.name}: a constant must be RO")


_check_map()


def port_name(reg: Register, f: Field) -> str:
    """The hardware port of a field: ``<reg>`` for a register's single VALUE field, else
    ``<reg>_<field>`` (lower case)."""
    return reg.name.lower() if f.name == "VALUE" else f"{reg.name}_{f.name}".lower()


def encode(reg: str | Register, **fields) -> int:
    """A register word from field values (unnamed fields 0); ValueError if one does not fit."""
    r = REGS[reg] if isinstance(reg, str) else reg
    word = 0
    for name, v in fields.items():
        f = r.field(name)
        if not 0 <= v < 1 << f.width:
            raise ValueError(f"{r.name}.{name} = {v} does not fit {f.width} bits")
        word |= v << f.lsb
    return word


def decode(reg: str | Register, word: int) -> dict:
    """{field: value} of a register word."""
    r = REGS[reg] if isinstance(reg, str) else reg
    return {f.name: (word >> f.lsb) & ((1 << f.width) - 1) for f in r.fields}


def const_values(target: str | Target, build_hash: int = 0,
                 fmt: StreamFormat | None = None, kv_dtypes=None) -> dict:
    """{(register, field): value} of every constant field for a build of ``target`` in
    stream format ``fmt`` (None: the contract's) with KV dtypes ``kv_dtypes`` (default: int8,
    the cache every build stores and program format 2 names)."""
    tgt = target if isinstance(target, Target) else get_target(target)
    fmt = stream_format(fmt)
    kv = ("int8",) if kv_dtypes is None else tuple(kv_dtypes)
    tl, at = tgt.tlmm, tgt.attention_int      # the engine in the top
    vals = {
        ("ID", "MAGIC"): ID_MAGIC,
        ("VERSION", "REGMAP"): REGMAP_VERSION, ("VERSION", "PROGRAM"): PROGRAM_VERSION,
        ("VERSION", "MEMORY_MAP"): MEMORY_MAP_VERSION,
        ("BUILD_HASH", "HASH"): build_hash,
        ("CAP_BUILD", "TARGET"): TARGET_NAMES.index(tgt.name),
        ("CAP_BUILD", "FMT_MAN"): fmt.man,
        ("CAP_BUILD", "KV_FORMATS"): sum(1 << KV_DTYPES.index(k) for k in kv),
        ("CAP_BUILD", "ADDR_BITS"): ADDR_BITS,
        ("CAP_TLMM", "T"): tgt.tiling.t, ("CAP_TLMM", "Q"): tgt.tiling.q,
        ("CAP_TLMM", "KB_MAX"): tl["kb_max"], ("CAP_TLMM", "NBT_MAX"): tl["nbt_max"],
        ("CAP_BUFFERS", "HALF_DEPTH"): tl["half_depth"],
        ("CAP_BUFFERS", "TOK_MAX"): tl["tok_max"],
        ("CAP_ATTN", "LANES"): at["lanes"], ("CAP_ATTN", "HEAD_DIM_MAX"): at["head_dim"],
        ("CAP_ATTN", "CTX_MAX"): 2 ** at["ctx_bits"] - 1,
        ("CAP_ROWS", "ROW_MAX"): tgt.row_max,
        ("CAP_ROWS", "LM_HEAD_LANES"): tgt.lm_head.get("lanes", 0),
        ("CAP_ROWS", "LM_HEAD_MAX_D"): tgt.lm_head.get("max_d", 0) // 256,
    }
    want = {(r.name, f.name) for r in REGISTERS for f in r.fields if f.const}
    if set(vals) != want:
        raise AssertionError(f"constant fields {sorted(want ^ set(vals))} are not covered")
    for (r, f), v in vals.items():
        if v >> REGS[r].field(f).width:
            raise ValueError(f"{r}.{f} = {v} does not fit {REGS[r].field(f).width} bits")
    return vals


def const_words(target, build_hash: int = 0, fmt=None, kv_dtypes=None) -> dict:
    """{register: word} of the constant registers of a build (what the host reads back)."""
    out: dict[str, int] = {}
    for (r, f), v in const_values(target, build_hash, fmt, kv_dtypes).items():
        out[r] = out.get(r, 0) | (v << REGS[r].field(f).lsb)
    return out


# --------------------------------------------------------------------------- docs

_INTRO = """\
# Control registers (AXI4-Lite)

Generated from `spec/registers.py` (register map version {version}) by
`tellme hw regs --markdown > docs/hw/registers.md`; tests/test_regs.py checks that this page
is current. Do not edit it by hand. RTL: `hw/regs.py` (`RegisterFile`, generated from the same
table); the host imports `tellme.spec.registers` (`REGS`, `encode`, `decode`, `const_words`).

**Bus.** AXI4-Lite slave, 32-bit data, {aw}-bit byte addresses (a 4 KiB window; the PS's
M_AXI_HPM0_LPD at 0x8000_0000 in the planned block design). Every access is answered:
an offset no register occupies reads 0 and ignores writes with response OKAY, and sets
`ERR_FLAGS.BAD_REG`. OKAY rather than SLVERR because PYNQ's MMIO turns an error response into
a bus error that kills the Python process, while a hang (no response) freezes the SoC (PYNQ
issue 1652); the sticky flag still makes the mistake visible. Writes to read-only registers are
ignored (OKAY). Byte strobes are honoured; the two low address bits are ignored.

**Throughput.** One write every two cycles (AW and W may arrive in any order, one write is
buffered while B waits), one read every two cycles; ready signals depend on registered state
only.

**64-bit values** are LO/HI register pairs. Addresses: write LO and HI, in any order, before
`CMD.START` (the sequencer latches them at START). Counters: read LO first, the read latches
HI, then read HI (a consistent 64-bit value while counting).

**Counters** count while their block's condition holds and clear when a run starts; read them
after `STATUS.DONE` or `STATUS.ERROR`.

**Run protocol.** Set WIN_BASE/WIN_SIZE to the buffer, PROG_ADDR to the program, write
`CMD.START`; wait for the interrupt (or poll `STATUS`); `IRQ_STATUS` is write-1-to-clear.
On an error the run stops at the failing record, `STATUS.ERROR` and `IRQ_STATUS.ERROR` are set,
`ERR_FLAGS`/`ERR_INFO`/`ERR_ADDR` say why, and the accelerator is idle again (never hangs);
clear `ERR_FLAGS` before the next START.
"""


def markdown() -> str:
    """docs/hw/registers.md."""
    out = [_INTRO.format(version=REGMAP_VERSION, aw=ADDR_WIDTH).rstrip(), "",
           "## Access types", "", "| access | meaning |", "|---|---|"]
    out += [f"| {a} | {d} |" for a, d in ACCESS.items()]
    out += ["", "## Map", "", "| offset | register | access | reset | description |",
            "|---|---|---|---|---|"]
    for r in REGISTERS:
        what = r.doc + (f" (counter, +{r.inc_bits}-bit input per cycle)"
                        if r.inc_bits > 1 else "")
        if r.words == 2:
            out.append(f"| `{r.offset:#05x}` | {r.name}_LO | {r.access} | 0 | {what} |")
            out.append(f"| `{r.offset + 4:#05x}` | {r.name}_HI | {r.access} | 0 | "
                       f"bits 63:32 |")
        else:
            reset = "build" if any(f.const for f in r.fields) else f"`{r.reset:#x}`"
            out.append(f"| `{r.offset:#05x}` | {r.name} | {r.access} | {reset} | {what} |")
    out += ["", "## Fields", "", "Port: the register file's port for the field (`In` from the "
            "top for RO and W1C set inputs, `Out` to the top for RW and W1S); constants have "
            "none.", ""]
    for r in REGISTERS:
        if r.counter:
            continue
        out += [f"**{r.name}** (`{r.offset:#05x}`, {r.access})", "",
                "| bits | field | reset | port | description |", "|---|---|---|---|---|"]
        for f in r.fields:
            bits = f"{f.lsb + f.width - 1}:{f.lsb}" if f.width > 1 else f"{f.lsb}"
            port = "-" if f.const else f"`{port_name(r, f)}`" + \
                (f", `{port_name(r, f)}_set`" if r.access == "W1C" else "")
            reset = "build" if f.const else f"{f.reset:#x}"
            out.append(f"| {bits} | {f.name} | {reset} | {port} | {f.doc} |")
        out.append("")
    cnt = [r for r in REGISTERS if r.counter]
    out += ["Counters (RO, field VALUE; input port `<name>_inc`, all cleared by "
            "`counters_clear`): " + ", ".join(f"`{r.name}`" for r in cnt) + ".", "",
            "## Capabilities per target", "",
            "Contract stream format, int8 KV cache, BUILD_HASH 0.", "",
            "| register | " + " | ".join(TARGET_NAMES) + " |",
            "|---|" + "---|" * len(TARGET_NAMES)]
    words = {t: const_words(t) for t in TARGET_NAMES}
    for r in REGISTERS:
        if any(f.const for f in r.fields):
            out.append(f"| {r.name} | " + " | ".join(f"`{words[t][r.name]:#010x}`"
                                                       for t in TARGET_NAMES) + " |")
    out += ["", "## Program error codes (ERR_INFO.CODE)", "", "| code | name | meaning |",
            "|---|---|---|"]
    out += [f"| {c} | {n} | {d} |" for c, (n, d) in ERRORS.items()]
    return "\n".join(out) + "\n"


__all__ = ["Field", "Register", "REGISTERS", "REGS", "ACCESS", "REGMAP_VERSION", "ID_MAGIC",
           "ADDR_WIDTH", "DATA_BITS", "UNMAPPED_FLAG", "port_name", "encode", "decode",
           "const_values", "const_words", "markdown"]
