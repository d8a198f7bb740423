"""Variants of hw numerics with chosen streams widened to FP32 (accuracy study, not contract).

The study starts from the FP16-stream contract (:mod:`tellme.sim.golden.hw_numerics` with
``fmt=FP16``; the contract's stream format is now FP24, chosen with this study; ``tellme study
accuracy --variants`` scores them). This module runs the same
datapath (int8 re-quantisation, exact TLMM, exact integer attention reductions, exp2 table,
LM head at LSB 2**-16) with any subset of the FP16 streams stored as FP32 instead, to measure
what each widening buys in top-1 agreement with float numerics (docs/numerics.md §7.1).

Sites (each ``fp16`` or ``fp32``):

* ``residual``: embedding, residual adds, RMSNorm inputs x;
* ``norm``:     RMSNorm outputs h (into the quantiser and the LM head);
* ``qkv``:      q/k/v linear outputs, RoPE outputs, the KV cache;
* ``attn``:     attention output (S.V normalised);
* ``o``, ``down``: o_proj / down_proj outputs (the branches added to the residual);
* ``gate_up``:  gate/up linear outputs;
* ``ffn``:      the gated product;

and two parameter tables (not streams; the contract rounds both to FP16):

* ``normw``:    RMSNorm weights g (``fp32``: the checkpoint's float32 values, unrounded);
* ``rope``:     the host's cos/sin table (``fp32``: HF's own float32 table, fp32 angles).

Each block dispatches on its input dtypes: if its inputs are FP16 and its output site is FP16
it calls the hw-numerics function itself, so the all-FP16 variant *is* hw numerics, bit for
bit (tests/test_golden_variants.py checks it). A widened block computes in float64 from the
exact input values and rounds once to the output format (products of FP32 and FP16 values are
exact in float64; the FP32 rms/scale scalars are float64-rounded, not the contract's exact
rationals, which moves them by at most an ulp at ties: irrelevant for a study).
"""

from __future__ import annotations

import re

import numpy as np

from tellme.quant.model import TernaryModel
from tellme.sim.golden import hw_numerics as hw
from tellme.sim.golden.model import GoldenModel
from tellme.sim.golden.tlmm import ternary_matmul
from tellme.spec.numerics import FP16, StreamFormat, int_to_fp32, round_ratio_fp32, silu_fx, to_fp16

STREAMS = ("residual", "norm", "qkv", "attn", "o", "gate_up", "ffn", "down")
SITES = STREAMS + ("normw", "rope")
FORMATS = ("fp16", "fp32", "e5mN (N = 10..23)")
_EMN = re.compile(r"e5m(\d+)$")
PRESETS = {
    "fp16": {},
    "kv32": {"qkv": "fp32"},
    "res32": {"residual": "fp32"},
    "res32+branch32": {"residual": "fp32", "o": "fp32", "down": "fp32"},
    "res32+norm32": {"residual": "fp32", "norm": "fp32"},
    "res32+kv32": {"residual": "fp32", "qkv": "fp32"},
    "res32+attn32": {"residual": "fp32", "attn": "fp32"},
    "res32+ffn32": {"residual": "fp32", "gate_up": "fp32", "ffn": "fp32"},
    "all-but-res32": {s: "fp32" for s in STREAMS if s != "residual"},
    "streams32": dict.fromkeys(STREAMS, "fp32"),
    "normw32": {"normw": "fp32"},
    "rope32": {"rope": "fp32"},
    "normw32+rope32": {"normw": "fp32", "rope": "fp32"},
    "fp32": dict.fromkeys(SITES, "fp32"),
}
_LINEAR_SITE = {("q_proj", "k_proj", "v_proj"): "qkv", ("o_proj",): "o",
                ("gate_proj", "up_proj"): "gate_up", ("down_proj",): "down"}
_EPS32 = float(hw.QUANT_EPS)


def parse_variant(spec: str) -> dict[str, str]:
    """A preset name (:data:`PRESETS`) or ``site=fmt[,site=fmt...]``, optionally after a preset
    joined by ``+`` terms that are themselves site assignments (``res32,norm=fp32``).
    Returns a full {site: format} map (unnamed sites FP16)."""
    fmt = dict.fromkeys(SITES, "fp16")
    for term in spec.split(","):
        term = term.strip()
        if not term:
            continue
        if term in PRESETS:
            fmt.update(PRESETS[term])
            continue
        if _valid_emn(term):                       # every site in one format
            fmt.update(dict.fromkeys(SITES, term))
            continue
        if "=" not in term:
            raise ValueError(f"variant {spec!r}: {term!r} is neither a preset "
                             f"({', '.join(PRESETS)}) nor site=fmt")
        site, f = (t.strip() for t in term.split("=", 1))
        if site not in SITES:
            raise ValueError(f"variant {spec!r}: unknown site {site!r} (sites: {', '.join(SITES)})")
        if f not in ("fp16", "fp32") and not _valid_emn(f):
            raise ValueError(f"variant {spec!r}: site {site} format must be one of {FORMATS}, "
                             f"got {f!r}")
        fmt[site] = f
    return fmt


def _valid_emn(f: str) -> bool:
    m = _EMN.match(f)
    return bool(m) and 10 <= int(m.group(1)) <= 23


def _round(x64, fmt: str) -> np.ndarray:
    x64 = np.asarray(x64, dtype=np.float64)
    if fmt == "fp16":
        return to_fp16(x64)
    if fmt == "fp32":
        return x64.astype(np.float32)
    # e5mN: StreamFormat(N), held as float32 even for N = 10 (the float64 variant path, not hw)
    return StreamFormat(int(_EMN.match(fmt).group(1))).round(x64).astype(np.float32)


def _is16(*xs) -> bool:
    return all(np.asarray(x).dtype == np.float16 for x in xs)


class VariantOps:
    """Block functions with the hw-numerics signatures; formats per site from ``fmt``."""

    def __init__(self, fmt: dict[str, str]):
        self.fmt = fmt

    def rope_table(self, positions, head_dim, theta):
        if self.fmt["rope"] == "fp16":
            return hw.rope_table(positions, head_dim, theta, fmt=FP16)
        from tellme.sim.golden import hf

        cos, sin = hf.rope_table(positions, head_dim, theta)
        if self.fmt["rope"] == "fp32":
            return cos, sin
        return _round(cos, self.fmt["rope"]), _round(sin, self.fmt["rope"])

    def embed(self, table, ids):
        if self.fmt["residual"] == "fp16":
            return hw.embed(table, ids, fmt=FP16)
        return _round(np.asarray(table)[np.asarray(ids)], self.fmt["residual"])

    def rmsnorm_absmax(self, x, g, eps):
        out = self.fmt["norm"]
        if _is16(x) and out == "fp16" and self.fmt["normw"] == "fp16":
            return hw.rmsnorm_absmax(x, g, eps, fmt=FP16)
        gw = (to_fp16(g) if self.fmt["normw"] == "fp16" else _round(g, self.fmt["normw"]))
        x64 = np.asarray(x).astype(np.float64)
        if _is16(x):
            r = hw.rms_scale(x, eps, fmt=FP16).astype(np.float64)
        else:
            ms = (x64 * x64).mean(axis=-1) + float(np.float32(eps))
            r = (1.0 / np.sqrt(ms)).astype(np.float32).astype(np.float64)
        h = _round(x64 * gw.astype(np.float64) * r[..., None], out)
        return h, np.abs(h).max(axis=-1)

    def quantize(self, h, amax):
        if _is16(h):
            return hw.quantize(h, amax, fmt=FP16)
        m = np.maximum(np.asarray(amax, np.float64), _EPS32)
        s = (127.0 / m).astype(np.float32)
        q = np.rint(np.asarray(h, np.float64) * s[..., None].astype(np.float64))
        return np.clip(q, -128, 127).astype(np.int8), s

    def dequantize(self, acc, amax, weight_scale, out: str = "fp16"):
        if _is16(amax):
            if out == "fp16":
                return hw.dequantize(acc, amax, weight_scale, fmt=FP16)
            s = hw.dequant_scale(amax, weight_scale, fmt=FP16).astype(np.float64)
        else:
            m = np.maximum(np.asarray(amax, np.float64), _EPS32)
            s = (m * float(np.float32(weight_scale)) / 127).astype(np.float32).astype(np.float64)
        return _round(np.asarray(acc, np.float64) * s[..., None], out)

    def rope(self, x, cos16, sin16, pairing="half"):
        out = self.fmt["qkv"]
        if _is16(x, cos16) and out == "fp16":
            return hw.rope(x, cos16, sin16, pairing, fmt=FP16)
        c = cos16.astype(np.float64)[:, None, :]
        s = sin16.astype(np.float64)[:, None, :]
        x64 = np.asarray(x, np.float64)
        hd = x64.shape[-1]
        if pairing == "half":
            a, b = x64[..., : hd // 2], x64[..., hd // 2:]
        else:
            a, b = x64[..., 0::2], x64[..., 1::2]
        res = np.empty(x64.shape, np.float16 if out == "fp16" else np.float32)
        ra, rb = _round(a * c - b * s, out), _round(b * c + a * s, out)
        if pairing == "half":
            res[..., : hd // 2], res[..., hd // 2:] = ra, rb
        else:
            res[..., 0::2], res[..., 1::2] = ra, rb
        return res

    # attention: the hw integer pipeline, inputs of either width, output rounded to fmt[attn]
    def _decode(self, q, k, v, c):
        heads, hd = q.shape
        kvh = k.shape[1]
        qg = np.asarray(q, np.float64).reshape(kvh, heads // kvh, hd)
        kt = np.asarray(k, np.float64).transpose(1, 0, 2)[:, None, :, :]
        prod = qg[:, :, None, :] * kt                    # exact: <= 24 x 24 bits
        sc = np.rint(np.ldexp(prod, hw.QK_FRAC)).astype(np.int64).sum(-1, dtype=np.int64)
        sc = np.clip(sc, -hw.SCORE_SAT, hw.SCORE_SAT)
        p = hw.softmax_weights(hw.log2_scores(sc, c))                       # [kvh, grp, n]
        vt = np.asarray(v, np.float64).transpose(1, 0, 2)[:, None, :, :]     # [kvh, 1, n, hd]
        terms = np.rint(p[..., :, None].astype(np.float64) * vt * 2.0).astype(np.int64)
        acc = terms.sum(axis=-2, dtype=np.int64)
        L = p.sum(axis=-1, dtype=np.int64).reshape(-1)
        rl = np.array([round_ratio_fp32(1, int(x)) for x in L], np.float64).reshape(p.shape[:-1])
        o = _round(int_to_fp32(acc) * rl[..., None] * 0.5, self.fmt["attn"])
        return o.reshape(heads, hd)

    def attention_decode(self, q, k_cache, v_cache, c=None):
        c = hw.score_scale(q.shape[-1]) if c is None else c
        if _is16(q, k_cache, v_cache) and self.fmt["attn"] == "fp16":
            return hw.attention_decode(q, k_cache, v_cache, c, fmt=FP16)
        return self._decode(q, k_cache, v_cache, c)

    def attention_prefill(self, q, k_cache, v_cache, start, c=None):
        c = hw.score_scale(q.shape[-1]) if c is None else c
        if _is16(q, k_cache, v_cache) and self.fmt["attn"] == "fp16":
            return hw.attention_prefill(q, k_cache, v_cache, start, c, fmt=FP16)
        return np.stack([self._decode(q[i], k_cache[:start + i + 1], v_cache[:start + i + 1], c)
                         for i in range(len(q))])

    def residual_add(self, x, y):
        if _is16(x, y) and self.fmt["residual"] == "fp16":
            return hw.residual_add(x, y, fmt=FP16)
        return _round(np.asarray(x, np.float64) + np.asarray(y, np.float64),
                      self.fmt["residual"])

    def gated_act(self, g, u, activation):
        out = self.fmt["ffn"]
        if _is16(g, u) and out == "fp16":
            return hw.gated_act(g, u, activation, fmt=FP16)
        g64, u64 = np.asarray(g, np.float64), np.asarray(u, np.float64)
        if activation == "relu2":
            r = np.where(g64 > 0, g64, 0.0)
            return _round(r * r * u64, out)
        if activation == "silu":        # the PWL unit takes FP16: an FP32 gate is rounded first
            return _round(silu_fx(to_fp16(g64)).astype(np.float64) * 2.0 ** -22 * u64, out)
        raise ValueError(f"activation must be 'silu' or 'relu2', got {activation!r}")

    def lm_head(self, h, w, chunk: int = 1 << 22):
        if _is16(h):
            return hw.lm_head(h, w, fmt=FP16)
        lead = h.shape[:-1]
        h64 = np.asarray(h, np.float64).reshape(-1, h.shape[-1])
        vocab, d = w.shape
        out = np.empty((h64.shape[0], vocab), dtype=np.float32)
        rows = max(1, chunk // max(1, h64.shape[0] * d))
        for v0 in range(0, vocab, rows):
            wb = to_fp16(w[v0:v0 + rows]).astype(np.float64)
            prod = h64[:, None, :] * wb[None, :, :]         # exact: 24 x 11 bits
            acc = np.rint(np.ldexp(prod, hw.LM_FRAC)).astype(np.int64).sum(-1, dtype=np.int64)
            out[:, v0:v0 + rows] = np.ldexp(int_to_fp32(acc), -hw.LM_FRAC)
        return out.reshape(*lead, vocab)


class VariantModel(GoldenModel):
    """hw numerics with the per-site stream formats ``fmt`` (see :func:`parse_variant`)."""

    def __init__(self, model: TernaryModel, fmt: dict[str, str] | str = "fp16"):
        super().__init__(model, "hw", fmt=FP16, attention="fp")
        self.sites = parse_variant(fmt) if isinstance(fmt, str) else {**parse_variant(""), **fmt}
        self.ops = VariantOps(self.sites)

    @property
    def kv_format(self) -> str:
        return "fp16" if self.sites["qkv"] == "fp16" else "fp32"

    def _linears(self, layer, names, h, amax):
        ops, lin = self.ops, self.model.layers[layer].linears
        q, _ = ops.quantize(h, amax)
        acc = ternary_matmul(q, self._w(layer, names))
        out, o = [], 0
        site = self.sites[_LINEAR_SITE[tuple(names)]]
        for n in names:
            width = lin[n].w.shape[0]
            out.append(ops.dequantize(acc[:, o:o + width], amax, lin[n].scale, site))
            o += width
        return out


def variant_forward(model: TernaryModel, tokens, fmt="fp16") -> np.ndarray:
    """Logits float32 [len(tokens), vocab] of a variant on a fresh cache."""
    gm = VariantModel(model, fmt)
    return gm.forward(tokens, gm.new_cache(max(int(np.asarray(tokens).size), 1)))


__all__ = ["FORMATS", "PRESETS", "SITES", "VariantModel", "VariantOps", "parse_variant",
           "variant_forward"]
