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


def test_linear_scaling_is_rope_at_positions_divided_by_the_factor():
    pos = np.array([0, 7, 1000, 99_999])
    a = R.rope_cos_sin(pos, 16, 1e4, {"rope_type": "linear", "factor": 4.0})
    b = R.rope_cos_sin(pos / 4.0, 16, 1e4)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_yarn_attention_factor_and_the_ends_of_its_ramp():
    p = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096, "beta_fast": 32.0,
         "beta_slow": 1.0, "truncate": True}
    f, att = R.rope_inv_freq(64, 1e4, p)
    base, _ = R.rope_inv_freq(64, 1e4)
    assert att == 0.1 * np.log(4.0) + 1.0  # YaRN paper, eq. for sqrt(1/t) = 0.1 ln(s) + 1
    assert f[0] == base[0] and f[-1] == base[-1] / 4.0  # high frequencies kept, low ones interpolated
    assert R.yarn_attention_factor(dict(p, attention_factor=0.5)) == 0.5


def test_partial_rotary_rotates_the_first_dims_only():
    x = np.random.default_rng(0).standard_normal((3, 2, 16)).astype(np.float32)
    y = R.apply_rope(x, [5, 6, 7], 1e4, "half", rot_dim=8)
    assert np.array_equal(y[..., 8:], x[..., 8:])
    assert np.allclose(y[..., :8], R.apply_rope(x[..., :8], [5, 6, 7], 1e4, "half"), atol=0)
