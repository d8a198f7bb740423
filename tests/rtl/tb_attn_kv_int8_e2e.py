"""cocotb testbench: KVInt8Reader -> IntAttentionEngine (tests/rtl/test_attn_kv_dma.py,
``reader_int_engine``).

An int8 KV cache (golden ``kv_quant_int8`` of random stream-format rows, laid out by
tellme.spec.kv_layout with the engine's beat: K blocks with their scale headers, V blocks
channel-major) in cocotbext-axi's AxiRamRead (random AR/R pauses); per engine call the reader
fetches the KV head's K rows and V blocks in kv_schedule order straight into the engine's
``i_kv``; the outputs must equal tellme.sim.golden.attention_int.attention_decode /
attention_prefill bit for bit. Head_dims with padded K rows, contexts across blocks and
tiles, GQA and MHA, random idle and backpressure.
"""

from __future__ import annotations

import logging
import os
import random

import cocotb
import numpy as np
from cocotbext.axi import AxiRamRead, AxiReadBus

from tellme.hw.attention.int_engine import cmd_layout
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
from tellme.sim.golden import attention_int as ai
from tellme.sim.golden.attention_hw import kv_quant_int8
from tellme.sim.runner import cocotb_params
from tellme.spec.attention import decode_calls, prefill_calls, score_scale
from tellme.spec.kv_layout import FORMATS, KVLayout

SEED = int(os.environ.get("SEED", "1"))


@cocotb.test()
async def test_reader_int_engine(dut):
    pp = cocotb_params()
    p, fmt = pp["engine"], FORMATS[pp["fmt"]]
    W, D, lanes, EB = p["beat"], p["depth"], p["lanes"], fmt.bits
    QL = p["q_beat"]
    logging.getLogger("cocotb.kv_int8_e2e.m_axi").setLevel(logging.WARNING)
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
    rf = layout_fields(read_command_layout(40, p["ctx_bits"], int8=True))
    rng = np.random.default_rng(SEED)

    async def call(lay, layer, q_lanes, lim, kvh, c):
        hd = q_lanes.shape[1]
        n, nq = max(lim) + 1, len(lim)
        start = len(sink.beats)
        qb = [int(x) for x in fmt.to_bits(q_lanes).reshape(-1)]
        src["q"].send([pack_array(qb[i:i + QL], EB) for i in range(0, len(qb), QL)])
        src["rd_cmd"].send([pack_struct(rf, **reader_command(lay, layer, kvh, n, W))])
        src["e_cmd"].send([pack_struct(ef, n=n, nq=nq, c=c, hd=hd,
                                       lim=pack_array(list(lim) + [0] * (lanes - nq),
                                                      p["ctx_bits"]))])
        out = (await sink.wait_for(start + nq * hd, timeout_cycles=500_000))[start:]
        return fmt.from_bits(np.array(out, dtype=np.int64)).reshape(nq, hd)

    HD = p["head_dim"]
    for heads, kvh, n_ctx, hd in ((4, 1, 3 * D + 3, HD), (4, 4, D + 1, min(HD, W + QL)),
                                  (8, 2, 2 * D + W // 2, min(HD, 2 * W + QL))):
        lay = KVLayout(num_layers=2, num_kv_heads=kvh, head_dim=hd, max_ctx=n_ctx, fmt=fmt,
                       dtype="int8", beat=W, base=0x1000 + 64 * int(rng.integers(0, 64)))
        r = fmt.round
        q = r(rng.standard_normal((n_ctx, heads, hd)) * 2.0)
        k = r(rng.standard_normal((n_ctx, kvh, hd)) * 2.0)
        v = r(rng.standard_normal((n_ctx, kvh, hd)) * rng.choice([0.01, 1, 50], (n_ctx, kvh, 1)))
        (kq, ks), (vq, vs) = kv_quant_int8(k, fmt=fmt), kv_quant_int8(v, fmt=fmt)
        layer = int(rng.integers(0, 2))
        for h in range(kvh):
            ram.write(lay.region_addr(layer, "K", h),
                      lay.encode_k_region(kq[:, h], fmt.to_bits(ks[:, h]),
                                          fmt.to_bits(vs[:, h])))
            ram.write(lay.region_addr(layer, "V", h), lay.encode_v_region(vq[:, h]))
        c = score_scale(hd)
        pos = n_ctx - 1
        got = np.empty_like(q[0])
        for cl in decode_calls(pos, heads, kvh, lanes):
            got[list(cl.heads)] = await call(lay, layer, q[pos][list(cl.heads)], cl.lim, cl.kv,
                                             c)
        want = ai.attention_decode(q[pos], kq, ks, vq, vs, c, fmt=fmt)
        assert np.array_equal(fmt.to_bits(got), fmt.to_bits(want)), \
            f"decode n={n_ctx} kvh={kvh} hd={hd}"
        got = np.empty_like(q)
        for cl in prefill_calls(n_ctx, 0, heads, kvh, lanes):
            got[list(cl.rows), list(cl.heads)] = await call(
                lay, layer, q[list(cl.rows), list(cl.heads)], cl.lim, cl.kv, c)
        want = ai.attention_prefill(q, kq, ks, vq, vs, 0, c, fmt=fmt)
        assert np.array_equal(fmt.to_bits(got), fmt.to_bits(want)), \
            f"prefill n={n_ctx} kvh={kvh} hd={hd}"
        dut._log.info("%s int8 heads %d kv_heads %d hd %d n %d: decode and prefill exact",
                      fmt.name, heads, kvh, hd, n_ctx)
    for mon in mons:
        mon.check()
