"""Golden-model speed: prefill and decode tokens/s in both numerics.

    OPENBLAS_NUM_THREADS=1 tellme study golden-speed [--model PATH] [--numerics float hw]

Without --model it uses a random 3.8M-parameter model shaped like the demo model (d=256,
4 layers, 4 heads / 2 KV heads, ff 640, vocab 4096). Set the BLAS thread count in the
environment (it is fixed when NumPy loads); one thread is the "one core" figure.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tellme.sim.golden.model import GoldenModel


def demo_shaped_model():
    from tellme.quant.random_models import random_model, tiny_config

    c = tiny_config(vocab_size=4096, hidden_size=256, intermediate_size=640, num_layers=4,
                    num_heads=4, num_kv_heads=2, head_dim=64, max_context=256)
    return random_model(c, seed=0)


def bench(model, numerics: str, prompt: int = 64, decode: int = 64) -> tuple[float, float]:
    """(prefill tok/s, decode tok/s) for a ``prompt``-token prefill then ``decode`` steps."""
    gm = GoldenModel(model, numerics)
    gm.forward(np.arange(4) % model.config.vocab_size, gm.new_cache(4))    # warm caches
    cache = gm.new_cache(prompt + decode)
    t = time.perf_counter()
    gm.forward(np.arange(prompt) % model.config.vocab_size, cache)
    t_pre = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(decode):
        gm.forward(np.array([i % model.config.vocab_size]), cache)
    t_dec = time.perf_counter() - t
    return prompt / t_pre, decode / t_dec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tellme study golden-speed",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="checkpoint folder or weight file (default: random 3.8M)")
    ap.add_argument("--numerics", nargs="+", default=["float", "hw"], choices=["float", "hw"])
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--decode", type=int, default=64)
    args = ap.parse_args(argv)
    if args.model:
        from tellme.quant.loader import load_model

        model = load_model(args.model)
    else:
        model = demo_shaped_model()
    for num in args.numerics:
        pre, dec = bench(model, num, args.prompt, args.decode)
        print(f"{num:5s} prefill {pre:8.1f} tok/s   decode {dec:8.1f} tok/s")
    return 0

