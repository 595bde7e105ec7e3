"""Spec 1.1's softcap and learned sinks against the engines' own code (the `crosscheck` extra).

* softcap: transformers' Gemma 2 eager attention (``modeling_gemma2.eager_attention_forward``,
  cap then additive mask) and PyTorch's ``flex_attention`` with a tanh ``score_mod`` and a
  sliding-window ``mask_mod``;
* sinks: transformers' gpt-oss eager attention (``modeling_gpt_oss.eager_attention_forward``,
  the sink as a concatenated logit column);
* masks from transformers' own ``masking_utils.sliding_window_causal_mask_function``.

Controls: a sink multiplied by the scale, a cap applied to the unscaled score, and a W + 1
mask must all miss, so each comparison can fail.  float64 inputs; Gemma 2's eager path
runs its softmax in float32 (``softmax(..., dtype=torch.float32)``), so it agrees to 1e-6,
and flex_attention and gpt-oss (float64 throughout) to 1e-12.
"""
import os

import numpy as np
import pytest

import swaref
from crosscheck_helpers import attention_inputs, eager_module, heads_first
from oracle import assert_close

pytestmark = pytest.mark.crosscheck

REQUIRED = os.environ.get("SWAREF_REQUIRE_CROSSCHECK") == "1"
try:
    import torch
    from transformers import masking_utils
    from transformers.models.gemma2 import modeling_gemma2
    from transformers.models.gpt_oss import modeling_gpt_oss
except ImportError as e:  # pragma: no cover - depends on the environment
    if REQUIRED:
        raise ImportError(f"SWAREF_REQUIRE_CROSSCHECK=1 but the crosscheck extra is missing ({e})") from e
    pytest.skip(f"the crosscheck extra (torch, transformers) is not installed: {e}", allow_module_level=True)

T, HQ, HKV, D, W = 23, 4, 2, 16, 5
SCALE = D ** -0.5
GEMMA2_TOL = 1e-6          # its softmax runs in float32


def _inputs(seed, mag=1.0):
    return attention_inputs(seed, T, HQ, HKV, D, mag)


def _hf_mask(window):
    return masking_utils.eager_mask(1, T, T, mask_function=masking_utils.sliding_window_causal_mask_function(window),
                                    dtype=torch.float64)


def _module(**extra):
    return eager_module(HQ, HKV, D, **extra)


def hf_gemma2(q, k, v, cap, window=W, scale=SCALE):
    out, _ = modeling_gemma2.eager_attention_forward(_module(), heads_first(q), heads_first(k), heads_first(v), _hf_mask(window),
                                                     dropout=0.0, scaling=scale, softcap=cap)
    return out[0].numpy()                                     # [T, Hq, D]


def hf_gpt_oss(q, k, v, sinks, window=W):
    module = _module(sinks=torch.from_numpy(np.asarray(sinks, dtype=np.float64)))
    out, _ = modeling_gpt_oss.eager_attention_forward(module, heads_first(q), heads_first(k), heads_first(v), _hf_mask(window),
                                                      scaling=SCALE, dropout=0.0)
    return out[0].numpy()


def _backends():
    return ["reference"] + (["cython"] if _cython_has_variants() else [])


def _cython_has_variants():
    q, k, v = _inputs(0)
    try:
        swaref.attention(q[:2], k[:2], v[:2], window=2, softcap=1.0, backend="cython")
        return True
    except swaref.SwarefError as e:
        if e.kind != "backend":
            raise
        return False


@pytest.mark.parametrize("cap", [0.5, 2.0, 50.0])
@pytest.mark.parametrize("mag", [1.0, 4.0])
def test_softcap_equals_transformers_gemma2(cap, mag):
    q, k, v = _inputs(1, mag)
    want = hf_gemma2(q, k, v, cap)
    for backend in _backends():
        assert_close(swaref.attention(q, k, v, window=W, softcap=cap, backend=backend), want, GEMMA2_TOL,
                     name=f"softcap {cap} ({backend}) vs transformers Gemma 2")
    # Control: a W + 1 window must miss (the cap order has its own test below).
    assert np.abs(hf_gemma2(q, k, v, cap, window=W + 1) - want).max() > 1e-6


def test_softcap_before_scaling_is_a_different_answer():
    """Gemma 2 caps scale * q.k; capping q.k and scaling afterwards is the known bug."""
    q, k, v = _inputs(2, 3.0)
    cap = 2.0
    right = hf_gemma2(q, k, v, cap)
    kk = np.repeat(k, HQ // HKV, axis=1)
    vv = np.repeat(v, HQ // HKV, axis=1)
    s = np.einsum("thd,shd->hts", q, kk)
    wrong = cap * np.tanh(s / cap) * SCALE
    mask = swaref.window_mask(np.arange(T), np.arange(T), W)
    wrong = np.where(mask[None], wrong, -np.inf)
    p = np.exp(wrong - wrong.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    wrong_out = np.einsum("hts,shd->thd", p, vv)
    assert np.abs(wrong_out - right).max() > 1e-3
    assert_close(swaref.attention(q, k, v, window=W, softcap=cap), right, GEMMA2_TOL, name="softcap order")


def test_softcap_equals_pytorch_flex_attention():
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    q, k, v = _inputs(3, 3.0)
    cap = 1.5

    def score_mod(score, b, h, qi, ki):
        return cap * torch.tanh(score / cap)

    def mask_mod(b, h, qi, ki):
        return (ki <= qi) & (qi - ki < W)

    block = create_block_mask(mask_mod, 1, 1, T, T, device="cpu")
    out = flex_attention(heads_first(q), heads_first(k), heads_first(v), score_mod=score_mod, block_mask=block, scale=SCALE,
                         enable_gqa=True)
    assert_close(swaref.attention(q, k, v, window=W, softcap=cap), out[0].transpose(0, 1).numpy(), 1e-12,
                 name="softcap vs flex_attention")


@pytest.mark.parametrize("sink_mag", [0.5, 3.0, 30.0])
def test_sinks_equal_transformers_gpt_oss(sink_mag):
    q, k, v = _inputs(4)
    sinks = np.random.default_rng(5).standard_normal(HQ) * sink_mag
    want = hf_gpt_oss(q, k, v, sinks)
    for backend in _backends():
        assert_close(swaref.attention(q, k, v, window=W, sinks=sinks, backend=backend), want, 1e-12,
                     name=f"sinks ({backend}) vs transformers gpt-oss")
    # Controls: the sink multiplied by the scale, and a W + 1 window, must miss.
    assert np.abs(hf_gpt_oss(q, k, v, sinks * SCALE) - want).max() > 1e-4
    assert np.abs(hf_gpt_oss(q, k, v, sinks, window=W + 1) - want).max() > 1e-6


def test_sinks_through_prefill_and_decode_equal_transformers_gpt_oss():
    q, k, v = _inputs(6)
    sinks = np.linspace(-2, 2, HQ)
    want = hf_gpt_oss(q, k, v, sinks)
    c = swaref.RollingBufferCache(W, HKV, D, dtype=np.float64, capacity=W + 3)
    a = swaref.prefill(q[:15], k[:15], v[:15], c, chunk_size=4, sinks=sinks)
    b = [swaref.decode_step(q[i:i + 1], k[i:i + 1], v[i:i + 1], c, sinks=sinks) for i in range(15, T)]
    assert_close(np.concatenate([a, *b]), want, 1e-12, name="sinks prefill + decode vs gpt-oss")
