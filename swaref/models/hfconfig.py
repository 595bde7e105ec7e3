"""A Hugging Face ``config.json`` (and ``generation_config.json``) -> ``ModelConfig``, as transformers reads them.

The rule (issue 11): for each supported ``model_type`` a key the file omits
means what transformers' config class for that type makes of it (the
``defaults`` of its row in ``architectures.ARCHITECTURES``), and a key the file
gives means what transformers' modelling code does with it.  Where the two
entry points of transformers disagree, swaref follows ``AutoModelForCausalLM``
(a Mistral config with ``layer_types`` is loaded as Ministral); where
transformers' own forward pass and ``generate`` disagree (a Llama config with a
``sliding_window``), or where transformers cannot run a config at all, swaref
refuses it.  A key that changes the computation in a way swaref does not
implement is refused by name.

generation_config.json supplies the stop ids and the sampling defaults
transformers' ``generate`` uses when the caller gives none.
"""
import dataclasses
import os

from .. import _validate as V
from ..errors import SwarefError
from .architectures import ACTIVATIONS, ARCHITECTURES, HF
from .config import ConfigFieldError, ModelConfig
from .rope import SCALINGS


class CheckpointError(SwarefError):
    """A checkpoint that cannot be loaded faithfully: the message names the file, field or tensor.

    kind "checkpoint", or "format" for a malformed file (bad JSON, too large or deep).
    """

    def __init__(self, message, kind="checkpoint"):
        super().__init__(kind, message)


class CheckpointFileError(CheckpointError, FileNotFoundError):
    """A file the checkpoint needs is missing."""


def build_config(raw, fmt, path, derived, defaults=None):
    """The part every reader shares: map the format's fields, apply defaults, build the ModelConfig.

    defaults: file key -> value for keys the file omits (None: the format's own ModelConfig defaults);
    derived: fields the format-specific reader computed (they win over the plain mapping).
    ModelConfig validates; its errors are reworded with the file's field names.
    """
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    kw = dict(fmt.defaults)
    for name, file_name in fmt.fields.items():
        if file_name in raw and raw[file_name] is not None:
            kw[name] = raw[file_name]
        elif defaults is not None and defaults.get(file_name) is not None and file_name not in raw:
            kw[name] = defaults[file_name]
        elif name in fmt.required:
            raise CheckpointError(f"{path}: missing required field {file_name!r}")
    kw.update(derived)
    kw.setdefault("rope_layout", fmt.rope_layout)
    try:
        return ModelConfig(**kw)
    except ConfigFieldError as e:
        raise CheckpointError(f"{path}: {e.describe(fmt.fields)}") from None


def architecture(raw, path):
    """The Architecture row for a config dict: by model_type (what AutoModelForCausalLM uses), else by class."""
    mtype = raw.get("model_type")
    arch = ARCHITECTURES.get(mtype) if isinstance(mtype, str) else None
    if arch is None and mtype is None:
        classes = [a for a in (raw.get("architectures") or []) if isinstance(a, str)]
        arch = next((a for a in ARCHITECTURES.values() if any(c in a.hf_classes for c in classes)), None)
    if arch is None:
        known = ", ".join(f"{a.name} ({'/'.join(a.hf_classes)})" for a in ARCHITECTURES.values())
        raise CheckpointError(f"{path}: unsupported architecture {raw.get('architectures') or mtype!r}; "
                              f"swaref loads {known}")
    if arch.with_layer_types and "layer_types" in raw:
        arch = ARCHITECTURES[arch.with_layer_types]
    return arch


def _getter(raw, arch):
    """key -> the file's value when the key is present (null included), else the config class's default."""
    return lambda key: raw[key] if key in raw else arch.defaults.get(key)


def _scaling(params, raw, get, path, where):
    """(theta, scaling) of one rope_parameters dict, as transformers' standardize_rope_params reads it:
    llama3 / yarn take original_max_position_embeddings from the top level, then from the dict, then
    max_position_embeddings; yarn without a factor uses their ratio."""
    if not isinstance(params, dict):
        raise CheckpointError(f"{path}: field {where!r} must be an object, got {params!r:.200}")
    rtype = params.get("rope_type", params.get("type", "default"))
    if rtype != "default" and rtype not in SCALINGS:
        raise CheckpointError(f"{path}: {where}.rope_type {rtype!r} is not supported (swaref implements "
                              f"'default', {', '.join(repr(t) for t in SCALINGS)})")
    if rtype == "default":
        return params["rope_theta"], {}
    required, optional = SCALINGS[rtype]
    scaling = {k: params[k] for k in (*required, *optional) if params.get(k) is not None}
    scaling["rope_type"] = rtype
    if "original_max_position_embeddings" in required:
        scaling["original_max_position_embeddings"] = raw.get(
            "original_max_position_embeddings", params.get("original_max_position_embeddings",
                                                           get("max_position_embeddings")))
    if rtype == "yarn" and scaling.get("factor") is None and V.is_int(get("max_position_embeddings")):
        scaling["factor"] = get("max_position_embeddings") / scaling["original_max_position_embeddings"]
    return params["rope_theta"], scaling


def _rope(raw, arch, get, path):
    """rope_theta, rope_scaling, local_rope_theta and rope_dim as transformers' convert_rope_params_to_dict
    finds them: rope_scaling (4.x) wins over rope_parameters (5.x); rope_theta inside them wins over the
    top-level key.  A family with RoPE per layer type (Gemma 3, OLMo 3) nests them by layer type; its
    sliding layers must use plain RoPE."""
    prf = None
    if arch.rope_by_layer_type is None:
        # A family whose config class fills in scaled RoPE when the file has none (gpt-oss: yarn) says so in
        # its defaults.
        params = raw.get("rope_scaling") or raw.get("rope_parameters") or arch.defaults.get("rope_parameters") or {}
        if not isinstance(params, dict):
            raise CheckpointError(f"{path}: field 'rope_parameters' must be an object, got {params!r:.200}")
        params = dict(params)
        params.setdefault("rope_theta", get("rope_theta"))
        theta, scaling = _scaling(params, raw, get, path, "rope_parameters")
        out = {"rope_theta": theta, "rope_scaling": scaling}
        prf = params.get("partial_rotary_factor", get("partial_rotary_factor"))
    else:
        full_theta, local_key, local_theta = arch.rope_by_layer_type
        nested = raw.get("rope_parameters") or {}
        if not isinstance(nested, dict) or not set(nested) <= {"full_attention", "sliding_attention"}:
            raise CheckpointError(f"{path}: {arch.name}'s rope_parameters must be nested by layer type "
                                  f"('full_attention', 'sliding_attention'), got {nested!r:.200}")
        full = dict(nested.get("full_attention") or {}, **(raw.get("rope_scaling") or {}))
        full.setdefault("rope_theta", raw.get("rope_theta", full_theta))
        local = dict(nested.get("sliding_attention") or {})
        local.setdefault("rope_theta", raw.get(local_key, local_theta) if local_key else local_theta)
        theta, scaling = _scaling(full, raw, get, path, "rope_parameters.full_attention")
        local_theta, local_scaling = _scaling(local, raw, get, path, "rope_parameters.sliding_attention")
        if local_scaling:
            raise CheckpointError(f"{path}: rope_parameters.sliding_attention.rope_type "
                                  f"{local_scaling['rope_type']!r} is not supported (swaref scales full-attention "
                                  f"layers only)")
        out = {"rope_theta": theta, "rope_scaling": scaling, "local_rope_theta": local_theta}
        prf = full.get("partial_rotary_factor", raw.get("partial_rotary_factor"))
    if prf not in (None, 1, 1.0):
        heads, hidden = get("num_attention_heads"), get("hidden_size")
        head_dim = get("head_dim") or (hidden // heads if V.is_int(hidden) and V.is_int(heads) and heads else None)
        if not arch.partial_rotary or isinstance(prf, bool) or not isinstance(prf, (int, float)) \
                or not 0 < prf <= 1 or head_dim is None:
            raise CheckpointError(f"{path}: partial_rotary_factor {prf!r} is not supported for {arch.name} "
                                  f"(expected 1.0{' or a number in (0, 1]' if arch.partial_rotary else ''})")
        out["rope_dim"] = int(head_dim * prf)
    return out


_LEGACY_LAYER_TYPES = {"attention": "full_attention"}  # transformers' configuration_utils._LEGACY_LAYER_TYPE_REMAP


def layer_windows(raw, arch, path):
    """Per-layer windows (HF's sliding_window S = swaref's W) by the architecture's rule (WINDOW_RULES)."""
    get = _getter(raw, arch)
    sw = get("sliding_window")
    if arch.windows == "none":
        types = raw.get("layer_types")
        if sw is not None or isinstance(types, list) and "sliding_attention" in types:
            # LlamaModel's mask ignores both while transformers' DynamicCache (cache_utils.py,
            # get_layer_types_and_kwargs) builds sliding layers from them, keeping sliding_window - 1
            # tokens: its forward pass and its generate disagree, so swaref refuses rather than pick one.
            what = f"sliding_window = {sw!r}" if sw is not None else "layer_types lists 'sliding_attention'"
            raise CheckpointError(f"{path}: {what} but {arch.name} has no sliding window (transformers' "
                                  f"{arch.name} mask ignores it and its generate cache does not)")
        return None
    if arch.windows == "every_layer":
        types = raw.get("layer_types")
        if sw is None and isinstance(types, list) and "sliding_attention" in types:
            # The mask never reads layer_types, but transformers' DynamicCache builds a sliding layer for
            # each entry and cannot without a window (a TypeError): refused as transformers cannot run it.
            raise CheckpointError(f"{path}: layer_types lists 'sliding_attention' but sliding_window is null")
        return sw
    if arch.windows == "max_window_layers" and not get("use_sliding_window"):
        sw = None
    n_layers = get("num_hidden_layers")
    types = get("layer_types")
    if types is None:
        if not V.is_int(n_layers):
            return sw  # ModelConfig refuses num_hidden_layers, naming it
        first = get("max_window_layers") if arch.windows == "max_window_layers" else 0
        every = get(arch.full_every_key) if arch.full_every_key else arch.full_every
        for key, val, low in (("max_window_layers", first, 0), (arch.full_every_key, every, 1)):
            if val is not None and (not V.is_int(val) or val < low):
                raise CheckpointError(f"{path}: field {key!r} must be an int >= {low}, got {val!r}")
        return [sw if sw is not None and i >= first and (not every or (i + 1) % every) else None
                for i in range(n_layers)]
    if not isinstance(types, list) or (V.is_int(n_layers) and len(types) != n_layers):
        raise CheckpointError(f"{path}: field 'layer_types' must list one entry per layer (num_hidden_layers = "
                              f"{n_layers!r}), got {types!r:.200}")
    out = []
    for i, t in enumerate(types):
        t = _LEGACY_LAYER_TYPES.get(t, t)
        if t not in ("full_attention", "sliding_attention"):
            raise CheckpointError(f"{path}: layer_types[{i}] = {t!r}; expected 'sliding_attention' or "
                                  f"'full_attention'")
        if t == "sliding_attention" and sw is None:
            why = " (use_sliding_window is false)" if arch.windows == "max_window_layers" and raw.get(
                "sliding_window") is not None else ""
            raise CheckpointError(f"{path}: layer_types[{i}] is 'sliding_attention' but sliding_window is null{why}")
        out.append(sw if t == "sliding_attention" else None)
    return out


def _biases(arch, get, path):
    biased = set(arch.biases)
    for key, projections in arch.bias_keys.items():
        val = get(key)
        if not isinstance(val, bool):
            raise CheckpointError(f"{path}: field {key!r} must be true or false, got {val!r}")
        if val:
            biased.update(projections)
    return tuple(biased)


def _features(raw, arch, get, path):
    """The family's graph and the config keys that size or scale it."""
    act_key = arch.keys.get("act", "hidden_act")
    act = get(act_key)
    if act not in ACTIVATIONS:
        raise CheckpointError(f"{path}: {act_key} {act!r} is not supported (swaref implements "
                              f"{', '.join(repr(a) for a in ACTIVATIONS)})")
    for key, accepted in arch.unsupported.items():
        if get(key) not in accepted:
            raise CheckpointError(f"{path}: {key} = {get(key)!r} is not supported for {arch.name} (swaref "
                                  f"implements {' or '.join(repr(a) for a in accepted)})")
    out = dict(arch.graph, act=ACTIVATIONS[act], arch=arch.name, biases=_biases(arch, get, path))
    if arch.embed_scale_sqrt and V.is_int(get("hidden_size")):
        out["embed_scale"] = get("hidden_size") ** 0.5
    if arch.attn_scale_key:
        val = get(arch.attn_scale_key)
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not 0 < val < float("inf"):
            raise CheckpointError(f"{path}: field {arch.attn_scale_key!r} must be a number > 0, got {val!r}")
        out["attn_scale"] = val ** -0.5
    return out


def config_from_dict(cfg, path="config.json", rope_theta=None, generation=None):
    """A ModelConfig from a transformers config dict (raises CheckpointError, naming the key).

    generation: the generation_config.json dict, or None.
    """
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(cfg).__name__}")
    arch = architecture(cfg, path)
    if cfg.get("quantization_config") is not None:
        # transformers dequantizes (gpt-oss's MXFP4 experts) or runs quantized kernels; swaref reads float
        # tensors only, and a quantized file's tensors are not the model's weights.
        method = cfg["quantization_config"].get("quant_method") if isinstance(cfg["quantization_config"], dict) \
            else None
        raise CheckpointError(f"{path}: quantization_config (quant_method {method!r}) is not supported: swaref "
                              f"loads float32 / float16 / bfloat16 weights only")
    for alias, key in arch.aliases.items():
        if alias in cfg:  # transformers' attribute_map: the alias sets the key
            if key in cfg and cfg[key] != cfg[alias]:
                raise CheckpointError(f"{path}: {alias} = {cfg[alias]!r} and {key} = {cfg[key]!r} name one value "
                                      f"(transformers reads {alias} as {key}) and disagree")
            cfg = dict(cfg, **{key: cfg[alias]})
    cfg = {k: v for k, v in cfg.items() if k not in arch.ignored}
    get = _getter(cfg, arch)
    for key in arch.required:
        if get(key) is None:
            raise CheckpointError(f"{path}: {arch.name} needs field {key!r} (transformers {arch.name} cannot run "
                                  f"without it), got {cfg.get(key)!r}")
    derived = {"windows": layer_windows(cfg, arch, path), **_rope(cfg, arch, get, path),
               **_features(cfg, arch, get, path)}
    vocab = get("vocab_size")
    for key, name in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_ids")):
        # A class default outside this vocabulary (Starcoder2's 50256 in a smaller one) can never be
        # generated: transformers never meets it, so swaref drops it rather than refuse the file.
        default = arch.defaults.get(key)
        if key not in cfg and V.is_int(default) and V.is_int(vocab) and not 0 <= default < vocab:
            derived[name] = None
    if rope_theta is not None:
        derived["rope_theta"] = rope_theta
    if generation is not None:
        derived.update(generation_defaults(generation, os.path.join(os.path.dirname(path), GENERATION_CONFIG)))
    fields = dict(HF.fields, **{k: v for k, v in arch.keys.items() if k != "act"})
    return build_config(cfg, dataclasses.replace(HF, fields=fields), path, derived, arch.defaults)


#: What transformers' generate falls back to (generation/configuration_utils.py, _get_default_generation_params).
GENERATE_DEFAULTS = {"do_sample": False, "temperature": 1.0, "top_p": 1.0, "top_k": 50}
GENERATION_CONFIG = "generation_config.json"


def generation_defaults(gen, path=GENERATION_CONFIG):
    """From a generation_config.json dict: eos_token_ids (when it lists any) and sampling_defaults."""
    if not isinstance(gen, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(gen).__name__}")
    out = {"sampling_defaults": {k: gen[k] if gen.get(k) is not None else v for k, v in GENERATE_DEFAULTS.items()}}
    if gen.get("eos_token_id") is not None:
        out["eos_token_ids"] = gen["eos_token_id"]
    try:  # checked here so that the message names this file
        ModelConfig(vocab_size=1 << 22, hidden_size=2, intermediate_size=1, n_layers=1, n_heads=1, **out)
    except ConfigFieldError as e:
        raise CheckpointError(f"{path}: {e.describe({'eos_token_ids': 'eos_token_id'})}") from None
    return out


def read_generation_config(directory, load_json):
    """The generation_config.json dict of a checkpoint directory, or {} (transformers' fallbacks) without one."""
    path = os.path.join(directory, GENERATION_CONFIG)
    return load_json(path) if os.path.isfile(path) else {}
