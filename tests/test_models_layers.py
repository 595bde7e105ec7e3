"""swaref.models.layers: RMSNorm and SiLU against their formulas (the attention block is covered by
the whole-model comparisons in test_models_generation.py), and the fused decode layer
(swaref._linear's attention_inputs / mlp_inputs / residual_linear) against the NumPy glue it
replaces, bit for bit, on every architecture."""
import numpy as np
import pytest

from model_helpers import hf_config, make_model
from oracle import assert_bitwise_equal, assert_close
from test_models_architectures import FAMILY_CONFIGS

from swaref import models as M
from swaref.models import layers as L
from swaref.models.hfconfig import config_from_dict


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


# ----------------------------------------------------------------- the fused decode layer

# RMSNorm layers with a gated MLP (every norm slot and q/k norm), attention and MLP in sequence.
FUSED_FAMILIES = {"mistral", "ministral", "llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text", "olmo3"}


def decode_run(model, monkeypatch, fused, batch=False):
    """Prefill, then decode 6 tokens one at a time (two sequences packed, with batch) on the compiled
    backend, with the fused decode layer on or off -> (logits, every cache's arrays, fused calls)."""
    import swaref.models as M
    calls = []
    real = L._fused_decoder_layer
    monkeypatch.setattr(L, "_fused_decoder_layer", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(L, "fused_decode", L.fused_decode if fused else (lambda cfg, lw: False))
    seqs = 2 if batch else 1
    caches = [M.new_caches(model, 16) for _ in range(seqs)]
    prompts = [[3, 1, 4, 1, 5][: 5 - b] for b in range(seqs)]
    out = M.forward_packed(model, prompts, caches, backend="cython", logits="all")
    toks = [[2 + b] for b in range(seqs)]
    for _ in range(6):
        step = M.forward_packed(model, toks, caches, backend="cython", logits="last")
        out += step
        toks = [[int(np.argmax(s[-1]))] for s in step]
    arrays = [a for seq in caches for c in seq for a in (c.k, c.v, c.positions)]
    monkeypatch.undo()
    return np.concatenate(out), arrays, len(calls)


@pytest.mark.parametrize("name", sorted(FAMILY_CONFIGS))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_fused_decode_layer_is_the_numpy_glue_bit_for_bit(name, dtype, monkeypatch):
    # Every architecture: the fused layer runs exactly for the plain pre-norm families, and where it
    # runs, the logits and every cache slot are the bits of the layer's NumPy glue.
    raw = {k: v for k, v in hf_config(make_model(window=4).config, name, **FAMILY_CONFIGS[name]).items()
           if v is not None or k == "sliding_window"}
    model = M.random_model(config_from_dict(raw), seed=5, scale=1.5, dtype=dtype)
    for batch in (False, True):
        got, got_caches, n_fused = decode_run(model, monkeypatch, True, batch)
        want, want_caches, n_plain = decode_run(model, monkeypatch, False, batch)
        assert n_plain == 0 and (n_fused > 0) == (name in FUSED_FAMILIES), (name, n_fused)
        assert_bitwise_equal(got, want, f"{name} {dtype} logits")
        for i, (a, b) in enumerate(zip(got_caches, want_caches)):
            assert_bitwise_equal(a, b, f"{name} {dtype} cache array {i}")


def test_the_fused_decode_check_can_fail(monkeypatch):
    # A twin whose RoPE takes the interleaved partner on half-layout tables gives other logits.
    model = M.random_model(make_model(window=4).config, seed=5, scale=1.5)
    want = decode_run(model, monkeypatch, False)[0]
    K = L._linear_kernel()
    real = K.attention_inputs

    def twin(*a):
        a = list(a)
        a[14] = True                 # interleaved, after h, norm_w, eps, the six weights, Hq, Hkv, D, cos, sin
        return real(*a)
    monkeypatch.setattr(K, "attention_inputs", twin)
    try:
        got = decode_run(model, monkeypatch, True)[0]
    finally:
        K.attention_inputs = real
    with pytest.raises(AssertionError, match="not bitwise equal"):
        assert_bitwise_equal(got, want)
