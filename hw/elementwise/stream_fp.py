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
instead of a second shifter. At 250 MHz (the timing proxy, docs/hw/timing.md) a rounder
takes a register cut inside the priority trees (:func:`index_halves`: the trees of the two
halves, then the last level), the shift with the sticky compare in a stage of its own, and the
increment with the packing in the last: :func:`round_fp` 4 stages (``stages=ROUND_FP_STAGES``;
its default of 3 merges the first two, for the attention KV quantiser that holds its inputs
two cycles per stage), :func:`round32` and :func:`round_int8` 3.

Multiplies wider than one DSP48E2 multiplier go through :func:`pipe_mul`: the partial
products (each one DSP, <= DSP_A x DSP_B bits) are registered, their sum is the next stage.
(yosys does not pack registers into the DSP48E2 here, so a product is registered in fabric
right after the DSP; Vivado would absorb these as MREG/PREG.)

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


ROUND_FP_LATENCY = 3           # round_fp's default (every stream format)
ROUND_FP_STAGES = 4            # round_fp(..., stages=ROUND_FP_STAGES): the element-wise blocks
ROUND32_LATENCY = 3
ROUND_INT8_LATENCY = 3
MUL_LATENCY = 2                # pipe_mul: partial products, sum
DSP_A, DSP_B = 26, 17          # unsigned operand bits of one DSP48E2 multiplier (27 x 18 signed)


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
    normal = e.any()
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


def index_halves(m: Module, reg, v) -> tuple[Value, Value, Value]:
    """(any bit set, index of the highest set bit, index of the lowest set bit) of unsigned
    ``v``, with ``reg`` (a pipeline register, or the identity) cut into the trees: the
    :func:`msb_index` / :func:`lsb_index` trees of its two halves (split at a power of two),
    ``reg``, then the last tree level (one mux per result). Unused results cost nothing."""
    v = Value.cast(v)
    w = len(v)
    if w < 4:
        nz, hi = msb_index(m, v)
        _, lo = lsb_index(m, v)
        return reg(nz), reg(hi), reg(lo)
    half = 1 << (ceil_log2(w) - 1)
    parts = []
    for part in (v[:half], v[half:]):
        nz, hi = msb_index(m, part)
        _, lo = lsb_index(m, part)
        parts.append((reg(nz), reg(hi), reg(lo)))
    (nz_l, hi_l, lo_l), (nz_h, hi_h, lo_h) = parts
    return (wire(m, nz_l | nz_h), wire(m, Mux(nz_h, hi_h + half, hi_l)),
            wire(m, Mux(nz_l, lo_l, lo_h + half)))


def _round_fp_core(m: Module, regs, sign, mag, exp, fmt) -> Value:
    """RN_fmt of ``(-1)**sign * mag * 2**exp`` -> stream bits, in four stages separated by the
    three functions ``regs`` (each a pipeline register, or the identity to merge two
    stages)."""
    reg1, reg2, reg3 = regs
    M, S, F = fmt.man, fmt.sig_bits, fmt.frac
    mag = wire(m, mag)
    exp = wire(m, exp)
    w = len(mag)
    # mag' = mag << S, exp' = exp - S: the result is mag' shifted right by sh >= 1 (the round
    # bit exists), sh = pmsb + 1 (keeps S significant bits) or, for a subnormal result, the
    # shift that puts the LSB at 2**-F, whichever is larger; capped at shmax (only the sticky
    # bit is left).
    shmax = w + S + 1
    # stage 1: leading/trailing one of each half (log-depth priority trees); terms of the
    # exponent alone
    nz, pmsb, tz = index_halves(m, reg1, mag)
    subm1 = wire(m, (S - F - 1 - exp).as_signed())    # subnormal shift - 1
    subm1c = Mux(subm1 > shmax - 1, shmax - 1, subm1)[:ceil_log2(shmax)]
    s1 = dict(sign=reg1(sign), mag=reg1(mag), nz=nz, pmsb=pmsb, tz=tz,
              subm1=reg1(subm1), subm1c=reg1(subm1c), ef=reg1(exp + (F - M)))
    # stage 2: the halves combined; normal or subnormal result: shift amount; exponent field
    # and its overflow
    use_norm = wire(m, s1["pmsb"] >= s1["subm1"])    # pmsb + 1 >= subnormal shift
    shm1 = Mux(use_norm, s1["pmsb"], s1["subm1c"])    # sh - 1 (subm1c > pmsb if used)
    ebig = wire(m, s1["ef"] + s1["pmsb"])             # e_lsb + F: field before the sig carry
    big = Mux(use_norm, ebig, 0)                      # (0 for a subnormal result)
    s2 = dict(sign=reg2(s1["sign"]), mag=reg2(s1["mag"]), nz=reg2(s1["nz"]),
              tzs=reg2(s1["tz"] + S), shm1=reg2(shm1), big=reg2(big.as_unsigned()[:6]),
              big_sat=reg2(use_norm & (ebig > 29)))
    # stage 3: shift, round and sticky bits
    magx = Cat(C(0, S), s2["mag"])
    t = wire(m, magx >> s2["shm1"])
    sig = t[1:S + 1]
    rnd = t[0]
    sticky = s2["nz"] & (s2["tzs"] < s2["shm1"])
    s3 = dict(sign=reg3(s2["sign"]), sig=reg3(sig), rnd=reg3(rnd), sticky=reg3(sticky),
              big=reg3(s2["big"]), big_sat=reg3(s2["big_sat"]), nz=reg3(s2["nz"]))
    # stage 4: nearest-even increment, pack (the significand carry runs into the exponent),
    # saturate
    inc = s3["rnd"] & (s3["sticky"] | s3["sig"][0])
    packed = wire(m, (s3["big"] << M) + s3["sig"] + inc)
    sat = s3["big_sat"] | (packed >= (0x1F << M))
    mbits = Mux(~s3["nz"], 0, Mux(sat, sat_code(fmt), packed[:M + 5]))
    return Cat(mbits[:M + 5], s3["sign"])


def round_fp(p: Pipe, sign, mag, exp, fmt=None, *, stages: int = ROUND_FP_LATENCY) -> Signal:
    """RN_fmt of ``(-1)**sign * mag * 2**exp`` -> stream bits (``fmt.bits`` wide), ``stages``
    registers for every format: ROUND_FP_STAGES (4, the element-wise blocks: priority trees |
    shift amount | shift and sticky | increment and pack, each within the 250 MHz period) or
    ROUND_FP_LATENCY (3, the default: the first two stages merged, as the attention KV
    quantiser uses it with two cycles per stage).

    A zero ``mag`` gives a zero with the given sign (IEEE sign rules are the caller's). Values
    beyond the largest finite value after rounding saturate to it (golden ``fmt.round`` clips
    after rounding; every value that rounds beyond the maximum maps to it).
    """
    if stages not in (ROUND_FP_LATENCY, ROUND_FP_STAGES):
        raise ValueError(f"round_fp has {ROUND_FP_LATENCY} or {ROUND_FP_STAGES} stages, "
                         f"got {stages}")
    regs = (p.reg if stages == ROUND_FP_STAGES else _same, p.reg, p.reg)
    return p.reg(_round_fp_core(p.m, regs, sign, mag, exp, fmt_of(fmt)))


def _same(v):
    return v


def rn_fmt(m: Module, mm, width: int, ee, fmt, name: str = "rn"):
    """The combinational form of :func:`round_fp` for a positive value: RN_fmt of the exact
    ``mm * 2**ee`` (unsigned ``mm`` < 2**width, signed ``ee``) -> the ``fmt.bits - 1``-bit
    magnitude pattern (sign handled by the caller)."""
    bits = _round_fp_core(m, (_same,) * 3, C(0, 1), Value.cast(mm)[:width], ee, fmt_of(fmt))
    return wire(m, bits, name=f"{name}_mag")[:fmt_of(fmt).bits - 1]


def round32(p: Pipe, mag, exp) -> tuple[Signal, Signal]:
    """RN32 significand of ``mag * 2**exp`` (mag > 0 assumed; zero gives m = 0) -> (m, e) with
    value ``m * 2**e``, ``m`` in [2**23, 2**24] (2**24 after a rounding carry). Unbounded
    exponent: callers guarantee the normal FP32 range. Latency ROUND32_LATENCY (3): priority
    trees | shift and sticky | increment."""
    mag = wire(p.m, mag)
    exp = wire(p.m, exp)
    nz, pmsb, tz = index_halves(p.m, p.reg, mag)
    # mag' = mag << 24: right shift by pmsb + 1 leaves 24 bits
    s1 = dict(mag=p.reg(mag), pmsb=pmsb, tz=tz, nz=nz, e=p.reg((exp - 23).as_signed()))
    magx = Cat(C(0, 24), s1["mag"])
    t = wire(p.m, magx >> s1["pmsb"])                 # sh - 1 = pmsb
    m = t[1:25]
    rnd = t[0]
    sticky = s1["nz"] & ((s1["tz"] + 24) < s1["pmsb"])
    inc = rnd & (sticky | m[0])
    m2, inc2, e2 = p.reg(m), p.reg(inc), p.reg(s1["e"] + s1["pmsb"])
    return p.reg(m2 + inc2), p.reg(e2)


def round_int8(p: Pipe, sign, mag, exp) -> Signal:
    """clamp(RNE((-1)**sign * mag * 2**exp), -128, 127) -> signed(8). Latency
    ROUND_INT8_LATENCY (3): priority trees | shift, sticky and overflow | increment, clamp,
    sign."""
    mag = wire(p.m, mag)
    exp = wire(p.m, exp)
    w = len(mag)
    nz, pmsb, tz = index_halves(p.m, p.reg, mag)
    k = wire(p.m, (-exp).as_signed())                 # right shift to the integer LSB
    kmax = w + 1
    kb = ceil_log2(kmax + 1)
    kc = wire(p.m, Mux(k > kmax, kmax, Mux(k < 1, 1, k))[:kb])
    s1 = dict(sign=p.reg(sign), mag=p.reg(mag), nz=nz, tz=tz, pmsb=pmsb,
              km1=p.reg((kc - 1)[:kb]), k8=p.reg(kc + 8), k0=p.reg(k <= 0))
    # q = floor(|v|) = mag >> k: its low 8 bits, and whether it is >= 256 (leading one of
    # mag at k + 8 or above)
    t = wire(p.m, s1["mag"] >> s1["km1"])
    q8 = Cat(t, C(0, 9))[1:9]
    rnd = t[0]
    sticky = s1["nz"] & (s1["tz"] < s1["km1"])
    over = s1["nz"] & (s1["k0"] | (s1["pmsb"] >= s1["k8"]))
    s2 = dict(sign=p.reg(s1["sign"]), q8=p.reg(q8), inc=p.reg(rnd & (sticky | q8[0])),
              over=p.reg(over))
    # +-(q8 + inc) in one adder (-(q + i) = ~q + ~i in 8 bits); q8 + inc beyond 127 (128 for
    # a negative value) saturates
    sg, q8, inc = s2["sign"], s2["q8"], s2["inc"]
    val = wire(p.m, (q8 ^ sg.replicate(len(q8))) + (inc ^ sg))
    sat = s2["over"] | Mux(sg, q8[7] & (q8[:7].any() | inc), q8[7] | (q8[:7].all() & inc))
    out = Mux(sat, Mux(sg, 0x80, 0x7F), val[:8])
    return p.reg(out[:8].as_signed())


def pipe_mul(p: Pipe, a, b, addend=None) -> Signal:
    """``a * b (+ addend)`` in MUL_LATENCY (2) stages: the partial products, each one DSP48E2
    multiplier (pieces of at most DSP_A x DSP_B unsigned bits, the split with the fewest
    pieces), registered; then their sum (with ``addend``, registered alongside them).
    ``b`` is unsigned; a signed ``a`` (at most DSP_A + 1 bits) is kept whole and ``b`` cut in
    DSP_B-bit pieces. The result is ``len(a) + len(b)`` bits (one more with an addend), signed
    if ``a`` or ``addend`` is."""
    a, b = Value.cast(a), Value.cast(b)
    if b.shape().signed:
        raise TypeError("pipe_mul: b must be unsigned")
    sa = a.shape().signed

    def pieces(v, n):
        return [(lo, v[lo:min(lo + n, len(v))]) for lo in range(0, len(v), n)]

    if sa:
        if len(a) > DSP_A + 1:
            raise ValueError(f"pipe_mul: a signed a has at most {DSP_A + 1} bits")
        a_parts, b_parts = [(0, a)], pieces(b, DSP_B)
    else:
        def count(x, y):
            return -(-len(x) // DSP_A) * -(-len(y) // DSP_B)
        if count(b, a) < count(a, b):
            a, b = b, a
        a_parts, b_parts = pieces(a, DSP_A), pieces(b, DSP_B)
    terms = [(p.reg(ap * bp), alo + blo) for alo, ap in a_parts for blo, bp in b_parts]
    width = len(a) + len(b)
    if addend is not None:
        addend = Value.cast(addend)
        terms.append((p.reg(addend), 0))
        width = max(width, len(addend)) + 1
    total = terms[0][0] << terms[0][1]
    for v, off in terms[1:]:
        total = total + (v << off)
    signed_out = sa or (addend is not None and addend.shape().signed)
    total = total[:width]
    return p.reg(total.as_signed() if signed_out else total)


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


__all__ = ["DSP_A", "DSP_B", "MUL_LATENCY", "Pipe", "ROUND32_LATENCY", "ROUND_FP_LATENCY",
           "ROUND_FP_STAGES", "ROUND_INT8_LATENCY", "abs_signed", "ceil_log2", "fmt_of",
           "index_halves", "lsb_index", "mag_max", "msb_index", "pipe_mul", "rn_fmt", "round32",
           "round_fp", "round_int8", "sat_code", "unpack", "unpack32", "signed", "unsigned",
           "wire"]
