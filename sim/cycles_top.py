"""Whole-step cycle model of the accelerator top (hw/top.py, docs/hw/top.md), composed from
the block models and the row unit's actual schedule; validated against the RTL top's CYCLES
register by tests/rtl/test_top_cycles.py (docs/performance.md, "Whole-step cycle model").

The top runs a program one record at a time (hw/sequencer.py): it fetches record i (one
4-beat burst), issues it, waits for its unit's ``done`` and only then fetches record i+1.
So a call's cycles are the sequencer's pass-1 check plus, per record, the fetch and the
unit's work, with nothing overlapped across records. :func:`record_cycles` gives one
record's share (the cycles it adds to a program: its 4 pass-1 beats, its fetch, the unit's
schedule up to the next record's fetch), :func:`program_cycles` a whole program,
:func:`call_cycles` a call of a model (the entry point for the performance tool).

What each record does (hw/exec_ew.py, hw/exec_attn.py, hw/row_dma.py), in the model:

* **Row movers** (``RowDMA``): a mover command has ``rows`` rows; per row each reader in use
  fetches its operand row (``RowReader``: INCR bursts of at most 16 beats, 2 in flight, 2
  commands queued, so the readers run ahead of the writer), the op's block combines the
  beats, and the writer (``KVWriter``) stores the row. The writer takes one row at a time:
  after a row's last input beat it emits its last W beat (2 cycles; 3 when two W beats are
  left), waits for that row's B (the memory's write latency) and takes the next row's
  command, whose first input beat it accepts 2 cycles after the B. So a row of ``b`` beats
  costs ``b + 3 + write_latency`` cycles (+1 for a second trailing W beat) when its block
  streams a beat per cycle (RESIDUAL, GATED_ACT, ROPE, EMBED's rows) and more when the
  block is slower (NORM's two passes and rsqrt; QUANT's token scale and repacker; LINEAR's
  engine). A command's first row waits for the first R beat of every operand it needs
  (the readers' AR 5 and 7 cycles after the command, the port's beats in AR order), then
  the reader's window (3 cycles) and the block's pipeline latency.
* **The sequencer**: the record's burst (AR, ``read_latency``, 4 beats), the command
  handshake one cycle after its last beat, and from the unit's last B response to the next
  record's AR 6 cycles (writer idle, ``RowDMA`` done, the unit's done, the sequencer's
  next fetch, its ARVALID, the read arbiter's cycle); 7 after a LINEAR (its L_END state).
  The pass-1 check streams 4 beats per record: each record adds 4 cycles there.
* **EMBED**: the ids (one read-only command), then per row 6 + bitlen(id) cycles of
  address arithmetic (``ADDR``, ``LOAD``, the shift-and-add multiply) and one mover command
  for the table row through ``FloatToStream``.
* **NORM**: one command for the rows, the norm block's per-row time (``sim.cycles_ew``:
  pass 1, drain, rsqrt, pass 2, emit; rows do not overlap: one row buffer), then the absmax
  row (one more command).
* **QUANT**: the absmax row (read-only), two 17-step divisions, then one command for the
  rows: per row the token scale (``TokenScale``, two scalar divisions) and the repacker's
  ``n/lanes + ceil(n/D)`` cycles, zero beats up to ``kpad``, the writer's turnaround.
* **LINEAR**: the absmax row, then per tile one mover command: the activations' first beat,
  the TLMM engine's sweeps (``sim.cycles.command_timing``'s recurrence, its first sweep held
  until the tile's codes are in the buffer: the weight streamer fills one tile ahead at
  ``min(v, port)`` vectors per cycle), the output buffer draining ``Q/lanes`` sub-beats per
  column block, ``Dequantize``, the writer; the next tile's command after the last B.
* **ROPE**: per token row one mover command whose rows are the heads.
* **KV_WRITE**: per kind and KV head one quantiser + writer pass over the rows (the
  quantiser's bank recurrence of ``sim.cycles_kv_quant``, its input at the movers' 2
  elements per cycle, a bank free once its row's last beat is taken; the int8 writer's
  single-beat writes: per K row its pieces and the scale, per V row a write per code and
  the scale; a beat taken under backpressure is followed by the next only after its
  ``beat / lanes`` lane groups pass the quantiser's output register).
* **ATTENTION**: the two small loops (g and n_pe), then per call (``spec.attention.
  prefill_calls``; the next call only after this one's last B) the KV reader's first
  burst, the q rows behind it, the integer engine (``sim.cycles_attn_int.calls_cycles`` at
  the preset's q_beat and o_beat)
  plus the cycles its stream waits for ``KVInt8Reader`` (per K block a job cycle and the
  scale header's beats; the port's bytes when that is slower) and the outputs' writes.

The memory: :class:`MemoryModel` (read latency: AR handshake to first R beat; write
latency: last W beat to B; beats per cycle; single-beat writes per cycle). ``SIM_MEMORY``
is the simulation's (sim/rtl_device.py: cocotbext-axi ``AxiRam``, no pause generator);
:func:`board_memory` a board's (the DDR latency of ``sim.ddr_model.DdrTiming``, the 128-bit
ports).

Data-dependent timing the model takes as typical: the rsqrt and token-scale divisions'
normalising shifts (a representative row; the shift count depends mostly on the row length)
and EMBED's multiply (the mean bit length of an id below ``vocab``, or the ids if given).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache, lru_cache

__all__ = ["MemoryModel", "SIM_MEMORY", "board_memory", "RecordCycles", "record_cycles",
           "base_cycles", "program_cycles", "call_cycles", "step_cycles", "clear_cache"]

NB = 16                  # bytes per AXI beat (128-bit ports)
MAX_BURST = 16           # the row readers' and writer's burst cap (hw/row_dma.py)
RD_OUTSTANDING = 2       # row reader bursts in flight (its R FIFO holds 2 * 16 beats)

# ---- the sequencer and the read arbiter (hw/sequencer.py, hw/axi_arbiter.py)
REC_BEATS = 4            # a record is 4 beats: each record adds 4 cycles to pass 1
ISSUE = 1                # last beat of a record -> its command handshake (ISSUE state)
DONE_TO_AR = 6           # a unit's last B -> the next record's AR handshake: writer idle,
#                          RowDMA done, the unit's done register, the sequencer's fetch state,
#                          its ARVALID, the arbiter's grant
BASE_ADJ = -1            # CYCLES misses the START state's cycle: the sequencer's counters_clear
#                          pulse is that cycle, and the register file's clear wins over the
#                          increment (hw/regs.py) - against sim.cycles_seq's count

# ---- the row movers (hw/row_dma.py, hw/row_reader.py, hw/attention/kv_dma.py KVWriter)
AR_FIRST = 5             # mover command -> reader 0's AR at the port (register, beat count,
#                          burst issue, ARVALID, arbiter)
AR_NEXT = 2              # the next reader's AR (the arbiter grants one AR at a time)
R_TO_BLOCK = 3           # R beat -> the vector at the block (R FIFO, window, vector)
WR_FIRST = 2             # mover command -> the writer takes its first beat (writer command)
TAKE_TO_WL = 1           # last taken beat -> W emit decision; + one cycle per W beat left
B_TO_TAKE = 2            # B -> the writer's next row command taken -> its first beat
B_TO_CMD = 3             # B -> the unit's next mover command (RowDMA done, the unit's FSM)


@dataclass(frozen=True)
class MemoryModel:
    """The DDR as the top's masters see it."""

    name: str
    read_latency: int            # AR handshake -> first R beat handshake, cycles
    write_latency: int           # last W beat handshake -> B handshake, cycles
    beats_per_cycle: float = 1.0     # R (and W) beats a port moves per cycle
    write_issue: float = 1.0     # single-beat writes (AW + W) accepted per cycle

    def describe(self) -> str:
        return (f"{self.name}: read latency {self.read_latency}, write response "
                f"{self.write_latency} cycles, {self.beats_per_cycle:g} beats/cycle, "
                f"{self.write_issue:g} single-beat writes/cycle")


# cocotbext-axi AxiRam (sim/rtl_device.py): its AR sink and R source are clocked queues, so
# the first R beat follows the AR handshake by 2 cycles and B the last W beat by 2; beats
# stream one per cycle, single-beat writes one per cycle.
SIM_MEMORY = MemoryModel("cocotbext-axi AxiRam (RTL simulation, no pause generator)",
                         read_latency=2, write_latency=2, beats_per_cycle=1.0,
                         write_issue=1.0)


def board_memory(target: str = "kv260", ddr_efficiency: float = 0.85,
                 write_latency: int | None = None) -> MemoryModel:
    """A board's DDR behind the 128-bit HP ports: ``sim.ddr_model.DdrTiming``'s read
    latency (the write response taken as long unless given), beats per cycle the smaller of
    the port (one beat) and the DDR's sustained bytes per cycle over 16."""
    from tellme.spec.targets import target as get_target

    from .ddr_model import DdrTiming

    tg = get_target(target)
    lat = DdrTiming().latency
    ddr = tg.ddr_peak_gbps * 1e9 * ddr_efficiency / (tg.clock_mhz * 1e6)
    return MemoryModel(f"{target} DDR ({ddr_efficiency:.0%} of {tg.ddr_peak_gbps} GB/s) "
                       f"behind 128-bit HP ports (assumed)", read_latency=lat,
                       write_latency=lat if write_latency is None else write_latency,
                       beats_per_cycle=min(1.0, ddr / NB), write_issue=1.0)


@dataclass
class RecordCycles:
    """One record's share of a program: ``cycles`` = the cycles it adds to the program's
    CYCLES (its pass-1 beats, fetch, issue, the unit's work, the hand-back); ``unit`` = from
    its command handshake to its unit's last B response (or last read)."""

    op: str
    layer: int | None
    cycles: int
    unit: int
    detail: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers

def _fmt(program):
    from tellme.spec.numerics import STREAM_FORMATS

    return STREAM_FORMATS[program.fmt]


def _target(target):
    from tellme.spec.targets import target as get_target

    return get_target(target) if isinstance(target, str) else target


def _read_beats(addr: int, nbytes: int) -> int:
    return 0 if nbytes <= 0 else (addr % NB + nbytes + NB - 1) // NB


def _first_burst(addr: int, nbytes: int) -> int:
    beats = _read_beats(addr, nbytes)
    to_page = (4096 - (addr // NB * NB) % 4096) // NB
    return min(beats, MAX_BURST, to_page)


def _first_rs(ars: list[tuple[int, int]], mem: MemoryModel) -> list[int]:
    """First R beat of each burst [(AR cycle, beats)] on an in-order port."""
    free, out = -10 ** 9, []
    for ar, beats in ars:
        r = max(ar + mem.read_latency, free)
        out.append(r)
        free = r + math.ceil(beats / mem.beats_per_cycle)
    return out


def _emits_after(skip: int, takes: int, wb: int) -> int:
    """W beats the writer still emits after its last taken beat: the accumulator holds
    ((skip + (takes - 1) * wb) mod 16) + wb bytes then (it never falls behind: < 16 bytes
    in, one beat out per cycle)."""
    if takes <= 0:
        return 0
    left = (skip + (takes - 1) * wb) % NB + wb
    return -(-left // NB)


def _lanes(tg) -> int:
    return tg.ew_lanes


def _reader_rate(mem: MemoryModel) -> float:
    """AXI beats per cycle one row reader sustains: 2 bursts of 16 in flight."""
    return min(mem.beats_per_cycle,
               RD_OUTSTANDING * MAX_BURST / (mem.read_latency + MAX_BURST))


@dataclass
class _Row:
    """A writer row: ``takes`` input beats of ``wb`` bytes to ``dst``; ``rd``: the AXI beats
    each reader fetches for it (a bound on its period when the port or a reader is slow)."""

    takes: int
    wb: int
    dst: int
    rd: tuple = ()


def _rows(first: int, rows: list[_Row], mem: MemoryModel) -> int:
    """Rows through a pass-through block and the writer from the first row's first take at
    ``first``: per row its takes (one per cycle unless the readers or the port are slower),
    the trailing W beats, the B, the next row's first take ``B_TO_TAKE`` after (the readers
    are ahead by then). Returns the last B's cycle."""
    t, b = first, first
    rate = _reader_rate(mem)
    for r in rows:
        span = max(r.takes, max((x / rate for x in r.rd), default=0.0),
                   sum(r.rd) / mem.beats_per_cycle,
                   _read_beats(r.dst, r.takes * r.wb) / mem.beats_per_cycle)
        last = t + math.ceil(span) - 1
        b = last + TAKE_TO_WL + _emits_after(r.dst % NB, r.takes, r.wb) + mem.write_latency
        t = b + B_TO_TAKE
    return b


def _mover_first(m: int, needed: list[tuple[int, int]], mem: MemoryModel, *,
                 ahead: tuple[int, int] | None = None) -> int:
    """Cycle the last needed operand's first vector reaches the block, for a mover command
    accepted at ``m``. ``needed``: (address, bytes of the first row) of the readers in use,
    in reader order (their ARs ``AR_FIRST``, ``AR_FIRST + AR_NEXT`` after ``m``; the port
    returns the bursts in AR order); ``ahead``: (AR cycle, beats) of another client's burst
    granted before them."""
    ars = [] if ahead is None else [ahead]
    ars += [(m + AR_FIRST + AR_NEXT * i, _first_burst(a, n)) for i, (a, n) in enumerate(needed)]
    rs = _first_rs(ars, mem)
    return max(rs[1:] if ahead is not None else rs) + R_TO_BLOCK


def _read_only(m: int, addr: int, nbytes: int, vectors: int, mem: MemoryModel) -> int:
    """A read-only mover command of one row accepted at ``m``: the cycle its last vector
    leaves the reader."""
    beats = _read_beats(addr, nbytes)
    r0 = m + AR_FIRST + mem.read_latency
    r_last = r0 + math.ceil(beats / mem.beats_per_cycle) - 1
    return max(r_last + R_TO_BLOCK, r0 + R_TO_BLOCK + vectors - 1)


# --------------------------------------------------------------------------- block times

@cache
def _norm_row(cols: int, lanes: int, eps: float, fmt_name: str) -> int:
    """One row through RMSNormAbsmax, first input beat to last output beat (a typical row:
    N(0, 1) values; the rsqrt's shifts depend mostly on the row length)."""
    import numpy as np

    from tellme.spec.numerics import STREAM_FORMATS

    from .cycles_ew import rmsnorm_cycles

    fmt = STREAM_FORMATS[fmt_name]
    row = fmt.round(np.random.default_rng(0).normal(0.0, 1.0, cols).astype(np.float32))
    return rmsnorm_cycles([row], lanes, eps, fmt)


@cache
def _token_scale(ws: float, fmt_name: str) -> int:
    """TokenScale, accept to transfer (an amax of 1: every normal amax takes the same
    normalising shifts)."""
    import numpy as np

    from tellme.spec.numerics import STREAM_FORMATS

    from .cycles_ew import token_scale_cycles

    fmt = STREAM_FORMATS[fmt_name]
    return token_scale_cycles(np.asarray(1.0, dtype=fmt.dtype), ws, fmt)


@cache
def _quant_row(beats: int, lanes: int, out_lanes: int) -> int:
    from .cycles_ew import quantize_cycles

    return quantize_cycles([beats], lanes, out_lanes)


@lru_cache(maxsize=4096)
def _engine(kb: int, nbt: int, n_tok: int, valid: int, table: str) -> tuple[int, tuple]:
    """The TLMM engine's sweeps (``sim.cycles.command_timing``'s recurrence) from its first
    activation beat at cycle 0, its first sweep held until the tile's codes are usable at
    ``valid``; returns (last issue, last issue of each token's last sweep)."""
    from .cycles import sweep_issues

    last = sweep_issues(table=table, kb=kb, nbt=nbt, n_tokens=n_tok, first=0, valid=valid)
    tok_last = [last[k] for k in range(kb - 1, kb * n_tok, kb)]
    return last[-1], tuple(tok_last)


# --------------------------------------------------------------------------- the ops

def _ew_pipe(rec, program, tg, mem, u):
    """RESIDUAL / GATED_ACT: one command, both operands, a per-element pipeline."""
    from tellme.hw.elementwise import gated_act, residual
    from tellme.spec.memory_map import row_stride

    a = rec.args
    L, eb = _lanes(tg), program.elem_bytes
    x, y = (a["gate"], a["up"]) if rec.op == "GATED_ACT" else (a["x"], a["y"])
    lat = gated_act.LATENCY if rec.op == "GATED_ACT" else residual.LATENCY
    cols, n = a["cols"], a["rows"]
    st = row_stride(cols, eb)
    m = u                                                 # the command goes straight on
    first = max(_mover_first(m, [(x, cols * eb), (y, cols * eb)], mem) + lat, m + WR_FIRST)
    rows = [_Row(cols // L, L * eb, a["dst"] + r * st,
                 (_read_beats(x + r * st, cols * eb), _read_beats(y + r * st, cols * eb)))
            for r in range(n)]
    return _rows(first, rows, mem), {}


def _rope(rec, program, tg, mem, u):
    from tellme.hw.elementwise import rope
    from tellme.spec.memory_map import row_stride

    a = rec.args
    L, eb = _lanes(tg), program.elem_bytes
    hd, heads = a["head_dim"], a["heads"]
    st = row_stride(heads * hd, eb)
    tab0 = a["table"] + a["start"] * hd * eb
    m = u + 4                                             # SIZE, TABLE, STRIDE, ROW
    b = m
    for r in range(a["rows"]):                            # a command per token row
        src, tab = a["src"] + r * st, tab0 + r * hd * eb
        first = max(_mover_first(m, [(src, hd * eb), (tab, hd * eb)], mem) + rope.LATENCY,
                    m + WR_FIRST)
        rows = [_Row(hd // L, L * eb, a["dst"] + r * st + h * hd * eb,
                     (_read_beats(src + h * hd * eb, hd * eb), _read_beats(tab, hd * eb)))
                for h in range(heads)]
        b = _rows(first, rows, mem)
        m = b + B_TO_CMD
    return b, {}


def _id_bits(vocab: int) -> float:
    """Mean bit length of an id uniform in [0, vocab)."""
    total, lo, k = 0, 1, 1
    while lo < vocab:
        hi = min(2 * lo, vocab)
        total += (hi - lo) * k
        lo, k = hi, k + 1
    return total / vocab


def _embed(rec, program, tg, mem, u, ids=None):
    from tellme.hw.elementwise.stream_fp import ROUND_FP_STAGES
    from tellme.spec.memory_map import row_stride
    from tellme.spec.program import DTYPE_BYTES, FLOAT_DTYPES

    conv_lat = 1 + ROUND_FP_STAGES                        # FloatToStream
    a = rec.args
    L, eb = _lanes(tg), program.elem_bytes
    n, cols = a["rows"], a["cols"]
    tb = DTYPE_BYTES[FLOAT_DTYPES[a["dtype"]]]
    st = row_stride(cols, eb)
    ids = None if ids is None else [int(i) for i in ids][:n]
    bits = ([i.bit_length() for i in ids] if ids is not None
            else [_id_bits(a["vocab"])] * n)
    # pass 1: the ids (a read-only command), checked against vocab
    t = _read_only(u + 1, a["ids"], 4 * n, -(-n // L), mem) + 2       # the movers' done
    b = t
    for r in range(n):                                    # pass 2: a command per row
        m = t + 4 + bits[r]                               # ADDR, LOAD, MUL (bits + 1), ROW
        tab = a["table"] + (ids[r] if ids is not None else 0) * cols * tb
        first = max(_mover_first(m, [(tab, cols * tb)], mem) + conv_lat, m + WR_FIRST)
        b = _rows(first, [_Row(cols // L, L * eb, a["dst"] + r * st,
                               (_read_beats(tab, cols * tb),))], mem)
        t = b + 2                                         # MOVE sees the movers' done
    return math.ceil(b), {"id_bits": sum(bits) / max(n, 1)}


def _norm(rec, program, tg, mem, u):
    from tellme.spec.memory_map import row_stride

    a = rec.args
    L, eb = _lanes(tg), program.elem_bytes
    n, cols = a["rows"], a["cols"]
    beats = cols // L
    st = row_stride(cols, eb)
    gb = {0: 4, 1: 2, 2: 2}[a["dtype"]] * cols            # the gain row, as stored
    m = u                                                 # the command goes straight on
    p1 = _mover_first(m, [(a["src"], cols * eb)], mem)    # row 0's pass 1 (x only)
    row = _norm_row(cols, L, float(a["eps"]), program.fmt)
    b = None
    for r in range(n):
        last = p1 + row - 1                               # pass 2's beats end the row ...
        if b is not None:                                 # ... unless the writer is late
            last = max(last, b + B_TO_TAKE + beats - 1)
        b = (last + TAKE_TO_WL + _emits_after((a["dst"] + r * st) % NB, beats, L * eb)
             + mem.write_latency)
        rd = _read_beats(a["src"] + r * st, cols * eb) + _read_beats(a["gain"], gb)
        p1 = max(last + 2, math.ceil(p1 + rd / mem.beats_per_cycle))   # one row buffer
    # the absmax row: one more command, vecs(n) beats from the absmax RAM
    takes = -(-n // L)
    last = b + B_TO_CMD + WR_FIRST + takes - 1
    b = last + TAKE_TO_WL + _emits_after(a["amax"] % NB, takes, L * eb) + mem.write_latency
    return b, {"norm_row": row}


def _amax_read(rec, program, tg, mem, m1):
    """QUANT / LINEAR: the absmax row into the RAM (a read-only command at ``m1``); the
    cycle its last vector is in."""
    L, eb = _lanes(tg), program.elem_bytes
    n = rec.args["rows"]
    return _read_only(m1, rec.args["amax"], n * eb, -(-n // L), mem)


def _quant(rec, program, tg, mem, u):
    from tellme.hw.elementwise import quantize
    from tellme.spec.memory_map import align

    a = rec.args
    L, eb = _lanes(tg), program.elem_bytes
    D = L * eb                                            # int8 per written beat
    n, cols, kpad = a["rows"], a["cols"], a["kpad"]
    m1 = u + 1                                            # AMAX
    m2 = max(m1 + 19, _amax_read(rec, program, tg, mem, m1) + 4)    # 17 division steps;
    #                                                       the movers' done, CHECK, ROWS
    ts = _token_scale(0.0, program.fmt)
    qrow = _quant_row(cols // L, L, D)                    # a row's first input to last beat
    zeros = kpad // D - -(-cols // D)                     # zero beats up to kpad
    takes = kpad // D
    wst = align(kpad, 64)
    rd = _read_beats(a["src"], cols * eb)
    # per row: its s_q from TokenScale (the RAM read, two divisions; the next row's starts
    # once this one is taken), Quantize's pipeline and repacker, the zero beats
    s = m2 + 2 + ts
    b = None
    for r in range(n):
        if r:
            s = max(s + 1 + ts, s + cols // L + 1)
        start = s + 1 + quantize.LATENCY                  # the row's first quantised beat
        if b is not None:
            start = max(start, b + B_TO_TAKE)
        last = start + max(qrow - quantize.LATENCY, math.ceil(rd / mem.beats_per_cycle)) \
            - 1 + zeros
        b = (last + TAKE_TO_WL + _emits_after((a["dst"] + r * wst) % NB, takes, D)
             + mem.write_latency)
    return b, {"token_scale": ts, "quant_row": qrow}


def _linear(rec, program, tg, mem, u):
    from tellme.hw.elementwise import dequantize, outbuf
    from tellme.hw.presets import preset
    from tellme.spec.memory_map import row_stride
    from tellme.spec.tlmm import PIPELINE_LATENCY

    a = rec.args
    p = preset(tg.name)
    L, eb = _lanes(tg), program.elem_bytes
    n, kb, nb, tnb = a["rows"], a["kb"], a["nb"], a["tile_nb"]
    T, Q = p.t, p.q
    m = _amax_read(rec, program, tg, mem, u + 1) + 5      # done, L_CHECK, L_CMD, L_TILE
    # the codes: the streamer starts at L_CMD and fills the buffer halves one tile ahead,
    # at the buffer's v vectors per cycle or the port's bits per cycle over 5T
    fill_rate = min(p.v, mem.beats_per_cycle * NB * 8 / (5 * T))
    fill_end = m + 4 + mem.read_latency                   # first code beat (AR: L_CMD + 5)
    tiles = [min(tnb, nb - c) for c in range(0, nb, tnb)]
    wst = row_stride(a["n"], eb)
    read_done = []
    b = m
    for i, nbt in enumerate(tiles):
        start = fill_end if i < 2 else max(fill_end, read_done[i - 2] + mem.read_latency)
        fill_end = start + math.ceil(nbt * kb * Q / fill_rate)
        valid = fill_end + 3                              # the half's tile_valid
        # the tile's mover command: the activation rows, T/L vectors per 3T-byte beat
        a0 = _mover_first(m, [(a["src"], kb * 3 * T)], mem) + T // L - 1
        last, tok_last = _engine(kb, nbt, n, max(0, valid - a0), p.table)
        read_done.append(a0 + last)
        keep = -(-min(a["n"] - sum(tiles[:i]) * Q, nbt * Q) // L)   # written sub-beats
        # per token: its nbt Q-beats leave the engine in its last sweep, the output buffer
        # drains them a sub-beat per cycle, Dequantize, the writer (a row per token)
        b = None
        for t_i, lt in enumerate(tok_last):
            first = (a0 + lt - nbt + 1 + PIPELINE_LATENCY + outbuf.LATENCY
                     + dequantize.LATENCY)
            if b is not None:
                first = max(first, b + B_TO_TAKE)
            last = first + keep - 1                       # (the engine emits a Q-beat a
            #                                               cycle: the drain binds)
            dst = a["dst"] + t_i * wst + sum(tiles[:i]) * Q * eb
            b = last + TAKE_TO_WL + _emits_after(dst % NB, keep, L * eb) + mem.write_latency
        m = b + B_TO_CMD                                  # the next tile's command
    return b, {"tiles": len(tiles), "fill_rate": fill_rate}


@lru_cache(maxsize=4096)
def _kv_pair(kind: str, n: int, bpr: int, qb: int, ql: int, in_step: int, nch: int,
             fmt_name: str, write_issue: float) -> int:
    """One (kind, KV head) pass of the quantising writer over ``n`` rows, from the first
    quantiser input beat at cycle 0 to its last write: per row the quantiser's bank
    recurrence (``sim.cycles_kv_quant.beat_cycles``: a bank is free once its row's last beat
    is taken; its input at the movers' rate), then the int8 writer's single-beat writes
    (K: a piece per beat, the padding, the scale; V: a write per code, the scale). A beat
    taken under backpressure is followed by the next one ``qb / ql`` cycles later (its lane
    groups pass the output register)."""
    from tellme.hw.attention.kv_quant import KVQuantizer, max_stages
    from tellme.spec.numerics import STREAM_FORMATS

    dm = max_stages(qb)
    lat = KVQuantizer.LATENCY
    sc = KVQuantizer.scale_cycles(STREAM_FORMATS[fmt_name])
    g = qb // ql
    per = 1 if kind == "K" else qb                        # writes per quantiser beat
    wi = 1 / write_issue
    in_end, scale_free, issue_end = -1, 0, -1
    w, take, taken = -wi, 0.0, []
    for r in range(n):
        start = in_end + 1
        if r >= 2:
            start = max(start, taken[r - 2] + 1)          # the row's bank is free
        in_end = start + (bpr - 1) * in_step
        ready = max(in_end + dm + 1, scale_free) + sc
        scale_free = ready
        first = max(ready, issue_end + 1)
        issue_end = first + bpr * g - 1
        for j in range(bpr):
            avail = max(first + (j + 1) * g - 1 + lat, take + g)
            w = max(w + wi, avail) + (per - 1) * wi
            take = w
        if kind == "K":
            w += (nch - bpr) * wi                         # the padded row's zero pieces
        w += wi                                           # the row's scale
        taken.append(math.ceil(take))
    return math.ceil(w)


def _kv_write(rec, program, tg, mem, u):
    a = rec.args
    L, eb = _lanes(tg), program.elem_bytes
    q = tg.kv_quant
    qb, ql = q["beat"], q["lanes"]
    n, hd, kvh = a["rows"], a["head_dim"], a["kv_heads"]
    in_step = max(1, qb // L)                             # mover vectors per quantiser beat
    nch = -(-hd // program.kv_beat) * program.kv_beat // qb     # K pieces of a padded row
    p = u + 5                                             # KV_CHECK, GEO, GEO2, KV_WCMD
    b = p
    for kind in ("K", "V"):
        src0 = a["k_src"] if kind == "K" else a["v_src"]
        for h in range(kvh):                              # a writer + mover command pair
            m = p + 1                                     # KV_MCMD
            t_in = _mover_first(m, [(src0 + h * hd * eb, hd * eb)], mem) + in_step - 1
            last = t_in + _kv_pair(kind, n, hd // qb, qb, ql, in_step, nch, program.fmt,
                                   mem.write_issue)
            b = last + mem.write_latency                  # the last write's B
            p = b + 2                                     # KV_WAIT: mover done, writer idle
    return b, {}


@lru_cache(maxsize=4096)
def _kv_reader_stall(n: int, hd: int, beat: int, depth: int, fmt_name: str) -> int:
    """Cycles the integer engine's stream waits for ``KVInt8Reader`` in one call of ``n``
    keys. The reader's data side takes a cycle per block (its job) and one per header beat
    of a K block before the block's first engine beat, then one engine beat per cycle (an
    AXI beat per cycle for engine beats wider than the port: ``int8_reader_cycles``); the
    engine takes a K segment's rows back to back and a V segment at ``v_stream_cycles``. Per
    segment the reader's excess over the engine is exposed, less the first block's job and
    header, which it prepares while the engine drains the previous segment (or loads q)."""
    from tellme.hw.attention.kv_dma import _int8_layout, int8_blocks
    from tellme.spec.attention import kv_schedule
    from tellme.spec.numerics import STREAM_FORMATS

    from .cycles_attn_int import drain, v_stream_cycles

    fmt = STREAM_FORMATS[fmt_name]
    lay = _int8_layout(hd, beat, fmt)
    hb = lay.k_header_bytes // NB
    up = 8 * beat >= 8 * NB
    blocks = int8_blocks(dict(k_addr=0, v_addr=0, n=n, hd=hd), depth=depth, beat=beat,
                         data_width=8 * NB, fmt=fmt)
    stall, i = 0, 0
    for kind, first, rows in kv_schedule(n, depth):
        nblk = -(-(first + rows) // beat) - first // beat
        seg = blocks[i:i + nblk]
        i += nblk
        h = hb if kind == "K" else 0
        rd = sum(1 + h + ((b - h) if up else (k * lay.bpr if kind == "K" else hd))
                 for _, _, b, k in seg)
        eng = (rows * lay.bpr if kind == "K"
               else v_stream_cycles(first, first + rows, head_dim=hd, beat=beat))
        stall += max(0, rd - min(1 + h, drain(beat) if i > nblk else 1 + h) - eng)
    return stall


def _attention(rec, program, tg, mem, u):
    from tellme.hw.attention.kv_dma import reader_plan
    from tellme.spec.attention import prefill_calls
    from tellme.spec.memory_map import row_stride

    from .cycles_attn_int import calls_cycles

    a = rec.args
    e = tg.attention_int
    L, eb = _lanes(tg), program.elem_bytes
    n, start, hd = a["rows"], a["start"], a["head_dim"]
    heads, kvh = a["heads"], a["kv_heads"]
    grp = heads // kvh
    npe = e["lanes"] // grp
    m = u + 1 + grp + npe + 1 + 4                         # AT_CHECK (g), AT_NPE (n_pe + 1),
    #                                                       SIZE, BLOCK, ECMD, RCMD, MCMD
    calls = prefill_calls(n, start, heads, kvh, e["lanes"])
    fmt = _fmt(program)
    st = row_stride(heads * hd, eb)
    b = m
    for c in calls:
        cmd = dict(k_addr=a["k"], v_addr=a["v"], n=c.n, hd=hd)
        plan = reader_plan(cmd, depth=e["depth"], beat=e["beat"], data_width=8 * NB,
                           max_burst=16, fmt=fmt)
        # the KV reader's command precedes the mover's by a cycle: its first burst comes
        # back first, then the q rows (reader 0) into the engine
        q_first = _mover_first(m, [(a["q"], grp * hd * eb)], mem,
                               ahead=(m + AR_FIRST - AR_NEXT, plan[0][1]))
        eng = calls_cycles([(c.n, len(c.lim))], head_dim=hd, beat=e["beat"],
                           depth=e["depth"], q_beat=e["q_beat"], o_beat=e["o_beat"])
        stall = _kv_reader_stall(c.n, hd, e["beat"], e["depth"], program.fmt)
        # the port: the call's KV bursts and q rows at the memory's rate
        port = (sum(x for _, x in plan) + _read_beats(a["q"], len(c.lim) // grp * st)) \
            / mem.beats_per_cycle + mem.read_latency
        # the engine's first q beat is its cycle 1 (calls_cycles), its last output the
        # writer's last take; then the trailing W beat(s) and the B
        emits = _emits_after(a["dst"] % NB, grp * hd // L, L * eb)
        last = q_first - 2 + max(eng + stall, port)
        b = last + TAKE_TO_WL + emits + mem.write_latency
        m = b + B_TO_CMD + 2 + (1 if c.kv == kvh - 1 else 0)     # AT_WAIT, ECMD, RCMD
        #                                                       (+ AT_BLOCK for a new block)
    return b, {"calls": len(calls), "group": grp, "n_pe": npe}


HEAD_FRONT = 5           # LM_HEAD row start -> its absmax range's AR (ROW, the read FSM's
#                          load, the burst master's issue); + latency, the absmax beats, PICK,
#                          CMD to the unit's command
HEAD_BACK = 3            # the unit's last logit -> the writer's last W beat (its accumulator)


def _lm_head(rec, program, tg, mem, u):
    """LM_HEAD (hw/exec_head.py): per row, the absmax beat(s) and codes on m_axi_w1, the
    unit's row (``sim.cycles_lm_head.row_cycles``: the head streamed at a beat a cycle, which
    the port sustains once the R FIFO covers the latency), the logits' last write response."""
    from tellme.spec.lm_head import Q_BEAT

    from .cycles_lm_head import row_cycles

    a = rec.args
    eb = program.elem_bytes
    lanes = tg.lm_head["lanes"]
    unit = row_cycles(a["vocab"], a["cols"], lanes)["cycles"]
    assert Q_BEAT * 2 == NB     # two q beats an AXI beat: the unit's q load is d / 8 cycles
    t = u
    for r in range(a["rows"]):
        off = (a["amax"] + r * eb) % NB
        first = t + HEAD_FRONT + mem.read_latency + (1 + (off + eb > NB)) + 2
        last_logit = first + unit
        t = last_logit + HEAD_BACK + mem.write_latency + 1
    return t, {"unit": unit}


_OPS = {"RESIDUAL": _ew_pipe, "GATED_ACT": _ew_pipe, "ROPE": _rope, "NORM": _norm,
        "QUANT": _quant, "LINEAR": _linear, "KV_WRITE": _kv_write, "ATTENTION": _attention,
        "LM_HEAD": _lm_head}
_END_EXTRA = {"LINEAR": 1, "KV_WRITE": -1}     # L_END; the quantising writer's own done


# Per-record results, shared by every program: a model's layers repeat the same records at
# other addresses (the weights' and the KV cache's), and the timing depends on an address
# only through its offset in a 4 KiB page (bursts are split at page boundaries, beats and
# bytes counted from the offset in a 16-byte beat), so the key takes addresses modulo 4096.
# The weight scale of a LINEAR does not change its timing (a fixed-latency dequantiser).
_RECORD_CACHE: dict = {}
_RECORD_CACHE_MAX = 1 << 16
_PAGE = 4096
_NOT_TIMING = {"LINEAR": ("scale",)}


@cache
def _addr_fields(op: str) -> frozenset:
    from tellme.spec.program import OPS

    return frozenset(n for n, typ, _ in OPS[op].fields if typ == "addr")


def _record_key(record, program, tg, mem, ids):
    from tellme.spec.targets import TARGETS

    if TARGETS.get(tg.name) is not tg:          # an ad-hoc target: no key
        return None
    addr = _addr_fields(record.op)
    skip = _NOT_TIMING.get(record.op, ())
    args = tuple(sorted((k, v % _PAGE if k in addr else v) for k, v in record.args.items()
                        if k not in skip))
    timing = (mem.read_latency, mem.write_latency, mem.beats_per_cycle, mem.write_issue)
    return (tg.name, timing, program.fmt, program.elem_bytes, program.kv_beat, record.op, args,
            None if ids is None or record.op != "EMBED" else tuple(int(i) for i in ids))


def clear_cache() -> None:
    """Forget the per-record results (:func:`record_cycles` with ``cached=True``)."""
    _RECORD_CACHE.clear()


def record_cycles(record, program, target="sim", *, mem: MemoryModel = SIM_MEMORY,
                  ids=None, cached: bool = True) -> RecordCycles:
    """Cycles ``record`` adds to a run of ``program`` on ``target``'s top (see the module
    docstring). ``ids``: the token ids of an EMBED (else the mean id bit length).
    ``cached``: reuse the result of an identical record (the same fields, addresses within
    their 4 KiB page; the same target, memory and stream format) of any program."""
    tg = _target(target)
    if record.op == "END":
        return RecordCycles("END", None, 0, 0)
    key = _record_key(record, program, tg, mem, ids) if cached else None
    if key is not None:
        hit = _RECORD_CACHE.get(key)
        if hit is None:
            rc = record_cycles(record, program, tg, mem=mem, ids=ids, cached=False)
            if len(_RECORD_CACHE) >= _RECORD_CACHE_MAX:
                _RECORD_CACHE.clear()
            _RECORD_CACHE[key] = hit = (rc.cycles, rc.unit, rc.detail)
        return RecordCycles(record.op, record.layer, hit[0], hit[1], dict(hit[2]))
    ar = 0
    u = ar + mem.read_latency + REC_BEATS - 1 + ISSUE     # command handshake
    if record.op == "EMBED":
        b, det = _embed(record, program, tg, mem, u, ids=ids)
    else:
        b, det = _OPS[record.op](record, program, tg, mem, u)
    nxt = math.ceil(b) + DONE_TO_AR + _END_EXTRA.get(record.op, 0)
    return RecordCycles(record.op, record.layer, REC_BEATS + nxt - ar, math.ceil(b) - u, det)


def base_cycles(n_records: int, mem: MemoryModel = SIM_MEMORY) -> int:
    """CYCLES of a program of ``n_records`` records (END included) that all take no time:
    the sequencer's start, header, pass-1 check (4 cycles a record) and its fetch of END
    (``sim.cycles_seq`` with the read arbiter's cycle in the fetch latency)."""
    from .cycles_seq import expected_cycles

    return expected_cycles(1, mem.read_latency + 2)["total"] + BASE_ADJ \
        + REC_BEATS * (n_records - 1)


def program_cycles(program, target="sim", *, mem: MemoryModel = SIM_MEMORY,
                   ids=None, cached: bool = True) -> dict:
    """CYCLES of ``program`` on ``target``'s top: ``{"total", "base", "records":
    [RecordCycles], "by_op": {op: cycles}}`` (``base``: an END-only program's; each record's
    share includes its 4 pass-1 cycles). ``ids``: the call's token ids (EMBED); ``cached``:
    see :func:`record_cycles`."""
    out = [record_cycles(r, program, target, mem=mem, ids=ids, cached=cached)
           for r in program.records if r.op != "END"]
    base = base_cycles(1, mem)
    by_op: dict = {}
    for rc in out:
        by_op[rc.op] = by_op.get(rc.op, 0) + rc.cycles
    return {"total": base + sum(rc.cycles for rc in out), "base": base, "records": out,
            "by_op": by_op}


def call_cycles(config, target: str, kind: str, start: int, n_tokens: int, *,
                mem: MemoryModel | None = None, weights=None, max_context: int | None = None,
                fmt=None) -> dict:
    """One call (a decode step or a prefill chunk) of ``config`` on ``target``'s top, with
    the final hidden rows as output (the host's LM head is not counted): the program
    ``spec.program.build_program`` makes (``weights``: a WeightInfo, else the section names
    of a file with no data) through :func:`program_cycles`. ``mem``: the board's DDR by
    default (:func:`board_memory`), ``SIM_MEMORY`` for the RTL simulation."""
    from dataclasses import replace

    from tellme.spec.attention import score_scale
    from tellme.spec.memory_map import memory_map
    from tellme.spec.numerics import STREAM_FORMAT

    from .perf import fake_weights

    tg = _target(target)
    mem = board_memory(tg.name) if mem is None else mem
    ctx = max(start + n_tokens, max_context or 0)
    c = replace(config, max_context=max(config.max_context, ctx))
    mm = memory_map(c, tg, max_context=ctx, max_tokens=max(n_tokens, 1), output="hidden",
                    fmt=fmt or STREAM_FORMAT, budget=None)
    w = weights if weights is not None else fake_weights(c, tg, "bfloat16")
    from tellme.spec.program import build_program

    prog = build_program(c, mm, kind, start, n_tokens, weights=replace(w, config=c),
                         score_c=score_scale(c.head_dim), last_only=True)
    r = program_cycles(prog, tg, mem=mem)
    r["seconds"] = r["total"] / (tg.clock_mhz * 1e6)
    r["memory"] = mem.describe()
    return r


def step_cycles(config, target: str = "kv260", *, context: int, mem=None, weights=None
                ) -> int:
    """Cycles of the decode step at position ``context - 1`` (the performance tool's
    short form of :func:`call_cycles`)."""
    return call_cycles(config, target, "decode", context - 1, 1, mem=mem,
                       weights=weights)["total"]
