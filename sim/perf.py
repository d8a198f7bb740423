"""Whole-model performance projections (``tellme perf``; docs/performance.md).

A **projection**, not a measurement: no board is on hand. The headline figures are those of
**the top as built** (hw/top.py, docs/hw/top.md), from the whole-step cycle model
``sim/cycles_top.py``: the sequencer runs a call's program one record at a time (fetch,
issue, the unit's work up to its last write response, the hand-back), the linears stream
their codes through one 128-bit weight port (``m_axi_w0``; w1 and w2 are idle), every other
record's rows, the KV cache and the program go through the one 128-bit ``m_axi_kv``. That
model is validated against the RTL top in Verilator simulation (tests/rtl/test_top_cycles.py:
every record kind within 3 %, whole calls within 0.3 %; tests/rtl/tb_top_demo.py: this
tool's figures for the demo model within 5 % of the top's CYCLES register), not on a board:
the board's DDR (``sim.cycles_top.board_memory``: the DDR latency of
``sim.ddr_model.DdrTiming``, beats per cycle the smaller of the port and the DDR) is an
assumption.

Per call (:func:`top_cycles`): ``sim.cycles_top.program_cycles`` of the program
``spec.program.build_program`` makes (final hidden rows as output), each record's unit time
put in a block (:data:`OP_BLOCK`: LINEAR -> linears; EMBED, NORM, QUANT, ROPE, RESIDUAL,
GATED_ACT -> element-wise; KV_WRITE; ATTENTION), its fetch / issue / hand-back and pass-1
beats and the program's start in the sequencer. Per layer: the layers' records over the
number of layers. Decode at context c is the token at position c - 1; a prompt is prefilled
from position 0 in calls of the TLMM's ``tok_max`` rows.

The **LM head** two ways: on the host A53 after the PL call (int8 weights + fp32 row
scales at an assumed bandwidth; the driver's fallback for a hidden size the unit cannot take),
and the "PL head" figures: the top's LM-head unit as built (QUANT of the final row and
LM_HEAD, int8 codes on ``m_axi_w1`` at 16 B/cycle, ``sim.cycles_top``), what the driver
uses.

DDR bytes by kind: weights (the LINEAR records' codes and the norm gains), KV (the int8
cache as stored, ``spec.kv_layout``), the LM head (int8 + scales), activations (every
record's rows: the top keeps no row on chip, so these are real traffic), the program
(fetched twice per call: pass-1 check and run).

A secondary line, clearly labelled, keeps the previous **per-block model** ("blocks in
parallel, not the top as built", :func:`decode_step` / :func:`prefill` over :class:`_Model`):
the blocks' cycle models composed with the overlaps the design was meant to have (three
weight ports, weight prefetch inside a linear segment, element-wise hidden behind the TLMM).
It shows what those overlaps would be worth; ``--ports``, ``--attention``,
``--attn-engines`` and ``--kv`` apply to it only.

Not modelled: the host driver's per-call costs (program encoding, cache maintenance,
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
# the top as built (headline)
BLOCK_LABELS = {
    "linears": "linears (TLMM, codes on 1 port)",
    "elementwise": "element-wise records",
    "kv_write": "KV writes",
    "attention": "attention (engine+KV reader)",
    "sequencer": "sequencer (fetch/issue/back)",
    "lm_head": "LM head (host A53)",
}
# the per-block model with overlaps (secondary)
OVERLAP_LABELS = {
    "linears": "TLMM / weight stream",
    "elementwise": "element-wise (exposed)",
    "kv_write": "KV writes",
    "attention": "attention (engine | KV reads)",
    "sequencer": "sequencer",
    "lm_head": "LM head",
}
# record op -> block of the breakdown (the unit's time; fetch/issue/back -> sequencer)
OP_BLOCK = {"LINEAR": "linears", "EMBED": "elementwise", "NORM": "elementwise",
            "QUANT": "elementwise", "ROPE": "elementwise", "RESIDUAL": "elementwise",
            "GATED_ACT": "elementwise", "KV_WRITE": "kv_write", "ATTENTION": "attention"}
OPS_ORDER = ("LINEAR", "NORM", "QUANT", "ROPE", "RESIDUAL", "GATED_ACT", "EMBED", "KV_WRITE",
             "ATTENTION")
DDR_KINDS = ("weights", "kv", "lm_head", "activations", "program")
PORT_BYTES = 16                      # a 128-bit AXI port: bytes per cycle

VALIDATION = {
    "model": "sim/cycles_top.py (whole-step cycle model of hw/top.py)",
    "against": "the RTL top in Verilator simulation, not a board",
    "tests": ["tests/rtl/test_top_cycles.py: every record kind within 3 %, whole calls "
              "within 0.3 % (sim build, tiny model)",
              "tests/rtl/tb_top_demo.py: this tool's prefill and decode cycles for the demo "
              "model (sim-demo build, simulation memory) within 5 % of the top's CYCLES"],
    "not_exercised": "the board's DDR latency and bandwidth, AXI interconnect stalls, the "
                     "timing closure of the clock",
}

NOTICE = ("PROJECTION of the top as built (records one at a time, one 128-bit weight port) "
          "by the whole-step cycle model sim/cycles_top.py, validated against the RTL top in "
          "simulation (not on a board); the board's DDR and clock are assumptions; not "
          "measured")

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



# ------------------------------------------------- pieces (programs, bytes; the per-block model)

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

        extra = {k: v for k, v in INT_PRESETS[self.tg.name].items()
                 if k in ("q_beat", "o_beat")}
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
    def program(self, kind: str, start: int, n_tokens: int, output: str = "hidden"):
        key = (kind, start, n_tokens, output)
        if key not in self._prog:
            self._prog[key] = self._program(kind, start, n_tokens, output)
        return self._prog[key]

    def _program(self, kind: str, start: int, n_tokens: int, output: str):
        from tellme.spec.attention import score_scale
        from tellme.spec.memory_map import memory_map
        from tellme.spec.program import build_program

        c = replace(self.cfg, max_context=max(self.cfg.max_context, self.max_context))
        mm = memory_map(c, self.tg, max_context=self.max_context,
                        max_tokens=self.max_tokens, output=output, fmt=self.fmt,
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
    def pl_head_cycles(self, mem) -> int | None:
        """Cycles of the top's PL LM head for one row: the final QUANT and LM_HEAD records
        of a logits program (``sim.cycles_top.record_cycles``); None when the unit does not
        take the hidden size (``spec.lm_head.fits``)."""
        from tellme.spec.lm_head import fits

        from . import cycles_top as ct

        lm = self.tg.lm_head
        if not fits(self.cfg.hidden_size, lm.get("lanes", 0), lm.get("max_d", 0)):
            return None
        prog = self.program("prefill", 0, 1, output="logits")
        return sum(ct.record_cycles(r, prog, self.tg.name, mem=mem).cycles
                   for r in prog.records[-3:-1])          # QUANT, LM_HEAD (END excluded)

    def lm_head_bytes(self) -> int:
        """int8 weights + one fp32 scale per row (TeLLMe's host format)."""
        return self.cfg.vocab_size * (self.cfg.hidden_size + 4)


# record fields whose bytes come from elsewhere: KV (the traffic model, not the address
# spans of the records) and the LM head (its int8 host format)
_NOT_ACTIVATIONS = {("KV_WRITE", "k_dst"), ("KV_WRITE", "v_dst"), ("ATTENTION", "k"),
                    ("ATTENTION", "v"), ("LM_HEAD", "head")}


def read_weights(path) -> tuple:
    """(config, ``WeightInfo``, name, source) of a tellme weight file, as ``tellme perf
    --weights`` reads it (the header and the scales; no code is read)."""
    from tellme.quant.format import read_weight_file
    from tellme.spec.program import WeightInfo

    wf = read_weight_file(path, verify=False)
    info = WeightInfo.from_header(wf.header, wf.section("scales"))
    return (wf.config, info, Path(path).name,
            f"weight file {path}, tiling T={wf.tiling.t} Q={wf.tiling.q}")


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
        "pl_lm_head": {"lm_head_s": pl_head_s, "seconds": total_pl, "tok_s": 1 / total_pl},
        "ddr_bytes": nbytes,
        "roofline": {"bytes": roof, "tok_s_peak": peak / roof,
                     "tok_s_sustained": peak * m.a.ddr_efficiency / roof,
                     "share": (1 / total) / (peak / roof),
                     "share_pl_lm_head": (1 / total_pl) / (peak / roof)},
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
        "pl_lm_head": {"lm_head_s": pl_head_s, "ttft_s": ttft_pl,
                          "prefill_tok_s": tokens / ttft_pl},
        "ddr_bytes": dict(nbytes, lm_head=head),
    }


def _layer_info(lay: dict) -> dict:
    keep = ("tlmm_compute", "weight_fill", "attention_engine", "kv_read_cycles",
            "attention_bound", "kv_read_bytes", "kv_write_bytes", "elementwise_exposed",
            "elementwise_work_per_token", "elementwise_busiest", "elementwise_busiest_share")
    return {k: lay[k] for k in keep}




# --------------------------------------------------------------------------- the top as built

def top_memory(a: PerfAssumptions, target_name: str):
    """The DDR as the top's 128-bit masters see it: ``sim.cycles_top.board_memory`` at the
    assumed efficiency (beats per cycle from the assumed clock when it is not the
    target's)."""
    from tellme.spec.targets import target

    from . import cycles_top as ct

    mem = ct.board_memory(target_name, a.ddr_efficiency)
    if a.clock_mhz != target(target_name).clock_mhz:
        mem = replace(mem, beats_per_cycle=min(1.0, a.ddr_bytes_per_cycle / ct.NB))
    return mem


def top_assumptions(a: PerfAssumptions) -> PerfAssumptions:
    """The assumptions with the top's hardware: one 128-bit weight port, one 128-bit KV /
    activation port, the integer attention engine (one) over the int8 KV cache."""
    return replace(a, weight_port_bytes=float(PORT_BYTES), kv_port_bytes=float(PORT_BYTES),
                   weight_ports="1 x 128-bit m_axi_w0 (HP0) = 16 B/cycle; m_axi_w1, "
                                "m_axi_w2 idle",
                   kv_port="128-bit m_axi_kv (HPC0) = 16 B/cycle per direction, shared by "
                           "the program fetch, every record's rows and the KV cache",
                   attention="int", attn_engines=1, kv_dtype="int8")


def top_cycles(prog, target_name: str, mem) -> dict:
    """CYCLES of ``prog`` on the top (``sim.cycles_top.program_cycles``) split by block:
    each record's unit time (command to last write response) to its block
    (:data:`OP_BLOCK`), its fetch / issue / hand-back and pass-1 beats and the program's
    start to the sequencer. ``per_layer``: the layers' records over the number of layers;
    ``outside_layers``: EMBED, the final norm and the program's start."""
    from . import cycles_top as ct

    r = ct.program_cycles(prog, target_name, mem=mem)
    blocks = dict.fromkeys(BLOCKS[:-1], 0)
    layer = dict.fromkeys(BLOCKS[:-1], 0)
    outside = dict.fromkeys(BLOCKS[:-1], 0)
    by_op: dict = {}
    blocks["sequencer"] = outside["sequencer"] = r["base"]
    for rc in r["records"]:
        b = OP_BLOCK[rc.op]
        seq = rc.cycles - rc.unit
        blocks[b] += rc.unit
        blocks["sequencer"] += seq
        by_op[rc.op] = by_op.get(rc.op, 0) + rc.unit
        part = layer if rc.layer is not None else outside
        part[b] += rc.unit
        part["sequencer"] += seq
    assert sum(blocks.values()) == r["total"]
    L = prog.num_layers
    return {"cycles": r["total"], "blocks": blocks,
            "by_op": {op: by_op[op] for op in OPS_ORDER if op in by_op},
            "per_layer": {k: v / L for k, v in layer.items()}, "outside_layers": outside,
            "records": len(prog.records)}


def _code_bytes(prog) -> int:
    """Bytes of the LINEAR records' codes (what m_axi_w0 carries)."""
    from tellme.spec.program import accesses

    return sum(n for r in prog.records if r.op == "LINEAR"
               for f, _, n, _ in accesses(r, prog) if f == "weights")


def _lm_head(m: _Model, mem, clk: float) -> tuple[float, float, int]:
    """(host A53 seconds, PL-head seconds, bytes) of the LM head of one row: the PL head is
    the top's unit as built (the final QUANT and LM_HEAD records, ``sim.cycles_top``); a
    hidden size it cannot take falls back to the host's head."""
    head = m.lm_head_bytes()
    host_s = head / (m.a.a53_gbps * 1e9)
    pl = m.pl_head_cycles(mem)
    return host_s, (host_s if pl is None else pl / clk), head


def _timing(mem) -> tuple:
    return (mem.read_latency, mem.write_latency, mem.beats_per_cycle, mem.write_issue)


def top_decode(m: _Model, context: int, mem, *, efficiencies=EFFICIENCIES) -> dict:
    """The decode step of the token at position ``context - 1`` on the top as built."""
    prog = m.program("decode", context - 1, 1)
    r = top_cycles(prog, m.tg.name, mem)
    clk = m.a.clock_mhz * 1e6
    pl_s = r["cycles"] / clk
    host_s, pl_head_s, head = _lm_head(m, mem, clk)
    sec = {k: v / clk for k, v in r["blocks"].items()}
    sec["lm_head"] = host_s
    total = pl_s + host_s
    total_pl = pl_s + pl_head_s                    # QUANT + LM_HEAD: two more records
    nbytes = m.program_bytes(prog)
    rd, wr = m.kv_traffic("decode", start=context - 1)
    nbytes["kv"] = m.cfg.num_layers * (rd + wr)
    nbytes["lm_head"] = head
    roof = nbytes["weights"] + nbytes["kv"] + nbytes["lm_head"]
    peak = m.a.ddr_peak_gbps * 1e9
    codes = _code_bytes(prog)
    at = {}
    for eff in efficiencies:
        ae = m.a.with_efficiency(eff)
        me = top_memory(ae, m.tg.name)
        c = (r["cycles"] if _timing(me) == _timing(mem)
             else top_cycles(prog, m.tg.name, me)["cycles"])
        pl_head_e = _lm_head(m, me, clk)[1]
        at[f"{eff:.2f}"] = {
            "pl_cycles": c, "tok_s": 1 / (c / clk + host_s),
            "tok_s_pl_lm_head": 1 / (c / clk + pl_head_e)}
    return {
        "context": context, "records": r["records"], "pl_cycles": r["cycles"],
        "per_layer_cycles": r["per_layer"], "outside_layers_cycles": r["outside_layers"],
        "per_token_cycles": r["blocks"], "by_op_cycles": r["by_op"],
        "per_token_s": sec, "seconds": total, "tok_s": 1 / total,
        "pl_s": pl_s, "lm_head_host_s": host_s,
        "pl_lm_head": {"lm_head_s": pl_head_s, "seconds": total_pl, "tok_s": 1 / total_pl},
        "at_efficiency": at,
        "ddr_bytes": nbytes, "kv_read_bytes": m.cfg.num_layers * rd,
        "weight_port": {"code_bytes": codes, "seconds": codes / (PORT_BYTES * clk),
                        "share_of_linears": codes / PORT_BYTES / r["blocks"]["linears"]},
        "roofline": {"bytes": roof, "tok_s_peak": peak / roof,
                     "tok_s_sustained": peak * m.a.ddr_efficiency / roof,
                     "share": (1 / total) / (peak / roof),
                     "share_pl_lm_head": (1 / total_pl) / (peak / roof)},
    }


def top_prefill(m: _Model, tokens: int, mem) -> dict:
    """A prompt of ``tokens`` from position 0 on the top as built, in calls of the TLMM's
    ``tok_max`` rows, then the LM head of the last row (TTFT)."""
    clk = m.a.clock_mhz * 1e6
    chunk = m.p.tok_max
    blocks = dict.fromkeys(BLOCKS[:-1], 0)
    layer = dict.fromkeys(BLOCKS[:-1], 0.0)
    by_op: dict = {}
    nbytes = dict.fromkeys(DDR_KINDS, 0)
    calls = []
    for s in range(0, tokens, chunk):
        n = min(chunk, tokens - s)
        prog = m.program("prefill", s, n)
        r = top_cycles(prog, m.tg.name, mem)
        calls.append({"start": s, "tokens": n, "pl_cycles": r["cycles"]})
        for k, v in r["blocks"].items():
            blocks[k] += v
        for k, v in r["per_layer"].items():
            layer[k] += v
        for k, v in r["by_op"].items():
            by_op[k] = by_op.get(k, 0) + v
        for k, v in m.program_bytes(prog).items():
            nbytes[k] += v
        rd, wr = m.kv_traffic("prefill", n_q=n, start=s)
        nbytes["kv"] += m.cfg.num_layers * (rd + wr)
    cyc = sum(blocks.values())
    pl_s = cyc / clk
    # the TLMM's own sweeps (sim.cycles.layer_cycles' compute), every layer and call
    tlmm = sum(m.segment(seg, c["tokens"])["compute"] for c in calls
               for seg in (SEG_A, SEG_B)) * m.cfg.num_layers
    host_s, pl_head_s, head = _lm_head(m, mem, clk)
    sec = {k: v / clk for k, v in blocks.items()}
    sec["lm_head"] = host_s
    ttft = pl_s + host_s
    ttft_pl = pl_s + pl_head_s
    return {
        "tokens": tokens, "chunks": len(calls), "calls": calls, "pl_cycles": cyc,
        "records": sum(len(m.program("prefill", c["start"], c["tokens"]).records)
                       for c in calls),
        "per_layer_cycles": layer, "per_call_cycles": blocks,
        "by_op_cycles": {op: by_op[op] for op in OPS_ORDER if op in by_op},
        "per_call_s": sec, "pl_s": pl_s, "ttft_s": ttft, "prefill_tok_s": tokens / ttft,
        "lm_head_host_s": host_s, "tlmm_compute_s": tlmm / clk,
        "pl_lm_head": {"lm_head_s": pl_head_s, "ttft_s": ttft_pl,
                          "prefill_tok_s": tokens / ttft_pl},
        "ddr_bytes": dict(nbytes, lm_head=head),
    }


# --------------------------------------------------------------------------- the report

def project(cfg: ModelConfig, target_name: str, a: PerfAssumptions, *, name: str,
            contexts=DECODE_CONTEXTS, prompts=PROMPTS, weights=None, source: str = "",
            extra_contexts=(), mem=None, overlapped: bool = True) -> dict:
    """The whole projection as a JSON-ready dict (``tellme perf --json`` prints it): the top
    as built (headline) and, with ``overlapped``, the per-block model with the design's
    overlaps (secondary). ``mem``: the top's memory (default :func:`top_memory`; e.g.
    ``sim.cycles_top.SIM_MEMORY`` to compare with the RTL simulation)."""
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

    # the top as built
    at = top_assumptions(a)
    effs = EFFICIENCIES if mem is None else ()      # a given memory: no board variants
    mem = top_memory(a, target_name) if mem is None else mem
    tm = _Model(cfg, target_name, at, weights=weights, max_context=max_ctx,
                max_tokens=max_tok)
    dec = {c: top_decode(tm, c, mem, efficiencies=effs) for c in all_ctx}
    pre = {n: top_prefill(tm, n, mem) for n in all_prompts}

    notes = []
    if effs and mem.beats_per_cycle >= 1.0:
        lo = PORT_BYTES * a.clock_mhz * 1e6 / (a.ddr_peak_gbps * 1e9)
        notes.append(f"the DDR does not bind the top: each 128-bit port takes 16 B/cycle "
                     f"({PORT_BYTES * a.clock_mhz / 1e3:.1f} GB/s), less than the DDR at any "
                     f"efficiency above {lo:.2f}; so its PL time is the same at "
                     + ", ".join(f"{e:.2f}" for e in sorted({*EFFICIENCIES, a.ddr_efficiency}))
                     + " (the PL LM head's included; the host A53 head is an assumed rate)")
    if max(all_ctx) > cfg.max_context:
        notes.append(f"contexts past the model's max_context {cfg.max_context} are projected "
                     f"for the hardware only (the model was not trained for them)")
    try:
        from tellme.spec.memory_map import memory_map

        memory_map(replace(cfg, max_context=max(cfg.max_context, max_ctx)), tg,
                   max_context=max_ctx, max_tokens=max_tok)
    except ValueError as e:
        notes.append(f"on the board: {e}")

    secondary = None
    if overlapped:
        secondary = _overlapped(cfg, target_name, a, weights, max_ctx, max_tok, all_ctx,
                                all_prompts, contexts, prompts)
    out = {
        "tool": "tellme perf", "kind": "projection", "model_of": "the top as built (hw/top.py)",
        "validated_against_rtl_top": True, "validated_on_board": False,
        "validation": VALIDATION, "notice": NOTICE, "model": name, "source": source,
        "config": cfg.to_dict(), "target": target_name,
        "assumptions": dict(asdict(at), ddr_bytes_per_cycle=a.ddr_bytes_per_cycle,
                            memory=asdict(mem), elementwise_lanes=tg.ew_lanes,
                            attention_engine=tm.engine_desc(),
                            tlmm=dict(t=tm.p.t, q=tm.p.q, v=tm.p.v, table=tm.p.table,
                                      half_depth=tm.p.half_depth, nbt_max=tm.p.nbt_max,
                                      tok_max=tm.p.tok_max)),
        "assumption_lines": top_assumption_lines(tm, mem, board=bool(effs)),
        "decode": [dec[c] for c in contexts],
        "prefill": [pre[n] for n in prompts],
        "overlapped_blocks": secondary,
        "tellme_v2": _tellme_beside(name, cfg, target_name),
        "goals": _goal_report(goals, dec, pre, tm) if goals else None,
        "notes": notes,
    }
    out["_all_decode"] = dec       # for the goals and plots; dropped from the JSON
    if secondary is not None:
        out["_all_overlapped"] = secondary.pop("_all")
    return out


def _overlapped(cfg, target_name, a, weights, max_ctx, max_tok, all_ctx, all_prompts,
                contexts, prompts) -> dict:
    """The per-block model with the design's overlaps (NOT the top as built): decode tok/s
    and TTFT per context / prompt, by block."""
    m = _Model(cfg, target_name, a, weights=weights, max_context=max_ctx, max_tokens=max_tok)
    dec = {c: decode_step(m, c) for c in all_ctx}
    pre = {n: prefill(m, n) for n in all_prompts}

    def d(x):
        return {"context": x["context"], "tok_s": x["tok_s"], "pl_s": x["pl_s"],
                "tok_s_pl_lm_head": x["pl_lm_head"]["tok_s"],
                "per_token_s": x["per_token_s"], "per_layer_cycles": x["per_layer_cycles"]}

    return {
        "label": "blocks in parallel: the per-block model with the design's overlaps (three "
                 "weight ports, fills under compute, element-wise hidden), NOT the top as "
                 "built; not validated against an RTL top",
        "assumption_lines": assumption_lines(m), "schedule": SCHEDULE,
        "weight_bytes_per_cycle": m.weight_bpc, "kv_bytes_per_cycle": m.kv_bpc,
        "decode": [d(dec[c]) for c in contexts],
        "prefill": [{"tokens": p["tokens"], "ttft_s": p["ttft_s"], "pl_s": p["pl_s"],
                     "prefill_tok_s": p["prefill_tok_s"],
                     "ttft_s_pl_lm_head": p["pl_lm_head"]["ttft_s"],
                     "per_call_s": p["per_call_s"]} for p in (pre[n] for n in prompts)],
        "_all": {c: d(dec[c]) for c in all_ctx},
    }


def top_assumption_lines(m: _Model, mem, board: bool = True) -> list[str]:
    """Every assumption of the headline figures (the top as built), one per line
    (``board``: ``mem`` is the board's DDR of :func:`top_memory`, else a given memory)."""
    from . import cycles_top as ct

    a, p, tg = m.a, m.p, m.tg
    bpc = a.ddr_bytes_per_cycle
    memory = (
        f"memory (sim.cycles_top.board_memory, assumed): DDR {a.ddr_peak_gbps:g} GB/s peak x "
        f"{a.ddr_efficiency:.2f} = "
        f"{a.ddr_peak_gbps * a.ddr_efficiency:.2f} GB/s = {bpc:.2f} B/cycle; each 128-bit "
        f"port moves min(1, {bpc:.2f}/16) = {mem.beats_per_cycle:g} beat/cycle; read latency "
        f"{mem.read_latency} cycles AR -> first R (sim/ddr_model.py DdrTiming), write "
        f"response {mem.write_latency} cycles last W -> B (taken equal), "
        f"{mem.write_issue:g} single-beat write/cycle; no interconnect stalls" if board else
        f"memory (given, not a board's DDR): {mem.describe()}")
    return [
        f"clock {a.clock_mhz:g} MHz (target {tg.name}); no timing closure: Vivado has not run",
        memory,
        f"ports (hw/top.py as built): weights {a.weight_ports}; {a.kv_port}",
        f"sequencer: one record at a time: fetch (read latency + {ct.REC_BEATS} beats), issue, "
        f"the unit's work to its last B, {ct.DONE_TO_AR} cycles back to the next fetch (7 "
        f"after a LINEAR); + {ct.REC_BEATS} pass-1 cycles per record; no overlap across "
        f"records, no weight prefetch across LINEARs",
        f"TLMM T={p.t} Q={p.q} {p.table} table, ping-pong halves of {p.half_depth} words "
        f"(a tile's codes stream while the previous tile computes, inside one LINEAR), tiles "
        f"<= {p.nbt_max} column blocks, <= {p.tok_max} tokens per call",
        f"element-wise: {tg.ew_lanes} lanes (ew_lanes), {a.stream_format.upper()} rows, every "
        f"record's rows read from and written to DDR",
        f"attention: {m.engine_desc()}; KV cache int8 + one {a.stream_format.upper()} scale "
        f"per row, read as stored, written by the quantising KV writer",
        "data-dependent timing taken as typical: the norm's rsqrt and the token scale's "
        "shifts (a N(0,1) row), EMBED's multiply (the mean bit length of an id)",
        f"LM head: host A53 after the PL call, int8 weights + fp32 row scales at an assumed "
        f"{a.a53_gbps:g} GB/s (no published K26 A53 GEMV figure); 'PL head' = the top's "
        f"LM-head unit as built (QUANT + LM_HEAD records: int8 codes + row scales on "
        f"m_axi_w1, 16 B/cycle, sim.cycles_top), which the driver uses",
        "validated: sim/cycles_top.py against the RTL top in Verilator simulation (records "
        "within 3 %, whole calls within 0.3 %; the demo model through this tool within 5 %), "
        "not on a board",
        "not modelled: host driver per call (program encoding, cache flush, interrupt), "
        "tokenizer, sampling",
    ]


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
    "LM head after the PL call (host A53) or as the last record (PL head); embedding gather "
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
        f"(no published K26 A53 GEMV figure); 'PL head' = a 64-lane unit at the sustained "
        f"DDR rate (lm_head_ddr: the head striped over the weight ports; not in the top)",
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


def _goal_report(goals: bool, dec: dict, pre: dict, m: _Model | None = None) -> list[dict]:
    """Each goal: met or not, by how much, and the limiting block (the top as built)."""
    out = []
    for ctx, want in GOALS["decode_tok_s"].items():
        r = dec[ctx]
        out.append(_verdict(f"decode at {ctx} context", "tok/s", r["tok_s"], want, True,
                            r["per_token_s"], r["pl_lm_head"]["tok_s"], _why(r, m)))
    for n, want in GOALS["ttft_s"].items():
        r = pre[n]
        out.append(_verdict(f"TTFT for {n} tokens", "s", r["ttft_s"], want, False,
                            r["per_call_s"], r["pl_lm_head"]["ttft_s"], _why(r, m)))
    return out


def _why(r: dict, m: _Model | None) -> dict:
    """Per block, why it takes its time in the top as built (a phrase for the goal text)."""
    if m is None:
        return {}
    a, tg = m.a, m.tg
    ops = r["by_op_cycles"]
    tot = sum(ops.get(op, 0) for op, b in OP_BLOCK.items() if b == "elementwise") or 1
    ew = ", ".join(f"{op} {ops[op] / tot:.0%}" for op in OPS_ORDER
                   if OP_BLOCK[op] == "elementwise" and ops.get(op))
    out = {
        "elementwise": f"{tg.ew_lanes} lanes, one record at a time, every row through DDR "
                       f"({ew})",
        "kv_write": "the int8 quantiser and single-beat writes, one KV head at a time",
        "attention": "one integer engine; the int8 KV cache through the 128-bit m_axi_kv",
        "sequencer": f"{r.get('records', 0) or '~'} records, each fetched and handed back "
                     f"serially",
        "lm_head": f"on the host A53 at the assumed {a.a53_gbps:g} GB/s",
    }
    wp = r.get("weight_port")
    if wp:
        out["linears"] = (f"the codes ({wp['code_bytes'] / 1e6:.1f} MB) through the one "
                          f"128-bit weight port m_axi_w0 alone take {wp['seconds'] * 1e3:.1f} ms"
                          f" ({wp['share_of_linears']:.0%} of the linears' time); the shell's "
                          f"three weight ports would carry them in a third of that")
    elif "tlmm_compute_s" in r:
        lin = r["per_call_s"]["linears"]
        out["linears"] = (f"the TLMM's sweeps alone take {r['tlmm_compute_s'] * 1e3:.1f} ms "
                          f"({r['tlmm_compute_s'] / lin:.0%} of the linears' time; "
                          f"sim.cycles.layer_cycles), the rest each LINEAR's first tile fill "
                          f"on the one weight port and its rows in and out")
    return out


def _verdict(what: str, unit: str, got: float, want: float, higher: bool, sec: dict,
             got_pl: float, why: dict | None = None) -> dict:
    met = got >= want if higher else got <= want
    total = sum(sec.values())
    budget = 1 / want if higher else want
    over = total - budget                    # seconds over the budget (> 0: missed)
    lim = max(sec, key=sec.get)
    why = why or {}
    r = {"goal": what, "unit": unit, "want": want, "projected": got, "met": met,
         "pl_lm_head": got_pl,
         "met_pl_lm_head": got_pl >= want if higher else got_pl <= want,
         "limiting_block": lim, "limiting_block_s": sec[lim],
         "limiting_block_share": sec[lim] / total, "over_budget_s": over,
         "why": why.get(lim, "")}
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
                 f"{BLOCK_LABELS[lim]} {sec[lim] * 1e3:.1f} ms ({sec[lim] / total:.0%})"
                 + (f", {r['why']}" if r["why"] else "") + f"; {fix}")
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
             "", "assumptions (the top as built, sim/cycles_top.py)"]
    lines += [f"  - {x}" for x in r["assumption_lines"]]
    tv = r["tellme_v2"]
    tv_ok = tv["comparable"]
    dec = r["decode"]

    # decode
    lines += ["", "decode, the top as built (one token; tok/s with the host A53 LM head; "
              "'PL head': the top's int8 LM-head unit on m_axi_w1, the driver's choice)"]
    effs = [f"{e:.2f}" for e in EFFICIENCIES]
    lines.append(f"  {'context':>7} {'ms/token':>9} {'PL ms':>8} {'tok/s':>7} {'PL head':>7} "
                 + " ".join(f"{'@' + e:>7} {'PL head':>7}" for e in effs)
                 + f" {'roofline':>8} {'share':>6} {'TeLLMe':>7}")
    for d in dec:
        at = d["at_efficiency"]
        lines.append(
            f"  {d['context']:>7} {d['seconds'] * 1e3:>9.2f} {d['pl_s'] * 1e3:>8.2f} "
            f"{d['tok_s']:>7.1f} {d['pl_lm_head']['tok_s']:>7.1f} "
            + " ".join(f"{at[e]['tok_s']:>7.1f} {at[e]['tok_s_pl_lm_head']:>7.1f}"
                       if e in at else f"{'-':>7} {'-':>7}" for e in effs)
            + f" {d['roofline']['tok_s_peak']:>8.1f} {d['roofline']['share']:>6.0%} "
            + (f"{tv['decode_tok_s']:>7g}" if tv_ok else f"{'-':>7}"))
    wp = dec[0]["weight_port"]
    lines.append(f"  roofline: DDR peak {a['ddr_peak_gbps']:g} GB/s over the bytes a token "
                 f"must move (weights + KV + LM head); share = tok/s / roofline. The one "
                 f"weight port: {wp['code_bytes'] / 1e6:.1f} MB of codes at 16 B/cycle = "
                 f"{wp['seconds'] * 1e3:.1f} ms per token ({wp['share_of_linears']:.0%} of the "
                 f"linears' time)" + (f"; TeLLMe: {tv['note']}" if tv_ok else ""))

    # decode breakdown
    lines += ["", "decode breakdown, the top as built: cycles per layer | ms per token"]
    lines.append(f"  {'block':<32}" + "".join(f"{'ctx ' + str(d['context']):>22}"
                                             for d in dec))
    for b in BLOCKS:
        row = f"  {BLOCK_LABELS[b]:<32}"
        for d in dec:
            pl = d["per_layer_cycles"].get(b)
            row += f"{(f'{pl:,.0f}' if pl is not None else '-'):>13}{_ms(d['per_token_s'][b])} "
        lines.append(row.rstrip())
    row = f"  {'total':<32}"
    for d in dec:
        row += f"{sum(d['per_layer_cycles'].values()):>13,.0f}{_ms(d['seconds'])} "
    lines.append(row.rstrip())
    for d in dec:
        lines.append(f"  ctx {d['context']}: {d['pl_cycles']:,} PL cycles, {d['records']} records;"
                     f" outside the layers (EMBED, final norm, program start) "
                     f"{sum(d['outside_layers_cycles'].values()):,} cycles; by record kind "
                     f"(unit time, ms): " + ", ".join(
                         f"{op} {v / (a['clock_mhz'] * 1e3):.2f}"
                         for op, v in d["by_op_cycles"].items()))

    # DDR bytes
    lines += ["", "DDR bytes per decode token (MB); activations: every record's rows through "
              "DDR (the top keeps no row on chip)"]
    lines.append(f"  {'kind':<12}" + "".join(f"{'ctx ' + str(d['context']):>12}" for d in dec))
    for k in (*DDR_KINDS, "total"):
        vals = [sum(d["ddr_bytes"].values()) if k == "total" else d["ddr_bytes"][k]
                for d in dec]
        lines.append(f"  {k:<12}" + "".join(f"{v / 1e6:>12.3f}" for v in vals))

    # prefill
    lines += ["", "prefill, the top as built (prompt from position 0 in calls of <= "
              f"{a['tlmm']['tok_max']} rows; TTFT = the PL calls + the LM head of the last row)"]
    lines.append(f"  {'tokens':>7} {'calls':>5} {'TTFT s':>8} {'PL s':>7} {'tok/s':>7} "
                 f"{'PL head: TTFT':>11} {'tok/s':>7} {'TeLLMe TTFT':>11}")
    for p in r["prefill"]:
        tt = tv["ttft_s"].get(str(p["tokens"])) if tv_ok else None
        lines.append(
            f"  {p['tokens']:>7} {p['chunks']:>5} {p['ttft_s']:>8.3f} {p['pl_s']:>7.3f} "
            f"{p['prefill_tok_s']:>7.1f} {p['pl_lm_head']['ttft_s']:>11.3f} "
            f"{p['pl_lm_head']['prefill_tok_s']:>7.1f} {(f'{tt:g}' if tt else '-'):>11}")
    if tv_ok:
        lines.append(f"  TeLLMe prefill: {tv['prefill_tok_s']:g} tok/s; tok/s here = prompt "
                     f"tokens / TTFT")
    for p in r["prefill"]:
        lines.append(f"  {p['tokens']} tok, ms per prompt: " + ", ".join(
            f"{b} {p['per_call_s'][b] * 1e3:.1f}" for b in BLOCKS) + "; cycles per layer: "
            + ", ".join(f"{b} {v:,.0f}" for b, v in p["per_layer_cycles"].items())
            + "; by record kind (ms): " + ", ".join(
                f"{op} {v / (a['clock_mhz'] * 1e3):.1f}" for op, v in p["by_op_cycles"].items()))

    # the per-block model with overlaps
    ov = r.get("overlapped_blocks")
    if ov:
        lines += ["", "secondary: blocks in parallel, NOT the top as built (the previous "
                  "per-block model with the design's overlaps; not validated against the top)"]
        al = ov["assumption_lines"]
        lines += [f"  - {x}" for x in al if x.startswith(("ports", "weight delivery",
                                                          "attention", "KV cache"))]
        lines.append("  - " + ov["schedule"][0])
        lines.append("  decode tok/s (PL head): " + ", ".join(
            f"ctx {d['context']} {d['tok_s']:.1f} ({d['tok_s_pl_lm_head']:.1f}), PL "
            f"{d['pl_s'] * 1e3:.1f} ms" for d in ov["decode"]))
        lines.append("  TTFT s (PL head): " + ", ".join(
            f"{p['tokens']} tok {p['ttft_s']:.3f} ({p['ttft_s_pl_lm_head']:.3f})"
            for p in ov["prefill"]))

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
                  f"{GOALS['clock_mhz']:g} MHz), the top as built"]
        for g in r["goals"]:
            extra = (f" [PL LM head: {g['pl_lm_head']:.3g} {g['unit']}, "
                     f"{'met' if g['met_pl_lm_head'] else 'missed'}]")
            lines.append(f"  - {g['text']}{extra}")
    for n in r["notes"]:
        lines.append(f"  note: {n}")
    return "\n".join(lines)


def plot(report: dict, out_dir) -> list:
    """The projection's plots (sim/perf_plots.py); needs matplotlib (the ``plot`` extra)."""
    from .perf_plots import plot_report

    return plot_report(report, out_dir)


PLOT_CONTEXTS = (64, 128, 256, 512, 1024, 2048, 4096)
