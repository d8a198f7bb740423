"""Golden BitNet b1.58 decoder: the whole forward pass in ``float`` or ``hw`` numerics.

>>> gm = GoldenModel(model, numerics="hw")
>>> cache = gm.new_cache(max_len=256)
>>> logits = gm.forward(prompt_ids, cache)     # prefill; float32 [len(prompt), vocab]
>>> logits = gm.forward([next_id], cache)      # decode one token

``forward(model, tokens, numerics)`` runs a full sequence on a fresh cache.

Data flow per layer (reference/bitnet.md §1.5; block functions in :mod:`.hw` / :mod:`.hf`)::

    h = rmsnorm_absmax(x, input_norm); q,k,v = linear(h); q,k = rope(q,k)
    a = attention(q, K, V); a = rmsnorm_absmax(a, attn_sub_norm); x = residual_add(x, linear_o(a))
    h = rmsnorm_absmax(x, post_norm); f = gated_act(linear_gate(h), linear_up(h))
    f = rmsnorm_absmax(f, ffn_sub_norm); x = residual_add(x, linear_down(f))
    logits = lm_head(rmsnorm_absmax(x, final_norm))

Prefill/decode consistency: in ``hw`` mode every block is row-wise or an exact integer
reduction, so prefill of N tokens then decode gives bit-identical logits to one forward pass.
In ``float`` mode the float32 BLAS calls (attention, LM head) round differently for different
batch shapes; the results agree to float32 rounding (tests/test_golden_model.py states the
tolerance).
"""

from __future__ import annotations

import numpy as np

from tellme.quant.model import TernaryModel
from tellme.spec.config import LINEAR_NAMES
from tellme.spec.numerics import StreamFormat, check_float_environment, stream_format

from . import hf, hw_numerics as hw
from .tlmm import ternary_matmul

NUMERICS = ("float", "hw")
# hw LM head: "host", FP16 weights (hw_numerics.lm_head: what the host applies to hidden
# rows); "pl", the PL unit's int8 head with its top PL_TOP_K logits recomputed by the host's
# (sim/golden/lm_head_int.py refine_top_k: what the driver returns from a device with the
# unit); "pl-raw", the unit's own logits (lm_head_int8: what the device writes)
HEADS = ("host", "pl", "pl-raw")
ATTENTION = ("int", "fp")   # hw attention: the integer contract (docs/numerics.md §4.1, the
#                             default) or the FP form it replaced (§4; the FP engine's twin)
KV_FORMATS = ("fp16", "fp24", "fp32")
WEIGHT_CACHE_BYTES = 512 << 20     # float32 copies of ternary weights kept up to this size


class KVCache:
    """Per-layer K (post-RoPE) and V: arrays [max_len, kv_heads, head_dim].

    hw numerics stores the stream format (the hardware's DDR format: FP16 as float16, FP24 as
    float32 holding FP24 values); float numerics stores float32.
    ``length`` is the number of positions written so far. An int8 KV format would plug in at
    :meth:`store` / :meth:`keys` / :meth:`values` (quantise on store, dequantise on read).
    """

    def __init__(self, num_layers: int, kv_heads: int, head_dim: int, max_len: int,
                 kv_format: str):
        if kv_format not in KV_FORMATS:
            raise ValueError(f"KV format must be one of {KV_FORMATS}, got {kv_format!r}")
        dt = np.float16 if kv_format == "fp16" else np.float32     # fp24 values fit float32
        self.kv_format = kv_format
        self.max_len = max_len
        self.length = 0
        self.k = [np.zeros((max_len, kv_heads, head_dim), dt) for _ in range(num_layers)]
        self.v = [np.zeros((max_len, kv_heads, head_dim), dt) for _ in range(num_layers)]

    def store(self, layer: int, start: int, k: np.ndarray, v: np.ndarray) -> None:
        self.k[layer][start:start + len(k)] = k
        self.v[layer][start:start + len(v)] = v

    def keys(self, layer: int, n: int) -> np.ndarray:
        return self.k[layer][:n]

    def values(self, layer: int, n: int) -> np.ndarray:
        return self.v[layer][:n]


class GoldenModel:
    """A :class:`TernaryModel` run in ``float`` (fp32, HF semantics) or ``hw`` numerics."""

    def __init__(self, model: TernaryModel, numerics: str = "float",
                 weight_cache_bytes: int = WEIGHT_CACHE_BYTES, fmt: StreamFormat | None = None,
                 attention: str | None = None, head: str = "host"):
        if numerics not in NUMERICS:
            raise ValueError(f"numerics must be one of {NUMERICS}, got {numerics!r}")
        if not isinstance(model, TernaryModel):
            raise TypeError(f"expected a TernaryModel, got {type(model).__name__}")
        model.validate(check_values=False)
        if numerics == "hw":
            check_float_environment()
        self.model = model
        self.config = model.config
        self.numerics = numerics
        # hw: the block functions bound to one stream format (default: the contract's)
        self.fmt = stream_format(fmt) if numerics == "hw" else None
        self.ops = hw.bound(self.fmt) if numerics == "hw" else hf
        # hw attention: "int" (the contract, over an int8 KV cache: sim/golden/attention_int.py)
        # or "fp" (§4, FP24 KV); float numerics have HF attention only
        if attention is None:
            attention = "int" if numerics == "hw" else "fp"
        if attention not in ATTENTION:
            raise ValueError(f"attention must be one of {ATTENTION}, got {attention!r}")
        self.attention = attention
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if head != "host" and numerics != "hw":
            raise ValueError(f"head={head!r} needs numerics='hw'")
        self.head = head
        self._pl_head = None                 # (int8 codes, row scales), made on first use
        if attention == "int":
            if numerics != "hw":
                raise ValueError("attention='int' needs numerics='hw'")
            from .attention_int import use_int_attention

            use_int_attention(self)
        self._weights: dict[tuple[int, str], np.ndarray] = {}
        self._weight_budget = weight_cache_bytes
        self._score_c = hw.score_scale(self.config.head_dim)
        self.probe: dict[str, float] | None = None   # set to {} to record max|value| per site
        self.trace: dict[str, np.ndarray] | None = None  # set to {} to keep every intermediate

    def _rec(self, site: str, v: np.ndarray) -> None:
        if self.probe is not None:
            m = float(np.abs(np.asarray(v, dtype=np.float32)).max())
            self.probe[site] = max(self.probe.get(site, 0.0), m)

    def _t(self, name: str, v) -> None:
        """Keep a copy of an intermediate (layer-by-layer diffs against RTL dumps). Keys are
        ``L{layer}.{site}`` (sites: h_in, amax_in, q_in8, q, k, v, q_rope, k_rope, attn, a_sub,
        amax_a, o, x_attn, h_post, amax_post, gate, up, ffn, f_sub, amax_f, down, x_out) and
        ``embed``, ``h_final``, ``logits``; each holds the rows of the last forward call."""
        if self.trace is not None:
            self.trace[name] = np.array(v, copy=True)

    # -- weights ---------------------------------------------------------------------------

    def _w(self, layer: int, names: tuple[str, ...]) -> np.ndarray:
        """Ternary weights of one or more linears sharing an input, stacked along the output
        axis, as float32 (exact -1/0/+1) for the BLAS path of ternary_matmul; cached while the
        total stays under the budget, otherwise converted per use (real-size models never hold
        a float copy of all weights)."""
        key = (layer, names)
        w = self._weights.get(key)
        if w is None:
            lin = self.model.layers[layer].linears
            w = np.concatenate([lin[n].w for n in names]).astype(np.float32)
            used = sum(a.nbytes for a in self._weights.values())
            if used + w.nbytes <= self._weight_budget:
                self._weights[key] = w
        return w

    def _linears(self, layer: int, names: tuple[str, ...], h: np.ndarray,
                 amax: np.ndarray) -> list[np.ndarray]:
        """quantize once -> TLMM of every linear in ``names`` -> dequantize each with its own
        weight_scale (the hardware quantises a normalised row once and streams it to q/k/v, or
        to gate/up)."""
        ops, lin = self.ops, self.model.layers[layer].linears
        q, _ = ops.quantize(h, amax)
        acc = ternary_matmul(q, self._w(layer, names))
        out, o = [], 0
        for n in names:
            width = lin[n].w.shape[0]
            out.append(ops.dequantize(acc[:, o:o + width], amax, lin[n].scale))
            o += width
        return out

    # -- cache -----------------------------------------------------------------------------

    def new_cache(self, max_len: int | None = None) -> KVCache:
        """An empty KV cache for up to ``max_len`` positions (default: config.max_context)."""
        c = self.config
        if max_len is None:
            max_len = c.max_context
        if not isinstance(max_len, (int, np.integer)) or max_len <= 0:
            raise ValueError(f"max_len must be a positive integer, got {max_len!r}")
        if max_len > c.max_context:
            raise ValueError(f"cache of {max_len} positions exceeds the model's max_context "
                             f"{c.max_context}")
        return KVCache(c.num_layers, c.num_kv_heads, c.head_dim, int(max_len), self.kv_format)

    @property
    def kv_format(self) -> str:
        """The KV cache format of this model's numerics (hw: the stream format's name)."""
        return self.fmt.name if self.numerics == "hw" else "fp32"

    # -- forward ---------------------------------------------------------------------------

    def _check_tokens(self, tokens, cache: KVCache) -> np.ndarray:
        ids = np.asarray(tokens)
        if ids.ndim != 1:
            raise ValueError(f"tokens must be a 1-D array of ids, got shape {ids.shape}")
        if ids.size == 0:
            raise ValueError("tokens is empty: need at least one token id")
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"token ids must be integers, got dtype {ids.dtype}")
        v = self.config.vocab_size
        bad = (ids < 0) | (ids >= v)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"token id {int(ids[i])} at index {i} is out of range for vocab "
                             f"size {v} (valid ids: 0..{v - 1})")
        total = cache.length + ids.size
        if total > cache.max_len or total > self.config.max_context:
            raise ValueError(
                f"{ids.size} tokens after {cache.length} cached positions need {total} "
                f"positions, but the cache holds {cache.max_len} and the model's max_context "
                f"is {self.config.max_context}")
        return ids.astype(np.int64)

    def forward(self, tokens, cache: KVCache, last_only: bool = False) -> np.ndarray:
        """Run ``tokens`` at positions cache.length.. and append their K/V to ``cache``.

        Returns float32 logits [len(tokens), vocab], or [1, vocab] for the last token only when
        ``last_only`` (a prompt prefill then skips the LM head of every other position).
        """
        if not isinstance(cache, KVCache):
            raise TypeError(f"cache must come from new_cache(), got {type(cache).__name__}")
        want = self.kv_format
        if cache.kv_format != want:
            raise ValueError(f"cache format {cache.kv_format} does not match {self.numerics} "
                             f"numerics ({want})")
        ids = self._check_tokens(tokens, cache)
        ops, c, m = self.ops, self.config, self.model
        start, n = cache.length, ids.size
        hd, heads, kvh = c.head_dim, c.num_heads, c.num_kv_heads
        eps = c.rms_norm_eps
        cos, sin = ops.rope_table(np.arange(start, start + n), hd, c.rope_theta)
        pairing = m.rope_pairing

        x = ops.embed(m.embed, ids)                                       # [n, d]
        t = self._t
        t("embed", x)
        for li, layer in enumerate(m.layers):
            p = f"L{li}."
            h, amax = ops.rmsnorm_absmax(x, layer.norms["input_norm"], eps)
            t(p + "h_in", h)
            t(p + "amax_in", amax)
            if self.trace is not None:
                t(p + "q_in8", ops.quantize(h, amax)[0])
            q, k, v = self._linears(li, ("q_proj", "k_proj", "v_proj"), h, amax)
            self._rec("qkv", np.concatenate([q, k, v], axis=-1))
            t(p + "q", q)
            t(p + "k", k)
            t(p + "v", v)
            q = ops.rope(q.reshape(n, heads, hd), cos, sin, pairing)
            k = ops.rope(k.reshape(n, kvh, hd), cos, sin, pairing)
            t(p + "q_rope", q)
            t(p + "k_rope", k)
            cache.store(li, start, k, v.reshape(n, kvh, hd))
            kc, vc = cache.keys(li, start + n), cache.values(li, start + n)
            if n == 1:
                a = ops.attention_decode(q[0], kc, vc, self._score_c)[None]
            else:
                a = ops.attention_prefill(q, kc, vc, start, self._score_c)
            self._rec("attn_out", a)
            t(p + "attn", a)
            a, amax = ops.rmsnorm_absmax(a.reshape(n, heads * hd), layer.norms["attn_sub_norm"],
                                         eps)
            t(p + "a_sub", a)
            t(p + "amax_a", amax)
            o = self._linears(li, ("o_proj",), a, amax)[0]
            t(p + "o", o)
            x = ops.residual_add(x, o)
            t(p + "x_attn", x)
            h, amax = ops.rmsnorm_absmax(x, layer.norms["post_norm"], eps)
            t(p + "h_post", h)
            t(p + "amax_post", amax)
            g, u = self._linears(li, ("gate_proj", "up_proj"), h, amax)
            t(p + "gate", g)
            t(p + "up", u)
            f = ops.gated_act(g, u, c.activation)
            self._rec("gate_up", np.concatenate([g, u], axis=-1))
            self._rec("ffn_product", f)
            t(p + "ffn", f)
            f, amax = ops.rmsnorm_absmax(f, layer.norms["ffn_sub_norm"], eps)
            t(p + "f_sub", f)
            t(p + "amax_f", amax)
            dn = self._linears(li, ("down_proj",), f, amax)[0]
            t(p + "down", dn)
            x = ops.residual_add(x, dn)
            t(p + "x_out", x)
            self._rec("residual", x)
        if last_only:
            x = x[-1:]
        h, amax = ops.rmsnorm_absmax(x, m.final_norm, eps)
        t("h_final", h)
        if self.head != "host":
            from tellme.spec.lm_head import quantize_head

            from .lm_head_int import lm_head_int8, refine_top_k

            if self._pl_head is None:
                self._pl_head = quantize_head(m.head)
            q, _ = ops.quantize(h, amax)
            logits = lm_head_int8(q, amax, *self._pl_head, fmt=self.fmt)
            if self.head == "pl":
                logits = refine_top_k(logits, h, lambda idx: m.head[idx], fmt=self.fmt)
        else:
            logits = ops.lm_head(h, m.head)
        t("logits", logits)
        self._rec("logits", logits)
        cache.length = start + n
        return np.asarray(logits, dtype=np.float32)

    __call__ = forward


def forward(model: TernaryModel, tokens, numerics: str = "float",
            attention: str | None = None, head: str = "host") -> np.ndarray:
    """Logits float32 [len(tokens), vocab] for a full sequence on a fresh cache."""
    gm = GoldenModel(model, numerics, attention=attention, head=head)
    n = int(np.asarray(tokens).size)
    mc = model.config.max_context
    if n > mc:
        raise ValueError(f"{n} tokens exceed the model's max_context {mc}")
    return gm.forward(tokens, gm.new_cache(max(n, 1)))


__all__ = ["GoldenModel", "KVCache", "LINEAR_NAMES", "forward"]
