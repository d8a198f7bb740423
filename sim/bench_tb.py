"""cocotb testbench behind ``tellme hw bench`` (sim/bench.py): one layer's linears through the
LinearUnit RTL, weights in the DDR timing model (sim/ddr_model.py).

Parameters come from the launcher: ``TELLME_PARAMS`` (the design) and ``BENCH_JOB`` (JSON:
shapes, token counts, DDR timing, output path). Every linear is queued back to back (the fill of
the next linear overlaps the compute of the current one), every output is checked exactly
against the golden model, and the cycle of each linear's last output is written to the
output JSON.
"""

from __future__ import annotations

import json
import logging
import os
import time

import cocotb
import numpy as np

from tellme.hw.linear import linear_cmd_layout
from tellme.hw.presets import preset
from tellme.hw.tlmm import out_layout
from tellme.sim.ddr_model import DdrReadModel, DdrTiming
from tellme.sim.drivers import (
    StreamSink,
    StreamSource,
    layout_fields,
    pack_array,
    pack_struct,
    start_clock_and_reset,
    unpack_array,
    unpack_struct,
)
from tellme.sim.golden.tlmm import ternary_matmul
from tellme.sim.runner import cocotb_params
from tellme.spec.codes import layout_codes, pack_codes
from tellme.spec.tlmm import acc_bits


def _tile_nbs(nb: int, tile_nb: int) -> list[int]:
    return [min(tile_nb, nb - nb0) for nb0 in range(0, nb, tile_nb)]


@cocotb.test()
async def bench_layer(dut):
    params = cocotb_params()
    job = json.loads(os.environ["BENCH_JOB"])
    p = preset(params["preset"])
    timing = DdrTiming(**job["timing"])
    logging.getLogger(f"cocotb.{dut._name}").setLevel(logging.WARNING)
    acc_w = acc_bits(p.kb_max * 3 * p.t)
    cmd_f = layout_fields(linear_cmd_layout(p, params["addr_width"]))
    out_f = layout_fields(out_layout(q=p.q, acc_width=acc_w))
    rng = np.random.default_rng(job.get("seed", 0))

    # Weights: one random ternary matrix per linear, packed one after another (4 KB aligned,
    # as a weight file would place tensors).
    lins = []
    addr = 0
    for name, n_out, k_in, tile_nb in job["linears"]:
        w = rng.integers(-1, 2, size=(n_out, k_in), dtype=np.int8)
        codes = layout_codes(w, p.t, p.q)
        nb, kb = codes.shape[:2]
        stream = pack_codes(codes)
        lins.append(dict(name=name, w=w, nb=nb, kb=kb, tile_nb=tile_nb, addr=addr,
                         stream=stream))
        addr = -(-(addr + stream.size) // 4096) * 4096
    mem = np.zeros(addr + 4096, np.uint8)
    for lin in lins:
        mem[lin["addr"]:lin["addr"] + lin["stream"].size] = lin["stream"]

    await start_clock_and_reset(dut)
    src_cmd = StreamSource(dut, "i_cmd")
    src_act = StreamSource(dut, "i_act")
    sink = StreamSink(dut, "o")
    results = []
    for m_tok in job["tokens"]:
        ddr = DdrReadModel(dut, mem, timing)
        wall = time.monotonic()
        x_all = []
        for lin in lins:
            kp = lin["kb"] * 3 * p.t
            x = rng.integers(-128, 128, size=(m_tok, lin["w"].shape[1]), dtype=np.int8)
            xp = np.zeros((m_tok, kp), np.int8)
            xp[:, :x.shape[1]] = x
            x_all.append(x)
            src_cmd.send([pack_struct(cmd_f, addr=lin["addr"], n_tokens=m_tok, kb=lin["kb"],
                                      nb=lin["nb"], tile_nb=lin["tile_nb"])])
            beats = [pack_array(xp[mi, k * 3 * p.t:(k + 1) * 3 * p.t], 8)
                     for mi in range(m_tok) for k in range(lin["kb"])]
            src_act.send(beats * len(_tile_nbs(lin["nb"], lin["tile_nb"])))
        start_cycle = ddr.cycle
        done_at = []
        base = len(sink.beats)
        for li, lin in enumerate(lins):
            tiles = _tile_nbs(lin["nb"], lin["tile_nb"])
            n_beats = m_tok * lin["nb"]
            got = await sink.wait_for(base + n_beats, timeout_cycles=50_000_000)
            done_at.append(ddr.cycle - start_cycle)
            raw = got[base:base + n_beats]
            base += n_beats
            y = np.zeros((m_tok, lin["nb"] * p.q), np.int64)
            pos, nb0 = 0, 0
            for nbt in tiles:
                for mi in range(m_tok):
                    for j in range(nbt):
                        f = unpack_struct(out_f, raw[pos])
                        y[mi, (nb0 + j) * p.q:(nb0 + j + 1) * p.q] = \
                            unpack_array(f["acc"], acc_w, p.q, signed=True)
                        pos += 1
                nb0 += nbt
            n_out = lin["w"].shape[0]
            want = ternary_matmul(x_all[li], lin["w"])
            assert np.array_equal(y[:, :n_out], want), f"{lin['name']} M={m_tok}: mismatch"
            assert not np.any(y[:, n_out:]), f"{lin['name']}: padded columns not zero"
        assert not int(dut.overflow.value) and not int(dut.error.value)
        ddr._task.cancel()
        results.append(dict(tokens=m_tok, done_at=done_at, beats=ddr.beats,
                            bursts=ddr.bursts, ddr_busy=ddr.busy_cycles,
                            wall_s=time.monotonic() - wall))
        dut._log.warning("bench M=%d: %d cycles (%d DDR beats, %.0f s wall)", m_tok,
                         done_at[-1], ddr.beats, time.monotonic() - wall)
    out = job["out"]
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f)
    os.replace(tmp, out)
