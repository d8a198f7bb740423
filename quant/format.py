"""The tellme weight file: one versioned, memory-mappable file holding a :class:`TernaryModel`
in the accelerator's TLMM code layout. Byte-level spec: docs/weight-format.md.

NumPy + stdlib only; runs on the board (Python 3.10, NumPy 1.22+): no ml_dtypes, no
NumPy-2-only APIs.

Layout (all integers little-endian)::

    [0, 64)                 preamble (struct ``PREAMBLE``): magic, version, header offset,
                            size and crc32, data offset, file size
    [64, 64 + header_nbytes) JSON header (UTF-8): config, rope_pairing, TLMM encoding, tiling,
                            section table, meta; space-padded to a multiple of 64
    data_offset ...         sections, each starting on a 64-byte boundary, zero padding between

Section names: ``scales`` (float32 [L, 7], LINEAR_NAMES order), ``layers.{i}.{norm}``,
``layers.{i}.{linear}.codes`` (5-bit TLMM codes [NB, KB, Q, T] packed LSB-first),
``final_norm``, ``embed``, ``lm_head`` (untied models only).
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tellme.spec.codes import (
    CODE_BITS,
    N_CODES,
    PATTERNS,
    G,
    layout_codes,
    pack_codes,
    unlayout_codes,
    unpack_codes,
)
from tellme.spec.config import LINEAR_NAMES, NORM_NAMES, ModelConfig
from tellme.spec.tiling import Tiling

from .model import Layer, TernaryLinear, TernaryModel

MAGIC = b"TELLMEWF"
FORMAT_VERSION = 1
ALIGN = 64
# magic, version, preamble size, header offset, header nbytes, header crc32, reserved,
# data offset, file nbytes, 8 reserved bytes
PREAMBLE = struct.Struct("<8sIIQQIIQQ8x")
assert PREAMBLE.size == ALIGN

# Storage dtypes of float sections; bfloat16 is kept as its uint16 bit pattern.
FLOAT_DTYPES = ("float32", "float16", "bfloat16")
CODE_DTYPE = "code5"
_NP_STORAGE = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"),
               "bfloat16": np.dtype("<u2"), "uint8": np.dtype("u1"), CODE_DTYPE: np.dtype("u1")}

ENCODING = {
    "scheme": "tlmm",
    "layout": 1,
    "g": G,
    "code_bits": CODE_BITS,
    "n_codes": N_CODES,
    "patterns": PATTERNS.tolist(),
    "pad_weight": 0,
    "vector_order": ["nb", "kb", "q", "t"],
    "bit_order": "lsb-first",
}


class WeightFileError(ValueError):
    """A weight file that cannot be read: wrong magic/version, truncated, corrupt. The message
    names the file and, where one is involved, the section."""


# ---------------------------------------------------------------------------------------------
# element encodings (every pack_* has an unpack_*)

def pack_bf16(x: np.ndarray) -> np.ndarray:
    """float32 values that are exactly bfloat16 -> their uint16 bit patterns (raises otherwise)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    if np.any(u & np.uint32(0xFFFF)):
        raise ValueError("values are not exactly representable as bfloat16")
    return (u >> np.uint32(16)).astype(np.uint16)


def unpack_bf16(u16: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32, exactly (the 16 bits become the high half)."""
    u = np.asarray(u16, dtype=np.uint16)
    return (u.astype(np.uint32) << np.uint32(16)).view(np.float32)


def pack_f16(x: np.ndarray) -> np.ndarray:
    """float32 values that are exactly float16 -> float16 (raises otherwise; bitwise check)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    h = x.astype(np.float16)
    if not np.array_equal(h.astype(np.float32).view(np.uint32), x.view(np.uint32)):
        raise ValueError("values are not exactly representable as float16")
    return h


def unpack_f16(h: np.ndarray) -> np.ndarray:
    """float16 -> float32 (exact)."""
    return np.asarray(h, dtype=np.float16).astype(np.float32)


_CHUNK = 1 << 22        # elements per step when scanning big tensors (bounded temporaries)


def _exact_in(x: np.ndarray, dtype: str) -> bool:
    if dtype == "float32":
        return True
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    pack = pack_bf16 if dtype == "bfloat16" else pack_f16
    try:
        for i in range(0, flat.size, _CHUNK):
            pack(flat[i:i + _CHUNK])
    except ValueError:
        return False
    return True


def choose_float_storage(x: np.ndarray, prefer: str | None = None) -> str:
    """Narrowest storage dtype that holds float32 ``x`` bit-exactly: ``prefer`` (the checkpoint's
    dtype) if it is exact, else bfloat16, else float16, else float32."""
    order = [d for d in (prefer, "bfloat16", "float16") if d in ("bfloat16", "float16")]
    for d in dict.fromkeys(order):
        if _exact_in(x, d):
            return d
    return "float32"


def pack_float(x: np.ndarray, dtype: str) -> np.ndarray:
    """float32 -> storage array of ``dtype`` (one of FLOAT_DTYPES), exactly or ValueError."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if dtype == "float32":
        return x.astype("<f4")
    if dtype not in ("bfloat16", "float16"):
        raise ValueError(f"unknown float storage dtype {dtype!r}")
    pack = pack_bf16 if dtype == "bfloat16" else pack_f16
    flat = x.reshape(-1)
    out = np.empty(flat.size, dtype=_NP_STORAGE[dtype])
    for i in range(0, flat.size, _CHUNK):
        out[i:i + _CHUNK] = pack(flat[i:i + _CHUNK]).view(_NP_STORAGE[dtype])
    return out.reshape(x.shape)


def unpack_float(data: np.ndarray, dtype: str) -> np.ndarray:
    """Storage array of ``dtype`` -> float32 (a new array)."""
    if dtype == "float32":
        return np.array(data, dtype=np.float32)
    if dtype == "bfloat16":
        return unpack_bf16(data)
    if dtype == "float16":
        return unpack_f16(data)
    raise ValueError(f"unknown float storage dtype {dtype!r}")


def code_nbytes(shape) -> int:
    """Bytes of a packed 5-bit code section of ``shape`` [NB, KB, Q, T]."""
    return -(-int(np.prod(shape, dtype=np.int64)) * CODE_BITS // 8)


def pack_linear(w: np.ndarray, tiling: Tiling) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Ternary W int8 [N, K] -> (packed uint8 byte stream, code shape [NB, KB, Q, T])."""
    codes = layout_codes(w, tiling.t, tiling.q)
    return pack_codes(codes), codes.shape


def unpack_linear(packed: np.ndarray, code_shape, n: int, k: int) -> np.ndarray:
    """Inverse of :func:`pack_linear`: packed bytes -> ternary W int8 [n, k]."""
    count = int(np.prod(code_shape, dtype=np.int64))
    codes = unpack_codes(packed, count).reshape(tuple(code_shape))
    return unlayout_codes(codes, n, k)


def pack_preamble(header_nbytes: int, header_crc32: int, data_offset: int, file_nbytes: int,
                  version: int = FORMAT_VERSION) -> bytes:
    """The 64-byte preamble."""
    return PREAMBLE.pack(MAGIC, version, PREAMBLE.size, PREAMBLE.size, header_nbytes,
                         header_crc32, 0, data_offset, file_nbytes)


def unpack_preamble(raw: bytes) -> dict:
    """Inverse of :func:`pack_preamble` (no validation beyond the length)."""
    if len(raw) < PREAMBLE.size:
        raise ValueError(f"preamble needs {PREAMBLE.size} bytes, got {len(raw)}")
    (magic, version, pre_size, hdr_off, hdr_n, hdr_crc, _res, data_off,
     file_n) = PREAMBLE.unpack(raw[:PREAMBLE.size])
    return {"magic": magic, "version": version, "preamble_size": pre_size,
            "header_offset": hdr_off, "header_nbytes": hdr_n, "header_crc32": hdr_crc,
            "data_offset": data_off, "file_nbytes": file_n}


def pack_header(header: dict) -> bytes:
    """Header dict -> UTF-8 JSON bytes (compact, keys sorted so files are reproducible)."""
    try:
        return json.dumps(header, sort_keys=True, separators=(",", ":"),
                          allow_nan=False, default=_json_default).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ValueError(f"weight-file header is not JSON-serialisable: {e}") from None


def unpack_header(raw: bytes) -> dict:
    """Inverse of :func:`pack_header` (trailing padding spaces are allowed)."""
    return json.loads(raw.decode("utf-8"))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"object of type {type(o).__name__} ({o!r:.60}) in meta")


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _crc_hex(crc: int) -> str:
    return f"{crc & 0xFFFFFFFF:08x}"


def _crc32(buf) -> int:
    crc = 0
    mv = memoryview(buf).cast("B")
    step = 1 << 26
    for i in range(0, len(mv), step):
        crc = zlib.crc32(mv[i:i + step], crc)
    return crc


# ---------------------------------------------------------------------------------------------
# writing

@dataclass
class _Plan:
    name: str
    dtype: str
    shape: tuple
    nbytes: int
    encode: object          # () -> contiguous ndarray of exactly nbytes
    extra: dict


def _plan_sections(model: TernaryModel, tiling: Tiling) -> list[_Plan]:
    c = model.config
    prefer = model.meta.get("checkpoint_dtype")
    plans: list[_Plan] = []

    def floats(name, arr):
        arr = np.asarray(arr, dtype=np.float32)
        dtype = choose_float_storage(arr, prefer)
        plans.append(_Plan(name, dtype, tuple(arr.shape), arr.size * _NP_STORAGE[dtype].itemsize,
                           lambda a=arr, d=dtype: pack_float(a, d), {}))

    scales = np.array([[layer.linears[n].scale for n in LINEAR_NAMES] for layer in model.layers],
                      dtype="<f4").reshape(c.num_layers, len(LINEAR_NAMES))
    plans.append(_Plan("scales", "float32", scales.shape, scales.nbytes, lambda: scales, {}))
    shapes = c.linear_shapes()
    for i, layer in enumerate(model.layers):
        for n in NORM_NAMES:
            floats(f"layers.{i}.{n}", layer.norms[n])
        for n in LINEAR_NAMES:
            out, k = shapes[n]
            nb, kb = -(-out // tiling.q), -(-k // (tiling.t * G))
            shape = (nb, kb, tiling.q, tiling.t)
            lin = layer.linears[n]
            plans.append(_Plan(f"layers.{i}.{n}.codes", CODE_DTYPE, shape, code_nbytes(shape),
                               lambda w=lin.w: pack_linear(w, tiling)[0],
                               {"tlmm": {"n": out, "k": k}}))
    floats("final_norm", model.final_norm)
    floats("embed", model.embed)
    if model.lm_head is not None:
        floats("lm_head", model.lm_head)
    return plans


def _header(model: TernaryModel, tiling: Tiling, meta: dict, sections: list[dict]) -> dict:
    return {
        "format": "tellme-weights",
        "version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "rope_pairing": model.rope_pairing,
        "encoding": ENCODING,
        "tiling": {"t": tiling.t, "q": tiling.q},
        "alignment": ALIGN,
        "linear_names": list(LINEAR_NAMES),
        "norm_names": list(NORM_NAMES),
        "sections": sections,
        "meta": meta,
    }


def write_weight_file(model: TernaryModel, path, tiling: Tiling, meta: dict | None = None,
                      progress=None) -> Path:
    """Serialise ``model`` to ``path`` with codes laid out for ``tiling``.

    The file is written to a temporary file next to ``path`` and renamed into place, so a
    failure never leaves a half-written file. ``meta`` (free-form, JSON-serialisable) is merged
    over ``model.meta`` into the header. ``progress(done, total, note)`` is called per section.
    Returns the path written.
    """
    if not isinstance(tiling, Tiling):
        raise TypeError(f"tiling must be a tellme.spec.tiling.Tiling, got {type(tiling).__name__}")
    model.validate()
    path = Path(path)
    full_meta = {**model.meta, **(meta or {})}
    plans = _plan_sections(model, tiling)

    def table(crcs, data_offset):
        rows, off = [], data_offset
        for p, crc in zip(plans, crcs, strict=True):
            rows.append({"name": p.name, "offset": off, "nbytes": p.nbytes, "dtype": p.dtype,
                         "shape": list(p.shape), "crc32": _crc_hex(crc), **p.extra})
            off = _align(off + p.nbytes)
        return rows, off

    # The header's length does not depend on the crc values (fixed-width hex) nor, once the
    # offsets' digit counts settle, on the data offset: iterate to the fixed point.
    data_offset = _align(PREAMBLE.size + 1)
    while True:
        rows, _ = table([0] * len(plans), data_offset)
        hdr = pack_header(_header(model, tiling, full_meta, rows))
        need = _align(PREAMBLE.size + len(hdr))
        if need == data_offset:
            break
        data_offset = need

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    crcs = []
    try:
        with open(tmp, "wb") as f:
            f.write(b"\0" * data_offset)
            for j, p in enumerate(plans):
                data = np.ascontiguousarray(p.encode())
                if data.nbytes != p.nbytes:
                    raise AssertionError(f"section {p.name}: encoded {data.nbytes} bytes, "
                                         f"planned {p.nbytes}")
                crcs.append(_crc32(data))
                f.write(memoryview(data).cast("B"))
                f.write(b"\0" * (_align(p.nbytes) - p.nbytes))
                if progress is not None:
                    progress(j + 1, len(plans), p.name)
            file_nbytes = f.tell()
            rows, end = table(crcs, data_offset)
            assert end == file_nbytes, (end, file_nbytes)
            hdr = pack_header(_header(model, tiling, full_meta, rows))
            assert _align(PREAMBLE.size + len(hdr)) == data_offset
            f.seek(0)
            f.write(pack_preamble(len(hdr), zlib.crc32(hdr), data_offset, file_nbytes))
            f.write(hdr)
            f.write(b" " * (data_offset - PREAMBLE.size - len(hdr)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------------------------
# reading

@dataclass(frozen=True)
class Section:
    name: str
    offset: int
    nbytes: int
    dtype: str
    shape: tuple
    crc32: str
    tlmm: dict | None = None


class WeightFile:
    """An opened weight file. Sections are views of one read-only memory map of the file."""

    def __init__(self, path, header: dict, sections: dict[str, Section], mm: np.ndarray):
        self.path = Path(path)
        self.header = header
        self.version = header["version"]
        self.sections = sections
        self._mm = mm
        try:
            self.config = ModelConfig.from_dict(header["config"])
        except (KeyError, TypeError, ValueError) as e:
            raise self._err(f"bad model config in header: {e}") from None
        try:
            self.tiling = Tiling(**header["tiling"])
        except (KeyError, TypeError, ValueError) as e:
            raise self._err(f"bad tiling in header: {e}") from None
        self.rope_pairing = header.get("rope_pairing", "half")
        self.meta = header.get("meta", {})

    def _err(self, msg, section=None) -> WeightFileError:
        where = f"{self.path}" + (f", section {section!r}" if section else "")
        return WeightFileError(f"{where}: {msg}")

    def __repr__(self):
        return (f"WeightFile({str(self.path)!r}, v{self.version}, {len(self.sections)} sections, "
                f"tiling T={self.tiling.t} Q={self.tiling.q})")

    def __contains__(self, name: str) -> bool:
        return name in self.sections

    def info(self, name: str) -> Section:
        try:
            return self.sections[name]
        except KeyError:
            raise self._err("no such section", name) from None

    def section(self, name: str) -> np.ndarray:
        """The stored array, memory-mapped and read-only: float32 / float16 as such, bfloat16 as
        its uint16 bit patterns, code sections as the raw packed bytes (uint8 [nbytes])."""
        s = self.info(name)
        raw = self._mm[s.offset:s.offset + s.nbytes]
        if s.dtype == CODE_DTYPE:
            return raw
        return raw.view(_NP_STORAGE[s.dtype]).reshape(s.shape)

    def tensor(self, name: str) -> np.ndarray:
        """A float section widened to float32 (a new array, exact)."""
        s = self.info(name)
        if s.dtype not in FLOAT_DTYPES:
            raise self._err(f"dtype {s.dtype} is not a float section", name)
        return unpack_float(self.section(name), s.dtype)

    def rows(self, name: str, index) -> np.ndarray:
        """Rows ``index`` of a 2-D float section widened to float32, without widening the rest
        (an embedding lookup on the board: the bf16 table stays memory-mapped)."""
        s = self.info(name)
        if s.dtype not in FLOAT_DTYPES or len(s.shape) != 2:
            raise self._err(f"rows() needs a 2-D float section, got {s.dtype} {list(s.shape)}",
                            name)
        idx = np.asarray(index, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= s.shape[0]):
            raise IndexError(f"{self.path}: {name} row index out of range 0..{s.shape[0] - 1}")
        return unpack_float(self.section(name)[idx], s.dtype)

    @property
    def head_name(self) -> str:
        """The LM head's section: ``embed`` for tied models, else ``lm_head``."""
        return "embed" if self.config.tie_word_embeddings else "lm_head"

    def pl_head_image(self, chunk_rows: int = 1 << 14, progress=None) -> np.ndarray:
        """The PL LM head's int8 image of this file's head (spec/lm_head.py: ``quantize_head``
        then ``pack_head``), converted ``chunk_rows`` rows at a time so a 2B4T head (328M
        values) never exists as one float32 array. ``progress(done, total)`` after each
        chunk. uint8 [head_bytes(vocab, hidden)]."""
        from tellme.spec.lm_head import HEAD_ROWS, head_bytes, pack_head, quantize_head

        vocab, d = self.config.vocab_size, self.config.hidden_size
        out = np.empty(head_bytes(vocab, d), dtype=np.uint8)
        step = max(HEAD_ROWS, chunk_rows // HEAD_ROWS * HEAD_ROWS)
        off = 0
        for lo in range(0, vocab, step):
            hi = min(vocab, lo + step)
            blob = pack_head(*quantize_head(self.rows(self.head_name, np.arange(lo, hi))))
            out[off:off + blob.size] = blob
            off += blob.size
            if progress is not None:
                progress(hi, vocab)
        assert off == out.size
        return out

    def _linear_section(self, layer: int, name: str) -> Section:
        if name not in LINEAR_NAMES:
            raise ValueError(f"unknown linear {name!r}; known: {', '.join(LINEAR_NAMES)}")
        if not 0 <= layer < self.config.num_layers:
            raise ValueError(f"layer {layer} out of range 0..{self.config.num_layers - 1}")
        return self.info(f"layers.{layer}.{name}.codes")

    def linear_packed(self, layer: int, name: str) -> np.ndarray:
        """The raw packed code bytes of one linear: exactly what the weight DMA streams."""
        return self.section(self._linear_section(layer, name).name)

    def linear_codes(self, layer: int, name: str) -> np.ndarray:
        """The 5-bit codes of one linear, uint8 [NB, KB, Q, T] in buffer order."""
        s = self._linear_section(layer, name)
        count = int(np.prod(s.shape, dtype=np.int64))
        try:
            return unpack_codes(self.section(s.name), count).reshape(s.shape)
        except ValueError as e:
            raise self._err(str(e), s.name) from None

    def linear_weights(self, layer: int, name: str) -> np.ndarray:
        """Ternary weights int8 [out, in] of one linear (codes decoded, padding dropped)."""
        s = self._linear_section(layer, name)
        try:
            return unlayout_codes(self.linear_codes(layer, name), s.tlmm["n"], s.tlmm["k"])
        except ValueError as e:
            raise self._err(str(e), s.name) from None

    def linear_scale(self, layer: int, name: str) -> np.float32:
        """The per-tensor multiplicative weight scale (mean|W|) of one linear."""
        return np.float32(self.section("scales")[layer, LINEAR_NAMES.index(name)])

    def verify(self, names=None) -> None:
        """Check the crc32 of the named sections (all by default) and, for a full check, that
        the alignment padding after every section is zero; WeightFileError on mismatch."""
        for name in (self.sections if names is None else names):
            s = self.info(name)
            got = _crc_hex(_crc32(self._mm[s.offset:s.offset + s.nbytes]))
            if got != s.crc32:
                raise self._err(f"checksum mismatch (crc32 {got}, header says {s.crc32})", name)
        if names is None:
            for s in self.sections.values():
                pad = self._mm[s.offset + s.nbytes:_align(s.offset + s.nbytes)]
                if np.any(pad):
                    raise self._err("alignment padding after the section is not zero", s.name)

    def to_model(self) -> TernaryModel:
        """Decode the whole file into a :class:`TernaryModel` (arrays are copies)."""
        c = self.config
        layers = []
        for i in range(c.num_layers):
            linears = {n: TernaryLinear(self.linear_weights(i, n), self.linear_scale(i, n))
                       for n in LINEAR_NAMES}
            norms = {n: self.tensor(f"layers.{i}.{n}") for n in NORM_NAMES}
            layers.append(Layer(linears=linears, norms=norms))
        model = TernaryModel(
            config=c, embed=self.tensor("embed"), layers=layers,
            final_norm=self.tensor("final_norm"),
            lm_head=self.tensor("lm_head") if "lm_head" in self.sections else None,
            rope_pairing=self.rope_pairing, meta=dict(self.meta))
        try:
            return model.validate()
        except ValueError as e:
            raise self._err(f"decoded model is inconsistent: {e}") from None


def _expected_sections(cfg: ModelConfig, tiling: Tiling) -> dict[str, tuple]:
    """name -> expected shape (code sections: [NB, KB, Q, T])."""
    exp = {"scales": (cfg.num_layers, len(LINEAR_NAMES)), "final_norm": (cfg.hidden_size,),
           "embed": (cfg.vocab_size, cfg.hidden_size)}
    norm_width = {"input_norm": cfg.hidden_size, "attn_sub_norm": cfg.q_size,
                  "post_norm": cfg.hidden_size, "ffn_sub_norm": cfg.intermediate_size}
    shapes = cfg.linear_shapes()
    for i in range(cfg.num_layers):
        for n in NORM_NAMES:
            exp[f"layers.{i}.{n}"] = (norm_width[n],)
        for n in LINEAR_NAMES:
            out, k = shapes[n]
            exp[f"layers.{i}.{n}.codes"] = (-(-out // tiling.q), -(-k // (tiling.t * G)),
                                            tiling.q, tiling.t)
    if not cfg.tie_word_embeddings:
        exp["lm_head"] = (cfg.vocab_size, cfg.hidden_size)
    return exp


def read_weight_file(path, verify: bool = True) -> WeightFile:
    """Open and check a weight file. ``verify`` also checks every section's crc32 (reads the
    whole file once); the header is always checked. Raises :class:`WeightFileError`."""
    path = Path(path)

    def err(msg, section=None):
        return WeightFileError(f"{path}" + (f", section {section!r}" if section else "")
                               + f": {msg}")

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(PREAMBLE.size)
            if len(raw) < len(MAGIC) or raw[:len(MAGIC)] != MAGIC:
                raise err(f"not a tellme weight file (magic {raw[:len(MAGIC)]!r}, "
                          f"expected {MAGIC!r})")
            if len(raw) < PREAMBLE.size:
                raise err(f"truncated: {size} bytes, the preamble alone is {PREAMBLE.size}")
            pre = unpack_preamble(raw)
            if pre["version"] != FORMAT_VERSION:
                raise err(f"format version {pre['version']} is not supported (this reader "
                          f"reads version {FORMAT_VERSION}; convert the checkpoint again)")
            if pre["file_nbytes"] != size:
                raise err(f"truncated or extended: {size} bytes on disk, the preamble says "
                          f"{pre['file_nbytes']}")
            hdr_end = pre["header_offset"] + pre["header_nbytes"]
            if hdr_end > size or pre["data_offset"] > size or hdr_end > pre["data_offset"]:
                raise err("header extends past the data offset or the end of the file", "header")
            f.seek(pre["header_offset"])
            hdr_raw = f.read(pre["header_nbytes"])
    except OSError as e:
        raise WeightFileError(f"{path}: cannot read: {e.strerror or e}") from None
    if zlib.crc32(hdr_raw) != pre["header_crc32"]:
        raise err("checksum mismatch", "header")
    try:
        header = unpack_header(hdr_raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise err(f"header is not valid JSON: {e}", "header") from None
    if header.get("version") != FORMAT_VERSION:
        raise err(f"header version {header.get('version')!r} != preamble version "
                  f"{FORMAT_VERSION}", "header")
    enc = header.get("encoding", {})
    for key in ("g", "code_bits", "n_codes", "patterns", "layout", "bit_order", "vector_order"):
        if enc.get(key) != ENCODING[key]:
            raise err(f"TLMM encoding field {key!r} is {enc.get(key)!r}, this reader implements "
                      f"{ENCODING[key]!r}", "header")

    sections: dict[str, Section] = {}
    for row in header.get("sections", []):
        try:
            s = Section(name=row["name"], offset=int(row["offset"]), nbytes=int(row["nbytes"]),
                        dtype=row["dtype"], shape=tuple(row["shape"]), crc32=row["crc32"],
                        tlmm=row.get("tlmm"))
        except (KeyError, TypeError, ValueError) as e:
            raise err(f"malformed section table row {row!r}: {e}", "header") from None
        if s.dtype not in _NP_STORAGE:
            raise err(f"unknown dtype {s.dtype!r}", s.name)
        want = (code_nbytes(s.shape) if s.dtype == CODE_DTYPE
                else math.prod(s.shape) * _NP_STORAGE[s.dtype].itemsize)
        if s.nbytes != want:
            raise err(f"{s.nbytes} bytes do not match dtype {s.dtype} shape {list(s.shape)}",
                      s.name)
        if s.offset % ALIGN or s.offset < pre["data_offset"]:
            raise err(f"offset {s.offset} is not a {ALIGN}-byte aligned data offset", s.name)
        if s.offset + s.nbytes > size:
            raise err(f"truncated: section ends at byte {s.offset + s.nbytes}, file has {size}",
                      s.name)
        sections[s.name] = s

    mm = np.memmap(path, dtype=np.uint8, mode="r")
    wf = WeightFile(path, header, sections, mm)
    expected = _expected_sections(wf.config, wf.tiling)
    for name, shape in expected.items():
        if name not in sections:
            raise err("missing", name)
        if sections[name].shape != shape:
            raise err(f"shape {list(sections[name].shape)} != expected {list(shape)} for the "
                      f"header's config and tiling", name)
    for name in sections:
        if name not in expected:
            raise err("unexpected section (not part of format version 1)", name)
    for i in range(wf.config.num_layers):
        for n in LINEAR_NAMES:
            s = sections[f"layers.{i}.{n}.codes"]
            want = wf.config.linear_shapes()[n]
            if not s.tlmm or (s.tlmm.get("n"), s.tlmm.get("k")) != want:
                raise err(f"tlmm dims {s.tlmm} != {{'n': {want[0]}, 'k': {want[1]}}}", s.name)
    if sections["scales"].dtype != "float32":
        raise err("must be float32", "scales")
    if verify:
        wf.verify()
    return wf
