"""Rotary position embedding (RoPE) in both layouts, at absolute positions, with its scaling variants.

Pair i of a head (i < R/2, R the rotary dims: the head_dim, or its first part
with partial rotary) is rotated by the angle p * f_i, f_i = theta^(-2i/R)
("default"), adjusted by the config's scaling (``SCALINGS``: "linear",
"llama3", "yarn", the formulas of transformers 5.24.0's
``modeling_rope_utils.py``), and cos/sin are multiplied by the scaling's
attention factor (yarn).  The layouts differ in which two elements form pair i
(``architectures.ROPE_LAYOUTS``): "half" (Hugging Face's rotate_half) pairs
x[i] with x[i + R/2], "interleaved" (Mistral's original view_as_complex) pairs
x[2i] with x[2i+1].

Precision: frequencies and angles are float64 (transformers computes both in
float32; docs/model.md, "Precision" gives the measured difference by position).
"""
import math
from dataclasses import dataclass

import numpy as np

from ..errors import SwarefError
from .architectures import ROPE_LAYOUTS

#: Scaling variants: rope_type -> (required keys, optional keys with their defaults).
SCALINGS = {
    "linear": (("factor",), {}),
    "llama3": (("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"), {}),
    "yarn": (("factor", "original_max_position_embeddings"),
             {"attention_factor": None, "beta_fast": 32.0, "beta_slow": 1.0, "mscale": None, "mscale_all_dim": None,
              "truncate": True}),
}


def _base_freq(rot_dim, theta):
    return 1.0 / (theta ** (np.arange(0, rot_dim, 2, dtype=np.float64) / rot_dim))


def _llama3(f, p):
    old = p["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / p["low_freq_factor"], old / p["high_freq_factor"]
    wavelen = 2 * math.pi / f
    scaled = np.where(wavelen > low_wavelen, f / p["factor"], f)
    smooth = (old / wavelen - p["low_freq_factor"]) / (p["high_freq_factor"] - p["low_freq_factor"])
    smoothed = (1 - smooth) * scaled / p["factor"] + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled)


def _yarn(f, p, rot_dim, theta):
    factor, old = p["factor"], p["original_max_position_embeddings"]

    def corr_dim(rotations):
        return rot_dim * math.log(old / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = corr_dim(p["beta_fast"]), corr_dim(p["beta_slow"])
    if p["truncate"]:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, rot_dim - 1)
    if low == high:
        high += 0.001  # transformers' guard against a zero-width ramp
    ramp = np.clip((np.arange(rot_dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
    extrapolate = 1 - ramp
    return f / factor * (1 - extrapolate) + f * extrapolate


def yarn_attention_factor(p):
    """yarn's cos/sin multiplier: attention_factor, else from mscale / mscale_all_dim, else 0.1 ln(factor) + 1."""
    if p.get("attention_factor") is not None:
        return float(p["attention_factor"])

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0
    if p.get("mscale") and p.get("mscale_all_dim"):
        return mscale(p["factor"], p["mscale"]) / mscale(p["factor"], p["mscale_all_dim"])
    return mscale(p["factor"])


def rope_inv_freq(rot_dim, theta, scaling=()):
    """-> ([R/2] float64 frequencies of the rotation pairs, attention factor) for ``scaling`` (pairs or a dict)."""
    p = dict(scaling)
    f = _base_freq(rot_dim, theta)
    rtype = p.get("rope_type", "default")
    if rtype == "default":
        return f, 1.0
    if rtype == "linear":
        return f / p["factor"], 1.0
    if rtype == "llama3":
        return _llama3(f, p), 1.0
    if rtype == "yarn":
        return _yarn(f, p, rot_dim, theta), yarn_attention_factor(p)
    raise SwarefError("argument", f"rope_type must be 'default' or one of {sorted(SCALINGS)}, got {rtype!r}")


def rope_cos_sin(positions, rot_dim, theta, scaling=()):
    """positions: [T] int  ->  cos, sin: [T, R/2] float32 of angle p * f_i, times the attention factor.

    Angles are computed in float64 so that a key at position 100,000 is
    rotated as accurately as one at position 3 (a float32 product p * f loses
    about p * 6e-8 radians).
    """
    f, att = rope_inv_freq(rot_dim, theta, scaling)
    ang = np.asarray(positions, dtype=np.float64)[:, None] * f[None, :]
    cos, sin = np.cos(ang), np.sin(ang)
    if att != 1.0:
        cos, sin = cos * att, sin * att
    return cos.astype(np.float32), sin.astype(np.float32)


@dataclass(frozen=True, eq=False)
class Rotation:
    """RoPE for a fixed list of positions, as tables over the R rotated dims of a head.

    For a pair (a, b) with angle cos c, sin s, RoPE gives (a c - b s, b c + a s).  The R dims are
    viewed as pairs along an axis of two: [2, R/2] for "half" (pair i: i and i + R/2), [R/2, 2]
    for "interleaved" (2i and 2i + 1); reversing that axis (a view) swaps each pair's elements, so
    y = x C + swap(x) S with C = (c, c) and S = (-s, s) on the pair.  This is bitwise the pairwise
    formula (a c + b (-s) rounds exactly as a c - b s) in one expression for both layouts.
    cos, sin_signed: [T, 1, 2, R/2] ("half") or [T, 1, R/2, 2] ("interleaved").
    """

    cos: np.ndarray
    sin_signed: np.ndarray
    layout: str
    rot_dim: int


def rotation(positions, rot_dim, theta, layout="half", scaling=()):
    """positions: [T]  ->  Rotation tables for ``rotate`` (cos/sin computed once, float64 angles)."""
    if layout not in ROPE_LAYOUTS:
        raise SwarefError("argument", f"RoPE layout must be one of {ROPE_LAYOUTS}, got {layout!r}")
    cos, sin = rope_cos_sin(positions, rot_dim, theta, scaling)          # [T, R/2]
    axis = 1 if layout == "half" else 2
    c, s = np.stack([cos, cos], axis=axis), np.stack([-sin, sin], axis=axis)
    return Rotation(c[:, None], s[:, None], layout, rot_dim)


def rotate(x, rot):
    """x: [T, H, D] float32, rot: Rotation for the T tokens' positions  ->  [T, H, D] float32 (a new array).

    The first rot_dim dims are rotated (partial rotary), the rest pass unchanged.
    """
    T, H, D = x.shape
    R = rot.rot_dim
    pairs = (T, H, 2, R // 2) if rot.layout == "half" else (T, H, R // 2, 2)
    if R == D:
        xp = x.reshape(pairs)
        swapped = xp[:, :, ::-1, :] if rot.layout == "half" else xp[..., ::-1]
        return (xp * rot.cos + swapped * rot.sin_signed).reshape(T, H, D)
    out = np.array(x, dtype=np.float32, copy=True)
    out[..., :R] = rotate(np.ascontiguousarray(x[..., :R]), rot)
    return out


class StepRotations:
    """The Rotation of each layer for one model step: built once per distinct RoPE config of the
    config's layers (``ModelConfig.layer_rope``) for the step's packed positions, then shared.

    segments: [(offset, length, start position)] per sequence (generation.check_step).
    """

    def __init__(self, cfg, segments):
        self.cfg = cfg
        self.positions = np.concatenate([np.arange(p, p + n, dtype=np.int64) for _, n, p in segments])
        self._tables = {}

    def layer(self, li):
        """Layer li's Rotation, or None for a layer without positional encoding."""
        rope = self.cfg.layer_rope(li)
        if rope is None:
            return None
        if rope not in self._tables:
            theta, scaling = rope
            R = self.cfg.head_dim if self.cfg.rope_dim is None else self.cfg.rope_dim
            self._tables[rope] = rotation(self.positions, R, theta, self.cfg.rope_layout, scaling)
        return self._tables[rope]


def apply_rope(x, positions, theta, layout="half", scaling=(), rot_dim=None):
    """Rotate each head vector by its absolute position.

    x: [T, H, D], positions: [T]  ->  [T, H, D] float32.  rot_dim: the first R
    dims are rotated (partial rotary), the rest pass unchanged (None: all D).
    """
    R = x.shape[-1] if rot_dim is None else rot_dim
    return rotate(np.asarray(x, dtype=np.float32), rotation(positions, R, theta, layout, scaling))


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
