"""Rotary position embedding (RoPE) in both layouts, at absolute positions.

Pair i of a head (i < D/2) is rotated by the angle p * theta^(-2i/D); the
layouts differ in which two elements form pair i (``architectures.ROPE_LAYOUTS``):
"half" (Hugging Face's rotate_half) pairs x[i] with x[i + D/2], "interleaved"
(Mistral's original view_as_complex) pairs x[2i] with x[2i+1].
"""
import numpy as np

from ..errors import SwarefError
from .architectures import ROPE_LAYOUTS


def rope_inv_freq(head_dim, theta):
    """[D/2] float64: theta ** (-2i / D), the frequency of rotation pair i (both layouts)."""
    return 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))


def rope_cos_sin(positions, head_dim, theta):
    """positions: [T] int  ->  cos, sin: [T, D/2] float32 of angle p * theta^(-2i/D).

    Angles are computed in float64 so that a key at position 100,000 is
    rotated as accurately as one at position 3 (a float32 product p * f loses
    about p * 6e-8 radians).
    """
    ang = np.asarray(positions, dtype=np.float64)[:, None] * rope_inv_freq(head_dim, theta)[None, :]
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def apply_rope(x, positions, theta, layout="half"):
    """Rotate each head vector by its absolute position.

    x: [T, H, D], positions: [T]  ->  [T, H, D] float32
    """
    T, H, D = x.shape
    cos, sin = rope_cos_sin(positions, D, theta)
    cos, sin = cos[:, None, :], sin[:, None, :]
    if layout == "half":
        a, b = x[..., : D // 2], x[..., D // 2:]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)
    if layout == "interleaved":
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = b * cos + a * sin
        return out
    raise SwarefError("argument", f"RoPE layout must be one of {ROPE_LAYOUTS}, got {layout!r}")


def interleaved_to_half(w, n_heads, head_dim):
    """Permute a Q or K projection's rows from the interleaved RoPE layout to rotate-half.

    w: [H*D, d]  ->  [H*D, d].  Row 2i of a head moves to i, row 2i+1 to i + D/2
    (what transformers' convert_mistral_weights_to_hf.py does), so a model with
    these weights and layout "half" computes exactly the same as the original
    with layout "interleaved".
    """
    d = w.shape[1]
    return w.reshape(n_heads, head_dim // 2, 2, d).transpose(0, 2, 1, 3).reshape(n_heads * head_dim, d)


def half_to_interleaved(w, n_heads, head_dim):
    """Inverse of ``interleaved_to_half``: w [H*D, d] -> [H*D, d]."""
    d = w.shape[1]
    return w.reshape(n_heads, 2, head_dim // 2, d).transpose(0, 2, 1, 3).reshape(n_heads * head_dim, d)
