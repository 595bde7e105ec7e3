"""Load a Hugging Face Mistral checkpoint directory into a ``swaref.model.Model``.

A directory holds ``config.json`` and either ``model.safetensors`` or shards
listed by ``model.safetensors.index.json``; optionally ``tokenizer.json``.
Tensors are read with the ``safetensors`` package's NumPy API (an optional
dependency: ``pip install swaref[model]``); bfloat16, which NumPy lacks, is
widened to float32 from the raw bytes.

Loading happens in two passes so that nothing is half-loaded: first the config
and every tensor's name, shape and dtype are checked from the file headers
(no data read); only then are the tensors read, converted to float32 and
checked for non-finite values; the Model is built last.
"""
import json
import math
import numbers
import os
import re
import struct

import numpy as np

from .model import LayerWeights, Model, ModelConfig, expected_shapes

#: Architectures this loader understands (Mistral; Llama is the same graph without a window).
SUPPORTED_ARCHITECTURES = ("MistralForCausalLM", "LlamaForCausalLM")
#: safetensors dtypes accepted for weights, widened to float32.
WEIGHT_DTYPES = ("F32", "F16", "BF16")

_LAYER_TENSORS = {
    "attn_norm": "input_layernorm.weight", "wq": "self_attn.q_proj.weight", "wk": "self_attn.k_proj.weight",
    "wv": "self_attn.v_proj.weight", "wo": "self_attn.o_proj.weight",
    "mlp_norm": "post_attention_layernorm.weight", "w_gate": "mlp.gate_proj.weight",
    "w_up": "mlp.up_proj.weight", "w_down": "mlp.down_proj.weight",
}
_MISTRAL_LAYER_TENSORS = {
    "attn_norm": "attention_norm.weight", "wq": "attention.wq.weight", "wk": "attention.wk.weight",
    "wv": "attention.wv.weight", "wo": "attention.wo.weight", "mlp_norm": "ffn_norm.weight",
    "w_gate": "feed_forward.w1.weight", "w_up": "feed_forward.w3.weight", "w_down": "feed_forward.w2.weight",
}
_NAMES = {
    "hf": ({"embed": "model.embed_tokens.weight", "final_norm": "model.norm.weight", "lm_head": "lm_head.weight"},
           _LAYER_TENSORS, "model.layers."),
    "mistral": ({"embed": "tok_embeddings.weight", "final_norm": "norm.weight", "lm_head": "output.weight"},
                _MISTRAL_LAYER_TENSORS, "layers."),
}
# Old checkpoints store RoPE's inverse frequencies; they are recomputed, never read.
_IGNORED = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: the message names the file, field or tensor."""


class CheckpointFileError(CheckpointError, FileNotFoundError):
    """A file the checkpoint needs is missing."""


def _import_safetensors():
    try:
        import safetensors  # noqa: F401
        from safetensors import safe_open
    except ImportError:
        raise ImportError("loading checkpoints needs the 'safetensors' package: "
                          "pip install 'swaref[model]' (or pip install safetensors)") from None
    return safe_open


# ------------------------------------------------------------------------- config

def _field(cfg, name, path, *, default=None, required=True, kind="int", minimum=1):
    if name not in cfg or cfg[name] is None:
        if required and default is None:
            raise CheckpointError(f"{path}: missing required field {name!r}")
        return default
    val = cfg[name]
    if kind == "int":
        if isinstance(val, bool) or not isinstance(val, int) or val < minimum:
            raise CheckpointError(f"{path}: field {name!r} must be an int >= {minimum}, got {val!r}")
    elif kind == "float":
        if isinstance(val, bool) or not isinstance(val, numbers.Real) or not math.isfinite(val) or val <= 0:
            raise CheckpointError(f"{path}: field {name!r} must be a finite number > 0, got {val!r}")
        val = float(val)
    elif kind == "bool":
        if not isinstance(val, bool):
            raise CheckpointError(f"{path}: field {name!r} must be true or false, got {val!r}")
    return val


def _rope_theta(cfg, path):
    """rope_theta from transformers 4.x (top level) or 5.x (rope_parameters); only plain RoPE."""
    params = cfg.get("rope_parameters")
    scaling = cfg.get("rope_scaling")
    for name, p in (("rope_parameters", params), ("rope_scaling", scaling)):
        if p is None:
            continue
        if not isinstance(p, dict):
            raise CheckpointError(f"{path}: field {name!r} must be an object, got {p!r}")
        rtype = p.get("rope_type", p.get("type", "default"))
        if rtype != "default":
            raise CheckpointError(f"{path}: {name}.rope_type {rtype!r} is not supported (only 'default' RoPE)")
    if params is not None and "rope_theta" in params:
        return _field(params, "rope_theta", f"{path} rope_parameters", kind="float")
    return _field(cfg, "rope_theta", path, default=10000.0, required=False, kind="float")


def _windows(cfg, path, n_layers):
    """Per-layer windows: config 'sliding_window' (HF S = swaref W) and optional 'layer_types'."""
    arch = cfg.get("model_type")
    sw = cfg.get("sliding_window")
    if arch == "llama" or cfg.get("use_sliding_window") is False:
        sw = None
    if sw is not None:
        sw = _field(cfg, "sliding_window", path, kind="int", minimum=1)
    types = cfg.get("layer_types")
    if types is None:
        return [sw] * n_layers
    if not isinstance(types, list) or len(types) != n_layers:
        raise CheckpointError(f"{path}: field 'layer_types' must list {n_layers} entries, got {types!r}")
    out = []
    for i, t in enumerate(types):
        if t == "full_attention":
            out.append(None)
        elif t == "sliding_attention":
            if sw is None:
                raise CheckpointError(f"{path}: layer_types[{i}] is 'sliding_attention' but sliding_window is null")
            out.append(sw)
        else:
            raise CheckpointError(f"{path}: layer_types[{i}] = {t!r}; expected 'sliding_attention' or "
                                  f"'full_attention'")
    return out


def config_from_dict(cfg, path="config.json"):
    """A ModelConfig from a transformers config dict (raises CheckpointError, naming the field)."""
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(cfg).__name__}")
    archs = cfg.get("architectures") or []
    model_type = cfg.get("model_type")
    if not any(a in SUPPORTED_ARCHITECTURES for a in archs) and model_type not in ("mistral", "llama"):
        raise CheckpointError(f"{path}: unsupported architecture {archs or model_type!r}; swaref loads "
                              f"{', '.join(SUPPORTED_ARCHITECTURES)}")
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise CheckpointError(f"{path}: hidden_act {act!r} is not supported (Mistral uses 'silu')")
    for bias in ("attention_bias", "mlp_bias"):
        if cfg.get(bias):
            raise CheckpointError(f"{path}: {bias}=true is not supported (Mistral has no biases)")
    n_layers = _field(cfg, "num_hidden_layers", path)
    n_heads = _field(cfg, "num_attention_heads", path)
    hidden = _field(cfg, "hidden_size", path)
    n_kv = _field(cfg, "num_key_value_heads", path, default=n_heads, required=False)
    head_dim = _field(cfg, "head_dim", path, required=False)
    if head_dim is None:
        if hidden % n_heads:
            raise CheckpointError(f"{path}: head_dim is missing and hidden_size {hidden} is not a multiple of "
                                  f"num_attention_heads {n_heads}")
        head_dim = hidden // n_heads
    if n_heads % n_kv:
        raise CheckpointError(f"{path}: num_attention_heads {n_heads} must be a multiple of "
                              f"num_key_value_heads {n_kv}")
    if head_dim % 2:
        raise CheckpointError(f"{path}: head_dim must be even for RoPE, got {head_dim}")
    vocab = _field(cfg, "vocab_size", path)
    eos = cfg.get("eos_token_id")
    eos = [] if eos is None else (eos if isinstance(eos, list) else [eos])
    for t in eos:
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab:
            raise CheckpointError(f"{path}: eos_token_id must be token ids in [0, {vocab}), "
                                  f"got {cfg['eos_token_id']!r}")
    bos = cfg.get("bos_token_id")
    if bos is not None and (isinstance(bos, bool) or not isinstance(bos, int) or not 0 <= bos < vocab):
        raise CheckpointError(f"{path}: bos_token_id must be a token id in [0, {vocab}), got {bos!r}")
    return ModelConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=_field(cfg, "intermediate_size", path),
        n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim,
        window=_windows(cfg, path, n_layers), rope_theta=_rope_theta(cfg, path),
        rms_norm_eps=_field(cfg, "rms_norm_eps", path, default=1e-6, required=False, kind="float"),
        tie_word_embeddings=_field(cfg, "tie_word_embeddings", path, default=False, required=False, kind="bool"),
        rope_layout="half", bos_token_id=bos, eos_token_ids=eos)


def load_config(directory):
    """Read and validate ``directory/config.json`` -> ModelConfig."""
    path = os.path.join(directory, "config.json")
    if not os.path.isdir(directory):
        raise CheckpointFileError(f"checkpoint directory {directory!r} does not exist")
    if not os.path.isfile(path):
        raise CheckpointFileError(f"{path} is missing (a Hugging Face checkpoint directory needs config.json)")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    return config_from_dict(cfg, path)


# ------------------------------------------------------------------------ tensors

def tensor_files(directory):
    """name -> safetensors file path, from the index (sharded) or model.safetensors."""
    index = os.path.join(directory, "model.safetensors.index.json")
    single = os.path.join(directory, "model.safetensors")
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                wmap = json.load(f).get("weight_map")
        except (json.JSONDecodeError, AttributeError) as e:
            raise CheckpointError(f"{index} is not a valid index: {e}") from None
        if not isinstance(wmap, dict) or not wmap:
            raise CheckpointError(f"{index}: 'weight_map' must be a non-empty object name -> shard file")
        out = {}
        for name, fname in wmap.items():
            if not isinstance(fname, str) or os.path.basename(fname) != fname:
                raise CheckpointError(f"{index}: tensor {name!r} maps to {fname!r}, not a file in the directory")
            p = os.path.join(directory, fname)
            if not os.path.isfile(p):
                raise CheckpointFileError(f"{index} lists shard {fname!r} (for {name!r}) but {p} is missing")
            out[name] = p
        return out
    if not os.path.isfile(single):
        raise CheckpointFileError(f"{directory} has neither model.safetensors nor model.safetensors.index.json")
    return None


def read_specs(directory):
    """name -> (file, dtype string, shape tuple) from the safetensors headers; reads no tensor data."""
    mapping = tensor_files(directory)
    files = sorted(set(mapping.values())) if mapping else [os.path.join(directory, "model.safetensors")]
    return _specs(files, mapping)


def _specs(files, mapping=None):
    safe_open = _import_safetensors()
    specs = {}
    for path in files:
        try:
            with safe_open(path, framework="np") as f:
                for name in f.keys():
                    if mapping is not None and mapping.get(name) != path:
                        raise CheckpointError(f"{path} holds tensor {name!r} which the index places in "
                                              f"{mapping.get(name)!r}")
                    sl = f.get_slice(name)
                    specs[name] = (path, sl.get_dtype(), tuple(sl.get_shape()))
        except CheckpointError:
            raise
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None
    if mapping is not None:
        missing = sorted(set(mapping) - set(specs))
        if missing:
            raise CheckpointError(f"the index lists tensors that no shard holds: {missing[:5]}")
    return specs


def expected_tensors(cfg, fmt="hf"):
    """Tensor name -> (swaref slot, shape); slot is a top-level name or (layer, name).

    fmt "hf": transformers' names; "mistral": Mistral's native consolidated.safetensors names.
    """
    top, layer = expected_shapes(cfg)
    names, per_layer, prefix = _NAMES[fmt]
    out = {names[k]: (k, top[k]) for k in ("embed", "final_norm")}
    if not cfg.tie_word_embeddings:
        out[names["lm_head"]] = ("lm_head", top["lm_head"])
    for i in range(cfg.n_layers):
        for key, name in per_layer.items():
            out[f"{prefix}{i}.{name}"] = ((i, key), layer[key])
    return out


def check_specs(cfg, specs, fmt="hf", source="config.json"):
    """Every expected tensor present with the right shape and a float dtype; nothing unknown."""
    want = expected_tensors(cfg, fmt)
    missing = [n for n in want if n not in specs]
    if missing:
        raise CheckpointError(f"checkpoint is missing {len(missing)} tensor(s), e.g. {missing[:3]}")
    for name, (path, dtype, shape) in specs.items():
        if name not in want:
            if _IGNORED.fullmatch(name) or (cfg.tie_word_embeddings and name == _NAMES[fmt][0]["lm_head"]):
                continue
            raise CheckpointError(f"{path}: unexpected tensor {name!r} (not part of a Mistral model with this config)")
        exp = want[name][1]
        if shape != exp:
            raise CheckpointError(f"{path}: tensor {name!r} has shape {list(shape)}, expected {list(exp)} "
                                  f"from {source}")
        if dtype not in WEIGHT_DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {dtype}; expected one of {WEIGHT_DTYPES}")


def _bf16_tensor(path, name):
    """Read one BF16 tensor's raw bytes (NumPy has no bfloat16) and widen it to float32 exactly."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        info = header[name]
        a, b = info["data_offsets"]
        f.seek(8 + n + a)
        raw = np.frombuffer(f.read(b - a), dtype="<u2")
    # bfloat16 is the top half of a float32: shifting the bits up is exact.
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])


def read_tensor(path, name, dtype):
    """One tensor as a float32 array (from F32, F16 or BF16)."""
    if dtype == "BF16":
        return _bf16_tensor(path, name)
    safe_open = _import_safetensors()
    with safe_open(path, framework="np") as f:
        return np.ascontiguousarray(f.get_tensor(name), dtype=np.float32)


def load_model(directory, rope_theta=None):
    """Load a checkpoint directory -> swaref.model.Model with float32 weights.

    Hugging Face layout (config.json + model.safetensors or shards; RoPE
    rotate-half) or Mistral's native layout (params.json +
    consolidated.safetensors; RoPE on interleaved pairs).  ``rope_theta``
    overrides the file's value; a params.json without one must be given it
    (Mistral 7B v0.1 used 10000, later code defaults to 1e6).

    Raises CheckpointFileError for a missing file and CheckpointError for
    anything else wrong, before any weight is kept.
    """
    if os.path.isdir(directory) and not os.path.isfile(os.path.join(directory, "config.json")) \
            and os.path.isfile(os.path.join(directory, "params.json")):
        cfg = load_mistral_config(directory, rope_theta)
        path = os.path.join(directory, "consolidated.safetensors")
        if not os.path.isfile(path):
            raise CheckpointFileError(f"{path} is missing (Mistral's native layout: params.json + "
                                      f"consolidated.safetensors)")
        specs, fmt, source = _specs([path]), "mistral", "params.json"
    else:
        cfg = load_config(directory)
        if rope_theta is not None:
            cfg.rope_theta = _field({"rope_theta": rope_theta}, "rope_theta", "rope_theta=", kind="float")
        specs, fmt, source = read_specs(directory), "hf", "config.json"
    check_specs(cfg, specs, fmt, source)
    slots = {}
    for name, (slot, _) in expected_tensors(cfg, fmt).items():
        path, dtype, _ = specs[name]
        arr = read_tensor(path, name, dtype)
        if not np.isfinite(arr).all():
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            raise CheckpointError(f"{path}: tensor {name!r} holds a non-finite value at index {bad}")
        slots[slot] = arr
    layers = [LayerWeights(**{key: slots[(i, key)] for key in _LAYER_TENSORS}) for i in range(cfg.n_layers)]
    lm_head = slots["embed"] if cfg.tie_word_embeddings else slots["lm_head"]
    return Model(cfg, slots["embed"], layers, slots["final_norm"], lm_head)


def load_mistral_config(directory, rope_theta=None):
    """ModelConfig (rope_layout "interleaved") from Mistral's native ``params.json``."""
    path = os.path.join(directory, "params.json")
    try:
        with open(path, encoding="utf-8") as f:
            p = json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(p, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(p).__name__}")
    for unsupported in ("moe", "vision_encoder", "lora"):
        if p.get(unsupported):
            raise CheckpointError(f"{path}: {unsupported!r} models are not supported (dense Mistral only)")
    n_layers = _field(p, "n_layers", path)
    n_heads = _field(p, "n_heads", path)
    dim = _field(p, "dim", path)
    n_kv = _field(p, "n_kv_heads", path, default=n_heads, required=False)
    head_dim = _field(p, "head_dim", path, required=False)
    if head_dim is None:
        if dim % n_heads:
            raise CheckpointError(f"{path}: head_dim is missing and dim {dim} is not a multiple of n_heads {n_heads}")
        head_dim = dim // n_heads
    if n_heads % n_kv or head_dim % 2:
        raise CheckpointError(f"{path}: n_heads {n_heads} must be a multiple of n_kv_heads {n_kv} and head_dim "
                              f"{head_dim} even")
    sw = p.get("sliding_window")
    if isinstance(sw, list):  # mistral-inference: one window per layer (None = full attention)
        if len(sw) != n_layers:
            raise CheckpointError(f"{path}: a per-layer sliding_window list needs {n_layers} entries, got {len(sw)}")
        windows = [None if w is None else _field({"w": w}, "w", f"{path} sliding_window") for w in sw]
    else:
        windows = None if sw is None else _field(p, "sliding_window", path)
    if rope_theta is None:
        if "rope_theta" not in p:
            raise CheckpointError(f"{path} has no rope_theta; pass it explicitly (load_model(..., rope_theta=...) or "
                                  f"swaref generate --rope-theta): "
                                  f"Mistral 7B v0.1 used 10000, later mistral-inference code defaults to 1e6")
        rope_theta = p["rope_theta"]
    return ModelConfig(
        vocab_size=_field(p, "vocab_size", path), hidden_size=dim, intermediate_size=_field(p, "hidden_dim", path),
        n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim, window=windows,
        rope_theta=_field({"rope_theta": rope_theta}, "rope_theta", path, kind="float"),
        rms_norm_eps=_field(p, "norm_eps", path, default=1e-5, required=False, kind="float"),
        tie_word_embeddings=False, rope_layout="interleaved")


def load_tokenizer(directory):
    """``tokenizers.Tokenizer`` from ``directory/tokenizer.json``, or None when there is none."""
    path = os.path.join(directory, "tokenizer.json")
    if not os.path.isfile(path):
        return None
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ImportError(f"{path} needs the 'tokenizers' package: pip install 'swaref[model]'") from None
    return Tokenizer.from_file(path)
