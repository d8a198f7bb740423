"""cocotb testbench (slow tier): random models of both public families through the accelerator
top (the ``sim`` build) with the real host driver, every position's logits bit-exact against
``GoldenModel(numerics="hw")``. Launched by tests/rtl/test_top.py
(``test_top_random_families``).

* 2B4T-style: GQA (4 heads over 2 KV heads), ReLU², an untied LM head, bfloat16 floats, widths
  that are no multiple of the sim build's 3T = 12 (hidden 58, d_ffn 86);
* 1bitLLM-style: MHA (3 heads), SiLU, head_dim 12 (not a power of two), float16 floats,
  d_ffn 94 (the 8 K blocks of the sim buffer);

both converted for the accelerator (adjacent RoPE pairs: ``permute_qk_adjacent``; the golden
model runs the split-half original). A prefill in two chunks (the second at start > 0), then
decode steps, 20 % stalls on every channel of ``m_axi_kv``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import cocotb
import numpy as np

from tellme.host.driver import Driver
from tellme.quant.format import write_weight_file
from tellme.quant.random_models import permute_qk_adjacent, random_model, tiny_config
from tellme.sim.golden.model import GoldenModel
from tellme.sim.rtl_device import RtlDevice
from tellme.spec.tiling import TILINGS

FAMILIES = {
    "2b4t": (tiny_config(vocab_size=300, hidden_size=58, intermediate_size=86, num_heads=4,
                         num_kv_heads=2, head_dim=16, activation="relu2",
                         tie_word_embeddings=False, max_context=64), "bfloat16", 5),
    "1bitllm": (tiny_config(vocab_size=200, hidden_size=48, intermediate_size=94, num_heads=3,
                            num_kv_heads=3, head_dim=12, activation="silu", max_context=64),
                "float16", 6),
}


@cocotb.test()
async def test_random_families_whole_model(dut):

    dev = await RtlDevice.start(dut)
    dev.stall_kv(0.2, seed=17)                       # every channel of m_axi_kv
    tmp = tempfile.TemporaryDirectory(prefix="tellme-tb-families-")

    def body():
        rng = np.random.default_rng(3)
        for name, (cfg, dtype, seed) in FAMILIES.items():
            model = random_model(cfg, seed=seed, float_dtype=dtype,
                                 head_std=None if cfg.tie_word_embeddings else 3.0)
            path = Path(tmp.name) / f"{name}.tlm"
            write_weight_file(permute_qk_adjacent(model), path, TILINGS["sim"],
                              meta={"target": "sim"})
            drv = Driver(dev, path, max_context=32, max_tokens=5, output="hidden",
                         timeout_s=300)
            gm = GoldenModel(model, numerics="hw")
            cache = gm.new_cache(32)
            ids = [int(v) for v in rng.integers(0, cfg.vocab_size, 8)]
            c0 = dev.sim_cycles
            got = drv.prefill(ids)                            # chunks of 5 and 3
            want = gm.forward(ids, cache)[-1]
            assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), \
                f"{name}: prefill logits"
            dut._log.info("%s: prefill of %d tokens (chunks of 5) in %d cycles", name,
                          len(ids), dev.sim_cycles - c0)
            for tok in rng.integers(0, cfg.vocab_size, 3):
                got = drv.decode(int(tok))
                want = gm.forward([int(tok)], cache)[-1]
                assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), \
                    f"{name}: decode logits at {drv.length - 1}"
            dut._log.info("%s: 3 decode steps bit-exact", name)
            drv.close()

    await dev.run(body)
    tmp.cleanup()
