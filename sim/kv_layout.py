"""DDR layout of the KV cache and its traffic model (docs/hw/attention.md).

Layout (one contiguous buffer, FP16 or int8 rows, little-endian)::

    for layer in range(num_layers):
        for kind in ("K", "V"):
            for kv_head in range(num_kv_heads):
                rows[max_ctx][head_dim]        # row p = position p, FP16 (2 B) or int8 (1 B)
    # int8 only, after all rows: one FP16 scale per (layer, kind, kv_head, position)
    for layer, kind, kv_head: scales[max_ctx]  # FP16

* K is stored after RoPE; position p is row p for prefill and decode alike (forward order,
  no host fix-up): prefill writes rows start..start+N-1, decode appends row pos. The engine reads
  the keys of one KV head as one increasing address range (INCR bursts, split at 4 KiB).
* Regions start on ``align``-byte boundaries (row bytes are a multiple of 64 for head_dim a
  multiple of 32 (FP16) / 64 (int8)).

Run ``python -m tellme.sim.kv_layout`` for the traffic table (bytes per token per layer).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from tellme.hw.attention.schedule import kv_schedule

DTYPES = {"fp16": 2, "int8": 1}
SCALE_BYTES = 2


def _al(x: int, a: int) -> int:
    return -(-x // a) * a


@dataclass(frozen=True)
class KVLayout:
    num_layers: int
    num_kv_heads: int
    head_dim: int
    max_ctx: int
    dtype: str = "fp16"
    base: int = 0
    align: int = 4096

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"KV dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        for f in ("num_layers", "num_kv_heads", "head_dim", "max_ctx"):
            if getattr(self, f) < 1:
                raise ValueError(f"KVLayout.{f} must be >= 1, got {getattr(self, f)}")

    @property
    def row_bytes(self) -> int:
        return self.head_dim * DTYPES[self.dtype]

    @property
    def head_bytes(self) -> int:
        """Bytes of one (layer, kind, kv_head) region, padded to ``align``."""
        return _al(self.max_ctx * self.row_bytes, self.align)

    def _region(self, layer: int, kind: str, head: int) -> int:
        if not 0 <= layer < self.num_layers:
            raise IndexError(f"layer {layer} outside 0..{self.num_layers - 1}")
        if kind not in ("K", "V"):
            raise ValueError(f"kind must be 'K' or 'V', got {kind!r}")
        if not 0 <= head < self.num_kv_heads:
            raise IndexError(f"kv head {head} outside 0..{self.num_kv_heads - 1}")
        return (layer * 2 + (kind == "V")) * self.num_kv_heads + head

    def row_addr(self, layer: int, kind: str, head: int, pos: int) -> int:
        if not 0 <= pos < self.max_ctx:
            raise IndexError(f"position {pos} outside the KV cache (max_ctx {self.max_ctx})")
        return self.base + self._region(layer, kind, head) * self.head_bytes + pos * self.row_bytes

    @property
    def rows_bytes(self) -> int:
        return self.num_layers * 2 * self.num_kv_heads * self.head_bytes

    def scale_addr(self, layer: int, kind: str, head: int, pos: int) -> int:
        if self.dtype != "int8":
            raise ValueError("FP16 KV has no scales")
        if not 0 <= pos < self.max_ctx:
            raise IndexError(f"position {pos} outside the KV cache (max_ctx {self.max_ctx})")
        per = _al(self.max_ctx * SCALE_BYTES, self.align)
        return self.base + self.rows_bytes + self._region(layer, kind, head) * per + pos * SCALE_BYTES

    @property
    def total_bytes(self) -> int:
        n = self.rows_bytes
        if self.dtype == "int8":
            n += self.num_layers * 2 * self.num_kv_heads * _al(self.max_ctx * SCALE_BYTES,
                                                               self.align)
        return n


# --------------------------------------------------------------------------- traffic model

def decode_traffic(n: int, *, num_kv_heads: int, head_dim: int, dtype: str = "fp16",
                   depth: int = 1024) -> dict:
    """DDR bytes of one layer's decode attention with n keys (the new token's K/V included).

    Reads: per KV head the rows of :func:`kv_schedule` (K once plus the re-read of every tile
    but the last, V once); int8 adds one FP16 scale per row read. Writes: the new K and V row.
    """
    eb = DTYPES[dtype]
    extra = SCALE_BYTES if dtype == "int8" else 0
    rows = sum(r for _, _, r in kv_schedule(n, depth))
    rd = num_kv_heads * rows * (head_dim * eb + extra)
    wr = num_kv_heads * 2 * (head_dim * eb + extra)
    return {"read": rd, "write": wr, "total": rd + wr, "rows": rows * num_kv_heads}


def _table(models: dict, contexts, depths) -> str:
    lines = ["decode attention DDR traffic per token per layer (KV reads + new-row writes)",
             f"{'model':24s} {'kv_h':>4s} {'hd':>4s} {'dtype':5s} {'tile':>5s} "
             + " ".join(f"{'n=' + str(c):>12s}" for c in contexts)]
    for name, (kvh, hd) in models.items():
        for dtype in ("fp16", "int8"):
            for d in depths:
                vals = [decode_traffic(c, num_kv_heads=kvh, head_dim=hd, dtype=dtype,
                                       depth=d)["total"] for c in contexts]
                lines.append(f"{name:24s} {kvh:4d} {hd:4d} {dtype:5s} {d:5d} "
                             + " ".join(f"{v:12,d}" for v in vals))
    return "\n".join(lines)


def _engine_table(models: dict, contexts, target: str, mhz: float, gbps: float) -> str:
    from tellme.hw.attention.presets import attention_params
    from tellme.sim.cycles_attn import expected_cycles

    ep = attention_params(target)
    eng = dict(lanes=ep["lanes"], beat=ep["beat"], depth=ep["depth"])
    lines = [f"one engine ({target}: lanes {ep['lanes']}, beat {ep['beat']}, tile {ep['depth']}) "
             f"at {mhz:g} MHz vs FP16 KV reads at {gbps:g} GB/s, per layer, microseconds",
             f"{'model':24s} {'phase':14s} " + " ".join(f"{'n=' + str(c):>16s}" for c in contexts)]
    for name, (heads, kvh, hd) in models.items():
        for phase in ("decode", "prefill"):
            cells = []
            for c in contexts:
                if phase == "decode":
                    e = expected_cycles("decode", pos=c - 1, heads=heads, kv_heads=kvh,
                                        head_dim=hd, **eng)
                else:
                    e = expected_cycles("prefill", n_q=c, heads=heads, kv_heads=kvh,
                                        head_dim=hd, **eng)
                us_c = e["cycles"] / mhz
                us_d = e["kv_bytes"] / (gbps * 1e3)
                cells.append(f"{us_c:8.0f}/{us_d:7.0f}")
            lines.append(f"{name:24s} {phase + ' eng/ddr':14s} " + " ".join(cells))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tellme.sim.kv_layout",
                                 description="KV-cache DDR traffic table (bytes/token/layer)")
    ap.add_argument("--contexts", default="128,1024,4096")
    ap.add_argument("--depths", default="1024,4096",
                    help="score-buffer tiles to compare (keys kept on chip per lane)")
    ap.add_argument("--target", default="kv260", help="engine preset for the time table")
    ap.add_argument("--mhz", type=float, default=250.0)
    ap.add_argument("--gbps", type=float, default=17.1, help="DDR bandwidth for KV reads")
    args = ap.parse_args(argv)
    from tellme.quant.sizes import MODELS

    models = {k: (c.num_kv_heads, c.head_dim) for k, c in MODELS.items()}
    ctx = [int(x) for x in args.contexts.split(",")]
    dep = [int(x) for x in args.depths.split(",")]
    print(_table(models, ctx, dep))
    print()
    full = {k: (c.num_heads, c.num_kv_heads, c.head_dim) for k, c in MODELS.items()}
    print(_engine_table(full, ctx, args.target, args.mhz, args.gbps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
