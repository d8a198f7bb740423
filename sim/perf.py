"""Whole-model performance projections (``tellme perf``; docs/performance.md).

A **projection**, not a measurement: the time of a decode step or a prefill call is composed
from the blocks' cycle models, each validated against its own RTL (TLMM and weight streaming:
``sim/cycles.py`` and ``tellme hw bench``; attention engines: ``sim/cycles_attn.py``,
``sim/cycles_attn_int.py``; element-wise blocks: ``sim/cycles_ew.py``; sequencer:
``sim/cycles_seq.py``), with the DDR traffic of ``spec/kv_layout.py`` and of the sequencer
program (``spec.program.build_program`` / ``accesses``). The whole-step composition below is
**not yet validated against an RTL top** (the top has no execution units yet).

Schedule of one layer (the sequencer's record order, docs/hw/sequencer.md, with the
overlaps the design relies on; every call is one program, records in order):

* **Linear segments.** q, k, v back to back (segment A), then o, gate, up, down (segment
  B). Inside a segment the ping-pong buffer fills tile i+1 while tile i computes
  (``sim.cycles.layer_cycles``: first fill exposed, then ``max(compute, fill)`` per tile, the
  last tile's compute exposed); fills run at the weight delivery rate
  ``min(DDR x efficiency, weight ports, buffer fill)`` (``sim.bench.weight_delivery``). Decode
  is weight-bound, prefill TLMM-bound. No weight prefetch across a segment boundary (the next
  segment's first fill is counted after the attention / after the previous layer): a
  conservative choice, worth at most one tile fill per boundary.
* **Attention** sits between the segments (it needs v_proj's output, o_proj needs it):
  KV writes of the new rows first (KV_WRITE), then the engine, whose time is the larger of its
  cycle model and the KV reads through the KV port (``min(DDR, port)`` bytes per cycle), plus
  one DDR read latency. Not overlapped with any weight stream.
* **Element-wise** blocks stream around the TLMM (dequantise behind the output buffer, RoPE
  behind the q/k dequantise, norm -> quantise -> linear): their work is hidden. What is
  exposed is one row's dependent chain where a linear must wait for it (residual + norm +
  quantise before q_proj and gate_proj, sub-norm + quantise before o_proj and down_proj),
  minus the next linear's first tile fill that streams meanwhile; each chain counts the full
  one-row time of every block in it (conservative). Prefill additionally checks that the
  busiest element-wise block's work fits in the TLMM time (else the excess is exposed).
  Activation rows' DDR bytes (every record reading and writing its rows, an upper bound:
  the top may keep rows on chip) are counted, not charged to time.
* **Sequencer**: records strictly in order, ``L + 6`` cycles each and one pass-1 check of
  the program per call (``sim.cycles_seq.expected_cycles``, zero-latency blocks), exposed.
* **LM head**: on the host A53 today (TeLLMe's choice), int8 weights + fp32 row scales read
  at an assumed bandwidth, after the PL's call; the "if PL" figures replace it by an int8
  head at the sustained DDR rate (not built).
* Not modelled: the host driver's per-call costs (program encoding, cache maintenance,
  interrupt), the tokenizer, sampling.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tellme.spec.config import LINEAR_NAMES, NORM_NAMES, ModelConfig

DECODE_CONTEXTS = (128, 1024, 4096)
PROMPTS = (64, 128)
EFFICIENCIES = (0.70, 0.90)          # decode also at these DDR efficiencies (issue 15)
SEG_A = ("q_proj", "k_proj", "v_proj")
SEG_B = ("o_proj", "gate_proj", "up_proj", "down_proj")
BLOCKS = ("linears", "elementwise", "kv_write", "attention", "sequencer", "lm_head")
BLOCK_LABELS = {
    "linears": "TLMM / weight stream",
    "elementwise": "element-wise (exposed)",
    "kv_write": "KV writes",
    "attention": "attention (engine | KV reads)",
    "sequencer": "sequencer",
    "lm_head": "LM head",
}
DDR_KINDS = ("weights", "kv", "lm_head", "activations", "program")

NOTICE = ("PROJECTION from the blocks' cycle models with the assumptions listed; not measured, "
          "no board; the whole-step model is not yet validated against an RTL top")

# TeLLMe v2, KV260, bitnet_b1_58-large: shared/reference/tellme-v2.md §7.1 ([Paper]: arXiv
# 2510.15926v2, abstract and Table 1; FPGA 2026 pp. 247-257).
TELLME_V2 = {
    "model": "bitnet_b1_58-large", "target": "kv260", "clock_mhz": 250.0, "power_w": 4.8,
    "decode_tok_s": 25.0, "prefill_tok_s": 143.0, "ttft_s": {64: 0.45, 128: 0.96},
    "source": "TeLLMe v2, arXiv 2510.15926v2 (abstract, Table 1; FPGA'26 pp. 247-257), as "
              "transcribed in shared/reference/tellme-v2.md §7.1",
    "note": "decode 'up to 25 tok/s', context not stated in the available text (decode is "
            "capped at 1024 tokens); 143 tok/s prefill ~ 64 tokens / 0.45 s",
}

# Issue 15's goals: bitnet_b1_58-large on the KV260 at 250 MHz.
GOALS = {"model": "bitnet_b1_58-large", "target": "kv260", "clock_mhz": 250.0,
         "decode_tok_s": {128: 60.0, 1024: 45.0}, "ttft_s": {64: 0.20, 128: 0.40}}


@dataclass(frozen=True)
class PerfAssumptions:
    """Everything the projection assumes besides the cycle models (printed with the figures)."""

    clock_mhz: float
    ddr_peak_gbps: float
    ddr_efficiency: float = 0.85
    ddr_latency: int = 48            # cycles, AR to first R beat (sim.ddr_model.DdrTiming)
    weight_port_bytes: float = 48.0  # bytes/cycle of the weight masters together
    kv_port_bytes: float = 16.0      # bytes/cycle of the KV master, per direction
    weight_ports: str = ""           # description
    kv_port: str = ""
    attention: str = "int"           # "int": IntAttentionEngine (contract); "fp": AttentionEngine
    attn_engines: int = 1
    kv_dtype: str = "fp24"           # "fp24" / "fp16" (stream format rows) or "int8"
    stream_format: str = "fp24"
    a53_gbps: float = 4.0            # host int8 LM-head GEMV, bytes of weights per second
    float_dtype: str = "bfloat16"    # norm gains / embedding storage (named models)

    @property
    def ddr_bytes_per_cycle(self) -> float:
        return self.ddr_peak_gbps * 1e9 * self.ddr_efficiency / (self.clock_mhz * 1e6)

    def with_efficiency(self, eff: float) -> PerfAssumptions:
        return replace(self, ddr_efficiency=eff)


def shell_ports() -> tuple[float, float, str, str]:
    """(weight bytes/cycle, KV bytes/cycle, descriptions) from the shell contract
    (spec/shell.py): every master runs at the PL clock, data_bits / 8 bytes per cycle."""
    from tellme.spec.shell import INTERFACES

    w = [i for i in INTERFACES if i.mode == "master" and i.channels == "r"]
    kv = [i for i in INTERFACES if i.mode == "master" and i.channels == "rw"]
    wb = sum(i.data_bits for i in w) / 8
    kb = sum(i.data_bits for i in kv) / 8
    wd = (f"{len(w)} x {w[0].data_bits}-bit ({', '.join(i.ps_port for i in w)}) = "
          f"{wb:g} B/cycle")
    kd = f"{kv[0].data_bits}-bit {kv[0].ps_port} = {kb:g} B/cycle per direction"
    return wb, kb, wd, kd


def default_assumptions(target_name: str, *, ddr_efficiency: float = 0.85,
                        clock_mhz: float | None = None, attention: str = "int",
                        attn_engines: int | None = None, kv: str = "stream",
                        a53_gbps: float = 4.0, ports: str = "shell") -> PerfAssumptions:
    """The assumptions for a target: its DDR peak and clock (spec/targets.py), the shell's
    ports (``ports="shell"``) or ports that never bind (``"wide"``: the bench's merged-port
    assumption), the DDR latency of ``sim.ddr_model.DdrTiming``."""
    from tellme.spec.numerics import STREAM_FORMAT
    from tellme.spec.targets import target

    from .ddr_model import DdrTiming

    tg = target(target_name)
    if attention not in ("fp", "int"):
        raise ValueError(f"attention must be 'fp' or 'int', got {attention!r}")
    if kv not in ("stream", "int8"):
        raise ValueError(f"kv must be 'stream' or 'int8', got {kv!r}")
    if attention == "int":
        kv = "int8"
    engines = attn_engines if attn_engines is not None else 1
    if engines < 1 or (attention == "fp" and engines != 1):
        raise ValueError(f"{engines} attention engines: the fp engine's model is one engine; "
                         f"the int engine takes >= 1")
    if not 0 < ddr_efficiency <= 1:
        raise ValueError(f"DDR efficiency must be in (0, 1], got {ddr_efficiency}")
    if a53_gbps <= 0:
        raise ValueError(f"A53 bandwidth must be > 0, got {a53_gbps}")
    if ports == "shell":
        wb, kb, wd, kd = shell_ports()
    elif ports == "wide":
        wb = kb = math.inf
        wd = kd = "wide (never binding: only the DDR and the buffer fill)"
    else:
        raise ValueError(f"ports must be 'shell' or 'wide', got {ports!r}")
    return PerfAssumptions(
        clock_mhz=clock_mhz or tg.clock_mhz, ddr_peak_gbps=tg.ddr_peak_gbps,
        ddr_efficiency=ddr_efficiency, ddr_latency=DdrTiming().latency, weight_port_bytes=wb,
        kv_port_bytes=kb, weight_ports=wd, kv_port=kd, attention=attention,
        attn_engines=engines, kv_dtype=STREAM_FORMAT.name if kv == "stream" else "int8",
        stream_format=STREAM_FORMAT.name, a53_gbps=a53_gbps)


# --------------------------------------------------------------------------- pieces

class _Model:
    """Per (config, target, assumptions): cached pieces of the projection."""

    def __init__(self, cfg: ModelConfig, target_name: str, a: PerfAssumptions,
                 weights=None, max_context: int = 1, max_tokens: int = 1):
        from tellme.hw.presets import preset
        from tellme.spec.numerics import STREAM_FORMATS
        from tellme.spec.targets import target

        self.cfg, self.a = cfg, a
        self.tg = target(target_name)
        self.p = preset(target_name)
        self.fmt = STREAM_FORMATS[a.stream_format]
        self.weights = weights
        self.max_context, self.max_tokens = max_context, max_tokens
        self._ew: dict = {}
        self._prog: dict = {}

    # ---- weight path
    @property
    def weight_bpc(self) -> float:
        from .bench import weight_delivery

        return weight_delivery(self.a.ddr_bytes_per_cycle, self.a.weight_port_bytes, self.p)

    @property
    def kv_bpc(self) -> float:
        return min(self.a.ddr_bytes_per_cycle, self.a.kv_port_bytes)

    def tiles(self, name: str, n_tokens: int):
        from .cycles import linear_tiles

        n_out, k_in = self.cfg.linear_shapes()[name]
        p = self.p
        return linear_tiles(n_out, k_in, t=p.t, q=p.q, v=p.v, table=p.table,
                            half_depth=p.half_depth, n_tokens=n_tokens, nbt_max=p.nbt_max,
                            bytes_per_cycle=self.weight_bpc, name=name)[3]

    def segment(self, names, n_tokens: int) -> dict:
        from .cycles import layer_cycles

        p = self.p
        shapes = {n: self.cfg.linear_shapes()[n] for n in names}
        return layer_cycles(t=p.t, q=p.q, v=p.v, table=p.table, half_depth=p.half_depth,
                            shapes=shapes, n_tokens=n_tokens, nbt_max=p.nbt_max,
                            bytes_per_cycle=self.weight_bpc)

    # ---- element-wise (one row, ew_lanes, the stream format)
    def ew(self, block: str, cols: int) -> int:
        key = (block, cols)
        if key not in self._ew:
            self._ew[key] = self._ew_cycles(block, cols)
        return self._ew[key]

    def _ew_cycles(self, block: str, cols: int) -> int:
        import numpy as np

        from . import cycles_ew as ce

        lanes = self.tg.ew_lanes
        beats = -(-cols // lanes)
        if block in ("res", "ga", "rope"):
            return ce.pipe_cycles(block, beats)
        if block == "dq":
            return ce.dequantize_cycles([beats])
        row = self.fmt.round(np.random.default_rng(0).normal(0.0, 1.0, beats * lanes))
        if block == "norm":
            return ce.rmsnorm_cycles([row], lanes, self.cfg.rms_norm_eps, self.fmt)
        if block == "quant":          # the token's scales, then the row through the quantiser
            amax = np.max(np.abs(row)).astype(self.fmt.dtype)
            return (ce.token_scale_cycles(amax, 1.0, self.fmt)
                    + ce.quantize_cycles([beats], lanes, 3 * self.p.t))
        raise ValueError(block)

    def chains(self) -> dict:
        """One row's dependent element-wise chain before each linear that waits for one."""
        c, d = self.cfg, self.cfg.hidden_size
        return {
            "q_proj": self.ew("res", d) + self.ew("norm", d) + self.ew("quant", d),
            "o_proj": self.ew("norm", c.q_size) + self.ew("quant", c.q_size),
            "gate_proj": self.ew("res", d) + self.ew("norm", d) + self.ew("quant", d),
            "down_proj": (self.ew("ga", c.intermediate_size)
                          + self.ew("norm", c.intermediate_size)
                          + self.ew("quant", c.intermediate_size)),
        }

    def ew_work(self) -> dict:
        """Element-wise busy cycles per token and layer by block (one-row cycle models)."""
        c, d, f = self.cfg, self.cfg.hidden_size, self.cfg.intermediate_size
        sh = c.linear_shapes()
        return {
            "norm": self.ew("norm", d) * 2 + self.ew("norm", c.q_size) + self.ew("norm", f),
            "quant": self.ew("quant", d) * 2 + self.ew("quant", c.q_size)
            + self.ew("quant", f),
            "dequant": sum(self.ew("dq", sh[n][0]) for n in LINEAR_NAMES),
            "rope": self.ew("rope", c.q_size) + self.ew("rope", c.kv_size),
            "residual": 2 * self.ew("res", d),
            "gated": self.ew("ga", f),
        }

    def exposed_ew(self, n_tokens: int) -> dict:
        """Exposed element-wise cycles per layer at each linear that waits for a chain."""
        ch = self.chains()
        out = {}
        # segment starts: the chain runs while the segment's first tile fills
        for name in ("q_proj", "o_proj"):
            first_fill = self.tiles(name, n_tokens)[0][1]
            out[name] = max(0.0, ch[name] - first_fill)
        # inside segment B: the previous linear's last tile emits token 0 after c/n cycles;
        # the chain runs from there; the next linear starts at max(c, c/n + chain, fill)
        for prev, name in (("o_proj", "gate_proj"), ("up_proj", "down_proj")):
            c_last = self.tiles(prev, n_tokens)[-1][0]
            f_first = self.tiles(name, n_tokens)[0][1]
            out[name] = (max(c_last, c_last / n_tokens + ch[name], f_first)
                         - max(c_last, f_first))
        return out

    # ---- attention
    def _engine_kw(self) -> dict:
        c = self.cfg
        if self.a.attention == "fp":
            ep = self.tg.attention
        else:
            from tellme.hw.attention.presets import INT_PRESETS

            ep = INT_PRESETS[self.tg.name]
        if c.head_dim > ep["head_dim"]:
            raise ValueError(f"head_dim {c.head_dim} > the attention engine's {ep['head_dim']}")
        return dict(heads=c.num_heads, kv_heads=c.num_kv_heads, head_dim=c.head_dim,
                    lanes=ep["lanes"], beat=ep["beat"], depth=ep["depth"])

    def engine_desc(self) -> str:
        kw = self._engine_kw()
        if self.a.attention == "fp":
            return (f"AttentionEngine (the contract's, {self.a.stream_format.upper()} "
                    f"arithmetic), 1 engine, {kw['lanes']} lanes x beat {kw['beat']}, "
                    f"{kw['depth']}-key score tile (sim/cycles_attn.py)")
        return (f"IntAttentionEngine (the contract's), {self.a.attn_engines} "
                f"engine(s) x {kw['lanes']} lanes x {kw['beat']} MACs, {kw['depth']}-key "
                f"score tile, calls dealt round-robin (sim/cycles_attn_int.py)")

    def engine_cycles(self, kind: str, *, pos: int = 0, n_q: int = 1, start: int = 0) -> int:
        kw = self._engine_kw()
        if self.a.attention == "fp":
            from .cycles_attn import expected_cycles

            return expected_cycles(kind, pos=pos, n_q=n_q, start=start, fmt=self.fmt,
                                   **kw)["cycles"]
        from tellme.hw.attention.presets import INT_PRESETS

        from .cycles_attn_int import layer_cycles

        extra = {k: v for k, v in INT_PRESETS[self.tg.name].items() if k == "q_beat"}
        return layer_cycles(kind, pos=pos, n_q=n_q, start=start, engines=self.a.attn_engines,
                            **kw, **extra)

    def kv_row_bytes(self) -> int:
        """Bytes of one K or V row of one KV head as stored (int8: + the row scale)."""
        from tellme.spec.kv_layout import KVLayout

        lay = KVLayout(1, 1, self.cfg.head_dim, 1, dtype=self.a.kv_dtype,
                       fmt=self.fmt if self.a.kv_dtype == "int8" else None)
        return lay.row_bytes + lay.scale_bytes

    def kv_traffic(self, kind: str, *, n_q: int = 1, start: int = 0) -> tuple[int, int]:
        """(read, write) KV bytes of one layer's attention: decode of the token at ``start``
        (n = start + 1 keys, ``spec.kv_layout.decode_traffic``), or a prefill of ``n_q`` rows
        from ``start`` (the rows of every call's ``kv_schedule``). Reads are the bytes as
        stored: an int8 cache's reader also fetches scale headers, K-row padding and whole V
        blocks (``KVLayout.stored_read_bytes``)."""
        from tellme.spec.attention import kv_schedule, prefill_calls
        from tellme.spec.kv_layout import KVLayout, decode_traffic

        c = self.cfg
        kw = self._engine_kw()
        depth = kw["depth"]
        int8 = self.a.kv_dtype == "int8"
        if kind == "decode":
            t = decode_traffic(start + 1, num_kv_heads=c.num_kv_heads, head_dim=c.head_dim,
                               dtype=self.a.kv_dtype, depth=depth,
                               fmt=self.fmt if int8 else None, beat=kw["beat"])
            return t["read_stored"], t["write"]
        calls = prefill_calls(n_q, start, kw["heads"], kw["kv_heads"], kw["lanes"])
        if int8:
            lay = KVLayout(1, 1, c.head_dim, 1, dtype="int8", fmt=self.fmt, beat=kw["beat"])
            rd = sum(lay.stored_read_bytes(f, r, k)
                     for cl in calls for k, f, r in kv_schedule(cl.n, depth))
        else:
            rd = sum(r for cl in calls for _, _, r in kv_schedule(cl.n, depth)) \
                * self.kv_row_bytes()
        return rd, 2 * c.num_kv_heads * n_q * self.kv_row_bytes()

    # ---- the program: record count and DDR bytes by kind
    def program(self, kind: str, start: int, n_tokens: int):
        key = (kind, start, n_tokens)
        if key not in self._prog:
            self._prog[key] = self._program(kind, start, n_tokens)
        return self._prog[key]

    def _program(self, kind: str, start: int, n_tokens: int):
        from tellme.spec.attention import score_scale
        from tellme.spec.memory_map import memory_map
        from tellme.spec.program import build_program

        c = replace(self.cfg, max_context=max(self.cfg.max_context, self.max_context))
        mm = memory_map(c, self.tg, max_context=self.max_context,
                        max_tokens=self.max_tokens, output="hidden", fmt=self.fmt,
                        budget=None)
        w = self.weights if self.weights is not None else fake_weights(c, self.tg,
                                                                      self.a.float_dtype)
        w = replace(w, config=c)
        return build_program(c, mm, kind, start, n_tokens, weights=w,
                             score_c=score_scale(c.head_dim), last_only=True)

    def program_bytes(self, prog) -> dict:
        """DDR bytes of a call by kind from the records' accesses (``spec.program.accesses``);
        KV from the traffic model instead of the records' address spans."""
        from tellme.spec.memory_map import PROGRAM_HEADER_BYTES, PROGRAM_RECORD_BYTES
        from tellme.spec.program import accesses

        out = dict.fromkeys(DDR_KINDS, 0)
        eb = prog.elem_bytes
        for r in prog.records:
            n = r.args.get("rows", 0)
            for field, _, nbytes, _ in accesses(r, prog):
                if (r.op, field) in (("LINEAR", "weights"), ("NORM", "gain")):
                    out["weights"] += nbytes
                elif (r.op, field) in _NOT_ACTIVATIONS:
                    continue
                elif (r.op, field) == ("EMBED", "table"):     # a gather of n rows
                    out["activations"] += self.embed_bytes(r)
                elif (r.op, field) == ("ROPE", "table"):      # n rows of (cos, sin) pairs
                    out["activations"] += n * r.args["head_dim"] * eb
                else:
                    out["activations"] += nbytes
        out["program"] = 2 * (PROGRAM_HEADER_BYTES + PROGRAM_RECORD_BYTES * len(prog.records))
        return out

    @staticmethod
    def embed_bytes(r) -> int:
        """Bytes an EMBED record gathers (``rows`` rows of the table); 0 for other records."""
        from tellme.spec.program import DTYPE_BYTES, FLOAT_DTYPES

        if r.op != "EMBED":
            return 0
        return r.args["rows"] * r.args["cols"] * DTYPE_BYTES[FLOAT_DTYPES[r.args["dtype"]]]

    def sequencer_cycles(self, n_records: int) -> int:
        from .cycles_seq import expected_cycles

        return expected_cycles(n_records, self.a.ddr_latency)["total"]

    # ---- LM head
    def lm_head_bytes(self) -> int:
        """int8 weights + one fp32 scale per row (TeLLMe's host format)."""
        return self.cfg.vocab_size * (self.cfg.hidden_size + 4)


# record fields whose bytes come from elsewhere: KV (the traffic model, not the address
# spans of the records) and the LM head (its int8 host format)
_NOT_ACTIVATIONS = {("KV_WRITE", "k_dst"), ("KV_WRITE", "v_dst"), ("ATTENTION", "k"),
                    ("ATTENTION", "v"), ("LM_HEAD", "head")}


def fake_weights(cfg: ModelConfig, tg, float_dtype: str):
    """A ``WeightInfo`` for a named model without a file: the section names of the weight
    format (offsets 0; the projection reads no data), scales 1.0."""
    from tellme.spec.program import WeightInfo

    names = ["embed", "final_norm"] + ([] if cfg.tie_word_embeddings else ["lm_head"])
    for li in range(cfg.num_layers):
        names += [f"layers.{li}.{n}" for n in NORM_NAMES]
        names += [f"layers.{li}.{n}.codes" for n in LINEAR_NAMES]
    secs = {n: (0, 0, "uint8" if n.endswith(".codes") else float_dtype) for n in names}
    scales = ((1.0,) * len(LINEAR_NAMES),) * cfg.num_layers
    return WeightInfo(cfg, tg.tiling, "half", secs, scales)


# --------------------------------------------------------------------------- one call

def _layer(m: _Model, kind: str, n_tokens: int, start: int) -> dict:
    """Cycles of one layer by block for a call of ``n_tokens`` rows at ``start``."""
    seg_a = m.segment(SEG_A, n_tokens)
    seg_b = m.segment(SEG_B, n_tokens)
    exposed = m.exposed_ew(n_tokens)
    ew = sum(exposed.values())
    work = m.ew_work()
    tlmm = seg_a["compute"] + seg_b["compute"]
    busiest = max(work, key=work.get)
    ew_excess = 0.0
    if kind == "prefill":          # the busiest block's work against the TLMM's time
        ew_excess = max(0.0, work[busiest] * n_tokens - tlmm)
    rd, wr = m.kv_traffic(kind, n_q=n_tokens, start=start)
    lat = m.a.ddr_latency
    if kind == "decode":
        eng = m.engine_cycles("decode", pos=start)
    else:
        eng = m.engine_cycles("prefill", n_q=n_tokens, start=start)
    kv_read = rd / m.kv_bpc
    blocks = {"linears": seg_a["total"] + seg_b["total"], "elementwise": ew + ew_excess,
              "kv_write": wr / m.kv_bpc + lat, "attention": max(eng, kv_read) + lat}
    return {
        "cycles": blocks,
        "total": sum(blocks.values()),
        "tlmm_compute": tlmm,
        "weight_fill": seg_a["fill"] + seg_b["fill"],
        "attention_engine": eng, "kv_read_cycles": kv_read,
        "attention_bound": "engine" if eng >= kv_read else "KV reads",
        "kv_read_bytes": rd, "kv_write_bytes": wr,
        "elementwise_exposed": exposed, "elementwise_work_per_token": work,
        "elementwise_busiest": busiest,
        "elementwise_busiest_share": work[busiest] * n_tokens / tlmm,
    }


def _call(m: _Model, kind: str, n_tokens: int, start: int) -> dict:
    """One call (a decode step, or one prefill chunk): per-layer and whole-call cycles by
    block, DDR bytes by kind (LM head excluded: added per token by the caller)."""
    lay = _layer(m, kind, n_tokens, start)
    L = m.cfg.num_layers
    prog = m.program(kind, start, n_tokens)
    nbytes = m.program_bytes(prog)
    nbytes["kv"] = L * (lay["kv_read_bytes"] + lay["kv_write_bytes"])
    # the embedding gather (EMBED: one row per token) and the final norm of the last row
    embed = sum(m.embed_bytes(r) for r in prog.records) / m.kv_bpc + m.a.ddr_latency
    final = m.ew("norm", m.cfg.hidden_size)
    cyc = {k: v * L for k, v in lay["cycles"].items()}
    cyc["elementwise"] += embed + final
    cyc["sequencer"] = m.sequencer_cycles(len(prog.records))
    return {"layer": lay, "cycles": cyc, "records": len(prog.records), "ddr_bytes": nbytes}


def decode_step(m: _Model, context: int) -> dict:
    """The decode step of the token at position ``context - 1`` (``context`` keys)."""
    r = _call(m, "decode", 1, context - 1)
    clk = m.a.clock_mhz * 1e6
    pl_s = sum(r["cycles"].values()) / clk
    head = m.lm_head_bytes()
    host_s = head / (m.a.a53_gbps * 1e9)
    pl_head_s = head / (m.a.ddr_bytes_per_cycle * clk) + m.a.ddr_latency / clk
    sec = {k: v / clk for k, v in r["cycles"].items()}
    sec["lm_head"] = host_s
    total = pl_s + host_s
    total_pl = pl_s + pl_head_s + (m.a.ddr_latency + 6) / clk   # one more record
    nbytes = dict(r["ddr_bytes"], lm_head=head)
    roof = nbytes["weights"] + nbytes["kv"] + nbytes["lm_head"]
    peak = m.a.ddr_peak_gbps * 1e9
    return {
        "context": context, "records": r["records"],
        "per_layer_cycles": r["layer"]["cycles"], "layer": _layer_info(r["layer"]),
        "per_token_s": sec, "seconds": total, "tok_s": 1 / total,
        "pl_s": pl_s, "lm_head_host_s": host_s,
        "if_pl_lm_head": {"lm_head_s": pl_head_s, "seconds": total_pl, "tok_s": 1 / total_pl},
        "ddr_bytes": nbytes,
        "roofline": {"bytes": roof, "tok_s_peak": peak / roof,
                     "tok_s_sustained": peak * m.a.ddr_efficiency / roof,
                     "share": (1 / total) / (peak / roof),
                     "share_if_pl_lm_head": (1 / total_pl) / (peak / roof)},
    }


def prefill(m: _Model, tokens: int) -> dict:
    """A prompt of ``tokens`` from position 0, in chunks of the TLMM's tok_max, then the LM
    head of the last row (TTFT)."""
    clk = m.a.clock_mhz * 1e6
    chunk = m.p.tok_max
    cyc = dict.fromkeys(BLOCKS[:-1], 0.0)
    nbytes = dict.fromkeys(DDR_KINDS, 0)
    layers = []
    for s in range(0, tokens, chunk):
        n = min(chunk, tokens - s)
        r = _call(m, "prefill", n, s)
        for k, v in r["cycles"].items():
            cyc[k] += v
        for k, v in r["ddr_bytes"].items():
            nbytes[k] += v
        layers.append(dict(_layer_info(r["layer"]), tokens=n, start=s,
                           per_layer_cycles=r["layer"]["cycles"]))
    pl_s = sum(cyc.values()) / clk
    head = m.lm_head_bytes()
    host_s = head / (m.a.a53_gbps * 1e9)
    pl_head_s = head / (m.a.ddr_bytes_per_cycle * clk) + m.a.ddr_latency / clk
    sec = {k: v / clk for k, v in cyc.items()}
    sec["lm_head"] = host_s
    ttft = pl_s + host_s
    ttft_pl = pl_s + pl_head_s + (m.a.ddr_latency + 6) / clk
    return {
        "tokens": tokens, "chunks": len(layers), "per_layer_cycles": layers[0]["per_layer_cycles"],
        "layer": layers[0], "per_call_s": sec, "pl_s": pl_s, "ttft_s": ttft,
        "prefill_tok_s": tokens / ttft, "lm_head_host_s": host_s,
        "if_pl_lm_head": {"lm_head_s": pl_head_s, "ttft_s": ttft_pl,
                          "prefill_tok_s": tokens / ttft_pl},
        "ddr_bytes": dict(nbytes, lm_head=head),
    }


def _layer_info(lay: dict) -> dict:
    keep = ("tlmm_compute", "weight_fill", "attention_engine", "kv_read_cycles",
            "attention_bound", "kv_read_bytes", "kv_write_bytes", "elementwise_exposed",
            "elementwise_work_per_token", "elementwise_busiest", "elementwise_busiest_share")
    return {k: lay[k] for k in keep}


# --------------------------------------------------------------------------- the report

def project(cfg: ModelConfig, target_name: str, a: PerfAssumptions, *, name: str,
            contexts=DECODE_CONTEXTS, prompts=PROMPTS, weights=None, source: str = "",
            extra_contexts=()) -> dict:
    """The whole projection as a JSON-ready dict (``tellme perf --json`` prints it)."""
    from tellme.spec.memory_map import check_model_fits
    from tellme.spec.targets import target

    for v, what in ((contexts, "context"), (prompts, "prompt")):
        bad = [x for x in v if x < 1]
        if bad or not v:
            raise ValueError(f"{what} lengths must be >= 1, got {list(v)}")
    tg = target(target_name)
    goals = _goals_apply(name, cfg, target_name, a)
    all_ctx = sorted(set(contexts) | set(extra_contexts)
                     | (set(GOALS["decode_tok_s"]) if goals else set()))
    all_prompts = sorted(set(prompts) | (set(GOALS["ttft_s"]) if goals else set()))
    max_ctx = max(all_ctx + all_prompts)
    max_tok = min(tg.tlmm["tok_max"], max(all_prompts))
    check_model_fits(cfg, tg, max_ctx, max_tok)

    m = _Model(cfg, target_name, a, weights=weights, max_context=max_ctx, max_tokens=max_tok)
    dec = {c: decode_step(m, c) for c in all_ctx}
    for c in all_ctx:
        dec[c]["at_efficiency"] = {}
        for eff in EFFICIENCIES:
            me = _Model(cfg, target_name, a.with_efficiency(eff), weights=weights,
                        max_context=max_ctx, max_tokens=max_tok)
            me._ew, me._prog = m._ew, m._prog            # same rows and programs
            r = decode_step(me, c)
            dec[c]["at_efficiency"][f"{eff:.2f}"] = {
                "tok_s": r["tok_s"], "tok_s_if_pl_lm_head": r["if_pl_lm_head"]["tok_s"]}
    pre = {n: prefill(m, n) for n in all_prompts}
    notes = []
    if max(contexts) > cfg.max_context:
        notes.append(f"contexts past the model's max_context {cfg.max_context} are projected "
                     f"for the hardware only (the model was not trained for them)")
    try:
        from tellme.spec.memory_map import memory_map

        memory_map(replace(cfg, max_context=max(cfg.max_context, max_ctx)), tg,
                   max_context=max_ctx, max_tokens=max_tok)
    except ValueError as e:
        notes.append(f"on the board: {e}")
    out = {
        "tool": "tellme perf", "kind": "projection", "validated_against_rtl_top": False,
        "notice": NOTICE, "model": name, "source": source, "config": cfg.to_dict(),
        "target": target_name,
        "assumptions": dict(asdict(a), ddr_bytes_per_cycle=a.ddr_bytes_per_cycle,
                            weight_bytes_per_cycle=m.weight_bpc, kv_bytes_per_cycle=m.kv_bpc,
                            attention_engine=m.engine_desc(),
                            elementwise_lanes=tg.ew_lanes,
                            tlmm=dict(t=m.p.t, q=m.p.q, v=m.p.v, table=m.p.table,
                                      half_depth=m.p.half_depth, nbt_max=m.p.nbt_max,
                                      tok_max=m.p.tok_max)),
        "assumption_lines": assumption_lines(m),
        "schedule": SCHEDULE,
        "decode": [dec[c] for c in contexts],
        "prefill": [pre[n] for n in prompts],
        "tellme_v2": _tellme_beside(name, cfg, target_name),
        "goals": _goal_report(goals, dec, pre) if goals else None,
        "notes": notes,
    }
    out["_all_decode"] = dec       # for the goals and plots; dropped from the JSON
    return out


SCHEDULE = [
    "decode per layer: [q,k,v linears: weight-stream bound] -> [KV write of the new rows] -> "
    "[attention: max(engine, KV reads) + DDR latency] -> [o, gate, up, down linears]; "
    "no weight prefetch across attention or layers (conservative: <= one tile fill each)",
    "prefill per layer: the same records over all rows: TLMM-bound linears, attention "
    "between the q,k,v and o projections, not overlapped",
    "inside a linear segment: ping-pong tiles, fill of tile i+1 under compute of tile i "
    "(sim.cycles.layer_cycles, validated by tellme hw bench: decode 98.5 %, prefill +0.63 %)",
    "element-wise: streamed around the TLMM, hidden; exposed only where a linear waits for "
    "one row's dependent chain longer than the fill of its first tile",
    "LM head after the PL call (host A53) or as the last record (if PL); embedding gather "
    "and final norm of the last row exposed; sequencer overhead per record exposed",
]


def assumption_lines(m: _Model) -> list[str]:
    a, p, tg = m.a, m.p, m.tg
    fill = p.v * 5 * p.t / 8
    bind = min((a.ddr_bytes_per_cycle, "DDR"), (a.weight_port_bytes, "weight ports"),
               (fill, "buffer fill"))[1]
    verb = "bind" if bind.endswith("s") else "binds"
    kv = (f"{a.kv_dtype.upper()} (stream-format rows)" if a.kv_dtype != "int8"
          else f"int8 + one {a.stream_format.upper()} scale per row, read as stored (scale "
               f"headers, K rows padded to whole engine beats, whole V blocks)")
    return [
        f"clock {a.clock_mhz:g} MHz (target {tg.name}); no timing closure: Vivado has not run",
        f"DDR {a.ddr_peak_gbps:g} GB/s peak x {a.ddr_efficiency:.2f} = "
        f"{a.ddr_peak_gbps * a.ddr_efficiency:.2f} GB/s = {a.ddr_bytes_per_cycle:.2f} B/cycle;"
        f" read latency {a.ddr_latency} cycles (sim/ddr_model.py DdrTiming)",
        f"ports (spec/shell.py): weights {a.weight_ports}; KV/activations {a.kv_port}",
        f"weight delivery = min(DDR {a.ddr_bytes_per_cycle:.2f}, ports "
        f"{a.weight_port_bytes:g}, buffer fill {fill:g}) = {m.weight_bpc:.2f} B/cycle "
        f"({bind} {verb}); KV reads/writes at {m.kv_bpc:.2f} B/cycle",
        f"TLMM T={p.t} Q={p.q} {p.table} table, ping-pong halves of {p.half_depth} words, "
        f"tiles <= {p.nbt_max} column blocks, <= {p.tok_max} tokens per call",
        f"attention: {m.engine_desc()}",
        f"KV cache: {kv}; score tile re-reads of K past the tile counted",
        f"element-wise: {tg.ew_lanes} lanes (ew_lanes), {a.stream_format.upper()} streams, "
        f"streamed around the TLMM",
        f"LM head: host A53, int8 weights + fp32 row scales at an assumed {a.a53_gbps:g} GB/s "
        f"(no published K26 A53 GEMV figure); 'if PL' = the same bytes at the sustained DDR "
        f"rate (no PL LM head is built)",
        "sequencer: records strictly in order, L+6 cycles each + pass-1 program check "
        "(sim/cycles_seq.py)",
        "not modelled: host driver per call (program encoding, cache flush, interrupt), "
        "tokenizer, sampling",
    ]


def _goals_apply(name: str, cfg: ModelConfig, target_name: str, a: PerfAssumptions) -> bool:
    from tellme.spec.models import MODELS

    ref = MODELS[GOALS["model"]]
    same = all(getattr(cfg, f) == getattr(ref, f) for f in
               ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                "num_kv_heads", "head_dim"))
    return same and target_name == GOALS["target"] and a.clock_mhz == GOALS["clock_mhz"]


def _tellme_beside(name: str, cfg: ModelConfig, target_name: str) -> dict:
    t = dict(TELLME_V2, ttft_s={str(k): v for k, v in TELLME_V2["ttft_s"].items()})
    from tellme.spec.models import MODELS

    ref = MODELS[TELLME_V2["model"]]
    t["comparable"] = (cfg.linear_shapes() == ref.linear_shapes()
                       and cfg.num_layers == ref.num_layers
                       and target_name == TELLME_V2["target"])
    return t


def _goal_report(goals: bool, dec: dict, pre: dict) -> list[dict]:
    """Each goal: met or not, by how much, and the limiting block."""
    out = []
    for ctx, want in GOALS["decode_tok_s"].items():
        r = dec[ctx]
        out.append(_verdict(f"decode at {ctx} context", "tok/s", r["tok_s"], want, True,
                            r["per_token_s"], r["if_pl_lm_head"]["tok_s"]))
    for n, want in GOALS["ttft_s"].items():
        r = pre[n]
        out.append(_verdict(f"TTFT for {n} tokens", "s", r["ttft_s"], want, False,
                            r["per_call_s"], r["if_pl_lm_head"]["ttft_s"]))
    return out


def _verdict(what: str, unit: str, got: float, want: float, higher: bool, sec: dict,
             got_pl: float) -> dict:
    met = got >= want if higher else got <= want
    total = sum(sec.values())
    budget = 1 / want if higher else want
    over = total - budget                    # seconds over the budget (> 0: missed)
    lim = max(sec, key=sec.get)
    r = {"goal": what, "unit": unit, "want": want, "projected": got, "met": met,
         "if_pl_lm_head": got_pl,
         "met_if_pl_lm_head": got_pl >= want if higher else got_pl <= want,
         "limiting_block": lim, "limiting_block_s": sec[lim], "over_budget_s": over}
    if met:
        r["text"] = (f"{what}: {got:.3g} {unit} meets >= {want:g}" if higher else
                     f"{what}: {got:.3g} {unit} meets <= {want:g}")
        return r
    short = (f"{got:.3g} tok/s < {want:g} ({(1 - got / want):.0%} short)" if higher
             else f"{got:.3g} s > {want:g} ({(got / want - 1):.0%} over)")
    ranked = sorted(sec, key=sec.get, reverse=True)
    if sec[lim] >= over:
        fix = (f"cutting it by {over * 1e3:.1f} ms (to {(sec[lim] - over) * 1e3:.1f}) alone "
               f"would meet the goal")
    else:
        k = next((i for i in range(1, len(ranked) + 1)
                  if sum(sec[b] for b in ranked[:i]) >= over), len(ranked))
        fix = (f"no single block can close it: the {k} largest ("
               + ", ".join(f"{BLOCK_LABELS[b]} {sec[b] * 1e3:.1f}" for b in ranked[:k])
               + " ms) together exceed the overrun")
    r["text"] = (f"{what}: MISSED, {short}; {total * 1e3:.1f} ms against a "
                 f"{budget * 1e3:.1f} ms budget ({over * 1e3:.1f} ms over); limiting block: "
                 f"{BLOCK_LABELS[lim]} {sec[lim] * 1e3:.1f} ms; {fix}")
    return r


def to_json(report: dict) -> dict:
    """The report without its private keys, infinities (ports that never bind) as null."""
    def clean(x):
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, float) and math.isinf(x):
            return None
        return x

    return clean({k: v for k, v in report.items() if not k.startswith("_")})


def _ms(s: float) -> str:
    return f"{s * 1e3:8.2f}"


def format_report(r: dict) -> str:
    cfg = r["config"]
    L = cfg["num_layers"]
    a = r["assumptions"]
    lines = [f"tellme perf: {r['model']} on {r['target']}",
             f"  ** {r['notice']} **",
             f"  model: {L} layers, hidden {cfg['hidden_size']}, ffn {cfg['intermediate_size']},"
             f" heads {cfg['num_heads']}/{cfg['num_kv_heads']} x {cfg['head_dim']}, vocab "
             f"{cfg['vocab_size']}" + (f" ({r['source']})" if r["source"] else ""),
             "", "assumptions"]
    lines += [f"  - {x}" for x in r["assumption_lines"]]
    lines += ["", "schedule (overlaps assumed)"] + [f"  - {x}" for x in r["schedule"]]
    tv = r["tellme_v2"]
    tv_ok = tv["comparable"]

    # decode
    lines += ["", "decode (one token; tok/s with the host A53 LM head; 'if PL': an int8 PL "
              "LM head at the DDR rate, not built)"]
    effs = [f"{e:.2f}" for e in EFFICIENCIES]
    hdr = (f"  {'context':>7} {'ms/token':>9} {'tok/s':>8} {'if PL':>8} "
           + " ".join(f"{'@' + e:>8} {'if PL':>8}" for e in effs)
           + f" {'roofline':>8} {'share':>6} {'TeLLMe':>7}")
    lines.append(hdr)
    for d in r["decode"]:
        at = d["at_efficiency"]
        lines.append(
            f"  {d['context']:>7} {d['seconds'] * 1e3:>9.2f} {d['tok_s']:>8.1f} "
            f"{d['if_pl_lm_head']['tok_s']:>8.1f} "
            + " ".join(f"{at[e]['tok_s']:>8.1f} {at[e]['tok_s_if_pl_lm_head']:>8.1f}"
                       for e in effs)
            + f" {d['roofline']['tok_s_peak']:>8.1f} {d['roofline']['share']:>6.0%} "
            + (f"{tv['decode_tok_s']:>7g}" if tv_ok else f"{'-':>7}"))
    lines.append(f"  roofline: DDR peak {a['ddr_peak_gbps']:g} GB/s over the bytes a token "
                 f"must move (weights + KV + LM head); share = tok/s / roofline"
                 + (f"; TeLLMe: {tv['note']}" if tv_ok else ""))

    # decode breakdown
    lines += ["", "decode breakdown: cycles per layer | ms per token"]
    lines.append(f"  {'block':<32}" + "".join(f"{'ctx ' + str(d['context']):>22}"
                                             for d in r["decode"]))
    for b in BLOCKS:
        row = f"  {BLOCK_LABELS[b]:<32}"
        for d in r["decode"]:
            pl = d["per_layer_cycles"].get(b)
            row += f"{(f'{pl:,.0f}' if pl is not None else '-'):>12} {_ms(d['per_token_s'][b])}"
        lines.append(row)
    row = f"  {'total':<32}"
    for d in r["decode"]:
        row += f"{sum(d['per_layer_cycles'].values()):>12,.0f} {_ms(d['seconds'])}"
    lines.append(row)
    for d in r["decode"]:
        ly = d["layer"]
        lines.append(
            f"  ctx {d['context']}: attention engine {ly['attention_engine']:,} vs KV reads "
            f"{ly['kv_read_cycles']:,.0f} cycles/layer ({ly['attention_bound']} bound); TLMM "
            f"compute {ly['tlmm_compute']:,} vs weight fill {ly['weight_fill']:,.0f}; "
            f"{d['records']} records")
    ly = r["decode"][0]["layer"]
    lines.append("  element-wise work per token-layer (cycles, hidden): " + ", ".join(
        f"{k} {v:,}" for k, v in ly["elementwise_work_per_token"].items())
        + "; exposed at " + ", ".join(f"{k} {v:,.0f}"
                                     for k, v in ly["elementwise_exposed"].items()))

    # DDR bytes
    lines += ["", "DDR bytes per decode token (MB); activations: every record's rows through "
              "DDR (upper bound, not charged to time)"]
    lines.append(f"  {'kind':<12}" + "".join(f"{'ctx ' + str(d['context']):>12}"
                                           for d in r["decode"]))
    for k in (*DDR_KINDS, "total"):
        vals = [sum(d["ddr_bytes"].values()) if k == "total" else d["ddr_bytes"][k]
                for d in r["decode"]]
        lines.append(f"  {k:<12}" + "".join(f"{v / 1e6:>12.3f}" for v in vals))

    # prefill
    lines += ["", "prefill (prompt from position 0; TTFT = PL call + LM head of the last row)"]
    lines.append(f"  {'tokens':>7} {'TTFT s':>8} {'tok/s':>7} {'if PL: TTFT':>11} {'tok/s':>7}"
                 f" {'TeLLMe TTFT':>11}  attention share of TLMM; element-wise busiest")
    for p in r["prefill"]:
        ly = p["layer"]
        tt = tv["ttft_s"].get(str(p["tokens"])) if tv_ok else None
        lines.append(
            f"  {p['tokens']:>7} {p['ttft_s']:>8.3f} {p['prefill_tok_s']:>7.1f} "
            f"{p['if_pl_lm_head']['ttft_s']:>11.3f} {p['if_pl_lm_head']['prefill_tok_s']:>7.1f}"
            f" {(f'{tt:g}' if tt else '-'):>11}  {ly['attention_engine'] / ly['tlmm_compute']:.0%}"
            f" ({ly['attention_bound']}); {ly['elementwise_busiest']} "
            f"{ly['elementwise_busiest_share']:.0%} of TLMM")
    if tv_ok:
        lines.append(f"  TeLLMe prefill: {tv['prefill_tok_s']:g} tok/s; tok/s here = prompt "
                     f"tokens / TTFT")
    lines += ["  prefill breakdown (ms per call): " + "; ".join(
        f"{p['tokens']} tok: " + ", ".join(f"{b} {p['per_call_s'][b] * 1e3:.1f}"
                                           for b in BLOCKS) for p in r["prefill"])]
    lines.append("  per layer (cycles): " + "; ".join(
        f"{p['tokens']} tok: " + ", ".join(f"{b} {v:,.0f}"
                                           for b, v in p["per_layer_cycles"].items())
        for p in r["prefill"]))

    # TeLLMe and goals
    lines += ["", f"TeLLMe v2 (published): {tv['source']}"]
    if tv_ok:
        lines.append(f"  KV260, {tv['clock_mhz']:g} MHz, {tv['power_w']:g} W: decode "
                     f"{tv['decode_tok_s']:g} tok/s, prefill {tv['prefill_tok_s']:g} tok/s, "
                     f"TTFT {tv['ttft_s']['64']:g} s (64) / {tv['ttft_s']['128']:g} s (128)")
    else:
        lines.append("  not comparable: TeLLMe reports only bitnet_b1_58-large on the KV260")
    if r["goals"]:
        lines += ["", f"issue 15 goals ({GOALS['model']}, {GOALS['target']}, "
                  f"{GOALS['clock_mhz']:g} MHz)"]
        for g in r["goals"]:
            extra = (f" [if PL LM head: {g['if_pl_lm_head']:.3g} {g['unit']}, "
                     f"{'met' if g['met_if_pl_lm_head'] else 'missed'}]")
            lines.append(f"  - {g['text']}{extra}")
    for n in r["notes"]:
        lines.append(f"  note: {n}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots

def plot(report: dict, out_dir) -> list:
    """decode tok/s vs context (with the DDR roofline and TeLLMe) and stacked per-block time
    per token; PNGs in ``out_dir``. Needs matplotlib (the ``plot`` extra)."""
    from tellme.plotting import pyplot

    plt = pyplot()
    import matplotlib.ticker

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{report['model']}-{report['target']}".replace("/", "_")
    dec = report["_all_decode"]
    ctx = sorted(dec)
    tv = report["tellme_v2"]
    files = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(ctx, [dec[c]["tok_s"] for c in ctx], "o-", label="projected (A53 LM head)")
    ax.plot(ctx, [dec[c]["if_pl_lm_head"]["tok_s"] for c in ctx], "s--",
            label="projected, if PL LM head")
    ax.plot(ctx, [dec[c]["roofline"]["tok_s_peak"] for c in ctx], "k-", lw=1,
            label="DDR roofline (peak)")
    eff = report["assumptions"]["ddr_efficiency"]
    ax.plot(ctx, [dec[c]["roofline"]["tok_s_sustained"] for c in ctx], "k:", lw=1,
            label=f"DDR roofline x {eff:.2f}")
    if tv["comparable"]:
        ax.axhline(tv["decode_tok_s"], color="tab:red", ls="-.",
                   label=f"TeLLMe v2 published ({tv['decode_tok_s']:g} tok/s)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ctx, [str(c) for c in ctx])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("context (keys)")
    ax.set_ylabel("decode tokens/s")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{report['model']} on {report['target']}: decode (projection)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, "projection from block cycle models; not validated against an RTL top",
             fontsize=7, color="gray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    f1 = out_dir / f"{stem}-decode.png"
    fig.savefig(f1, dpi=120)
    plt.close(fig)
    files.append(f1)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = range(len(ctx))
    bottom = [0.0] * len(ctx)
    for b in BLOCKS:
        v = [dec[c]["per_token_s"][b] * 1e3 for c in ctx]
        ax.bar(xs, v, bottom=bottom, label=BLOCK_LABELS[b])
        bottom = [x + y for x, y in zip(bottom, v, strict=True)]
    ax.set_xticks(list(xs), [str(c) for c in ctx])
    ax.set_xlabel("context (keys)")
    ax.set_ylabel("ms per decode token")
    ax.set_title(f"{report['model']} on {report['target']}: time per token by block "
                 "(projection)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    f2 = out_dir / f"{stem}-blocks.png"
    fig.savefig(f2, dpi=120)
    plt.close(fig)
    files.append(f2)
    return files


PLOT_CONTEXTS = (64, 128, 256, 512, 1024, 2048, 4096)
