#!/usr/bin/env python3
"""Build the HF-transformers parity fixtures under tests/fixtures/hf/.

Each fixture folder holds a tiny random BitNet b1.58 checkpoint exactly as users have one on disk
(config.json + safetensors), a token sequence (tokens.npy, int32 [T]), the logits HF transformers
computes for it (logits.npy, float32 [T, vocab], every position) and fixture.json saying how it
was made. The parity test (tests/test_hf_parity.py) needs only NumPy; this script needs torch and
transformers (requirements-oracle.txt, docs/oracle.md):

    python3 -m venv .venv-oracle && .venv-oracle/bin/pip install -r requirements-oracle.txt
    .venv-oracle/bin/python tests/oracle/make_fixtures.py --out tests/fixtures/hf

The logits come from the real HF load path: ``AutoModelForCausalLM.from_pretrained(folder,
dtype=torch.float32)`` on the folder as written (fp32 so the result is the integer-path semantics,
not bf16 rounding; reference/bitnet.md §1.5). The 1bitLLM layout has no class in transformers; its
logits come from BitNetForCausalLM (hidden_act silu, autobitlinear online) loaded from an
equivalent HF-named copy of the same fp16 tensors, which is the same computation (bitnet.md §1.3).

Before a fixture is written, an independent NumPy reference (own checkpoint reader, own unpacker,
int8 absmax activations, exact integer matmul) recomputes the logits from the fixture folder and
must agree with HF within the parity test's tolerance, with the same argmax everywhere. For packed
checkpoints the ternary matrices HF unpacked at load are also compared exactly with ours.
"""

from __future__ import annotations

import os

# Before torch/transformers are imported: no hub access, no torch.compile of the quant helpers.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import argparse
import json
import platform
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# Parity requirement shared with tests/test_hf_parity.py (docs/oracle.md explains the value).
REL_TOL = 1e-4
# A fixture is only kept if its argmax is robust: the top-2 logit gap at every position must
# exceed this multiple of the tolerance, so float-order noise cannot flip the argmax.
GAP_FACTOR = 10.0
# Online quantisation rounds W/mean|W|; refuse fixtures with a weight this close (relative) to a
# rounding boundary, where torch's and NumPy's summation order could round differently.
MIN_TERNARY_MARGIN = 1e-5
# Required distance (in int8 steps) of every activation x*s_x in the HF run from a rounding tie,
# and how many token sequences to try to find such a run (docs/oracle.md).
ACT_MARGIN = 1e-4
MAX_TOKEN_TRIES = 2000

LINEARS = (("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"),
           ("self_attn", "o_proj"), ("mlp", "gate_proj"), ("mlp", "up_proj"),
           ("mlp", "down_proj"))
QUANT_ONLINE = {"quant_method": "bitnet", "linear_class": "autobitlinear",
                "quantization_mode": "online"}
QUANT_OFFLINE = {"quant_method": "bitnet", "linear_class": "autobitlinear",
                 "quantization_mode": "offline"}


@dataclass(frozen=True)
class Style:
    name: str
    description: str
    seed: int
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    act: str                 # "relu2" | "silu"
    tied: bool
    storage: str             # dtype of float tensors on disk: "bfloat16" | "float16" | "float32"
    mode: str                # "offline" (uint8 packed + weight_scale) | "online" (master weights)
    spelling: str            # "v5" (rope_parameters, dtype) | "v4" (rope_theta, torch_dtype)
    rope_theta: float
    n_tokens: int
    family: str = "bitnet"   # "bitnet" (HF/Microsoft naming) | "1bitllm"
    scale_dtype: str = "bfloat16"   # dtype of weight_scale (offline only)
    shards: int = 1
    max_position_embeddings: int = 256


STYLES = {s.name: s for s in [
    Style("ms2b4t_packed",
          "microsoft/bitnet-b1.58-2B-4T layout: relu2, GQA 4:1, tied head, uint8 packed ternary "
          "weights in HF block-row order + bf16 weight_scale = mean|W|, bf16 norms/embeddings, "
          "quantization_mode offline, transformers-5 config spelling",
          seed=101, vocab=512, hidden=64, intermediate=160, layers=2, heads=4, kv_heads=1,
          act="relu2", tied=True, storage="bfloat16", mode="offline", spelling="v5",
          rope_theta=500000.0, n_tokens=24),
    Style("ms2b4t_bf16",
          "microsoft/bitnet-b1.58-2B-4T-bf16 layout: bf16 master weights, quantization_mode "
          "online, untied head, GQA 3:1 (head_dim 32), relu2, two safetensors shards + index, "
          "transformers-4 "
          "config spelling (rope_theta is not HF's default 500000, so a loader that ignores the "
          "top-level rope_theta fails)",
          seed=202, vocab=384, hidden=96, intermediate=240, layers=2, heads=3, kv_heads=1,
          act="relu2", tied=False, storage="bfloat16", mode="online", spelling="v4",
          rope_theta=50000.0, n_tokens=24, shards=2),
    Style("onebit_llama",
          "1bitLLM/bitnet_b1_58 layout: model_type llama, architectures BitnetForCausalLM, silu "
          "(SwiGLU), MHA, tied head, fp16 latent weights quantised at load, sub-norms named "
          "self_attn.inner_attn_ln / mlp.ffn_layernorm, weight_bits 1, input_bits 8, "
          "transformers-4 config spelling",
          seed=305, vocab=320, hidden=64, intermediate=160, layers=3, heads=4, kv_heads=4,
          act="silu", tied=True, storage="float16", mode="online", spelling="v4",
          rope_theta=10000.0, n_tokens=24, family="1bitllm", max_position_embeddings=2048),
    Style("bitnet_gqa_silu_f32_packed",
          "cross-product filler: model_type bitnet with silu, GQA 2:1, untied head, uint8 packed "
          "weights with float32 weight_scale, float32 norms/embeddings, offline, "
          "transformers-5 config spelling",
          seed=404, vocab=256, hidden=64, intermediate=176, layers=2, heads=4, kv_heads=2,
          act="silu", tied=False, storage="float32", mode="offline", spelling="v5",
          rope_theta=10000.0, n_tokens=24, scale_dtype="float32"),
]}


# ----------------------------------------------------------------------------------------------
# Random weights (NumPy, deterministic given the seed)

def random_weights(st: Style) -> dict[str, np.ndarray]:
    """float32 master tensors in HF BitNet naming.

    Well conditioned on purpose: linear std 0.3 (std 1 makes attention one-hot, so float noise
    flips results), RMSNorm weights U(0.5, 1.5), embeddings std 1.
    """
    rng = np.random.default_rng(st.seed)
    d, f, hd = st.hidden, st.intermediate, st.hidden // st.heads
    shapes = {"q_proj": (st.heads * hd, d), "k_proj": (st.kv_heads * hd, d),
              "v_proj": (st.kv_heads * hd, d), "o_proj": (d, st.heads * hd),
              "gate_proj": (f, d), "up_proj": (f, d), "down_proj": (d, f)}
    sd = {"model.embed_tokens.weight": rng.normal(0, 1.0, (st.vocab, d))}
    for i in range(st.layers):
        p = f"model.layers.{i}."
        for mod, lin in LINEARS:
            sd[f"{p}{mod}.{lin}.weight"] = rng.normal(0, 0.3, shapes[lin])
        sd[p + "input_layernorm.weight"] = rng.uniform(0.5, 1.5, d)
        sd[p + "self_attn.attn_sub_norm.weight"] = rng.uniform(0.5, 1.5, st.heads * hd)
        sd[p + "post_attention_layernorm.weight"] = rng.uniform(0.5, 1.5, d)
        sd[p + "mlp.ffn_sub_norm.weight"] = rng.uniform(0.5, 1.5, f)
    sd["model.norm.weight"] = rng.uniform(0.5, 1.5, d)
    if not st.tied:
        sd["lm_head.weight"] = rng.normal(0, 1.0, (st.vocab, d))
    return {k: v.astype(np.float32) for k, v in sd.items()}


def make_tokens(st: Style, bos: int, attempt: int = 0) -> np.ndarray:
    rng = np.random.default_rng([st.seed, attempt])
    toks = rng.integers(3, st.vocab, st.n_tokens)
    toks[0] = bos
    return toks.astype(np.int32)


# ----------------------------------------------------------------------------------------------
# Own ternary packing (reference/bitnet.md §1.1), independent of transformers' pack_weights

def ternarize(w: np.ndarray) -> tuple[np.ndarray, np.float32, float]:
    """HF WeightQuant: s = 1/max(mean|W|, 1e-5); Wq = clamp(round(W*s), -1, 1).

    Returns (Wq int8, mean|W| float32, margin) where margin is the smallest distance of |W*s|
    from the rounding boundary 0.5 (relative to it).
    """
    w = w.astype(np.float32)
    mean = np.float32(max(np.abs(w).mean(dtype=np.float32), np.float32(1e-5)))
    s = np.float32(1.0) / mean
    ws = w * s
    wq = np.clip(np.rint(ws), -1, 1).astype(np.int8)
    margin = float(np.min(np.abs(np.abs(ws) - 0.5)) / 0.5)
    return wq, mean, margin


def pack_rows(wq: np.ndarray) -> np.ndarray:
    """int8 {-1,0,1} [out, in] -> uint8 [out/4, in]; bits [2i+1:2i] of row r hold row i*R + r."""
    out = wq.shape[0]
    if out % 4:
        raise ValueError(f"out_features {out} is not a multiple of 4")
    r = out // 4
    c = (wq.astype(np.int16) + 1).astype(np.uint8)
    return c[:r] | (c[r:2 * r] << 2) | (c[2 * r:3 * r] << 4) | (c[3 * r:] << 6)


def unpack_rows(p: np.ndarray) -> np.ndarray:
    codes = np.concatenate([(p >> (2 * i)) & 3 for i in range(4)], axis=0)
    if np.any(codes == 3):
        raise ValueError("packed ternary weights hold the unused code 3")
    return codes.astype(np.int8) - 1


# ----------------------------------------------------------------------------------------------
# Writing checkpoints

def torch_dtype(name: str):
    import torch
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def to_storage(sd: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    """Round master tensors to the storage dtype and widen back: what a loader reads from disk."""
    import torch
    return {k: torch.from_numpy(v).to(torch_dtype(dtype)).float().numpy() for k, v in sd.items()}


def bitnet_config(st: Style):
    from transformers import BitNetConfig

    cfg = BitNetConfig(
        vocab_size=st.vocab, hidden_size=st.hidden, intermediate_size=st.intermediate,
        num_hidden_layers=st.layers, num_attention_heads=st.heads,
        num_key_value_heads=st.kv_heads, hidden_act=st.act, rms_norm_eps=1e-5,
        max_position_embeddings=st.max_position_embeddings, tie_word_embeddings=st.tied,
        bos_token_id=1, eos_token_id=2,
        rope_parameters={"rope_type": "default", "rope_theta": st.rope_theta})
    cfg.architectures = ["BitNetForCausalLM"]
    return cfg


def hf_config(st: Style) -> dict:
    """config.json content in transformers-5 spelling (as BitNetConfig.save_pretrained writes)."""
    d = json.loads(bitnet_config(st).to_json_string(use_diff=True))   # what save_pretrained writes
    d["dtype"] = st.storage
    d["quantization_config"] = dict(QUANT_OFFLINE if st.mode == "offline" else QUANT_ONLINE)
    return d


def to_v4_spelling(d: dict) -> dict:
    """transformers-4 spelling: top-level rope_theta and torch_dtype (the 4.x save format)."""
    d = dict(d)
    rp = d.pop("rope_parameters")
    if rp.get("rope_type", "default") != "default":
        raise ValueError("only default RoPE is written in v4 spelling")
    d["rope_theta"] = rp["rope_theta"]
    d["torch_dtype"] = d.pop("dtype")
    d.pop("transformers_version", None)
    return dict(sorted(d.items()))


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_safetensors(tensors: dict, path: Path) -> None:
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def write_packed(st: Style, master: dict[str, np.ndarray], folder: Path) -> dict:
    """Offline checkpoint: uint8 packed ternary + weight_scale [1]; other tensors in st.storage.

    Returns {linear name: (Wq, mean|W| as stored)} for the load check.
    """
    import torch
    tensors, ternary = {}, {}
    for name, w in master.items():
        if name.endswith("_proj.weight"):
            # w is already rounded to the storage dtype (what a converter from the master sees)
            wq, mean, _ = ternarize(w)
            scale = torch.tensor([mean], dtype=torch.float32).to(torch_dtype(st.scale_dtype))
            tensors[name] = torch.from_numpy(pack_rows(wq))
            tensors[name[:-len("weight")] + "weight_scale"] = scale
            ternary[name] = (wq, np.float32(scale.float().item()))
        else:
            tensors[name] = torch.from_numpy(w).to(torch_dtype(st.storage))
    save_safetensors(tensors, folder / "model.safetensors")
    cfg = hf_config(st)
    write_json(folder / "config.json", to_v4_spelling(cfg) if st.spelling == "v4" else cfg)
    return ternary


def write_master_hf(st: Style, master: dict[str, np.ndarray], folder: Path) -> None:
    """Online checkpoint in HF naming, written by save_pretrained (sharded when st.shards > 1)."""
    import torch
    from transformers import BitNetForCausalLM

    model = BitNetForCausalLM(bitnet_config(st))
    missing, unexpected = model.load_state_dict(
        {k: torch.from_numpy(v) for k, v in master.items()}, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    model = model.to(torch_dtype(st.storage))
    total = sum(v.size for v in master.values()) * torch_dtype(st.storage).itemsize
    # save_pretrained fills shards up to max_shard_size: a little over total/shards gives st.shards
    model.save_pretrained(folder, max_shard_size=int(total / st.shards * 1.1) + 1)
    files = sorted(p.name for p in folder.glob("*.safetensors"))
    if len(files) != st.shards:
        raise RuntimeError(f"{st.name}: expected {st.shards} shard(s), "
                           f"save_pretrained wrote {files}")
    cfg_written = json.loads((folder / "config.json").read_text())
    cfg_written["quantization_config"] = dict(QUANT_ONLINE)
    cfg_written["dtype"] = st.storage
    write_json(folder / "config.json",
               to_v4_spelling(cfg_written) if st.spelling == "v4" else cfg_written)


def write_1bitllm(st: Style, master: dict[str, np.ndarray], folder: Path) -> None:
    """1bitLLM layout: llama config + BitnetForCausalLM, fp16 latent weights, own sub-norm names."""
    import torch
    rename = {".self_attn.attn_sub_norm.": ".self_attn.inner_attn_ln.",
              ".mlp.ffn_sub_norm.": ".mlp.ffn_layernorm."}
    tensors = {}
    for name, w in master.items():
        for a, b in rename.items():
            name = name.replace(a, b)
        tensors[name] = torch.from_numpy(w).to(torch_dtype(st.storage))
    save_safetensors(tensors, folder / "model.safetensors")
    cfg = {
        "architectures": ["BitnetForCausalLM"], "model_type": "llama",
        "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": st.vocab - 2,
        "hidden_act": st.act, "hidden_size": st.hidden, "intermediate_size": st.intermediate,
        "initializer_range": 0.02, "max_position_embeddings": st.max_position_embeddings,
        "num_attention_heads": st.heads, "num_hidden_layers": st.layers,
        "num_key_value_heads": st.kv_heads, "pretraining_tp": 1, "rms_norm_eps": 1e-5,
        "rope_scaling": None, "rope_theta": st.rope_theta, "tie_word_embeddings": st.tied,
        "torch_dtype": st.storage, "use_cache": True, "vocab_size": st.vocab,
        "weight_bits": 1, "input_bits": 8,
    }
    write_json(folder / "config.json", cfg)


# ----------------------------------------------------------------------------------------------
# HF oracle

def hf_load(folder: Path):
    """The HF model as users get it: from_pretrained on the folder, fp32, eager attention."""
    import torch
    from transformers import AutoModelForCausalLM

    # Eager attention is the textbook softmax(QK^T/sqrt(d))V in fp32; SDPA's blocked CPU kernel is
    # equally valid HF but adds ~5x more float noise at the o_proj input.
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                 attn_implementation="eager")
    # transformers 5.24 leaves non-ternary tensors (embeddings, norms) of an offline (packed)
    # checkpoint in the file's dtype despite dtype=float32 (its BitNet deserialiser claims every
    # "weight"). Widening bf16/fp16 to fp32 is exact, so this gives the intended fp32 model
    # (model.float() itself is refused for quantised models).
    left = sorted({str(p.dtype) for p in model.parameters()} - {"torch.float32"})
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point() and t.dtype != torch.float32:
                t.data = t.data.float()
    model.eval()
    return model, left


def hf_run(model, tokens: np.ndarray) -> tuple[np.ndarray, float]:
    """HF logits [T, vocab] float32, and the activation tie margin of this run.

    The margin is the smallest distance, in int8 steps, of any x*s_x that an AutoBitLinear
    rounds from a rounding tie (k + 0.5). A float model whose x*s_x differs from HF's by less
    than the margin quantises every activation exactly as HF did.
    """
    import torch

    margin = [np.inf]

    def hook(mod, inp):
        x = inp[0].detach().float()
        v = x * (127 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5))
        dist = ((v - v.floor()) - 0.5).abs().min().item()
        margin[0] = min(margin[0], dist)

    hooks = [m.register_forward_pre_hook(hook) for m in model.modules()
             if type(m).__name__ == "AutoBitLinear"]
    try:
        with torch.no_grad():
            out = model(torch.from_numpy(tokens.astype(np.int64))[None]).logits[0]
    finally:
        for h in hooks:
            h.remove()
    return out.float().numpy().astype(np.float32), float(margin[0])


def check_hf_unpacked(model, ternary: dict) -> None:
    """The ternary matrices HF reconstructed from our packed bytes equal ours exactly."""
    mods = dict(model.named_modules())
    for name, (wq, scale) in ternary.items():
        mod = mods[name[:-len(".weight")]]
        got = mod.weight.detach().float().numpy()
        if got.shape != wq.shape or not np.array_equal(got, wq.astype(np.float32)):
            raise AssertionError(f"{name}: HF unpacked a different ternary matrix from our packing")
        got_s = np.float32(mod.weight_scale.detach().float().numpy().reshape(-1)[0])
        if got_s != scale:
            raise AssertionError(f"{name}: HF weight_scale {got_s} != written {scale}")


# ----------------------------------------------------------------------------------------------
# Independent NumPy reference (reads the fixture folder as written)

def read_folder(folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
    from safetensors.torch import load_file
    cfg = json.loads((folder / "config.json").read_text())
    index = folder / "model.safetensors.index.json"
    files = (sorted(set(json.loads(index.read_text())["weight_map"].values()))
             if index.exists() else ["model.safetensors"])
    tensors = {}
    for fn in files:
        for k, v in load_file(str(folder / fn)).items():
            tensors[k] = v.numpy() if v.dtype.is_floating_point is False else v.float().numpy()
    return cfg, tensors


def reference_logits(folder: Path, tokens: np.ndarray, capture: dict | None = None,
                     flip: str | None = None) -> np.ndarray:
    """Logits [T, vocab]; ``capture`` (optional) receives x*s_x of every BitLinear by name.

    ``flip`` names one BitLinear whose activation closest to a rounding tie is rounded the other
    way (what float noise does at a tie): used by --flip-sensitivity.
    """
    cfg, t = read_folder(folder)
    d, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    nkv, eps = cfg.get("num_key_value_heads") or nh, np.float32(cfg["rms_norm_eps"])
    hd = d // nh
    theta = cfg["rope_theta"] if "rope_theta" in cfg else cfg["rope_parameters"]["rope_theta"]
    qc = cfg.get("quantization_config") or {}
    offline = qc.get("quantization_mode") == "offline"
    onebit = cfg["model_type"] == "llama"
    sub_attn = "self_attn.inner_attn_ln" if onebit else "self_attn.attn_sub_norm"
    sub_ffn = "mlp.ffn_layernorm" if onebit else "mlp.ffn_sub_norm"

    def norm(x, w):
        var = np.mean(x * x, axis=-1, keepdims=True, dtype=np.float32)
        return w * (x / np.sqrt(var + eps))

    def linear(x, name):
        if offline:
            wq = unpack_rows(t[name + ".weight"])
            scale = np.float32(t[name + ".weight_scale"].reshape(-1)[0])
        else:
            wq, scale, _ = ternarize(t[name + ".weight"])
        s = np.float32(127) / np.maximum(np.abs(x).max(axis=-1, keepdims=True), np.float32(1e-5))
        if capture is not None:
            capture[name] = x * s
        xq = np.clip(np.rint(x * s), -128, 127).astype(np.int64)
        if name == flip:
            v = x * s
            i = np.unravel_index(np.argmin(np.abs(np.abs(v - np.floor(v)) - 0.5)), v.shape)
            xq[i] = np.floor(v[i]) if xq[i] > v[i] else np.floor(v[i]) + 1
        acc = xq @ wq.astype(np.int64).T                    # exact integer matmul
        return (acc.astype(np.float32) / s * scale).astype(np.float32)

    T = len(tokens)
    inv = (1.0 / (np.float32(theta) ** (np.arange(0, hd, 2, dtype=np.float32) / hd))
           ).astype(np.float32)
    ang = np.arange(T, dtype=np.float32)[:, None] * inv[None]
    emb = np.concatenate([ang, ang], axis=-1)
    cos, sin = np.cos(emb), np.sin(emb)

    def rope(x):                                            # x [heads, T, hd], rotate_half
        rot = np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], axis=-1)
        return x * cos + rot * sin

    mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
    x = t["model.embed_tokens.weight"][tokens]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = norm(x, t[p + "input_layernorm.weight"])
        q = rope(linear(h, p + "self_attn.q_proj").reshape(T, nh, hd).transpose(1, 0, 2))
        k = rope(linear(h, p + "self_attn.k_proj").reshape(T, nkv, hd).transpose(1, 0, 2))
        v = linear(h, p + "self_attn.v_proj").reshape(T, nkv, hd).transpose(1, 0, 2)
        k, v = np.repeat(k, nh // nkv, axis=0), np.repeat(v, nh // nkv, axis=0)
        sc = q @ k.transpose(0, 2, 1) * np.float32(hd ** -0.5) + mask
        sc = np.exp(sc - sc.max(axis=-1, keepdims=True))
        a = (sc / sc.sum(axis=-1, keepdims=True)) @ v
        a = norm(a.transpose(1, 0, 2).reshape(T, nh * hd), t[p + sub_attn + ".weight"])
        x = x + linear(a, p + "self_attn.o_proj")
        h = norm(x, t[p + "post_attention_layernorm.weight"])
        g, u = linear(h, p + "mlp.gate_proj"), linear(h, p + "mlp.up_proj")
        if cfg["hidden_act"] == "relu2":
            g = np.maximum(g, 0) ** 2
        elif cfg["hidden_act"] == "silu":
            g = g / (np.float32(1) + np.exp(-g))
        else:
            raise ValueError(f"hidden_act {cfg['hidden_act']!r}")
        f = norm(g * u, t[p + sub_ffn + ".weight"])
        x = x + linear(f, p + "mlp.down_proj")
    x = norm(x, t["model.norm.weight"])
    head = t["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else t["lm_head.weight"]
    return (x @ head.T).astype(np.float32)


# ----------------------------------------------------------------------------------------------

def build(st: Style, out: Path) -> dict:
    import torch
    import transformers

    master = to_storage(random_weights(st), st.storage)     # the values that go to disk
    margins = [ternarize(w)[2] for k, w in master.items() if k.endswith("_proj.weight")]
    if st.mode == "online" and min(margins) < MIN_TERNARY_MARGIN:
        raise AssertionError(f"{st.name}: a weight lies {min(margins):.2e} from a ternary "
                             "rounding boundary; change the seed")

    work = Path(tempfile.mkdtemp(prefix=f".{st.name}-", dir=out))
    try:
        ckpt = work / "fixture"
        ckpt.mkdir()
        ternary = None
        if st.family == "1bitllm":
            write_1bitllm(st, master, ckpt)
            # transformers has no 1bitLLM class: the oracle is BitNetForCausalLM over the same
            # fp16 tensors in HF naming (silu, autobitlinear online), bitnet.md §1.3.
            twin = work / "hf_twin"
            twin.mkdir()
            write_master_hf(st, master, twin)
            model, left = hf_load(twin)
        elif st.mode == "offline":
            ternary = write_packed(st, master, ckpt)
            model, left = hf_load(ckpt)
            check_hf_unpacked(model, ternary)
        else:
            write_master_hf(st, master, ckpt)
            model, left = hf_load(ckpt)
        n_autobit = sum(type(m).__name__ == "AutoBitLinear" for m in model.modules())
        if n_autobit != 7 * st.layers:
            raise AssertionError(f"{st.name}: HF built {n_autobit} AutoBitLinear modules, "
                                 f"expected {7 * st.layers} (quantization_config not applied?)")

        # Pick the first token sequence whose HF run is well conditioned: no activation within
        # ACT_MARGIN int8 steps of a rounding tie (one flipped int8 moves the logits by ~1e-2
        # relative, far beyond the tolerance) and a clear top-1 at every position.
        for attempt in range(MAX_TOKEN_TRIES):
            tokens = make_tokens(st, bos=1, attempt=attempt)
            logits, act_margin = hf_run(model, tokens)
            peak = float(np.abs(logits).max())
            top2 = np.sort(logits, axis=-1)[:, -2:]
            gap = float((top2[:, 1] - top2[:, 0]).min())
            if act_margin >= ACT_MARGIN and gap > GAP_FACTOR * REL_TOL * peak:
                break
        else:
            raise AssertionError(f"{st.name}: no well-conditioned token sequence in "
                                 f"{MAX_TOKEN_TRIES} tries; shrink the model or change the seed")
        del model
        if not np.isfinite(logits).all():
            raise AssertionError(f"{st.name}: HF logits not finite")

        ref = reference_logits(ckpt, tokens)
        err = float(np.abs(ref - logits).max())
        same_argmax = bool(np.array_equal(ref.argmax(-1), logits.argmax(-1)))
        print(f"{st.name}: token attempt {attempt}, activation tie margin {act_margin:.2e}, "
              f"max|logit| {peak:.3f}, min top-2 gap {gap:.3e}; reference vs HF max|diff| "
              f"{err:.3e} ({err / peak:.2e} relative), argmax equal {same_argmax}")
        if err > REL_TOL * peak or not same_argmax:
            raise AssertionError(f"{st.name}: independent reference disagrees with HF")

        np.save(ckpt / "tokens.npy", tokens)
        np.save(ckpt / "logits.npy", logits)
        info = {
            "style": st.name,
            "description": st.description,
            "made_by": "python tests/oracle/make_fixtures.py --out tests/fixtures/hf",
            "seed": st.seed,
            "spec": asdict(st),
            "oracle": ("AutoModelForCausalLM.from_pretrained(<an HF-named twin of this folder: "
                       "same fp16 tensors, BitNetConfig hidden_act silu, quantization_config "
                       "autobitlinear online>, dtype=float32, attn_implementation='eager'); "
                       "transformers has no class for "
                       "1bitLLM's remote code, whose forward pass is the same "
                       "(reference/bitnet.md §1.3)")
            if st.family == "1bitllm" else
            "AutoModelForCausalLM.from_pretrained(<this folder>, dtype=float32, "
            "attn_implementation='eager')",
            "versions": {"transformers": transformers.__version__,
                         "torch": torch.__version__, "numpy": np.__version__,
                         "python": platform.python_version()},
            "hf_cast": (f"from_pretrained left parameters in {left}; model.float() widened "
                        "them exactly before the forward pass") if left else None,
            "env": {"HF_HUB_OFFLINE": os.environ["HF_HUB_OFFLINE"],
                    "TORCHDYNAMO_DISABLE": os.environ["TORCHDYNAMO_DISABLE"]},
            "tokens": {"file": "tokens.npy", "dtype": "int32", "count": len(tokens)},
            "logits": {"file": "logits.npy", "dtype": "float32",
                       "shape": list(logits.shape), "max_abs": peak,
                       "min_top2_gap": gap},
            "reference_check": {
                "what": "independent NumPy model (own reader and unpacker, int8 absmax "
                        "activations, exact integer matmul) on this folder vs HF logits",
                "max_abs_diff": err, "relative_to_max_abs": err / peak,
                "argmax_equal_everywhere": same_argmax},
            "token_attempt": attempt,
            "activation_tie_margin": act_margin,
            "min_ternary_margin": min(margins) if st.mode == "online" else None,
            "hf_unpack_check": ("HF's unpacked weights and weight_scale equal the written "
                                "ternary matrices exactly") if ternary else None,
            "tolerance": {"max_abs_diff_over_max_abs_logit": REL_TOL, "argmax": "equal"},
            "conditioning": {"activation_tie_margin_min": ACT_MARGIN,
                             "top2_gap_min_over_max_abs": GAP_FACTOR * REL_TOL},
        }
        write_json(ckpt / "fixture.json", info)
        dest = out / st.name
        if dest.exists():
            shutil.rmtree(dest)
        ckpt.rename(dest)                       # whole folder appears at once
        size = sum(p.stat().st_size for p in dest.iterdir())
        print(f"  wrote {dest} ({size / 1024:.0f} KiB: "
              f"{', '.join(sorted(p.name for p in dest.iterdir()))})")
        return info
    finally:
        shutil.rmtree(work, ignore_errors=True)


def flip_sensitivity(root: Path, names: list[str]) -> None:
    """Print how far one int8 activation rounded the other way moves each fixture's logits."""
    for name in names:
        folder = root / name
        tokens = np.load(folder / "tokens.npy")
        base = reference_logits(folder, tokens)
        peak = float(np.abs(base).max())
        cfg = json.loads((folder / "config.json").read_text())
        rows = []
        for layer in (0, cfg["num_hidden_layers"] - 1):
            for mod, lin in LINEARS:
                lname = f"model.layers.{layer}.{mod}.{lin}"
                d = float(np.abs(reference_logits(folder, tokens, flip=lname) - base).max())
                rows.append(d / peak)
        print(f"{name}: one flipped activation in layers 0/{cfg['num_hidden_layers'] - 1} "
              f"moves the logits by {min(rows):.1e} .. {max(rows):.1e} of max|logit| "
              f"(median {float(np.median(rows)):.1e}, {len(rows)} sites)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "fixtures"
                    / "hf", help="fixture root (default: tests/fixtures/hf)")
    ap.add_argument("--styles", default=",".join(STYLES),
                    help=f"comma-separated subset of {', '.join(STYLES)}")
    ap.add_argument("--flip-sensitivity", action="store_true",
                    help="do not build: measure on the fixtures in --out how much one int8 "
                         "activation rounded the other way moves the logits")
    args = ap.parse_args(argv)
    names = [s for s in args.styles.split(",") if s]
    unknown = [s for s in names if s not in STYLES]
    if unknown:
        ap.error(f"unknown style(s) {unknown}; known: {list(STYLES)}")
    if args.flip_sensitivity:
        flip_sensitivity(args.out, names)
        return 0
    import torch
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        build(STYLES[name], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
