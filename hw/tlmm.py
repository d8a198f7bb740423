"""TLMM engine: table-lookup ternary matrix multiply (TeLLMe v2 §3.2), GEMV and GEMM.

Dataflow of one command (one weight tile of ``nbt`` column blocks, ``kb`` K blocks)::

    for token in range(n_tokens):              # GEMM: the tile is reused by every token
        for k in range(kb):                    # one activation beat = T groups of 3 int8
            build T tables (27 or 14 entries)  # overlapped with the previous sweep
            for nb in range(nbt):              # one cycle each: Q vectors -> Q*T lookups
                acc[nb][q] += sum_t table[t][code(nb, k, q, t)]
        emit acc[nb][0..Q-1] for every nb      # during the last K block's sweep

Tables: each of the T tables is held in Q copies, one small distributed RAM (LUTRAM) per
(table, reader) with one write port and one asynchronous read port (TeLLMe's per-reader
copies), all copies of a table written together. Two table banks alternate so that building the
tables of K block k+1 overlaps the sweep of K block k. Two table kinds:

* ``"full"``: TeLLMe's 27-entry table in code order (``tellme.spec.codes.PATTERNS``), 2x32 deep;
* ``"half"``: entries 0..13 only, 2x16 deep; a code c >= 14 reads entry c-13 and negates it
  (PATTERNS[c] = -PATTERNS[c-13]), trading half the table writes and depth for a negator per
  lookup.

Entries are written one per cycle; the write data of entry e is ``PATTERNS[e] . (v1, v2, v3)``,
generated from the code table (a 27-row constant ROM shared by all tables + 3 select/negate
terms per table).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from tellme.spec.codes import CODE_BITS, N_CODES, PATTERNS, G
from tellme.spec.tlmm import TABLE_BITS, TABLE_ENTRIES, acc_bits

from .arith import addr_bits
from .weight_buffer import WeightReadSignature

TABLE_KINDS = tuple(TABLE_ENTRIES)
HALF_ENTRIES = TABLE_ENTRIES["half"]     # 14: code 0 and the 13 positive patterns


def cmd_layout(*, kb_max: int, nbt_max: int, tok_max: int) -> data.StructLayout:
    """Command payload: counts (each >= 1) of tokens, K blocks and tile column blocks."""
    return data.StructLayout({
        "n_tokens": range(tok_max + 1),
        "kb": range(kb_max + 1),
        "nbt": range(nbt_max + 1),
    })


def out_layout(*, q: int, acc_width: int) -> data.StructLayout:
    """Output payload: Q accumulators of one column block; ``last`` ends a token's row."""
    return data.StructLayout({
        "acc": data.ArrayLayout(signed(acc_width), q),
        "last": 1,
    })


def act_layout(*, t: int) -> data.ArrayLayout:
    """Activation payload: one K block, T groups of G=3 int8 (activation k at lane k)."""
    return data.ArrayLayout(signed(8), G * t)


def _pairs(values):
    """One level of an adder tree: neighbours summed, an odd last value passed on."""
    values = list(values)
    nxt = [values[i] + values[i + 1] for i in range(0, len(values) - 1, 2)]
    if len(values) % 2:
        nxt.append(values[-1])
    return nxt


def _tree_sum(values):
    values = list(values)
    while len(values) > 1:
        values = _pairs(values)
    return values[0]


class TLMM(wiring.Component):
    """TLMM engine for one ping-pong weight tile per command.

    Parameters
    ----------
    t : int
        Tables per cycle (T); one activation beat carries ``3*t`` int8.
    q : int
        Parallel output columns (Q), one weight-buffer bank each.
    kb_max : int
        Largest K block count of a command (K <= kb_max*3*t); sets the accumulator width
        ``acc_bits(kb_max*3*t)`` (exact: no overflow possible).
    nbt_max : int
        Largest column-block count of a tile (accumulator memory depth).
    tok_max : int
        Largest token count of a command.
    depth : int
        Words per bank of one tile in the weight buffer (``nbt*kb <= depth``).
    table : str
        ``"full"`` (TeLLMe's 27-entry table) or ``"half"`` (14 entries + negate).

    Members
    -------
    i_cmd : In(stream.Signature(cmd_layout))
        ``{n_tokens, kb, nbt}``, all >= 1. Accepted only when the engine is idle (the previous
        command has issued all its work; its last outputs may still be in flight).
    i_act : In(stream.Signature(ArrayLayout(signed(8), 3*t)))
        ``n_tokens*kb`` beats per command, token-major, K block minor.
    w : Out(WeightReadSignature(t, q, addr_bits))
        Weight-buffer read port; waits for ``tile_valid``; pulses ``tile_done`` once when the
        command's last weight word has been read (the buffer may refill that half at once).
    o : Out(stream.Signature(out_layout))
        ``n_tokens*nbt`` beats: for each token, column blocks 0..nbt-1 (``acc[q]`` = output
        column ``nb*Q + q`` of the tile), ``last`` on the token's final block. Columns padded
        by layout v1 come out as exact zeros for the consumer to drop.
    busy : Out(1)
        A command is in progress (including outputs in flight).

    Timing
    ------
    Throughput: one column block (Q*T lookups) per cycle while tables are ready and ``o`` is
    ready. Table build: 1 + E cycles per activation beat (E = 27 full, 14 half), overlapped
    with the previous K block's sweep; a K block takes ``max(nbt, E + 1, (nbt + E + 2) / 2)``
    cycles, i.e. one cycle per column block once ``nbt >= E + 2`` (sim/cycles.py has the exact
    model). Latency: 3 cycles from an op's weight read to its
    output beat. Backpressure: ``o.ready`` low stalls the whole lookup pipeline (global
    stall); the table builder keeps filling the free bank and then holds ``i_act.ready`` low.
    """

    def __init__(self, *, t: int, q: int, kb_max: int, nbt_max: int, tok_max: int, depth: int,
                 table: str = "full"):
        for name, val in (("t", t), ("q", q), ("kb_max", kb_max), ("nbt_max", nbt_max),
                          ("tok_max", tok_max), ("depth", depth)):
            if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
                raise TypeError(f"{name} must be a positive integer, got {val!r}")
        if table not in TABLE_KINDS:
            raise ValueError(f"table must be one of {TABLE_KINDS}, got {table!r}")
        self._t, self._q = t, q
        self._kb_max, self._nbt_max, self._tok_max = kb_max, nbt_max, tok_max
        self._depth = depth
        self._table = table
        self._acc_width = acc_bits(kb_max * G * t)
        self._addr_bits = addr_bits(depth)
        super().__init__({
            "i_cmd": In(stream.Signature(cmd_layout(kb_max=kb_max, nbt_max=nbt_max,
                                                    tok_max=tok_max))),
            "i_act": In(stream.Signature(act_layout(t=t))),
            "w": Out(WeightReadSignature(t=t, q=q, addr_bits=self._addr_bits)),
            "o": Out(stream.Signature(out_layout(q=q, acc_width=self._acc_width))),
            "busy": Out(1),
        })

    t = property(lambda self: self._t)
    q = property(lambda self: self._q)
    kb_max = property(lambda self: self._kb_max)
    nbt_max = property(lambda self: self._nbt_max)
    tok_max = property(lambda self: self._tok_max)
    depth = property(lambda self: self._depth)
    table = property(lambda self: self._table)
    acc_width = property(lambda self: self._acc_width)

    @property
    def table_entries(self) -> int:
        return N_CODES if self._table == "full" else HALF_ENTRIES

    def elaborate(self, platform):
        m = Module()
        t, q = self._t, self._q
        full = self._table == "full"
        n_entries = self.table_entries
        bank_depth = 32 if full else 16          # one LUTRAM bank per table build
        ebits = addr_bits(bank_depth)
        assert len(Signal(range(n_entries))) == ebits

        # ------------------------------------------------------------ command registers
        n_tok = Signal.like(self.i_cmd.payload.n_tokens)
        n_kb = Signal.like(self.i_cmd.payload.kb)
        n_nbt = Signal.like(self.i_cmd.payload.nbt)
        # the counts minus one, registered with them: the last-index compares are equalities
        # of two registers (no subtract in front of the issue and builder logic)
        n_tok_m1 = Signal(signed(len(n_tok) + 1))
        n_kb_m1 = Signal(signed(len(n_kb) + 1))
        n_nbt_m1 = Signal(signed(len(n_nbt) + 1))
        sweeping = Signal()         # sweeper has ops left to issue
        b_left = Signal()           # builder has activation beats left to consume
        in_flight = Signal()        # some op in S1..S3
        m.d.comb += [
            self.i_cmd.ready.eq(~sweeping & ~b_left),
            self.busy.eq(sweeping | b_left | in_flight),
        ]
        cmd_go = self.i_cmd.valid & self.i_cmd.ready

        # ------------------------------------------------------------ table banks
        bank_full = Signal(2)       # bank b holds the tables of the next K block to sweep
        set_full = Signal(2)
        clr_full = Signal(2)
        m.d.sync += bank_full.eq((bank_full | set_full) & ~clr_full)

        # ------------------------------------------------------------ table builder
        b_tok = Signal.like(n_tok)
        b_kb = Signal.like(n_kb)
        wbank = Signal()
        writing = Signal()
        entry = Signal(range(n_entries))
        groups = Signal(act_layout(t=t))

        m.d.comb += self.i_act.ready.eq(b_left & ~writing & ~bank_full.bit_select(wbank, 1))
        with m.If(cmd_go):
            m.d.sync += [b_left.eq(1), b_tok.eq(0), b_kb.eq(0)]
        with m.If(self.i_act.valid & self.i_act.ready):
            m.d.sync += [groups.eq(self.i_act.payload), writing.eq(1), entry.eq(0)]
            last_kb = b_kb == n_kb_m1
            m.d.sync += b_kb.eq(Mux(last_kb, 0, b_kb + 1))
            with m.If(last_kb):
                m.d.sync += b_tok.eq(b_tok + 1)
                with m.If(b_tok == n_tok_m1):
                    m.d.sync += b_left.eq(0)
        with m.If(writing):
            m.d.sync += entry.eq(entry + 1)
            with m.If(entry == n_entries - 1):
                m.d.sync += [writing.eq(0), wbank.eq(~wbank)]
                m.d.comb += set_full.bit_select(wbank, 1).eq(1)

        # Pattern ROM: (w1, w2, w3) of the entry being written, from the code table itself.
        pos = [Signal(name=f"pat_pos{j}") for j in range(G)]
        neg = [Signal(name=f"pat_neg{j}") for j in range(G)]
        with m.Switch(entry):
            for e in range(n_entries):
                with m.Case(e):
                    for j in range(G):
                        w = int(PATTERNS[e][j])
                        m.d.comb += [pos[j].eq(w == 1), neg[j].eq(w == -1)]

        tables = []
        for ti in range(t):
            terms = []
            for j in range(G):
                v = groups[G * ti + j]
                terms.append(Mux(pos[j], v, Mux(neg[j], -v, 0)))
            value = Signal(signed(TABLE_BITS), name=f"tbl_wdata{ti}")
            m.d.comb += value.eq(terms[0] + terms[1] + terms[2])
            # One copy per reader (TeLLMe's per-port table copies): each copy is a plain
            # 1-write/1-async-read LUTRAM; a single memory with Q read ports makes yosys's
            # memory_libmap blow up at Q=16.
            readers = []
            for qi in range(q):
                mem = memory.Memory(shape=signed(TABLE_BITS), depth=2 * bank_depth, init=[])
                m.submodules[f"table{ti}_{qi}"] = mem
                wp = mem.write_port()
                m.d.comb += [
                    wp.addr.eq(Cat(entry, wbank)),
                    wp.data.eq(value),
                    wp.en.eq(writing),
                ]
                readers.append(mem.read_port(domain="comb"))
            tables.append(readers)

        # ------------------------------------------------------------ sweeper (issue stage)
        s_tok = Signal.like(n_tok)
        s_kb = Signal.like(n_kb)
        s_nb = Signal.like(n_nbt)
        rbank = Signal()
        addr = Signal(self._addr_bits)
        adv = Signal()              # global pipeline advance (no stall at the output)

        issue = Signal()
        m.d.comb += issue.eq(sweeping & adv & self.w.tile_valid & bank_full.bit_select(rbank, 1))
        m.d.comb += [self.w.addr.eq(addr), self.w.en.eq(adv)]

        last_nb = s_nb == n_nbt_m1
        last_kbi = s_kb == n_kb_m1
        last_tok = s_tok == n_tok_m1

        with m.If(cmd_go):
            m.d.sync += [
                n_tok.eq(self.i_cmd.payload.n_tokens), n_kb.eq(self.i_cmd.payload.kb),
                n_nbt.eq(self.i_cmd.payload.nbt),
                n_tok_m1.eq(self.i_cmd.payload.n_tokens - 1),
                n_kb_m1.eq(self.i_cmd.payload.kb - 1),
                n_nbt_m1.eq(self.i_cmd.payload.nbt - 1),
                sweeping.eq(1), s_tok.eq(0), s_kb.eq(0), s_nb.eq(0), addr.eq(0),
            ]
        with m.If(issue):
            with m.If(~last_nb):
                m.d.sync += [s_nb.eq(s_nb + 1), addr.eq(addr + n_kb)]
            with m.Else():
                m.d.sync += [s_nb.eq(0), rbank.eq(~rbank)]
                with m.If(~last_kbi):
                    m.d.sync += [s_kb.eq(s_kb + 1), addr.eq(s_kb + 1)]
                with m.Else():
                    m.d.sync += [s_kb.eq(0), addr.eq(0), s_tok.eq(s_tok + 1)]
                    with m.If(last_tok):
                        m.d.sync += sweeping.eq(0)
                        m.d.comb += self.w.tile_done.eq(1)

        # ------------------------------------------------------------ S1: lookups
        op_layout = data.StructLayout({
            "valid": 1, "bank": 1, "nb": len(s_nb), "first": 1, "emit": 1, "last": 1,
            "release": 1})
        s1 = Signal(op_layout)
        s2 = Signal(op_layout)
        s3 = Signal(op_layout)
        with m.If(adv):
            m.d.sync += [
                s1.valid.eq(issue), s1.bank.eq(rbank), s1.nb.eq(s_nb),
                s1.first.eq(s_kb == 0), s1.emit.eq(last_kbi),
                s1.last.eq(last_kbi & last_nb), s1.release.eq(last_nb),
                s2.eq(s1), s3.eq(s2),
            ]
        m.d.comb += in_flight.eq(s1.valid | s2.valid | s3.valid)
        with m.If(adv & s1.valid & s1.release):
            m.d.comb += clr_full.bit_select(s1.bank, 1).eq(1)

        # S1 registers the first level of each reader's adder tree: the sums of neighbouring
        # lookups (an odd last one alone), so S2 sums ceil(T/2) terms
        lk_width = TABLE_BITS
        values = [[None] * t for _ in range(q)]
        for qi in range(q):
            vec = self.w.data[qi]
            for ti in range(t):
                code = vec[CODE_BITS * ti:CODE_BITS * (ti + 1)]
                rp = tables[ti][qi]
                if full:
                    m.d.comb += rp.addr.eq(Cat(code, s1.bank))
                    value = rp.data
                else:
                    is_neg = code >= HALF_ENTRIES
                    hcode = Mux(is_neg, code - (HALF_ENTRIES - 1), code)
                    m.d.comb += rp.addr.eq(Cat(hcode[:ebits], s1.bank))
                    value = Mux(is_neg, -rp.data, rp.data)
                values[qi][ti] = value
        pair_width = lk_width + (1 if t > 1 else 0)
        lookups = [[Signal(signed(pair_width), name=f"lk{qi}_{j}") for j in range(-(-t // 2))]
                   for qi in range(q)]
        with m.If(adv):
            for qi in range(q):
                for reg, v in zip(lookups[qi], _pairs(values[qi]), strict=True):
                    m.d.sync += reg.eq(v)

        # ------------------------------------------------------------ S2: adder trees
        # each reader's pair sums in two halves (the last addition is S3's)
        sum_width = lk_width + addr_bits(t) + (1 if t > 1 else 0)
        halves = [[Signal(signed(sum_width), name=f"sum{qi}_{h}") for h in range(2)]
                  for qi in range(q)]
        with m.If(adv):
            for qi in range(q):
                n = len(lookups[qi])
                parts = [lookups[qi][:(n + 1) // 2], lookups[qi][(n + 1) // 2:]]
                for h in range(2):
                    m.d.sync += halves[qi][h].eq(_tree_sum(parts[h]) if parts[h] else 0)

        # The accumulators of the tile's column blocks, and one more row, never written (zero):
        # the first K block of a token reads it instead of its column block's accumulators, so
        # S3 adds without a select in front of its adder
        acc_shape = data.ArrayLayout(signed(self._acc_width), q)
        zero_row = self._nbt_max
        accmem = memory.Memory(shape=acc_shape, depth=self._nbt_max + 1, init=[])
        m.submodules.accmem = accmem
        acc_wp = accmem.write_port()
        acc_rp = accmem.read_port(domain="sync", transparent_for=(acc_wp,))
        m.d.comb += [acc_rp.addr.eq(Mux(s2.first, zero_row, s2.nb)), acc_rp.en.eq(adv)]

        # ------------------------------------------------------------ S3: accumulate / emit
        new = Signal(acc_shape)
        for qi in range(q):
            m.d.comb += new[qi].eq(acc_rp.data[qi] + halves[qi][0] + halves[qi][1])
        m.d.comb += [
            acc_wp.addr.eq(s3.nb),
            acc_wp.data.eq(new),
            acc_wp.en.eq(s3.valid & adv),
            self.o.valid.eq(s3.valid & s3.emit),
            self.o.payload.acc.eq(new),
            self.o.payload.last.eq(s3.last),
            adv.eq(~(self.o.valid & ~self.o.ready)),
        ]
        return m


__all__ = ["TLMM", "TABLE_KINDS", "HALF_ENTRIES", "cmd_layout", "out_layout",
           "act_layout"]
