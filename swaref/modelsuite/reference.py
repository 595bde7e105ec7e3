"""The golden forward pass: a dense float64 transformer over a ``swaref.models.Model``, with an attention plan.

This is deliberately not swaref's production path (``swaref.models.forward``:
float32, caches, chunked prefill): it computes every position at once from a
dense [T, T] mask in float64, so it can serve as the golden reference and, with
one layer's plan changed, as each known-wrong variant.  The plan is what the
variants change; everything else (norms, MLPs, scales) is read from the
model's config exactly as ``swaref.models.layers`` reads it.

``LayerPlan``: per layer, the window (None: causal full attention), the RoPE
(theta, scaling pairs) or None (no positional encoding), the attention softcap
and where it is applied, and whether the layer's learned sinks are used.

Dimension names: T tokens, V vocabulary, d hidden, Hq / Hkv heads, D head_dim.
"""
from dataclasses import dataclass

import numpy as np

from ..models.rope import rope_inv_freq


@dataclass(frozen=True)
class LayerPlan:
    """How one layer attends: which keys (window), RoPE, softcap (and its place), sinks."""

    window: int = None            # None: every earlier key; W: the last W keys (p - W < j <= p)
    rope: tuple = None            # (theta, scaling pairs), or None: no RoPE on this layer
    softcap: float = None         # attention logit softcap (None: none)
    softcap_after_mask: bool = False   # the bug: softcap applied to already-masked scores
    sinks: bool = True            # use the layer's learned sinks, when it has them


def model_extras(model):
    """-> (attention softcap, final logit softcap, per-layer sinks [Hq] or None).

    The one place that reads the features the models package adds with Gemma 2
    and gpt-oss (attention softcap, final softcap, learned sinks): a config or
    layer without them gives None.
    """
    cfg = model.config
    softcap = getattr(cfg, "attn_softcap", None)
    final = getattr(cfg, "final_softcap", None)
    sinks = [getattr(lw, "sinks", None) for lw in model.layers]
    return softcap, final, sinks


def correct_plan(model):
    """The model's own plan: its windows, each layer's RoPE (``ModelConfig.layer_rope``), its softcap."""
    cfg = model.config
    softcap = model_extras(model)[0]
    return tuple(LayerPlan(cfg.windows[li], cfg.layer_rope(li), softcap) for li in range(cfg.n_layers))


# ------------------------------------------------------------------ the pieces, in float64

def _rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _layer_norm(x, w, b, eps):
    c = x - x.mean(axis=-1, keepdims=True)
    y = c / np.sqrt(np.mean(c * c, axis=-1, keepdims=True) + eps) * w
    return y if b is None else y + b


def _f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def _norm(x, w, b, cfg):
    if cfg.norm == "rms":
        return _rms(x, _f64(w), cfg.rms_norm_eps)
    return _layer_norm(x, _f64(w), _f64(b), cfg.rms_norm_eps)


def _act(x, kind):
    if kind == "silu":
        return x * 0.5 * (1.0 + np.tanh(0.5 * x))           # x * sigmoid(x), without overflow
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def _linear(x, w, b=None):
    y = x @ _f64(w).T
    return y if b is None else y + _f64(b)


def _mlp(x, lw, cfg):
    """x: [T, d] -> [T, d]: gated (SwiGLU / GeGLU), plain, or a top-k mixture of gated experts."""
    if cfg.mlp == "gated":
        return _linear(_act(_linear(x, lw.w_gate, lw.b_gate), cfg.act) * _linear(x, lw.w_up, lw.b_up),
                       lw.w_down, lw.b_down)
    if cfg.mlp == "plain":
        return _linear(_act(_linear(x, lw.w_up, lw.b_up), cfg.act), lw.w_down, lw.b_down)
    logits = x @ _f64(lw.router).T
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        top = np.argsort(-p[t], kind="stable")[: cfg.top_k]
        w = p[t, top] / p[t, top].sum()
        for e, we in zip(top, w):
            h = _act(x[t] @ _f64(lw.experts_gate[e]).T, cfg.act) * (x[t] @ _f64(lw.experts_up[e]).T)
            out[t] += we * (h @ _f64(lw.experts_down[e]).T)
    return out


def _rope(x, positions, rope, cfg):
    """x: [T, H, D] -> rotated by each token's position with (theta, scaling); the first rope_dim dims."""
    if rope is None:
        return x
    theta, scaling = rope
    R = cfg.rope_dim or cfg.head_dim
    f, att = rope_inv_freq(R, theta, scaling)
    ang = positions[:, None].astype(np.float64) * f[None, :]
    cos, sin = (np.cos(ang) * att)[:, None, :], (np.sin(ang) * att)[:, None, :]
    out = x.copy()
    if cfg.rope_layout == "half":
        a, b = x[..., : R // 2], x[..., R // 2: R]
        out[..., : R // 2], out[..., R // 2: R] = a * cos - b * sin, b * cos + a * sin
    else:
        a, b = x[..., 0:R:2], x[..., 1:R:2]
        out[..., 0:R:2], out[..., 1:R:2] = a * cos - b * sin, b * cos + a * sin
    return out


def visible(T, window):
    """[T, T] bool: key j visible to query p (j <= p, and p - j < W with a window W)."""
    p, j = np.arange(T)[:, None], np.arange(T)[None, :]
    keep = j <= p
    return keep if window is None else keep & (p - j < window)


def _attention(x, lw, cfg, plan, sinks):
    """x: [T, d] (normalised) -> [T, d]: GQA attention over a dense masked softmax, by ``plan``."""
    T, D, Hq, Hkv = x.shape[0], cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
    q, k = _linear(x, lw.wq, lw.bq), _linear(x, lw.wk, lw.bk)
    if cfg.qk_norm == "all":
        q, k = _rms(q, _f64(lw.q_norm), cfg.rms_norm_eps), _rms(k, _f64(lw.k_norm), cfg.rms_norm_eps)
    q, k = q.reshape(T, Hq, D), k.reshape(T, Hkv, D)
    v = _linear(x, lw.wv, lw.bv).reshape(T, Hkv, D)
    if cfg.qk_norm == "head":
        q, k = _rms(q, _f64(lw.q_norm), cfg.rms_norm_eps), _rms(k, _f64(lw.k_norm), cfg.rms_norm_eps)
    pos = np.arange(T)
    q, k = _rope(q, pos, plan.rope, cfg), _rope(k, pos, plan.rope, cfg)
    G = Hq // Hkv
    kh, vh = np.repeat(k, G, axis=1), np.repeat(v, G, axis=1)          # [T, Hq, D]
    scale = cfg.attn_scale if cfg.attn_scale is not None else D ** -0.5
    s = np.einsum("phd,jhd->hpj", q, kh) * scale                          # [Hq, T, T]
    keep = visible(T, plan.window)[None]
    cap = plan.softcap
    if cap is not None and not plan.softcap_after_mask:
        s = cap * np.tanh(s / cap)
    s = np.where(keep, s, -np.inf)
    if cap is not None and plan.softcap_after_mask:
        s = cap * np.tanh(s / cap)      # tanh(-inf) = -1: a masked key scores -cap, not -inf
    m = s.max(axis=-1, keepdims=True)
    sink = None if sinks is None or not plan.sinks else np.asarray(sinks, np.float64)[:, None, None]
    if sink is not None:
        m = np.maximum(m, sink)
    e = np.exp(s - m)
    den = e.sum(axis=-1, keepdims=True) + (0.0 if sink is None else np.exp(sink - m))
    o = np.einsum("hpj,jhd->phd", e / den, vh).reshape(T, Hq * D)
    return _linear(o, lw.wo, lw.bo)


def logits(model, tokens, plan=None):
    """tokens: [T] -> [T, V] float64 logits of every position, computed densely with ``plan``
    (None: ``correct_plan(model)``)."""
    cfg = model.config
    plan = correct_plan(model) if plan is None else plan
    _, final_cap, sinks = model_extras(model)
    h = np.asarray(model.embed, dtype=np.float64)[np.asarray(tokens)]
    if cfg.embed_scale is not None:
        h = h * cfg.embed_scale
    for li, lw in enumerate(model.layers):
        x = h if lw.attn_norm is None else _norm(h, lw.attn_norm, lw.attn_norm_b, cfg)
        a = _attention(x, lw, cfg, plan[li], sinks[li])
        if cfg.parallel:
            h = h + a + _mlp(x, lw, cfg)
            continue
        if lw.attn_out_norm is not None:
            a = _norm(a, lw.attn_out_norm, None, cfg)
        h = h + a
        m = _mlp(h if lw.mlp_norm is None else _norm(h, lw.mlp_norm, lw.mlp_norm_b, cfg), lw, cfg)
        if lw.mlp_out_norm is not None:
            m = _norm(m, lw.mlp_out_norm, None, cfg)
        h = h + m
    y = _norm(h, model.final_norm, model.final_norm_b, cfg) @ np.asarray(model.lm_head, np.float64).T
    if cfg.logit_scale is not None:
        y = y * cfg.logit_scale
    if final_cap is not None:
        y = final_cap * np.tanh(y / final_cap)
    return y


def greedy(model, prompt, n_new, plan=None):
    """prompt: [P] -> (tokens [P + n_new]: the prompt and n_new greedy tokens, the smallest margin between
    the best and second-best logit over the greedy steps)."""
    toks = list(int(t) for t in prompt)
    margin = np.inf
    for _ in range(n_new):
        last = logits(model, np.array(toks), plan)[-1]
        top2 = np.sort(last)[-2:]
        margin = min(margin, float(top2[1] - top2[0]))
        toks.append(int(np.argmax(last)))
    return np.array(toks, dtype=np.int64), margin
