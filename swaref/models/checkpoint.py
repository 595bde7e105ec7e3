"""Loading a checkpoint directory (Hugging Face or Mistral's native layout) into a ``weights.Model``.

A Hugging Face directory holds ``config.json`` and either ``model.safetensors``
or shards listed by ``model.safetensors.index.json``; Mistral's native one
holds ``params.json`` and ``consolidated.safetensors``; either may have a
``tokenizer.json``.  Tensors are read with the ``safetensors`` package's NumPy
API (an optional dependency: ``pip install swaref[model]``); bfloat16, which
NumPy lacks, is widened to float32 from the raw bytes.

Nothing is half-loaded: the JSON files are size- and depth-checked before
they are parsed; the config's values are checked (``ModelConfig``, sanity
limits included) before anything is allocated from them; every tensor's name,
shape and dtype is checked from the file headers; only then are tensors read,
widened to float32 and checked for non-finite values; the Model is built last.
"""
import json
import os
import re
import struct

import numpy as np

from ..errors import SwarefError
from .architectures import ARCHITECTURES, FORMATS, HF, MISTRAL_NATIVE
from .hfconfig import (CheckpointError, CheckpointFileError, build_config, config_from_dict,  # noqa: F401
                       read_generation_config)
from .bf16 import is_bf16, to_bfloat16, widen
from .weights import (LAYER_TENSORS, LayerWeights, Model, arena_layout, arena_views, check_dtype, expected_shapes,
                      tensor_names)

#: safetensors dtypes accepted for weights, widened to float32.
WEIGHT_DTYPES = ("F32", "F16", "BF16")
#: Largest config.json / params.json, and index file, read (real ones are a few KiB and a few 100 KiB).
MAX_CONFIG_BYTES = 4 << 20
MAX_INDEX_BYTES = 64 << 20
#: Largest safetensors header (the format's own readers cap it at 100 MB).
MAX_HEADER_BYTES = 100 << 20
#: Deepest JSON nesting parsed (real configs nest 3 deep; Python's parser recurses once per level).
MAX_JSON_DEPTH = 64


def _import_safetensors():
    try:
        from safetensors import safe_open
    except ImportError:
        raise SwarefError("dependency", "loading checkpoints needs the 'safetensors' package: "
                                        "pip install 'swaref[model]' (or pip install safetensors)") from None
    return safe_open


# ------------------------------------------------------------------------- JSON

_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)


def json_depth(text):
    """The deepest nesting of [ and { outside strings in JSON text (an upper bound on json's recursion)."""
    b = np.frombuffer(_JSON_STRING.sub('""', text).encode("utf-8"), dtype=np.uint8)
    step = np.isin(b, (ord("["), ord("{"))).astype(np.int64) - np.isin(b, (ord("]"), ord("}")))
    return int(np.cumsum(step).max(initial=0))


def parse_json(data, what):
    """data: bytes of a JSON document -> the value, refusing nesting deeper than MAX_JSON_DEPTH."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{what} is not UTF-8 text: {e}", "format") from None
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise CheckpointError(f"{what} nests {depth} levels deep; at most {MAX_JSON_DEPTH} are read", "format")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{what} is not valid JSON: {e}", "format") from None


def load_json(path, max_bytes=MAX_CONFIG_BYTES):
    """The JSON value in file ``path``, refusing a file over ``max_bytes`` before reading it."""
    size = os.path.getsize(path)
    if size > max_bytes:
        raise CheckpointError(f"{path} is {size} bytes; at most {max_bytes} are read", "format")
    with open(path, "rb") as f:
        return parse_json(f.read(max_bytes + 1), path)


# ------------------------------------------------------------------------- config

def _check_directory(directory):
    if not os.path.isdir(directory):
        raise CheckpointFileError(f"checkpoint directory {directory!r} does not exist")


def load_config(directory, rope_theta=None):
    """Read and validate ``directory/config.json`` (and generation_config.json when there) -> ModelConfig.

    ``rope_theta`` overrides the file's.
    """
    _check_directory(directory)
    path = os.path.join(directory, HF.config_file)
    if not os.path.isfile(path):
        raise CheckpointFileError(f"{path} is missing (a Hugging Face checkpoint directory needs config.json)")
    return config_from_dict(load_json(path), path, rope_theta, read_generation_config(directory, load_json))


def load_mistral_config(directory, rope_theta=None):
    """ModelConfig (rope_layout "interleaved") from Mistral's native ``params.json``.

    A params.json without rope_theta needs ``rope_theta``: Mistral 7B v0.1 used
    10000, later mistral-inference code defaults to 1e6, and guessing wrong gives
    a model that runs and is wrong.
    """
    _check_directory(directory)
    path = os.path.join(directory, MISTRAL_NATIVE.config_file)
    p = load_json(path)
    if not isinstance(p, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(p).__name__}")
    for unsupported in ("moe", "vision_encoder", "lora"):
        if p.get(unsupported):
            raise CheckpointError(f"{path}: {unsupported!r} models are not supported (dense Mistral only)")
    if rope_theta is None and "rope_theta" not in p:
        raise CheckpointError(f"{path} has no rope_theta; pass it explicitly (load_model(..., rope_theta=...) or "
                              f"swaref generate --rope-theta): "
                              f"Mistral 7B v0.1 used 10000, later mistral-inference code defaults to 1e6")
    return build_config(p, MISTRAL_NATIVE, path, {} if rope_theta is None else {"rope_theta": rope_theta})


# ------------------------------------------------------------------------ tensors

def tensor_files(directory):
    """name -> safetensors file path, from the index (sharded), or None for a single model.safetensors."""
    index = os.path.join(directory, "model.safetensors.index.json")
    single = os.path.join(directory, "model.safetensors")
    if os.path.isfile(index):
        wmap = load_json(index, MAX_INDEX_BYTES)
        wmap = wmap.get("weight_map") if isinstance(wmap, dict) else None
        if not isinstance(wmap, dict) or not wmap:
            raise CheckpointError(f"{index}: 'weight_map' must be a non-empty object name -> shard file", "format")
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


def read_specs(files, mapping=None):
    """name -> (file, dtype string, shape tuple) from the safetensors headers; reads no tensor data.

    mapping: the index's name -> file, checked against what each file holds.
    """
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
            raise CheckpointError(f"{path} is not a readable safetensors file: {e}", "format") from None
    if mapping is not None:
        missing = sorted(set(mapping) - set(specs))
        if missing:
            raise CheckpointError(f"the index lists tensors that no shard holds: {missing[:5]}")
    return specs


def expected_tensors(cfg, fmt="hf"):
    """Tensor name -> (swaref slot, shape).

    A slot is a top-level name, (layer, name), ("packed", layer, Packed) for a file
    tensor that holds several of swaref's (``architectures.Packed``: Phi-3's
    qkv_proj, gpt-oss's interleaved and transposed gate_up_proj), or
    ("stack", layer, name, e) for expert e of a stacked expert tensor.
    fmt "hf": transformers' names (with the architecture's own names, ``cfg.arch``);
    "mistral": Mistral's native consolidated.safetensors names.
    """
    top_shapes, layer_shapes = expected_shapes(cfg)
    arch = ARCHITECTURES.get(cfg.arch) if fmt == HF.name else None
    top_names, layer_names = tensor_names(fmt, arch.names if arch else None)
    fused = {hf: p for hf, p in (arch.fused if arch else {}).items() if all(k in layer_shapes for k in p.parts)}
    in_fused = {k for p in fused.values() for k in p.parts}
    prefix = FORMATS[fmt].layer_prefix
    out = {top_names[k]: (k, shape) for k, shape in top_shapes.items()
           if k != "lm_head" or not cfg.tie_word_embeddings}
    for i in range(cfg.n_layers):
        for hf, packed in fused.items():
            out[f"{prefix}{i}.{hf}"] = (("packed", i, packed), packed_shape(packed, layer_shapes))
        for key, shape in layer_shapes.items():
            if key in in_fused:
                continue
            name = layer_names[key]
            if "{e}" in name:
                out.update({f"{prefix}{i}.{name.format(e=e)}": (("stack", i, key, e), shape[1:])
                            for e in range(shape[0])})
            else:
                out[f"{prefix}{i}.{name}"] = ((i, key), shape)
    return out


def _file_layout(shape, packed):
    return (*shape[:-2], shape[-1], shape[-2]) if packed.transposed else tuple(shape)


def packed_shape(packed, layer_shapes):
    """The file shape of a Packed tensor: its parts in the file's orientation, joined along its axis."""
    shapes = [_file_layout(layer_shapes[k], packed) for k in packed.parts]
    shape = list(shapes[0])
    shape[packed.axis] = sum(s[packed.axis] for s in shapes)
    return tuple(shape)


def unpack(packed, arr, layer_shapes):
    """A Packed file tensor -> its parts, in swaref's layout ([..., out, in], contiguous)."""
    if packed.how == "interleaved":
        n = len(packed.parts)
        parts = [np.take(arr, np.arange(j, arr.shape[packed.axis], n), axis=packed.axis) for j in range(n)]
    else:
        sizes = [_file_layout(layer_shapes[k], packed)[packed.axis] for k in packed.parts]
        parts = np.split(arr, np.cumsum(sizes)[:-1], axis=packed.axis)
    return [np.ascontiguousarray(np.swapaxes(p, -1, -2) if packed.transposed else p) for p in parts]


def _place(slots, views, slot, arr, cfg):
    """Put one file tensor into swaref's slots (unpacking a packed one, an expert into its stack): a
    matrix is copied into its arena view (``weights.arena_views``), a vector kept as read."""
    if slot[0] == "packed":
        _, i, packed = slot
        for key, part in zip(packed.parts, unpack(packed, arr, expected_shapes(cfg)[1])):
            _place(slots, views, (i, key), part, cfg)
    elif slot[0] == "stack":
        _, i, key, e = slot
        views[(i, key)][e] = arr       # check_specs saw every expert: each row of the stack is written
        slots[(i, key)] = views[(i, key)]
    elif slot in views:
        views[slot][...] = arr
        slots[slot] = views[slot]
    else:
        slots[slot] = arr


def check_specs(cfg, specs, fmt="hf"):
    """Every expected tensor present with the right shape and a float dtype; nothing unknown."""
    want = expected_tensors(cfg, fmt)
    source = FORMATS[fmt].config_file
    missing = [n for n in want if n not in specs]
    if missing:
        raise CheckpointError(f"checkpoint is missing {len(missing)} tensor(s), e.g. {missing[:3]}")
    ignored = re.compile(FORMATS[fmt].ignored)
    tied_head = tensor_names(fmt)[0]["lm_head"] if cfg.tie_word_embeddings else None
    for name, (path, dtype, shape) in specs.items():
        if name not in want:
            if ignored.fullmatch(name) or name == tied_head:
                continue
            raise CheckpointError(f"{path}: unexpected tensor {name!r} (not part of this config's model)")
        exp = want[name][1]
        if shape != exp:
            raise CheckpointError(f"{path}: tensor {name!r} has shape {list(shape)}, expected {list(exp)} "
                                  f"from {source}")
        if dtype not in WEIGHT_DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {dtype}; expected one of {WEIGHT_DTYPES}")


def _bf16_bits(path, name):
    """One BF16 tensor's raw bits, a uint16 array (kept as bfloat16: no widening)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_HEADER_BYTES:
            raise CheckpointError(f"{path}: header length {n} exceeds {MAX_HEADER_BYTES}", "format")
        info = parse_json(f.read(n), f"{path} header")[name]
        a, b = info["data_offsets"]
        f.seek(8 + n + a)
        return np.frombuffer(f.read(b - a), dtype="<u2").astype(np.uint16).reshape(info["shape"])


def read_tensor(path, name, dtype, keep="float32"):
    """One tensor (from F32, F16 or BF16) as float32, or, with keep "bfloat16", as bfloat16 bits
    (a BF16 tensor as stored; F32 / F16 rounded to nearest even)."""
    if keep == "bfloat16":
        return _bf16_bits(path, name) if dtype == "BF16" else to_bfloat16(read_tensor(path, name, dtype))
    if dtype == "BF16":
        return widen(_bf16_bits(path, name))   # exact: bfloat16 is the top half of a float32
    safe_open = _import_safetensors()
    with safe_open(path, framework="np") as f:
        return np.ascontiguousarray(f.get_tensor(name), dtype=np.float32)


def _nonfinite(arr):
    """Index of arr's first non-finite value (bfloat16 bits: exponent all ones), or None."""
    bad = (arr & 0x7F80) == 0x7F80 if is_bf16(arr) else ~np.isfinite(arr)
    return tuple(int(i) for i in np.argwhere(bad)[0]) if bad.any() else None


def load_model(directory, rope_theta=None, dtype="float32"):
    """Load a checkpoint directory -> Model with weights of ``dtype``.

    dtype "float32": every tensor widened to float32 (exact from BF16 / F16).  "bfloat16": every
    matrix (the projections, experts, router, embedding, LM head) kept as bfloat16 bits (a BF16
    tensor as stored, F32 / F16 rounded to nearest even), vectors (norms, biases, sinks) float32:
    half the memory, and a decode step streams half the bytes (docs/model.md, "bfloat16 weights").

    Hugging Face layout (config.json + model.safetensors or shards; RoPE
    rotate-half) or Mistral's native layout (params.json +
    consolidated.safetensors; RoPE on interleaved pairs).  ``rope_theta``
    overrides the file's value (a params.json without one must be given it).

    Raises CheckpointFileError for a missing file and CheckpointError for
    anything else wrong, before any weight is kept.
    """
    check_dtype(dtype)
    _check_directory(directory)
    if not os.path.isfile(os.path.join(directory, HF.config_file)) \
            and os.path.isfile(os.path.join(directory, MISTRAL_NATIVE.config_file)):
        cfg, fmt = load_mistral_config(directory, rope_theta), MISTRAL_NATIVE.name
        path = os.path.join(directory, "consolidated.safetensors")
        if not os.path.isfile(path):
            raise CheckpointFileError(f"{path} is missing (Mistral's native layout: params.json + "
                                      f"consolidated.safetensors)")
        specs = read_specs([path])
    else:
        cfg, fmt = load_config(directory, rope_theta), HF.name
        mapping = tensor_files(directory)
        files = sorted(set(mapping.values())) if mapping else [os.path.join(directory, "model.safetensors")]
        specs = read_specs(files, mapping)
    check_specs(cfg, specs, fmt)
    slots, views = {}, arena_views(arena_layout(cfg, dtype))   # reserved, not yet touched: no memory used
    for name, (slot, shape) in expected_tensors(cfg, fmt).items():
        path, file_dtype, _ = specs[name]
        arr = read_tensor(path, name, file_dtype, "bfloat16" if dtype == "bfloat16" and len(shape) >= 2 else "float32")
        bad = _nonfinite(arr)
        if bad is not None:
            rounded = " (after rounding to bfloat16)" if is_bf16(arr) and file_dtype != "BF16" else ""
            raise CheckpointError(f"{path}: tensor {name!r} holds a non-finite value{rounded} at index {bad}")
        _place(slots, views, slot, arr, cfg)
    slots = _convert(cfg, slots)
    layers = [LayerWeights(**{key: slots.get((i, key)) for key in LAYER_TENSORS}) for i in range(cfg.n_layers)]
    lm_head = slots["embed"] if cfg.tie_word_embeddings else slots["lm_head"]
    return Model(cfg, slots["embed"], layers, slots["final_norm"], lm_head, slots.get("final_norm_b"))


def _convert(cfg, slots):
    """The architecture's weight conventions made plain: Gemma's RMSNorm weights are stored as w - 1."""
    arch = ARCHITECTURES.get(cfg.arch)
    if arch is None or not arch.norm_plus_one:
        return slots
    # Gemma3RMSNorm multiplies by (1 + weight), in float32: the same float32 sum, made once here.
    norms = {"final_norm", "attn_norm", "attn_out_norm", "mlp_norm", "mlp_out_norm", "q_norm", "k_norm"}
    return {k: (v + np.float32(1.0)) if (k if isinstance(k, str) else k[1]) in norms else v for k, v in slots.items()}


def load_tokenizer(directory):
    """``tokenizers.Tokenizer`` from ``directory/tokenizer.json``, or None when there is none."""
    path = os.path.join(directory, "tokenizer.json")
    if not os.path.isfile(path):
        return None
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise SwarefError("dependency", f"{path} needs the 'tokenizers' package: pip install 'swaref[model]'") from None
    try:
        return Tokenizer.from_file(path)
    except Exception as e:  # tokenizers raises its own exception type for a malformed file
        raise CheckpointError(f"{path} is not a readable tokenizer: {e}", "format") from None
