"""The sequencer's front end: fetches a program (docs/hw/sequencer.md) from DDR, checks it and
dispatches its records, one at a time, as commands on one stream per block class.

Two passes over the program, as the format prescribes:

* **pass 1 (check)**: the 64-byte header (magic, version, sizes, enumerations, reserved bytes,
  ``kv_beat`` a power of two; LIMIT: record count within the build's ``max_records``, the KV
  cache int8 and, when the build names it, ``kv_beat`` its integer engine's), then every
  record streamed at one 128-bit beat per cycle: CRC-32 (zlib's) computed in hardware over
  header (CRC field as 0) and records, opcode known, flags/padding zero, enumerations in
  range, no zero size, decode attention of one row, even head_dim, END exactly last, every
  address field inside the DDR window (``WIN_BASE``/``WIN_SIZE``) and below
  ``2**addr_width``. Errors are reported in the golden
  decoder's order (header, CRC, first format error, first address error).
* **pass 2 (execute)**: record i is fetched (one 4-beat burst), decoded with fixed bit slices
  and issued on its class's stream; the sequencer waits for that class's ``done`` before it
  fetches record i+1 (no overlap: each record reads DDR and writes DDR). END raises DONE.

Command payloads are derived from ``tellme.spec.program.OPS`` (:func:`command_layout`):
``{record u16, layer u16, opcode u8, args}`` with ``args`` the op's fields in table order
(addresses ``addr_width`` bits, f32 fields as their raw bits), a union over the ops of a
class with several. Port names towards the register file match ``hw.regs.RegisterFile``.
"""

from __future__ import annotations

import functools
import operator
import struct

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tellme.spec.memory_map import PROGRAM_HEADER_BYTES, PROGRAM_RECORD_BYTES
from tellme.spec.numerics import STREAM_FORMATS
from tellme.spec.program import (
    ENUM_FIELDS,
    ERROR_CODES,
    HEADER_FIELDS,
    KINDS,
    KV_DTYPES,
    MAGIC,
    NONZERO_FIELDS,
    OPS,
    OUTPUTS,
    PROGRAM_VERSION,
)

__all__ = ["Sequencer", "CLASSES", "OP_CLASS", "command_layout", "command_fields", "report_blocks",
           "crc32_matrices", "AXI_PORT_PROGRAM", "HEADER_RECORD"]

# Block classes: one command stream (``o_<class>``) and one ``<class>_done`` input each.
CLASSES = {
    "linear": ("LINEAR",),
    "ew": ("NORM", "QUANT", "ROPE", "RESIDUAL", "GATED_ACT"),
    "attn": ("ATTENTION",),
    "kv": ("KV_WRITE",),
    "head": ("EMBED", "LM_HEAD"),
}
OP_CLASS = {op: cls for cls, ops in CLASSES.items() for op in ops}
assert set(OP_CLASS) | {"END"} == set(OPS), "every op but END belongs to one class"
AXI_PORT_PROGRAM = 4            # ERR_INFO.PORT of the program fetch (docs/hw/registers.md)
HEADER_RECORD = 0xFFFF          # ERR_INFO.RECORD of a header error
_TYPE_BITS = {"u32": 32, "u16": 16, "u8": 8, "f32": 32, "addr": 64}
_BEAT = 128
_BEATS = PROGRAM_RECORD_BYTES * 8 // _BEAT      # 4 beats per record and per header
KV_INT8 = KV_DTYPES.index("int8")               # the header's kv_dtype a build runs


def command_fields(op: str, addr_width: int = 40) -> list[tuple[str, int]]:
    """(field, bits) of an op's command arguments, in the record table's order."""
    return [(n, addr_width if t == "addr" else _TYPE_BITS[t]) for n, t, _ in OPS[op].layout]


def command_layout(cls: str, addr_width: int = 40) -> data.StructLayout:
    """Payload of class ``cls``'s command stream: record index, layer (0xFFFF none), opcode
    and the op's fields (a union over the class's ops when it has several)."""
    structs = {op.lower(): data.StructLayout({n: unsigned(w) for n, w in
                                             command_fields(op, addr_width)})
               for op in CLASSES[cls]}
    args = next(iter(structs.values())) if len(structs) == 1 else data.UnionLayout(structs)
    return data.StructLayout({"record": unsigned(16), "layer": unsigned(16),
                              "opcode": unsigned(8), "args": args})


# --------------------------------------------------------------------------- CRC-32

_POLY = 0xEDB88320                # zlib's reflected polynomial


def _crc_raw(state: int, blob: bytes) -> int:
    for b in blob:
        state ^= b
        for _ in range(8):
            state = (state >> 1) ^ (_POLY if state & 1 else 0)
    return state


def crc32_matrices(nbytes: int = _BEAT // 8) -> tuple[list[int], list[int]]:
    """GF(2) matrices of one CRC step over ``nbytes`` little-endian bytes: new state bit j =
    parity(state & ms[j]) ^ parity(data & md[j]) (raw register: zlib.crc32 = ~raw(~prev))."""
    cols_s = [_crc_raw(1 << i, bytes(nbytes)) for i in range(32)]
    cols_d = [_crc_raw(0, (1 << k).to_bytes(nbytes, "little")) for k in range(8 * nbytes)]
    ms = [sum(1 << i for i in range(32) if cols_s[i] >> j & 1) for j in range(32)]
    md = [sum(1 << k for k in range(8 * nbytes) if cols_d[k] >> j & 1) for j in range(32)]
    return ms, md


def _crc_step(state, beat):
    ms, md = crc32_matrices()
    return Cat(*((state & Const(ms[j], 32)).xor() ^ (beat & Const(md[j], _BEAT)).xor()
                 for j in range(32)))


# --------------------------------------------------------------------------- the block

class Sequencer(wiring.Component):
    """Program fetch (AXI4 read master), pass-1 checks and record dispatch.

    Parameters
    ----------
    addr_width : int
        AXI address bits (40: the Zynq UltraScale+ HP port map); address fields must be below
        ``2**addr_width`` (ADDRESS otherwise) and are carried at this width in the commands.
    max_records : int
        Largest record count of a program (the build's limit, LIMIT above it; <= 65535).
    max_burst : int
        Longest pass-1 read burst in beats (INCR, never across a 4 KiB page).
    max_outstanding : int
        Pass-1 read bursts in flight at most (R is always accepted: no FIFO needed).
    kv_beat : int or None
        The build's int8 KV block (keys per block, the integer attention engine's beat,
        ``spec.targets`` ``attention_int["beat"]``): a header with another ``kv_beat`` is LIMIT.
        None: not checked here (the power-of-two rule and ``kv_dtype`` int8 always are).

    Members
    -------
    cmd_start, cmd_soft_reset : In(1)
        One-cycle pulses from CMD (START is ignored while busy; SOFT_RESET aborts from any
        state: read bursts in flight are drained, then idle, no error raised).
    prog_addr, win_base, win_size : In(64)
        PROG_ADDR (64-byte aligned), WIN_BASE, WIN_SIZE (0: no window check); latched at START.
    timeout_cycles : In(32)
        Watchdog: cycles without progress (an AXI handshake of the sequencer, a command
        accepted, a ``done``, or the ``progress`` input) before TIMEOUT; 0 disables it.
    progress : In(1)
        Any other block's AXI handshake (keeps long blocks from tripping the watchdog).
    unit_axi_error : In(1)
        Instead of ``done``: the execution unit of the command in flight saw a non-OKAY AXI
        response on its own masters (one cycle); the run stops with ERR_FLAGS.AXI_SLVERR,
        ERR_INFO.PORT ``unit_axi_port``, the record and its address.
    unit_axi_port : In(4)
        ERR_INFO.PORT of that error (``spec.registers.PORTS``).
    o_<class> : Out(stream.Signature(command_layout(class)))
        One command per record of the class (``CLASSES``).
    <class>_done : In(1)
        The class's block finished the command issued last (a pulse, the cycle after the
        command's handshake at the earliest).
    <class>_error : In(8)
        Instead of ``done``: a non-zero program error code (``spec.program.ERRORS``, e.g.
        UNSUPPORTED_OP from a build without the class's execution unit) for one cycle; the run
        stops with BAD_PROGRAM, that code, the record and its address (an error wins over a
        ``done`` in the same cycle).
    status_busy, status_done, status_error : Out(1); status_record : Out(16)
        STATUS fields (DONE/ERROR hold until the next START; RECORD: record being checked or
        executed).
    irq_status_done_set, irq_status_error_set : Out(1)
        One-cycle pulses at END and at an error.
    err_flags_axi_slverr_set, err_flags_axi_decerr_set, err_flags_bad_program_set,
    err_flags_timeout_set : Out(1)
        One-cycle pulses setting the sticky ERR_FLAGS bits.
    err_info_port : Out(4), err_info_code : Out(8), err_info_record : Out(16), err_addr : Out(64)
        The error's details, held until the next START: AXI port (4: program fetch), program
        error code (spec.program.ERRORS; 0 for AXI and timeout errors), record index (0xFFFF:
        header), address (the offending address field, the failing beat, or the record).
    busy_seq_inc, stall_seq_inc, counters_clear : Out(1)
        Counter increments (busy: not idle; stall: waiting on memory, on a command's ready or
        on a block's done) and the counter clear pulse at START.
    m_axi_ar* / m_axi_r* : AXI4 read master, 128-bit data, ``arid``/``rid`` 1 bit (always 0).
    """

    def __init__(self, *, addr_width: int = 40, max_records: int = 4096, max_burst: int = 16,
                 max_outstanding: int = 4, kv_beat: int | None = None):
        try:
            self._check(addr_width, max_records, max_burst, max_outstanding, kv_beat)
        except ValueError:
            self._MustUse__silence = True      # not elaborated: do not warn about it
            raise
        self._aw, self._max_rec, self._kv_beat = addr_width, max_records, kv_beat
        self._max_burst, self._max_out = max_burst, max_outstanding
        members = {
            "cmd_start": In(1), "cmd_soft_reset": In(1),
            "prog_addr": In(64), "win_base": In(64), "win_size": In(64),
            "timeout_cycles": In(32), "progress": In(1),
            "unit_axi_error": In(1), "unit_axi_port": In(4),
            "status_busy": Out(1), "status_done": Out(1), "status_error": Out(1),
            "status_record": Out(16),
            "irq_status_done_set": Out(1), "irq_status_error_set": Out(1),
            "err_flags_axi_slverr_set": Out(1), "err_flags_axi_decerr_set": Out(1),
            "err_flags_bad_program_set": Out(1), "err_flags_timeout_set": Out(1),
            "err_info_port": Out(4), "err_info_code": Out(8), "err_info_record": Out(16),
            "err_addr": Out(64),
            "busy_seq_inc": Out(1), "stall_seq_inc": Out(1), "counters_clear": Out(1),
        }
        for cls in CLASSES:
            members[f"o_{cls}"] = Out(stream.Signature(command_layout(cls, addr_width)))
            members[f"{cls}_done"] = In(1)
            members[f"{cls}_error"] = In(8)
        members.update({
            "m_axi_arid": Out(1), "m_axi_araddr": Out(addr_width), "m_axi_arlen": Out(8),
            "m_axi_arsize": Out(3), "m_axi_arburst": Out(2), "m_axi_arlock": Out(1),
            "m_axi_arcache": Out(4), "m_axi_arprot": Out(3), "m_axi_arqos": Out(4),
            "m_axi_arvalid": Out(1), "m_axi_arready": In(1),
            "m_axi_rid": In(1), "m_axi_rdata": In(_BEAT), "m_axi_rresp": In(2),
            "m_axi_rlast": In(1), "m_axi_rvalid": In(1), "m_axi_rready": Out(1),
        })
        super().__init__(members)

    @staticmethod
    def _check(addr_width, max_records, max_burst, max_outstanding, kv_beat):
        if not 13 <= addr_width <= 64:
            raise ValueError(f"addr_width must be 13..64, not {addr_width}")
        if not 2 <= max_records <= 0xFFFE:
            raise ValueError(f"max_records must be 2..65534, not {max_records}")
        if not 1 <= max_burst <= 4096 // (_BEAT // 8):
            raise ValueError(f"max_burst must be 1..256, not {max_burst}")
        if max_outstanding < 1:
            raise ValueError(f"max_outstanding must be >= 1, not {max_outstanding}")
        if kv_beat is not None and not (isinstance(kv_beat, int) and 1 <= kv_beat < 1 << 16
                                        and not kv_beat & (kv_beat - 1)):
            raise ValueError(f"kv_beat must be a power of two below 2**16 or None, not "
                             f"{kv_beat!r}")

    addr_width = property(lambda self: self._aw)
    max_records = property(lambda self: self._max_rec)
    kv_beat = property(lambda self: self._kv_beat)

    def elaborate(self, platform):
        m = Module()
        aw, nbytes = self._aw, _BEAT // 8
        rec_bits = PROGRAM_RECORD_BYTES * 8

        # -- latched at START -----------------------------------------------------------------
        prog = Signal(64)
        win_base, win_size = Signal(64), Signal(64)
        win_end = Signal(65)                  # win_base + win_size
        win_on = Signal()                     # win_size != 0
        count = Signal(32)                    # header's record count
        count_m1 = Signal(32)                 # count - 1 (mod 2**32)
        hdr_crc = Signal(32)
        rec_i = Signal(16)                    # record being received / executed
        rec_addr = Signal(64)                 # its DDR address

        # -- fetch engine: bursts over [f_addr, f_addr + 16*f_left) ----------------------------
        f_addr = Signal(aw)
        f_left = Signal(range(_BEATS * self._max_rec + 1))
        outstanding = Signal(range(self._max_out + 1))
        r_addr = Signal(64)                   # address of the next R beat (error reports)
        beat = Signal(range(_BEATS))          # position of the next beat within a record
        rec = Signal(rec_bits)                # beats of the record (or header) being received
        mb = self._max_burst

        def burst_len(addr, left):
            """Beats of the next burst at ``addr``: ``left``, at most ``max_burst`` and not
            across a 4 KiB page."""
            to_page = Signal(range(4096 // nbytes + 1))
            m.d.comb += to_page.eq((4096 - addr[:12]) >> 4)
            return Mux((left <= mb) & (left <= to_page), left, Mux(to_page <= mb, to_page, mb))

        # burst_len(f_addr, f_left), registered: computed from last cycle's f_addr and f_left,
        # which are this cycle's whenever a burst can issue (no issue the cycle after an
        # issue: ARVALID is high), except the cycle after the state machine sets them: there
        # it sets blen too (``next_record``, HEADER_CHECK)
        blen = Signal(range(mb + 1))
        m.d.sync += blen.eq(burst_len(f_addr, f_left))
        ar_hs = Signal()
        r_hs = Signal()
        r_last = Signal()
        m.d.comb += [ar_hs.eq(self.m_axi_arvalid & self.m_axi_arready),
                     r_hs.eq(self.m_axi_rvalid & self.m_axi_rready),
                     r_last.eq(r_hs & self.m_axi_rlast),
                     self.m_axi_rready.eq(1),
                     self.m_axi_arid.eq(0), self.m_axi_arsize.eq(4),
                     self.m_axi_arburst.eq(1), self.m_axi_arcache.eq(0b0011)]
        issue = Signal()
        # an AXI error, the watchdog or an abort this cycle: no new burst. The other errors
        # are raised in states whose fetch is complete (f_left == 0: a record's 4 beats are
        # in only once its bursts are all issued), so they need not stop it.
        stop_fetch = Signal()
        m.d.comb += issue.eq(~self.m_axi_arvalid & (f_left != 0) & ~stop_fetch
                             & ((outstanding < self._max_out) | r_last))
        with m.If(issue):
            m.d.sync += [self.m_axi_arvalid.eq(1), self.m_axi_araddr.eq(f_addr),
                         self.m_axi_arlen.eq(blen - 1), f_addr.eq(f_addr + (blen << 4)),
                         f_left.eq(f_left - blen)]
        with m.Elif(ar_hs):
            m.d.sync += self.m_axi_arvalid.eq(0)
        m.d.sync += outstanding.eq(outstanding + issue - r_last)
        full = Signal(rec_bits)               # the record completed by this cycle's beat
        rec_done = Signal()
        m.d.comb += [full.eq(Cat(rec[:rec_bits - _BEAT], self.m_axi_rdata)),
                     rec_done.eq(r_hs & (beat == _BEATS - 1))]
        with m.If(r_hs):
            m.d.sync += [beat.eq(beat + 1), r_addr.eq(r_addr + nbytes)]
            with m.Switch(beat):
                for b in range(_BEATS):
                    with m.Case(b):
                        m.d.sync += rec[b * _BEAT:(b + 1) * _BEAT].eq(self.m_axi_rdata)
        axi_err = Signal()
        m.d.comb += axi_err.eq(r_hs & self.m_axi_rresp[1])      # SLVERR 2, DECERR 3

        # -- CRC over header (CRC field as 0) and records --------------------------------------
        crc = Signal(32, init=0xFFFFFFFF)
        crc_in = Signal(_BEAT)
        crc_field = 16 * 8                    # header bytes 16..19 = bits 0..31 of beat 1
        hdr_beat1 = Signal()                  # registered: header beat 1 is the next beat
        m.d.comb += crc_in.eq(Mux(hdr_beat1, self.m_axi_rdata & ~Const(0xFFFFFFFF, _BEAT),
                                  self.m_axi_rdata))
        assert crc_field == _BEAT, "the CRC field opens header beat 1"
        # VERDICT's checks, registered every cycle (crc, hdr_crc and count are settled at
        # least two cycles before VERDICT)
        crc_bad, count_zero = Signal(), Signal()
        m.d.sync += [crc_bad.eq(~crc != hdr_crc), count_zero.eq(count == 0)]

        # -- header checks (on ``rec`` once the 4 header beats are in) --------------------------
        hoffs, off = {}, 0
        for n, code, _ in HEADER_FIELDS:
            size = struct.calcsize("<" + code)
            hoffs[n] = (off, size)
            off += size
        head_used = off

        def hfield(name):
            o, size = hoffs[name]
            return rec[o * 8:(o + size) * 8]

        # Registered every cycle from beats 0..2 of ``rec``: in HEADER_CHECK (the cycle after
        # the header's last beat) they hold the header's; beat 3 (reserved bytes) is checked
        # there directly.
        mans = [f.man for f in STREAM_FORMATS.values()]
        tail = 3 * _BEAT
        assert all(o + n <= tail // 8 for o, n in hoffs.values()), "header fields in beats 0..2"
        bad_magic, bad_version, bad_header_lo, over_limit = Signal(), Signal(), Signal(), Signal()
        kv_beat = hfield("kv_beat")
        # LIMIT: the record count, a KV cache other than int8 (the only one a build stores),
        # another block size than the build's engine (when the build names it)
        limit = (hfield("count") > self._max_rec) | (hfield("kv_dtype") != KV_INT8)
        if self._kv_beat is not None:
            limit = limit | (kv_beat != self._kv_beat)
        m.d.sync += [
            bad_magic.eq(hfield("magic") != int.from_bytes(MAGIC, "little")),
            bad_version.eq(hfield("version") != PROGRAM_VERSION),
            over_limit.eq(limit),
            bad_header_lo.eq(
                (hfield("header_bytes") != PROGRAM_HEADER_BYTES)
                | (hfield("record_bytes") != PROGRAM_RECORD_BYTES)
                | (hfield("kind") >= len(KINDS)) | (hfield("kv_dtype") >= len(KV_DTYPES))
                | (hfield("output") >= len(OUTPUTS))
                | ~Cat(*(hfield("fmt_man") == v for v in mans)).any()
                | (rec[head_used * 8:tail] != 0)
                | (hfield("tiling_t") == 0) | (hfield("tiling_q") == 0)
                | (hfield("num_layers") == 0) | (hfield("n_tokens") == 0)
                | (kv_beat == 0) | ((kv_beat & (kv_beat - 1)) != 0))]
        tail_nz = Signal()                    # last cycle's R beat (the header's beat 3) != 0
        m.d.sync += tail_nz.eq(self.m_axi_rdata != 0)
        bad_header = Signal()
        m.d.comb += bad_header.eq(bad_header_lo | tail_nz)

        # -- record checks (pass 1) ---------------------------------------------------------------
        # Three steps, the record's last beat at cycle t:
        # t    the field conditions (``conds``: a byte is not zero, an enumeration out of range,
        #      a size zero, ...), the opcode one-hot and the address-window checks, from
        #      ``full``, registered with the record (``chk_*``, ``chk_v``);
        # t+1  the record's op selects its conditions: the error codes, registered (``chk2_*``);
        # t+2  the first format and address errors are recorded (``fmt_err``, ``adr_err``).
        # CHECK ends once ``chk_v`` is low (t+2 for the last record), so VERDICT (t+3 at the
        # earliest) sees every record's errors.
        chk_v = Signal()
        chk_i = Signal(16)
        chk_addr = Signal(64)
        op_list = list(OPS.values())
        conds: dict = {}                      # condition key -> (index, expression on full)

        def cond(key, expr):
            if key not in conds:
                conds[key] = (len(conds), expr)
            return conds[key][0]

        op_conds = []
        for op in op_list:
            used = set(range(4))
            ks = [cond(("nz", 1), full[8:16] != 0)]                      # flags
            for name, t, off in op.layout:
                size = _TYPE_BITS[t] // 8
                used |= set(range(off, off + size))
                f = full[off * 8:(off + size) * 8]
                if name in ENUM_FIELDS:
                    n = len(ENUM_FIELDS[name])
                    ks.append(cond(("ge", off, size, n), f >= n))
                if name in NONZERO_FIELDS:
                    ks.append(cond(("zero", off, size), f == 0))
                if name == "head_dim":
                    ks.append(cond(("odd", off), f[0]))
            fld = {n: (off, full[off * 8:(off + _TYPE_BITS[t] // 8) * 8])
                   for n, t, off in op.layout}
            if op.name == "ATTENTION":                               # decode attention: one row
                (mo, mode), (ro, rows) = fld["mode"], fld["rows"]
                ks.append(cond(("decode_rows", mo, ro), (mode == 1) & (rows != 1)))
            for byte in sorted(set(range(PROGRAM_RECORD_BYTES)) - used):
                ks.append(cond(("nz", byte), full[byte * 8:byte * 8 + 8] != 0))
            op_conds.append(ks)
        chk_c = Signal(len(conds))
        pre_c = Signal(len(conds))
        m.d.comb += pre_c.eq(Cat(*(e for _, e in sorted(conds.values(), key=lambda v: v[0]))))
        chk_op = Signal(len(op_list))
        pre_op = Signal(len(op_list))
        m.d.comb += pre_op.eq(Cat(*(full[:8] == op.code for op in op_list)))
        addr_offs = sorted({off for op in op_list for _, t, off in op.layout if t == "addr"})
        assert all(off + 8 <= tail // 8 for off in addr_offs), "addresses in beats 0..2"
        chk_slot = Signal(len(addr_offs))
        pre_slot = Signal(len(addr_offs))
        chk_val = Signal(64 * len(addr_offs))
        # a record address is bad when it has bits at or above ADDR_BITS or (with a window)
        # lies outside it; the window test only needs the low ADDR_BITS of the address when
        # its high bits are 0, against the window's bounds split at ADDR_BITS (registered at
        # START): shorter comparators than 64-bit ones, the same verdict
        base_hi, end_hi = Signal(), Signal()     # win_base >= 2**aw, win_end >= 2**aw
        m.d.sync += [base_hi.eq(win_base[aw:] != 0), end_hi.eq(win_end[aw:] != 0)]
        for j, off in enumerate(addr_offs):
            a = full[off * 8:off * 8 + 64]
            lo = a[:aw]
            outside = base_hi | (lo < win_base[:aw]) | (~end_hi & (lo >= win_end[:aw]))
            m.d.comb += pre_slot[j].eq((a[aw:] != 0) | (win_on & outside))
        known, bad_field, addr_bad = Signal(), Signal(), Signal()
        bad_addr_val = Signal(64)
        m.d.comb += [known.eq(chk_op.any()),
                     bad_field.eq(Cat(*(chk_op[k] & Cat(*(chk_c[i] for i in ks)).any()
                                        for k, ks in enumerate(op_conds))).any())]
        for k, op in enumerate(op_list):
            offs = [off for _, t, off in op.layout if t == "addr"]
            with m.If(chk_op[k]):
                for off in reversed(offs):                  # first failing field wins
                    j = addr_offs.index(off)
                    with m.If(chk_slot[j]):
                        m.d.comb += [addr_bad.eq(1), bad_addr_val.eq(chk_val[64 * j:64 * j + 64])]
        is_end = Signal()
        m.d.comb += is_end.eq(chk_op[op_list.index(OPS["END"])])
        last = Signal()
        m.d.comb += last.eq(chk_i == count_m1)
        fmt_code = Signal(8)
        with m.If(~known):
            m.d.comb += fmt_code.eq(ERROR_CODES["BAD_OPCODE"])
        with m.Elif(bad_field):
            m.d.comb += fmt_code.eq(ERROR_CODES["BAD_FIELD"])
        with m.Elif(is_end != last):
            m.d.comb += fmt_code.eq(ERROR_CODES["COUNT"])
        chk2_v, chk2_code, chk2_i, chk2_addr = Signal(), Signal(8), Signal(16), Signal(64)
        chk2_addr_bad, chk2_bad_val = Signal(), Signal(64)
        m.d.sync += [chk2_v.eq(chk_v), chk2_code.eq(fmt_code), chk2_i.eq(chk_i),
                     chk2_addr.eq(chk_addr), chk2_addr_bad.eq(addr_bad),
                     chk2_bad_val.eq(bad_addr_val)]
        fmt_err = Signal()                    # first format error so far (code, record, addr)
        fmt_err_code, fmt_err_rec = Signal(8), Signal(16)
        fmt_err_addr = Signal(64)
        adr_err = Signal()
        adr_err_rec, adr_err_addr = Signal(16), Signal(64)

        # -- execution decode (pass 2, on ``rec``) ----------------------------------------------
        # The class select and END are registered every cycle from the opcode (beat 0): in
        # ISSUE, the cycle after the record's last beat, they hold the record's.
        x_op = rec[:8]
        x_layer = rec[16:32]
        cls_sel = {cls: Signal(name=f"sel_{cls}") for cls in CLASSES}
        x_known, x_end = Signal(), Signal()
        for cls, ops in CLASSES.items():
            port = getattr(self, f"o_{cls}")
            p = port.payload
            m.d.comb += [p.record.eq(rec_i), p.layer.eq(x_layer), p.opcode.eq(x_op)]
            m.d.sync += cls_sel[cls].eq(Cat(*(x_op == OPS[name].code for name in ops)).any())
            with m.Switch(x_op):
                for name in ops:
                    vals = [rec[off * 8:off * 8 + (_TYPE_BITS[t] if t != "addr" else aw)]
                            for _, t, off in OPS[name].layout]
                    with m.Case(OPS[name].code):
                        m.d.comb += p.args.as_value().eq(Cat(*vals))
        x_last = Signal()                     # the record in flight is the count's last
        m.d.sync += [x_last.eq(rec_i + 1 >= count),
                     x_known.eq(Cat(*(x_op == op.code for op in OPS.values()
                                      if op.name != "END")).any()),
                     x_end.eq(x_op == OPS["END"].code)]
        cur = Signal(len(CLASSES))            # one-hot class of the command in flight
        cmd_hs = Signal()
        dones = Cat(*(getattr(self, f"{cls}_done") for cls in CLASSES))
        x_err = Signal(8)                     # the error code of the class in flight
        m.d.comb += x_err.eq(functools.reduce(operator.or_, (
            getattr(self, f"{cls}_error") & cur[k].replicate(8)
            for k, cls in enumerate(CLASSES))))
        m.d.comb += cmd_hs.eq(Cat(*(getattr(self, f"o_{c}").valid & getattr(self, f"o_{c}").ready
                                    for c in CLASSES)).any())

        # -- watchdog ---------------------------------------------------------------------------
        # expired = (timeout != 0) & (wd >= timeout), registered a cycle ahead: wd counts up by
        # one from 0 while busy without progress, so next cycle's wd >= timeout is this
        # cycle's wd + 1 >= timeout, i.e. wd >= timeout - 1 (timeout is latched while idle).
        wd = Signal(32)
        timeout_m1 = Signal(32)               # timeout - 1
        timeout_on = Signal()                 # timeout != 0
        prog_evt = Signal()
        m.d.comb += prog_evt.eq(ar_hs | r_hs | cmd_hs | dones.any() | self.progress)
        expired = Signal()

        # -- error reporting ----------------------------------------------------------------------
        def fail(flag, code, record, addr, port=0, fetching=False):
            """Raise an error; ``fetching``: in a state whose fetch may be unfinished (the
            others have f_left == 0 and no burst to stop)."""
            m.d.sync += [getattr(self, f"err_flags_{flag}_set").eq(1),
                         self.irq_status_error_set.eq(1), self.status_error.eq(1),
                         self.err_info_code.eq(code), self.err_info_record.eq(record),
                         self.err_info_port.eq(port), self.err_addr.eq(addr)]
            if fetching:
                m.d.sync += f_left.eq(0)
                m.d.comb += stop_fetch.eq(1)

        for s in ("irq_status_done_set", "irq_status_error_set", "err_flags_axi_slverr_set",
                  "err_flags_axi_decerr_set", "err_flags_bad_program_set",
                  "err_flags_timeout_set", "counters_clear"):
            m.d.sync += getattr(self, s).eq(0)
        m.d.comb += self.status_record.eq(rec_i)

        busy = Signal()
        stall = Signal()
        m.d.comb += [self.busy_seq_inc.eq(busy), self.stall_seq_inc.eq(stall),
                     self.status_busy.eq(busy)]
        with m.If(busy & ~prog_evt):
            m.d.sync += [wd.eq(wd + 1), expired.eq(timeout_on & (wd >= timeout_m1))]
        with m.Else():
            m.d.sync += [wd.eq(0), expired.eq(0)]

        def bad_program(name_or_code, record, addr):
            code = ERROR_CODES[name_or_code] if isinstance(name_or_code, str) else name_or_code
            fail("bad_program", code, record, addr)

        def axi_fail():
            with m.If(self.m_axi_rresp[0]):
                fail("axi_decerr", 0, rec_i, r_addr, AXI_PORT_PROGRAM, fetching=True)
            with m.Else():
                fail("axi_slverr", 0, rec_i, r_addr, AXI_PORT_PROGRAM, fetching=True)

        def common(draining=False):
            """Every busy state ends with this: the watchdog, then a soft reset (later
            statements win)."""
            with m.If(expired & ~self.cmd_soft_reset):
                if not draining:
                    fail("timeout", 0, rec_i, rec_addr, fetching=True)
                m.d.comb += stop_fetch.eq(1)
                m.d.sync += [outstanding.eq(0), self.m_axi_arvalid.eq(0), f_left.eq(0)]
                m.next = "IDLE"
            with m.If(self.cmd_soft_reset):
                m.d.comb += stop_fetch.eq(1)
                m.d.sync += f_left.eq(0)
                with m.If((outstanding != 0) | self.m_axi_arvalid):
                    m.next = "DRAIN"
                with m.Else():
                    m.next = "IDLE"

        def receive(then):
            """Receive the 4 beats of a header or record, then go to ``then``."""
            m.d.comb += [busy.eq(1), stall.eq(~r_hs)]
            with m.If(axi_err):
                axi_fail()
                m.next = "DRAIN"
            with m.Elif(rec_done):
                m.next = then
            common()

        def next_record(addr_expr):
            """Fetch the record at ``addr_expr`` (64-byte aligned: one burst of min(4,
            max_burst) beats within its page)."""
            m.d.sync += [f_addr.eq(addr_expr), f_left.eq(_BEATS), beat.eq(0),
                         blen.eq(min(_BEATS, mb))]

        with m.FSM(name="seq"):
            with m.State("IDLE"):
                with m.If(self.cmd_start & ~self.cmd_soft_reset):
                    m.d.sync += [prog.eq(self.prog_addr), win_base.eq(self.win_base),
                                 win_size.eq(self.win_size),
                                 win_end.eq(self.win_base + self.win_size),
                                 win_on.eq(self.win_size != 0),
                                 timeout_m1.eq(self.timeout_cycles - 1),
                                 timeout_on.eq(self.timeout_cycles != 0),
                                 self.status_done.eq(0), self.status_error.eq(0),
                                 self.err_info_code.eq(0), self.err_info_record.eq(0),
                                 self.err_info_port.eq(0), self.err_addr.eq(0),
                                 self.counters_clear.eq(1), crc.eq(0xFFFFFFFF),
                                 rec_i.eq(0), r_addr.eq(self.prog_addr),
                                 fmt_err.eq(0), adr_err.eq(0), chk_v.eq(0)]
                    m.next = "START"
            with m.State("START"):
                m.d.comb += busy.eq(1)
                bad_pa = (prog[:6] != 0) | (prog[aw:] != 0) | (
                    win_on & ((prog < win_base) | (prog >= win_end)))
                with m.If(bad_pa):
                    bad_program("ADDRESS", HEADER_RECORD, prog)
                    m.next = "IDLE"
                with m.Else():
                    next_record(prog)
                    m.d.sync += hdr_beat1.eq(0)
                    m.next = "HEADER"
                common()
            with m.State("HEADER"):
                with m.If(r_hs):
                    m.d.sync += [crc.eq(_crc_step(crc, crc_in)), hdr_beat1.eq(beat == 0)]
                receive("HEADER_CHECK")
            with m.State("HEADER_CHECK"):
                m.d.comb += busy.eq(1)
                left0 = Signal.like(f_left)
                m.d.comb += left0.eq(hfield("count") * _BEATS)
                m.d.sync += [count.eq(hfield("count")), count_m1.eq(hfield("count") - 1),
                             hdr_crc.eq(hfield("crc32")),
                             blen.eq(burst_len(prog + PROGRAM_HEADER_BYTES, left0))]
                with m.If(bad_magic):
                    bad_program("BAD_MAGIC", HEADER_RECORD, prog)
                    m.next = "IDLE"
                with m.Elif(bad_version):
                    bad_program("BAD_VERSION", HEADER_RECORD, prog)
                    m.next = "IDLE"
                with m.Elif(bad_header):
                    bad_program("BAD_HEADER", HEADER_RECORD, prog)
                    m.next = "IDLE"
                with m.Elif(over_limit):
                    bad_program("LIMIT", HEADER_RECORD, prog)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [f_addr.eq(prog + PROGRAM_HEADER_BYTES),
                                 f_left.eq(left0), beat.eq(0),
                                 rec_addr.eq(prog + PROGRAM_HEADER_BYTES)]
                    m.next = "CHECK"
                common()
            with m.State("CHECK"):
                m.d.comb += [busy.eq(1), stall.eq(~r_hs)]
                with m.If(r_hs):
                    m.d.sync += crc.eq(_crc_step(crc, crc_in))
                with m.If(rec_done):
                    m.d.sync += [chk_c.eq(pre_c), chk_op.eq(pre_op), chk_slot.eq(pre_slot),
                                 chk_val.eq(Cat(*(full[o * 8:o * 8 + 64] for o in addr_offs))),
                                 chk_v.eq(1), chk_i.eq(rec_i),
                                 chk_addr.eq(rec_addr), rec_i.eq(rec_i + 1),
                                 rec_addr.eq(rec_addr + PROGRAM_RECORD_BYTES)]
                with m.Else():
                    m.d.sync += chk_v.eq(0)
                with m.If(chk2_v):
                    with m.If((chk2_code != 0) & ~fmt_err):
                        m.d.sync += [fmt_err.eq(1), fmt_err_code.eq(chk2_code),
                                     fmt_err_rec.eq(chk2_i), fmt_err_addr.eq(chk2_addr)]
                    with m.If(chk2_addr_bad & ~adr_err):
                        m.d.sync += [adr_err.eq(1), adr_err_rec.eq(chk2_i),
                                     adr_err_addr.eq(chk2_bad_val)]
                with m.If(axi_err):
                    axi_fail()
                    m.next = "DRAIN"
                with m.Elif((f_left == 0) & (outstanding == 0) & ~chk_v & ~self.m_axi_arvalid):
                    m.next = "VERDICT"
                common()
            with m.State("VERDICT"):
                m.d.comb += busy.eq(1)
                with m.If(crc_bad):
                    bad_program("BAD_CHECKSUM", HEADER_RECORD, prog)
                    m.next = "IDLE"
                with m.Elif(fmt_err):
                    bad_program(fmt_err_code, fmt_err_rec, fmt_err_addr)
                    m.next = "IDLE"
                with m.Elif(count_zero):
                    bad_program("COUNT", HEADER_RECORD, prog)
                    m.next = "IDLE"
                with m.Elif(adr_err):
                    bad_program("ADDRESS", adr_err_rec, adr_err_addr)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [rec_i.eq(0), rec_addr.eq(prog + PROGRAM_HEADER_BYTES),
                                 r_addr.eq(prog + PROGRAM_HEADER_BYTES)]
                    next_record(prog + PROGRAM_HEADER_BYTES)
                    m.next = "FETCH"
                common()
            with m.State("FETCH"):
                receive("ISSUE")
            with m.State("ISSUE"):
                m.d.comb += busy.eq(1)
                with m.If(x_end):
                    m.d.sync += [self.status_done.eq(1), self.irq_status_done_set.eq(1)]
                    m.next = "IDLE"
                with m.Elif(~x_known):
                    bad_program("BAD_OPCODE", rec_i, rec_addr)
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += stall.eq(~cmd_hs)
                    for k, cls in enumerate(CLASSES):
                        port = getattr(self, f"o_{cls}")
                        m.d.comb += port.valid.eq(cls_sel[cls])
                        with m.If(cls_sel[cls]):
                            m.d.sync += cur.eq(1 << k)
                    with m.If(cmd_hs):
                        m.next = "WAIT"
                common()
            with m.State("WAIT"):
                m.d.comb += [busy.eq(1), stall.eq(1)]
                with m.If(x_err != 0):
                    bad_program(x_err, rec_i, rec_addr)
                    m.next = "IDLE"
                with m.Elif(self.unit_axi_error):
                    fail("axi_slverr", 0, rec_i, rec_addr, self.unit_axi_port)
                    m.next = "IDLE"
                with m.Elif((dones & cur).any()):
                    with m.If(x_last):
                        bad_program("COUNT", rec_i, rec_addr)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [rec_i.eq(rec_i + 1),
                                     rec_addr.eq(rec_addr + PROGRAM_RECORD_BYTES)]
                        next_record(rec_addr + PROGRAM_RECORD_BYTES)
                        m.next = "FETCH"
                common()
            with m.State("DRAIN"):
                m.d.comb += [busy.eq(1), stall.eq(1), stop_fetch.eq(1)]
                m.d.sync += f_left.eq(0)
                with m.If((outstanding == 0) & ~self.m_axi_arvalid):
                    m.next = "IDLE"
                common(draining=True)
        return m


def report_blocks() -> dict:
    """``{name: (description, maker(HwPreset, StreamFormat))}`` for the block registry
    (hw/blocks.py): the sequencer does not depend on the preset or the stream format."""
    return {
        "sequencer": ("program fetch (AXI4 128-bit), pass-1 checks with CRC-32, dispatch",
                      lambda hp, fmt: Sequencer()),
    }
