"""KVReader bursts and bytes per engine call (one KV head), from the reader's own plan
(hw/attention/kv_dma.py, ``call_traffic``): ``tellme study kv-bursts`` (docs/hw/attention.md).

    tellme study kv-bursts [--target kv260] [--fmt fp16|fp24] [--contexts 1,128,1024,1025,4096]
"""

from __future__ import annotations

import argparse

from tellme.spec.targets import TARGET_NAMES


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tellme study kv-bursts", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=TARGET_NAMES, default="kv260")
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--data-width", type=int, default=128)
    ap.add_argument("--max-burst", type=int, default=16)
    ap.add_argument("--contexts", default="1,128,1024,1025,4096")
    ap.add_argument("--fmt", choices=("fp16", "fp24"), default=None,
                    help="KV row format (default: the stream format)")
    a = ap.parse_args(argv)
    from tellme.hw.attention.kv_dma import call_traffic
    from tellme.hw.attention.presets import attention_params
    from tellme.spec.kv_layout import FORMATS
    from tellme.spec.numerics import stream_format

    fmt = FORMATS[a.fmt] if a.fmt else stream_format(None)
    ep = attention_params(a.target)
    print(f"{a.target}: {fmt.name.upper()} rows, beat {ep['beat']}, tile {ep['depth']}, "
          f"head_dim {a.head_dim}, "
          f"{a.data_width}-bit AXI, bursts <= {a.max_burst} beats; one call = one KV head")
    print(f"{'n':>6s} {'segments':>8s} {'bursts':>8s} {'bytes read':>12s} {'K/V bytes':>12s}")
    for n in (int(x) for x in a.contexts.split(",")):
        t = call_traffic(n, head_dim=a.head_dim, beat=ep["beat"], depth=ep["depth"],
                         data_width=a.data_width, max_burst=a.max_burst, fmt=fmt)
        print(f"{n:6d} {t['segments']:8d} {t['bursts']:8d} {t['bytes']:12,d} "
              f"{t['payload']:12,d}")
    return 0
