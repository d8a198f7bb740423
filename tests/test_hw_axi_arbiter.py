"""hw/axi_arbiter.py in the Amaranth simulator: three in-order read masters share one port
under random AR/R stalls; every client gets exactly its bursts' beats, in order, and every
burst is granted once."""

from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from tellme.hw.axi_arbiter import AxiReadArbiter


def _beat(addr: int, i: int) -> int:
    return (addr * 1009 + i * 7919) & ((1 << 128) - 1)


@pytest.mark.parametrize("seed,busy", [(1, False), (2, False), (3, True)])
def test_three_clients_random_stalls(seed, busy):
    """``busy``: every client always has its next AR ready and AR is never stalled, so the
    grants must rotate (no client twice in a row while another waits)."""
    rng = random.Random(seed)
    n = 3
    dut = AxiReadArbiter(clients=n, outstanding=4)
    # each client: bursts (addr, len+1 beats)
    plans = [[(0x1000 * (c + 1) + 0x40 * k, rng.randint(1, 5)) for k in range(6)]
             for c in range(n)]
    got = [[] for _ in range(n)]
    grants = []

    def port(c, s):
        return getattr(dut, f"s{c}_{s}")

    def client(c):
        async def proc(ctx):
            for addr, beats in plans[c]:
                for _ in range(0 if busy else rng.randint(0, 3)):
                    await ctx.tick()
                ctx.set(port(c, "araddr"), addr)
                ctx.set(port(c, "arlen"), beats - 1)
                ctx.set(port(c, "arvalid"), 1)
                await ctx.tick().until(port(c, "arready"))
                ctx.set(port(c, "arvalid"), 0)
        return proc

    def reader(c):
        async def proc(ctx):
            want = sum(b for _, b in plans[c])
            while len(got[c]) < want:              # the memory process records the beats
                ctx.set(port(c, "rready"), rng.random() < 0.7)
                await ctx.tick()
        return proc

    async def memory(ctx):
        pending = []
        total = sum(len(p) for p in plans)
        served = 0
        while served < total:
            ctx.set(dut.m_axi_arready, busy or rng.random() < 0.6)
            if pending and rng.random() < 0.7:
                addr, beats, i = pending[0]
                ctx.set(dut.m_axi_rvalid, 1)
                ctx.set(dut.m_axi_rdata, _beat(addr, i))
                ctx.set(dut.m_axi_rlast, i == beats - 1)
            else:
                ctx.set(dut.m_axi_rvalid, 0)
            await ctx.delay(1e-9)
            ar = ctx.get(dut.m_axi_arvalid) and ctx.get(dut.m_axi_arready)
            ar_req = (ctx.get(dut.m_axi_araddr), ctx.get(dut.m_axi_arlen) + 1)
            r = ctx.get(dut.m_axi_rvalid) and ctx.get(dut.m_axi_rready)
            owners = [c for c in range(n) if ctx.get(port(c, "rvalid"))]
            if r:
                assert len(owners) == 1
                c = owners[0]
                if ctx.get(port(c, "rready")):
                    got[c].append((pending[0][0], ctx.get(port(c, "rdata"))))
                addr, beats, i = pending[0]
                if i == beats - 1:
                    pending.pop(0)
                    served += 1
                else:
                    pending[0] = (addr, beats, i + 1)
            if ar:
                pending.append((*ar_req, 0))
                grants.append(ar_req[0] // 0x1000 - 1)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for c in range(n):
        sim.add_testbench(client(c), background=True)
        sim.add_testbench(reader(c), background=True)
    sim.add_testbench(memory)
    sim.run()
    for c in range(n):
        want = [(a, _beat(a, i)) for a, b in plans[c] for i in range(b)]
        assert got[c] == want, f"client {c}"
    assert sorted(grants) == sorted(c for c in range(n) for _ in plans[c])
    if busy:
        assert grants == [c for _ in plans[0] for c in range(n)], grants
