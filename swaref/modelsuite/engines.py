"""Engines for ``swaref models check --python``: swaref itself, and swaref with one planted bug.

``swaref_engine`` loads a case's checkpoint with ``swaref.models.load_model``
and returns the float32 logits of every position (chunked prefill, the
production path).  ``broken_engine(variant)`` is the same with the config
changed the way the known-wrong variant changes it (``BROKEN_CONFIGS``): a
deliberately broken engine, which the checker must fail with the right
diagnosis (tests/test_modelsuite.py; docs/conformance.md shows one).
Its changes go through ``dataclasses.replace`` on the ModelConfig, not through
the golden forward pass's plans, so the diagnosis is checked against an
independent computation.  The one variant no config can express, the
attention softcap applied after the mask, is planted in a float32 dense
forward pass built from swaref's own layer functions (``BROKEN_ATTENTION``).
"""
import dataclasses

import numpy as np

from ..models import Model, load_model, new_caches, prefill_prompt
from ..models.layers import linear, mlp, norm, qkv_projection
from ..models.rope import StepRotations
from ..models.weights import LAYER_TENSORS, expected_shapes


#: A window no case's prompt reaches (new_caches gives such a layer a plain buffer of the prompt's length).
NO_WINDOW = 1 << 20


def _first_window(cfg, default):
    return next((w for w in cfg.windows if w is not None), default)


def _shifted(cfg):
    return cfg.windows[-1:] + cfg.windows[:-1]


def _inverted(cfg):
    w = _first_window(cfg, None)
    return tuple(w if x is None else None for x in cfg.windows)


#: variant name -> ModelConfig changes (a function of the config) that plant it in swaref.
BROKEN_CONFIGS = {
    # A window longer than any prompt: full attention on the sliding layers, whose RoPE stays theirs.
    "window dropped": lambda cfg: {"windows": [None if w is None else NO_WINDOW for w in cfg.windows]},
    "window on every layer": lambda cfg: {"windows": _first_window(cfg, 8)},
    "W+1": lambda cfg: {"windows": [None if w is None else w + 1 for w in cfg.windows]},
    "W-1": lambda cfg: {"windows": [None if w is None else w - 1 for w in cfg.windows]},
    "pattern shifted": lambda cfg: {"windows": list(_shifted(cfg))},
    "pattern inverted": lambda cfg: {"windows": list(_inverted(cfg))},
    "global RoPE on local layers": lambda cfg: {"local_rope_theta": None},
    "local RoPE on global layers": lambda cfg: {"rope_theta": cfg.local_rope_theta, "rope_scaling": ()},
    "RoPE scaling dropped": lambda cfg: {"rope_scaling": ()},
    "RoPE on NoPE layers": lambda cfg: {"nope_full": False},
    "softcap missing": lambda cfg: {"attn_softcap": None},
    # The layers' sinks tensors go too (broken_model drops what the config no longer has).
    "sinks missing": lambda cfg: {"sinks": False},
}


def logits_of(model, tokens):
    """[T] -> [T, V] float32 logits of every position, by swaref's forward pass."""
    return prefill_prompt(model, tokens, new_caches(model, len(tokens)), logits="all")


def swaref_engine(checkpoint_dir, tokens):
    """The reference engine: swaref.models on the case's checkpoint."""
    return logits_of(load_model(checkpoint_dir), tokens)


def broken_model(model, variant):
    """The model with ``variant`` planted in its config (same weights, less any the new config lacks)."""
    cfg = dataclasses.replace(model.config, **BROKEN_CONFIGS[variant](model.config))
    keep = expected_shapes(cfg)[1]
    layers = [dataclasses.replace(lw, **{n: None for n in LAYER_TENSORS if n not in keep}) for lw in model.layers]
    return Model(cfg, model.embed, layers, model.final_norm, model.lm_head, model.final_norm_b)


def _visible(T, window):
    """[T, T] bool: j <= p, and p - j < W with a window W (written here, apart from the reference's)."""
    p, j = np.ogrid[:T, :T]
    return (j <= p) & (True if window is None else (p - j < window))


def _softcap_after_mask(q, k, v, window, cfg, lw):
    """q: [T, Hq, D], k, v: [T, Hkv, D] -> [T, Hq, D]: the attention softcap applied to already-masked
    scores, so a masked key (a future one too) scores -cap instead of -inf (float32)."""
    G = cfg.n_heads // cfg.n_kv_heads
    kh, vh = np.repeat(k, G, axis=1), np.repeat(v, G, axis=1)
    scale = np.float32(cfg.attn_scale if cfg.attn_scale is not None else cfg.head_dim ** -0.5)
    s = np.einsum("phd,jhd->hpj", q, kh) * scale
    s = np.where(_visible(len(q), window)[None], s, -np.inf)
    c = np.float32(cfg.attn_softcap)
    s = c * np.tanh(s / c)                        # the bug: tanh(-inf) = -1
    w = np.exp(s - s.max(axis=-1, keepdims=True))
    return np.einsum("hpj,jhd->phd", w / w.sum(axis=-1, keepdims=True), vh)


#: variant name -> an attention function (q, k, v, window, cfg, layer weights) -> [T, Hq, D] that plants it.
BROKEN_ATTENTION = {"softcap after the mask": _softcap_after_mask}


def dense_logits(model, tokens, attend):
    """[T] -> [T, V] float32: swaref's layer functions (norms, projections with RoPE, MLPs) wired as
    ``layers.decoder_layer`` wires them, every position at once, with ``attend`` as the attention."""
    cfg = model.config
    tokens = np.asarray(tokens)
    h = model.embed[tokens] * np.float32(1.0 if cfg.embed_scale is None else cfg.embed_scale)
    rotations = StepRotations(cfg, [(0, len(tokens), 0)])
    for li, lw in enumerate(model.layers):
        x = h if lw.attn_norm is None else norm(h, lw.attn_norm, lw.attn_norm_b, cfg)
        q, k, v = qkv_projection(x, lw, cfg, rotations.layer(li))
        a = linear(attend(q, k, v, cfg.windows[li], cfg, lw).reshape(len(tokens), -1), lw.wo, lw.bo)
        if cfg.parallel:
            h = h + a + mlp(x, lw, cfg)
            continue
        if lw.attn_out_norm is not None:
            a = norm(a, lw.attn_out_norm, None, cfg)
        h = h + a
        m = mlp(h if lw.mlp_norm is None else norm(h, lw.mlp_norm, lw.mlp_norm_b, cfg), lw, cfg)
        h = h + (m if lw.mlp_out_norm is None else norm(m, lw.mlp_out_norm, None, cfg))
    y = norm(h, model.final_norm, model.final_norm_b, cfg) @ model.lm_head.T
    if cfg.logit_scale is not None:
        y = y * np.float32(cfg.logit_scale)
    if cfg.final_softcap is not None:
        y = np.float32(cfg.final_softcap) * np.tanh(y / np.float32(cfg.final_softcap))
    return y


def broken_engine(variant):
    """An engine function with ``variant`` planted (a key of BROKEN_CONFIGS or BROKEN_ATTENTION)."""
    def engine(checkpoint_dir, tokens):
        model = load_model(checkpoint_dir)
        if variant in BROKEN_ATTENTION:
            return dense_logits(model, tokens, BROKEN_ATTENTION[variant])
        return logits_of(broken_model(model, variant), tokens)
    engine.__name__ = f"broken_engine[{variant}]"
    return engine


def window_dropped(checkpoint_dir, tokens):
    """swaref with the window dropped (``--python swaref.modelsuite.engines:window_dropped``)."""
    return broken_engine("window dropped")(checkpoint_dir, tokens)
