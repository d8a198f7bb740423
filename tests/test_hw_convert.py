"""hw/convert.py FloatToStream in the Amaranth simulator against golden ``float_to_stream``,
bit for bit: float32 / float16 / bfloat16 patterns of every exponent (subnormals, rounding
ties, the saturation edge, infinities, signed zeros) into FP24 and FP16, with output stalls."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from tellme.hw.convert import FloatToStream
from tellme.sim.golden.hw_numerics import float_to_stream
from tellme.spec.numerics import FP16, FP24

DTYPES = {"float32": 0, "float16": 1, "bfloat16": 2}


def _patterns(dtype: str, rng, n: int) -> np.ndarray:
    """Storage words: random ones spread over every exponent, and edge cases."""
    if dtype == "float32":
        e = rng.integers(0, 256, n, dtype=np.uint64)
        f = rng.integers(0, 1 << 23, n, dtype=np.uint64)
        f[::3] = (f[::3] & ~np.uint64(0x1F)) | np.uint64(0x10)         # FP24 ties (5 bits cut)
        f[1::3] = (f[1::3] & ~np.uint64(0x1FFF)) | np.uint64(0x1000)   # FP16 ties (13 bits)
        w = (rng.integers(0, 2, n, dtype=np.uint64) << 31) | (e << 23) | f
        edge = [0, 0x80000000, 0x7F800000, 0xFF800000, 0x477FE000, 0x477FF000, 0x477FFFFF,
                0x477FFFC0, 0x477FFFE0, 0x387FC000, 0x38800000, 0x33800000, 0x33000000,
                0x2F800000, 0x2F000000, 0x00000001, 0x007FFFFF]
        w = np.concatenate([np.array(edge, np.uint64), w])
        nan = (((w >> 23) & 0xFF) == 0xFF) & ((w & 0x7FFFFF) != 0)
        return w[~nan].astype(np.uint32)
    if dtype == "float16":
        w = np.arange(0, 1 << 16, dtype=np.uint32)
        w = w[(w & 0x7C00) != 0x7C00]                    # no Inf/NaN patterns here
        return np.concatenate([w[::max(1, w.size // n)], [0x7C00, 0xFC00, 0x0001, 0x8001]]
                              ).astype(np.uint32)
    e = rng.integers(0, 255, n, dtype=np.uint32)
    w = (rng.integers(0, 2, n, dtype=np.uint32) << 15) | (e << 7) | \
        rng.integers(0, 128, n, dtype=np.uint32)
    return np.concatenate([w, [0x7F80, 0xFF80, 0x0001, 0x477F, 0x4780]]).astype(np.uint32)


def _run(dut, dtype: str, words: np.ndarray, lanes: int, rng) -> list[int]:
    beats = [words[i:i + lanes] for i in range(0, len(words), lanes)]
    beats[-1] = np.concatenate([beats[-1], np.zeros(lanes - len(beats[-1]), np.uint32)])
    got = []

    async def source(ctx):
        ctx.set(dut.dtype, DTYPES[dtype])
        for k, b in enumerate(beats):
            for j in range(lanes):
                ctx.set(dut.i.payload.data[j], int(b[j]))
            ctx.set(dut.i.payload.last, k == len(beats) - 1)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        while len(got) < len(beats) * lanes:
            ready = int(rng.random() < 0.7)
            ctx.set(dut.o.ready, ready)
            _, _, valid, *data = await ctx.tick().sample(
                dut.o.valid, *(dut.o.payload.data[j] for j in range(lanes)))
            if valid and ready:
                got.extend(data)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    return got[:len(words)]


@pytest.mark.parametrize("fmt", [FP24, FP16], ids=["fp24", "fp16"])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_float_to_stream_bit_exact(fmt, dtype):
    rng = np.random.default_rng(5)
    words = _patterns(dtype, rng, 1500)
    dut = FloatToStream(lanes=2, fmt=fmt)
    got = np.array(_run(dut, dtype, words, 2, rng), dtype=np.int64)
    want = float_to_stream(words, dtype, fmt=fmt)
    bad = np.nonzero(got != want)[0]
    assert bad.size == 0, (f"{bad.size} mismatches, first: word {int(words[bad[0]]):#x} -> "
                           f"{int(got[bad[0]]):#x}, golden {int(want[bad[0]]):#x}")


def test_golden_refuses_nan():
    with pytest.raises(ValueError, match="NaN"):
        float_to_stream(np.array([0x7FC00000], np.uint32), "float32")
