"""A model's tensors: ``LayerWeights`` and ``Model``, each tensor declared once with its shape and file names.

Every weight field carries, as dataclass metadata, its shape in config
dimensions and its name in each checkpoint format (``architectures.FORMATS``);
``expected_shapes``, the checkpoint loader and ``random_model`` all read that
one declaration.  Weights are float32 in Hugging Face's [out, in] orientation.
"""
import math
from dataclasses import dataclass, field, fields

import numpy as np

from .. import _validate as V
from ..errors import SwarefError, SwarefTypeError
from .config import ModelConfig


def _tensor(shape, hf, mistral=None, when=None):
    """A weight field: shape as ModelConfig attribute names, its name in each checkpoint format
    (None: the format has no such tensor) and, for a tensor only some configs have, ``when(cfg)``.

    Architectures that name a tensor otherwise say so in ``architectures.Architecture.names``.
    """
    meta = {"shape": shape, "names": {"hf": hf, "mistral": mistral}}
    if when is not None:
        meta["when"] = when
    return field(default=None, metadata=meta)


def _bias(of, shape, hf):
    return _tensor(shape, hf, when=lambda cfg: of in cfg.biases)


def _norm(slot, hf, mistral=None):
    return _tensor(("hidden_size",), hf, mistral, when=lambda cfg: slot in cfg.norms)


def _norm_bias(slot, hf):
    return _tensor(("hidden_size",), hf, when=lambda cfg: slot in cfg.norms and cfg.norm == "layer")


def _present(f, cfg):
    return "when" not in f.metadata or f.metadata["when"](cfg)


def _dense(cfg):
    return cfg.mlp != "moe"


@dataclass(frozen=True, eq=False)
class LayerWeights:
    """One decoder layer's weights: d hidden, I intermediate, Hq / Hkv heads, D head_dim, E experts.

    Which tensors a layer has depends on its config (norm slots, MLP kind,
    biases, q/k norms); the others are None.
    """

    attn_norm: np.ndarray = _norm("attn", "input_layernorm.weight", "attention_norm.weight")
    attn_norm_b: np.ndarray = _norm_bias("attn", "input_layernorm.bias")
    wq: np.ndarray = _tensor(("q_dim", "hidden_size"), "self_attn.q_proj.weight", "attention.wq.weight")
    wk: np.ndarray = _tensor(("kv_dim", "hidden_size"), "self_attn.k_proj.weight", "attention.wk.weight")
    wv: np.ndarray = _tensor(("kv_dim", "hidden_size"), "self_attn.v_proj.weight", "attention.wv.weight")
    wo: np.ndarray = _tensor(("hidden_size", "q_dim"), "self_attn.o_proj.weight", "attention.wo.weight")
    attn_out_norm: np.ndarray = _norm("attn_out", "post_attention_layernorm.weight")
    mlp_norm: np.ndarray = _norm("mlp", "post_attention_layernorm.weight", "ffn_norm.weight")
    mlp_norm_b: np.ndarray = _norm_bias("mlp", "post_attention_layernorm.bias")
    w_gate: np.ndarray = _tensor(("intermediate_size", "hidden_size"), "mlp.gate_proj.weight",
                                 "feed_forward.w1.weight", when=lambda cfg: cfg.mlp == "gated")
    w_up: np.ndarray = _tensor(("intermediate_size", "hidden_size"), "mlp.up_proj.weight", "feed_forward.w3.weight",
                               when=_dense)
    w_down: np.ndarray = _tensor(("hidden_size", "intermediate_size"), "mlp.down_proj.weight",
                                 "feed_forward.w2.weight", when=_dense)
    mlp_out_norm: np.ndarray = _norm("mlp_out", "post_feedforward_layernorm.weight")
    # Mixture of experts: router [E, d]; experts stacked [E, I, d] / [E, d, I].  A name with "{e}" is one
    # tensor per expert in the file (what transformers 5.24's save_pretrained writes for Mixtral).
    router: np.ndarray = _tensor(("n_experts", "hidden_size"), "block_sparse_moe.gate.weight",
                                 when=lambda cfg: not _dense(cfg))
    experts_gate: np.ndarray = _tensor(("n_experts", "intermediate_size", "hidden_size"),
                                       "block_sparse_moe.experts.{e}.w1.weight", when=lambda cfg: not _dense(cfg))
    experts_up: np.ndarray = _tensor(("n_experts", "intermediate_size", "hidden_size"),
                                     "block_sparse_moe.experts.{e}.w3.weight", when=lambda cfg: not _dense(cfg))
    experts_down: np.ndarray = _tensor(("n_experts", "hidden_size", "intermediate_size"),
                                       "block_sparse_moe.experts.{e}.w2.weight", when=lambda cfg: not _dense(cfg))
    bq: np.ndarray = _bias("wq", ("q_dim",), "self_attn.q_proj.bias")
    bk: np.ndarray = _bias("wk", ("kv_dim",), "self_attn.k_proj.bias")
    bv: np.ndarray = _bias("wv", ("kv_dim",), "self_attn.v_proj.bias")
    bo: np.ndarray = _bias("wo", ("hidden_size",), "self_attn.o_proj.bias")
    b_gate: np.ndarray = _bias("w_gate", ("intermediate_size",), "mlp.gate_proj.bias")
    b_up: np.ndarray = _bias("w_up", ("intermediate_size",), "mlp.up_proj.bias")
    b_down: np.ndarray = _bias("w_down", ("hidden_size",), "mlp.down_proj.bias")
    b_router: np.ndarray = _bias("router", ("n_experts",), None)
    b_experts_gate: np.ndarray = _bias("experts_gate", ("n_experts", "intermediate_size"), None)
    b_experts_up: np.ndarray = _bias("experts_up", ("n_experts", "intermediate_size"), None)
    b_experts_down: np.ndarray = _bias("experts_down", ("n_experts", "hidden_size"), None)
    # gpt-oss: one learned sink logit per query head (spec 1.1), finite (checked with the weights).
    sinks: np.ndarray = _tensor(("n_heads",), "self_attn.sinks", when=lambda cfg: cfg.sinks)
    q_norm: np.ndarray = _tensor(("q_norm_dim",), "self_attn.q_norm.weight", when=lambda cfg: cfg.qk_norm != "")
    k_norm: np.ndarray = _tensor(("k_norm_dim",), "self_attn.k_norm.weight", when=lambda cfg: cfg.qk_norm != "")


#: The layer tensors' field names, in declaration order (the optional ones included).
LAYER_TENSORS = tuple(f.name for f in fields(LayerWeights))


@dataclass(frozen=True, eq=False)
class Model:
    """A config plus float32 weights: embed [V, d], layers [L], final_norm [d], lm_head [V, d].

    With tied embeddings ``lm_head`` is ``embed`` (the same array).  The
    weights are checked against the config when the Model is made.
    """

    config: ModelConfig
    embed: np.ndarray
    layers: tuple
    final_norm: np.ndarray
    lm_head: np.ndarray
    final_norm_b: np.ndarray = None  # LayerNorm's bias (norm "layer")

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        check_weights(self)

    @property
    def n_params(self):
        n = self.embed.size + self.final_norm.size + (0 if self.final_norm_b is None else self.final_norm_b.size)
        n += sum(getattr(lw, name).size for lw in self.layers for name in LAYER_TENSORS
                 if getattr(lw, name) is not None)
        if self.lm_head is not self.embed:
            n += self.lm_head.size
        return n


@dataclass(frozen=True)
class _Top:
    """Model's own tensors (the layers aside), declared like LayerWeights'."""

    embed: np.ndarray = _tensor(("vocab_size", "hidden_size"), "model.embed_tokens.weight", "tok_embeddings.weight")
    final_norm: np.ndarray = _tensor(("hidden_size",), "model.norm.weight", "norm.weight")
    lm_head: np.ndarray = _tensor(("vocab_size", "hidden_size"), "lm_head.weight", "output.weight")
    final_norm_b: np.ndarray = _tensor(("hidden_size",), "model.norm.bias", when=lambda cfg: cfg.norm == "layer")


TOP_TENSORS = tuple(f.name for f in fields(_Top))
_TOP_FIELDS = {f.name: f for f in fields(_Top)}
_LAYER_FIELDS = {f.name: f for f in fields(LayerWeights)}


def expected_shapes(cfg):
    """-> ({top name: shape}, {layer tensor name: shape}) for the config's dimensions and features.

    A layer tensor the config does not have (a bias, a q/k norm) is left out.
    """
    def shapes(flds):
        return {name: tuple(getattr(cfg, dim) for dim in f.metadata["shape"]) for name, f in flds.items()
                if _present(f, cfg)}
    return shapes(_TOP_FIELDS), shapes(_LAYER_FIELDS)


def tensor_names(fmt, overrides=None):
    """-> ({top name: file name}, {layer tensor name: file name within a layer}) for format ``fmt``.

    overrides: {tensor name: file name} of an architecture that names some tensors otherwise.
    """
    def names(flds):
        out = {n: f.metadata["names"][fmt] for n, f in flds.items() if f.metadata["names"][fmt]}
        out.update({n: v for n, v in (overrides or {}).items() if n in flds})
        return out
    return names(_TOP_FIELDS), names(_LAYER_FIELDS)


def check_weights(model):
    """Every weight a float32 numpy array of the shape the config implies (naming the first that is not)."""
    cfg = model.config
    if not isinstance(cfg, ModelConfig):
        raise SwarefTypeError("argument", f"config must be a ModelConfig, got {type(cfg).__name__}")
    top, layer = expected_shapes(cfg)

    def one(arr, name, shape):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float32:
            got = f"{arr.dtype} array" if isinstance(arr, np.ndarray) else type(arr).__name__
            raise SwarefTypeError("dtype", f"weight {name} must be a float32 numpy array, got {got}")
        if arr.shape != shape:
            raise SwarefError("shape", f"weight {name} must have shape {shape}, got {arr.shape}")

    for name, shape in top.items():
        one(getattr(model, name), name, shape)
    if "final_norm_b" not in top and model.final_norm_b is not None:
        raise SwarefError("argument", "weight final_norm_b must be None: the config has no such tensor")
    if len(model.layers) != cfg.n_layers:
        raise SwarefError("argument", f"model needs {cfg.n_layers} layers, got {len(model.layers)}")
    for li, lw in enumerate(model.layers):
        if not isinstance(lw, LayerWeights):
            raise SwarefTypeError("argument", f"layers[{li}] must be a LayerWeights, got {type(lw).__name__}")
        for name, shape in layer.items():
            one(getattr(lw, name), f"layers[{li}].{name}", shape)
        for name in LAYER_TENSORS:
            if name not in layer and getattr(lw, name) is not None:
                raise SwarefError("argument", f"weight layers[{li}].{name} must be None: the config has no such "
                                              f"tensor")
        if lw.sinks is not None and not np.isfinite(lw.sinks).all():
            # The layers run attention's unchecked cores, so the sinks are checked here, once (spec rule 3).
            raise SwarefError("sinks", f"weight layers[{li}].sinks must be finite, got {lw.sinks.tolist()}")


def random_model(cfg, seed=0, scale=0.5):
    """A model with random float32 weights (normal, std scale/sqrt(fan_in)); norms near 1.

    For tests and ``swaref generate --tiny``: its output is noise.
    """
    rng = np.random.default_rng(V.check_int(seed, "seed", minimum=0))
    top, layer = expected_shapes(cfg)

    def w(shape, name=""):
        if len(shape) == 1:  # a norm's weight near 1, a bias near 0
            bias = name.startswith("b") or name.endswith("_b")
            return ((0.0 if bias else 1.0) + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        return (scale / math.sqrt(shape[-1]) * rng.standard_normal(shape)).astype(np.float32)

    embed = rng.standard_normal(top["embed"]).astype(np.float32)
    layers = [LayerWeights(**{name: w(shape, name) for name, shape in layer.items()}) for _ in range(cfg.n_layers)]
    lm_head = embed if cfg.tie_word_embeddings else w(top["lm_head"])
    final_b = w(top["final_norm_b"], "final_norm_b") if "final_norm_b" in top else None
    return Model(cfg, embed, layers, w(top["final_norm"]), lm_head, final_b)
