"""Weight buffer: analytic sizing, and ping-pong behaviour in the Amaranth simulator."""

import pytest
from amaranth.sim import Simulator

from tellme.hw.presets import make_weight_buffer, preset
from tellme.hw.weight_buffer import fill_layout, size_weight_buffer
from tellme.sim.cycles import fill_cycles
from tellme.sim.payload import layout_fields, pack_array, pack_struct
from tellme.spec.models import layer_shapes


def test_kv260_sizing_bitnet_large():
    s = size_weight_buffer("kv260", layer_shapes("bitnet_b1_58-large"), uram_budget=56)
    # 140-bit vectors -> 2 URAM wide; 16 banks x 2 = 32 per 4096 deep; 64 would exceed 56
    assert (s.uram_width, s.uram_deep, s.urams, s.half_depth) == (2, 1, 32, 2048)
    plans = {p.name: p for p in s.plans}
    q = plans["q_proj"]                  # 1536x1536: KB = ceil(1536/84) = 19, NB = 96
    assert (q.kb, q.nb, q.tile_nb, q.tiles) == (19, 96, 96, 1)
    up = plans["up_proj"]                # 4096x1536: NB = 256, <= 2048 // 19 = 107 per tile
    assert (up.kb, up.nb, up.tile_nb, up.tiles) == (19, 256, 86, 3)      # 86+86+84
    down = plans["down_proj"]            # 1536x4096: KB = 49, <= 2048 // 49 = 41 per tile
    assert (down.kb, down.nb, down.tile_nb, down.tiles) == (49, 96, 32, 3)
    # TeLLMe-style whole-layer buffer for the largest linear: 256*19 words = 2 URAM deep
    assert s.whole_layer_urams == 64


def test_kv260_sizing_2b4t_and_preset_agree():
    s = size_weight_buffer("kv260", layer_shapes("bitnet-b1.58-2B-4T"), uram_budget=56)
    down = {p.name: p for p in s.plans}["down_proj"]     # 2560x6912: KB 83, NB 160
    assert (down.kb, down.nb, down.tile_nb, down.tiles) == (83, 160, 23, 7)  # <= 2048//83=24
    p = preset("kv260")
    assert p.half_depth == s.half_depth
    assert max(pl.kb for pl in s.plans) <= p.kb_max
    assert max(pl.tile_nb for pl in size_weight_buffer(
        "kv260", layer_shapes("bitnet_b1_58-large"), uram_budget=56).plans) <= p.nbt_max


def test_sizing_errors():
    with pytest.raises(ValueError, match="below one bank row"):
        size_weight_buffer("kv260", {"x": (16, 84)}, uram_budget=31)
    with pytest.raises(ValueError, match="one column block needs"):
        size_weight_buffer("sim", {"wide": (4, 12 * 5000)}, uram_budget=4)


def test_ping_pong_fill_and_read():
    """Fill two tiles, see ready drop, read both halves in order, free one, refill, overflow."""
    p = preset("sim")                   # T=4, Q=4, V=2, half_depth=64
    dut = make_weight_buffer(p)
    fields = layout_fields(fill_layout(p.t, p.v))
    words = 3                           # 3 words per bank per tile -> 12 vectors -> 6 beats
    tiles = [[(1000 * k + j) % (1 << 20) for j in range(words * p.q)] for k in range(3)]
    beats = fill_cycles(nbt=1, kb=words, q=p.q, v=p.v)
    assert beats == 6
    log = {}

    async def bench(ctx):
        async def fill(vecs):
            for i in range(0, len(vecs), p.v):
                ctx.set(dut.i.payload.as_value(), pack_struct(
                    fields, vectors=pack_array(vecs[i:i + p.v], 5 * p.t),
                    last=int(i + p.v >= len(vecs))))
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

        async def read_tile():
            out = []
            for a in range(words):
                ctx.set(dut.r.addr, a)
                ctx.set(dut.r.en, 1)
                await ctx.tick()
                out.extend(ctx.get(dut.r.data[b]) for b in range(p.q))
            ctx.set(dut.r.en, 0)
            return out

        assert not ctx.get(dut.r.tile_valid)
        await fill(tiles[0])
        assert ctx.get(dut.r.tile_valid)
        await fill(tiles[1])
        log["ready_when_full"] = ctx.get(dut.i.ready)
        log["t0"] = await read_tile()
        ctx.set(dut.r.tile_done, 1)
        await ctx.tick()
        ctx.set(dut.r.tile_done, 0)
        log["ready_after_done"] = ctx.get(dut.i.ready)
        await fill(tiles[2])            # goes to the half tile 0 left
        log["t1"] = await read_tile()
        ctx.set(dut.r.tile_done, 1)
        await ctx.tick()
        ctx.set(dut.r.tile_done, 0)
        log["t2"] = await read_tile()
        log["overflow_before"] = ctx.get(dut.overflow)
        ctx.set(dut.r.tile_done, 1)
        await ctx.tick()
        ctx.set(dut.r.tile_done, 0)
        await fill(list(range((p.half_depth + 1) * p.q)))   # one word too many
        log["overflow_after"] = ctx.get(dut.overflow)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert log["ready_when_full"] == 0 and log["ready_after_done"] == 1
    assert log["t0"] == tiles[0] and log["t1"] == tiles[1] and log["t2"] == tiles[2]
    assert log["overflow_before"] == 0 and log["overflow_after"] == 1
