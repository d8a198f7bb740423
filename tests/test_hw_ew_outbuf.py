"""TLMM output buffer (hw/elementwise/outbuf.py) in the Amaranth simulator: identity (golden)
under TLMM-like bursts and random backpressure, every transfer on the cycle the model
(sim.cycles_ew.outbuf_run) predicts; the TLMM never waits at the kv260 depth for the public
models' linears. The cocotb suite (tests/rtl/tb_ew.py::test_outbuf) repeats the identity check
on the generated Verilog under random stalls."""

from __future__ import annotations

import gc
import warnings

import numpy as np
import pytest
from amaranth.sim import Simulator

from tellme.hw.elementwise.outbuf import TlmmOutBuffer
from tellme.hw.tlmm import out_layout
from tellme.sim import cycles_ew
from tellme.sim.payload import layout_fields, pack_array, pack_struct, unpack_array

AW = 15


def _beats(rng, n_beats, q, row_beats):
    acc = rng.integers(-(1 << (AW - 1)), 1 << (AW - 1), (n_beats, q))
    acc[0] = [-(1 << (AW - 1))] * q                      # extremes
    acc[1] = [(1 << (AW - 1)) - 1] * q
    last = [int((b + 1) % row_beats == 0) for b in range(n_beats)]
    return acc, last


def _run(q, lanes, depth, arrivals, ready_p, seed):
    rng = np.random.default_rng(seed)
    n = len(arrivals)
    acc, last = _beats(rng, n, q, row_beats=3)
    fi = layout_fields(out_layout(q=q, acc_width=AW))
    payloads = [pack_struct(fi, acc=pack_array(acc[b], AW), last=last[b]) for b in range(n)]
    ready = (rng.random(len(arrivals) * q // lanes * 4 + 4 * arrivals[-1] + 64) >= ready_p)
    dut = TlmmOutBuffer(q=q, lanes=lanes, acc_width=AW, depth=depth)
    got, acc_c, out_c = [], [], []
    n_out = n * q // lanes

    async def bench(ctx):
        j, c = 0, 0
        while len(got) < n_out:
            offer = j < n and arrivals[j] <= c
            ctx.set(dut.i.valid, int(offer))
            if offer:
                ctx.set(dut.i.payload.as_value(), payloads[j])
            ctx.set(dut.o.ready, int(ready[c]))
            if offer and ctx.get(dut.i.ready):
                acc_c.append(c)
                j += 1
            if ctx.get(dut.o.valid) and ready[c]:
                out_c.append(c)
                got.append(int(ctx.get(dut.o.payload.as_value())))
            await ctx.tick()
            c += 1
            assert c < len(ready) - 1, "timeout"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    # golden: identity (the Q-wide beats split into q/lanes sub-beats, last on the final one)
    lw = lanes * AW
    got_acc = np.array([unpack_array(g & ((1 << lw) - 1), AW, lanes, signed=True)
                        for g in got]).reshape(n, q)
    np.testing.assert_array_equal(got_acc, acc)
    got_last = [g >> lw for g in got]
    R = q // lanes
    assert got_last == [last[b] if k == R - 1 else 0 for b in range(n) for k in range(R)]
    # cycle-exact against the model (same arrivals, same backpressure)
    m_acc, m_out = cycles_ew.outbuf_run(arrivals, q, lanes, depth, ready=lambda c: ready[c])
    assert (acc_c, out_c) == (m_acc, m_out)
    return acc_c, out_c


@pytest.mark.parametrize("q,lanes,depth", [(4, 2, 4), (16, 2, 8), (16, 16, 3), (4, 1, 2),
                                           (8, 8, 2)])
def test_outbuf_bursts(q, lanes, depth):
    # TLMM-like: bursts of 6 beats every 40 cycles, then a back-to-back run that fills it
    arrivals = [t * 40 + i for t in range(3) for i in range(6)] + [130] * 12
    for k, ready_p in enumerate((0.0, 0.3)):
        _, out_c = _run(q, lanes, depth, arrivals, ready_p, seed=k + q + lanes)
        if ready_p == 0.0:
            # stall-free back-to-back tail: one sub-beat per cycle once started
            assert out_c[-1] - out_c[-12 * q // lanes] == 12 * q // lanes - 1


def test_outbuf_stall_free_cycles():
    arrivals = [0] * 9
    acc_c, out_c = _run(16, 2, 4, arrivals, 0.0, seed=9)
    assert out_c[-1] - acc_c[0] == cycles_ew.expected_cycles("ob", beats=9, q=16, lanes=2)


def test_outbuf_tlmm_never_waits_kv260():
    """Every linear of both public models, as the kv260 engine tiles it (sim.cycles), bursts
    into a 2*nbt_max-deep buffer drained at ew_lanes per cycle without stalling the TLMM."""
    from tellme.hw.elementwise.params import EwParams
    from tellme.hw.presets import preset
    from tellme.spec.codes import padded_dims
    from tellme.spec.models import MODELS

    p, hp = EwParams.from_preset("kv260"), preset("kv260")
    assert p.ob_depth == 2 * hp.nbt_max
    for name in ("bitnet_b1_58-large", "bitnet-b1.58-2B-4T"):
        for lin, (n_out, k_in) in MODELS[name].linear_shapes().items():
            nb, kb = padded_dims(n_out, k_in, hp.t, hp.q)
            tile = -(-nb // -(-nb // min(nb, hp.half_depth // kb)))
            assert tile <= hp.nbt_max
            wait = cycles_ew.outbuf_wait(tile, kb, 3, p.q, p.lanes, p.ob_depth)
            assert wait == 0, (name, lin, tile, kb, wait)
    # and the buffer matters: with one lane and a shallow buffer the engine would wait
    assert cycles_ew.outbuf_wait(107, 19, 3, 16, 1, 8) > 0


def test_outbuf_parameter_errors():
    # components whose constructor raised warn (UnusedElaboratable) when collected
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="lanes=3 must divide q=16"):
            TlmmOutBuffer(q=16, lanes=3, acc_width=AW, depth=4)
        with pytest.raises(ValueError, match="depth"):
            TlmmOutBuffer(q=16, lanes=2, acc_width=AW, depth=1)
        with pytest.raises(TypeError, match="q must be a positive integer"):
            TlmmOutBuffer(q=0, lanes=2, acc_width=AW, depth=4)
        gc.collect()
