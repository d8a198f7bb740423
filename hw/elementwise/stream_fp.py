"""Shared arithmetic of the element-wise pipeline: stream-format/FP32 field extraction,
exact-product rounders, and the global-stall pipeline helper.

The stream format is a ``tellme.spec.numerics.StreamFormat`` (FP16 = 1-5-10, FP24 =
1-5-18: FP16's exponent with ``man`` fraction bits); every helper taking ``fmt`` defaults to
the contract's ``STREAM_FORMAT``.

Every rounder takes an exact value ``mag * 2**exp`` (``mag`` an unsigned integer Value,
``exp`` a signed Value) and rounds it once, exactly as the golden hw model
(``tellme.spec.numerics``) does:

* :func:`round_fp`: RN_fmt (nearest-even, gradual underflow, saturating at the format's
  largest finite value) -> stream bits;
* :func:`round32`: RN32 significand (24 bits, unbounded exponent; no subnormals are reachable
  from the inputs that use it) -> ``(m, e)`` with ``m`` in [2**23, 2**24];
* :func:`round_int8`: clamp(RNE(v), -128, 127).

Rounding needs the position of the leading one (a log-depth priority tree, :func:`msb_index`),
one right shift, and the sticky bit, taken from the trailing-zero count (:func:`lsb_index`)
instead of a second shifter.

Pipelining: :class:`Pipe` registers values under a shared advance enable (``en = ~stall``):
every stage moves together, so a fixed-latency datapath plus a chain of valid bits forms a
stream pipeline that honours backpressure without skid buffers. Each rounder documents how
many registers it inserts (its latency in cycles).
"""

from __future__ import annotations

from amaranth.hdl import C, Cat, Module, Mux, Signal, Value, signed, unsigned

from ..arith import ceil_log2, lsb_index, msb_index, wire


def fmt_of(fmt=None):
    """The stream format (``None``: the contract's ``STREAM_FORMAT``)."""
    from tellme.spec.numerics import StreamFormat, stream_format

    fmt = stream_format(fmt)
    if not isinstance(fmt, StreamFormat):
        raise TypeError(f"fmt must be a StreamFormat or None, got {fmt!r}")
    return fmt


def sat_code(fmt) -> int:
    """Magnitude code of the largest finite value (exponent 30, all-ones fraction)."""
    return (0x1E << fmt.man) | ((1 << fmt.man) - 1)


ROUND_FP_LATENCY = 3           # round_fp, every stream format
ROUND32_LATENCY = 2
ROUND_INT8_LATENCY = 2


class Pipe:
    """Registers that all advance on ``en`` (the global-stall pipeline of a block)."""

    def __init__(self, m: Module, en):
        self.m = m
        self.en = en
        self._n = 0

    def reg(self, value, name: str | None = None) -> Signal:
        value = Value.cast(value)
        self._n += 1
        s = Signal(value.shape(), name=name or f"p{self._n}")
        with self.m.If(self.en):
            self.m.d.sync += s.eq(value)
        return s

    def delay(self, value, n: int, name: str | None = None):
        for _ in range(n):
            value = self.reg(value, name)
        return value


def unpack(bits, fmt=None) -> tuple[Value, Value, Value]:
    """Stream bits -> (sign, significand (``fmt.sig_bits``, hidden bit included), shift
    (0..30)), with ``|x| = significand * 2**(shift - fmt.frac)`` (golden ``fmt.fields``).
    Exponent 31 (Inf/NaN) is never produced by the pipeline and is not special-cased."""
    fmt = fmt_of(fmt)
    M = fmt.man
    bits = Value.cast(bits)
    e = bits[M:M + 5]
    normal = e != 0
    sig = Cat(bits[:M], normal)
    sh = Mux(normal, e - 1, 0)[:5]
    return bits[M + 5], sig, sh


def unpack32(bits) -> tuple[Value, Value]:
    """FP32 bits of a positive normal number -> (m (24 bits), e) with value ``m * 2**e``,
    ``e = E - 150`` (signed)."""
    bits = Value.cast(bits)
    m = Cat(bits[:23], C(1, 1))
    return m, bits[23:31] - 150


def _abs_signed(m: Module, v) -> tuple[Value, Value]:
    """(sign, magnitude) of a signed Value."""
    v = wire(m, v)
    neg = v[-1]
    mag = Mux(neg, -v, v).as_unsigned()[:len(v)]
    return neg, mag


def _round_fp_core(m: Module, reg, sign, mag, exp, fmt) -> Value:
    """RN_fmt of ``(-1)**sign * mag * 2**exp`` -> stream bits, in three stages separated by
    ``reg`` (a pipeline register, or the identity for the combinational form)."""
    M, S, F = fmt.man, fmt.sig_bits, fmt.frac
    mag = wire(m, mag)
    exp = wire(m, exp)
    w = len(mag)
    # stage 1: leading/trailing one; shift amount.  mag' = mag << S, exp' = exp - S: then the
    # shift is always a right shift by sh >= 1 (the round bit exists).
    nz, pmsb = msb_index(m, mag)
    _, tz = lsb_index(m, mag)
    sh_norm = pmsb + 1                                # keeps S significant bits
    sh_sub = (S - F - exp).as_signed()                # keeps the LSB at 2**-F (subnormal)
    sh_sub = wire(m, sh_sub)
    use_norm = wire(m, sh_norm >= sh_sub)
    shmax = w + S + 1
    sh = Mux(use_norm, sh_norm, Mux(sh_sub > shmax, shmax, sh_sub))
    e_lsb = Mux(use_norm, exp + pmsb - M, -F)         # exponent of the significand's LSB
    s1 = dict(sign=reg(sign), mag=reg(mag), nz=reg(nz), tz=reg(tz),
              sh=reg(sh[:ceil_log2(shmax + 1)]), e_lsb=reg(e_lsb))
    # stage 2: shift, round and sticky bits
    magx = Cat(C(0, S), s1["mag"])
    t = wire(m, magx >> (s1["sh"] - 1).as_unsigned()[:len(s1["sh"])])
    sig = t[1:S + 1]
    rnd = t[0]
    sticky = s1["nz"] & ((s1["tz"] + S) < (s1["sh"] - 1))
    s2 = dict(sign=reg(s1["sign"]), sig=reg(sig), rnd=reg(rnd), sticky=reg(sticky),
              e_lsb=reg(s1["e_lsb"]), nz=reg(s1["nz"]))
    # stage 3: nearest-even increment, pack (the significand carry runs into the exponent),
    # saturate
    inc = s2["rnd"] & (s2["sticky"] | s2["sig"][0])
    big = s2["e_lsb"] + F
    packed = wire(m, (big.as_unsigned()[:6] << M) + s2["sig"] + inc)
    sat = (big > 29) | (packed >= (0x1F << M))
    mbits = Mux(~s2["nz"], 0, Mux(sat, sat_code(fmt), packed[:M + 5]))
    return Cat(mbits[:M + 5], s2["sign"])


def round_fp(p: Pipe, sign, mag, exp, fmt=None) -> Signal:
    """RN_fmt of ``(-1)**sign * mag * 2**exp`` -> stream bits (``fmt.bits`` wide). Latency
    ROUND_FP_LATENCY (3) registers, for every format.

    A zero ``mag`` gives a zero with the given sign (IEEE sign rules are the caller's). Values
    beyond the largest finite value after rounding saturate to it (golden ``fmt.round`` clips
    after rounding; every value that rounds beyond the maximum maps to it).
    """
    return p.reg(_round_fp_core(p.m, p.reg, sign, mag, exp, fmt_of(fmt)))


def rn_fmt(m: Module, mm, width: int, ee, fmt, name: str = "rn"):
    """The combinational form of :func:`round_fp` for a positive value: RN_fmt of the exact
    ``mm * 2**ee`` (unsigned ``mm`` < 2**width, signed ``ee``) -> the ``fmt.bits - 1``-bit
    magnitude pattern (sign handled by the caller)."""
    bits = _round_fp_core(m, lambda v: v, C(0, 1), Value.cast(mm)[:width], ee, fmt_of(fmt))
    return wire(m, bits, name=f"{name}_mag")[:fmt_of(fmt).bits - 1]


def round32(p: Pipe, mag, exp) -> tuple[Signal, Signal]:
    """RN32 significand of ``mag * 2**exp`` (mag > 0 assumed; zero gives m = 0) -> (m, e) with
    value ``m * 2**e``, ``m`` in [2**23, 2**24] (2**24 after a rounding carry). Unbounded
    exponent: callers guarantee the normal FP32 range. Latency ROUND32_LATENCY (2)."""
    mag = wire(p.m, mag)
    exp = wire(p.m, exp)
    w = len(mag)
    nz, pmsb = msb_index(p.m, mag)
    _, tz = lsb_index(p.m, mag)
    # mag' = mag << 24: right shift by pmsb + 1 leaves 24 bits
    s1 = dict(mag=p.reg(mag), pmsb=p.reg(pmsb), tz=p.reg(tz), nz=p.reg(nz),
              e=p.reg((exp + pmsb - 23).as_signed()))
    magx = Cat(C(0, 24), s1["mag"])
    t = wire(p.m, magx >> s1["pmsb"])                 # sh - 1 = pmsb
    m = t[1:25]
    rnd = t[0]
    sticky = s1["nz"] & ((s1["tz"] + 24) < s1["pmsb"])
    inc = rnd & (sticky | m[0])
    del w
    return p.reg(m + inc), p.reg(s1["e"])


def round_int8(p: Pipe, sign, mag, exp) -> Signal:
    """clamp(RNE((-1)**sign * mag * 2**exp), -128, 127) -> signed(8). Latency 2."""
    mag = wire(p.m, mag)
    exp = wire(p.m, exp)
    w = len(mag)
    nz, _ = msb_index(p.m, mag)
    _, tz = lsb_index(p.m, mag)
    k = wire(p.m, (-exp).as_signed())                 # right shift to the integer LSB
    huge = nz & (k <= 0)
    kmax = w + 1
    kc = Mux(k > kmax, kmax, Mux(k < 1, 1, k))[:ceil_log2(kmax + 1)]
    s1 = dict(sign=p.reg(sign), mag=p.reg(mag), nz=p.reg(nz), tz=p.reg(tz), k=p.reg(kc),
              huge=p.reg(huge))
    t = wire(p.m, s1["mag"] >> (s1["k"] - 1).as_unsigned()[:len(s1["k"])])
    q = t[1:]
    rnd = t[0]
    sticky = s1["nz"] & (s1["tz"] < (s1["k"] - 1))
    inc = rnd & (sticky | q[0])
    qi = wire(p.m, q + inc)
    lim = Mux(s1["sign"], 128, 127)
    mag8 = Mux(s1["huge"] | (qi > lim), lim, qi)[:8]
    out = Mux(s1["sign"], -mag8, mag8)
    return p.reg(out.as_signed()[:8].as_signed())


def abs_signed(m: Module, v):
    return _abs_signed(m, v)


def mag_max(values, fmt=None) -> Value:
    """Largest |x| (``fmt.bits - 1``-bit magnitude code: magnitudes order like integers) of
    stream bits."""
    nb = fmt_of(fmt).bits - 1
    vals = [Value.cast(v)[:nb] for v in values]
    while len(vals) > 1:
        nxt = [Mux(a > b, a, b) for a, b in zip(vals[0::2], vals[1::2], strict=False)]
        if len(vals) % 2:
            nxt.append(vals[-1])
        vals = nxt
    return vals[0]


__all__ = ["Pipe", "ROUND_FP_LATENCY", "ROUND32_LATENCY", "ROUND_INT8_LATENCY", "abs_signed",
           "ceil_log2", "fmt_of", "lsb_index", "mag_max", "msb_index", "rn_fmt", "round32",
           "round_fp",
           "round_int8", "sat_code", "unpack", "unpack32", "signed", "unsigned", "wire"]
