"""DDR memory map of one accelerator session (docs/hw/memory-map.md). NumPy-free.

The host allocates one physically contiguous buffer (PYNQ ``allocate``: CMA) and places in it,
each region starting on a 4 KiB page::

    weights   the weight file, byte for byte (sections at 64-byte multiples of the file)  RO
    head      the PL LM head's int8 rows + row scales (spec/lm_head.py; output "logits")  RO
    program   ``program_slots`` sequencer programs (docs/hw/sequencer.md)                 RO
    rope      RoPE table: per position p, head_dim/2 pairs (cos, sin), stream format      RO
    kv        the int8 KV cache (:func:`kv_layout`: codes + stream-format row scales)     RW
    act       token ids, scratch rows of one call, and the output (logits or hidden)      RW

RO/RW is the accelerator's view: it never writes weights, program or rope. Every address the
hardware sees is ``base + offset`` (64 bits in registers and program records; the AXI masters
drive :data:`ADDR_BITS` bits, so DDR_HIGH at 0x8_0000_0000 on the KV260 is reachable).

Rows of the ``act`` buffers are ``cols`` elements packed little-endian (stream format:
``fmt.bits // 8`` bytes each; int8: 1 byte; logits: float32), one row every
:func:`row_stride` bytes (a 64-byte multiple, so every row starts on an AXI beat of up to 512
bits). AXI bursts never cross a 4 KiB page: the DMA engines split at page boundaries, which
the page-aligned regions keep predictable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .codes import G
from .config import ModelConfig
from .kv_layout import KVLayout
from .lm_head import Q_BEAT, fits, head_bytes
from .numerics import STREAM_FORMATS, StreamFormat, stream_format
from .targets import Target, target as get_target

MEMORY_MAP_VERSION = 2       # 2: the "head" region (the PL LM head's int8 layout)
PAGE = 4096                     # region alignment: AXI bursts may not cross 4 KiB
ROW_ALIGN = 64                  # scratch rows and weight-file sections: 64-byte multiples
ADDR_BITS = 40                  # address width of the accelerator's AXI masters
RECORDS_PER_LAYER_MAX = 32      # program slot sizing (the builder emits 22 per layer)
PROGRAM_FIXED_RECORDS = 16      # records outside the layers (embed, final norm, head, end)
PROGRAM_HEADER_BYTES = 64
PROGRAM_RECORD_BYTES = 64


REGIONS = ("weights", "head", "program", "rope", "kv", "act")
WRITABLE = ("kv", "act")


class MemoryMapError(ValueError):
    """The model, context or call size does not fit the target or the device budget."""


def align(x: int, a: int) -> int:
    return -(-x // a) * a


def row_stride(cols: int, elem_bytes: int) -> int:
    """Bytes from one row of ``cols`` elements to the next in an ``act`` buffer."""
    return align(cols * elem_bytes, ROW_ALIGN)


@dataclass(frozen=True)
class Region:
    name: str
    addr: int               # absolute (base included)
    size: int               # bytes, a multiple of PAGE
    writable: bool
    doc: str = ""

    @property
    def end(self) -> int:
        return self.addr + self.size

    def contains(self, addr: int, nbytes: int) -> bool:
        return self.addr <= addr and addr + nbytes <= self.end


@dataclass(frozen=True)
class Buffer:
    """A row buffer in the ``act`` region: ``rows`` x ``cols`` elements of ``elem_bytes``;
    ``packed``: elements back to back (token ids, per-row amax), else rows at
    :func:`row_stride`."""
    name: str
    addr: int
    rows: int
    cols: int
    elem_bytes: int
    packed: bool = False
    doc: str = ""

    @property
    def stride(self) -> int:
        return self.cols * self.elem_bytes if self.packed else row_stride(self.cols,
                                                                          self.elem_bytes)

    @property
    def size(self) -> int:
        return align(self.rows * self.stride, ROW_ALIGN)

    def row(self, i: int) -> int:
        """Address of row ``i``."""
        if not 0 <= i < self.rows:
            raise IndexError(f"row {i} outside buffer {self.name} (0..{self.rows - 1})")
        return self.addr + i * self.stride


def kpad(k: int, t: int) -> int:
    """int8 activation row length of a K-wide linear input: K padded to whole 3T-byte TLMM
    beats (the quantiser's zero padding)."""
    return align(k, G * t)


def kv_layout(config: ModelConfig, tgt: Target, max_context: int, fmt=None,
              base: int = 0) -> KVLayout:
    """The KV cache of a session: the int8 layout the integer attention engine reads and the
    quantising writer stores (spec/kv_layout.py), blocks of the engine's ``beat`` keys, row
    scales in the stream format ``fmt`` (None: the contract's)."""
    return KVLayout(config.num_layers, config.num_kv_heads, config.head_dim, max_context,
                    dtype="int8", beat=tgt.attention_int["beat"], fmt=stream_format(fmt),
                    base=base)


def check_model_fits(config: ModelConfig, tgt: Target, max_context: int,
                     max_tokens: int) -> None:
    """MemoryMapError unless the build's fixed limits hold the model and the call size (the
    integer attention engine's and the KV quantiser's as ``spec.program.check_limits`` checks
    them per record)."""
    t, a, tl = tgt.tiling, tgt.attention, tgt.tlmm
    ai, kq = tgt.attention_int, tgt.kv_quant
    problems = []
    widths = {"hidden_size": config.hidden_size, "q width (heads*head_dim)": config.q_size,
              "intermediate_size": config.intermediate_size}
    for what, w in widths.items():
        if w > tgt.row_max:
            problems.append(f"{what} {w} > the element-wise row buffer {tgt.row_max}")
    kb = max(-(-k // (G * t.t)) for _, k in config.linear_shapes().values())
    if kb > tl["kb_max"] or kb > tl["half_depth"]:
        problems.append(f"{kb} K blocks > the TLMM's {min(tl['kb_max'], tl['half_depth'])}")
    if config.head_dim > a["head_dim"]:
        problems.append(f"head_dim {config.head_dim} > the attention engine's {a['head_dim']}")
    group = config.num_heads // config.num_kv_heads
    if group > a["lanes"]:
        problems.append(f"GQA group {group} > the attention engine's {a['lanes']} lanes")
    ctx_max = 2 ** a["ctx_bits"] - 1
    if max_context > ctx_max:
        problems.append(f"max context {max_context} > the attention engine's {ctx_max}")
    if config.head_dim > ai["head_dim"]:
        problems.append(f"head_dim {config.head_dim} > the integer attention engine's "
                        f"{ai['head_dim']}")
    for what, b in (("KV quantiser's beat", kq["beat"]),
                    ("integer attention engine's q beat", ai["q_beat"]),
                    ("integer attention engine's o beat", ai["o_beat"])):
        if config.head_dim % b:
            problems.append(f"head_dim {config.head_dim} is not a multiple of the {what} {b}")
    if group > ai["lanes"]:
        problems.append(f"GQA group {group} > the integer attention engine's {ai['lanes']} "
                        f"lanes")
    if max_context > 2 ** ai["ctx_bits"] - 1:
        problems.append(f"max context {max_context} > the integer attention engine's "
                        f"{2 ** ai['ctx_bits'] - 1}")
    if max_tokens > tl["tok_max"]:
        problems.append(f"{max_tokens} tokens per call > the TLMM's {tl['tok_max']}")
    if problems:
        raise MemoryMapError(f"model does not fit target {tgt.name}: " + "; ".join(problems))


def weights_nbytes_estimate(config: ModelConfig, t: int, q: int, float_bytes: int = 2,
                            header: int = 64 << 10) -> int:
    """Size of a weight file for ``config`` at tiling (t, q) when the file is not at hand:
    exact code sections, norms and embeddings at ``float_bytes`` (bf16 checkpoints: 2),
    ``header`` bytes for the preamble and JSON header."""
    n = header + align(config.num_layers * 7 * 4, ROW_ALIGN)
    norm_widths = (config.hidden_size, config.q_size, config.hidden_size,
                   config.intermediate_size)
    for _ in range(config.num_layers):
        n += sum(align(w * float_bytes, ROW_ALIGN) for w in norm_widths)
        for out, k in config.linear_shapes().values():
            nb, kb = -(-out // q), -(-k // (G * t))
            n += align(-(-nb * kb * q * t * 5 // 8), ROW_ALIGN)
    tables = 1 if config.tie_word_embeddings else 2
    n += align(config.hidden_size * float_bytes, ROW_ALIGN)
    n += tables * align(config.vocab_size * config.hidden_size * float_bytes, ROW_ALIGN)
    return n


def program_slot_bytes(config: ModelConfig) -> int:
    """Bytes reserved for one program: header + up to RECORDS_PER_LAYER_MAX records a layer."""
    records = RECORDS_PER_LAYER_MAX * config.num_layers + PROGRAM_FIXED_RECORDS
    return align(PROGRAM_HEADER_BYTES + PROGRAM_RECORD_BYTES * records, PAGE)


@dataclass(frozen=True)
class MemoryMap:
    """The placed regions and ``act`` buffers of one session (build with :func:`memory_map`)."""
    base: int
    target: str
    config: ModelConfig
    fmt: StreamFormat
    max_context: int
    max_tokens: int
    out_rows: int
    output: str
    regions: dict = field(hash=False)        # name -> Region
    buffers: dict = field(hash=False)        # name -> Buffer
    kv: KVLayout = None
    program_slots: int = 2

    @property
    def total_bytes(self) -> int:
        return max(r.end for r in self.regions.values()) - self.base

    @property
    def elem_bytes(self) -> int:
        return self.fmt.bits // 8

    def region(self, name: str) -> Region:
        try:
            return self.regions[name]
        except KeyError:
            raise KeyError(f"no region {name!r}; regions: {', '.join(self.regions)}") from None

    def buffer(self, name: str) -> Buffer:
        try:
            return self.buffers[name]
        except KeyError:
            raise KeyError(f"no buffer {name!r}; buffers: {', '.join(self.buffers)}") from None

    def program_addr(self, slot: int = 0) -> int:
        if not 0 <= slot < self.program_slots:
            raise IndexError(f"program slot {slot} outside 0..{self.program_slots - 1}")
        r = self.region("program")
        return r.addr + slot * (r.size // self.program_slots)

    @property
    def program_slot_bytes(self) -> int:
        return self.region("program").size // self.program_slots

    def rope_row(self, pos: int) -> int:
        """Address of the RoPE table row of position ``pos``."""
        if not 0 <= pos < self.max_context:
            raise IndexError(f"position {pos} outside the RoPE table (0..{self.max_context - 1})")
        return self.region("rope").addr + pos * self.config.head_dim * self.elem_bytes

    def region_of(self, addr: int, nbytes: int) -> Region | None:
        """The region holding ``[addr, addr + nbytes)`` entirely, or None."""
        for r in self.regions.values():
            if r.contains(addr, nbytes):
                return r
        return None

    def table(self) -> str:
        """Plain-text region and buffer table (for `tellme` commands and error messages)."""
        lines = [f"{'region':<10}{'address':>16}{'bytes':>14}  access"]
        for r in self.regions.values():
            lines.append(f"{r.name:<10}{r.addr:>#16x}{r.size:>14,}  "
                         f"{'RW' if r.writable else 'RO'}")
        lines.append(f"{'total':<10}{'':>16}{self.total_bytes:>14,}")
        lines.append(f"{'buffer':<10}{'address':>16}{'bytes':>14}  rows x cols (stride)")
        for b in self.buffers.values():
            lines.append(f"{b.name:<10}{b.addr:>#16x}{b.size:>14,}  {b.rows} x {b.cols} "
                         f"({b.stride})")
        return "\n".join(lines)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


def memory_map(config: ModelConfig, target: str | Target, max_context: int | None = None, *,
               weights_nbytes: int | None = None, max_tokens: int | None = None,
               out_rows: int | None = None, output: str = "logits", fmt=None,
               base: int = 0, budget: int | None = -1, program_slots: int = 2) -> MemoryMap:
    """Lay out one session of ``config`` on ``target`` for contexts up to ``max_context``.

    ``weights_nbytes``: size of the weight file (default: :func:`weights_nbytes_estimate`);
    ``max_tokens``: tokens per call (prefill chunk; default min(target tok_max, max_context));
    ``out_rows``: output rows kept per call (default: 1 for logits, the last position's, a
    vocabulary-wide float32 row each; max_tokens for hidden); ``output``: "logits" (float32
    [out_rows, vocab]) or "hidden" (final-norm output rows, stream format); ``fmt``: stream
    format of activations, int8 KV row scales and RoPE table (None: the contract's);
    ``base``: physical address of the buffer (4 KiB aligned); ``budget``: bytes available
    (-1: the target's default CMA size, None: unlimited). Raises :class:`MemoryMapError` when
    the model does not fit the target's limits, the budget or the :data:`ADDR_BITS` address
    space.
    """
    tgt = target if isinstance(target, Target) else get_target(target)
    fmt = stream_format(fmt)
    if fmt.name not in STREAM_FORMATS:
        raise MemoryMapError(f"stream format {fmt!r} has no whole-byte DDR encoding")
    c = config
    max_context = c.max_context if max_context is None else int(max_context)
    if not 1 <= max_context <= c.max_context:
        raise MemoryMapError(f"max context {max_context} outside 1..{c.max_context} (the "
                             f"model's max_context)")
    if max_tokens is None:
        max_tokens = min(tgt.tlmm["tok_max"], max_context)
    if not 1 <= max_tokens <= max_context:
        raise MemoryMapError(f"max tokens per call {max_tokens} outside 1..{max_context}")
    if out_rows is None:
        out_rows = 1 if output == "logits" else max_tokens
    if not 1 <= out_rows <= max_tokens:
        raise MemoryMapError(f"output rows {out_rows} outside 1..{max_tokens}")
    if output not in ("logits", "hidden"):
        raise MemoryMapError(f"output must be 'logits' or 'hidden', got {output!r}")
    if base % PAGE or base < 0:
        raise MemoryMapError(f"base {base:#x} is not a 4 KiB-aligned address")
    if program_slots < 1:
        raise MemoryMapError(f"program slots must be >= 1, got {program_slots}")
    check_model_fits(c, tgt, max_context, max_tokens)
    lm = tgt.lm_head
    if output == "logits" and not fits(c.hidden_size, lm.get("lanes", 0), lm.get("max_d", 0)):
        raise MemoryMapError(f"hidden size {c.hidden_size}: the {tgt.name} build's LM-head unit "
                             f"takes multiples of {Q_BEAT} up to {lm.get('max_d', 0)} (output "
                             f"'hidden': the host applies the head)")
    t = tgt.tiling.t
    eb = fmt.bits // 8
    if weights_nbytes is None:
        weights_nbytes = weights_nbytes_estimate(c, t, tgt.tiling.q)

    sizes = {"weights": align(weights_nbytes, PAGE),
             "program": program_slots * program_slot_bytes(c),
             "rope": align(max_context * c.head_dim * eb, PAGE),
             # the LM head's int8 rows + row scales (spec/lm_head.py), written by the host
             # when it loads the model; none when the device returns hidden rows
             "head": align(head_bytes(c.vocab_size, c.hidden_size), PAGE)
             if output == "logits" else 0}
    sizes["kv"] = align(kv_layout(c, tgt, max_context, fmt).total_bytes, PAGE)

    n = max_tokens
    kmax = max(kpad(k, t) for _, k in c.linear_shapes().values())
    wide = max(c.hidden_size, c.q_size, c.intermediate_size)
    specs = [   # name, rows, cols, elem bytes, packed, doc
        ("tokens", n, 1, 4, True, "token ids of the call, u32"),
        ("x", n, c.hidden_size, eb, False, "residual stream"),
        ("h", n, wide, eb, False, "RMSNorm output (input, sub-norms, final)"),
        ("amax", n, 1, eb, True, "per-row absmax of the last RMSNorm"),
        ("q8", n, kmax, 1, False, "int8 activations, rows padded to 3T bytes"),
        ("q", n, c.q_size, eb, False, "queries (RoPE in place)"),
        ("k", n, c.kv_size, eb, False, "keys of the call (RoPE in place)"),
        ("v", n, c.kv_size, eb, False, "values of the call"),
        ("attn", n, c.q_size, eb, False, "attention output"),
        ("y", n, c.hidden_size, eb, False, "o_proj / down_proj output"),
        ("gate", n, c.intermediate_size, eb, False, "gate_proj output; gated product in place"),
        ("up", n, c.intermediate_size, eb, False, "up_proj output"),
    ]
    if output == "logits":
        specs.append(("out", out_rows, c.vocab_size, 4, False, "logits, float32"))
    else:
        specs.append(("out", out_rows, c.hidden_size, eb, False, "final hidden state"))
    act_size, offs = 0, {}
    for name, rows, cols, e, packed, _ in specs:
        offs[name] = act_size
        act_size += align(Buffer(name, 0, rows, cols, e, packed).size, PAGE)
    sizes["act"] = act_size

    regions, addr = {}, base
    docs = {"weights": "the weight file as is",
            "head": "LM head: int8 rows + row scales (spec/lm_head.py)",
            "program": f"{program_slots} program slots",
            "rope": "RoPE (cos, sin) table", "kv": "KV cache", "act": "ids, scratch, output"}
    for name in REGIONS:
        regions[name] = Region(name, addr, sizes[name], name in WRITABLE, docs[name])
        addr += sizes[name]
    total = addr - base
    if budget == -1:
        budget = tgt.cma_bytes        # the board's CMA pool (spec/targets.py); sim: none
    if budget is not None and total > budget:
        parts = ", ".join(f"{k} {_mib(v)}" for k, v in sizes.items())
        raise MemoryMapError(
            f"the session needs {_mib(total)} ({parts}) but the device budget is "
            f"{_mib(budget)} ({tgt.name}); reduce max_context ({max_context}) or max_tokens "
            f"({max_tokens}), or give the board more CMA (kernel command line cma=...)")
    if addr > 1 << ADDR_BITS:
        raise MemoryMapError(f"the map ends at {addr:#x}, beyond the masters' {ADDR_BITS}-bit "
                             f"address space")
    act = regions["act"].addr
    buffers = {name: Buffer(name, act + offs[name], rows, cols, e, packed, doc)
               for name, rows, cols, e, packed, doc in specs}
    kv = kv_layout(c, tgt, max_context, fmt, base=regions["kv"].addr)
    return MemoryMap(base, tgt.name, c, fmt, max_context, max_tokens, out_rows, output,
                     regions, buffers, kv, program_slots)


__all__ = ["MemoryMap", "MemoryMapError", "Region", "Buffer", "memory_map", "row_stride",
           "kpad", "kv_layout", "check_model_fits", "weights_nbytes_estimate", "program_slot_bytes",
           "MEMORY_MAP_VERSION", "PAGE", "ROW_ALIGN", "ADDR_BITS"]
