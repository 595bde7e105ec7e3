"""bfloat16 weights in models, and RoPE's tables built once per step (docs/model.md, "bfloat16 weights").

* a bfloat16 model holds every matrix as bfloat16 bits (rounded to nearest even from float32, checked
  against torch's own rounding) and every vector float32; a mixed model is refused naming the tensor;
* its logits equal, bit for bit, those of the float32 model holding the widened weights (both
  backends, decode steps, and prefill where the compiled backend runs its own AVX-512 GEMM; prefill
  within float32 tolerance where it multiplies widened blocks through BLAS), and the dense float64
  oracle's on those weights;
* its logits are within the derived tolerance of the float32 model's:
  rms(diff) <= 4 * 2^-9 * sqrt(M) * rms(logits), M the matrices on the path; a twin rounded to
  4 mantissa bits fails it;
* RoPE's cos/sin are computed once per step per distinct RoPE config, and the rotation is bitwise
  the pairwise formula a c - b s, b c + a s in both layouts, partial rotary included.
"""
import os

import numpy as np
import pytest

from model_helpers import backend_missing, make_cfg, make_model, oracle_logits
from oracle import assert_close
from swaref import SwarefError, SwarefTypeError
from swaref import models as M
from swaref.models import bf16 as B
from swaref.models import rope as R
from swaref.models.weights import model_as

BACKENDS = ["reference", pytest.param("cython", marks=pytest.mark.skipif(
    backend_missing() is not None, reason=str(backend_missing())))]


def same_bits(a, b):
    return np.array_equal(np.asarray(a, np.float32).view(np.uint32), np.asarray(b, np.float32).view(np.uint32))


def logits(model, ids, backend, then=()):
    caches = M.new_caches(model, len(ids) + len(then) + 1)
    out = [M.prefill_prompt(model, ids, caches, backend=backend, logits="all")]
    out += [M.forward(model, [t], caches, backend=backend) for t in then]
    return out


@pytest.mark.crosscheck
def test_a_bfloat16_model_holds_matrices_as_bits_and_vectors_as_float32():
    # Crosscheck-marked: CI runs it with torch installed, where it must not skip.
    if os.environ.get("SWAREF_REQUIRE_CROSSCHECK") == "1":
        import torch
    else:
        torch = pytest.importorskip("torch")
    m = make_model(seed=3, tie=True, biases=("wq", "w_up"))
    mb = M.random_model(m.config, seed=3, scale=1.5, dtype="bfloat16")
    assert mb.dtype == "bfloat16" and m.dtype == "float32"
    assert mb.lm_head is mb.embed                                    # tied stays tied
    for name in M.LAYER_TENSORS:
        a, b = getattr(m.layers[0], name), getattr(mb.layers[0], name)
        if a is None:
            continue
        if a.ndim >= 2:
            want = torch.from_numpy(a).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
            assert b.dtype == np.uint16 and np.array_equal(b, want), name
        else:
            assert b.dtype == np.float32 and same_bits(a, b), name
    # float32 -> bfloat16 -> float32 -> bfloat16 is the identity on the bits
    again = model_as(model_as(mb, "float32"), "bfloat16")
    assert np.array_equal(again.layers[1].w_down, mb.layers[1].w_down)
    assert model_as(mb, "bfloat16") is mb


def test_a_mixed_model_is_refused_naming_the_tensor():
    mb = M.random_model(make_cfg(), dtype="bfloat16")
    lw = mb.layers[1]
    wrong = M.LayerWeights(**{n: getattr(lw, n) for n in M.LAYER_TENSORS} | {"wk": B.widen(lw.wk)})
    with pytest.raises(SwarefTypeError, match=r"layers\[1\]\.wk must be a bfloat16 \(uint16 bits\) numpy array, "
                                              r"got float32 array \(a bfloat16 model"):
        M.Model(mb.config, mb.embed, [mb.layers[0], wrong], mb.final_norm, mb.lm_head)
    wrong = M.LayerWeights(**{n: getattr(lw, n) for n in M.LAYER_TENSORS} | {"attn_norm": B.to_bfloat16(lw.attn_norm)})
    with pytest.raises(SwarefTypeError, match=r"layers\[1\]\.attn_norm must be a float32 numpy array, got uint16"):
        M.Model(mb.config, mb.embed, [mb.layers[0], wrong], mb.final_norm, mb.lm_head)
    with pytest.raises(SwarefError, match="dtype must be one of"):
        M.random_model(make_cfg(), dtype="float16")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kw", [dict(), dict(layout="interleaved", tie=True), dict(mlp="moe", n_experts=4, top_k=2)])
def test_bfloat16_logits_are_those_of_the_widened_float32_model(backend, kw):
    mb = M.random_model(make_cfg(**kw), seed=5, scale=1.5, dtype="bfloat16")
    mw = model_as(mb, "float32")
    ids, then = np.arange(19) % 61, [3, 9, 27]
    got, want = logits(mb, ids, backend, then), logits(mw, ids, backend, then)
    for g, w in zip(got[1:], want[1:]):     # decode steps: the bfloat16 kernel is the float32 one, bit for bit
        assert same_bits(g, w)
    if backend == "reference" or _compiled_gemm():    # the compiled GEMM widens while packing: the same chain
        assert same_bits(got[0], want[0])
    else:                                   # T > SMALL_T: widened blocks through BLAS, any blocking
        assert_close(got[0], want[0], 2e-5, name="prefill")
    assert_close(got[0], oracle_logits(mw, ids), 2e-4, name="float64 oracle")


def _compiled_gemm():
    from swaref import _linear
    return _linear.isa() == "avx512"


def tolerance(cfg):
    """4 * 2^-9 * sqrt(M): M matrices on the path (7 per layer, the embedding and the LM head)."""
    return 4 * 2.0 ** -9 * np.sqrt(7 * cfg.n_layers + 2)


def rel_rms(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b ** 2)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed, kw", [(0, {}), (1, dict(window=None)), (2, dict(n_layers=4, hidden=64))])
def test_bfloat16_logits_are_within_the_derived_tolerance_of_float32(backend, seed, kw):
    m = make_model(seed=seed, **kw)
    ids = np.arange(30) % 61
    assert rel_rms(logits(model_as(m, "bfloat16"), ids, backend)[0], logits(m, ids, backend)[0]) \
        <= tolerance(m.config)


def test_the_tolerance_can_fail():
    m = make_model(seed=0)
    ids = np.arange(30) % 61

    def coarse(a):    # a twin with 4 mantissa bits instead of 8: 16x the rounding error
        return (a.view(np.uint32) + np.uint32(1 << 18) & np.uint32(0xFFF80000)).view(np.float32) \
            if a.ndim >= 2 else a
    layers = [M.LayerWeights(**{n: None if getattr(lw, n) is None else coarse(getattr(lw, n))
                                for n in M.LAYER_TENSORS}) for lw in m.layers]
    twin = M.Model(m.config, coarse(m.embed), layers, m.final_norm, coarse(m.lm_head))
    assert rel_rms(logits(twin, ids, "reference")[0], logits(m, ids, "reference")[0]) > tolerance(m.config)


# ----------------------------------------------------------------- RoPE once per step

def pairwise(x, positions, theta, layout, rot):
    """RoPE as the pairwise formula (a c - b s, b c + a s), cos/sin from float64 angles rounded to float32."""
    f = 1.0 / theta ** (np.arange(0, rot, 2, dtype=np.float64) / rot)
    ang = np.asarray(positions, np.float64)[:, None] * f
    cos, sin = np.cos(ang).astype(np.float32)[:, None, :], np.sin(ang).astype(np.float32)[:, None, :]
    out = x.copy()
    ia, ib = (np.arange(rot // 2), np.arange(rot // 2, rot)) if layout == "half" else \
        (np.arange(0, rot, 2), np.arange(1, rot, 2))
    a, b = x[..., ia], x[..., ib]
    out[..., ia], out[..., ib] = a * cos - b * sin, b * cos + a * sin
    return out


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("rot", [16, 10])
def test_rotation_is_bitwise_the_pairwise_formula(layout, rot):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 16)).astype(np.float32)
    pos = [0, 7, 100, 5000, 123456]
    got = R.apply_rope(x, pos, 10000.0, layout, rot_dim=rot)
    assert same_bits(got, pairwise(x, pos, 10000.0, layout, rot))
    assert same_bits(got[..., rot:], x[..., rot:])
    # The check can fail: the other layout's pairs give other bits.
    other = "interleaved" if layout == "half" else "half"
    assert not same_bits(got, pairwise(x, pos, 10000.0, other, rot))


@pytest.mark.parametrize("kw, distinct", [(dict(n_layers=4), 1),
                                          (dict(n_layers=4, window=[4, None, 4, None], local_rope_theta=100.0), 2)])
def test_rope_tables_are_built_once_per_step_per_config(monkeypatch, kw, distinct):
    m = make_model(**kw)
    caches = M.new_caches(m, 16)
    M.forward(m, np.arange(5), caches)
    calls = []
    real = R.rope_cos_sin
    monkeypatch.setattr(R, "rope_cos_sin", lambda *a, **k: calls.append(a) or real(*a, **k))
    M.forward(m, [7], caches)
    assert len(calls) == distinct            # not 2 per layer (q and k) as before


def test_generate_cli_runs_bfloat16():
    from swaref.cli import main
    assert main(["generate", "--tiny", "--dtype", "bfloat16", "--prompt", "The cat", "--max-new-tokens", "3",
                 "--seed", "1"]) == 0
