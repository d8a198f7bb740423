"""cocotb testbench: KVReader -> AttentionEngine (tests/rtl/test_attn_kv_dma.py, ``reader_engine``).

A KV cache laid out by tellme.spec.kv_layout (rows in the build's stream format, params["fmt"])
in cocotbext-axi's AxiRamRead (random AR/R pauses); per engine call the reader fetches the KV
head's rows in kv_schedule order straight into the engine's ``i_kv``; the outputs must equal
tellme.sim.golden.hw_numerics.attention_decode / attention_prefill bit for bit. (An int8
cache is read by KVInt8Reader into the integer engine: tests/rtl/tb_attn_kv_int8_e2e.py.)
"""

from __future__ import annotations

import logging
import os
import random

import cocotb
import numpy as np
from cocotbext.axi import AxiRamRead, AxiReadBus

from tellme.hw.attention.engine import cmd_layout
from tellme.hw.attention.kv_dma import read_command_layout, reader_command
from tellme.sim.drivers import (
    StreamMonitor,
    StreamSink,
    StreamSource,
    layout_fields,
    pack_array,
    pack_struct,
    pause_generator,
    start_clock_and_reset,
)
from tellme.sim.golden import hw_numerics as hw
from tellme.sim.runner import cocotb_params
from tellme.spec.attention import decode_calls, prefill_calls
from tellme.spec.kv_layout import FORMATS, KVLayout

SEED = int(os.environ.get("SEED", "1"))


def rand_qkv(fmt, rng, n, heads, kvh, hd, n_q):
    """Random q [n_q, heads, hd], K/V [n, kvh, hd] in ``fmt``; scores span several octaves."""
    q = fmt.round(rng.standard_normal((n_q, heads, hd)) * 2.0)
    k = fmt.round(rng.standard_normal((n, kvh, hd)) * 2.0)
    v = fmt.round(rng.standard_normal((n, kvh, hd)) * rng.choice([0.01, 1, 50], (n, kvh, 1)))
    return q, k, v


def assert_same(fmt, got, want, what):
    g, w = fmt.to_bits(got), fmt.to_bits(want)
    bad = np.argwhere(g != w)
    assert not len(bad), (f"{what} ({fmt.name}): {len(bad)} of {g.size} outputs differ; first "
                          f"at {tuple(bad[0])}: rtl {g[tuple(bad[0])]:#x} golden "
                          f"{w[tuple(bad[0])]:#x}")


@cocotb.test()
async def test_reader_engine(dut):
    pp = cocotb_params()
    p, fmt = pp["engine"], FORMATS[pp["fmt"]]
    W, D, lanes, hd, EB = p["beat"], p["depth"], p["lanes"], p["head_dim"], fmt.bits
    logging.getLogger("cocotb.kv_e2e.m_axi").setLevel(logging.WARNING)
    ram = AxiRamRead(AxiReadBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=1 << 20)
    await start_clock_and_reset(dut)
    prng = random.Random(SEED)
    ram.ar_channel.set_pause_generator(pause_generator(prng, 0.2))
    ram.r_channel.set_pause_generator(pause_generator(prng, 0.2))
    src = {s: StreamSource(dut, s, idle_prob=0.1, seed=SEED + i)
           for i, s in enumerate(("e_cmd", "q", "rd_cmd"))}
    sink = StreamSink(dut, "o", backpressure_prob=0.2, seed=SEED + 5)
    mons = [StreamMonitor(dut, s) for s in ("e_cmd", "q", "rd_cmd", "o")]
    ef = layout_fields(cmd_layout(lanes, p["ctx_bits"]))
    rf = layout_fields(read_command_layout(40, p["ctx_bits"]))
    rng = np.random.default_rng(SEED)
    c = hw.score_scale(hd)

    async def call(lay, layer, q_lanes, lim, kv):
        n, nq = max(lim) + 1, len(lim)
        start = len(sink.beats)
        qb = [int(x) for x in fmt.to_bits(q_lanes).reshape(-1)]
        src["q"].send([pack_array(qb[i:i + W], EB) for i in range(0, len(qb), W)])
        src["rd_cmd"].send([pack_struct(rf, **reader_command(lay, layer, kv, n, W))])
        src["e_cmd"].send([pack_struct(ef, n=n, nq=nq, c=c, int8=0, bpr=hd // W,
                                       lim=pack_array(list(lim) + [0] * (lanes - nq),
                                                      p["ctx_bits"]))])
        out = (await sink.wait_for(start + nq * hd, timeout_cycles=500_000))[start:]
        return fmt.from_bits(np.array(out, dtype=np.int64)).reshape(nq, hd)

    for heads, kvh, n_ctx in ((4, 1, 3 * D + 3), (4, 4, D + 1), (8, 2, 2 * D)):
        lay = KVLayout(num_layers=2, num_kv_heads=kvh, head_dim=hd, max_ctx=n_ctx,
                       base=0x1000 + int(rng.integers(0, 512)), fmt=fmt)
        q, k, v = rand_qkv(fmt, rng, n_ctx, heads, kvh, hd, n_q=n_ctx)
        layer = int(rng.integers(0, 2))
        for h in range(kvh):
            ram.write(lay.row_addr(layer, "K", h, 0), lay.encode_rows(fmt.to_bits(k[:, h])))
            ram.write(lay.row_addr(layer, "V", h, 0), lay.encode_rows(fmt.to_bits(v[:, h])))
        # decode of the last position
        pos = n_ctx - 1
        got = np.empty_like(q[0])
        for cl in decode_calls(pos, heads, kvh, lanes):
            got[list(cl.heads)] = await call(lay, layer, q[pos][list(cl.heads)], cl.lim, cl.kv)
        assert_same(fmt, got, hw.attention_decode(q[pos], k, v, fmt=fmt),
                    f"decode n={n_ctx} kvh={kvh}")
        # prefill of the whole context
        got = np.empty_like(q)
        for cl in prefill_calls(n_ctx, 0, heads, kvh, lanes):
            got[list(cl.rows), list(cl.heads)] = await call(
                lay, layer, q[list(cl.rows), list(cl.heads)], cl.lim, cl.kv)
        assert_same(fmt, got, hw.attention_prefill(q, k, v, 0, fmt=fmt),
                    f"prefill n={n_ctx} kvh={kvh}")
        dut._log.info("%s heads %d kv_heads %d n %d: decode and prefill exact", fmt.name,
                      heads, kvh, n_ctx)
    for mon in mons:
        mon.check()
