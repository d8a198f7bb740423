"""Dot products summed in DSP48E2 cascades (multiply, then add the previous slice's sum
through PCIN) instead of a LUT adder tree.

Why instantiated slices: yosys 0.70 maps a multiply to a DSP48E2 but packs no post-adder for
UltraScale+ (its ``xilinx_dsp`` pass handles DSP48E1 only), so an adder tree written with
``+`` lands in LUTs and carry chains (about one LUT a bit per add). A chain of slices wired
PCOUT -> PCIN does the adds in the slices' ALUs, which the part has anyway; Vivado maps the
instances as written.

A chain of ``C`` slices sums ``C`` products with one slice per term. Slice k takes its
operands k cycles after slice 0 (the systolic skew: the sum of slices 0..k-1 reaches slice k's
PCIN as slice k's own product leaves its M register), so the result of a dot product whose
first pair is presented at cycle 0 is on P at cycle ``chain_latency(C)`` = 3 + (C - 1)
(A/B register, M register, P register, then one cycle a slice). Every register is
free-running (clock enables tied high): the chain is a pipeline with no stall, like the
adder trees it replaces.

Simulation: Verilator has no Xilinx primitives, so :data:`SIM_MODEL` (hw/dsp48e2_sim.v) is
a behavioural DSP48E2 that covers the configuration this module instantiates (and fails at
elaboration time on any other); ``sim.runner`` adds it to a build whose Verilog instantiates
DSP48E2. Vivado uses its own primitive.
"""

from __future__ import annotations

from pathlib import Path

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal, Value, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

SIM_MODEL = Path(__file__).with_name("dsp48e2_sim.v")

A_BITS = 27        # multiplier port widths (A[26:0] x B[17:0], both signed)
B_BITS = 18
P_BITS = 48
# OPMODE = W(8:7) Z(6:4) Y(3:2) X(1:0): X = Y = M (the multiplier's two partial products),
# Z = 0 for the first slice, PCIN for the rest, W = 0; ALUMODE 0: P = Z + W + X + Y
OPMODE_FIRST = 0b00_000_01_01
OPMODE_CASCADE = 0b00_001_01_01


def chain_latency(length: int) -> int:
    """Cycles from slice 0's operands to the chain's sum on the last slice's P."""
    return 3 + (length - 1)


def _slice(m: Module, a, b, pcin, name: str) -> tuple[Signal, Signal]:
    """One DSP48E2: P = A * B (+ PCIN when ``pcin`` is not None); AREG = BREG = MREG = PREG =
    1, clock enables high, resets low. Returns (P, PCOUT)."""
    aw = Signal(signed(30), name=f"{name}_a")      # A is 30 bits; the multiplier takes 27
    bw = Signal(signed(B_BITS), name=f"{name}_b")
    m.d.comb += [aw.eq(Value.cast(a).as_signed()), bw.eq(Value.cast(b).as_signed())]
    p = Signal(P_BITS, name=f"{name}_p")
    pcout = Signal(P_BITS, name=f"{name}_pcout")
    one, zero = Const(1, 1), Const(0, 1)
    ce = {f"i_{c}": one for c in ("CEA1", "CEA2", "CEB1", "CEB2", "CEM", "CEP", "CEC", "CED",
                                  "CEAD", "CECTRL", "CEALUMODE", "CEINMODE", "CECARRYIN")}
    rst = {f"i_{r}": zero for r in ("RSTA", "RSTB", "RSTM", "RSTP", "RSTC", "RSTD", "RSTCTRL",
                                    "RSTALUMODE", "RSTINMODE", "RSTALLCARRYIN")}
    m.submodules[name] = Instance(
        "DSP48E2",
        p_AREG=1, p_BREG=1, p_ACASCREG=1, p_BCASCREG=1, p_MREG=1, p_PREG=1, p_CREG=0,
        p_DREG=0, p_ADREG=0, p_INMODEREG=0, p_OPMODEREG=0, p_ALUMODEREG=0,
        p_CARRYINREG=0, p_CARRYINSELREG=0,
        p_A_INPUT="DIRECT", p_B_INPUT="DIRECT", p_AMULTSEL="A", p_BMULTSEL="B",
        p_PREADDINSEL="A", p_USE_MULT="MULTIPLY", p_USE_SIMD="ONE48",
        p_USE_PATTERN_DETECT="NO_PATDET",
        i_CLK=ClockSignal("sync"), i_A=aw, i_B=bw, i_C=Const(0, P_BITS),
        i_D=Const(0, A_BITS), i_PCIN=Const(0, P_BITS) if pcin is None else pcin,
        i_ACIN=Const(0, 30), i_BCIN=Const(0, B_BITS), i_CARRYCASCIN=zero,
        i_MULTSIGNIN=zero, i_CARRYIN=zero, i_CARRYINSEL=Const(0, 3),
        i_OPMODE=Const(OPMODE_FIRST if pcin is None else OPMODE_CASCADE, 9),
        i_ALUMODE=Const(0, 4), i_INMODE=Const(0, 5),
        o_P=p, o_PCOUT=pcout, **ce, **rst)
    return p, pcout


def dot_chain(m: Module, pairs, name: str) -> Value:
    """The sum of ``a_k * b_k`` over ``pairs`` [(a_k, b_k), ...] (signed; a_k at most 27 bits,
    b_k at most 18) in one cascade of ``len(pairs)`` slices. Pair k must be presented k cycles
    after pair 0 (:func:`skew`); the sum is the returned 48-bit signed value
    ``chain_latency(len(pairs))`` cycles after pair 0."""
    pcin, p = None, None
    for k, (a, b) in enumerate(pairs):
        if len(Value.cast(a)) > A_BITS or len(Value.cast(b)) > B_BITS:
            raise ValueError(f"{name}: operand widths {len(Value.cast(a))} x "
                             f"{len(Value.cast(b))} exceed the multiplier's {A_BITS} x {B_BITS}")
        p, pcin = _slice(m, a, b, pcin, f"{name}_{k}")
    return p.as_signed()


def skew(m: Module, values, name: str) -> list[Value]:
    """``values[k]`` delayed k cycles (free-running registers): operands for :func:`dot_chain`
    from a word that arrives whole."""
    out = []
    for k, v in enumerate(values):
        v = Value.cast(v)
        for d in range(k):
            r = Signal(v.shape(), name=f"{name}_{k}_d{d + 1}")
            m.d.sync += r.eq(v)
            v = r
        out.append(v)
    return out


class DotChain(wiring.Component):
    """``n`` signed products of ``a_bits`` x ``b_bits`` summed by one cascade, a dot product a
    cycle: i_a / i_b carry the whole vectors (element k in bits [k * width, (k + 1) * width)),
    registered and skewed here; o is their sum ``latency`` = 1 + chain_latency(n)
    cycles later (free-running: no valid, no stall). The chain's unit test
    (tests/rtl/test_dsp_chain.py) drives this wrapper."""

    def __init__(self, n: int, a_bits: int = 14, b_bits: int = 8):
        self.n, self.a_bits, self.b_bits = n, a_bits, b_bits
        self.latency = 1 + chain_latency(n)
        super().__init__({"i_a": In(n * a_bits), "i_b": In(n * b_bits),
                          "o": Out(signed(P_BITS))})

    def elaborate(self, platform):
        m = Module()
        n, aw, bw = self.n, self.a_bits, self.b_bits
        ra, rb = Signal(n * aw), Signal(n * bw)
        m.d.sync += [ra.eq(self.i_a), rb.eq(self.i_b)]
        a = skew(m, [ra[k * aw:(k + 1) * aw].as_signed() for k in range(n)], "a")
        b = skew(m, [rb[k * bw:(k + 1) * bw].as_signed() for k in range(n)], "b")
        m.d.comb += self.o.eq(dot_chain(m, list(zip(a, b, strict=True)), "mac"))
        return m
