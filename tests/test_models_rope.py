"""swaref.models.rope: both RoPE layouts against complex-number rotation, and the layout permutation."""
import numpy as np
from hypothesis import given, settings, strategies as st

from model_helpers import make_cfg, make_model, oracle_rope, present
from oracle import assert_close

from swaref import models as M
from swaref.models import rope as R


@settings(max_examples=25)
@given(st.integers(1, 6), st.sampled_from([2, 4, 8, 16]), st.sampled_from(["half", "interleaved"]),
       st.integers(0, 10 ** 6), st.integers(0, 2 ** 31))
def test_rope_matches_complex_rotation(T, D, layout, p0, seed):
    x = np.random.default_rng(seed).standard_normal((T, 3, D)).astype(np.float32)
    pos = np.arange(p0, p0 + T)
    got = R.apply_rope(x, pos, 10000.0, layout)
    assert got.dtype == np.float32
    assert_close(got, oracle_rope(x.astype(np.float64), pos, 10000.0, layout), atol=2e-6 * (1 + np.abs(x).max()))

@settings(max_examples=25)
@given(st.integers(0, 5000), st.integers(0, 5000), st.integers(0, 5000), st.sampled_from(["half", "interleaved"]),
       st.integers(0, 2 ** 31))
def test_rope_scores_depend_only_on_distance(p, j, shift, layout, seed):
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((2, 1, 1, 16)).astype(np.float32)
    s1 = float(np.sum(R.apply_rope(q, [p], 1e4, layout) * R.apply_rope(k, [j], 1e4, layout)))
    s2 = float(np.sum(R.apply_rope(q, [p + shift], 1e4, layout) * R.apply_rope(k, [j + shift], 1e4, layout)))
    assert abs(s1 - s2) < 1e-4 * (1 + abs(s1)), (s1, s2)

def test_rope_layouts_differ_and_permutation_maps_one_to_the_other():
    # A model in Mistral's interleaved layout equals the rotate-half model with permuted Q/K rows.
    inter = make_model(seed=3, layout="interleaved")
    cfg_half = make_cfg(layout="half")
    layers = []
    for lw in inter.layers:
        arrays = present(lw)
        arrays["wq"] = R.interleaved_to_half(lw.wq, cfg_half.n_heads, cfg_half.head_dim)
        arrays["wk"] = R.interleaved_to_half(lw.wk, cfg_half.n_kv_heads, cfg_half.head_dim)
        assert np.array_equal(R.half_to_interleaved(arrays["wq"], cfg_half.n_heads, cfg_half.head_dim), lw.wq)
        layers.append(M.LayerWeights(**arrays))
    half = M.Model(cfg_half, inter.embed, layers, inter.final_norm, inter.lm_head)
    toks = np.arange(11) % 61
    a = M.prefill_prompt(inter, toks, M.new_caches(inter, 11), logits="all")
    b = M.prefill_prompt(half, toks, M.new_caches(half, 11), logits="all")
    assert_close(a, b, atol=1e-5)
    unpermuted = M.Model(cfg_half, inter.embed, inter.layers, inter.final_norm, inter.lm_head)
    c = M.prefill_prompt(unpermuted, toks, M.new_caches(half, 11), logits="all")
    assert np.abs(a - c).max() > 1e-2, "the two layouts should differ on the same weights"
