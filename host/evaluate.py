"""Perplexity of a model on a text, and top-1 agreement between the two numerics modes.

Windowing (stated in every report): the text's tokens are cut into consecutive,
non-overlapping windows of ``window`` tokens (default: the model context). Each window starts a
fresh sequence; position j of a window predicts token j+1 of the same window, so every token
except the first of each window is scored, with between 0 and window-1 tokens of context.
Perplexity = exp(mean negative log-likelihood over the scored tokens), the log-softmax taken in
float64 from the backend's float32 logits.

NumPy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .backends import create


@dataclass
class EvalResult:
    tokens: int                   # tokens of the text used
    scored: int                   # predictions scored
    window: int
    nll: dict[str, float]         # numerics -> mean NLL (nats/token)
    top1_agreement: float | None = None   # fraction of scored positions with equal argmax
    top1_accuracy: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    kv_int8_agreement: float | None = None  # int8-KV hw vs stream-format-KV hw top-1

    def ppl(self, numerics: str) -> float:
        return math.exp(self.nll[numerics])

    def lines(self) -> list[str]:
        out = [f"{self.tokens} tokens in {math.ceil(self.tokens / self.window)} non-overlapping "
               f"windows of <= {self.window}; {self.scored} next-token predictions scored"]
        for n in self.nll:
            out.append(f"{n:5s}: perplexity {self.ppl(n):.4f} (NLL {self.nll[n]:.5f} nats/token,"
                       f" top-1 accuracy {self.top1_accuracy[n]:.4f}, "
                       f"{self.seconds[n]:.1f} s)")
        if self.top1_agreement is not None:
            hw_mode = next((m for m in ("hw-pl", "hw") if m in self.nll), "hw")
            out.append(f"{hw_mode} vs float top-1 agreement: {self.top1_agreement:.4f} "
                       f"({round(self.top1_agreement * self.scored)}/{self.scored} positions)")
        if self.kv_int8_agreement is not None:
            a = self.kv_int8_agreement
            out.append(f"{KV_INT8} vs hw top-1 agreement: {a:.4f} "
                       f"({round(a * self.scored)}/{self.scored} positions)")
        return out


KV_INT8 = "hw, int8 KV"       # the mode label of hw numerics over an int8 KV cache


def score(backend, ids: np.ndarray, window: int):
    nll, correct, argmax = 0.0, 0, []
    for s in range(0, len(ids), window):
        w = ids[s:s + window]
        if len(w) < 2:
            continue
        logits = backend.logits(list(map(int, w[:-1]))).astype(np.float64)
        m = logits.max(axis=1, keepdims=True)
        lse = (m[:, 0] + np.log(np.exp(logits - m).sum(axis=1)))
        tgt = w[1:]
        nll += float((lse - logits[np.arange(len(tgt)), tgt]).sum())
        am = logits.argmax(axis=1)
        correct += int((am == tgt).sum())
        argmax.append(am)
    return nll, correct, np.concatenate(argmax)


def _int8_kv_backend(backend: str, model):
    """hw numerics reading an int8 KV cache (per token, per KV head, scale in the stream
    format: docs/hw/attention.md), modelled by the golden backend."""
    from tellme.sim.golden.attention_hw import use_int8_kv
    from tellme.sim.golden.model import GoldenModel

    be = create(backend, model, numerics="hw")
    if getattr(be, "gm", None) is None:
        raise ValueError(f"--kv int8 is modelled by the golden backend only, not {backend!r}")
    be.gm = GoldenModel(model, "hw", fmt=be.gm.fmt, attention="fp")   # §4 over int8 rows
    use_int8_kv(be.gm)
    return be


def evaluate(model, ids, numerics=("float",), backend: str = "golden",
             window: int | None = None, kv: str = "stream") -> EvalResult:
    """Score token ids ``ids`` under each numerics mode in ``numerics``; ``kv="int8"`` adds hw
    numerics over an int8 KV cache (mode :data:`KV_INT8`) and its agreement with hw."""
    import time

    ids = np.asarray(ids, dtype=np.int64)
    window = window or model.config.max_context
    if window < 2 or window > model.config.max_context:
        raise ValueError(f"window must be in [2, {model.config.max_context}], got {window}")
    if len(ids) < 2:
        raise ValueError("text is too short to evaluate (fewer than 2 tokens)")
    if kv not in ("stream", "int8"):
        raise ValueError(f"kv must be 'stream' or 'int8', got {kv!r}")
    res = EvalResult(tokens=len(ids), scored=0, window=window, nll={})
    argmaxes = {}
    modes = list(numerics)
    if kv == "int8":
        modes += [m for m in ("hw", KV_INT8) if m not in modes]
    for n in modes:
        be = _int8_kv_backend(backend, model) if n == KV_INT8 else create(backend, model,
                                                                           numerics=n)
        t0 = time.perf_counter()
        total, correct, am = score(be, ids, window)
        res.seconds[n] = time.perf_counter() - t0
        res.scored = len(am)
        res.nll[n] = total / len(am)
        res.top1_accuracy[n] = correct / len(am)
        argmaxes[n] = am
    hw_mode = next((m for m in ("hw-pl", "hw") if m in argmaxes), None)
    if "float" in argmaxes and hw_mode:
        res.top1_agreement = float((argmaxes["float"] == argmaxes[hw_mode]).mean())
    if KV_INT8 in argmaxes:
        res.kv_int8_agreement = float((argmaxes[KV_INT8] == argmaxes["hw"]).mean())
    return res
