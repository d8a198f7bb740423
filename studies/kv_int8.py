"""Accuracy of the int8 KV cache: the hw golden model with stream-format KV vs int8 KV on a text.

int8 KV is modelled exactly as the hardware sees it: every K/V row the attention reads is
``kv_dequant_int8(kv_quant_int8(row))`` with the row scale in the stream format (per token, per
KV head; quantisation is a function of the row alone, so re-quantising on each read equals
storing int8 once).

    tellme study kv-int8 [--model host/models/demo/model.tlm] [--tokens 512] [--fmt fp16|fp24]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from tellme.sim.golden.attention_hw import use_int8_kv


def compare(model, ids, window: int, fmt=None) -> dict:
    """Scores with KV rows in the stream format ``fmt`` (result key "fp16"/"fp24") and with
    int8 KV (key "int8"); "agreement": top-1 agreement of the two."""
    from tellme.host.backends import create
    from tellme.host.evaluate import score
    from tellme.sim.golden.model import GoldenModel
    from tellme.spec.numerics import stream_format

    fmt = stream_format(fmt)
    out = {}
    for kind in (fmt.name, "int8"):
        be = create("golden", model, numerics="hw")
        be.gm = GoldenModel(model, numerics="hw", fmt=fmt, attention="fp")   # §4 attention
        if kind == "int8":
            use_int8_kv(be.gm)
        t0 = time.perf_counter()
        nll, correct, am = score(be, ids, window)
        out[kind] = {"ppl": math.exp(nll / len(am)), "top1": correct / len(am), "argmax": am,
                     "seconds": time.perf_counter() - t0}
    out["agreement"] = float((out[fmt.name]["argmax"] == out["int8"]["argmax"]).mean())
    out["scored"] = len(out["int8"]["argmax"])
    out["fmt"] = fmt.name
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tellme study kv-int8", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="weight file (default: the demo model)")
    ap.add_argument("--text", default=None, help="text file (default: the demo held-out text)")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--window", type=int, default=0, help="default: the model context")
    ap.add_argument("--fmt", choices=("fp16", "fp24"), default=None,
                    help="stream format (KV rows and int8 scales); default: the contract's")
    args = ap.parse_args(argv)
    from pathlib import Path

    from tellme.host.generate import DEFAULT_MODEL, load_model_and_tokenizer
    from tellme.spec.kv_layout import FORMATS

    mpath = Path(args.model) if args.model else DEFAULT_MODEL
    text = Path(args.text) if args.text else mpath.parent / "heldout.txt"
    model, tok = load_model_and_tokenizer(str(mpath))
    ids = np.asarray(tok.encode(text.read_text(encoding="utf-8"))[:args.tokens])
    window = args.window or model.config.max_context
    r = compare(model, ids, window, FORMATS[args.fmt] if args.fmt else None)
    f = r["fmt"]
    print(f"{mpath} on {text.name}: {len(ids)} tokens, windows of {window}, "
          f"{r['scored']} predictions, hw numerics ({f.upper()} streams)")
    for k in (f, "int8"):
        print(f"  {k} KV: perplexity {r[k]['ppl']:.4f}, top-1 accuracy {r[k]['top1']:.4f} "
              f"({r[k]['seconds']:.1f} s)")
    print(f"  int8 vs {f} KV top-1 agreement: {r['agreement']:.4f}")
    return 0

