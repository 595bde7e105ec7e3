"""swaref.models.layers: RMSNorm and SiLU against their formulas (the attention block is covered by
the whole-model comparisons in test_models_generation.py)."""
import numpy as np

from oracle import assert_close

from swaref.models import layers as L


def test_rms_norm_matches_formula():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 24)).astype(np.float32) * 3
    w = rng.standard_normal(24).astype(np.float32)
    x64 = x.astype(np.float64)
    want = w * x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + 1e-6)
    assert_close(L.rms_norm(x, w, 1e-6), want, atol=1e-5)

def test_silu_is_stable():
    x = np.array([-1000.0, -5.0, 0.0, 5.0, 1000.0], dtype=np.float32)
    x64 = x.astype(np.float64)
    sigmoid = np.exp(-np.logaddexp(0.0, -x64))          # 1 / (1 + e^-x) without overflow (scipy is no dependency)
    assert_close(L.silu(x), x64 * sigmoid, atol=1e-5)
