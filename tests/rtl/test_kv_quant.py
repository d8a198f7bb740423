"""The quantising KV writer (hw/attention/kv_quant.py).

Exactness of the integer methods against golden ``kv_quant_int8`` (no simulator): the scale
over every FP16 magnitude and every FP24 significand (all FP24 magnitudes in ``slow``), the
code step over every FP16 scale with the elements nearest each rounding midpoint and random
pairs (every FP16 (x, s) pair of consistent rows in ``slow``).

RTL (cocotb + Verilator, tests/rtl/tb_kv_quant.py and tb_kv_quant_e2e.py), default tier:
``KVQuantizer`` at FP24 (beat 4, 2 lanes, head_dim <= 16): bit-exact under stalls, the cycle
model exact without; ``KVQuantWriter`` + ``KVInt8Reader`` on one AXI4 port at FP24 (input beat
2, the integer engine's sim beat 4: padded K rows, two pieces per K beat): the memory image
equals the int8 layout of ``kv_quant_int8`` and the reader streams it back as the engine's
beats. ``slow``: the quantiser at FP16, with 1 and 4 lanes, the kv260 build (beat 8, head_dim
128), the end-to-end test at FP16, at the sim beats 4 / 4 and at the kv260 beats 8 / 128.
"""

import numpy as np
import pytest

from tellme.hw.attention.kv_quant import (
    KVInt8Writer,
    KVQuantizer,
    KVQuantWriter,
    codes_int,
    quant_writer_commands,
    scale_bits_int,
    writer_transactions,
)
from tellme.sim.golden.attention_hw import kv_quant_int8, kv_quant_int8_beats
from tellme.sim.runner import run_cocotb
from tellme.spec.kv_layout import FORMATS, KVLayout
from tellme.spec.numerics import FP16, FP24

SIM = dict(beat=4, lanes=2, max_head_dim=16)


# ---- exactness of the integer methods -----------------------------------------------------

def _golden_scale(codes, fmt):
    return fmt.to_bits(kv_quant_int8(fmt.from_bits(codes)[:, None], fmt=fmt)[1])


@pytest.mark.parametrize("fmt", [FP16, FP24], ids=["fp16", "fp24"])
def test_scale_method_every_magnitude(fmt):
    """s = RN_fmt(amax / 127) by floor(sig * 2**8 / 127) + sticky + one rounding: every
    magnitude code of the format (FP24: 2**23 - 2**18 of them)."""
    codes = np.arange(0, 31 << fmt.man, dtype=np.int64)
    for part in np.array_split(codes, 8):
        got, want = scale_bits_int(part, fmt), _golden_scale(part, fmt)
        assert np.array_equal(got, want), f"first mismatch at code {part[got != want][0]:#x}"


def _golden_codes(x, s, fmt):
    """clamp(RNE(x / s)) as kv_quant_int8 computes it (float64, one rounding)."""
    xf = fmt.from_bits(x).astype(np.float64)
    sf = fmt.from_bits(s).astype(np.float64)
    safe = np.where(sf > 0, sf, 1.0)
    return np.where(sf > 0, np.clip(np.rint(xf / safe), -127, 127), 0).astype(np.int8)


def _amax_limit(s, fmt):
    """Largest magnitude code whose scale is ``s`` (rows are consistent: |x| <= amax)."""
    codes = np.arange(0, 31 << fmt.man, dtype=np.int64)
    sc = scale_bits_int(codes, fmt)
    lim = np.zeros(int(sc.max()) + 1, dtype=np.int64)
    np.maximum.at(lim, sc, codes)
    s = np.asarray(s)
    return np.where(s < lim.size, lim[np.minimum(s, lim.size - 1)], 0)


def test_code_method_near_every_midpoint_fp16():
    """Every FP16 scale; the representable elements nearest (k + 1/2) s (exact ties where they
    exist) and k s for 40 random k per scale, both signs, and random elements up to the row's
    largest amax (every pair: the slow test below)."""
    fmt = FP16
    rng = np.random.default_rng(1)
    s = np.arange(1, 31 << fmt.man, dtype=np.int64)
    s = s[_amax_limit(s, fmt) > 0]
    sf = fmt.from_bits(s).astype(np.float64)
    lim = _amax_limit(s, fmt)
    xs, ss = [], []
    for k in rng.integers(0, 191, size=(40, s.size)):
        for frac in (0.0, 0.5):
            v = (k + frac) * sf
            for nudge in (-1, 0, 1):
                c = fmt.to_bits(fmt.round(v)) + nudge
                ok = (c >= 0) & (c <= lim)
                xs.append(c[ok])
                ss.append(s[ok])
    r = rng.integers(0, lim + 1, size=(4, lim.size))
    xs += list(r)
    ss += [s] * 4
    x, sv = np.concatenate(xs), np.concatenate(ss)
    x = x | (rng.integers(0, 2, size=x.size) << 15)
    got, want = codes_int(x, sv, fmt), _golden_codes(x, sv, fmt)
    assert x.size > 3_000_000 and np.array_equal(got, want)


def test_code_method_random_fp24():
    fmt = FP24
    rng = np.random.default_rng(2)
    s = rng.integers(1, 31 << fmt.man, size=400_000)
    s = np.concatenate([s, rng.integers(1, 1 << fmt.man, size=100_000)])     # subnormal s
    lim = _amax_limit_fp24(s)
    keep = lim > 0
    s, lim = s[keep], lim[keep]
    sf = fmt.from_bits(s).astype(np.float64)
    k = rng.integers(0, 191, size=s.size)
    ties = fmt.to_bits(fmt.round((k + 0.5) * sf))
    x = np.concatenate([rng.integers(0, lim + 1), np.minimum(ties, lim), np.minimum(ties + 1,
                                                                                    lim)])
    sv = np.concatenate([s, s, s])
    x = x | (rng.integers(0, 2, size=x.size) << 23)
    assert np.array_equal(codes_int(x, sv, fmt), _golden_codes(x, sv, fmt))


def _amax_limit_fp24(s):
    """FP24: the largest amax code with scale s, by bisection on the monotone scale method."""
    lo = np.zeros_like(s)
    hi = np.full_like(s, (31 << FP24.man) - 1)
    ok = scale_bits_int(hi, FP24) <= s
    lo = np.where(ok, hi, lo)
    for _ in range(24):
        mid = (lo + hi + 1) // 2
        le = scale_bits_int(mid, FP24) <= s
        lo = np.where(le, mid, lo)
        hi = np.where(le, hi, mid - 1)
    return np.where(scale_bits_int(lo, FP24) == s, lo, 0)


@pytest.mark.slow
def test_code_method_every_pair_fp16():
    """Every FP16 (|x|, s) pair of a consistent row (|x| <= largest amax with scale s)."""
    fmt = FP16
    s_all = np.arange(1, 31 << fmt.man, dtype=np.int64)
    lim_all = _amax_limit(s_all, fmt)
    for s0 in range(0, s_all.size, 256):
        s, lim = s_all[s0:s0 + 256], lim_all[s0:s0 + 256]
        n = int(lim.max()) + 1
        x = np.arange(n, dtype=np.int64)[None, :].repeat(s.size, 0)
        sv = s[:, None].repeat(n, 1)
        keep = x <= lim[:, None]
        x, sv = x[keep], sv[keep]
        assert np.array_equal(codes_int(x, sv, fmt), _golden_codes(x, sv, fmt)), s0


def test_beats_wrapper_and_commands():
    # amax 127: s = 1 exactly; 0.5 and 2.5 are ties (to even: 0, 2)
    x = FP24.round(np.array([[0.5, -127.0, 2.5, 0.0], [0.0, 0.0, 0.0, -0.0]]))
    b = kv_quant_int8_beats(x, 2, fmt=FP24)
    q, s = kv_quant_int8(x, fmt=FP24)
    one = int(FP24.to_bits(np.float32(1.0)))
    assert q[0].tolist() == [0, -127, 2, 0] and FP24.to_bits(s).tolist() == [one, 0]
    assert b == [0x81 << 8 | one << 16, 2 | one << 16, 0, 0]
    lay = KVLayout(2, 3, 16, 40, dtype="int8", fmt=FP24, beat=4)
    cmds = quant_writer_commands(lay, 1, 5, 3, 4)
    assert len(cmds) == 6 and cmds[4] == dict(kind=1, addr=lay.v_addr(1, 1, 5, 0),
                                              saddr=lay.scale_addr(1, "K", 1, 5), key=1,
                                              rows=3, bpr=4)
    assert cmds[0] == dict(kind=0, addr=lay.row_addr(1, "K", 0, 5),
                           saddr=lay.scale_addr(1, "K", 0, 5), key=1, rows=3, bpr=4)
    # writes per row: K the padded row in beat pieces + its scale, V one per code + scale
    assert writer_transactions("K", 1, head_dim=96, beat=8, kv_beat=64) == 16 + 1
    assert writer_transactions("V", 2, head_dim=128, beat=8, kv_beat=64) == 2 * 129
    with pytest.raises(ValueError, match="stores int8 layouts"):
        quant_writer_commands(KVLayout(1, 1, 16, 8), 0, 0, 1, 4)
    with pytest.raises(ValueError, match="outside the KV cache"):
        quant_writer_commands(lay, 0, 39, 2, 4)


def test_rejects():
    with pytest.raises(ValueError, match="must divide the beat"):
        KVQuantizer(beat=4, lanes=3)
    with pytest.raises(ValueError, match="int8 codes and a fp16 scale"):
        KVQuantizer(beat=1, lanes=1, max_head_dim=4, fmt=FP16)
    with pytest.raises(ValueError, match="not a multiple of beat"):
        KVQuantizer(beat=4, max_head_dim=18)
    with pytest.raises(TypeError, match="StreamFormat of whole bytes"):
        KVQuantizer(fmt="fp24")
    with pytest.raises(ValueError, match="must be a power of two >= 2"):
        KVInt8Writer(beat=3)
    with pytest.raises(ValueError, match="kv_beat 4 must be a power of two multiple"):
        KVQuantWriter(beat=8, kv_beat=4, max_head_dim=16)
    with pytest.raises(ValueError, match="not a multiple of the beat 8"):
        quant_writer_commands(KVLayout(1, 1, 16, 8, dtype="int8", beat=4), 0, 0, 1, 8)


# ---- RTL ----------------------------------------------------------------------------------

def _run_quant(params, seed=1):
    hw = dict(params, fmt=FORMATS[params["fmt"]])
    run_cocotb(lambda: KVQuantizer(**hw), name="kv_quant", params=params,
               test_module="tests.rtl.tb_kv_quant", extra_env={"SEED": str(seed)})


@pytest.mark.rtl
@pytest.mark.parametrize("fmt", ["fp24", pytest.param("fp16", marks=pytest.mark.slow)])
def test_kv_quant(fmt):
    _run_quant(dict(SIM, fmt=fmt))


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("lanes", [1, 4])
def test_kv_quant_lanes(lanes):
    _run_quant(dict(SIM, lanes=lanes, fmt="fp24"), seed=lanes + 2)


@pytest.mark.rtl
@pytest.mark.slow
def test_kv_quant_kv260():
    _run_quant(dict(beat=8, lanes=2, max_head_dim=128, fmt="fp24"), seed=9)


class QuantWriterReader:
    """Test top: KVQuantWriter (ports wr_cmd, wr, wr_busy, wr_done) and KVInt8Reader
    (rd_cmd, o, rd_busy, rd_done) on one AXI4 port (m_axi_*), ``error`` of either."""

    def __new__(cls, wr: dict, rd: dict, fmt):
        from amaranth.hdl import Module
        from amaranth.lib import wiring
        from amaranth.lib.wiring import Out

        from tellme.hw.attention.kv_dma import KVInt8Reader

        class _Top(wiring.Component):
            def __init__(self):
                self._wr = KVQuantWriter(**wr, fmt=fmt)
                self._rd = KVInt8Reader(**rd, fmt=fmt)
                sig = {"error": Out(1)}
                ren = {"wr": {"i_cmd": "wr_cmd", "i": "wr", "busy": "wr_busy",
                              "done": "wr_done"},
                       "rd": {"i_cmd": "rd_cmd", "o": "o", "busy": "rd_busy",
                              "done": "rd_done"}}
                self._map = []
                for key, sub in (("wr", self._wr), ("rd", self._rd)):
                    for name, mem in sub.signature.members.items():
                        if name.startswith("m_axi_") or name in ren[key]:
                            outer = name if name.startswith("m_axi_") else ren[key][name]
                            sig[outer] = mem
                            self._map.append((outer, sub, name, mem))
                super().__init__(sig)

            def elaborate(self, platform):
                m = Module()
                m.submodules.wr, m.submodules.rd = self._wr, self._rd
                for outer, sub, inner, mem in self._map:
                    o, i = getattr(self, outer), getattr(sub, inner)
                    if mem.is_signature:
                        if mem.flow == Out:
                            wiring.connect(m, i, wiring.flipped(o))
                        else:
                            wiring.connect(m, wiring.flipped(o), i)
                    elif mem.flow == Out:
                        m.d.comb += o.eq(i)
                    else:
                        m.d.comb += i.eq(o)
                m.d.comb += self.error.eq(self._wr.error | self._rd.error)
                return m

        return _Top()


def _run_e2e(fmt, seed=1, *, beat=2, kv_beat=4, max_head_dim=16, depth=8):
    wr = dict(beat=beat, kv_beat=kv_beat, lanes=2, max_head_dim=max_head_dim, data_width=128,
              addr_width=32, count_width=12, max_outstanding=8)
    rd = dict(beat=kv_beat, depth=depth, max_head_dim=max_head_dim, ctx_bits=11,
              data_width=128, addr_width=32, max_burst=16, max_outstanding=4)
    params = dict(wr=wr, rd=rd, fmt=fmt)
    run_cocotb(lambda: QuantWriterReader(wr, rd, FORMATS[fmt]), name="kv_quant_e2e",
               params=params, test_module="tests.rtl.tb_kv_quant_e2e",
               extra_env={"SEED": str(seed)})


@pytest.mark.rtl
@pytest.mark.parametrize("fmt", ["fp24", pytest.param("fp16", marks=pytest.mark.slow)])
def test_kv_quant_writer_e2e(fmt):
    _run_e2e(fmt)


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("beats", [(4, 4), (8, 128)], ids=["sim", "kv260"])
def test_kv_quant_writer_e2e_beats(beats):
    """The quantiser's sim beat 4 into the engine's sim beat 4; the kv260 beats (8 in, 128 out,
    head_dim up to 128: 96 pads K rows to one 128-code beat)."""
    beat, kv_beat = beats
    _run_e2e("fp24", seed=2, beat=beat, kv_beat=kv_beat, max_head_dim=16 * beat,
             depth=max(8, kv_beat))


def test_registry_and_budget_line():
    """``kv_quant`` is a registry block (``tellme hw report --block kv_quant``) for every
    target and counts in the KV DMA line of the budget."""
    import gc
    import warnings

    from tellme.hw import budget
    from tellme.hw.blocks import make_block, registry

    assert "kv_quant" in registry()
    assert budget.line_of("kv_quant", budget.budget("kv260")).key == "kv_dma"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # built, not elaborated
        for target in ("sim", "kv260", "zcu104"):
            q = make_block("kv_quant", target)
            assert isinstance(q, KVQuantizer) and q.fmt == FP24
        assert make_block("kv_quant", "kv260", FP16).fmt == FP16
        del q
        gc.collect()
