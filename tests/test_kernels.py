"""The compiled kernel's contract, piece by piece (swaref/_core.pyx, swaref/_kernels.h).

* ``band_attention``'s docstring names the public functions it must equal; every name is
  run here against ``band_attention`` called directly (a name without a check fails);
* each micro-kernel's test hook (scores, softmax step, value pass, tile transpose, exp, the
  soft cap's tanh, a row's runs of visible positions and its lanes in a tile) is checked
  against the NumPy one-liner written in its test (and stated on the hook's "Equals:" line),
  with an error bound derived from the operation; a failure reports the max difference and
  the first mismatching index;
* the kernel refuses misaligned arrays rather than read them.
"""
import math
import re

import numpy as np
import pytest
from hypothesis import given, strategies as st

import swaref
from swaref import _core
from oracle import assert_bitwise_equal
from ref_helpers import random_qkv

DTYPES = (np.float32, np.float64)
TILE = 64
EXP_MIN = {np.float32: -87.0, np.float64: -708.0}


def eps(dtype):
    return float(np.finfo(dtype).eps)


def assert_within(got, want, bound, name):
    """|got - want| <= bound elementwise (bound: an array or a number); NaN anywhere fails."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != expected {want.shape}"
    diff = np.abs(got - want)
    bad = ~(diff <= bound)                       # NaN compares false: counted as bad
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        b = np.broadcast_to(bound, diff.shape)
        raise AssertionError(f"{name}: {int(bad.sum())} of {bad.size} off, max |diff| {np.nanmax(diff):.3e}; "
                             f"first at {first}: got {got[first]!r}, expected {want[first]!r} (bound {b[first]:.3e})")


def equals_line(fn):
    """The text after "Equals:" in a hook's docstring, whitespace collapsed."""
    m = re.search(r"Equals:(.*?)(?:\n\s*\n|\Z)", fn.__doc__, re.S)
    assert m, f"{fn.__name__}'s docstring has no 'Equals:' line"
    return " ".join(m.group(1).split())


# ---------------------------------------------------- band_attention's contract

def _case(rng, dtype, T=37, Hkv=2, G=2, D=12):
    q, k, v = random_qkv(rng, T, T, Hkv * G, Hkv, D, dtype=dtype)
    return q, k, v, 1.0 / math.sqrt(D)


def _empty(Hkv, D, dtype):
    return np.zeros((0, Hkv, D), dtype=dtype), np.zeros(0, dtype=np.int64)


W9 = (8, 0, 0, 0)            # window=9 as the kernel's (left, right, chunk, sink_tokens)


def _ring_args(cache):
    held = cache.positions[cache.positions >= 0]
    return cache.k, cache.v, cache.positions, int(held.min()), int(held.max())


def check_attention(rng, dtype):
    q, k, v, scale = _case(rng, dtype)
    pos = np.arange(5, 5 + q.shape[0], dtype=np.int64)
    e, ep = _empty(k.shape[1], k.shape[2], dtype)
    got = _core.band_attention(q, pos, k, v, pos, e, e, ep, 0, -1, *W9, scale, 1)
    return got, swaref.attention(q, k, v, window=9, q_pos=pos, k_pos=pos, scale=scale)


def _cache_with_prefix(q, k, v, n, W):
    c = swaref.RollingBufferCache(W, k.shape[1], k.shape[2], dtype=q.dtype)
    swaref.prefill(q[:n], k[:n], v[:n], c)
    return c


def check_prefill(rng, dtype):
    q, k, v, scale = _case(rng, dtype)
    c = _cache_with_prefix(q, k, v, 20, 9)
    pos = np.arange(20, q.shape[0], dtype=np.int64)
    got = _core.band_attention(q[20:], pos, k[20:], v[20:], pos, *_ring_args(c), *W9, scale, 1)
    return got, swaref.prefill(q[20:], k[20:], v[20:], c, scale=scale)


def check_attend_chunk(rng, dtype):
    q, k, v, scale = _case(rng, dtype)
    c = _cache_with_prefix(q, k, v, 20, 9)
    pos = np.arange(20, q.shape[0], dtype=np.int64)
    got = _core.band_attention(q[20:], pos, k[20:], v[20:], pos, *_ring_args(c), *W9, scale, 1)
    return got, swaref.attend_chunk(q[20:], k[20:], v[20:], c, 20, scale)


def check_decode_step(rng, dtype):
    q, k, v, scale = _case(rng, dtype)
    c = _cache_with_prefix(q, k, v, 20, 9)
    want = swaref.decode_step(q[20:21], k[20:21], v[20:21], c, scale=scale)     # writes position 20
    e, ep = _empty(k.shape[1], k.shape[2], dtype)
    got = _core.band_attention(q[20:21], np.array([20]), e, e, ep, *_ring_args(c), *W9, scale, 1)
    return got, want


CHECKS = {"attention": check_attention, "prefill": check_prefill, "attend_chunk": check_attend_chunk,
          "decode_step": check_decode_step}


@pytest.mark.parametrize("dtype", DTYPES)
def test_band_attention_equals_the_public_functions_its_docstring_names(dtype):
    names = sorted(set(re.findall(r"swaref\.(\w+)", equals_line(_core.band_attention))))
    assert names, "band_attention's docstring names no public function"
    for name in names:
        assert name in swaref.__all__ and not name.startswith("_"), f"swaref.{name} is not public"
        assert name in CHECKS, f"the docstring names swaref.{name}, which no check here runs"
        got, want = CHECKS[name](np.random.default_rng(len(name)), dtype)
        vmax = 3.0                                          # |v| of the standard normal draws, generously
        atol = (1e-12 if dtype == np.float64 else 1e-5) * vmax
        assert_within(got, want, atol, f"band_attention vs swaref.{name}")


# ------------------------------------------------------------ micro-kernels

@given(n=st.integers(1, 14), D=st.integers(1, 70), dtype=st.sampled_from(DTYPES),
       scale=st.sampled_from([None, -0.3, 1e3]), seed=st.integers(0, 2 ** 32 - 1))
def test_scores_kernel(n, D, dtype, scale, seed):
    """n rows exercise the six-, four-, two- and one-row kernels (n = 13: 6 + 6 + 1)."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n, D)).astype(dtype)
    kt = rng.standard_normal((D, TILE)).astype(dtype)
    scale = 1 / math.sqrt(D) if scale is None else scale
    got = _core.scores_kernel(q, kt, scale)
    q64, kt64 = q.astype(np.float64), kt.astype(np.float64)
    want = (q64 @ kt64) * scale
    assert equals_line(_core.scores_kernel) == "(q @ kt) * scale"
    # A chain of D multiply-adds, the scale rounded to the dtype, one last product.
    bound = (D + 3) * eps(dtype) * (np.abs(q64) @ np.abs(kt64)) * abs(scale) + np.finfo(dtype).tiny
    assert_within(got, want, bound, f"scores n={n} D={D}")


@st.composite
def softmax_inputs(draw):
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    s = (rng.standard_normal(TILE) * draw(st.sampled_from([1.0, 30.0]))).astype(dtype)
    present = rng.random(TILE) < draw(st.sampled_from([0.1, 0.5, 1.0]))
    ja = draw(st.integers(0, TILE - 1))
    jb = draw(st.integers(ja + 1, TILE))
    present[draw(st.integers(ja, jb - 1))] = True          # the step runs only where a key is visible
    vis = present & (np.arange(TILE) >= ja) & (np.arange(TILE) < jb)
    s[~vis] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e30]))   # must never leak
    first = draw(st.booleans())
    m = -np.inf if first else float(dtype(s[vis].max() + draw(st.sampled_from([-20.0, -1.0, 0.0, 2.0]))))
    l = 0.0 if first else float(dtype(draw(st.floats(1.0, 50.0))))
    return dtype, s, present, ja, jb, m, l


@given(softmax_inputs())
def test_softmax_kernel(case):
    dtype, s, present, ja, jb, m, l = case
    w, alpha, m_new, l_new = _core.softmax_kernel(s, present, ja, jb, m, l)
    lane = np.arange(TILE)
    vis = present & (ja <= lane) & (lane < jb)
    assert equals_line(_core.softmax_kernel) == (
        "vis = present & (ja <= lane < jb); m' = max(m, s[vis].max()); alpha = exp(m - m'); "
        "weights = where(vis, exp(s - m'), 0); l' = l * alpha + weights.sum()")
    s64 = s.astype(np.float64)
    want_m = max(m, s64[vis].max())
    assert m_new == want_m, f"m' = {m_new!r}, expected {want_m!r} (a maximum is exact)"
    want_alpha = np.exp(m - want_m) if np.isfinite(m) else 0.0
    x = np.where(vis, s64 - want_m, 0.0)
    want_w = np.where(vis, np.exp(x), 0.0)
    want_l = l * want_alpha + want_w.sum()
    e, tiny = eps(dtype), 2 * np.exp(EXP_MIN[dtype])
    # exp: 4 ulp; its argument s - m' rounded to the dtype: relative error eps * |x|.
    assert_within(w, want_w, want_w * e * (4 + np.abs(x)) + tiny, "weights")
    assert_bitwise_equal(w[~vis], np.zeros(int((~vis).sum()), dtype=dtype), name="weights of masked lanes")
    am = abs(m - want_m) if np.isfinite(m) else 0.0
    assert_within(alpha, want_alpha, want_alpha * e * (4 + am) + tiny, "alpha")
    # l: at most 9 roundings of sums of positive terms, plus the terms' own errors.
    bound = e * (10 * want_l + (want_w * np.abs(x)).sum() + 4 * want_w.sum() + l * want_alpha * (4 + am)) + tiny
    assert_within(l_new, want_l, bound, "l'")


@given(data=st.data())
def test_value_kernel(data):
    """Rows in groups sharing their visible lanes: four-row, two-row and one-row kernels; D up to
    300 crosses the value pass's spans, its 8/4/2/1-vector blocks and the scalar tail.  Masked
    weights and absent value rows are NaN: they must never be read."""
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    D = data.draw(st.integers(1, 300), label="D")
    groups = data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=4), label="group sizes")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    n = sum(groups)
    ja, jb = np.zeros(n, dtype=np.intp), np.zeros(n, dtype=np.intp)
    r = 0
    for size in groups:
        a = data.draw(st.integers(0, TILE - 1))
        ja[r:r + size], jb[r:r + size] = a, data.draw(st.integers(a + 1, TILE))
        r += size
    present = rng.random(TILE) < 0.7
    lane = np.arange(TILE)
    vis = present & (ja[:, None] <= lane) & (lane < jb[:, None])
    o = rng.standard_normal((n, D)).astype(dtype)
    alpha = rng.random(n).astype(dtype)
    p = np.where(vis, rng.random((n, TILE)), np.nan).astype(dtype)
    v = np.where(present[:, None], rng.standard_normal((TILE, D)), np.nan).astype(dtype)
    got = _core.value_kernel(o, alpha, p, v, present, ja, jb)
    assert equals_line(_core.value_kernel) == (
        "vis = present & (ja[:, None] <= lane) & (lane < jb[:, None]); "
        "o * alpha[:, None] + where(vis, p, 0) @ v")
    p0 = np.where(vis, p.astype(np.float64), 0.0)
    v0 = np.where(present[:, None], v.astype(np.float64), 0.0)
    want = o * alpha.astype(np.float64)[:, None] + p0 @ v0
    nvis = vis.sum(axis=1)[:, None]
    bound = eps(dtype) * ((nvis + 2) * (np.abs(p0) @ np.abs(v0)) + 2 * np.abs(o) * alpha[:, None])
    assert_within(got, want, bound + np.finfo(dtype).tiny, f"value pass, groups {groups}, D={D}")


@given(D=st.integers(1, 70), dtype=st.sampled_from(DTYPES), density=st.sampled_from([0.05, 0.5, 1.0]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_transpose_kernel(D, dtype, density, seed):
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((TILE, D)).astype(dtype)
    present = rng.random(TILE) < density
    got = _core.transpose_kernel(rows, present)
    assert equals_line(_core.transpose_kernel) == "rows.T on the present lanes"
    assert_bitwise_equal(got[:, present], rows.T[:, present], name=f"transposed tile, D={D}")   # a data move


@pytest.mark.parametrize("vector", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_kernel(dtype, vector):
    """Both exp formulas of swaref/_kernels.h: scalar (alpha) and vector (the weights)."""
    lo = EXP_MIN[dtype]
    x = np.concatenate([np.linspace(lo, 0, 200001), -np.logspace(-30, np.log10(-lo), 5000),
                        [0.0, -0.0]]).astype(dtype)
    got = _core.exp_kernel(x, vector=vector)
    want = np.exp(x.astype(np.float64))
    assert equals_line(_core.exp_kernel).startswith("numpy.exp(x) within 4 ulp on x <= 0")
    assert_within(got, want, 4 * eps(dtype) * want, "exp")
    assert _core.exp_kernel(np.zeros(3, dtype), vector=vector)[0] == 1.0      # exp(0) exactly 1: alpha = 1
    special = _core.exp_kernel(np.array([-np.inf, lo - 1, -1e300 if dtype == np.float64 else -1e30, np.nan],
                                        dtype=dtype), vector=vector)
    assert special[0] == 0 and special[1] == 0 and special[2] == 0 and np.isnan(special[3])


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_kernel(dtype):
    """The soft cap's vector tanh (swaref/_kernels.h, built on exp's reduction as expm1): within
    4 ulp of long-double tanh over the whole range, relative accuracy kept near 0 and in the
    subnormals; tanh(+-0) = 0; |x| beyond exp's range gives +-1 exactly; non-finite x gives NaN
    (the score pass sends such a row to the float64 fallback)."""
    fi = np.finfo(dtype)
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-25, 25, 200001), np.logspace(np.log10(float(fi.smallest_subnormal)), 3, 100001),
                        rng.standard_normal(50000) * 0.5, rng.uniform(0.2, 1.2, 50000)]).astype(dtype)
    x = np.concatenate([x, -x, [fi.max, -fi.max]])
    got = _core.tanh_kernel(x)
    assert equals_line(_core.tanh_kernel).startswith("numpy.tanh(x) within 4 ulp")
    want = np.tanh(x.astype(np.longdouble))
    ulp = np.spacing(np.abs(want.astype(dtype))).astype(np.longdouble)
    assert_within((got.astype(np.longdouble) - want) / ulp, np.zeros(x.shape), 4.0, "tanh, in ulp")
    assert np.array_equal(np.sign(got), np.sign(x))
    assert (_core.tanh_kernel(np.array([0.0, -0.0], dtype=dtype)) == 0).all()    # (-0 + (s - s): +0)
    assert (_core.tanh_kernel(np.array([1000.0, -1000.0], dtype=dtype)) == [1.0, -1.0]).all()
    assert np.isnan(_core.tanh_kernel(np.array([np.inf, -np.inf, np.nan], dtype=dtype))).all()


@given(dtype=st.sampled_from(DTYPES), cap=st.sampled_from([1e-3, 0.5, 3.0, 50.0, 1e6]),
       mag=st.sampled_from([0.1, 1.0, 100.0]), seed=st.integers(0, 2 ** 32 - 1))
def test_softcap_in_the_score_pass(dtype, cap, mag, seed):
    """tanh_kernel(x, cap) and scores_kernel(..., softcap=cap): cap * tanh(x / cap), the cap's
    division and product adding a rounding each; in the score pass the score's own error passes
    through unamplified (the cap's slope is at most 1)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(333) * mag).astype(dtype)
    x64 = x.astype(np.float64)
    want = cap * np.tanh(x64 / cap)
    assert_within(_core.tanh_kernel(x, cap), want, 6 * eps(dtype) * np.abs(want) + np.finfo(dtype).tiny,
                  f"cap {cap}")
    n, D = 7, 20
    q = (rng.standard_normal((n, D)) * mag).astype(dtype)
    kt = rng.standard_normal((D, TILE)).astype(dtype)
    q64, kt64 = q.astype(np.float64), kt.astype(np.float64)
    s = (q64 @ kt64) * 0.25
    want = cap * np.tanh(s / cap)
    bound = (D + 3) * eps(dtype) * (np.abs(q64) @ np.abs(kt64)) * 0.25 + 6 * eps(dtype) * np.abs(want)
    assert_within(_core.scores_kernel(q, kt, 0.25, softcap=cap), want, bound + np.finfo(dtype).tiny,
                  f"capped scores, cap {cap}")


# ------------------------------------------------------- which keys a row sees

@given(data=st.data())
def test_runs_kernel(data):
    """The two runs of positions (sink prefix, range) per query, against the visibility rule of
    the kernel's parameters evaluated key by key (contract: swaref.windows.kernel_params)."""
    left = data.draw(st.sampled_from([-1, 0, 1, 5, 63, 64, 200]), label="left")
    right = data.draw(st.sampled_from([-1, 0, 0, 1, 7, 64]), label="right")
    chunk = data.draw(st.sampled_from([0, 0, 1, 3, 16, 64, 100]), label="chunk")
    n = data.draw(st.sampled_from([0, 1, 4, 20, 64, 300]), label="sink_tokens")
    q_pos = np.array(sorted(data.draw(st.sets(st.integers(0, 400), min_size=1, max_size=30), label="q_pos")))
    pre, lo, hi = _core.runs_kernel(q_pos, left, right, chunk, n)
    assert equals_line(_core.runs_kernel) == (
        "{j : j <= prefix_last} | {j : lo <= j <= hi} == "
        "{j : (j < sink_tokens and j <= p) or lo(p) <= j <= hi(p)}")
    keys = np.arange(0, 600)
    for t, p in enumerate(q_pos):
        lo_p = max(0, p - left if left >= 0 else 0, (p // chunk) * chunk if chunk else 0)
        vis = ((keys < n) & (keys <= p)) | ((keys >= lo_p) & ((keys <= p + right) if right >= 0 else True))
        got = (keys <= pre[t]) | ((keys >= lo[t]) & (keys <= hi[t]))
        assert np.array_equal(got, vis), (f"query {p}: runs 0..{pre[t]}, {lo[t]}..{hi[t]}; first wrong key "
                                          f"{int(keys[np.argmax(got != vis)])}")
        assert pre[t] < 0 or pre[t] + 1 < lo[t], "the two runs must not touch (one run then)"
        assert (hi[t] >= 2 ** 62) == (right < 0)
    for t in range(len(q_pos) - 1):                  # what the item's passes rely on
        assert pre[t] <= pre[t + 1] and lo[t] <= lo[t + 1] and hi[t] <= hi[t + 1]


@given(data=st.data())
def test_lanes_kernel(data):
    tstart = data.draw(st.sampled_from([0, 64, 128, 2 ** 40]), label="tstart")
    n = data.draw(st.integers(1, 12), label="queries")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    lo = tstart + rng.integers(-80, 80, n)
    hi = lo + rng.integers(-3, 100, n)
    present = rng.random(TILE) < data.draw(st.sampled_from([0.0, 0.1, 0.9]), label="density")
    no_lo = data.draw(st.booleans(), label="lo None")
    ja, jb = _core.lanes_kernel(None if no_lo else lo, hi, tstart, present)
    assert equals_line(_core.lanes_kernel) == (
        "ja, jb = clip(lo - tstart, 0, TILE), clip(hi + 1 - tstart, 0, TILE); "
        "(0, 0) where ja >= jb or no present lane lies in ja .. jb-1")
    lo_eff = np.full(n, -10 ** 18) if no_lo else lo
    want_a, want_b = np.clip(lo_eff - tstart, 0, TILE), np.clip(hi + 1 - tstart, 0, TILE)
    lane = np.arange(TILE)
    empty = (want_a >= want_b) | ~((present[None] & (lane >= want_a[:, None]) & (lane < want_b[:, None])).any(1))
    want_a, want_b = np.where(empty, 0, want_a), np.where(empty, 0, want_b)
    assert np.array_equal(ja, want_a) and np.array_equal(jb, want_b), (ja, jb, want_a, want_b)


# ------------------------------------------------------------- alignment

@pytest.mark.parametrize("dtype", DTYPES)
def test_misaligned_arrays_are_refused(dtype):
    """The kernel's vector loads assume element alignment: a misaligned array is an error here
    (swaref._backend hands over an aligned copy instead)."""
    T, H, D = 8, 1, 16
    item = np.dtype(dtype).itemsize
    buf = np.zeros(T * H * D * item + 1, dtype=np.uint8)
    bad = np.frombuffer(buf.data, dtype=dtype, count=T * H * D, offset=1).reshape(T, H, D)
    good = np.zeros((T, H, D), dtype=dtype)
    pos = np.arange(T, dtype=np.int64)
    e, ep = _empty(H, D, dtype)
    for args in ((bad, good, good), (good, bad, good), (good, good, bad)):
        with pytest.raises(ValueError, match="not aligned"):
            _core.band_attention(args[0], pos, args[1], args[2], pos, e, e, ep, 0, -1, 3, 0, 0, 0, 0.25, 1)
