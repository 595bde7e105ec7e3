"""``ModelConfig``: a model's hyper-parameters, normalised and validated in one place.

Every way of making a config (the constructor, ``dataclasses.replace``, the
checkpoint readers) goes through ``ModelConfig.__post_init__``, which calls
``validate_fields``.  A rejected field raises ``ConfigFieldError``, which
knows the field, so a checkpoint reader can name it as its file does
(``num_attention_heads`` rather than ``n_heads``).

Sanity limits (``LIMITS``) bound every size before anything is allocated: a
config that claims 10**9 layers is refused here, not after the memory runs out.
"""
import math
from dataclasses import dataclass

from .. import _validate as V
from ..errors import SwarefError
from .architectures import BIASED, MOE_BIASED, ROPE_LAYOUTS
from .rope import SCALINGS

#: Upper bounds on the sizes, far above any released model (Llama 3.1 405B: d 16384,
#: 126 layers, 128 query heads; Gemma 3: vocabulary 262144), far below what exhausts memory.
LIMITS = {"vocab_size": 1 << 22, "hidden_size": 1 << 16, "intermediate_size": 1 << 19, "n_layers": 1 << 12,
          "n_heads": 1 << 12, "n_kv_heads": 1 << 12, "head_dim": 1 << 12, "n_experts": 1 << 10, "top_k": 1 << 10}


class ConfigFieldError(SwarefError):
    """A config field out of its domain.

    ``field``: the ModelConfig field; ``expected``: what it must be, where
    ``{name}`` stands for another field's name; ``got``: the value.
    ``describe(labels)`` words it with the names a file uses.
    """

    def __init__(self, field, expected, got, kind="argument"):
        self.field, self.expected, self.got = field, expected, got
        super().__init__(kind, self.describe({}))

    def describe(self, labels):
        names = _Labels(labels)
        return f"config field {names[self.field]} must be {self.expected.format_map(names)}, got {self.got!r}"


class _Labels(dict):
    def __missing__(self, key):
        return key


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a decoder model (Mistral's graph plus the features below, as data).

    head_dim: default hidden_size // n_heads; n_kv_heads: default n_heads (no GQA);
    windows: an int W or None (full attention) for every layer, or one per layer,
    stored as a tuple of L entries; eos_token_ids: any iterable, stored as a tuple;
    biases: the projections (``architectures.BIASED`` names) that add a bias;
    qk_norm: "" , "head" (q and k RMS-normalised over each head before RoPE) or "all"
    (over the whole projection, before it is split into heads);
    the layer's graph (``CHOICES``): norm kind, which norms exist (``NORM_SLOTS``),
    parallel attention + MLP, the MLP kind and activation, MoE sizes, scales
    (embed_scale multiplies the embeddings, logit_scale the logits, attn_scale
    replaces 1/sqrt(D)); attn_softcap: spec 1.1's soft-cap c on every layer's attention
    scores, final_softcap: c * tanh(logits / c) on the logits (Gemma 2); sinks: every
    layer has a learned sink logit per query head (gpt-oss; spec 1.1, never with
    attn_softcap); glu_alpha and glu_limit (both or neither): gpt-oss's clamped SwiGLU,
    (clamp(u, -limit, limit) + 1) * g sigmoid(alpha g) with g clamped above at limit,
    instead of act(g) * u; nope_full: full-attention layers take no RoPE; arch: the
    model_type it was read as (tensor names only; the forward pass reads the features);
    sampling_defaults: what transformers' ``generate`` would use when the caller gives
    nothing (generation_config.json), a dict stored as sorted (name, value) pairs;
    rope_scaling: {} (plain RoPE) or a dict with rope_type among ``rope.SCALINGS`` and
    its parameters, stored as sorted pairs; rope_dim: the rotated dims of a head (None:
    head_dim; fewer: partial rotary); local_rope_theta: the theta of sliding layers,
    which then take no scaling (None: every layer alike).
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int = None
    head_dim: int = None
    windows: tuple = None
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    rope_layout: str = "half"
    bos_token_id: int = None
    eos_token_ids: tuple = ()
    biases: tuple = ()
    qk_norm: str = ""
    sampling_defaults: tuple = ()
    rope_scaling: tuple = ()
    rope_dim: int = None
    local_rope_theta: float = None
    norm: str = "rms"
    norms: tuple = ("attn", "mlp")
    parallel: bool = False
    mlp: str = "gated"
    act: str = "silu"
    n_experts: int = None
    top_k: int = None
    embed_scale: float = None
    logit_scale: float = None
    attn_scale: float = None
    attn_softcap: float = None
    final_softcap: float = None
    sinks: bool = False
    glu_alpha: float = None
    glu_limit: float = None
    nope_full: bool = False
    arch: str = ""

    def __post_init__(self):
        for name, value in validate_fields(vars(self)).items():
            object.__setattr__(self, name, value)

    @property
    def q_dim(self):
        """Hq * D: the width of the query projection."""
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self):
        """Hkv * D: the width of the key and value projections."""
        return self.n_kv_heads * self.head_dim

    @property
    def q_norm_dim(self):
        """Width of the q norm's weight: D per head, or the whole projection."""
        return self.head_dim if self.qk_norm == "head" else self.q_dim

    @property
    def k_norm_dim(self):
        return self.head_dim if self.qk_norm == "head" else self.kv_dim

    def layer_rope(self, li):
        """(theta, scaling pairs) of layer li's RoPE, or None for a layer without positional encoding."""
        if self.windows[li] is None and self.nope_full:
            return None
        if self.local_rope_theta is not None and self.windows[li] is not None:
            return self.local_rope_theta, ()
        return self.rope_theta, self.rope_scaling

    @property
    def sampling(self):
        """sampling_defaults as a dict (do_sample, temperature, top_p, top_k)."""
        return dict(self.sampling_defaults)


def _size(values, name, default=None):
    val = values.get(name)
    if val is None and default is not None:
        val = default
    if not V.is_int(val) or not 1 <= val <= LIMITS[name]:
        raise ConfigFieldError(name, f"an int in [1, {LIMITS[name]}]", val)
    return int(val)


def _positive(values, name):
    val = values[name]
    if not V.is_real(val) or not math.isfinite(val) or val <= 0:
        raise ConfigFieldError(name, "a finite number > 0", val)
    return float(val)


def window_list(windows, n_layers):
    """Per-layer windows: an int or None (every layer alike) or a list of L ints / Nones -> tuple of L."""
    def one(w, where):
        if w is not None and (not V.is_int(w) or w < 1):
            raise ConfigFieldError("windows", f"an int >= 1 or None{where}", w, kind="window")
        return None if w is None else int(w)

    if windows is None or V.is_int(windows) or isinstance(windows, bool):
        return (one(windows, ""),) * n_layers
    if not isinstance(windows, (list, tuple)):
        raise ConfigFieldError("windows", "an int >= 1, None or a list of them per layer", windows, kind="window")
    if len(windows) != n_layers:
        raise ConfigFieldError("windows", f"one entry per layer ({n_layers} entries)", windows, kind="window")
    return tuple(one(w, f" (entry {i})") for i, w in enumerate(windows))


def _token_ids(ids, name, vocab):
    for t in ids:
        if not V.is_int(t) or not 0 <= t < vocab:
            raise ConfigFieldError(name, f"token ids in [0, {vocab})", t)
    return tuple(int(t) for t in ids)


def validate_fields(values):
    """values: the ModelConfig fields as given -> the same fields normalised; raises ConfigFieldError.

    Sizes are checked against LIMITS before anything is built from them.
    """
    out = {name: _size(values, name) for name in ("vocab_size", "hidden_size", "intermediate_size",
                                                  "n_layers", "n_heads")}
    out["n_kv_heads"] = _size(values, "n_kv_heads", default=out["n_heads"])
    if out["n_heads"] % out["n_kv_heads"]:
        raise ConfigFieldError("n_heads", "a multiple of {n_kv_heads} (" + str(out["n_kv_heads"]) + ")",
                               out["n_heads"], kind="heads")
    if values.get("head_dim") is None and out["hidden_size"] % out["n_heads"]:
        raise ConfigFieldError("head_dim", "given when {hidden_size} is not a multiple of {n_heads}", None)
    out["head_dim"] = _size(values, "head_dim", default=out["hidden_size"] // out["n_heads"])
    if out["head_dim"] % 2:
        raise ConfigFieldError("head_dim", "even (RoPE rotates pairs)", out["head_dim"])
    out["windows"] = window_list(values.get("windows"), out["n_layers"])
    out["rope_theta"] = _positive(values, "rope_theta")
    out["rms_norm_eps"] = _positive(values, "rms_norm_eps")
    if not isinstance(values["tie_word_embeddings"], bool):
        raise ConfigFieldError("tie_word_embeddings", "true or false", values["tie_word_embeddings"])
    out["tie_word_embeddings"] = values["tie_word_embeddings"]
    if values["rope_layout"] not in ROPE_LAYOUTS:
        raise ConfigFieldError("rope_layout", f"one of {ROPE_LAYOUTS}", values["rope_layout"])
    out["rope_layout"] = values["rope_layout"]
    bos = values.get("bos_token_id")
    out["bos_token_id"] = None if bos is None else _token_ids([bos], "bos_token_id", out["vocab_size"])[0]
    eos = values.get("eos_token_ids")
    eos = () if eos is None else (eos,) if V.is_int(eos) else eos
    if not isinstance(eos, (list, tuple)) or len(eos) > out["vocab_size"]:
        raise ConfigFieldError("eos_token_ids", "a token id or a list of token ids", eos)
    out["eos_token_ids"] = _token_ids(eos, "eos_token_ids", out["vocab_size"])
    biases = values.get("biases", ())
    if not isinstance(biases, (list, tuple)) or not set(biases) <= set(BIASED):
        raise ConfigFieldError("biases", f"a list of projections among {BIASED}", biases)
    out["biases"] = tuple(b for b in BIASED if b in biases)
    out.update(_graph(values))
    if out["mlp"] != "moe" and set(out["biases"]) & set(MOE_BIASED):
        raise ConfigFieldError("biases", f"without {MOE_BIASED} when the MLP is not a mixture of experts",
                               out["biases"])
    out["arch"] = str(values.get("arch", ""))
    out["sampling_defaults"] = _sampling_defaults(values.get("sampling_defaults", ()))
    out["rope_scaling"] = _rope_scaling(values.get("rope_scaling", ()))
    rd = values.get("rope_dim")
    if rd is not None and (not V.is_int(rd) or not 2 <= rd <= out["head_dim"] or rd % 2):
        raise ConfigFieldError("rope_dim", f"an even int in [2, head_dim = {out['head_dim']}]", rd)
    out["rope_dim"] = None if rd is None or rd == out["head_dim"] else int(rd)
    out["local_rope_theta"] = None if values.get("local_rope_theta") is None else _positive(values, "local_rope_theta")
    return out


def _rope_scaling(values):
    """{} or {rope_type, its required parameters (finite, > 0), optional ones} -> sorted pairs, defaults filled."""
    p = dict(values) if isinstance(values, (dict, list, tuple)) else None
    if p is None or (p and p.get("rope_type") not in SCALINGS):
        raise ConfigFieldError("rope_scaling", f"empty or with a rope_type among {sorted(SCALINGS)}", values)
    if not p:
        return ()
    required, optional = SCALINGS[p["rope_type"]]
    unknown = set(p) - set(required) - set(optional) - {"rope_type"}
    if unknown:
        raise ConfigFieldError("rope_scaling", f"{p['rope_type']} parameters among {sorted((*required, *optional))}",
                               sorted(unknown))
    for key in required:
        if key not in p:
            raise ConfigFieldError("rope_scaling", f"{p['rope_type']} with {key!r}", values)
        _positive(p, key)
    if p["rope_type"] == "llama3" and p["low_freq_factor"] == p["high_freq_factor"]:
        raise ConfigFieldError("rope_scaling", "llama3 with low_freq_factor != high_freq_factor", values)
    return tuple(sorted(dict(optional, **p).items()))


#: The layer graph's choices (the first is the default), read by layers.decoder_layer.
CHOICES = {"norm": ("rms", "layer", "layer_nobias"), "mlp": ("gated", "plain", "moe"), "act": ("silu", "gelu_tanh"),
           "qk_norm": ("", "head", "all")}
#: Where a layer can have a norm: before attention, on its output, before the MLP, on its output.
NORM_SLOTS = ("attn", "attn_out", "mlp", "mlp_out")


def _graph(values):
    out = {}
    for name, choices in CHOICES.items():
        val = values.get(name, choices[0])
        if val not in choices:
            raise ConfigFieldError(name, f"one of {choices}", val)
        out[name] = val
    norms = values.get("norms", ("attn", "mlp"))
    if not isinstance(norms, (list, tuple)) or not set(norms) <= set(NORM_SLOTS):
        raise ConfigFieldError("norms", f"a list among {NORM_SLOTS}", norms)
    out["norms"] = tuple(n for n in NORM_SLOTS if n in norms)
    for name in ("parallel", "nope_full", "sinks"):
        if not isinstance(values.get(name, False), bool):
            raise ConfigFieldError(name, "true or false", values[name])
        out[name] = values.get(name, False)
    for name in ("embed_scale", "logit_scale", "attn_scale", "attn_softcap", "final_softcap", "glu_alpha",
                 "glu_limit"):
        out[name] = None if values.get(name) is None else _positive(values, name)
    if out["sinks"] and out["attn_softcap"] is not None:
        # spec rule 3 refuses the pair: no model uses both, so whether the cap applies to the sink is undefined
        raise ConfigFieldError("sinks", "false when {attn_softcap} is given (spec 1.1 defines them apart)", True)
    if (out["glu_alpha"] is None) != (out["glu_limit"] is None):
        raise ConfigFieldError("glu_limit", "given together with {glu_alpha} (the clamped SwiGLU needs both)",
                               out["glu_limit"])
    if out["glu_alpha"] is not None and (out["mlp"] == "plain" or out["act"] != "silu"):
        raise ConfigFieldError("glu_alpha", "None unless the MLP is gated (gated or moe) with act silu",
                               out["glu_alpha"])
    moe = out["mlp"] == "moe"
    out["n_experts"] = _size(values, "n_experts") if moe else None
    out["top_k"] = _size(values, "top_k") if moe else None
    if moe and out["top_k"] > out["n_experts"]:
        raise ConfigFieldError("top_k", "at most {n_experts} (" + str(out["n_experts"]) + ")", out["top_k"])
    return out


#: generation_config.json keys swaref reads, with the checks transformers' generate makes.
SAMPLING_KEYS = {"do_sample": lambda v: isinstance(v, bool),
                 "temperature": lambda v: V.is_real(v)
                 and math.isfinite(v) and v >= 0,
                 "top_p": lambda v: V.is_real(v) and 0 < v <= 1,
                 "top_k": lambda v: V.is_int(v) and v >= 0}


def _sampling_defaults(values):
    items = dict(values).items() if isinstance(values, (dict, list, tuple)) else None
    if items is None:
        raise ConfigFieldError("sampling_defaults", "a dict", values)
    for name, val in items:
        if name not in SAMPLING_KEYS or not SAMPLING_KEYS[name](val):
            raise ConfigFieldError("sampling_defaults", f"entries among {sorted(SAMPLING_KEYS)} in their ranges",
                                   {name: val})
    return tuple(sorted(items))
