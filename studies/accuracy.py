"""Measure hw numerics against float numerics: top-1 agreement, perplexity, KL, FP16 range.

    tellme study accuracy --model PATH [--text FILE | --tokens FILE.npy]
    tellme study accuracy --random        # random fixture-like models
    tellme study accuracy --oracle DIR...  # HF fixture folders (logits.npy)
    tellme study accuracy --model PATH --text FILE --ablation
    tellme study accuracy --model PATH --text FILE --window 256 \
        --max-windows 999 --variants contract fp16 res32 'residual=fp32,norm=fp32' [--floor]

With a model and held-out text (tokenised with the model folder's tokenizer.json, or ids from
an .npy file) it scores the text in windows of ``--window`` tokens. Without text (random models)
it scores sequences sampled from the float model itself, so the perplexity is meaningful.
The "noise floor" row is float mode with only the embedding rounded to FP16: what one FP16
rounding does to the same model. Prints a table (docs/numerics.md quotes it).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from tellme.quant.model import TernaryModel
from tellme.sim.golden.model import GoldenModel, forward
from tellme.spec.attention_int import Q_BITS


def log_softmax(lg: np.ndarray) -> np.ndarray:
    lg = lg.astype(np.float64)
    lg = lg - lg.max(-1, keepdims=True)
    return lg - np.log(np.exp(lg).sum(-1, keepdims=True))


def sample_tokens(model: TernaryModel, n: int, seed: int) -> np.ndarray:
    """n tokens sampled (temperature 1) from the float model, starting from a random token."""
    rng = np.random.default_rng(seed)
    gm = GoldenModel(model, "float")
    cache = gm.new_cache(n)
    toks = [int(rng.integers(model.config.vocab_size))]
    lg = gm.forward(np.array(toks), cache)[-1]
    while len(toks) < n:
        p = np.exp(log_softmax(lg))
        toks.append(int(rng.choice(len(p), p=p / p.sum())))
        lg = gm.forward(np.array(toks[-1:]), cache)[-1]
    return np.array(toks, dtype=np.int64)


def compare(model: TernaryModel, windows: list[np.ndarray], other=None) -> dict:
    """Score each token window in float and hw numerics; aggregate metrics.

    ``other``: instead of hw numerics, compare with float numerics on this model."""
    agree = total = 0
    nll_f = nll_h = kl = 0.0
    n_pred = 0
    probe: dict[str, float] = {}
    for toks in windows:
        gf = GoldenModel(model, "float")
        gf.probe = probe
        lf = gf.forward(toks, gf.new_cache(len(toks)))
        lh = forward(model, toks, "hw") if other is None else forward(other, toks, "float")
        agree += int((lf.argmax(-1) == lh.argmax(-1)).sum())
        total += len(toks)
        pf, ph = log_softmax(lf), log_softmax(lh)
        idx = np.arange(len(toks) - 1)
        nll_f -= pf[idx, toks[1:]].sum()
        nll_h -= ph[idx, toks[1:]].sum()
        n_pred += len(toks) - 1
        kl += float((np.exp(pf) * (pf - ph)).sum())
    return {"positions": total, "top1": agree / total, "ppl_float": float(np.exp(nll_f / n_pred)),
            "ppl_hw": float(np.exp(nll_h / n_pred)), "kl": kl / total, "range": probe}


def noise_floor(model: TernaryModel, windows: list[np.ndarray]) -> dict:
    """float vs float with the embedding rounded to FP16: what one FP16 rounding does."""
    noisy = TernaryModel(model.config, model.embed.astype(np.float16).astype(np.float32),
                         model.layers, model.final_norm, model.lm_head, model.rope_pairing)
    r = compare(model, windows, other=noisy)
    return {"floor": r["top1"], "floor_dppl": r["ppl_hw"] / r["ppl_float"] - 1,
            "floor_kl": r["kl"]}


def random_suite(n_tokens: int = 64, seeds=(0, 1, 2)) -> list[tuple[str, dict]]:
    from tellme.quant.random_models import random_model, tiny_config

    cfgs = {
        "random d64 L2 relu2 GQA (fixture)": (tiny_config(max_context=512), {}),
        "random d64 L2 silu MHA (fixture)": (tiny_config(
            num_kv_heads=4, activation="silu", max_context=512), {}),
        "random d256 L4 relu2 GQA": (tiny_config(
            vocab_size=1024, hidden_size=256, intermediate_size=640, num_layers=4, num_heads=4,
            num_kv_heads=2, head_dim=64, activation="relu2", max_context=512), {}),
        "random d256 L4 silu MHA": (tiny_config(
            vocab_size=1024, hidden_size=256, intermediate_size=640, num_layers=4, num_heads=4,
            num_kv_heads=4, head_dim=64, activation="silu", max_context=512), {}),
        "random d256 L4 relu2, peaky head": (tiny_config(
            vocab_size=1024, hidden_size=256, intermediate_size=640, num_layers=4, num_heads=4,
            num_kv_heads=2, head_dim=64, activation="relu2", tie_word_embeddings=False,
            max_context=512), {"head_std": 4.0}),
    }
    out = []
    for name, (cfg, kw) in cfgs.items():
        agg = None
        windows_all = []
        for s in seeds:
            m = random_model(cfg, seed=s, std=0.3, **kw)
            windows = [sample_tokens(m, n_tokens, seed=100 + s)]
            r = compare(m, windows)
            r.update(noise_floor(m, windows))
            windows_all.append(r)
        agg = {k: float(np.mean([w[k] for w in windows_all])) for k in windows_all[0]
               if k != "range"}
        agg["ppl_hw"] = float(np.exp(np.mean([np.log(w["ppl_hw"]) for w in windows_all])))
        agg["ppl_float"] = float(np.exp(np.mean([np.log(w["ppl_float"]) for w in windows_all])))
        agg["range"] = {k: max(w["range"][k] for w in windows_all) for k in windows_all[0]["range"]}
        agg["positions"] = int(sum(w["positions"] for w in windows_all))
        out.append((name, agg))
    return out


def text_windows(model_path: str, args, vocab: int) -> list[np.ndarray]:
    if args.tokens:
        ids = np.load(args.tokens).astype(np.int64).reshape(-1)
    else:
        from pathlib import Path

        from tokenizers import Tokenizer

        tk = Path(args.tokenizer) if args.tokenizer else Path(model_path) / "tokenizer.json"
        if not tk.is_file():
            raise SystemExit(f"no tokenizer: {tk} (pass --tokenizer or --tokens)")
        ids = np.array(Tokenizer.from_file(str(tk)).encode(
            Path(args.text).read_text(encoding="utf-8")).ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab):
        raise SystemExit(f"token ids outside the vocab (0..{vocab - 1})")
    w = args.window
    n = min(len(ids) // w, args.max_windows)
    return [ids[i * w:(i + 1) * w] for i in range(n)]


def _whole(args):
    """args with one window holding the whole text (for re-windowing)."""
    import copy

    a = copy.copy(args)
    a.window, a.max_windows = 1, 10 ** 9
    return a


def fmt(name: str, r: dict) -> str:
    return (f"{name:36s} {r['positions']:5d} {r['top1'] * 100:7.2f} % {r['floor'] * 100:6.2f} % "
            f"{r['ppl_float']:9.3f} {(r['ppl_hw'] / r['ppl_float'] - 1) * 100:+8.3f} % "
            f"{r['floor_dppl'] * 100:+8.3f} % {r['kl']:8.2e} {r['floor_kl']:8.2e}")


HEADER = (f"{'model':36s} {'pos':>5s} {'top-1':>9s} {'floor':>8s} {'ppl flt':>9s} "
          f"{'dPPL hw':>10s} {'dPPL flr':>10s} {'KL hw':>8s} {'KL flr':>8s}")


def _float_variants() -> dict:
    """float numerics with one stream rounded to FP16 (one site at a time), and with tiny
    relative perturbations of the embedding: how sensitive the model's argmax is."""
    import types

    from tellme.sim.golden import hf

    def r16(a):
        return np.asarray(a, np.float32).astype(np.float16).astype(np.float32)

    def variant(**over):
        ns = types.SimpleNamespace(**{k: getattr(hf, k) for k in dir(hf) if not k.startswith("_")})
        for k, f in over.items():
            setattr(ns, k, f)
        return ns

    def norm16(x, g, e):
        h, _ = hf.rmsnorm_absmax(x, g, e)
        h = r16(h)
        return h, np.abs(h).max(-1)

    v = {
        "FP16 embedding only (= floor)": variant(embed=lambda t, i: r16(hf.embed(t, i))),
        "FP16 residual stream only": variant(
            embed=lambda t, i: r16(hf.embed(t, i)),
            residual_add=lambda x, y: r16(hf.residual_add(x, y))),
        "FP16 linear outputs only": variant(dequantize=lambda a, m, w: r16(hf.dequantize(a, m, w))),
        "FP16 norm outputs only": variant(rmsnorm_absmax=norm16),
        "FP16 q/k after RoPE only": variant(rope=lambda x, c, s, p: r16(hf.rope(x, c, s, p))),
        "FP16 FFN product only": variant(gated_act=lambda g, u, a: r16(hf.gated_act(g, u, a))),
        "FP16 KV cache only (q, k, v)": variant(
            rope=lambda x, c, s, p: r16(hf.rope(x, c, s, p)),
            attention_prefill=lambda q, k, v_, st, c=None: hf.attention_prefill(q, k, r16(v_),
                                                                                st, c),
            attention_decode=lambda q, k, v_, c=None: hf.attention_decode(q, k, r16(v_), c)),
        "FP16 attention output only": variant(
            attention_prefill=lambda *a, **k: r16(hf.attention_prefill(*a, **k))),
    }
    for e in (2.0 ** -20, 2.0 ** -16):
        v[f"embedding x (1 + 2^{int(np.log2(e))})"] = variant(
            embed=lambda t, i, e=e: hf.embed(t, i) * np.float32(1 + e))
    return v


def ablation(model: TernaryModel, windows: list[np.ndarray]) -> list[tuple[str, float, float]]:
    """(variant, top-1 agreement with float, mean KL) for each float variant."""
    base = [forward(model, w, "float") for w in windows]
    out = []
    for name, ops in _float_variants().items():
        agree = total = 0
        kl = 0.0
        for w, lf in zip(windows, base, strict=True):
            gm = GoldenModel(model, "float")
            gm.ops = ops
            lv = gm.forward(w, gm.new_cache(len(w)))
            agree += int((lv.argmax(-1) == lf.argmax(-1)).sum())
            total += len(w)
            pf, pv = log_softmax(lf), log_softmax(lv)
            kl += float((np.exp(pf) * (pf - pv)).sum())
        out.append((name, agree / total, kl / total))
    return out


def eval_windows(ids: np.ndarray, window: int) -> list[np.ndarray]:
    """``tellme eval`` windowing (host/evaluate.py): consecutive non-overlapping windows of
    ``window`` tokens, the last one shorter; a window of w tokens runs w-1 tokens and scores
    the w-1 next-token predictions."""
    return [ids[s:s + window] for s in range(0, len(ids), window) if len(ids[s:s + window]) >= 2]


def _score(logits_fn, windows) -> tuple[float, np.ndarray, list[np.ndarray]]:
    """(total NLL, argmax of every scored position, per-window log-probs) of a logits
    function over eval windows."""
    nll, am, lps = 0.0, [], []
    for w in windows:
        lp = log_softmax(logits_fn(w[:-1]))
        nll -= float(lp[np.arange(len(w) - 1), w[1:]].sum())
        am.append(lp.argmax(-1))
        lps.append(lp)
    return nll, np.concatenate(am), lps


def _float64_ops():
    """A private copy of the float-mode module computing in float64 (same code, F32 = f64)."""
    import importlib.util

    spec = importlib.util.find_spec("tellme.sim.golden.hf")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.F32 = np.float64
    return mod


def _float64_logits(model: TernaryModel, toks: np.ndarray) -> np.ndarray:
    gm = GoldenModel(model, "float")
    gm.ops = _float64_ops()
    cache = gm.new_cache(len(toks))
    cache.k = [np.zeros(a.shape, np.float64) for a in cache.k]
    cache.v = [np.zeros(a.shape, np.float64) for a in cache.v]
    return gm.forward(toks, cache)


def _float_decode_logits(model: TernaryModel, toks: np.ndarray) -> np.ndarray:
    gm = GoldenModel(model, "float")
    cache = gm.new_cache(len(toks))
    return np.concatenate([gm.forward(toks[i:i + 1], cache) for i in range(len(toks))])


def variant_rows(model: TernaryModel, windows: list[np.ndarray], specs, floor: bool = False,
                 log=None):
    """Top-1 agreement with float numerics (float32 prefill), dPPL and KL per variant.

    ``specs``: hw-numerics variants (:func:`tellme.studies.variants.parse_variant`).
    ``floor``: also the float model against benign perturbations of itself (float64
    arithmetic; token-by-token decode instead of one prefill): the metric's noise floor.
    Yields (name, top1, dppl, kl, seconds, gaps, ppl) rows; gaps: the float model's top-2 logit
    gap at each position where the variant's argmax differs; ppl: the variant's perplexity."""
    from .variants import parse_variant, variant_forward

    nll_f, am_f, lp_f = _score(lambda t: forward(model, t, "float"), windows)
    top2 = np.sort(np.concatenate(lp_f), axis=-1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]           # float top-2 logit gap per position
    def cand(spec):
        if spec == "contract":            # the hw contract itself (STREAM_FORMAT streams)
            return lambda t: forward(model, t, "hw")
        if spec == "pl-head":             # the contract with the PL LM head (int8 head)
            return lambda t: forward(model, t, "hw", head="pl")
        if spec == "fp-attn":             # the FP attention of numerics.md §4, FP24 KV
            return lambda t: forward(model, t, "hw", attention="fp")
        if spec in INT_ATTENTION:         # the integer attention contract (int8 KV), see below
            return lambda t: int_attention_forward(model, t, *INT_ATTENTION[spec])
        f = parse_variant(spec)
        return lambda t: variant_forward(model, t, f)

    cands = [(s, cand(s)) for s in specs]
    if floor:
        cands += [("float64 float model", lambda t: _float64_logits(model, t)),
                  ("float, decode token by token", lambda t: _float_decode_logits(model, t))]
    for name, fn in cands:
        t0 = time.time()
        nll, am, lp = _score(fn, windows)
        kl = sum(float((np.exp(a) * (a - b)).sum())
                 for a, b in zip(lp_f, lp, strict=True)) / len(am)
        row = (name, float((am == am_f).mean()), float(np.exp((nll - nll_f) / len(am)) - 1), kl,
               time.time() - t0, gap[am != am_f], float(np.exp(nll / len(am))))
        if log:
            log(row)
        yield row


# integer attention (sim/golden/attention_int.py) over an int8 KV cache: name -> (stream
# format, q bits). "attn-int" is the contract (FP24 streams, Q_BITS = 14-bit q).
INT_ATTENTION = {"attn-int": ("fp24", Q_BITS), "attn-int-q8": ("fp24", 8),
                 "attn-int-q12": ("fp24", 12), "attn-int-q16": ("fp24", 16),
                 "attn-int-fp16": ("fp16", Q_BITS)}


def int_attention_forward(model: TernaryModel, toks, stream: str, q_bits: int) -> np.ndarray:
    """Logits of the hw golden model with attention in the integer contract."""
    from tellme.sim.golden.attention_int import use_int_attention
    from tellme.spec.numerics import FP16, FP24

    gm = GoldenModel(model, "hw", fmt={"fp16": FP16, "fp24": FP24}[stream], attention="fp")
    use_int_attention(gm, q_bits)
    return gm.forward(toks, gm.new_cache(max(len(toks), 1)))


def oracle(dirs) -> int:
    """float and hw numerics vs HF transformers' logits stored in fixture folders."""
    from pathlib import Path

    from tellme.quant.loader import load_model

    print(f"{'fixture':32s} {'T':>3s} {'max|HF|':>8s} {'float max|d|':>13s} {'argmax':>7s} "
          f"{'hw max|d|':>10s} {'hw top-1':>9s}")
    for d in map(Path, dirs):
        m = load_model(d)
        toks = np.load(d / "tokens.npy").astype(np.int64)
        ref = np.load(d / "logits.npy")
        lf, lh = forward(m, toks, "float"), forward(m, toks, "hw")
        print(f"{d.name:32s} {len(toks):3d} {np.abs(ref).max():8.3g} "
              f"{np.abs(lf - ref).max():13.3g} {np.mean(lf.argmax(-1) == ref.argmax(-1)):7.3f} "
              f"{np.abs(lh - ref).max():10.3g} {np.mean(lh.argmax(-1) == ref.argmax(-1)):9.3f}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tellme study accuracy",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="checkpoint folder or weight file")
    ap.add_argument("--text", help="held-out text file (tokenised with --tokenizer)")
    ap.add_argument("--tokenizer", help="tokenizer.json (default: MODEL/tokenizer.json)")
    ap.add_argument("--tokens", help=".npy of held-out token ids instead of --text")
    ap.add_argument("--window", type=int, default=128, help="tokens per scored window")
    ap.add_argument("--max-windows", type=int, default=16)
    ap.add_argument("--random", action="store_true", help="run the random-model suite")
    ap.add_argument("--ablation", action="store_true",
                    help="with --model: float numerics with one stream at a time rounded to "
                         "FP16 (which rounding costs what)")
    ap.add_argument("--variants", nargs="+", metavar="SPEC",
                    help="with --model: hw numerics with streams widened to FP32, per SPEC a "
                         "preset (hw, kv32, res32, ..., fp32; see studies/variants.py), "
                         "contract (integer attention, int8 KV), pl-head (the contract with "
                         "the PL LM head's int8 numerics), fp-attn (the FP attention of "
                         "numerics.md §4, FP24 KV), an integer-attention variant (attn-int, "
                         "attn-int-q8, attn-int-q12, attn-int-q16, attn-int-fp16) or "
                         "site=fmt[,site=fmt] (sites: residual norm qkv attn o gate_up ffn "
                         "down normw rope); scored in tellme-eval windows of --window tokens")
    ap.add_argument("--floor", action="store_true",
                    help="with --variants: also float vs float64 and float decode vs prefill")
    ap.add_argument("--oracle", nargs="+", metavar="DIR",
                    help="HF parity fixture folders (checkpoint + tokens.npy + logits.npy): "
                         "compare float and hw numerics with HF transformers' logits")
    args = ap.parse_args(argv)
    t0 = time.time()
    if args.oracle:
        return oracle(args.oracle)
    if not (args.ablation or args.variants):
        print(HEADER)
    ranges = []
    if args.random or not args.model:
        for name, r in random_suite():
            print(fmt(name, r))
            ranges.append((name, r["range"]))
    if args.model:
        from tellme.quant.loader import load_model

        m = load_model(args.model)
        if args.variants:
            if not (args.text or args.tokens):
                raise SystemExit("--variants needs --text or --tokens")
            ids = np.concatenate(text_windows(args.model, _whole(args), m.config.vocab_size))
            windows = eval_windows(ids, args.window)[:args.max_windows]
            print(f"{sum(len(w) - 1 for w in windows)} positions in {len(windows)} windows of "
                  f"<= {args.window} tokens")
            print(f"{'variant':44s} {'top-1':>8s} {'dPPL':>9s} {'PPL':>9s} {'KL':>9s} {'s':>5s}  "
                  f"float top-2 gap at disagreements: median, max, share < 0.01")
            for row in variant_rows(m, windows, args.variants, args.floor):
                g = row[5] if row[5].size else np.zeros(1)
                print(f"{row[0]:44s} {row[1] * 100:7.2f} % {row[2] * 100:+8.3f} % "
                      f"{row[6]:9.5f} {row[3]:9.2e} {row[4]:5.0f}  "
                      f"{np.median(g):.4f} {g.max():.4f} "
                      f"{np.mean(g < 0.01) * 100:5.1f} %", flush=True)
            return 0
        if args.text or args.tokens:
            windows = text_windows(args.model, args, m.config.vocab_size)
        else:
            windows = [sample_tokens(m, args.window, seed=i) for i in range(4)]
        if args.ablation:
            print(f"{'float variant':36s} {'top-1':>8s} {'KL':>9s}")
            for name, top1, kl in ablation(m, windows):
                print(f"{name:36s} {top1 * 100:7.2f} % {kl:9.2e}")
            return 0
        r = compare(m, windows)
        r.update(noise_floor(m, windows))
        print(fmt(str(args.model)[-38:], r))
        ranges.append((str(args.model)[-38:], r["range"]))
    print("\nmax |value| per site in float mode (FP16 saturates at 65504):")
    for name, rg in ranges:
        print(f"{name:38s} " + "  ".join(f"{k} {v:.4g}" for k, v in rg.items()))
    print(f"({time.time() - t0:.0f} s; flr = floor: float vs float with an FP16-rounded "
          f"embedding)",
          file=sys.stderr)
    return 0

