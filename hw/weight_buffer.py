"""Ping-pong weight buffer (URAM) for the TLMM engine, and its analytic sizing.

The buffer holds TLMM index vectors (T 5-bit codes, ``spec/codes.py`` "layout v1") in Q banks,
one per parallel output column, so the engine reads the Q vectors of one (column block, K block)
in one cycle. Each bank is split into two halves (ping-pong tiles): the weight streamer fills one
half while the engine reads the other.

Bank geometry: a bank word is one index vector (5*T bits: 140 for T=28, i.e. two 72-bit URAM288
side by side); a bank is ``2 * half_depth`` words. Each bank has exactly one write port and one
read port (simple dual port), which maps onto one URAM288 column pair with no port sharing: the
fill writes on port A while the engine reads on port B, so filling never steals read bandwidth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from tellme.spec.codes import CODE_BITS, padded_dims
from tellme.spec.tiling import Tiling, tiling_for

from .arith import addr_bits

URAM_WIDTH = 72
URAM_DEPTH = 4096


class WeightReadSignature(wiring.Signature):
    """Engine-side view of the buffer's read interface (the buffer holds the flipped one).

    Members (directions as seen by the engine)
    ------------------------------------------
    addr : Out(addr_bits)         word address inside the current tile (nb_local*KB + kb)
    en : Out(1)                   read enable; ``data`` updates on the next cycle only when high
    data : In(ArrayLayout(unsigned(5*T), Q))   the Q bank words, one cycle after ``en``
    tile_valid : In(1)            a filled tile is available to read
    tile_done : Out(1)            one-cycle pulse: the engine has finished reading the tile
    """

    def __init__(self, *, t: int, q: int, addr_bits: int):
        self._t, self._q, self._addr_bits = t, q, addr_bits
        super().__init__({
            "addr": Out(addr_bits),
            "en": Out(1),
            "data": In(data.ArrayLayout(unsigned(CODE_BITS * t), q)),
            "tile_valid": In(1),
            "tile_done": Out(1),
        })

    def __eq__(self, other):
        return (isinstance(other, WeightReadSignature)
                and (self._t, self._q, self._addr_bits)
                == (other._t, other._q, other._addr_bits))

    def __repr__(self):
        return f"WeightReadSignature(t={self._t}, q={self._q}, addr_bits={self._addr_bits})"


def fill_layout(t: int, v: int) -> data.StructLayout:
    """Payload of the buffer's write stream: V consecutive index vectors + end-of-tile flag."""
    return data.StructLayout({
        "vectors": data.ArrayLayout(unsigned(CODE_BITS * t), v),
        "last": 1,
    })


class WeightBuffer(wiring.Component):
    """Q-bank ping-pong index-vector buffer.

    Parameters
    ----------
    t, q : int
        Tiling (codes per vector, banks).
    v : int
        Vectors written per fill beat; must divide ``q``.
    half_depth : int
        Words per bank in one half (one tile holds at most ``half_depth * q`` vectors).
    ram_style : str or None
        ``"ultra"`` (URAM288), ``"block"`` or None (tool's choice), set on every bank.

    Members
    -------
    i : In(stream.Signature(fill_layout(t, v)))
        Fill stream. Vectors arrive in layout-v1 order (``[nb][kb][q]`` of the tile), V per beat:
        vector j of the tile goes to bank ``j % q``, word ``j // q``. ``last`` on the final beat
        of a tile makes that half readable. ``ready`` is low while both halves are full.
    r : In(WeightReadSignature(t, q, addr_bits))
        Read side for the TLMM engine (see :class:`WeightReadSignature`); reads always hit the
        oldest filled half.
    overflow : Out(1)
        Sticky: a fill wrote past ``half_depth`` words (the tile was too big; data was dropped).

    Timing
    ------
    Fill: one beat per cycle (``v`` vectors/cycle) while a half is free. Read: latency 1, one
    Q-vector word per cycle. A half written with ``last`` at cycle c is readable at c+1; a
    ``tile_done`` at cycle c frees that half for filling at c+1.
    """

    def __init__(self, *, t: int, q: int, v: int, half_depth: int, ram_style: str | None = None):
        for name, val in (("t", t), ("q", q), ("v", v), ("half_depth", half_depth)):
            if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
                raise TypeError(f"{name} must be a positive integer, got {val!r}")
        if q % v:
            raise ValueError(f"v ({v}) must divide q ({q})")
        if ram_style not in (None, "ultra", "block", "distributed"):
            raise ValueError(f"ram_style must be None, 'ultra', 'block' or 'distributed', "
                             f"got {ram_style!r}")
        self._t, self._q, self._v = t, q, v
        self._half_depth = half_depth
        self._ram_style = ram_style
        self._addr_bits = addr_bits(half_depth)
        super().__init__({
            "i": In(stream.Signature(fill_layout(t, v))),
            "r": In(WeightReadSignature(t=t, q=q, addr_bits=self._addr_bits)),
            "overflow": Out(1),
        })

    t = property(lambda self: self._t)
    q = property(lambda self: self._q)
    v = property(lambda self: self._v)
    half_depth = property(lambda self: self._half_depth)

    def elaborate(self, platform):
        m = Module()
        t, q, v = self._t, self._q, self._v
        aw = self._addr_bits
        phases = q // v

        # Ping-pong state: fill half, read half, number of filled halves.
        fill_half = Signal()
        read_half = Signal()
        n_full = Signal(range(3))
        word = Signal(aw + 1)              # next word to write in the fill half
        phase = Signal(range(max(phases, 2)))  # which group of v banks the next beat hits

        accept = Signal()
        m.d.comb += [
            self.i.ready.eq(n_full != 2),
            accept.eq(self.i.valid & self.i.ready),
            self.r.tile_valid.eq(n_full != 0),
        ]
        fill_end = accept & self.i.payload.last
        m.d.sync += n_full.eq(n_full + fill_end - self.r.tile_done)
        with m.If(fill_end):
            m.d.sync += [fill_half.eq(~fill_half), word.eq(0), phase.eq(0)]
        with m.Elif(accept):
            if phases > 1:
                with m.If(phase == phases - 1):
                    m.d.sync += [phase.eq(0), word.eq(word + 1)]
                with m.Else():
                    m.d.sync += phase.eq(phase + 1)
            else:
                m.d.sync += word.eq(word + 1)
        with m.If(self.r.tile_done):
            m.d.sync += read_half.eq(~read_half)
        in_range = word < self._half_depth
        with m.If(accept & ~in_range):
            m.d.sync += self.overflow.eq(1)

        attrs = {"ram_style": self._ram_style} if self._ram_style else None
        for b in range(q):
            mem = memory.Memory(shape=unsigned(CODE_BITS * t), depth=2 * self._half_depth,
                                init=[], attrs=attrs)
            m.submodules[f"bank{b}"] = mem
            wp = mem.write_port()
            rp = mem.read_port(domain="sync")
            lane = b % v
            m.d.comb += [
                wp.addr.eq(Cat(word[:aw], fill_half)),
                wp.data.eq(self.i.payload.vectors[lane]),
                wp.en.eq(accept & in_range & (phase == b // v)),
                rp.addr.eq(Cat(self.r.addr, read_half)),
                rp.en.eq(self.r.en),
                self.r.data[b].eq(rp.data),
            ]
        return m


# --------------------------------------------------------------------------- analytic sizing

@dataclass(frozen=True)
class LinearPlan:
    name: str
    n_out: int
    k_in: int
    nb: int          # column blocks of the linear
    kb: int          # K blocks
    tile_nb: int     # column blocks per ping-pong tile
    tiles: int       # tiles per linear

    @property
    def words(self) -> int:
        """Bank words of the whole linear (per bank)."""
        return self.nb * self.kb


@dataclass(frozen=True)
class BufferSizing:
    tiling: Tiling
    uram_width: int          # URAM288 side by side per bank (vector bits / 72, rounded up)
    uram_deep: int           # URAM288 cascaded per bank (depth / 4096)
    half_depth: int          # words per bank per half
    urams: int               # total URAM288
    plans: tuple[LinearPlan, ...]
    whole_layer_urams: int   # URAMs a non-ping-pong buffer holding the largest linear would need

    def to_dict(self) -> dict:
        return {
            "t": self.tiling.t, "q": self.tiling.q, "uram_width": self.uram_width,
            "uram_deep": self.uram_deep, "half_depth": self.half_depth, "urams": self.urams,
            "whole_layer_urams": self.whole_layer_urams,
            "plans": [dict(p.__dict__, words=p.words) for p in self.plans],
        }


def size_weight_buffer(target: str | Tiling, shapes: dict[str, tuple[int, int]], *,
                       uram_budget: int) -> BufferSizing:
    """Analytic ping-pong buffer sizing (TeLLMe v2 §3.1, eq. 7/9, adapted to ping-pong tiles).

    * a bank word holds one index vector: ``c = ceil(5*T / 72)`` URAM288 side by side (eq. 7
      read backwards: T=28 -> 140 bits -> c=2);
    * Q banks, each ``d`` URAM288 deep (``d*4096`` words, two halves): the largest ``d`` with
      ``Q*c*d <= uram_budget``;
    * a tile is a run of whole column blocks (all K blocks of a column block live in one tile,
      so a tile's outputs are final when it is consumed): ``tiles = ceil(NB / floor(half/KB))``
      and ``tile_nb = ceil(NB / tiles)``, balanced so that no narrow last tile is left whose
      table builds the sweep cannot hide.

    Raises ValueError when even one column block of some linear does not fit a half.
    """
    tiling = tiling_for(target) if isinstance(target, str) else target
    t, q = tiling.t, tiling.q
    width = math.ceil(CODE_BITS * t / URAM_WIDTH)
    deep = uram_budget // (q * width)
    if deep < 1:
        raise ValueError(f"URAM budget {uram_budget} is below one bank row "
                         f"(Q={q} banks x {width} URAM wide)")
    half = deep * URAM_DEPTH // 2
    plans = []
    whole = 0
    for name, (n_out, k_in) in shapes.items():
        nb, kb = padded_dims(n_out, k_in, t, q)
        if kb > half:
            raise ValueError(f"{name} [{n_out}, {k_in}]: one column block needs {kb} words per "
                             f"bank, a half holds {half}")
        tiles = -(-nb // min(nb, half // kb))
        tile_nb = -(-nb // tiles)            # balanced: no narrow last tile
        plans.append(LinearPlan(name, n_out, k_in, nb, kb, tile_nb, tiles))
        whole = max(whole, q * width * math.ceil(nb * kb / URAM_DEPTH))
    return BufferSizing(tiling, width, deep, half, q * width * deep, tuple(plans), whole)


__all__ = ["WeightBuffer", "WeightReadSignature", "fill_layout", "size_weight_buffer",
           "BufferSizing", "LinearPlan"]
