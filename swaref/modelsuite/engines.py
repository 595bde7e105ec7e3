"""Engines for ``swaref models check --python``: swaref itself, and swaref with one planted bug.

``swaref_engine`` loads a case's checkpoint with ``swaref.models.load_model``
and returns the float32 logits of every position (chunked prefill, the
production path).  ``broken_engine(variant)`` is the same with the config
changed the way the known-wrong variant changes it (``BROKEN_CONFIGS``): a
deliberately broken engine, which the checker must fail with the right
diagnosis (tests/test_modelsuite_check.py; docs/conformance.md shows one).
Its changes go through ``dataclasses.replace`` on the ModelConfig, not through
the golden forward pass's plans, so the diagnosis is checked against an
independent computation.
"""
import dataclasses

from ..models import Model, load_model, new_caches, prefill_prompt


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
}


def logits_of(model, tokens):
    """[T] -> [T, V] float32 logits of every position, by swaref's forward pass."""
    return prefill_prompt(model, tokens, new_caches(model, len(tokens)), logits="all")


def swaref_engine(checkpoint_dir, tokens):
    """The reference engine: swaref.models on the case's checkpoint."""
    return logits_of(load_model(checkpoint_dir), tokens)


def broken_model(model, variant):
    """The model with ``variant`` planted in its config (same weights)."""
    cfg = dataclasses.replace(model.config, **BROKEN_CONFIGS[variant](model.config))
    return Model(cfg, model.embed, model.layers, model.final_norm, model.lm_head, model.final_norm_b)


def broken_engine(variant):
    """An engine function with ``variant`` planted (a key of BROKEN_CONFIGS)."""
    def engine(checkpoint_dir, tokens):
        return logits_of(broken_model(load_model(checkpoint_dir), variant), tokens)
    engine.__name__ = f"broken_engine[{variant}]"
    return engine


def window_dropped(checkpoint_dir, tokens):
    """swaref with the window dropped (``--python swaref.modelsuite.engines:window_dropped``)."""
    return broken_engine("window dropped")(checkpoint_dir, tokens)
