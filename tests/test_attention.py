"""swaref.attention (spec rules 1 and 3) against the dense float64 oracle in tests/oracle.py."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import swaref
from oracle import assert_bitwise_equal, assert_close, brute_force_mask, dense_attention_f64
from ref_helpers import DTYPES, dtype_tol, f64_tol, increasing_positions, random_qkv, window_for


# The main randomized comparison of this file runs longer than the profile's default
# (scaled, so HYPOTHESIS_PROFILE=ci-long scales it too).
MORE = settings(max_examples=5 * settings.default.max_examples)

HEADS = [(1, 1), (2, 2), (2, 1), (4, 2), (4, 1), (8, 1), (6, 3), (8, 2)]   # (Hq, Hkv): MHA, GQA, MQA


@MORE
@given(st.data())
def test_attention_matches_dense_oracle(data):
    S = data.draw(st.integers(1, 16), label="S")
    Hq, Hkv = data.draw(st.sampled_from(HEADS), label="heads")
    D = data.draw(st.sampled_from([1, 2, 3, 8, 16]), label="D")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    window = window_for(data.draw, S)
    k_pos = data.draw(increasing_positions(S), label="k_pos")
    explicit = data.draw(st.booleans(), label="explicit q_pos")
    if explicit:
        # Any strictly increasing query positions around the keys: between keys, past
        # the last key, sometimes more queries than keys (only the default q_pos needs
        # T <= S); some draws leave a query with no visible key.
        lo, hi = int(k_pos[0]), int(k_pos[-1]) + 3
        q_pos = np.asarray(sorted(set(data.draw(
            st.lists(st.integers(lo, hi), min_size=1, max_size=S + 3), label="q_pos"))), dtype=np.int64)
        T = len(q_pos)
    else:
        T = data.draw(st.integers(1, S), label="T")
        q_pos = k_pos[S - T:]               # the spec's default: the last T key positions
    seed = data.draw(st.integers(0, 2 ** 32 - 1), label="seed")
    logit_gain = data.draw(st.sampled_from([1.0, 1.0, 30.0]), label="logit gain")
    scale = data.draw(st.sampled_from([None, None, 0.0, 0.37, -1.5]), label="scale")
    rng = np.random.default_rng(seed)
    q, k, v = random_qkv(rng, T, S, Hq, Hkv, D, dtype)
    q = (q.astype(np.float64) * logit_gain).astype(dtype)

    mask = brute_force_mask(q_pos.tolist(), k_pos.tolist(), window)
    kwargs = dict(window=window, k_pos=k_pos, scale=scale)
    if explicit:
        kwargs["q_pos"] = q_pos
    if not mask.any(axis=1).all():
        with pytest.raises(swaref.SwarefError) as exc:
            swaref.attention(q, k, v, **kwargs)
        assert exc.value.kind == "no_visible_key"
        return
    q0, k0, v0 = q.copy(), k.copy(), v.copy()
    out = swaref.attention(q, k, v, **kwargs)
    assert out.dtype == np.dtype(dtype) and out.shape == (T, Hq, D)
    for name, before, after in (("q", q0, q), ("k", k0, k), ("v", v0, v)):
        assert_bitwise_equal(after, before, name=f"{name} (must not be modified)")
    expected = dense_attention_f64(q, k, v, q_pos, k_pos, window, scale)
    tol = f64_tol(v) if dtype == np.float64 else dtype_tol(v, dtype)
    assert_close(out, expected, atol=tol, name=f"attention {np.dtype(dtype).name} W={window}")


@pytest.mark.parametrize("T,S", [(1, 1), (1, 9), (5, 9), (9, 9)])
def test_default_positions_are_arange_and_last_T(T, S):
    rng = np.random.default_rng(T * 100 + S)
    q, k, v = random_qkv(rng, T, S, 4, 2, 8)
    for W in (1, 3, None):
        out = swaref.attention(q, k, v, window=W)
        expected = dense_attention_f64(q, k, v, np.arange(S - T, S), np.arange(S), W)
        assert_close(out, expected, atol=f64_tol(v), name=f"default positions W={W}")


@pytest.mark.parametrize("Hq,Hkv", HEADS)
def test_window_one_returns_own_value_with_gqa_mapping(Hq, Hkv):
    # W = 1: each query sees only its own key, so its output is exactly its value row
    # from KV head h // (Hq // Hkv), bitwise (softmax of one score is exactly 1).
    # A mapping h % Hkv or a W+1 window would give other rows.
    T, D = 6, 4
    rng = np.random.default_rng(Hq * 10 + Hkv)
    q, k, v = random_qkv(rng, T, T, Hq, Hkv, D)
    out = swaref.attention(q, k, v, window=1)
    G = Hq // Hkv
    expected = np.stack([v[:, h // G] for h in range(Hq)], axis=1)
    assert_bitwise_equal(out, expected, name="W=1 output")


@pytest.mark.parametrize("W", [1, 2, 3, 5])
@pytest.mark.parametrize("offset", [0, 10 ** 9])
def test_key_just_outside_window_is_invisible(W, offset):
    # Adversarial boundary (facts section 6): the key at p - W gets a huge logit and a
    # distinctive value.  An off-by-one (W + 1 keys) would make the output that value.
    T, D = 3 * W + 4, 4
    pos = np.arange(T, dtype=np.int64) + offset
    rng = np.random.default_rng(W)
    q = np.ones((T, 1, D))
    k = 0.1 * rng.standard_normal((T, 1, D))
    v = rng.standard_normal((T, 1, D))
    p = T - 1
    k[p - W] = 50.0
    v[p - W] = 1e6
    out = swaref.attention(q, k, v, window=W, q_pos=pos, k_pos=pos)
    expected = dense_attention_f64(q, k, v, pos, pos, W)
    assert np.abs(out[p]).max() < 10.0, f"the key at p - W leaked into query p: {out[p]}"
    # Queries p - W .. p - 1 do see it; the oracle covers every row.
    assert_close(out, expected, atol=f64_tol(v))
    assert np.abs(out[p - W]).max() > 1e5, "a query must see its own key"


def test_position_gaps_count_positions_not_indices():
    # Keys at 0, 10, 11, 12 and window 3: query 12 sees 10, 11, 12, and query 10 sees
    # only itself (the window is about absolute positions, not array indices).
    k_pos = np.array([0, 10, 11, 12])
    rng = np.random.default_rng(0)
    q, k, v = random_qkv(rng, 2, 4, 2, 1, 3)
    q_pos = np.array([10, 12])
    out = swaref.attention(q, k, v, window=3, q_pos=q_pos, k_pos=k_pos)
    np.testing.assert_array_equal(out[0], np.stack([v[1, 0]] * 2))
    expected = dense_attention_f64(q, k, v, q_pos, k_pos, 3)
    assert_close(out, expected, atol=f64_tol(v))


def test_no_visible_key_is_rejected_not_zeroed():
    rng = np.random.default_rng(1)
    q, k, v = random_qkv(rng, 1, 3, 1, 1, 2)
    with pytest.raises(swaref.SwarefError) as exc:
        swaref.attention(q, k, v, window=2, q_pos=[10], k_pos=[0, 1, 2])
    assert exc.value.kind == "no_visible_key"
    assert "10" in str(exc.value)
    with pytest.raises(swaref.SwarefError) as exc:       # a query before every key
        swaref.attention(q, k, v, window=None, q_pos=[4], k_pos=[5, 6, 7])
    assert exc.value.kind == "no_visible_key"


@pytest.mark.parametrize("dtype", DTYPES)
def test_long_sequence_huge_offset_all_dtypes(dtype):
    # A longer run at offset 10**9 with T < S and gaps: per-dtype tolerance vs the oracle
    # on the same (upcast) inputs.
    rng = np.random.default_rng(7)
    S, T, W = 64, 40, 9
    k_pos = 10 ** 9 + np.cumsum(rng.integers(1, 3, size=S))
    q, k, v = random_qkv(rng, T, S, 4, 2, 16, dtype, vscale=3.0)
    out = swaref.attention(q, k, v, window=W, k_pos=k_pos)
    expected = dense_attention_f64(q, k, v, k_pos[S - T:], k_pos, W)
    assert out.dtype == np.dtype(dtype)
    tol = f64_tol(v) if dtype == np.float64 else dtype_tol(v, dtype)
    assert_close(out, expected, atol=tol, name=np.dtype(dtype).name)


@pytest.mark.parametrize("W", [9, 10, 2 ** 62, 2 ** 63 - 1, 2 ** 63, 10 ** 30])
@pytest.mark.parametrize("offset", [0, 10 ** 9])
def test_window_at_least_length_is_exactly_causal(W, offset):
    # Rule 1: W >= the sequence length is plain causal attention, for any int W,
    # including ones wider than int64 (no overflow in the position arithmetic).
    S, T = 9, 5
    rng = np.random.default_rng(S)
    q, k, v = random_qkv(rng, T, S, 2, 1, 4)
    k_pos = np.arange(S) + offset
    out = swaref.attention(q, k, v, window=W, k_pos=k_pos)
    causal = swaref.attention(q, k, v, window=None, k_pos=k_pos)
    assert_bitwise_equal(out, causal, name=f"W={W} vs window=None")
    assert_close(out, dense_attention_f64(q, k, v, k_pos[S - T:], k_pos, None), atol=f64_tol(v))


@pytest.mark.parametrize("shift", [-1e4, -800.0, 0.0, 800.0, 1e4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_is_stable_for_huge_scores(shift, dtype):
    # Scores near +-1e3..1e4 overflow or underflow a naive exp: the softmax must be
    # computed shift-invariantly (the spec's max-subtracted form).  A constant added
    # to every visible score of a row changes nothing.  q = (shift, x...) against keys
    # (1, y...) adds exactly `shift` to every score with scale 1.
    T, D = 8, 4
    rng = np.random.default_rng(int(abs(shift)) % 97)
    q, k, v = random_qkv(rng, T, T, 2, 1, D, np.float64)
    q[:, :, 0] = shift
    k[:, :, 0] = 1.0
    q, k, v = q.astype(dtype), k.astype(dtype), v.astype(dtype)
    with np.errstate(over="raise", invalid="raise"):
        out = swaref.attention(q, k, v, window=3, scale=1.0)
    expected = dense_attention_f64(q, k, v, np.arange(T), np.arange(T), 3, scale=1.0)
    assert np.isfinite(expected).all()
    tol = f64_tol(v) if dtype == np.float64 else dtype_tol(v, dtype)
    assert_close(out, expected, atol=tol, name=f"shift {shift}")


def test_one_dominant_key_inside_window():
    # A visible key with a 1e30-sized score takes all the weight: the output is its value.
    T, D = 6, 2
    rng = np.random.default_rng(8)
    q, k, v = random_qkv(rng, T, T, 1, 1, D)
    q[:] = 1.0
    k[3] = 1e30
    out = swaref.attention(q, k, v, window=3)
    for p in (3, 4, 5):
        np.testing.assert_array_equal(out[p, 0], v[3, 0], err_msg=f"query {p}")
    assert np.isfinite(out).all()


def test_non_contiguous_inputs():
    # Views with strides (reversed, every other row, Fortran order) are valid input.
    rng = np.random.default_rng(9)
    q, k, v = random_qkv(rng, 12, 20, 4, 2, 6)
    qv, kv, vv = q[::-2], k[::-1][::2], np.asfortranarray(v)[::-1][::2]
    out = swaref.attention(qv, kv, vv, window=4)
    expected = dense_attention_f64(qv, kv, vv, np.arange(4, 10), np.arange(10), 4)
    assert_close(out, expected, atol=f64_tol(v))
