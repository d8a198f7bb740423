"""Hugging Face BitNet b1.58 checkpoint readers -> :class:`TernaryModel`. NumPy only (no torch);
safetensors files are parsed directly (quant/safetensors_raw.py), so BF16 needs no ml_dtypes.

Three styles (reference/bitnet.md §1.1-1.3), single ``model.safetensors`` or sharded with
``model.safetensors.index.json``:

``bitnet-packed``
    Microsoft 2B4T: ``model_type bitnet``, linear weights uint8 [out/4, in] in HF's block-row
    order (:func:`unpack_hf_ternary`) plus a per-tensor ``weight_scale``;
    ``quantization_config`` ``{"linear_class": "autobitlinear", "quantization_mode": "offline"}``
    (``weight_scale`` = mean|W|, multiplied) or ``linear_class "bitlinear"`` (``weight_scale`` =
    1/mean|W|, divided by; we store its float32 reciprocal, see :func:`_scale_from_checkpoint`).
``bitnet-master``
    2B4T-bf16: same names, float linear weights at [out, in], ``quantization_mode online``:
    quantised here with HF's ``WeightQuant`` rule (:func:`absmean_quantize`).
``1bitllm``
    ``model_type llama``, ``architectures ["BitnetForCausalLM"]``, fp16 latent weights, sub-norms
    ``self_attn.inner_attn_ln`` / ``mlp.ffn_layernorm``, SiLU, MHA; same absmean rule.

Norms, embedding and LM head are widened exactly to float32; the checkpoint's dtype is recorded
in ``model.meta["checkpoint_dtype"]`` so the weight file can keep them in 16 bits.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tellme.spec.codes import check_ternary
from tellme.spec.config import LINEAR_NAMES, NORM_NAMES, ModelConfig

from .format import unpack_bf16
from .model import Layer, TernaryLinear, TernaryModel
from .safetensors_raw import SafetensorsError, SafetensorsFile

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"

# HF module paths of the seven linears.
LINEAR_PATHS = {
    "q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
    "o_proj": "self_attn.o_proj", "gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
    "down_proj": "mlp.down_proj",
}
# Norm tensor names per family (ours -> HF).
NORM_PATHS = {
    "bitnet": {"input_norm": "input_layernorm", "attn_sub_norm": "self_attn.attn_sub_norm",
               "post_norm": "post_attention_layernorm", "ffn_sub_norm": "mlp.ffn_sub_norm"},
    "llama": {"input_norm": "input_layernorm", "attn_sub_norm": "self_attn.inner_attn_ln",
              "post_norm": "post_attention_layernorm", "ffn_sub_norm": "mlp.ffn_layernorm"},
}
# HF config-class defaults for fields a config.json may omit (BitNetConfig / LlamaConfig).
# HF writes config.json as a diff against these, so an omitted field means the class default.
DEFAULTS = {
    "bitnet": {"vocab_size": 128256, "hidden_size": 2560, "intermediate_size": 6912,
               "num_hidden_layers": 30, "num_attention_heads": 20, "num_key_value_heads": 5,
               "hidden_act": "relu2", "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
               "max_position_embeddings": 2048, "tie_word_embeddings": False,
               "bos_token_id": 128000, "eos_token_id": 128001},
    "llama": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
              "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": None,
              "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
              "max_position_embeddings": 2048, "tie_word_embeddings": False,
              "bos_token_id": 1, "eos_token_id": 2},
}
ACTIVATIONS = {"relu2": "relu2", "silu": "silu", "swish": "silu"}
FLOAT_ST = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
TORCH_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16",
                "fp16": "float16", "bf16": "bfloat16", "half": "float16", "float": "float32"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the file and tensor or field."""


# ---------------------------------------------------------------------------------------------
# HF packing and the absmean rule (NumPy versions of transformers/integrations/bitnet.py)

def pack_hf_ternary(w: np.ndarray) -> np.ndarray:
    """Ternary int8 [out, in] (out % 4 == 0) -> HF packed uint8 [out/4, in], block-row order:
    ``packed[r] = c[r] | c[R+r] << 2 | c[2R+r] << 4 | c[3R+r] << 6`` with ``c = w + 1``."""
    w = np.asarray(w)
    if w.ndim != 2 or w.shape[0] % 4:
        raise ValueError(f"expected [out, in] with out % 4 == 0, got shape {w.shape}")
    check_ternary(w)
    r = w.shape[0] // 4
    c = (w.astype(np.int16) + 1).astype(np.uint8)
    return (c[:r] | c[r:2 * r] << 2 | c[2 * r:3 * r] << 4 | c[3 * r:] << 6).astype(np.uint8)


def unpack_hf_ternary(packed: np.ndarray, what: str = "packed weights") -> np.ndarray:
    """Inverse of :func:`pack_hf_ternary`: uint8 [R, in] -> int8 [4R, in]. Code 3 is invalid."""
    p = np.asarray(packed, dtype=np.uint8)
    c = np.concatenate([(p >> (2 * i)) & 3 for i in range(4)], axis=0)
    if c.size and c.max() > 2:
        rows = np.unique(np.nonzero(c == 3)[0])
        raise ValueError(f"{what}: invalid 2-bit code 3 (rows {rows[:5].tolist()}...)")
    return (c.astype(np.int8) - 1)


def absmean_quantize(w: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """HF ``WeightQuant`` in fp32: ``s = 1/clamp(mean|W|, 1e-5)``,
    ``Wq = clamp(round_half_even(W*s), -1, 1)``; returns ``(Wq int8, scale)`` with
    ``scale = fl32(1/s)`` so that ``Wq * scale`` equals HF's dequantised ``Wq / s`` bit for bit.

    The mean is the float64 sum of |W| rounded once to float32 (the correctly rounded mean).
    torch's float32 cascade sum, whose order depends on the CPU's vector width, can land an
    ulp away; tests/test_readers.py measures how rarely that matters.
    """
    w32 = np.asarray(w, dtype=np.float32)
    mean = np.float32(np.abs(w32, dtype=np.float32).sum(dtype=np.float64) / w32.size)
    s = np.float32(1.0) / max(mean, np.float32(1e-5))
    wq = np.clip(np.rint(w32 * s), -1, 1).astype(np.int8)
    return wq, np.float32(np.float32(1.0) / s)


def quant_rel_l2(w: np.ndarray, wq: np.ndarray, scale) -> float:
    """Relative L2 error ``||Wq*scale - W|| / ||W||`` (float64)."""
    w64 = np.asarray(w, dtype=np.float64)
    num = np.linalg.norm((wq.astype(np.float64) * float(scale) - w64).ravel())
    den = np.linalg.norm(w64.ravel())
    return float(num / den) if den > 0 else float(num)


# ---------------------------------------------------------------------------------------------
# checkpoint folder

class Checkpoint:
    """A HF checkpoint folder: ``config.json`` plus one or more safetensors files."""

    def __init__(self, folder):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise CheckpointError(f"{self.folder}: not a checkpoint folder (no such directory)")
        cfg_path = self.folder / "config.json"
        if not cfg_path.is_file():
            raise CheckpointError(f"{cfg_path}: missing config.json in the checkpoint folder")
        try:
            self.config = json.loads(cfg_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{cfg_path}: cannot parse: {e}") from None
        if not isinstance(self.config, dict):
            raise CheckpointError(f"{cfg_path}: not a JSON object")
        self.config_path = cfg_path
        self._files: dict[str, SafetensorsFile] = {}
        self._where: dict[str, str] = {}
        index = self.folder / INDEX_NAME
        single = self.folder / WEIGHTS_NAME
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
                assert isinstance(weight_map, dict)
            except (OSError, KeyError, AssertionError, json.JSONDecodeError) as e:
                raise CheckpointError(f"{index}: malformed shard index ({e!r})") from None
            for shard in sorted(set(weight_map.values())):
                if not (self.folder / shard).is_file():
                    who = next(t for t, s in weight_map.items() if s == shard)
                    raise CheckpointError(f"{index}: shard {shard!r} (holding {who!r} and "
                                          f"others) is missing from {self.folder}")
                self._open(shard)
            for name, shard in weight_map.items():
                if name not in self._files[shard]:
                    raise CheckpointError(f"{self.folder / shard}: tensor {name!r} listed in "
                                          f"{INDEX_NAME} is not in the shard")
                self._where[name] = shard
            self.sources = [str(self.folder / s) for s in sorted(self._files)]
        elif single.is_file():
            f = self._open(WEIGHTS_NAME)
            self._where = dict.fromkeys(f.names(), WEIGHTS_NAME)
            self.sources = [str(single)]
        else:
            raise CheckpointError(f"{self.folder}: no {WEIGHTS_NAME} or {INDEX_NAME}")

    def _open(self, rel: str) -> SafetensorsFile:
        try:
            f = SafetensorsFile(self.folder / rel)
        except SafetensorsError as e:
            raise CheckpointError(str(e)) from None
        self._files[rel] = f
        return f

    def __contains__(self, name) -> bool:
        return name in self._where

    def file_of(self, name: str) -> Path:
        return self.folder / self._where[name]

    def _get(self, name: str) -> tuple[SafetensorsFile, str]:
        if name not in self._where:
            where = ", ".join(sorted(self._files))
            raise CheckpointError(f"{self.folder}: tensor {name!r} is missing (looked in "
                                  f"{where})")
        f = self._files[self._where[name]]
        return f, f.dtype(name)

    def dtype(self, name: str) -> str:
        return self._get(name)[1]

    def raw(self, name: str, shape=None, dtypes=None) -> np.ndarray:
        """The stored tensor (memory-mapped), after checking ``shape`` and ``dtypes``."""
        f, dt = self._get(name)
        if dtypes is not None and dt not in dtypes:
            raise CheckpointError(f"{f.path}: tensor {name!r} has dtype {dt}, expected "
                                  f"{' or '.join(dtypes)}")
        if shape is not None and tuple(f.shape(name)) != tuple(shape):
            raise CheckpointError(f"{f.path}: tensor {name!r} has shape {list(f.shape(name))}, "
                                  f"expected {list(shape)}")
        return f.array(name)

    def float32(self, name: str, shape=None) -> np.ndarray:
        """A float tensor widened exactly to float32 (a new array)."""
        a = self.raw(name, shape, FLOAT_ST)
        dt = self.dtype(name)
        if dt == "BF16":
            return unpack_bf16(a)
        return np.array(a, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# config

def _first_id(v):
    if isinstance(v, list):
        return int(v[0]) if v else None
    return None if v is None else int(v)


def parse_config(cfg: dict, path="config.json") -> tuple[str, ModelConfig, dict]:
    """HF config dict -> (family "bitnet" | "llama", ModelConfig, notes for meta)."""
    mt = cfg.get("model_type")
    archs = cfg.get("architectures") or []
    if isinstance(archs, str):
        archs = [archs]
    if mt == "bitnet":
        family = "bitnet"
        if archs and not any(a.lower() == "bitnetforcausallm" for a in archs):
            raise CheckpointError(f"{path}: architectures {archs} is not a BitNet causal LM")
    elif mt == "llama":
        if not any(a.lower() == "bitnetforcausallm" for a in archs):
            raise CheckpointError(
                f"{path}: model_type 'llama' with architectures {archs}: not a BitNet b1.58 "
                f"checkpoint (1bitLLM checkpoints declare architectures ['BitnetForCausalLM'])")
        family = "llama"
    else:
        raise CheckpointError(f"{path}: unsupported model_type {mt!r} (architectures {archs}); "
                              f"supported: 'bitnet' (Microsoft 2B4T) and 'llama' with "
                              f"BitnetForCausalLM (1bitLLM)")
    notes = {"defaults_used": []}

    def field(name):
        if name in cfg:
            return cfg[name]
        notes["defaults_used"].append(name)
        return DEFAULTS[family][name]

    def intf(name):
        v = field(name)
        if not isinstance(v, int) or isinstance(v, bool):
            raise CheckpointError(f"{path}: field {name!r} must be an integer, got {v!r}")
        return v

    def floatf(name, v=None):
        v = field(name) if v is None else v
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise CheckpointError(f"{path}: field {name!r} must be a number, got {v!r}")
        return float(v)

    hidden, heads = intf("hidden_size"), intf("num_attention_heads")
    kv = field("num_key_value_heads")
    kv = heads if kv is None else kv        # HF: None means MHA
    head_dim = cfg.get("head_dim")
    if head_dim is None:
        if hidden % heads:
            raise CheckpointError(f"{path}: hidden_size {hidden} is not a multiple of "
                                  f"num_attention_heads {heads} and head_dim is not given")
        head_dim = hidden // heads
    act = field("hidden_act")
    if not isinstance(act, str) or act not in ACTIVATIONS:
        raise CheckpointError(f"{path}: hidden_act {act!r} is not supported (relu2 or silu)")

    # v4: top-level rope_theta (+ rope_scaling); v5: rope_parameters {rope_theta, rope_type}.
    rp = cfg.get("rope_parameters")
    if isinstance(rp, dict) and "rope_theta" not in rp and rp and all(
            isinstance(v, dict) for v in rp.values()):
        rp = next(iter(rp.values()))            # per-layer-type form; all layers are full
    if isinstance(rp, dict):
        if rp.get("rope_type", "default") != "default":
            raise CheckpointError(f"{path}: rope_parameters.rope_type {rp.get('rope_type')!r} is "
                                  f"not supported (only 'default')")
        theta = rp.get("rope_theta", cfg.get("rope_theta"))
    else:
        theta = cfg.get("rope_theta")
    rs = cfg.get("rope_scaling")
    if rs and (not isinstance(rs, dict)
               or (rs.get("rope_type") or rs.get("type")) not in (None, "default")):
        raise CheckpointError(f"{path}: rope_scaling {rs} is not supported")
    if theta is None:
        notes["defaults_used"].append("rope_theta")
        theta = DEFAULTS[family]["rope_theta"]

    try:
        mc = ModelConfig(
            vocab_size=intf("vocab_size"), hidden_size=hidden,
            intermediate_size=intf("intermediate_size"), num_layers=intf("num_hidden_layers"),
            num_heads=heads, num_kv_heads=int(kv), head_dim=int(head_dim),
            activation=ACTIVATIONS[act], rms_norm_eps=floatf("rms_norm_eps"),
            rope_theta=floatf("rope_theta", theta),
            tie_word_embeddings=bool(field("tie_word_embeddings")),
            max_context=intf("max_position_embeddings"),
            bos_token_id=_first_id(field("bos_token_id")),
            eos_token_id=_first_id(field("eos_token_id")))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from None
    dt = cfg.get("dtype", cfg.get("torch_dtype"))
    notes["checkpoint_dtype"] = TORCH_DTYPES.get(str(dt).replace("torch.", ""))
    return family, mc, notes


# ---------------------------------------------------------------------------------------------
# reader

def _scale_from_checkpoint(ck: Checkpoint, name: str, linear_class: str) -> np.float32:
    """``weight_scale`` -> our multiplicative float32 scale (mean|W|).

    autobitlinear stores mean|W| and multiplies: widened exactly. bitlinear stores 1/mean|W| and
    divides (``y / (s_x * weight_scale)``): we store fl32(1/weight_scale), the correctly
    rounded reciprocal (within half an ulp of HF's effective multiplier).
    """
    a = ck.float32(name)
    if a.size != 1:
        raise CheckpointError(f"{ck.file_of(name)}: tensor {name!r} has shape {list(a.shape)}, "
                              f"expected one per-tensor scale ([1] or [])")
    v = np.float32(a.reshape(()))
    if not np.isfinite(v) or v <= 0:
        raise CheckpointError(f"{ck.file_of(name)}: tensor {name!r} = {v} is not a positive "
                              f"finite scale")
    if linear_class == "bitlinear":
        return np.float32(1.0 / np.float64(v))
    return v


def read_checkpoint(folder, progress=None) -> TernaryModel:
    """Read a HF BitNet b1.58 checkpoint folder into a :class:`TernaryModel`.

    ``progress(done, total, note)`` is called once per layer and tensor group. Raises
    :class:`CheckpointError` naming the file and tensor/field on bad input. ``model.meta`` holds
    the provenance: ``source``, ``style``, ``linear_class``, ``quantization_mode``,
    ``checkpoint_dtype`` and, for master-weight inputs, ``weight_quant_rel_l2`` per linear.
    """
    ck = Checkpoint(folder)
    family, mc, notes = parse_config(ck.config, ck.config_path)
    qc = ck.config.get("quantization_config")
    first = f"model.layers.0.{LINEAR_PATHS['q_proj']}.weight"
    if family == "llama":
        linear_class, mode = "1bitllm-bitlinear", "online"
        if qc:
            raise CheckpointError(f"{ck.config_path}: quantization_config {qc} is not expected "
                                  f"for a 1bitLLM (model_type llama) checkpoint")
    else:
        if qc is not None:
            if not isinstance(qc, dict) or qc.get("quant_method") != "bitnet":
                raise CheckpointError(f"{ck.config_path}: quantization_config.quant_method "
                                      f"{(qc or {}).get('quant_method')!r} is not 'bitnet'")
            linear_class = qc.get("linear_class", "bitlinear")
            mode = qc.get("quantization_mode", "offline")
            if linear_class not in ("autobitlinear", "bitlinear"):
                raise CheckpointError(f"{ck.config_path}: quantization_config.linear_class "
                                      f"{linear_class!r} is not supported")
            if mode not in ("offline", "online"):
                raise CheckpointError(f"{ck.config_path}: quantization_config.quantization_mode "
                                      f"{mode!r} is not supported")
            if linear_class == "bitlinear" and mode != "offline":
                raise CheckpointError(f"{ck.config_path}: linear_class bitlinear requires "
                                      f"quantization_mode offline")
        else:
            # No quantization_config: infer packed vs master weights from the stored dtype.
            linear_class = "autobitlinear"
            mode = "offline" if ck.dtype(first) == "U8" else "online"
            notes["quantization_config"] = f"absent; assumed autobitlinear {mode}"
    packed = mode == "offline"
    style = "1bitllm" if family == "llama" else ("bitnet-packed" if packed else "bitnet-master")
    norm_paths = NORM_PATHS[family]
    d = mc.hidden_size
    norm_width = {"input_norm": d, "attn_sub_norm": mc.q_size, "post_norm": d,
                  "ffn_sub_norm": mc.intermediate_size}
    shapes = mc.linear_shapes()
    total = mc.num_layers + 2
    errors: dict[str, float] = {}

    embed = ck.float32("model.embed_tokens.weight", (mc.vocab_size, d))
    if progress:
        progress(1, total, "embed")
    layers = []
    for i in range(mc.num_layers):
        pre = f"model.layers.{i}"
        linears = {}
        for n in LINEAR_NAMES:
            out, k = shapes[n]
            wname = f"{pre}.{LINEAR_PATHS[n]}.weight"
            if packed:
                if out % 4:
                    raise CheckpointError(f"{ck.config_path}: {n} has {out} output rows, not a "
                                          f"multiple of 4 as HF's 2-bit packing requires")
                p = ck.raw(wname, (out // 4, k), ("U8",))
                try:
                    w = unpack_hf_ternary(p, f"{ck.file_of(wname)}: tensor {wname!r}")
                except ValueError as e:
                    raise CheckpointError(str(e)) from None
                scale = _scale_from_checkpoint(ck, f"{pre}.{LINEAR_PATHS[n]}.weight_scale",
                                               linear_class)
            else:
                master = ck.float32(wname, (out, k))
                if not np.all(np.isfinite(master)):
                    raise CheckpointError(f"{ck.file_of(wname)}: tensor {wname!r} has "
                                          f"non-finite values")
                w, scale = absmean_quantize(master)
                errors[f"layers.{i}.{n}"] = quant_rel_l2(master, w, scale)
                del master
            linears[n] = TernaryLinear(w, scale)
        norms = {n: ck.float32(f"{pre}.{norm_paths[n]}.weight", (norm_width[n],))
                 for n in NORM_NAMES}
        layers.append(Layer(linears=linears, norms=norms))
        if progress:
            progress(i + 2, total, f"layers.{i}")
    final_norm = ck.float32("model.norm.weight", (d,))
    lm_head = None if mc.tie_word_embeddings else ck.float32("lm_head.weight", (mc.vocab_size, d))
    if progress:
        progress(total, total, "head")

    # source: the folder's name only; an absolute path would tie the file to one machine
    meta = {"source": ck.folder.resolve().name,
            "source_files": [Path(s).name for s in ck.sources],
            "style": style, "model_type": ck.config.get("model_type"),
            "architectures": ck.config.get("architectures"), "linear_class": linear_class,
            "quantization_mode": mode, **{k: v for k, v in notes.items() if v}}
    if errors:
        meta["weight_quant_rel_l2"] = errors
    model = TernaryModel(config=mc, embed=embed, layers=layers, final_norm=final_norm,
                         lm_head=lm_head, rope_pairing="half", meta=meta)
    try:
        return model.validate()
    except ValueError as e:
        raise CheckpointError(f"{ck.folder}: {e}") from None
