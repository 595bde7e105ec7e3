"""The pieces of one decoder layer: RMSNorm, the attention block (GQA + RoPE + swaref's cache), the SwiGLU MLP.

Optional per-architecture pieces (biases, q/k norms) are applied when the weights have them.

All float32.  Dimension names: T tokens, N packed tokens of B sequences, d
hidden size, I intermediate size, Hq / Hkv heads, D head_dim.
"""
import numpy as np

from ..prefill import decode_step, prefill
from .rope import apply_rope


def rms_norm(x, weight, eps):
    """x: [T, d], weight: [d]  ->  [T, d] float32.

    weight * x / sqrt(mean(x^2) + eps); the mean is accumulated in float64
    (transformers does it in float32; the difference is far below 1e-6).
    """
    ms = np.mean(np.square(x, dtype=np.float64), axis=-1, keepdims=True)
    return (x * (1.0 / np.sqrt(ms + eps)).astype(np.float32)) * weight


def silu(x):
    """x: any shape -> x * sigmoid(x), computed stably for large |x| (float32)."""
    return x * (0.5 * (1.0 + np.tanh(0.5 * x)))


def linear(x, w, b=None):
    """x: [T, in], w: [out, in], b: [out] or None  ->  x w^T (+ b)."""
    y = x @ w.T
    return y if b is None else y + b


def swiglu_mlp(x, lw):
    """x: [T, d]  ->  [T, d]:  w_down (silu(w_gate x) * (w_up x)), each with its bias if it has one."""
    return linear(silu(linear(x, lw.w_gate, lw.b_gate)) * linear(x, lw.w_up, lw.b_up), lw.w_down, lw.b_down)


def qkv_projection(x, lw, cfg, positions, rope):
    """x: [T, d], positions: [T], rope: (theta, scaling) of this layer
    ->  q [T, Hq, D], k [T, Hkv, D] (both rotated), v [T, Hkv, D].

    Biases are added when the config has them; with ``qk_norm == "head"`` q and k
    are RMS-normalised over each head's D (Qwen3) before RoPE.
    """
    T = x.shape[0]
    D = cfg.head_dim
    q = linear(x, lw.wq, lw.bq).reshape(T, cfg.n_heads, D)
    k = linear(x, lw.wk, lw.bk).reshape(T, cfg.n_kv_heads, D)
    v = np.ascontiguousarray(linear(x, lw.wv, lw.bv).reshape(T, cfg.n_kv_heads, D))
    if cfg.qk_norm == "head":
        q, k = rms_norm(q, lw.q_norm, cfg.rms_norm_eps), rms_norm(k, lw.k_norm, cfg.rms_norm_eps)
    theta, scaling = rope
    q = np.ascontiguousarray(apply_rope(q, positions, theta, cfg.rope_layout, scaling, cfg.rope_dim))
    k = np.ascontiguousarray(apply_rope(k, positions, theta, cfg.rope_layout, scaling, cfg.rope_dim))
    return q, k, v


def attention_block(x, lw, cfg, segments, caches, backend="reference", num_threads=None, rope=None):
    """The attention half of a layer for B sequences packed along the token axis.

    x: [N, d] (normalised input), segments: list of (offset, length, start position)
    per sequence, caches: that layer's cache per sequence, rope: the layer's
    (theta, scaling) (``ModelConfig.layer_rope``)  ->  [N, d]

    Projections run once on the packed tokens; attention runs per sequence on
    its own cache: ``decode_step`` (write, then attend) for a single generated
    token, ``prefill`` (attend, then write) for a chunk of prompt tokens.  The
    caller has validated every cache of every layer (generation.check_step).
    """
    positions = np.concatenate([np.arange(p, p + n, dtype=np.int64) for _, n, p in segments])
    q, k, v = qkv_projection(x, lw, cfg, positions, rope if rope is not None else cfg.layer_rope(0))
    out = np.empty_like(q)
    for (off, n, start), cache in zip(segments, caches):
        sl = slice(off, off + n)
        if n == 1 and cache.next_position is not None:
            out[sl] = decode_step(q[sl], k[sl], v[sl], cache, start=start,
                                  backend=backend, num_threads=num_threads)
        else:
            # One model chunk is one attention chunk: the chunking is decided once, for every layer.
            out[sl] = prefill(q[sl], k[sl], v[sl], cache, chunk_size=n, start=start,
                              backend=backend, num_threads=num_threads)
    return linear(out.reshape(x.shape[0], -1), lw.wo, lw.bo)
