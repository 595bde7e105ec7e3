"""Spec 1.1's variants on the compiled kernel (backend="cython"): softcap, sinks, ring slack and
rollback, with the guarantees tests/test_core.py gives the plain path:

* against the independent float64 oracle (tests/oracle.py: the cap before the mask, the sinks
  as an extra softmax column) and the reference: float64 within 1e-12 x max|V|, float32
  within 1e-5 x max|V| (the float32 kernel casts a sink to float32 once: its error is at most
  |sink| x 2**-24 x max|V|, inside that bound for |sink| <= 160; sinks beyond float32's range
  become +-inf there, and the rows they break are recomputed in float64 with the exact sink);
* bitwise: one-shot == prefill with any schedule == prefill + decode, 1 and 2 threads, caches
  with slack (C > W), and decoding through drafts that are rolled back;
* overflow: rows forced past the input precision's range (huge scores against a sink, huge
  values, scores beyond float64) are finite, match the oracle or the reference, and keep the
  bits chunk-invariant.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import swaref
from swaref import _core
from oracle import assert_bitwise_equal, assert_close, dense_attention_f64
from ref_helpers import assert_runs_without_the_gil, draw_variant, random_qkv
from test_core import (BIG, KERNEL_DTYPES, OFFSETS, _assert_finite, assert_schedule_invariant,
                       cache_for, schedules, tol)


@pytest.fixture(autouse=True)
def threads_even_for_small_shapes():
    """As in tests/test_core.py: small calls may use every thread they are given."""
    old = _core.min_work_per_thread(1)
    yield
    _core.min_work_per_thread(old)


# ------------------------------------------------------- against the oracle

# The hypothesis comparison with the oracle, and the one of overflowing rows, draw a variant
# (or none) in tests/test_core.py: one property each for the plain kernel and its variants.

@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("D", [1, 64, 128, 256])
def test_variants_head_dims_and_gqa(D, dtype):
    """Long rows (several tiles), wide heads, GQA: the variants against the oracle, and GQA
    bitwise equal to repeating K/V."""
    rng = np.random.default_rng(D)
    T, Hkv, G, W = 150, 2, 4, 100
    q, k, v = random_qkv(rng, T, T, Hkv * G, Hkv, D, dtype=dtype)
    q *= 4
    pos = np.arange(2 ** 40, 2 ** 40 + T, dtype=np.int64)
    for variant in ({"softcap": 1.5}, {"sinks": np.linspace(-3, 6, Hkv * G)}):
        got = swaref.attention(q, k, v, window=W, q_pos=pos, k_pos=pos, backend="cython", **variant)
        assert_close(got, dense_attention_f64(q, k, v, pos, pos, W, **variant), atol=tol(v, dtype),
                     name=f"{list(variant)} D={D}")
        rep = swaref.attention(q, np.repeat(k, G, axis=1), np.repeat(v, G, axis=1), window=W, q_pos=pos,
                               k_pos=pos, backend="cython", **variant)
        assert_bitwise_equal(got, rep, name=f"GQA vs repeated K/V, {list(variant)}")


def test_sink_worked_example_of_the_spec():
    """Scores (0, 0), sink 0: w = (1/3, 1/3), o = (v0 + v1) / 3, exactly on both dtypes."""
    for dtype in KERNEL_DTYPES:
        q = np.zeros((1, 1, 2), dtype=dtype)
        k = np.ones((2, 1, 2), dtype=dtype)
        v = np.array([[[3.0, 0.0]], [[0.0, 6.0]]], dtype=dtype)
        out = swaref.attention(q, k, v, window=2, sinks=[0.0], backend="cython")
        assert_bitwise_equal(out, np.array([[[1.0, 2.0]]], dtype=dtype), name=f"sink example {dtype.__name__}")


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_variants_change_the_answer_and_limits_agree(dtype):
    """A cap of 1e30 or a sink of -1e30 is the plain answer; a tiny cap gives uniform weights; a
    sink far above every score leaves (almost) nothing, never a value row."""
    rng = np.random.default_rng(8)
    q, k, v = random_qkv(rng, 40, 40, 4, 2, 16, dtype=dtype)
    q *= 3
    plain = swaref.attention(q, k, v, window=9, backend="cython")
    assert_close(swaref.attention(q, k, v, window=9, softcap=1e30, backend="cython"), plain, tol(v, dtype),
                 name="cap 1e30")
    assert_bitwise_equal(swaref.attention(q, k, v, window=9, sinks=[-1e30] * 4, backend="cython"), plain,
                         name="sink -1e30: weight exactly 0")
    assert np.abs(swaref.attention(q, k, v, window=9, softcap=2.0, backend="cython") - plain).max() > 1e-3
    uniform = dense_attention_f64(np.zeros_like(q), k, v, np.arange(40), np.arange(40), 9)
    assert_close(swaref.attention(q, k, v, window=9, softcap=1e-6, backend="cython"), uniform, 1e-5,
                 name="tiny cap: uniform")
    assert np.abs(swaref.attention(q, k, v, window=9, sinks=[80.0] * 4, backend="cython")).max() < 1e-20


@pytest.mark.parametrize("cap", [1e39, 1e300, 1e-40, 1e-50, 1e-300])
def test_float32_caps_outside_float32s_range(cap):
    """The float32 kernel casts the cap once: a cap beyond FLT_MAX becomes inf (0 * inf: NaN, so
    every row takes the float64 fallback, which caps with the float64 value); a subnormal or
    zero float32 cap leaves every score at about +-cap, i.e. 0: uniform weights, as exact."""
    rng = np.random.default_rng(1)
    q, k, v = random_qkv(rng, 40, 40, 4, 2, 16, dtype=np.float32)
    pos = np.arange(40)
    got = swaref.attention(q, k, v, window=9, softcap=cap, backend="cython")
    assert_close(got, dense_attention_f64(q, k, v, pos, pos, 9, softcap=cap), atol=tol(v, np.float32),
                 name=f"float32, cap {cap}")


# ------------------------------------------------------ bitwise invariance

@given(data=st.data())
def test_variants_bitwise_chunk_invariance_with_slack(data):
    """attention == prefill(any schedule) == prefill + decode, threads 1 and 2, caches of W + slack
    slots, softcap or sinks or neither: to the bit."""
    W = data.draw(st.sampled_from([1, 2, 5, 16, 64, 100, None]), label="W")
    T = data.draw(st.integers(1, 3 * (W or 40) + 40), label="T")
    Hkv = data.draw(st.integers(1, 2), label="Hkv")
    G = data.draw(st.sampled_from([1, 2, 4]), label="G")
    D = data.draw(st.sampled_from([1, 3, 16, 20, 64]), label="D")
    dtype = data.draw(st.sampled_from(KERNEL_DTYPES), label="dtype")
    start = data.draw(st.sampled_from(OFFSETS), label="start")
    slack = data.draw(st.sampled_from([0, 1, 3, 17]), label="slack")
    sched = data.draw(schedules(T), label="schedule")
    n_pre = data.draw(st.integers(1, T), label="prefill before decoding")
    variant = draw_variant(data, Hkv * G, plain=True)
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    q, k, v = random_qkv(rng, T, T, Hkv * G, Hkv, D, dtype=dtype)
    one_shot = assert_schedule_invariant(q, k, v, W, start, sched, n_pre, slack=slack, **variant)
    if slack:                                   # and the same bits as the ring without slack
        assert_bitwise_equal(assert_schedule_invariant(q, k, v, W, start, sched, n_pre, **variant), one_shot,
                             name="slack vs no slack")


@settings(max_examples=settings.default.max_examples)
@given(data=st.data())
def test_decode_through_rolled_back_drafts_is_bitwise_one_shot(data):
    """Speculative decoding: before each real token, decode some draft tokens and roll them back
    (at most max_rollback); the real tokens' outputs are the one-shot bits, threads 1 and 2."""
    W = data.draw(st.sampled_from([1, 2, 5, 16, 64]), label="W")
    slack = data.draw(st.integers(0, 6), label="slack")
    T = data.draw(st.integers(2, 2 * W + 20), label="T")
    n_pre = data.draw(st.integers(1, T - 1), label="prefill")
    Hkv, G, D = data.draw(st.sampled_from([(1, 1, 4), (2, 2, 16), (1, 4, 33)]), label="Hkv, G, D")
    dtype = data.draw(st.sampled_from(KERNEL_DTYPES), label="dtype")
    start = data.draw(st.sampled_from(OFFSETS), label="start")
    variant = draw_variant(data, Hkv * G, plain=True)
    drafts = data.draw(st.lists(st.integers(0, slack + 1), min_size=T - n_pre, max_size=T - n_pre),
                       label="drafts before each token")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    q, k, v = random_qkv(rng, T, T, Hkv * G, Hkv, D, dtype=dtype)
    pos = np.arange(start, start + T, dtype=np.int64)
    one_shot = swaref.attention(q, k, v, window=W, q_pos=pos, k_pos=pos, backend="cython", num_threads=1,
                                **variant)
    c = cache_for(W, Hkv, D, dtype, T, slack)
    outs = [swaref.prefill(q[:n_pre], k[:n_pre], v[:n_pre], c, start=start, backend="cython", **variant)]
    for i, n_draft in zip(range(n_pre, T), drafts):
        n_draft = min(n_draft, swaref.max_rollback(c) if c.n_seen else 0)   # a fresh ring allows slack + 1
        dq, dk, dv = random_qkv(rng, n_draft, n_draft, Hkv * G, Hkv, D, dtype=dtype)
        for j in range(n_draft):
            swaref.decode_step(dq[j:j + 1], dk[j:j + 1], dv[j:j + 1], c, backend="cython", **variant)
        if n_draft <= swaref.max_rollback(c) or n_draft == c.n_seen:
            swaref.rollback(c, n_draft)
        else:                                   # the ring cannot take them back: no draft this time
            pytest.skip("unreachable: max_rollback after n drafts is at least n for n <= slack + 1")
        outs.append(swaref.decode_step(q[i:i + 1], k[i:i + 1], v[i:i + 1], c, backend="cython",
                                       num_threads=1 + i % 2, **variant))
    assert_bitwise_equal(np.concatenate(outs), one_shot, name=f"decode through rolled-back drafts {drafts}")


# ------------------------------------------------------------- overflow

@pytest.mark.parametrize("sink", [0.0, 1e38, 2.5e38, 5e38, -5e38, 1e300, -1e300])
def test_float32_scores_past_flt_max_against_a_sink(sink):
    """q = k = 1e19 (scores 2e38 x 2 past FLT_MAX); sinks around them, and beyond float32 (cast to
    +-inf in the fast path): the float64 row with the exact sink, as the oracle."""
    q = k = np.full((2, 1, 4), 1e19, dtype=np.float32)
    v = np.array([[[1.0, 2.0, 3.0, 4.0]], [[5.0, 6.0, 7.0, 8.0]]], dtype=np.float32)
    got = swaref.attention(q, k, v, window=2, sinks=[sink], backend="cython")
    _assert_finite(got, f"sink {sink}")
    pos = np.arange(2)
    assert_close(got, dense_attention_f64(q, k, v, pos, pos, 2, sinks=[sink]), atol=tol(v, np.float32),
                 name=f"sink {sink} vs oracle")


@pytest.mark.parametrize("variant", [{}, {"sinks": [0.0]}, {"sinks": [1e300]}, {"sinks": [-1e300]},
                                     {"softcap": 3.0}, {"softcap": 1e-3}])
@pytest.mark.parametrize("signs", [(1, -1), (-1, 1), (-1, -1), (1, 1)])
def test_float64_scores_beyond_float64(variant, signs):
    """Scores +-1e320 (q, k near 1e160): the kernel's float64 row factors them as the reference
    does (the largest score wins, or the sink does; a cap maps them to +-c), never NaN."""
    mag = 1e160
    q = np.array([[[mag, 0.0]]])
    k = np.array([[[signs[0] * mag, 0.0]], [[signs[1] * mag, 0.0]]])
    v = np.array([[[1.0, 2.0]], [[5.0, 7.0]]])
    got = swaref.attention(q, k, v, window=2, k_pos=[0, 1], q_pos=[1], backend="cython", **variant)
    want = swaref.attention(q, k, v, window=2, k_pos=[0, 1], q_pos=[1], **variant)
    _assert_finite(got, f"{variant}")
    assert_close(got, want, atol=1e-15 * 7, name=f"{variant} vs reference")
    # A chain that overflows both ways (+inf then -inf: NaN in float64) under a cap.
    q2 = np.array([[[mag, mag]]])
    k2 = np.array([[[mag, -mag]], [[mag, 0.5 * mag]]])
    got = swaref.attention(q2, k2, v, window=2, k_pos=[0, 1], q_pos=[1], backend="cython", **variant)
    want = swaref.attention(q2, k2, v, window=2, k_pos=[0, 1], q_pos=[1], **variant)
    assert_close(got, want, atol=1e-15 * 7, name=f"{variant}, NaN chain, vs reference")


@pytest.mark.parametrize("cap", [0.5, 3.0, 50.0])
@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_softcap_does_not_hide_an_overflowed_score(dtype, cap):
    """A score chain that overflows stays +-inf whatever the true score (big - big = 0 here: a
    fused multiply-add keeps the infinite sum), and the cap would make that a finite, wrong
    +cap: such a row must go to the float64 fallback and give the reference's answer."""
    big = BIG[dtype] / 4
    q = np.array([[[big, big]]], dtype=dtype)
    k = np.array([[[4.0, -4.0]], [[0.5, 0.25]], [[-1.0, 0.5]]], dtype=dtype)     # true q.k: 0, 0.75 big, -0.5 big
    v = np.array([[[1.0, 2.0]], [[5.0, 7.0]], [[-3.0, 11.0]]], dtype=dtype)
    pos = np.arange(3)
    got = swaref.attention(q, k, v, window=3, q_pos=[2], k_pos=pos, softcap=cap, backend="cython")
    assert_close(got, swaref.attention(q, k, v, window=3, q_pos=[2], k_pos=pos, softcap=cap),
                 atol=tol(v, dtype), name=f"cap {cap} vs reference")
    if dtype == np.float32:                       # the oracle's float64 scores are exact here
        assert_close(got, dense_attention_f64(q, k, v, [2], pos, 3, softcap=cap), atol=tol(v, dtype),
                     name=f"cap {cap} vs oracle")


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_huge_values_with_sinks(dtype):
    """Values at 0.9 x the dtype's largest number, equal weights and a sink: the unnormalised sum
    overflows, the answer (0.9 x max x the keys' share) does not."""
    W, D = 70, 5
    q = np.zeros((W, 2, D), dtype=dtype)
    k = np.ones((W, 1, D), dtype=dtype)
    v = np.full((W, 1, D), 0.9 * BIG[dtype], dtype=dtype)
    v[:, :, 1] *= -1
    sinks = [0.0, 2.0]
    got = swaref.attention(q, k, v, window=W, sinks=sinks, backend="cython")
    _assert_finite(got, "huge values with sinks")
    assert_close(got, dense_attention_f64(q, k, v, np.arange(W), np.arange(W), W, sinks=sinks),
                 atol=tol(v, dtype), name="huge values with sinks vs oracle")


# ------------------------------------------------------------------ GIL

@pytest.mark.parametrize("variant", [{"softcap": 5.0}, {"sinks": [1.0] * 8}])
def test_variants_run_without_the_gil(variant):
    """While a long variant call runs in one thread, Python code runs in another."""
    rng = np.random.default_rng(0)
    q, k, v = random_qkv(rng, 2048, 2048, 8, 2, 64, dtype=np.float64)
    assert_runs_without_the_gil(
        lambda: swaref.attention(q, k, v, window=512, backend="cython", num_threads=1, **variant))
