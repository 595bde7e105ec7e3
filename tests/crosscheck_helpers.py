"""Shared by the crosscheck tests (marker `crosscheck`): the extra's import guard, the backends, logits.

``require_extra()`` at the top of a crosscheck module imports torch and transformers,
or skips the module with the reason, unless SWAREF_REQUIRE_CROSSCHECK=1 (CI), where
a missing extra fails instead: no skip counts as a pass there.
"""
import inspect
import os

import numpy as np
import pytest

from model_helpers import backend_missing

REQUIRED = os.environ.get("SWAREF_REQUIRE_CROSSCHECK") == "1"


def require_extra():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        if REQUIRED:
            raise ImportError(f"SWAREF_REQUIRE_CROSSCHECK=1 but the crosscheck extra is missing ({e}); "
                              f"pip install 'swaref[crosscheck]'") from e
        pytest.skip(f"the crosscheck extra (torch, transformers) is not installed: {e}", allow_module_level=True)


BACKENDS = ["reference", pytest.param("cython", marks=pytest.mark.skipif(
    backend_missing() is not None, reason=str(backend_missing())))]


def cache_kwarg(model_cls):
    """transformers 5.x renamed forward's past_key_values to cache (the old name warns, later goes away)."""
    return "cache" if "cache" in inspect.signature(model_cls.forward).parameters else "past_key_values"


def attention_inputs(seed, T, HQ, HKV, D, mag=1.0):
    """Seeded float64 inputs: q [T, Hq, D] and k [T, Hkv, D] (both times ``mag``), v [T, Hkv, D]."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((T, HQ, D)) * mag, rng.standard_normal((T, HKV, D)) * mag,
            rng.standard_normal((T, HKV, D)))


def heads_first(x):
    """[T, H, D] numpy -> [1, H, T, D] torch float64 (transformers' and flex's layout)."""
    import torch
    return torch.from_numpy(np.ascontiguousarray(x.transpose(1, 0, 2)))[None]


def eager_module(HQ, HKV, D, **extra):
    """The stand-in ``module`` transformers' eager_attention_forward functions read (GQA groups, head_dim)."""
    import types
    return types.SimpleNamespace(num_key_value_groups=HQ // HKV, head_dim=D, training=False, **extra)


def hf_logits(model, ids):
    """transformers' logits [T, V] for one sequence, as float32 NumPy."""
    import torch
    with torch.no_grad():
        return model(torch.tensor(np.asarray(ids))[None]).logits[0].float().numpy()


def scale_up_weights(model, seed=0):
    """Random weights large enough that logits are not flat (a window error must show): norms
    and biases 1 +- 0.1, embeddings N(0, 1), matrices N(0, 1.5^2 / fan_in); in place, seeded."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(1.5 / p.shape[-1] ** 0.5 * torch.randn(p.shape, generator=gen))
    return model
