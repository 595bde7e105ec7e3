"""One decoder layer: its norms, the attention block (GQA + RoPE + swaref's cache), its MLP, and how they connect.

What differs between architectures is read from the config (``ModelConfig``)
and from which tensors the layer has: the norm kind (RMSNorm, LayerNorm with or
without bias) and which of the four norm slots exist (``config.NORM_SLOTS``),
sequential or parallel attention + MLP, a gated (SwiGLU / GeGLU), plain or
mixture-of-experts MLP, biases, q/k norms, the attention scale and each layer's
RoPE.  ``decoder_layer`` is the one path.

Activations are float32; the matrices are float32 or bfloat16 (``bf16``: uint16 bits), multiplied
by ``linear`` with float32 accumulation.  Dimension names: T tokens, N packed tokens of B sequences, d
hidden size, I intermediate size, Hq / Hkv heads, D head_dim, E experts.
"""
import numpy as np

from .. import _validate as V
from ..errors import SwarefError
from ..prefill import _decode, _prefill_chunk
from .bf16 import as_float32
from .rope import StepRotations, rotate


def rms_norm(x, weight, eps, backend="reference"):
    """x: [..., d], weight: [d]  ->  [..., d] float32.

    weight * x / sqrt(mean(x^2) + eps); the mean is accumulated in float64
    (transformers does it in float32; the difference is far below 1e-6).  backend "cython" with
    x [..., d] (ndim >= 2): swaref._linear.rms_norm, the same formula in one compiled pass (its
    float64 sum runs in index order, NumPy's pairwise: the float32 result differs only in a ~1e-8
    chance case).
    """
    if backend == "cython" and x.ndim >= 2:
        return _linear_kernel().rms_norm(x.reshape(-1, x.shape[-1]), weight, eps).reshape(x.shape)
    ms = np.mean(np.square(x, dtype=np.float64), axis=-1, keepdims=True)
    return (x * (1.0 / np.sqrt(ms + eps)).astype(np.float32)) * weight


def layer_norm(x, weight, bias, eps):
    """x: [..., d] -> weight * (x - mean) / sqrt(var + eps) (+ bias), the statistics in float64."""
    x64 = x.astype(np.float64)
    centred = x64 - x64.mean(axis=-1, keepdims=True)
    y = (centred / np.sqrt(np.mean(centred * centred, axis=-1, keepdims=True) + eps)).astype(np.float32) * weight
    return y if bias is None else y + bias


def norm(x, weight, bias, cfg, backend="reference"):
    """The config's norm kind: "rms", or "layer" / "layer_nobias" (LayerNorm; the bias when it has one)."""
    if cfg.norm == "rms":
        return rms_norm(x, weight, cfg.rms_norm_eps, backend)
    return layer_norm(x, weight, bias, cfg.rms_norm_eps)


def silu(x):
    """x: any shape -> x * sigmoid(x), computed stably for large |x| (float32):
    x * (0.5 * (1 + tanh(0.5 x))), each operation rounded in turn, in one scratch array."""
    t = np.multiply(x, 0.5)
    np.tanh(t, out=t)
    t += 1.0
    t *= 0.5
    t *= x
    return t


def gelu_tanh(x):
    """GELU's tanh approximation (transformers' gelu_pytorch_tanh): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + np.tanh(np.float32(np.sqrt(2.0 / np.pi)) * (x + np.float32(0.044715) * x * x * x)))


ACTIVATIONS = {"silu": silu, "gelu_tanh": gelu_tanh}


_LINEAR = []


def _linear_kernel():
    """swaref._linear, imported once (a decode step calls it ~100 times)."""
    if not _LINEAR:
        try:
            from .. import _linear
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise SwarefError("backend", f"backend='cython' needs the compiled extension swaref._linear, which is "
                                         f"not built ({exc}); run `python setup.py build_ext --inplace`") from None
        _LINEAR.append(_linear)
    return _LINEAR[0]


def linear(x, w, b=None, backend="reference", num_threads=None):
    """x: [T, in], w: [out, in] float32 or bfloat16 bits, b: [out] or None  ->  x w^T (+ b), float32.

    backend "cython": swaref._linear (its own streaming kernel for a few tokens, BLAS for more);
    "reference": NumPy, bfloat16 widened exactly first.
    """
    if backend == "cython":
        return _linear_kernel().linear(x, w, b, num_threads)
    y = x @ as_float32(w).T
    return y if b is None else y + b


def glu(g, u, cfg, act):
    """g, u: [T, I] (the gate and up projections)  ->  [T, I]: act(g) * u, or, with ``cfg.glu_limit``,
    gpt-oss's clamped SwiGLU (GptOssExperts._apply_gate): g clamped above at the limit, u to
    [-limit, limit], then g * sigmoid(alpha g) * (u + 1)."""
    if cfg.glu_limit is None:
        y = act(g)          # a new array (every activation's result): scaled in place
        y *= u
        return y
    lim, alpha = np.float32(cfg.glu_limit), np.float32(cfg.glu_alpha)
    g, u = np.minimum(g, lim), np.clip(u, -lim, lim)
    return g * (0.5 * (1.0 + np.tanh(0.5 * alpha * g))) * (u + np.float32(1.0))  # sigmoid(z) = (1 + tanh(z/2)) / 2


def swiglu_mlp(x, lw, cfg, act=silu, backend="reference", num_threads=None):
    """x: [T, d]  ->  [T, d]:  w_down glu(w_gate x, w_up x), each with its bias if it has one."""
    g = linear(x, lw.w_gate, lw.b_gate, backend, num_threads)
    u = linear(x, lw.w_up, lw.b_up, backend, num_threads)
    return linear(glu(g, u, cfg, act), lw.w_down, lw.b_down, backend, num_threads)


def _row(b, e):
    """Expert e's bias, float32: stacked expert biases [E, out] are matrices to the loader, so a
    bfloat16 model holds them as bfloat16 bits (widened here, exactly; added raw they were integers)."""
    return None if b is None else as_float32(b[e])


def moe_mlp(x, lw, cfg, act, backend="reference", num_threads=None):
    """Mixture of experts: each token takes the top_k of the router's E logits (plus its bias, gpt-oss),
    weighted by a softmax over those k logits, and sums its experts' gated MLPs (biased in gpt-oss).
    x: [T, d] -> [T, d].

    Mixtral's router (softmax over all E, keep the top_k, renormalise) and gpt-oss's (top_k of the
    logits, softmax over them) are the same weights: p_i / sum_top p_j = exp(l_i) / sum_top exp(l_j),
    and the top_k of the probabilities are the top_k of the logits.  Computed once, in float64.
    """
    logits = linear(x, lw.router, lw.b_router, backend, num_threads).astype(np.float64)            # [T, E]
    top = np.argsort(-logits, axis=-1, kind="stable")[:, : cfg.top_k]        # [T, k]
    chosen = np.take_along_axis(logits, top, axis=-1)
    w = np.exp(chosen - chosen.max(axis=-1, keepdims=True))
    w = (w / w.sum(axis=-1, keepdims=True)).astype(np.float32)
    out = np.zeros_like(x)
    for e in np.unique(top):
        rows, slot = np.nonzero(top == e)
        xe = x[rows]
        h = glu(linear(xe, lw.experts_gate[e], _row(lw.b_experts_gate, e), backend, num_threads),
                linear(xe, lw.experts_up[e], _row(lw.b_experts_up, e), backend, num_threads), cfg, act)
        y = linear(h, lw.experts_down[e], _row(lw.b_experts_down, e), backend, num_threads)
        np.add.at(out, rows, y * w[rows, slot][:, None])
    return out


def mlp(x, lw, cfg, backend="reference", num_threads=None):
    """The config's MLP kind: "gated" (SwiGLU / GeGLU), "plain" (w_down act(w_up x)) or "moe"."""
    act = ACTIVATIONS[cfg.act]
    if cfg.mlp == "gated":
        return swiglu_mlp(x, lw, cfg, act, backend, num_threads)
    if cfg.mlp == "plain":
        return linear(act(linear(x, lw.w_up, lw.b_up, backend, num_threads)), lw.w_down, lw.b_down, backend,
                      num_threads)
    return moe_mlp(x, lw, cfg, act, backend, num_threads)


def qkv_projection(x, lw, cfg, rotation, backend="reference", num_threads=None):
    """x: [T, d], rotation: this layer's RoPE tables for the step's positions (``rope.rotation``), or None
    (no positional encoding)  ->  q [T, Hq, D], k [T, Hkv, D] (both rotated), v [T, Hkv, D].

    Biases are added when the layer has them; q and k are RMS-normalised over
    each head's D (``qk_norm`` "head", Qwen3, Gemma 3) or over the whole
    projection ("all", OLMo) before RoPE.
    """
    T = x.shape[0]
    D = cfg.head_dim
    q, k = linear(x, lw.wq, lw.bq, backend, num_threads), linear(x, lw.wk, lw.bk, backend, num_threads)
    if cfg.qk_norm == "all":
        q, k = rms_norm(q, lw.q_norm, cfg.rms_norm_eps, backend), rms_norm(k, lw.k_norm, cfg.rms_norm_eps, backend)
    q, k = q.reshape(T, cfg.n_heads, D), k.reshape(T, cfg.n_kv_heads, D)
    v = np.ascontiguousarray(linear(x, lw.wv, lw.bv, backend, num_threads).reshape(T, cfg.n_kv_heads, D))
    if cfg.qk_norm == "head":
        q, k = rms_norm(q, lw.q_norm, cfg.rms_norm_eps, backend), rms_norm(k, lw.k_norm, cfg.rms_norm_eps, backend)
    if rotation is not None:
        q, k = rotate(q, rotation), rotate(k, rotation)
    return np.ascontiguousarray(q, dtype=np.float32), np.ascontiguousarray(k, dtype=np.float32), v


def attention_block(x, lw, cfg, segments, caches, backend="reference", num_threads=None, rotation=None):
    """The attention half of a layer for B sequences packed along the token axis.

    x: [N, d] (normalised input), segments: list of (offset, length, start position)
    per sequence, caches: that layer's cache per sequence, rotation: the layer's RoPE tables for
    the packed tokens' positions (``rope.rotation``) or None  ->  [N, d]

    Projections run once on the packed tokens; attention runs per sequence on
    its own cache: decode_step's core (write, then attend) for a single generated
    token, prefill's (attend, then write) for a chunk of prompt tokens.  The
    caller has validated every cache of every layer (generation.check_step).
    """
    q, k, v = qkv_projection(x, lw, cfg, rotation, backend, num_threads)
    out = attend_segments(q, k, v, lw, cfg, segments, caches, backend, num_threads)
    return linear(out.reshape(x.shape[0], -1), lw.wo, lw.bo, backend, num_threads)


def attend_segments(q, k, v, lw, cfg, segments, caches, backend="reference", num_threads=None):
    """q: [N, Hq, D], k, v: [N, Hkv, D] of B sequences packed along the token axis  ->  [N, Hq, D]:
    each sequence's attention on its own cache (decode: write, then attend; a chunk of prompt
    tokens: attend, then write)."""
    scale = V.check_scale(cfg.attn_scale, cfg.head_dim)        # None: 1/sqrt(D), as the public calls take it
    outs = []
    for (off, n, start), cache in zip(segments, caches):
        sl = slice(off, off + n)
        # The step was validated once for every layer (generation.check_step, with every cache
        # held), so the unchecked cores of decode_step and prefill run here, not the public calls.
        step = _decode if n == 1 and cache.next_position is not None else _prefill_chunk
        # One model chunk is one attention chunk: the chunking is decided once, for every layer.
        # Spec 1.1's variants: the config's soft-cap (Gemma 2), the layer's learned sinks (gpt-oss; checked
        # finite when the Model was made, weights.check_weights).
        outs.append(step(q[sl], k[sl], v[sl], cache, start, scale, backend, num_threads, cfg.attn_softcap,
                         lw.sinks))
    return outs[0] if len(outs) == 1 else np.concatenate(outs)   # one sequence (decode): no copy


def decoder_layer(h, lw, cfg, li, segments, caches, backend="reference", num_threads=None, rotations=None):
    """h: [N, d] residual stream -> [N, d] after layer li.

    rotations: the step's RoPE tables (``rope.StepRotations``), shared by the layers of one step so
    that cos/sin are computed once per distinct RoPE config, not per layer and per q/k (None: made here).

    Each norm slot is applied only where the layer has it: "attn" before
    attention (Mistral's input_layernorm), "attn_out" on attention's output
    (Gemma 3, OLMo), "mlp" before the MLP, "mlp_out" on the MLP's output.  With
    ``parallel`` (Cohere) attention and MLP read the same normalised input and
    are added to the residual together.
    """
    if rotations is None:
        rotations = StepRotations(cfg, segments)
    if backend == "cython" and h.shape[0] <= _linear_kernel().SMALL_T and fused_decode(cfg, lw):
        return _fused_decoder_layer(h, lw, cfg, segments, caches, num_threads, rotations.layer(li))
    x = h if lw.attn_norm is None else norm(h, lw.attn_norm, lw.attn_norm_b, cfg, backend)
    a = attention_block(x, lw, cfg, segments, caches, backend, num_threads, rotations.layer(li))
    if cfg.parallel:
        return h + a + mlp(x, lw, cfg, backend, num_threads)
    if lw.attn_out_norm is not None:
        a = norm(a, lw.attn_out_norm, None, cfg, backend)
    h = h + a
    m = mlp(h if lw.mlp_norm is None else norm(h, lw.mlp_norm, lw.mlp_norm_b, cfg, backend), lw, cfg, backend,
            num_threads)
    if lw.mlp_out_norm is not None:
        m = norm(m, lw.mlp_out_norm, None, cfg, backend)
    return h + m


def fused_decode(cfg, lw):
    """True when ``_fused_decoder_layer`` runs layer ``lw``: RMSNorm (wherever the layer has norms,
    q/k norms included), a gated MLP, attention and MLP in sequence (not Cohere's parallel block,
    LayerNorm, plain or mixture-of-experts MLPs)."""
    return cfg.norm == "rms" and cfg.mlp == "gated" and not cfg.parallel


def _fused_decoder_layer(h, lw, cfg, segments, caches, num_threads, rotation):
    """decoder_layer for a few tokens (N <= swaref._linear.SMALL_T: a decode step) of a
    ``fused_decode`` layer on the compiled backend, bit for bit: the norms, projections, RoPE and
    residual adds in three compiled calls (swaref._linear) instead of ~20 NumPy ones."""
    K, eps, N = _linear_kernel(), cfg.rms_norm_eps, h.shape[0]
    tables = (None, None) if rotation is None else (rotation.cos, rotation.sin_signed)
    qk_norms = (lw.q_norm, lw.k_norm) if cfg.qk_norm else (None, None)     # as qkv_projection: by the config
    q, k, v = K.attention_inputs(h, lw.attn_norm, eps, lw.wq, lw.bq, lw.wk, lw.bk, lw.wv, lw.bv, cfg.n_heads,
                                 cfg.n_kv_heads, cfg.head_dim, *tables,
                                 rotation is not None and rotation.layout == "interleaved", num_threads,
                                 *qk_norms, cfg.qk_norm == "head")
    o = attend_segments(q, k, v, lw, cfg, segments, caches, "cython", num_threads)
    h, g, u = K.mlp_inputs(h, o.reshape(N, -1), lw.wo, lw.bo, lw.mlp_norm, eps, lw.w_gate, lw.b_gate, lw.w_up,
                           lw.b_up, num_threads, lw.attn_out_norm)
    return K.residual_linear(h, glu(g, u, cfg, ACTIVATIONS[cfg.act]), lw.w_down, lw.b_down, num_threads,
                             lw.mlp_out_norm, eps)
