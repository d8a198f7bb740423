"""Text generation over a backend: prompt -> prefill -> decode loop -> streamed text + metrics.

NumPy only (runs on the board). The tokenizer is the ``tokenizer.json`` beside the weight file
(or inside the checkpoint folder).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backends import Backend
from .sampling import SamplingParams, sample
from .tokenizer import Tokenizer, TokenizerError

DEMO_DIR = Path(__file__).resolve().parent / "models" / "demo"
DEFAULT_MODEL = DEMO_DIR / "model.tlm"


class GenerateError(Exception):
    """Bad request: empty prompt, prompt longer than the context, bad model path."""


def tokenizer_path_for(model_path) -> Path:
    p = Path(model_path)
    return (p if p.is_dir() else p.parent) / "tokenizer.json"


def load_model_and_tokenizer(model_path=None, engine: str = "auto"):
    """(TernaryModel, Tokenizer) for a weight file or checkpoint folder (default: the bundled
    demo model). Raises GenerateError / TokenizerError naming the missing file."""
    from tellme.quant.loader import load_model

    path = Path(model_path) if model_path else DEFAULT_MODEL
    if not path.exists():
        hint = " (the bundled demo model is missing from this checkout)" \
            if model_path is None else ""
        raise GenerateError(f"model not found: {path}{hint}")
    tok_path = tokenizer_path_for(path)
    if not tok_path.is_file():
        raise TokenizerError(f"tokenizer not found: {tok_path} (put the model's tokenizer.json "
                             f"beside {path.name})")
    try:
        model = load_model(path)
    except (ValueError, OSError) as e:
        raise GenerateError(f"cannot load model {path}: {e}") from e
    tok = Tokenizer.load(tok_path, engine=engine)
    if tok.vocab_size > model.config.vocab_size:
        raise TokenizerError(f"{tok_path}: {tok.vocab_size} tokens but the model has only "
                             f"{model.config.vocab_size}")
    return model, tok


@dataclass
class Generation:
    prompt_tokens: int
    tokens: list[int]
    text: str
    ttft_s: float
    decode_s: float
    backend: str
    numerics: str
    stop_reason: str                      # max_tokens | eos | stop | context
    extra: dict = field(default_factory=dict)

    @property
    def decode_tok_s(self) -> float:
        """Decode rate after the first token: (new tokens - 1) / time since the first token."""
        n = len(self.tokens) - 1
        return n / self.decode_s if n > 0 and self.decode_s > 0 else float("nan")

    def metrics_line(self) -> str:
        rate = self.decode_tok_s
        rate_s = f"{rate:.1f} tok/s" if np.isfinite(rate) else "n/a"
        sim = ""
        if "sim_cycles" in self.extra:            # a simulated device: its clock, not the wall
            c, mhz = self.extra["sim_cycles"], self.extra["clock_mhz"]
            sim = (f" | simulated {c:,} cycles = {c / (mhz * 1e3):.2f} ms at {mhz:g} MHz "
                   f"(this simulation build)")
        return (f"[prompt {self.prompt_tokens} tokens | TTFT {self.ttft_s * 1e3:.1f} ms | "
                f"decode {len(self.tokens)} tokens, {rate_s} | backend {self.backend} "
                f"({self.numerics} numerics){sim} | stop: {self.stop_reason}]")


class _Streamer:
    """Turns the growing token list into text deltas: holds back incomplete UTF-8 and any tail
    that could still become a stop string, and cuts at the first stop string."""

    def __init__(self, tok: Tokenizer, stops: list[str], out):
        self.tok, self.stops, self.out = tok, [s for s in stops if s], out
        self.emitted = 0
        self.text = ""

    def feed(self, ids: list[int]) -> bool:
        """Update with all generated ids; return True when a stop string was reached."""
        text = self.tok.decode(ids)
        hit = min((text.find(s) for s in self.stops if s in text), default=-1)
        if hit >= 0:
            self.text = text[:hit]
            self._emit(self.text)
            return True
        self.text = text
        safe = len(text)
        if text.endswith("\ufffd"):
            safe = len(text.rstrip("\ufffd"))
        for s in self.stops:
            for k in range(min(len(s) - 1, safe), 0, -1):
                if text[:safe].endswith(s[:k]):
                    safe -= k
                    break
        self._emit(text[:safe])
        return False

    def finish(self) -> None:
        self._emit(self.text)

    def _emit(self, text: str) -> None:
        if self.out is not None and len(text) > self.emitted:
            self.out.write(text[self.emitted:])
            self.out.flush()
        self.emitted = max(self.emitted, len(text))


def generate(backend: Backend, tok: Tokenizer, prompt: str, max_new_tokens: int = 64,
             params: SamplingParams = SamplingParams(), seed: int | None = 0,
             stop: list[str] | None = None, stream=None, add_bos: bool = False,
             stop_at_eos: bool = True) -> Generation:
    """Generate a continuation of ``prompt``; write text to ``stream`` as it is produced."""
    if not prompt:
        raise GenerateError("empty prompt: give some text to continue")
    if max_new_tokens < 1:
        raise GenerateError(f"max-new-tokens must be >= 1, got {max_new_tokens}")
    cfg = backend.model.config
    ids = tok.encode(prompt)
    if add_bos and cfg.bos_token_id is not None:
        ids = [cfg.bos_token_id] + ids
    ctx = backend.max_context
    if len(ids) > ctx:
        raise GenerateError(f"prompt is {len(ids)} tokens, longer than the model context of "
                            f"{ctx} tokens")
    bad = [i for i in ids if not 0 <= i < cfg.vocab_size]
    if bad:
        raise GenerateError(f"prompt token ids {bad[:5]} outside the model vocabulary")
    # Room for the prompt plus every new token but the last (which is never fed back).
    budget = min(max_new_tokens, ctx - len(ids) + 1)
    backend.reset(min(ctx, len(ids) + budget - 1) if budget > 1 else len(ids))
    rng = np.random.default_rng(seed) if not params.greedy else None
    streamer = _Streamer(tok, stop or [], stream)
    eos = cfg.eos_token_id if stop_at_eos else None

    t0 = time.perf_counter()
    logits = backend.prefill(ids)
    out: list[int] = []
    reason = "max_tokens"
    t_first = None
    while True:
        nxt = sample(logits, params, rng)
        if t_first is None:
            t_first = time.perf_counter()
        if eos is not None and nxt == eos:
            reason = "eos"
            break
        out.append(nxt)
        if streamer.feed(out):
            reason = "stop"
            break
        if len(out) >= budget:
            reason = "max_tokens" if len(out) >= max_new_tokens else "context"
            break
        logits = backend.decode(nxt)
    t_end = time.perf_counter()
    streamer.finish()
    return Generation(prompt_tokens=len(ids), tokens=out, text=streamer.text,
                      ttft_s=t_first - t0, decode_s=t_end - t_first, backend=backend.name,
                      numerics=backend.numerics, stop_reason=reason)
