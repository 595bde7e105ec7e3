"""The NaN rule (spec rule 3): non-finite values inside a query's window propagate per
IEEE; values outside it, and in empty or stale cache slots, never reach the output.

Poison outside a window is checked against the oracle on the CLEAN inputs (the
poison replaced by zeros): the result must be finite and the same.
"""
import numpy as np
import pytest

import swaref
from oracle import assert_close, dense_attention_f64, dense_attention_wide
from ref_helpers import f64_tol, random_qkv

POISONS = [np.nan, np.inf, -np.inf, 1e30, -1e30]


@pytest.mark.parametrize("poison", POISONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("W", [1, 3, None])
def test_poison_outside_every_window_never_reaches_output(poison, dtype, W):
    # With a window, keys 0..5 are poisoned (k and v) and queries 12..15 cannot see
    # them; with W = None every earlier key is visible, so the poisoned keys sit AFTER
    # every query instead (causally invisible).
    rng = np.random.default_rng(0)
    S, T, Hq, Hkv, D = 16, 4, 4, 2, 4
    q, k, v = random_qkv(rng, T, S, Hq, Hkv, D, dtype)
    k_pos = np.arange(S)
    if W is None:
        bad = np.arange(12, 16)
        q_pos = np.arange(4, 8)
    else:
        bad = np.arange(0, 6)
        q_pos = np.arange(12, 16)
    kp, vp = k.copy(), v.copy()
    kp[bad], vp[bad] = poison, poison
    with np.errstate(all="raise"):          # no overflow/invalid warnings either: never computed
        out = swaref.attention(q, kp, vp, window=W, q_pos=q_pos, k_pos=k_pos)
    k0, v0 = k.copy(), v.copy()
    k0[bad], v0[bad] = 0, 0
    expected = dense_attention_f64(q, k0, v0, q_pos, k_pos, W)
    assert np.isfinite(out).all(), f"poison {poison} leaked: {out}"
    tol = f64_tol(v0) if dtype == np.float64 else 2 * float(np.finfo(dtype).eps) * np.abs(v0).max()
    assert_close(out, expected, atol=tol)


@pytest.mark.parametrize("W", [2, 4])
def test_nan_inside_window_propagates_and_only_there(W):
    # NaN in k[j] (all KV heads): every query whose window holds j is NaN everywhere
    # (its scores are NaN); NaN in v[j, h_kv, d]: exactly the entries (heads of group
    # h_kv, dim d) of those queries.  All other rows equal the clean oracle.
    T, Hq, Hkv, D = 12, 4, 2, 3
    rng = np.random.default_rng(W)
    q, k, v = random_qkv(rng, T, T, Hq, Hkv, D)
    pos = np.arange(T)
    j = 5
    sees_j = (pos - W < j) & (j <= pos)
    clean = dense_attention_f64(q, k, v, pos, pos, W)

    kp = k.copy()
    kp[j] = np.nan
    out = swaref.attention(q, kp, v, window=W)
    assert np.isnan(out[sees_j]).all(), "NaN in a visible key must make the row NaN"
    assert_close(out[~sees_j], clean[~sees_j], atol=f64_tol(v), name="rows that cannot see the NaN key")

    vp = v.copy()
    vp[j, 1, 2] = np.nan
    out = swaref.attention(q, k, vp, window=W)
    G = Hq // Hkv
    nan_expected = np.zeros(out.shape, dtype=bool)
    nan_expected[np.ix_(sees_j, np.arange(1 * G, 2 * G), [2])] = True
    np.testing.assert_array_equal(np.isnan(out), nan_expected)
    assert_close(np.where(nan_expected, 0, out), np.where(nan_expected, 0, clean), atol=f64_tol(v))


@pytest.mark.parametrize("poison", [np.nan, np.inf])
def test_nan_in_query_stays_in_its_row(poison):
    rng = np.random.default_rng(2)
    q, k, v = random_qkv(rng, 6, 6, 2, 1, 3)
    q[3, 1, 0] = poison
    with np.errstate(invalid="ignore"):     # inf - inf inside row 3 is the IEEE propagation
        out = swaref.attention(q, k, v, window=3)
    finite_rows = np.ones(6, dtype=bool)
    finite_rows[3] = False
    assert np.isfinite(out[finite_rows]).all() and np.isfinite(out[3, 0]).all()
    assert not np.isfinite(out[3, 1]).all()


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7, 20])
@pytest.mark.parametrize("poison", [np.nan, np.inf, 1e30])
def test_early_poisoned_token_is_evicted_in_prefill(chunk_size, poison):
    # Token 0 is poisoned: queries 0..W-1 see it (NaN rule applies to them, the
    # oracle says what they get); queries >= W must be finite and exact, whatever the
    # schedule, although token 0 passed through the cache.
    W, T, Hq, Hkv, D = 3, 20, 2, 1, 4
    rng = np.random.default_rng(4)
    q, k, v = random_qkv(rng, T, T, Hq, Hkv, D)
    kp, vp = k.copy(), v.copy()
    kp[0], vp[0] = poison, poison
    c = swaref.RollingBufferCache(W, Hkv, D, dtype=np.float64)
    with np.errstate(all="ignore"):
        out = swaref.prefill(q, kp, vp, c, chunk_size=chunk_size)
    k0, v0 = k.copy(), v.copy()
    k0[0], v0[0] = 0, 0
    pos = np.arange(T)
    expected = dense_attention_f64(q, k0, v0, pos, pos, W)
    assert np.isfinite(out[W:]).all(), "an evicted poisoned token leaked"
    assert_close(out[W:], expected[W:], atol=f64_tol(v0))


@pytest.mark.parametrize("poison", [np.nan, np.inf, 1e30])
def test_empty_slots_are_never_read(poison):
    # Buffers start zeroed, but the spec also says they are never read outside valid
    # slots: fill the empty slots with poison (as uninitialised memory would be) and
    # prefill/decode fewer than W tokens.
    W, T, Hq, Hkv, D = 6, 5, 2, 1, 3
    rng = np.random.default_rng(6)
    q, k, v = random_qkv(rng, T, T, Hq, Hkv, D)
    c = swaref.RollingBufferCache(W, Hkv, D, dtype=np.float64)
    c.k[...] = poison
    c.v[...] = poison
    with np.errstate(all="raise"):
        out = np.concatenate([swaref.prefill(q[:2], k[:2], v[:2], c, chunk_size=1, start=40),
                              swaref.prefill(q[2:4], k[2:4], v[2:4], c),
                              swaref.decode_step(q[4:], k[4:], v[4:], c)])
    pos = np.arange(40, 40 + T)
    assert_close(out, dense_attention_f64(q, k, v, pos, pos, W), atol=f64_tol(v))


@pytest.mark.parametrize("poison", [np.nan, np.inf, 1e30])
@pytest.mark.parametrize("chunk", [1, 2, 3, 4])
def test_stale_slot_is_never_read(poison, chunk):
    # After n tokens the cache holds n-W .. n-1; the oldest (n-W) is outside every later
    # query's window.  Poison its slot in place, then prefill a chunk: nothing changes.
    W, n, Hq, Hkv, D = 4, 9, 2, 2, 3
    T = n + chunk
    rng = np.random.default_rng(chunk)
    q, k, v = random_qkv(rng, T, T, Hq, Hkv, D)
    c = swaref.RollingBufferCache(W, Hkv, D, dtype=np.float64)
    swaref.prefill(q[:n], k[:n], v[:n], c, chunk_size=3)
    stale = (n - W) % W
    assert c.positions[stale] == n - W
    c.k[stale] = poison
    c.v[stale] = poison
    with np.errstate(all="raise"):
        out = swaref.prefill(q[n:], k[n:], v[n:], c, chunk_size=chunk)
    pos = np.arange(T)
    expected = dense_attention_f64(q, k, v, pos, pos, W)[n:]
    assert_close(out, expected, atol=f64_tol(v))


# ----- finite input never becomes NaN: scores that overflow float64 -----------------

def _decimal_attention(q, k, v, window, scale):
    """Causal sliding-window softmax in 60-digit decimal arithmetic: nothing overflows.
    q: [T, 1, D], k, v: [T, 1, D] float64 at positions 0..T-1  ->  [T, 1, D] float64."""
    from decimal import Decimal, getcontext
    getcontext().prec = 60
    T, _, D = q.shape
    out = np.empty(q.shape)
    for p in range(T):
        js = [j for j in range(T) if p - window < j <= p]
        s = [Decimal(scale) * sum(Decimal(float(q[p, 0, d])) * Decimal(float(k[j, 0, d])) for d in range(D))
             for j in js]
        m = max(s)
        w = [(x - m).exp() for x in s]
        tot = sum(w)
        for d in range(D):
            out[p, 0, d] = float(sum(wi * Decimal(float(v[j, 0, d])) for wi, j in zip(w, js)) / tot)
    return out


@pytest.mark.parametrize("mag,scale", [(1e160, 1.0), (1e200, 1e-100), (1e100, 1e150), (1.0, 1e307),
                                       (1e160, -1.0), (1e-200, 1e300)])
def test_reference_scores_that_overflow_float64_stay_finite(mag, scale):
    """scale * q.k beyond float64's range used to give inf - inf = NaN from finite input;
    the reference factors the magnitudes out on that path (spec rule 3)."""
    rng = np.random.default_rng(7)
    q = rng.standard_normal((6, 1, 3)) * mag
    k = rng.standard_normal((6, 1, 3)) * mag
    v = rng.standard_normal((6, 1, 3))
    out = swaref.attention(q, k, v, window=3, scale=scale)
    assert np.isfinite(out).all()
    assert_close(out, _decimal_attention(q, k, v, 3, scale), atol=1e-12, name="overflowing scores")


def test_reference_overflow_path_is_taken_only_on_overflow():
    """Ordinary input keeps the literal formula's bits (golden vectors depend on them)."""
    from swaref.attention import softmax_attend
    rng = np.random.default_rng(8)
    q, k, v = rng.standard_normal((4, 8)), rng.standard_normal((9, 2, 8)), rng.standard_normal((9, 2, 8))
    s = np.einsum("hgd,nhd->hgn", q.reshape(2, 2, 8), k) * 0.3
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    assert np.array_equal(softmax_attend(q, k, v, 0.3), np.einsum("hgn,nhd->hgd", p, v).reshape(4, 8))


def test_scale_beyond_float64_is_a_swaref_error():
    q = np.ones((2, 1, 2))
    with pytest.raises(swaref.SwarefError) as ei:
        swaref.attention(q, q, q, window=2, scale=10 ** 400)
    assert ei.value.kind == "scale" and "finite" in str(ei.value)


def test_one_heads_nan_does_not_change_another_heads_overflowing_row():
    """The overflow-safe path is chosen per query head: a NaN in head 1's query used to send
    the whole row down the plain path, so head 0's overflowing (finite) scores gave NaN
    (found by tools/fuzz.py, seed 7000)."""
    q = np.zeros((1, 2, 2))
    q[0, 0] = [1e200, 0.0]
    q[0, 1] = [np.nan, 0.0]
    k = np.array([[[1e200, 0.0]], [[-1e200, 0.0]]])
    v = np.array([[[1.0, 2.0]], [[5.0, 7.0]]])
    for kw in ({}, {"sinks": [0.0, 0.0]}, {"softcap": 3.0}):
        out = swaref.attention(q, k, v, window=2, k_pos=[0, 1], q_pos=[1], **kw)
        assert np.isnan(out[0, 1]).all(), kw
        want = [1.0, 2.0] if "softcap" not in kw else None
        if want is not None:
            assert_close(out[0, 0], want, 1e-15, name=f"head 0 {kw}")
        else:                                   # capped scores +-3: weights e^3 : e^-3
            w = np.exp([3.0, -3.0]) / np.exp([3.0, -3.0]).sum()
            assert_close(out[0, 0], w @ v[:, 0], 1e-15, name="head 0 softcap")


@pytest.mark.parametrize("backend", ["reference", "cython"])
def test_an_infinite_term_decides_a_score_even_beside_an_overflowing_one(backend):
    """Scores are exact extended reals (spec rule 3): a key with an inf entry has score +-inf
    however large its finite terms, and a finite score beyond float64 is still finite.
    Float64 arithmetic got both wrong (found by tools/fuzz.py, seed 9103): inf + (-1e319
    overflowed to -inf) gave NaN, and a true -inf score beside an overflowed finite one gave
    inf - inf.  Expected values by hand and from NumPy's longdouble (tests/oracle.py)."""
    # Query at position 1 sees keys 0 (inf entry: score -inf exactly) and 1 (score 1.7e155 * -1
    # ... beyond float64 after scale 1e300, but finite): all the weight goes to key 1.
    q = np.array([[[-1.32e-4]]])
    k = np.array([[[np.inf]], [[-1.32e159]]])
    v = np.array([[[0.5]], [[-0.25]]])
    out = swaref.attention(q, k, v, window=2, q_pos=[1], scale=1e300, backend=backend)
    assert_close(out, [[[-0.25]]], 0.0, name="true -inf beside an overflowing score")
    # Key 0: 1.26e159 * inf + (-1.32e159 * 8.2e159, finite though beyond float64) = +inf,
    # times scale -0.5: -inf exactly, weight 0; a NaN in key 1's value stays in its column.
    q = np.array([[[1.26e159, -1.32e159]]])
    k = np.array([[[np.inf, 8.2e159]], [[1.26e-4, -1.32e-4]]])
    v = np.array([[[0.125, 0.5]], [[np.nan, -0.132]]])
    out = swaref.attention(q, k, v, window=2, q_pos=[1], scale=-0.5, backend=backend)
    assert np.isnan(out[0, 0, 0]) and out[0, 0, 1] == -0.132, out
    wide = dense_attention_wide(q, k, v, [1], [0, 1], 2, -0.5)
    assert np.isnan(wide[0, 0, 0]) and wide[0, 0, 1] == -0.132
    # +inf against +inf is undefined (inf - inf): NaN, as in IEEE arithmetic.
    k = np.array([[[np.inf, 1.0]], [[np.inf, 2.0]]])
    out = swaref.attention(np.ones((1, 1, 2)), k, v, window=2, q_pos=[1], backend=backend)
    assert np.isnan(out).all()
