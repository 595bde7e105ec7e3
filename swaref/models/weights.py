"""A model's tensors: ``LayerWeights`` and ``Model``, each tensor declared once with its shape and file names.

Every weight field carries, as dataclass metadata, its shape in config
dimensions and its name in each checkpoint format (``architectures.FORMATS``);
``expected_shapes``, the checkpoint loader and ``random_model`` all read that
one declaration.  Weights are in Hugging Face's [out, in] orientation, float32, or (a model
made with dtype "bfloat16") every matrix bfloat16 as uint16 bits (``bf16``) and every vector
(norms, biases, sinks) float32.
"""
import math
from dataclasses import dataclass, field, fields

import numpy as np

from .. import _validate as V
from ..errors import SwarefError, SwarefTypeError
from .bf16 import BF16, is_bf16, to_bfloat16, widen
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
    """A config plus weights: embed [V, d], layers [L], final_norm [d], lm_head [V, d].

    ``dtype`` is "float32" (every weight float32) or "bfloat16" (every matrix, embed and lm_head
    included, bfloat16 bits; vectors float32).

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
    def dtype(self):
        """"float32" or "bfloat16": the matrices' precision (vectors are float32 either way)."""
        return "bfloat16" if is_bf16(self.embed) else "float32"

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
    """Every weight a numpy array of the shape the config implies and of the model's dtype (the
    embedding's: float32 everywhere, or bfloat16 bits in every matrix and float32 in every vector),
    naming the first that is not."""
    cfg = model.config
    if not isinstance(cfg, ModelConfig):
        raise SwarefTypeError("argument", f"config must be a ModelConfig, got {type(cfg).__name__}")
    top, layer = expected_shapes(cfg)
    bf16 = is_bf16(model.embed)

    def one(arr, name, shape):
        want = BF16 if bf16 and len(shape) >= 2 else np.dtype(np.float32)
        if not isinstance(arr, np.ndarray) or arr.dtype != want:
            got = f"{arr.dtype} array" if isinstance(arr, np.ndarray) else type(arr).__name__
            what = "bfloat16 (uint16 bits)" if want == BF16 else "float32"
            why = " (a bfloat16 model: its embedding is bfloat16)" if bf16 else ""
            raise SwarefTypeError("dtype", f"weight {name} must be a {what} numpy array, got {got}{why}")
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


def random_model(cfg, seed=0, scale=0.5, dtype="float32"):
    """A model with random weights (normal, std scale/sqrt(fan_in)); norms near 1.

    dtype "bfloat16": the same float32 draws, matrices rounded to bfloat16 (as ``model_as`` rounds).
    The matrices are drawn straight into one arena (``arena_views``).

    For tests and ``swaref generate --tiny``: its output is noise.
    """
    rng = np.random.default_rng(V.check_int(seed, "seed", minimum=0))
    check_dtype(dtype)
    top, layer = expected_shapes(cfg)
    views = arena_views(arena_layout(cfg, dtype))

    def w(shape, name="", key=None):
        if len(shape) == 1:  # a norm's weight near 1, a bias near 0
            bias = name.startswith("b") or name.endswith("_b")
            return ((0.0 if bias else 1.0) + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        return _put(views, key, narrow((scale / math.sqrt(shape[-1]) * rng.standard_normal(shape)).astype(np.float32),
                                       dtype))

    # The draws in this order (embedding, layers, LM head, norms) are what seeds have always meant.
    embed = _put(views, "embed", narrow(rng.standard_normal(top["embed"]).astype(np.float32), dtype))
    layers = [LayerWeights(**{name: w(shape, name, (i, name)) for name, shape in layer.items()})
              for i in range(cfg.n_layers)]
    lm_head = embed if cfg.tie_word_embeddings else w(top["lm_head"], key="lm_head")
    final_b = w(top["final_norm_b"], "final_norm_b") if "final_norm_b" in top else None
    return Model(cfg, embed, layers, w(top["final_norm"]), lm_head, final_b)


#: The weight precisions a Model holds (``Model.dtype``).
DTYPES = ("float32", "bfloat16")


def check_dtype(dtype):
    """A weight precision name from DTYPES."""
    if dtype not in DTYPES:
        raise SwarefError("argument", f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    return dtype


def narrow(arr, dtype):
    """One tensor in a model of ``dtype``: a matrix (ndim >= 2) rounded to bfloat16 for "bfloat16"
    (nearest even), everything else float32 as given."""
    return to_bfloat16(arr) if dtype == "bfloat16" and arr.ndim >= 2 and not is_bf16(arr) else arr


def model_as(model, dtype):
    """``model`` with its matrices in ``dtype``: "bfloat16" rounds float32 matrices to nearest even
    (a bfloat16 model is returned as is); "float32" widens bfloat16 matrices exactly.  The converted
    matrices are written into one arena (``arena_views``), one at a time."""
    dtype = check_dtype(dtype)
    if model.dtype == dtype:
        return model
    return pack_weights(model, dtype)


# Where the matrices live.  A decode step streams every matrix once, and a stream from 4 KiB pages
# runs slower than one from 2 MiB huge pages (docs/performance.md, "Weights in one arena": 6-13 %
# for matrices of 2.4 MiB, each its own allocation).  NumPy advises huge pages (MADV_HUGEPAGE) only
# for an allocation of 4 MiB or more, and the kernel backs only its 2 MiB-aligned part with them
# (numpy/_core/src/multiarray/alloc.c, indicate_hugepages, NumPy 2.x), so most of a model's q, k,
# v and o matrices, allocated one by one, sat in 4 KiB pages.  The loaders therefore write every
# matrix into one buffer from a 2 MiB boundary, in the order a decode step reads them.  The
# values are untouched: only the addresses change.

#: The arena's start (one 2 MiB huge page) and each matrix's start within it (one 4 KiB page).
ARENA_ALIGN, MATRIX_ALIGN = 2 << 20, 4096


def arena_layout(cfg, dtype="float32"):
    """The model's matrices (every weight of ndim >= 2), in the order a decode step reads them
    -> [(key, shape, dtype)]: "embed", each layer's (i, name) in declaration order (q, k, v, o,
    the MLP's), then "lm_head" unless tied.  Keys are the checkpoint loader's slots."""
    mat = BF16 if check_dtype(dtype) == "bfloat16" else np.dtype(np.float32)
    top, layer = expected_shapes(cfg)
    out = [("embed", top["embed"], mat)]
    out += [((i, name), shape, mat) for i in range(cfg.n_layers) for name, shape in layer.items() if len(shape) >= 2]
    if not cfg.tie_word_embeddings:
        out.append(("lm_head", top["lm_head"], mat))
    return out


def _padded(nbytes):
    return -(-nbytes // MATRIX_ALIGN) * MATRIX_ALIGN


def arena_views(layout):
    """layout: [(key, shape, dtype)] -> {key: uninitialised C-contiguous array}: consecutive
    views of one buffer, the first at a multiple of ARENA_ALIGN, each at a multiple of MATRIX_ALIGN."""
    sizes = [_padded(math.prod(shape) * np.dtype(dt).itemsize) for _, shape, dt in layout]
    buf = np.empty(sum(sizes) + ARENA_ALIGN, dtype=np.uint8)
    at = -buf.ctypes.data % ARENA_ALIGN
    views = {}
    for (key, shape, dt), size in zip(layout, sizes):
        n = math.prod(shape) * np.dtype(dt).itemsize
        views[key] = buf[at:at + n].view(dt).reshape(shape)
        at += size
    return views


def _put(views, key, arr):
    """arr copied into its arena view -> the view."""
    out = views[key]
    out[...] = arr
    return out


def pack_weights(model, dtype=None):
    """``model`` (of ``dtype``, default its own) with every matrix copied into one arena
    (``arena_views``), converted one at a time as ``model_as`` converts: the same values at new
    addresses.  load_model, random_model and model_as return packed models; a Model made by hand
    holds the arrays it was given, and this packs it."""
    dtype = check_dtype(model.dtype if dtype is None else dtype)
    conv = (lambda a: narrow(a, dtype)) if dtype == "bfloat16" else (lambda a: widen(a) if is_bf16(a) else a)
    views = arena_views(arena_layout(model.config, dtype))

    def one(key, a):
        return _put(views, key, conv(a)) if key in views else a
    layers = [LayerWeights(**{n: one((i, n), getattr(lw, n)) for n in LAYER_TENSORS})
              for i, lw in enumerate(model.layers)]
    embed = one("embed", model.embed)
    lm_head = one("lm_head", model.lm_head) if "lm_head" in views else \
        embed if model.lm_head is model.embed else conv(model.lm_head)
    return Model(model.config, embed, layers, model.final_norm, lm_head, model.final_norm_b)
