"""Golden sequencer: executes a program (tellme.spec.program) over a NumPy DDR image laid out by
tellme.spec.memory_map, with the hw-numerics block functions. NumPy only.

This is the executable specification of the accelerator top: every value a record reads comes
from DDR bytes (weight sections as the file stores them, stream-format rows, int8 rows, the
host's RoPE table, the int8 KV cache), and every result goes back to DDR bytes, so a program
that reproduces ``GoldenModel(numerics="hw")`` here carries everything the hardware needs.
KV_WRITE quantises K/V rows on write into the int8 layout (spec/kv_layout.py) as the
quantising KV writer does; ATTENTION reads codes and scales back (the integer engine). The
golden model quantises its stream-format cache on read instead: ``kv_quant_int8`` is a function
of the row, so both give the same bits.

>>> s = Session("model.tlm", "kv260", max_context=256, out_rows=8)
>>> logits = s.call([1, 2, 3], start=0)            # prefill: float32 [3, vocab]
>>> logits = s.call([4], start=3)                  # decode step

``execute(ddr, prog_addr)`` is the sequencer itself (fetch the header and records at
``prog_addr``, check them like the hardware does, run them in order); :class:`Session` is the
host's side (load the weight file and RoPE table, write token ids and programs, read outputs).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tellme.quant.format import read_weight_file, unpack_float
from tellme.spec.codes import unlayout_codes, unpack_codes
from tellme.spec.kv_layout import KVLayout, decode_elems, encode_elems
from tellme.spec.lm_head import head_bytes, unpack_head
from tellme.spec.memory_map import MemoryMap, memory_map, row_stride
from tellme.spec.numerics import STREAM_FORMATS, check_float_environment
from tellme.spec.program import (
    ACTIVATIONS,
    DTYPE_BYTES,
    FLOAT_DTYPES,
    PAIRINGS,
    PROGRAM_RECORD_BYTES,
    Program,
    ProgramError,
    WeightInfo,
    accesses,
    build_program,
    decode_header,
    decode_program,
    encode_program,
)

from . import attention_int, hw_numerics as hw
from .attention_hw import kv_quant_int8
from .lm_head_int import lm_head_int8
from .tlmm import ternary_matmul

_STORAGE = {"float32": "<f4", "float16": "<f2", "bfloat16": "<u2"}


class DdrError(RuntimeError):
    """An access outside the simulated DDR (the AXI DECERR of the hardware)."""


class Ddr:
    """``size`` bytes of simulated DDR starting at physical address ``base``."""

    def __init__(self, base: int, size: int):
        self.base = base
        self.mem = np.zeros(size, dtype=np.uint8)

    def _off(self, addr: int, n: int) -> int:
        off = addr - self.base
        if off < 0 or off + n > self.mem.size:
            raise DdrError(f"access [{addr:#x}, +{n}) outside DDR [{self.base:#x}, "
                           f"+{self.mem.size})")
        return off

    def read(self, addr: int, n: int) -> np.ndarray:
        off = self._off(addr, n)
        return self.mem[off:off + n].copy()

    def write(self, addr: int, data) -> None:
        b = np.frombuffer(bytes(data), dtype=np.uint8) if not isinstance(data, np.ndarray) \
            else data.reshape(-1).view(np.uint8)
        off = self._off(addr, b.size)
        self.mem[off:off + b.size] = b


@dataclass
class ExecStats:
    """Records run per op and the DDR bytes their accesses span (nominal traffic)."""
    ops: Counter = field(default_factory=Counter)
    read_bytes: int = 0
    write_bytes: int = 0


class Sequencer:
    """Runs decoded programs over ``ddr`` (weights decoded from code sections are cached by
    address: the weight region is read-only for the accelerator)."""

    def __init__(self, ddr: Ddr):
        check_float_environment()
        self.ddr = ddr
        self.fmt = None                     # the running program's stream format
        self._w: dict[tuple, np.ndarray] = {}

    # -- rows -------------------------------------------------------------------------------

    def rows(self, addr: int, rows: int, cols: int, eb: int) -> np.ndarray:
        """uint8 [rows, cols*eb]: the bytes of rows at the act-buffer stride."""
        stride = row_stride(cols, eb)
        raw = self.ddr.read(addr, (rows - 1) * stride + cols * eb)
        idx = np.arange(rows)[:, None] * stride + np.arange(cols * eb)[None, :]
        return raw[idx]

    def put_rows(self, addr: int, data: np.ndarray) -> None:
        """Write uint8 [rows, nbytes] at the act-buffer stride of ``nbytes``-byte rows."""
        rows, nb = data.shape
        stride = row_stride(nb, 1)
        off = self.ddr._off(addr, (rows - 1) * stride + nb)
        idx = off + np.arange(rows)[:, None] * stride + np.arange(nb)[None, :]
        self.ddr.mem[idx] = data

    def stream(self, addr: int, rows: int, cols: int) -> np.ndarray:
        eb = self.fmt.bits // 8
        bits = decode_elems(self.rows(addr, rows, cols, eb).tobytes(), eb)
        return self.fmt.from_bits(bits).reshape(rows, cols)

    def put_stream(self, addr: int, x: np.ndarray) -> None:
        x = x.reshape(x.shape[0], -1)
        eb = self.fmt.bits // 8
        raw = np.frombuffer(encode_elems(self.fmt.to_bits(x), eb), dtype=np.uint8)
        self.put_rows(addr, raw.reshape(x.shape[0], -1))

    def packed(self, addr: int, n: int) -> np.ndarray:
        eb = self.fmt.bits // 8
        return self.fmt.from_bits(decode_elems(self.ddr.read(addr, n * eb).tobytes(), eb))

    def floats(self, addr: int, count: int, dtype: int) -> np.ndarray:
        """A weight-file float section (storage code ``dtype``) widened to float32."""
        name = FLOAT_DTYPES[dtype]
        raw = self.ddr.read(addr, count * DTYPE_BYTES[name])
        return unpack_float(raw.view(_STORAGE[name]), name)

    def weights(self, a: dict, t: int, q: int) -> np.ndarray:
        key = (a["weights"], a["n"], a["k"], a["nb"], a["kb"], t, q)
        w = self._w.get(key)
        if w is None:
            count = a["nb"] * a["kb"] * q * t
            raw = self.ddr.read(a["weights"], -(-count * 5 // 8))
            codes = unpack_codes(raw, count).reshape(a["nb"], a["kb"], q, t)
            w = self._w[key] = unlayout_codes(codes, a["n"], a["k"]).astype(np.float32)
        return w

    # -- run --------------------------------------------------------------------------------

    def run(self, p: Program) -> ExecStats:
        """Execute a decoded program record by record (the KV cache is int8 whatever the
        header's ``kv_dtype`` says: ``check_limits`` refuses any other)."""
        self.fmt = STREAM_FORMATS[p.fmt]
        self.ops = hw.bound(self.fmt)
        stats = ExecStats()
        for i, r in enumerate(p.records):
            if r.op == "END":
                break
            getattr(self, "_" + r.op.lower())(r.args, p, i)
            stats.ops[r.op] += 1
            for _, _, n, write in accesses(r, p):
                if write:
                    stats.write_bytes += n
                else:
                    stats.read_bytes += n
        return stats

    def _embed(self, a, p, i):
        ids = self.ddr.read(a["ids"], 4 * a["rows"]).view("<u4").astype(np.int64)
        if ids.max() >= a["vocab"]:
            raise ProgramError("BAD_FIELD", f"token id {int(ids.max())} >= vocab {a['vocab']}", i)
        size = a["cols"] * DTYPE_BYTES[FLOAT_DTYPES[a["dtype"]]]
        rows = np.stack([self.floats(a["table"] + int(t) * size, a["cols"], a["dtype"])
                         for t in ids])
        self.put_stream(a["dst"], self.ops.embed(rows, np.arange(len(ids))))

    def _norm(self, a, p, i):
        x = self.stream(a["src"], a["rows"], a["cols"])
        h, amax = self.ops.rmsnorm_absmax(x, self.floats(a["gain"], a["cols"], a["dtype"]),
                                          a["eps"])
        self.put_stream(a["dst"], h)
        eb = self.fmt.bits // 8
        self.ddr.write(a["amax"], encode_elems(self.fmt.to_bits(amax), eb))

    def _quant(self, a, p, i):
        q, _ = self.ops.quantize(self.stream(a["src"], a["rows"], a["cols"]),
                                 self.packed(a["amax"], a["rows"]))
        out = np.zeros((a["rows"], a["kpad"]), dtype=np.int8)
        out[:, :a["cols"]] = q
        self.put_rows(a["dst"], out.view(np.uint8))

    def _linear(self, a, p, i):
        t, q = p.tiling.t, p.tiling.q
        x = self.rows(a["src"], a["rows"], a["kb"] * 3 * t, 1).view(np.int8)[:, :a["k"]]
        acc = ternary_matmul(x, self.weights(a, t, q))
        y = self.ops.dequantize(acc, self.packed(a["amax"], a["rows"]), np.float32(a["scale"]))
        self.put_stream(a["dst"], y)

    def _rope(self, a, p, i):
        n, hd = a["rows"], a["head_dim"]
        x = self.stream(a["src"], n, a["heads"] * hd).reshape(n, a["heads"], hd)
        eb = self.fmt.bits // 8
        raw = self.ddr.read(a["table"] + a["start"] * hd * eb, n * hd * eb)
        cs = self.fmt.from_bits(decode_elems(raw.tobytes(), eb)).reshape(n, hd // 2, 2)
        self.put_stream(a["dst"], self.ops.rope(x, cs[..., 0], cs[..., 1],
                                                PAIRINGS[a["pairing"]]))

    # -- int8 KV cache (spec/kv_layout.py; the record's regions and strides, the header's beat)

    def _kv_offsets(self, lay: KVLayout, pos: np.ndarray) -> dict:
        """Byte offsets inside one KV head's K / V region of keys ``pos``: ``k_row`` [n,
        k_row_bytes] (codes and the row's zero padding), ``pair`` [n, pair_bytes] (K scale,
        V scale, zeros), ``v`` [n, head_dim] (the key's code of each channel)."""
        B = lay.beat
        blk, j = (pos // B)[:, None], (pos % B)[:, None]
        kb = blk * lay.k_block_bytes
        return {"k_row": kb + lay.k_header_bytes + j * lay.k_row_bytes
                + np.arange(lay.k_row_bytes),
                "pair": kb + j * lay.pair_bytes + np.arange(lay.pair_bytes),
                "v": blk * lay.v_block_bytes + np.arange(lay.head_dim) * B + j}

    def _kv_write(self, a, p, i):
        """Quantise the call's rows (``kv_quant_int8``, per row and KV head) and store keys
        start..start+rows-1 as the hardware writer does: per key the padded K row, the whole
        scale pair (K scale, V scale, zero padding) and the key's V code of every channel;
        nothing else in the regions changes."""
        n, hd, kvh, start = a["rows"], a["head_dim"], a["kv_heads"], a["start"]
        lay = p.kv_geometry(hd, start + n)
        k = self.stream(a["k_src"], n, kvh * hd).reshape(n, kvh, hd)
        v = self.stream(a["v_src"], n, kvh * hd).reshape(n, kvh, hd)
        (kq, ks), (vq, vs) = kv_quant_int8(k, fmt=self.fmt), kv_quant_int8(v, fmt=self.fmt)
        off = self._kv_offsets(lay, start + np.arange(n))
        sb = lay.scale_bytes
        rows = np.zeros((n, kvh, lay.k_row_bytes), np.uint8)
        rows[..., :hd] = kq.view(np.uint8)
        pair = np.zeros((n, kvh, lay.pair_bytes), np.uint8)
        for at, sc in ((0, ks), (sb, vs)):
            raw = encode_elems(self.fmt.to_bits(sc), sb)
            pair[..., at:at + sb] = np.frombuffer(raw, np.uint8).reshape(n, kvh, sb)
        k_span, v_span = lay.blocks * lay.k_block_bytes, lay.blocks * lay.v_block_bytes
        for h in range(kvh):
            kb = self.ddr._off(a["k_dst"] + h * a["k_stride"], k_span)
            vb = self.ddr._off(a["v_dst"] + h * a["v_stride"], v_span)
            self.ddr.mem[kb + off["k_row"]] = rows[:, h]
            self.ddr.mem[kb + off["pair"]] = pair[:, h]
            self.ddr.mem[vb + off["v"]] = vq[:, h].view(np.uint8)

    def cache(self, a: dict, keys: int, beat: int) -> tuple[np.ndarray, ...]:
        """Keys 0..keys-1 of every KV head from the int8 regions of head 0 at ``a["k"]`` /
        ``a["v"]`` (strides ``k_stride`` / ``v_stride``, blocks of ``beat`` keys): (K codes
        int8 [keys, kv_heads, hd], K scales [keys, kv_heads] (stream format), V codes, V
        scales)."""
        hd = a["head_dim"]
        lay = KVLayout(1, 1, hd, keys, dtype="int8", beat=beat, fmt=self.fmt)
        out = []
        for h in range(a["kv_heads"]):
            kimg = self.ddr.read(a["k"] + h * a["k_stride"], lay.blocks * lay.k_block_bytes)
            vimg = self.ddr.read(a["v"] + h * a["v_stride"], lay.blocks * lay.v_block_bytes)
            kq, ks, vs = lay.decode_k_region(kimg)
            out.append((kq[:keys], ks[:keys], lay.decode_v_region(vimg)[:keys], vs[:keys]))
        kq, ks, vq, vs = (np.stack(x, axis=1) for x in zip(*out, strict=True))
        return kq, self.fmt.from_bits(ks), vq, self.fmt.from_bits(vs)

    def _attention(self, a, p, i):
        n, hd, start = a["rows"], a["head_dim"], a["start"]
        q = self.stream(a["q"], n, a["heads"] * hd).reshape(n, a["heads"], hd)
        kq, ks, vq, vs = self.cache(a, start + n, p.kv_beat)
        if a["mode"] == 1:
            o = attention_int.attention_decode(q[0], kq, ks, vq, vs, a["score_c"],
                                               fmt=self.fmt)[None]
        else:
            o = attention_int.attention_prefill(q, kq, ks, vq, vs, start, a["score_c"],
                                                fmt=self.fmt)
        self.put_stream(a["dst"], o)

    def _residual(self, a, p, i):
        x = self.stream(a["x"], a["rows"], a["cols"])
        y = self.stream(a["y"], a["rows"], a["cols"])
        self.put_stream(a["dst"], self.ops.residual_add(x, y))

    def _gated_act(self, a, p, i):
        g = self.stream(a["gate"], a["rows"], a["cols"])
        u = self.stream(a["up"], a["rows"], a["cols"])
        self.put_stream(a["dst"], self.ops.gated_act(g, u, ACTIVATIONS[a["act"]]))

    def _lm_head(self, a, p, i):
        q = self.rows(a["src"], a["rows"], a["kpad"], 1).view(np.int8)[:, :a["cols"]]
        w8, dscale = self.head(a["head"], a["vocab"], a["cols"])
        logits = lm_head_int8(q, self.packed(a["amax"], a["rows"]), w8, dscale, fmt=self.fmt)
        self.put_rows(a["dst"], np.ascontiguousarray(logits, dtype="<f4").view(np.uint8))

    def head(self, addr: int, vocab: int, cols: int):
        """(int8 codes [vocab, cols], float32 row scales [vocab]) of the head region at
        ``addr`` (spec/lm_head.py), cached like the code sections (read-only)."""
        key = ("head", addr, vocab, cols)
        if key not in self._w:
            self._w[key] = unpack_head(self.ddr.read(addr, head_bytes(vocab, cols)), vocab,
                                       cols)
        return self._w[key]


def fetch_program(ddr: Ddr, prog_addr: int, mmap: MemoryMap | None = None,
                  target=None) -> Program:
    """Read and check the program at ``prog_addr`` as the sequencer does: header first (for
    the record count), then the records (ProgramError on any defect)."""
    head = ddr.read(prog_addr, 64).tobytes()
    count = decode_header(head)["count"]
    blob = ddr.read(prog_addr, 64 + count * PROGRAM_RECORD_BYTES).tobytes()
    return decode_program(blob, mmap, target)


def execute(ddr: Ddr, prog_addr: int, mmap: MemoryMap | None = None, target=None,
            seq: Sequencer | None = None) -> ExecStats:
    """Fetch, check and run the program at ``prog_addr``."""
    p = fetch_program(ddr, prog_addr, mmap, target)
    return (seq or Sequencer(ddr)).run(p)


def rope_table_bytes(mmap: MemoryMap) -> bytes:
    """The RoPE region's contents: for positions 0..max_context-1, head_dim/2 (cos, sin)
    pairs in the stream format (hw.rope_table, the bytes the golden model's tables hold)."""
    c = mmap.config
    cos, sin = hw.rope_table(np.arange(mmap.max_context), c.head_dim, c.rope_theta,
                             fmt=mmap.fmt)
    pairs = np.stack([cos, sin], axis=-1)                         # [pos, hd/2, 2]
    return encode_elems(mmap.fmt.to_bits(pairs), mmap.fmt.bits // 8)


class Session:
    """The host's side of the accelerator over a simulated DDR: the weight file and RoPE table
    loaded once, then one program per call (prefill chunk or decode step).

    ``weights``: a weight-file path; ``map_kw`` go to :func:`memory_map` (``out_rows``,
    ``output``, ``max_tokens``, ``base``, ``budget``, ...).
    """

    def __init__(self, weights, target: str, max_context: int | None = None, **map_kw):
        path = Path(weights)
        wf = read_weight_file(path, verify=False)
        self.info = WeightInfo.from_header(wf.header, wf.section("scales"))
        self.config = wf.config
        self.target = target
        self.mmap = memory_map(wf.config, target, max_context,
                               weights_nbytes=path.stat().st_size, **map_kw)
        self.ddr = Ddr(self.mmap.base, self.mmap.total_bytes)
        self.ddr.write(self.mmap.region("weights").addr, path.read_bytes())
        self.ddr.write(self.mmap.region("rope").addr, rope_table_bytes(self.mmap))
        if self.mmap.output == "logits":
            self.ddr.write(self.mmap.region("head").addr, wf.pl_head_image())
        self.seq = Sequencer(self.ddr)
        self.score_c = hw.score_scale(wf.config.head_dim)
        self.stats = ExecStats()

    def program(self, n: int, start: int, last_only: bool = False) -> Program:
        kind = "decode" if n == 1 and start > 0 else "prefill"
        return build_program(self.config, self.mmap, kind, start, n, weights=self.info,
                             score_c=self.score_c, last_only=last_only)

    def call(self, ids, start: int, last_only: bool = False, slot: int = 0) -> np.ndarray:
        """Run ``ids`` at positions start..; returns the output rows (float32 logits, or the
        stream-format hidden rows)."""
        ids = np.asarray(ids, dtype="<u4").reshape(-1)
        self.ddr.write(self.mmap.buffer("tokens").addr, ids)
        addr = self.mmap.program_addr(slot)
        self.ddr.write(addr, encode_program(self.program(ids.size, start, last_only)))
        st = execute(self.ddr, addr, self.mmap, self.target, self.seq)
        self.stats.ops.update(st.ops)
        self.stats.read_bytes += st.read_bytes
        self.stats.write_bytes += st.write_bytes
        return self.output(1 if last_only else ids.size)

    def kv(self, layer: int, kind: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Keys 0..n-1 of the int8 KV cache in DDR: ``kind``'s codes (int8 [n, kv_heads,
        head_dim]) and row scales ([n, kv_heads], stream format), i.e. ``kv_quant_int8`` of
        the rows the golden model caches."""
        lay = self.mmap.kv
        a = dict(head_dim=lay.head_dim, kv_heads=lay.num_kv_heads,
                 k=lay.region_addr(layer, "K", 0), v=lay.region_addr(layer, "V", 0),
                 k_stride=lay.kind_head_bytes("K"), v_stride=lay.kind_head_bytes("V"))
        self.seq.fmt = self.mmap.fmt
        kq, ks, vq, vs = self.seq.cache(a, n, lay.beat)
        return (kq, ks) if kind == "K" else (vq, vs)

    def output(self, rows: int) -> np.ndarray:
        out = self.mmap.buffer("out")
        if self.mmap.output == "logits":
            raw = self.seq.rows(out.addr, rows, out.cols, 4)
            return raw.view("<f4").astype(np.float32)
        return self.seq.stream(out.addr, rows, out.cols)


__all__ = ["Ddr", "DdrError", "ExecStats", "Sequencer", "Session", "execute", "fetch_program",
           "rope_table_bytes"]
