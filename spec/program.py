"""Sequencer programs: the record list in DDR that runs one prefill chunk or decode step
(docs/hw/sequencer.md, format version :data:`PROGRAM_VERSION`). NumPy only.

A program is a 64-byte header and 64-byte records, little-endian::

    header  magic "TLMP", version, sizes, record count, CRC-32, call (kind, start, n_tokens),
            stream format, KV dtype (int8), output kind, tiling, layers, KV beat
    record  u8 opcode | u8 flags (0) | u16 layer (0xFFFF: none) | fields of the op

The KV cache is the int8 layout of :mod:`tellme.spec.kv_layout` (codes + stream-format row
scales, blocks of ``kv_beat`` keys): KV_WRITE quantises the call's rows into it, ATTENTION
reads codes and scales (the integer attention engine; docs/numerics.md §4.1).

Every model dimension, address, scale and mode is a record field, so one bitstream runs any
model that fits its buffers (:func:`tellme.spec.memory_map.check_model_fits`). The host builds
programs with :func:`build_program` from the weight file's header and a
:class:`~tellme.spec.memory_map.MemoryMap`; :func:`decode_program` checks and decodes one
(every check has an error code that the hardware reports in ``ERR_INFO.CODE``, see
:data:`ERRORS`); ``tellme.sim.golden.program_exec`` executes one with the golden hw numerics.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from .codes import G
from .config import LINEAR_NAMES, ModelConfig
from .kv_layout import KVLayout
from .lm_head import head_bytes
from .memory_map import (
    PROGRAM_HEADER_BYTES,
    PROGRAM_RECORD_BYTES,
    RECORDS_PER_LAYER_MAX,
    MemoryMap,
    kpad,
    row_stride,
)
from .numerics import STREAM_FORMATS
from .targets import Target, target as get_target
from .tiling import Tiling

PROGRAM_VERSION = 3             # 3: LM_HEAD is the int8 PL head
MAGIC = b"TLMP"
NO_LAYER = 0xFFFF
HEADER_FIELDS = (        # (name, struct code, meaning); bytes 40..63 are reserved (0)
    ("magic", "4s", "`TLMP`"),
    ("version", "I", f"program format version ({PROGRAM_VERSION})"),
    ("header_bytes", "H", f"{PROGRAM_HEADER_BYTES}"),
    ("record_bytes", "H", f"{PROGRAM_RECORD_BYTES}"),
    ("count", "I", "records, END included"),
    ("crc32", "I", "CRC-32 (zlib) of the header with this field 0, then of the records"),
    ("kind", "B", "0 prefill, 1 decode"),
    ("fmt_man", "B", "stream format fraction bits: 10 FP16, 18 FP24"),
    ("kv_dtype", "B", "KV cache: 2 int8 (codes + stream-format row scales); 0 fp16, 1 fp24 "
                      "(stream-format rows) are refused (LIMIT)"),
    ("output", "B", "0 logits, 1 final hidden rows"),
    ("start", "I", "position of the call's first token"),
    ("n_tokens", "I", "tokens of the call"),
    ("tiling_t", "H", "T the code sections are laid out for"),
    ("tiling_q", "H", "Q the code sections are laid out for"),
    ("num_layers", "H", "decoder layers"),
    ("kv_beat", "H", "keys per int8 KV block (the integer engine's beat; a power of two)"),
)
_HEAD_FMT = "<" + "".join(code for _, code, _ in HEADER_FIELDS)
HEADER = struct.Struct(_HEAD_FMT + f"{PROGRAM_HEADER_BYTES - struct.calcsize(_HEAD_FMT)}x")
assert HEADER.size == PROGRAM_HEADER_BYTES

# Enumerations carried in fields (value = index).
FLOAT_DTYPES = ("float32", "float16", "bfloat16")      # weight-file float section storage
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
ACTIVATIONS = ("silu", "relu2")
PAIRINGS = ("half", "adjacent")
MODES = ("prefill", "decode")
KV_DTYPES = ("fp16", "fp24", "int8")
OUTPUTS = ("logits", "hidden")
KINDS = ("prefill", "decode")

# code: (name, meaning). The sequencer reports the code in ERR_INFO.CODE (spec/registers.py).
ERRORS = {
    1: ("BAD_MAGIC", "the header does not start with TLMP"),
    2: ("BAD_VERSION", "program format version not implemented"),
    3: ("BAD_HEADER", "header sizes, enumerations, kv_beat or reserved bytes are wrong"),
    4: ("BAD_CHECKSUM", "CRC-32 of header and records does not match"),
    5: ("TRUNCATED", "fewer bytes than the header's record count"),
    6: ("BAD_OPCODE", "a record's opcode is unknown"),
    7: ("COUNT", "END is missing, early, or not the last record"),
    8: ("BAD_FIELD", "a field is out of its range (zero size, bad enum, non-zero padding)"),
    9: ("ADDRESS", "an access lies outside the memory map (or writes a read-only region)"),
    10: ("LIMIT", "a dimension exceeds the build's capabilities"),
    11: ("UNSUPPORTED_OP", "this build has no execution unit for the op (reported when the "
                           "record is dispatched; docs/hw/top.md)"),
}
ERROR_CODES = {name: code for code, (name, _) in ERRORS.items()}


class ProgramError(ValueError):
    """A program that cannot run. ``code``: an :data:`ERRORS` key; ``record``: index of the
    offending record (None for the header)."""

    def __init__(self, name: str, msg: str, record: int | None = None):
        self.code = ERROR_CODES[name]
        self.name = name
        self.record = record
        where = "header" if record is None else f"record {record}"
        super().__init__(f"{name}: {where}: {msg}")


# --------------------------------------------------------------------------- op table

_TYPES = {"addr": "Q", "u32": "I", "u16": "H", "u8": "B", "f32": "f"}


@dataclass(frozen=True)
class Op:
    """One opcode: ``fields`` are (name, type, doc) after the 4-byte record head; each field
    sits at its natural alignment (addresses at 8-byte offsets)."""
    name: str
    code: int
    doc: str
    fields: tuple = ()
    layout: tuple = field(init=False, repr=False)       # (name, type, offset)
    fmt: str = field(init=False, repr=False)

    def __post_init__(self):
        off, fmt, lay = 4, "<BBH", []
        for name, typ, _ in self.fields:
            size = struct.calcsize(_TYPES[typ])
            pad = -off % size
            fmt += "x" * pad
            off += pad
            lay.append((name, typ, off))
            fmt += _TYPES[typ]
            off += size
        if off > PROGRAM_RECORD_BYTES:
            raise AssertionError(f"op {self.name}: {off} bytes > one record")
        fmt += "x" * (PROGRAM_RECORD_BYTES - off)
        object.__setattr__(self, "layout", tuple(lay))
        object.__setattr__(self, "fmt", fmt)


_ROWS = ("rows", "u32", "tokens (rows) of the op")
OPS = {op.name: op for op in (
    Op("END", 0x01, "end of program: raise DONE"),
    Op("EMBED", 0x02, "x[r] = RN(table[ids[r]]): gather embedding rows", (
        _ROWS, ("ids", "addr", "token ids, u32 each"),
        ("table", "addr", "embedding section [vocab, cols]"),
        ("dst", "addr", "output rows (stream format)"),
        ("vocab", "u32", "table rows (an id >= vocab is BAD_FIELD)"),
        ("cols", "u32", "hidden size"),
        ("dtype", "u8", "table storage: 0 float32, 1 float16, 2 bfloat16"))),
    Op("NORM", 0x03, "RMS-MAX unit: h = RN(x*g*r), amax = max abs(h) per row", (
        _ROWS, ("src", "addr", "input rows"), ("gain", "addr", "norm weight section [cols]"),
        ("dst", "addr", "output rows"), ("amax", "addr", "per-row absmax, packed elements"),
        ("cols", "u32", "row length"), ("eps", "f32", "rms_norm_eps as float32"),
        ("dtype", "u8", "gain storage: 0 float32, 1 float16, 2 bfloat16"))),
    Op("QUANT", 0x04, "int8 q = clamp(RNE(h*127/amax)), rows zero-padded to kpad bytes", (
        _ROWS, ("src", "addr", "normalised rows"), ("amax", "addr", "per-row absmax"),
        ("dst", "addr", "int8 rows"), ("cols", "u32", "row length K"),
        ("kpad", "u32", "int8 row length: K padded to a multiple of 3T"))),
    Op("LINEAR", 0x05, "TLMM of int8 rows with ternary codes, dequantised: y = RN(acc*s_tok)", (
        _ROWS, ("src", "addr", "int8 rows (kb*3T bytes each)"),
        ("amax", "addr", "per-row absmax (dequantisation scale)"),
        ("weights", "addr", "code section (layout v1, the header's tiling)"),
        ("dst", "addr", "output rows"), ("n", "u32", "output features"),
        ("k", "u32", "input features"), ("nb", "u16", "column blocks ceil(n/Q)"),
        ("kb", "u16", "K blocks ceil(k/3T)"), ("tile_nb", "u16", "column blocks per tile"),
        ("scale", "f32", "weight scale (the file's scales section)"))),
    Op("ROPE", 0x06, "rotate each head of each row by the table row of its position", (
        _ROWS, ("src", "addr", "rows of heads*head_dim"), ("dst", "addr", "output rows"),
        ("table", "addr", "RoPE table row of position 0"),
        ("start", "u32", "position of row 0"), ("heads", "u16", "heads per row"),
        ("head_dim", "u16", "head dimension"),
        ("pairing", "u8", "0 half (x[i], x[i+hd/2]), 1 adjacent (x[2i], x[2i+1])"))),
    Op("KV_WRITE", 0x07, "quantise the call's K and V rows (int8 codes + a scale per row and "
        "KV head) into the int8 KV cache at keys start..", (
        _ROWS, ("k_src", "addr", "key rows (kv_heads*head_dim, stream format, after RoPE)"),
        ("v_src", "addr", "value rows"),
        ("k_dst", "addr", "layer's K region of KV head 0 (block 0's scale header)"),
        ("v_dst", "addr", "layer's V region of KV head 0"),
        ("k_stride", "u32", "bytes from one KV head's K region to the next"),
        ("v_stride", "u32", "bytes from one KV head's V region to the next"),
        ("start", "u32", "key (position) of row 0"), ("kv_heads", "u16", "KV heads"),
        ("head_dim", "u16", "head dimension"))),
    Op("ATTENTION", 0x08, "causal softmax attention of the call's queries over keys 0..pos "
       "(integer engine over the int8 KV cache)", (
        _ROWS, ("q", "addr", "query rows (heads*head_dim, after RoPE)"),
        ("k", "addr", "layer's K region of KV head 0 (block 0's scale header)"),
        ("v", "addr", "layer's V region of KV head 0"), ("dst", "addr", "output rows"),
        ("k_stride", "u32", "bytes from one KV head's K region to the next"),
        ("v_stride", "u32", "bytes from one KV head's V region to the next"),
        ("start", "u32", "position of row 0"), ("heads", "u16", "query heads"),
        ("kv_heads", "u16", "KV heads (GQA group = heads / kv_heads)"),
        ("head_dim", "u16", "head dimension"), ("mode", "u8", "0 prefill, 1 decode"),
        ("score_c", "u32", "score scale C = RN(log2(e)/sqrt(head_dim)*2^18)"))),
    Op("RESIDUAL", 0x09, "dst = RN(x + y)", (
        _ROWS, ("x", "addr", "residual rows"), ("y", "addr", "added rows"),
        ("dst", "addr", "output rows (may be x)"), ("cols", "u32", "row length"))),
    Op("GATED_ACT", 0x0A, "dst = act(gate) * up, one rounding", (
        _ROWS, ("gate", "addr", "gate rows"), ("up", "addr", "up rows"),
        ("dst", "addr", "output rows (may be gate)"), ("cols", "u32", "row length"),
        ("act", "u8", "0 silu, 1 relu2"))),
    Op("LM_HEAD", 0x0B, "logits = RN32(acc * RN32(amax * d_j)), acc = q . w8_j: the PL "
       "LM head (int8 rows of the head region, spec/lm_head.py)", (
        _ROWS, ("src", "addr", "int8 rows (QUANT of the final-norm rows)"),
        ("amax", "addr", "per-row absmax"),
        ("head", "addr", "the head region: blocks of 64 rows, int8 codes + float32 scales"),
        ("dst", "addr", "float32 logit rows"), ("vocab", "u32", "output features"),
        ("cols", "u32", "hidden size"), ("kpad", "u32", "int8 row length of src"))),
)}
OPCODES = {op.code: op for op in OPS.values()}
_ENUMS = {"dtype": FLOAT_DTYPES, "pairing": PAIRINGS, "mode": MODES, "act": ACTIVATIONS}
ENUM_FIELDS = _ENUMS            # field name -> its enumeration (a value >= len is BAD_FIELD)
NONZERO_FIELDS = ("rows", "cols", "n", "k", "heads", "kv_heads", "head_dim", "vocab")  # 0 is bad
RECORDS_PER_LAYER = 22
assert RECORDS_PER_LAYER <= RECORDS_PER_LAYER_MAX


@dataclass(frozen=True)
class Record:
    op: str
    layer: int | None = None
    args: dict = field(default_factory=dict, hash=False)

    def __getitem__(self, name):
        return self.args[name]


@dataclass
class Program:
    kind: str                   # KINDS
    start: int
    n_tokens: int
    fmt: str                    # stream format name (fp16 | fp24)
    kv_dtype: str               # KV_DTYPES; programs run int8 only (check_limits)
    kv_beat: int                # keys per int8 KV block (spec/kv_layout.py ``beat``)
    output: str
    tiling: Tiling
    num_layers: int
    records: list = field(default_factory=list)

    @property
    def elem_bytes(self) -> int:
        return STREAM_FORMATS[self.fmt].bits // 8

    def kv_geometry(self, head_dim: int, keys: int) -> KVLayout:
        """One KV head's int8 layout for ``keys`` keys (the block sizes a KV_WRITE or
        ATTENTION record's regions use: header ``kv_beat``, the stream format's scales)."""
        return KVLayout(1, 1, head_dim, max(keys, 1), dtype="int8", beat=self.kv_beat,
                        fmt=STREAM_FORMATS[self.fmt])


# --------------------------------------------------------------------------- encode / decode

def _encode_record(r: Record) -> bytes:
    op = OPS[r.op]
    names = [n for n, _, _ in op.fields]
    if set(r.args) != set(names):
        raise ValueError(f"{r.op}: fields {sorted(r.args)} != {sorted(names)}")
    layer = NO_LAYER if r.layer is None else r.layer
    return struct.pack(op.fmt, op.code, 0, layer, *(r.args[n] for n in names))


def encode_program(p: Program) -> bytes:
    """The program's bytes: header (CRC over header-with-CRC-0 and records) + records."""
    body = b"".join(_encode_record(r) for r in p.records)

    def head(crc):
        return HEADER.pack(MAGIC, PROGRAM_VERSION, PROGRAM_HEADER_BYTES, PROGRAM_RECORD_BYTES,
                           len(p.records), crc, KINDS.index(p.kind),
                           STREAM_FORMATS[p.fmt].man, KV_DTYPES.index(p.kv_dtype),
                           OUTPUTS.index(p.output), p.start, p.n_tokens, p.tiling.t,
                           p.tiling.q, p.num_layers, p.kv_beat)

    return head(zlib.crc32(body, zlib.crc32(head(0)))) + body


def decode_header(blob: bytes) -> dict:
    """Check and decode the 64-byte header (ProgramError: BAD_MAGIC, BAD_VERSION,
    BAD_HEADER, TRUNCATED)."""
    if len(blob) < HEADER.size:
        raise ProgramError("TRUNCATED", f"{len(blob)} bytes, the header alone is {HEADER.size}")
    (magic, version, hb, rb, count, crc, kind, man, kvd, out, start, n, t, q,
     layers, kv_beat) = HEADER.unpack(blob[:HEADER.size])
    if magic != MAGIC:
        raise ProgramError("BAD_MAGIC", f"magic {magic!r}, expected {MAGIC!r}")
    if version != PROGRAM_VERSION:
        raise ProgramError("BAD_VERSION", f"version {version}, this reader implements "
                                          f"{PROGRAM_VERSION}")
    fmts = {f.man: name for name, f in STREAM_FORMATS.items()}
    bad = []
    if hb != HEADER.size or rb != PROGRAM_RECORD_BYTES:
        bad.append(f"header/record sizes {hb}/{rb}, expected {HEADER.size}/"
                   f"{PROGRAM_RECORD_BYTES}")
    if kind >= len(KINDS) or kvd >= len(KV_DTYPES) or out >= len(OUTPUTS) or man not in fmts:
        bad.append(f"enumeration out of range (kind {kind}, fraction bits {man}, kv dtype "
                   f"{kvd}, output {out})")
    if any(blob[struct.calcsize(_HEAD_FMT):HEADER.size]):
        bad.append("reserved header bytes are not zero")
    if not t or not q or not layers or not n:
        bad.append("zero tiling, layer count or token count")
    if not kv_beat or kv_beat & (kv_beat - 1):
        bad.append(f"kv_beat {kv_beat} is not a power of two")
    if bad:
        raise ProgramError("BAD_HEADER", "; ".join(bad))
    return dict(count=count, crc=crc, kind=KINDS[kind], fmt=fmts[man],
                kv_dtype=KV_DTYPES[kvd], kv_beat=kv_beat, output=OUTPUTS[out], start=start,
                n_tokens=n, tiling=Tiling(t, q), num_layers=layers)


def _decode_record(raw: bytes, i: int) -> Record:
    code, flags, layer = struct.unpack_from("<BBH", raw)
    op = OPCODES.get(code)
    if op is None:
        raise ProgramError("BAD_OPCODE", f"opcode {code:#04x} is unknown", i)
    if flags:
        raise ProgramError("BAD_FIELD", f"{op.name}: flags {flags:#04x} must be 0", i)
    vals = struct.unpack(op.fmt, raw)[3:]
    if struct.pack(op.fmt, code, 0, layer, *vals) != raw:
        raise ProgramError("BAD_FIELD", f"{op.name}: padding bytes are not zero", i)
    args = {name: v for (name, _, _), v in zip(op.fields, vals, strict=True)}
    for name, values in _ENUMS.items():
        if name in args and args[name] >= len(values):
            raise ProgramError("BAD_FIELD", f"{op.name}.{name} = {args[name]} is not one of "
                                            f"0..{len(values) - 1}", i)
    if op.name == "ATTENTION" and args["mode"] == 1 and args["rows"] != 1:
        raise ProgramError("BAD_FIELD", f"decode attention of {args['rows']} rows", i)
    for name in NONZERO_FIELDS:
        if name in args and args[name] == 0:
            raise ProgramError("BAD_FIELD", f"{op.name}.{name} is 0", i)
    return Record(op.name, None if layer == NO_LAYER else layer, args)


def _check_shape(r: Record, tiling: Tiling, i: int) -> None:
    """BAD_FIELD unless a record's derived sizes agree with its dimensions and the tiling."""
    a, bad = r.args, []
    if r.op == "LINEAR":
        nb, kb = -(-a["n"] // tiling.q), -(-a["k"] // (G * tiling.t))
        if (a["nb"], a["kb"]) != (nb, kb):
            bad.append(f"nb/kb {a['nb']}/{a['kb']} != {nb}/{kb} for n={a['n']}, k={a['k']}")
        if not 1 <= a["tile_nb"] <= a["nb"]:
            bad.append(f"tile_nb {a['tile_nb']} outside 1..nb")
    if r.op in ("QUANT", "LM_HEAD") and a["kpad"] != kpad(a["cols"], tiling.t):
        bad.append(f"kpad {a['kpad']} != {kpad(a['cols'], tiling.t)}")
    if "head_dim" in a and a["head_dim"] % 2:
        bad.append(f"odd head_dim {a['head_dim']}")
    if r.op == "ATTENTION" and a["heads"] % a["kv_heads"]:
        bad.append(f"heads {a['heads']} not a multiple of kv_heads {a['kv_heads']}")
    if bad:
        raise ProgramError("BAD_FIELD", f"{r.op}: " + "; ".join(bad), i)


def decode_program(blob: bytes, mmap: MemoryMap | None = None,
                   target: str | Target | None = None) -> Program:
    """Check and decode program bytes (ProgramError with the hardware's error code).

    Always: header, CRC, opcodes, field ranges, END exactly last, record count. With ``mmap``:
    every access inside the map, writes only to writable regions (:func:`check_addresses`).
    With ``target``: the build's limits (:func:`check_limits`).
    """
    blob = bytes(blob)
    h = decode_header(blob)
    end = HEADER.size + h["count"] * PROGRAM_RECORD_BYTES
    if len(blob) < end:
        raise ProgramError("TRUNCATED", f"{h['count']} records need {end} bytes, got "
                                        f"{len(blob)}")
    crc = zlib.crc32(blob[HEADER.size:end], zlib.crc32(blob[:16] + b"\0" * 4 +
                                                       blob[20:HEADER.size]))
    if crc != h["crc"]:
        raise ProgramError("BAD_CHECKSUM", f"CRC-32 {crc:#010x}, header says {h['crc']:#010x}")
    recs = []
    for i in range(h["count"]):
        r = _decode_record(blob[HEADER.size + i * PROGRAM_RECORD_BYTES:][:PROGRAM_RECORD_BYTES],
                           i)
        _check_shape(r, h["tiling"], i)
        if (r.op == "END") != (i == h["count"] - 1):
            raise ProgramError("COUNT", "END before the last record" if r.op == "END" else
                               f"the last of {h['count']} records is {r.op}, not END", i)
        recs.append(r)
    if not recs:
        raise ProgramError("COUNT", "no records (a program ends with END)")
    p = Program(h["kind"], h["start"], h["n_tokens"], h["fmt"], h["kv_dtype"], h["kv_beat"],
                h["output"], h["tiling"], h["num_layers"], recs)
    if mmap is not None:
        check_addresses(p, mmap)
    if target is not None:
        check_limits(p, target)
    return p


# --------------------------------------------------------------------------- accesses

def _rows(rows: int, cols: int, eb: int) -> int:
    """Bytes spanned by ``rows`` rows of ``cols`` elements at the act-buffer stride."""
    return (rows - 1) * row_stride(cols, eb) + cols * eb


def accesses(r: Record, p: Program) -> list[tuple[str, int, int, bool]]:
    """(field, address, bytes, write) of every DDR range a record touches."""
    a, eb, n = r.args, p.elem_bytes, r.args.get("rows", 0)
    T, Q = p.tiling.t, p.tiling.q
    op = r.op
    if op == "END":
        return []
    if op == "EMBED":
        return [("ids", a["ids"], 4 * n, False),
                ("table", a["table"], a["vocab"] * a["cols"] *
                 DTYPE_BYTES[FLOAT_DTYPES[a["dtype"]]], False),
                ("dst", a["dst"], _rows(n, a["cols"], eb), True)]
    if op == "NORM":
        return [("src", a["src"], _rows(n, a["cols"], eb), False),
                ("gain", a["gain"], a["cols"] * DTYPE_BYTES[FLOAT_DTYPES[a["dtype"]]], False),
                ("dst", a["dst"], _rows(n, a["cols"], eb), True),
                ("amax", a["amax"], n * eb, True)]
    if op == "QUANT":
        return [("src", a["src"], _rows(n, a["cols"], eb), False),
                ("amax", a["amax"], n * eb, False), ("dst", a["dst"], _rows(n, a["kpad"], 1), True)]
    if op == "LINEAR":
        codes = -(-a["nb"] * a["kb"] * Q * T * 5 // 8)
        return [("src", a["src"], _rows(n, a["kb"] * G * T, 1), False),
                ("amax", a["amax"], n * eb, False), ("weights", a["weights"], codes, False),
                ("dst", a["dst"], _rows(n, a["n"], eb), True)]
    if op == "ROPE":
        w = a["heads"] * a["head_dim"]
        return [("src", a["src"], _rows(n, w, eb), False),
                ("table", a["table"], (a["start"] + n) * a["head_dim"] * eb, False),
                ("dst", a["dst"], _rows(n, w, eb), True)]
    if op in ("KV_WRITE", "ATTENTION"):
        # head 0's region start .. the end of the last block holding a key < start+n in the
        # last head's region (K and V blocks differ in size; the int8 geometry of the header)
        lay = p.kv_geometry(a["head_dim"], a["start"] + n)
        k_span = (a["kv_heads"] - 1) * a["k_stride"] + lay.blocks * lay.k_block_bytes
        v_span = (a["kv_heads"] - 1) * a["v_stride"] + lay.blocks * lay.v_block_bytes
    if op == "KV_WRITE":
        w = a["kv_heads"] * a["head_dim"]
        return [("k_src", a["k_src"], _rows(n, w, eb), False),
                ("v_src", a["v_src"], _rows(n, w, eb), False),
                ("k_dst", a["k_dst"], k_span, True), ("v_dst", a["v_dst"], v_span, True)]
    if op == "ATTENTION":
        w = a["heads"] * a["head_dim"]
        return [("q", a["q"], _rows(n, w, eb), False), ("k", a["k"], k_span, False),
                ("v", a["v"], v_span, False), ("dst", a["dst"], _rows(n, w, eb), True)]
    if op == "RESIDUAL":
        return [(f, a[f], _rows(n, a["cols"], eb), f == "dst") for f in ("x", "y", "dst")]
    if op == "GATED_ACT":
        return [(f, a[f], _rows(n, a["cols"], eb), f == "dst") for f in ("gate", "up", "dst")]
    if op == "LM_HEAD":
        return [("src", a["src"], _rows(n, a["kpad"], 1), False),
                ("amax", a["amax"], n * eb, False),
                ("head", a["head"], head_bytes(a["vocab"], a["cols"]), False),
                ("dst", a["dst"], _rows(n, a["vocab"], 4), True)]
    raise AssertionError(op)


def check_addresses(p: Program, mmap: MemoryMap) -> None:
    """ProgramError ADDRESS unless every access of ``p`` lies in one region of ``mmap`` and
    every write in a writable one."""
    for i, r in enumerate(p.records):
        for name, addr, nbytes, write in accesses(r, p):
            reg = mmap.region_of(addr, nbytes)
            if reg is None:
                raise ProgramError("ADDRESS", f"{r.op}.{name} [{addr:#x}, +{nbytes}) is outside "
                                              f"every region of the memory map", i)
            if write and not reg.writable:
                raise ProgramError("ADDRESS", f"{r.op}.{name} writes the read-only region "
                                              f"{reg.name}", i)


def check_limits(p: Program, target: str | Target) -> None:
    """ProgramError LIMIT unless ``p`` fits the build of ``target`` (tiling, the int8 KV cache
    of the integer attention engine's beat, rows, head dimension, GQA group, context, tokens
    per call, TLMM blocks and tiles)."""
    tgt = target if isinstance(target, Target) else get_target(target)
    tl, ai, kq = tgt.tlmm, tgt.attention_int, tgt.kv_quant
    if p.tiling != tgt.tiling:
        raise ProgramError("LIMIT", f"tiling {p.tiling} != the build's {tgt.tiling}")
    if p.kv_dtype != "int8":
        raise ProgramError("LIMIT", f"KV dtype {p.kv_dtype}: the build's KV cache is int8 "
                                    f"(kv_dtype {KV_DTYPES.index('int8')}) only")
    if p.kv_beat != ai["beat"]:
        raise ProgramError("LIMIT", f"kv_beat {p.kv_beat} != the build's int8 KV block of "
                                    f"{ai['beat']} keys (the integer engine's beat)")
    for i, r in enumerate(p.records):
        a, bad = r.args, []
        if a.get("rows", 0) > tl["tok_max"]:
            bad.append(f"{a['rows']} rows > {tl['tok_max']}")
        for f in ("n", "k") if r.op == "LINEAR" else ("cols",):
            if a.get(f, 0) > tgt.row_max:
                bad.append(f"{f} {a[f]} > row buffer {tgt.row_max}")
        if a.get("head_dim", 0) > ai["head_dim"]:
            bad.append(f"head_dim {a['head_dim']} > {ai['head_dim']}")
        if r.op in ("KV_WRITE", "ATTENTION"):
            for what, b in (("KV quantiser's beat", kq["beat"]),
                            ("integer engine's q beat", ai["q_beat"]),
                            ("integer engine's o beat", ai["o_beat"])):
                if a["head_dim"] % b:
                    bad.append(f"head_dim {a['head_dim']} not a multiple of the {what} {b}")
        if r.op == "ATTENTION" and a["heads"] // a["kv_heads"] > ai["lanes"]:
            bad.append(f"GQA group {a['heads'] // a['kv_heads']} > {ai['lanes']} lanes")
        if a.get("start", 0) + a.get("rows", 0) > 2 ** ai["ctx_bits"] - 1:
            bad.append(f"positions up to {a['start'] + a['rows'] - 1} > context limit "
                       f"{2 ** ai['ctx_bits'] - 2}")
        if r.op == "LINEAR" and (a["kb"] > tl["kb_max"] or a["tile_nb"] > tl["nbt_max"]
                                 or a["tile_nb"] * a["kb"] > tl["half_depth"]):
            bad.append(f"kb {a['kb']} x tile {a['tile_nb']} does not fit the weight buffer")
        if bad:
            raise ProgramError("LIMIT", f"{r.op}: " + "; ".join(bad), i)


# --------------------------------------------------------------------------- builder

@dataclass(frozen=True)
class WeightInfo:
    """What the builder needs from a weight file: its config, tiling, RoPE pairing, section
    table ({name: (offset, nbytes, dtype)}) and the per-linear scales [[L][7]] (floats)."""
    config: ModelConfig
    tiling: Tiling
    rope_pairing: str
    sections: dict = field(hash=False)
    scales: tuple = field(hash=False)

    @classmethod
    def from_header(cls, header: dict, scales) -> WeightInfo:
        """From a weight file's header dict (``WeightFile.header``) and its ``scales``
        section (float32 [L, 7])."""
        secs = {s["name"]: (int(s["offset"]), int(s["nbytes"]), s["dtype"])
                for s in header["sections"]}
        sc = tuple(tuple(float(v) for v in row) for row in scales)
        return cls(ModelConfig.from_dict(header["config"]), Tiling(**header["tiling"]),
                   header.get("rope_pairing", "half"), secs, sc)

    def section(self, name: str, mmap: MemoryMap) -> tuple[int, str]:
        """(absolute address, storage dtype) of section ``name`` once the file sits in the
        weights region."""
        try:
            off, _, dtype = self.sections[name]
        except KeyError:
            raise ValueError(f"the weight file has no section {name!r}") from None
        return mmap.region("weights").addr + off, dtype


def tile_columns(nb: int, kb: int, half_depth: int, nbt_max: int) -> int:
    """Column blocks per ping-pong tile: as many as a buffer half holds (and the engine's
    tile limit), balanced so that no narrow last tile is left (hw.weight_buffer's rule)."""
    if kb > half_depth:
        raise ValueError(f"{kb} K blocks do not fit a buffer half of {half_depth} words")
    tiles = -(-nb // min(nb, half_depth // kb, nbt_max))
    return -(-nb // tiles)


def build_program(config: ModelConfig, mmap: MemoryMap, kind: str, start: int,
                  n_tokens: int, *, weights: WeightInfo, score_c: int,
                  last_only: bool = False, embed: bool = True) -> Program:
    """The program of one call: ``n_tokens`` tokens at positions ``start..`` (``kind``
    "prefill", or "decode" with one token), their ids in buffer ``tokens`` (or, with
    ``embed=False``, their embedding rows already in buffer ``x``). Output: logits (or the
    final hidden rows when ``mmap.output`` is "hidden") of every row, or of the last row only
    (``last_only``), in buffer ``out``. ``score_c``: the attention score scale for the model's
    head_dim (``tellme.sim.golden.hw_numerics.score_scale``)."""
    c, tgt = config, get_target(mmap.target)
    if weights.config != c or mmap.config != c:
        raise ValueError("config, weight file and memory map describe different models")
    if weights.tiling != tgt.tiling:
        raise ValueError(f"the weight file is laid out for {weights.tiling}, target "
                         f"{tgt.name} has {tgt.tiling}: convert it with --target {tgt.name}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "decode" and n_tokens != 1:
        raise ValueError(f"a decode step runs one token, got {n_tokens}")
    if not 1 <= n_tokens <= mmap.max_tokens:
        raise ValueError(f"{n_tokens} tokens outside 1..{mmap.max_tokens} (the map's call size)")
    if start < 0 or start + n_tokens > mmap.max_context:
        raise ValueError(f"positions {start}..{start + n_tokens - 1} outside the context "
                         f"0..{mmap.max_context - 1}")
    n_out = 1 if last_only else n_tokens
    if n_out > mmap.out_rows:
        raise ValueError(f"{n_out} output rows > the map's {mmap.out_rows} (last_only=True, or "
                         f"a map with more out_rows)")
    b = {name: buf.addr for name, buf in mmap.buffers.items()}
    n, d, f = n_tokens, c.hidden_size, c.intermediate_size
    T, tl, kv = tgt.tiling.t, tgt.tlmm, mmap.kv
    if not kv.int8 or kv.beat != tgt.attention_int["beat"]:
        raise ValueError(f"the memory map's KV cache ({kv.dtype}, beat {kv.beat}) is not the "
                         f"int8 layout of target {tgt.name} (memory_map builds it)")
    eps = float(np.float32(c.rms_norm_eps))
    recs: list[Record] = []

    def sec(name):
        addr, dtype = weights.section(name, mmap)
        return addr, FLOAT_DTYPES.index(dtype) if dtype in FLOAT_DTYPES else dtype

    def add(op, layer=None, **args):
        recs.append(Record(op, layer, dict(rows=args.pop("rows", n), **args)))

    def norm(li, name, src, cols, dst, rows=n):
        g, dt = sec(f"layers.{li}.{name}" if li is not None else name)
        add("NORM", li, rows=rows, src=src, gain=g, dst=dst, amax=b["amax"], cols=cols,
            eps=eps, dtype=dt)

    def quant(li, k):
        add("QUANT", li, src=b["h"], amax=b["amax"], dst=b["q8"], cols=k, kpad=kpad(k, T))

    def linear(li, name, dst):
        out, k = c.linear_shapes()[name]
        nb, kb = -(-out // tgt.tiling.q), -(-k // (G * T))
        w, _ = sec(f"layers.{li}.{name}.codes")
        add("LINEAR", li, src=b["q8"], amax=b["amax"], weights=w, dst=dst, n=out, k=k, nb=nb,
            kb=kb, tile_nb=tile_columns(nb, kb, tl["half_depth"], tl["nbt_max"]),
            scale=weights.scales[li][LINEAR_NAMES.index(name)])

    if embed:
        t_addr, dt = sec("embed")
        add("EMBED", ids=b["tokens"], table=t_addr, dst=b["x"], vocab=c.vocab_size, cols=d,
            dtype=dt)
    pairing = PAIRINGS.index(weights.rope_pairing)
    ks, vs = kv.kind_head_bytes("K"), kv.kind_head_bytes("V")
    for li in range(c.num_layers):
        kd, vd = kv.region_addr(li, "K", 0), kv.region_addr(li, "V", 0)
        norm(li, "input_norm", b["x"], d, b["h"])
        quant(li, d)
        for name, dst in (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v")):
            linear(li, name, b[dst])
        for dst, heads in (("q", c.num_heads), ("k", c.num_kv_heads)):
            add("ROPE", li, src=b[dst], dst=b[dst], table=mmap.rope_row(0), start=start,
                heads=heads, head_dim=c.head_dim, pairing=pairing)
        add("KV_WRITE", li, k_src=b["k"], v_src=b["v"], k_dst=kd, v_dst=vd, k_stride=ks,
            v_stride=vs, start=start, kv_heads=c.num_kv_heads, head_dim=c.head_dim)
        add("ATTENTION", li, q=b["q"], k=kd, v=vd, dst=b["attn"], k_stride=ks, v_stride=vs,
            start=start, heads=c.num_heads, kv_heads=c.num_kv_heads, head_dim=c.head_dim,
            mode=MODES.index(kind), score_c=score_c)
        norm(li, "attn_sub_norm", b["attn"], c.q_size, b["h"])
        quant(li, c.q_size)
        linear(li, "o_proj", b["y"])
        add("RESIDUAL", li, x=b["x"], y=b["y"], dst=b["x"], cols=d)
        norm(li, "post_norm", b["x"], d, b["h"])
        quant(li, d)
        linear(li, "gate_proj", b["gate"])
        linear(li, "up_proj", b["up"])
        add("GATED_ACT", li, gate=b["gate"], up=b["up"], dst=b["gate"], cols=f,
            act=ACTIVATIONS.index(c.activation))
        norm(li, "ffn_sub_norm", b["gate"], f, b["h"])
        quant(li, f)
        linear(li, "down_proj", b["y"])
        add("RESIDUAL", li, x=b["x"], y=b["y"], dst=b["x"], cols=d)
    src = mmap.buffer("x").row(n - 1) if last_only else b["x"]
    hidden = mmap.output == "hidden"
    norm(None, "final_norm", src, d, b["out"] if hidden else b["h"], rows=n_out)
    if not hidden:
        add("QUANT", rows=n_out, src=b["h"], amax=b["amax"], dst=b["q8"], cols=d,
            kpad=kpad(d, T))
        add("LM_HEAD", rows=n_out, src=b["q8"], amax=b["amax"], head=mmap.region("head").addr,
            dst=b["out"], vocab=c.vocab_size, cols=d, kpad=kpad(d, T))
    recs.append(Record("END"))
    p = Program(kind, start, n_tokens, mmap.fmt.name, kv.dtype, kv.beat, mmap.output,
                tgt.tiling, c.num_layers, recs)
    size = PROGRAM_HEADER_BYTES + PROGRAM_RECORD_BYTES * len(recs)
    if size > mmap.program_slot_bytes:
        raise AssertionError(f"program of {size} bytes > slot {mmap.program_slot_bytes}")
    return p


# --------------------------------------------------------------------------- docs

def ops_markdown() -> str:
    """The op table of docs/hw/sequencer.md (tests check that the page holds this text)."""
    out = ["| byte | header field | type | meaning |", "|---|---|---|---|"]
    off = 0
    for name, code, doc in HEADER_FIELDS:
        typ = {"4s": "4 bytes", "I": "u32", "H": "u16", "B": "u8"}[code]
        out.append(f"| {off} | `{name}` | {typ} | {doc} |")
        off += struct.calcsize("<" + code)
    out += [f"| {off}..{PROGRAM_HEADER_BYTES - 1} | reserved | | 0 |", "",
            "| byte | record head | type | meaning |", "|---|---|---|---|",
            "| 0 | `opcode` | u8 | the op (table below) |", "| 1 | `flags` | u8 | 0 |",
            "| 2 | `layer` | u16 | decoder layer of the record, 0xFFFF none (tracing) |", "",
            "| opcode | op | what |", "|---|---|---|"]
    out += [f"| `{op.code:#04x}` | `{op.name}` | {op.doc} |" for op in OPS.values()]
    for op in OPS.values():
        if not op.fields:
            continue
        out += ["", f"**{op.name}** (`{op.code:#04x}`)", "",
                "| byte | field | type | meaning |", "|---|---|---|---|"]
        docs = {n: d for n, _, d in op.fields}
        out += [f"| {off} | `{n}` | {typ} | {docs[n]} |" for n, typ, off in op.layout]
    out += ["", "| code | error | meaning |", "|---|---|---|"]
    out += [f"| {c} | `{n}` | {d} |" for c, (n, d) in ERRORS.items()]
    return "\n".join(out) + "\n"


__all__ = ["Program", "Record", "Op", "OPS", "OPCODES", "ERRORS", "ProgramError",
           "WeightInfo", "build_program", "encode_program", "decode_program", "decode_header",
           "check_addresses", "check_limits", "accesses", "tile_columns", "ops_markdown",
           "PROGRAM_VERSION", "MAGIC"]
