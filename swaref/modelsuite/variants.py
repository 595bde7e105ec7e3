"""Known-wrong variants: the ways real engines get a model's attention wrong, as changes to the plan.

Each variant is a name and a function (model, correct plan, case window) ->
the wrong plan, or None where it does not apply (no window to drop, no mixed
pattern to shift, no per-layer RoPE to swap, no softcap, no sinks).  The
generator computes every applicable variant's logits with the golden forward
pass (``reference.logits``) and stores them, so the checker can say which bug
a failing engine looks like.

Where each one is seen in the wild:

The window variants change which keys a layer sees and nothing else; the
pattern variants (``window on every layer``, ``pattern shifted``, ``pattern
inverted``) misread the layer types, so each layer's RoPE follows its wrong
type, as it does in an engine that derives both from one layer-type flag.

* ``window dropped``: llama.cpp's converter maps MistralForCausalLM to its llama
  architecture and drops sliding_window (issue 12);
* ``window on every layer``: a window applied to full-attention layers, or to a
  model without one (vllm#49795), or layer_types ignored;
* ``W+1`` / ``W-1``: the off-by-one between "W keys" and "W keys before this one";
* ``pattern shifted`` / ``pattern inverted``: which layers slide, counted from 1
  instead of 0, or the docstring's reading of max_window_layers (transformers#35896);
* ``global RoPE on local layers`` / ``local RoPE on global layers``: one theta
  for every layer of a Gemma 3 / OLMo 3 style model;
* ``RoPE scaling dropped``; ``RoPE on NoPE layers`` (Cohere 2's global layers);
* ``softcap missing``, ``softcap after the mask`` (Gemma 2), ``sinks missing`` (gpt-oss).
"""
import dataclasses
import re


def _windows(plan):
    return [lp.window for lp in plan]


def _with(plan, **per_layer):
    """plan with each given field replaced by its per-layer list."""
    return tuple(dataclasses.replace(lp, **{k: v[i] for k, v in per_layer.items()}) for i, lp in enumerate(plan))


def _retype(model, plan, windows):
    """plan with new per-layer windows, each layer's RoPE following its new type (an engine that reads the
    layer types wrongly applies the local or global RoPE, or none, by the same wrong reading)."""
    cfg = dataclasses.replace(model.config, windows=list(windows))
    return _with(plan, window=list(windows), rope=[cfg.layer_rope(li) for li in range(len(plan))])


def _mixed(plan):
    ws = _windows(plan)
    return any(w is None for w in ws) and any(w is not None for w in ws)


def window_dropped(model, plan, W):
    if all(w is None for w in _windows(plan)):
        return None
    return _with(plan, window=[None] * len(plan))


def window_everywhere(model, plan, W):
    ws = _windows(plan)
    if all(w is not None for w in ws):
        return None
    w = next((x for x in ws if x is not None), W)
    return _retype(model, plan, [w] * len(plan))


def _shift_window(delta):
    def variant(model, plan, W):
        ws = _windows(plan)
        if all(w is None for w in ws) or any(w is not None and w + delta < 1 for w in ws):
            return None
        return _with(plan, window=[None if w is None else w + delta for w in ws])
    return variant


def pattern_shifted(model, plan, W):
    """Layer i takes layer i-1's window (the pattern counted one layer late)."""
    if not _mixed(plan):
        return None
    ws = _windows(plan)
    return _retype(model, plan, ws[-1:] + ws[:-1])


def pattern_inverted(model, plan, W):
    """Sliding layers full and full layers sliding."""
    if not _mixed(plan):
        return None
    ws = _windows(plan)
    w = next(x for x in ws if x is not None)
    return _retype(model, plan, [w if x is None else None for x in ws])


def _global_rope(cfg):
    return cfg.rope_theta, cfg.rope_scaling


def global_rope_on_local(model, plan, W):
    cfg = model.config
    if cfg.local_rope_theta is None:
        return None
    local = [lp.window is not None and lp.rope is not None for lp in plan]
    return _with(plan, rope=[_global_rope(cfg) if loc else lp.rope for loc, lp in zip(local, plan)])


def local_rope_on_global(model, plan, W):
    cfg = model.config
    if cfg.local_rope_theta is None:
        return None
    glob = [lp.window is None and lp.rope is not None for lp in plan]
    return _with(plan, rope=[(cfg.local_rope_theta, ()) if g else lp.rope for g, lp in zip(glob, plan)])


def rope_scaling_dropped(model, plan, W):
    if not model.config.rope_scaling:
        return None
    return _with(plan, rope=[None if lp.rope is None else (lp.rope[0], ()) for lp in plan])


def rope_on_nope(model, plan, W):
    if all(lp.rope is not None for lp in plan):
        return None
    return _with(plan, rope=[_global_rope(model.config) if lp.rope is None else lp.rope for lp in plan])


def softcap_missing(model, plan, W):
    if all(lp.softcap is None for lp in plan):
        return None
    return _with(plan, softcap=[None] * len(plan))


def softcap_after_mask(model, plan, W):
    if all(lp.softcap is None for lp in plan):
        return None
    return _with(plan, softcap_after_mask=[True] * len(plan))


def sinks_missing(model, plan, W):
    from .reference import model_extras
    if all(s is None for s in model_extras(model)[2]):
        return None
    return _with(plan, sinks=[False] * len(plan))


#: name -> variant, in the order the checker reports them.
VARIANTS = {
    "window dropped": window_dropped,
    "window on every layer": window_everywhere,
    "W+1": _shift_window(+1),
    "W-1": _shift_window(-1),
    "pattern shifted": pattern_shifted,
    "pattern inverted": pattern_inverted,
    "global RoPE on local layers": global_rope_on_local,
    "local RoPE on global layers": local_rope_on_global,
    "RoPE scaling dropped": rope_scaling_dropped,
    "RoPE on NoPE layers": rope_on_nope,
    "softcap missing": softcap_missing,
    "softcap after the mask": softcap_after_mask,
    "sinks missing": sinks_missing,
}


def applicable(model, plan, W):
    """name -> wrong plan, for every variant that applies to this model (and differs from its plan)."""
    out = {}
    for name, fn in VARIANTS.items():
        wrong = fn(model, plan, W)
        if wrong is not None and wrong != tuple(plan):
            out[name] = wrong
    return out


def safe_name(name):
    """A variant's name as a tensor-name part: 'window dropped' -> 'window_dropped', 'W+1' -> 'W_plus_1'."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name.replace("+", "_plus_").replace("-", "_minus_")).strip("_")
