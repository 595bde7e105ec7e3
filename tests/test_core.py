"""The compiled kernel (backend="cython", swaref/_core.pyx via swaref/_backend.py).

* against the independent float64 oracle (tests/oracle.py) and the reference:
  float64 within 1e-12 x max|V|, float32 within 1e-5 x max|V|;
* bitwise chunk invariance: one-shot attention == prefill with any schedule ==
  prefill + token-by-token decode, for any thread count and a ring that wrapped;
* NaN/Inf outside a query's window or in empty/stale slots never reaches it;
* finite input whose reference result is finite never gives NaN/Inf (rows that overflow are
  recomputed in float64, chunk-invariantly);
* every bad input raises a SwarefError naming the argument; non-contiguous
  inputs are copied and give the contiguous answer;
* no T x S array: peak traced memory stays O(T + block x W).
"""
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import swaref
from swaref import _backend, _core
from swaref.errors import SwarefError, SwarefTypeError
from oracle import assert_bitwise_equal, assert_close, dense_attention_f64
from ref_helpers import assert_cache_state, draw_variant, expected_state, increasing_positions, random_qkv, window_for

KERNEL_DTYPES = (np.float32, np.float64)


@pytest.fixture(autouse=True)
def threads_even_for_small_shapes():
    """The kernel runs small calls on one thread; here every call may use all it is given,
    so that the thread-count invariance below is exercised on small shapes too."""
    old = _core.min_work_per_thread(1)
    yield
    _core.min_work_per_thread(old)
OFFSETS = (0, 10 ** 9, 2 ** 40)


def tol(v, dtype):
    """The issue's tolerance: 1e-12 x max|V| (float64), 1e-5 x max|V| (float32)."""
    vmax = max(1.0, float(np.max(np.abs(v.astype(np.float64)))))
    return (1e-12 if np.dtype(dtype) == np.float64 else 1e-5) * vmax


def cache_for(window, Hkv, D, dtype, T, slack=0):
    """A sliding cache of W + slack slots (spec 1.1's slack), or a full-attention cache of T."""
    return swaref.RollingBufferCache(window, Hkv, D, dtype=dtype, capacity=window + slack if window else T)


def decode_rest(q, k, v, cache, a, num_threads=None, **variant):
    return [swaref.decode_step(q[i:i + 1], k[i:i + 1], v[i:i + 1], cache, backend="cython",
                               num_threads=num_threads, **variant) for i in range(a, q.shape[0])]


@st.composite
def schedules(draw, T):
    """A chunk schedule for T tokens: equal chunks or uneven cut points."""
    if draw(st.booleans()):
        return draw(st.integers(1, T))
    cuts = sorted(draw(st.sets(st.integers(1, T - 1), max_size=6))) if T > 1 else []
    edges = [0] + cuts + [T]
    return [b - a for a, b in zip(edges, edges[1:])]


# ------------------------------------------------------- against the oracle

@settings(max_examples=3 * settings.default.max_examples // 2)   # scales with HYPOTHESIS_PROFILE
@given(data=st.data())
def test_attention_matches_oracle_and_reference(data):
    T = data.draw(st.integers(1, 40), label="T")
    S = data.draw(st.integers(T, T + 30), label="S")
    Hkv = data.draw(st.integers(1, 3), label="Hkv")
    G = data.draw(st.sampled_from([1, 2, 4]), label="G")
    D = data.draw(st.sampled_from([1, 2, 3, 5, 8, 16, 17, 33]), label="D")
    W = window_for(data.draw, S)
    dtype = data.draw(st.sampled_from(KERNEL_DTYPES), label="dtype")
    k_pos = data.draw(increasing_positions(S, max_offset=2 ** 40), label="k_pos")
    q_pos = k_pos[S - T:]
    variant = draw_variant(data, Hkv * G, plain=True)        # spec 1.1: softcap, sinks, or neither
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    q, k, v = random_qkv(rng, T, S, Hkv * G, Hkv, D, dtype=dtype, vscale=data.draw(st.sampled_from([1.0, 1e3])))
    q *= dtype(data.draw(st.sampled_from([0.1, 1.0, 8.0]), label="score magnitude"))
    got = swaref.attention(q, k, v, window=W, q_pos=q_pos, k_pos=k_pos, backend="cython", **variant)
    assert got.dtype == dtype and got.shape == q.shape
    assert_close(got, dense_attention_f64(q, k, v, q_pos, k_pos, W, **variant), atol=tol(v, dtype),
                 name=f"cython {list(variant)} vs oracle")
    ref = swaref.attention(q, k, v, window=W, q_pos=q_pos, k_pos=k_pos, **variant)
    assert_close(got, ref, atol=tol(v, dtype), name=f"cython {list(variant)} vs reference")


@pytest.mark.parametrize("D", [1, 3, 64, 128, 256])
@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_head_dims_and_gqa(D, dtype):
    rng = np.random.default_rng(D)
    T, Hkv, G, W = 70, 2, 4, 20
    for start in OFFSETS:
        pos = np.arange(start, start + T, dtype=np.int64)
        q, k, v = random_qkv(rng, T, T, Hkv * G, Hkv, D, dtype=dtype)
        got = swaref.attention(q, k, v, window=W, q_pos=pos, k_pos=pos, backend="cython")
        assert_close(got, dense_attention_f64(q, k, v, pos, pos, W), atol=tol(v, dtype),
                     name=f"D={D} start={start}")
        # GQA reads KV head h // G: the same as repeating K/V to Hq heads.
        rep = swaref.attention(q, np.repeat(k, G, axis=1), np.repeat(v, G, axis=1), window=W,
                               q_pos=pos, k_pos=pos, backend="cython")
        assert_bitwise_equal(got, rep, name=f"GQA vs repeated K/V, D={D}")


@given(data=st.data())
def test_chunked_prefill_matches_reference_prefill(data):
    T = data.draw(st.integers(1, 50), label="T")
    W = data.draw(st.sampled_from([1, 2, 3, 7, 16, None]), label="W")
    Hkv = data.draw(st.integers(1, 2), label="Hkv")
    G = data.draw(st.sampled_from([1, 3]), label="G")
    D = data.draw(st.sampled_from([1, 4, 9]), label="D")
    dtype = data.draw(st.sampled_from(KERNEL_DTYPES), label="dtype")
    start = data.draw(st.sampled_from(OFFSETS), label="start")
    sched = data.draw(schedules(T), label="schedule")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    q, k, v = random_qkv(rng, T, T, Hkv * G, Hkv, D, dtype=dtype)
    c_ref, c_cy = cache_for(W, Hkv, D, dtype, T), cache_for(W, Hkv, D, dtype, T)
    ref = swaref.prefill(q, k, v, c_ref, chunk_size=sched, start=start)
    got = swaref.prefill(q, k, v, c_cy, chunk_size=sched, start=start, backend="cython")
    assert_close(got, ref, atol=tol(v, dtype), name=f"prefill schedule {sched}")
    pos = np.arange(start, start + T)
    assert_close(got, dense_attention_f64(q, k, v, pos, pos, W), atol=tol(v, dtype), name="prefill vs oracle")
    # The kernel never writes: the cache state comes from the shared cache_write, bitwise.
    assert_cache_state(c_cy, c_ref.k, c_ref.v, c_ref.positions, c_ref.n_seen, c_ref.next_position)


# ------------------------------------------------------ bitwise invariance

@given(data=st.data())
def test_bitwise_chunk_invariance(data):
    """attention == prefill(any schedule) == prefill + decode, threads 1 and 2, to the bit."""
    W = data.draw(st.sampled_from([1, 2, 5, 16, 64, 100, None]), label="W")
    T = data.draw(st.integers(1, 3 * (W or 40) + 40), label="T")       # T > 3W: the ring wraps
    Hkv = data.draw(st.integers(1, 2), label="Hkv")
    G = data.draw(st.sampled_from([1, 2, 4]), label="G")
    D = data.draw(st.sampled_from([1, 3, 16, 20, 64]), label="D")
    dtype = data.draw(st.sampled_from(KERNEL_DTYPES), label="dtype")
    start = data.draw(st.sampled_from(OFFSETS), label="start")
    sched = data.draw(schedules(T), label="schedule")
    n_pre = data.draw(st.integers(1, T), label="prefill before decoding")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    q, k, v = random_qkv(rng, T, T, Hkv * G, Hkv, D, dtype=dtype)
    assert_schedule_invariant(q, k, v, W, start, sched, n_pre)


def assert_schedule_invariant(q, k, v, W, start, sched, n_pre, slack=0, **variant):
    """attention (1 thread) == attention (2 threads) == prefill(sched) == prefill(n_pre) + decode,
    to the bit, the caches with `slack` extra slots, `variant` (softcap= or sinks=) passed to
    every call; returns the one-shot output."""
    T, Hkv, D = k.shape
    pos = np.arange(start, start + T, dtype=np.int64)
    # Each call below may take scratch kept from an earlier one: poisoned first (NaN, garbage
    # indices), so that any read of scratch the call did not write shows in its bits.
    _core._poison_scratch()
    one_shot = swaref.attention(q, k, v, window=W, q_pos=pos, k_pos=pos, backend="cython", num_threads=1,
                                **variant)
    _core._poison_scratch()
    two = swaref.attention(q, k, v, window=W, q_pos=pos, k_pos=pos, backend="cython", num_threads=2, **variant)
    assert_bitwise_equal(two, one_shot, name="attention, 2 threads vs 1")

    _core._poison_scratch()
    c = cache_for(W, Hkv, D, q.dtype, T, slack)
    chunked = swaref.prefill(q, k, v, c, chunk_size=sched, start=start, backend="cython", num_threads=2, **variant)
    assert_bitwise_equal(chunked, one_shot, name=f"prefill {sched} vs one-shot attention")

    _core._poison_scratch()
    c = cache_for(W, Hkv, D, q.dtype, T, slack)
    first = swaref.prefill(q[:n_pre], k[:n_pre], v[:n_pre], c, start=start, backend="cython", **variant)
    mixed = np.concatenate([first] + decode_rest(q, k, v, c, n_pre, num_threads=1, **variant))
    assert_bitwise_equal(mixed, one_shot, name=f"prefill {n_pre} + decode vs one-shot attention")
    return one_shot


def test_decode_deep_into_a_wrapped_ring():
    """A ring wrapped 50 times at a 2**40 offset still decodes to the one-shot bits."""
    W, Hkv, G, D, T = 8, 2, 2, 16, 400
    _core.min_work_per_thread(1 << 20)            # 800 tiny steps: one thread each (threads: tested above)
    for dtype in KERNEL_DTYPES:
        rng = np.random.default_rng(3)
        q, k, v = random_qkv(rng, T, T, Hkv * G, Hkv, D, dtype=dtype)
        start = 2 ** 40 + 5
        pos = np.arange(start, start + T, dtype=np.int64)
        one_shot = swaref.attention(q, k, v, window=W, q_pos=pos, k_pos=pos, backend="cython")
        c = swaref.RollingBufferCache(W, Hkv, D, dtype=dtype)
        out = np.concatenate([swaref.prefill(q[:3], k[:3], v[:3], c, start=start, backend="cython")]
                             + decode_rest(q, k, v, c, 3))
        assert_bitwise_equal(out, one_shot, name=f"decode through a wrapped ring ({dtype.__name__})")
        ek, ev, ep = expected_state(W, Hkv, D, dtype, k, v, start, T)
        assert_cache_state(c, ek, ev, ep, T, start + T)


# -------------------------------------------------------------- poison

@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_poison_outside_the_window_never_reaches_a_query(dtype, bad):
    rng = np.random.default_rng(7)
    T, Hkv, G, D, W = 150, 2, 2, 8, 10
    q, k, v = random_qkv(rng, T, T, Hkv * G, Hkv, D, dtype=dtype)
    pos = np.arange(T, dtype=np.int64)
    clean = swaref.attention(q[-20:], k, v, window=W, q_pos=pos[-20:], k_pos=pos, backend="cython")
    kp, vp = k.copy(), v.copy()
    kp[: T - 20 - W + 1] = bad                    # every key the last 20 queries cannot see
    vp[: T - 20 - W + 1] = bad
    got = swaref.attention(q[-20:], kp, vp, window=W, q_pos=pos[-20:], k_pos=pos, backend="cython")
    assert_bitwise_equal(got, clean, name="poisoned keys outside the window")
    # Future keys (causal side) poisoned: queries 0 .. 99 never see keys >= 100.
    kf, vf = k.copy(), v.copy()
    kf[100:], vf[100:] = bad, bad
    got = swaref.attention(q[:100], kf, vf, window=W, q_pos=pos[:100], k_pos=pos, backend="cython")
    assert np.isfinite(got).all()
    assert_bitwise_equal(got, swaref.attention(q[:100], k, v, window=W, q_pos=pos[:100], k_pos=pos,
                                               backend="cython"), name="poisoned future keys")


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_poison_in_empty_and_stale_slots(dtype):
    rng = np.random.default_rng(11)
    W, Hkv, D, T = 16, 1, 8, 40
    q, k, v = random_qkv(rng, T, T, 2, Hkv, D, dtype=dtype)
    pos = np.arange(T, dtype=np.int64)
    one_shot = swaref.attention(q, k, v, window=W, backend="cython")
    c = swaref.RollingBufferCache(W, Hkv, D, dtype=dtype)
    c.k[:] = np.nan                               # empty slots (positions -1)
    c.v[:] = np.inf
    out = [swaref.prefill(q[:5], k[:5], v[:5], c, backend="cython")]
    for i in range(5, T):
        # Before each step, poison every slot whose position the next query cannot see.
        stale = (c.positions >= 0) & (c.positions <= i - W)
        c.k[stale], c.v[stale] = np.nan, -np.inf
        out.append(swaref.decode_step(q[i:i + 1], k[i:i + 1], v[i:i + 1], c, backend="cython"))
    assert_bitwise_equal(np.concatenate(out), one_shot, name="poisoned empty/stale slots")
    del pos


# ------------------------------------------------------ threads, contiguity

def test_openmp_and_thread_defaults():
    assert isinstance(_core.openmp_enabled(), bool)
    assert _core.default_threads() >= 1
    with pytest.raises(ValueError):
        _core.min_work_per_thread(0)
    rng = np.random.default_rng(0)
    q, k, v = random_qkv(rng, 300, 300, 8, 2, 32, dtype=np.float32)
    outs = [swaref.attention(q, k, v, window=50, backend="cython", num_threads=n) for n in (None, 1, 2, 3, 8)]
    for o in outs[1:]:
        assert_bitwise_equal(o, outs[0], name="thread count")


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_decode_items_of_several_kv_heads_keep_the_bits(dtype):
    """Few rows (T x G <= 16) put several KV heads in one work item (tiles outer, heads inner, rows
    read ahead): a decode step and a few draft tokens equal one-shot attention (one KV head per
    item) to the bit, for any thread count (heads split unevenly: Hkv = 3, 5) and any read-ahead
    budget, including a ring that wrapped and a window that cuts a tile."""
    old_touch = _core.decode_touch_bytes()
    try:
        for Hkv, G, D, W in ((3, 1, 16, 100), (5, 2, 40, 64), (8, 4, 64, 130), (2, 8, 20, 1000)):
            rng = np.random.default_rng(Hkv * 10 + G)
            T = 300
            q, k, v = random_qkv(rng, T, T, Hkv * G, Hkv, D, dtype=dtype)
            pos = np.arange(7, 7 + T, dtype=np.int64)
            one_shot = swaref.attention(q, k, v, window=W, q_pos=pos, k_pos=pos, backend="cython", num_threads=1)
            c = swaref.RollingBufferCache(W, Hkv, D, dtype=dtype)
            swaref.prefill(q[:T - 4], k[:T - 4], v[:T - 4], c, start=7, backend="cython")
            for i, (threads, touch) in enumerate(((1, old_touch), (2, 0), (3, 1), (8, 4096))):
                _core.decode_touch_bytes(touch)
                out = swaref.decode_step(q[T - 4 + i:T - 3 + i], k[T - 4 + i:T - 3 + i], v[T - 4 + i:T - 3 + i],
                                         c, backend="cython", num_threads=threads)
                assert_bitwise_equal(out, one_shot[T - 4 + i:T - 3 + i],
                                     name=f"decode Hkv={Hkv} G={G} threads={threads} touch={touch}")
            if 2 * G <= 16:                   # two draft tokens over the explicit keys: still few rows
                for threads in (1, 2, 3):
                    two = swaref.attention(q[-2:], k, v, window=W, q_pos=pos[-2:], k_pos=pos, backend="cython",
                                           num_threads=threads)
                    assert_bitwise_equal(two, one_shot[-2:], name=f"2 queries Hkv={Hkv} G={G} threads={threads}")
        # The check is not vacuous: a wrong twin (one value element of an early key in the window
        # off by 1e-3) fails it.
        c2 = swaref.RollingBufferCache(W, Hkv, D, dtype=dtype)
        v2 = v.copy()
        v2[T - 10, 0, 0] *= dtype(1.001)
        swaref.prefill(q[:T - 1], k[:T - 1], v2[:T - 1], c2, start=7, backend="cython")
        bumped = swaref.decode_step(q[-1:], k[-1:], v2[-1:], c2, backend="cython", num_threads=2)
        with pytest.raises(AssertionError):
            assert_bitwise_equal(bumped, one_shot[-1:], name="a wrong twin")
    finally:
        _core.decode_touch_bytes(old_touch)
    with pytest.raises(ValueError):
        _core.decode_touch_bytes(-1)


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_kept_scratch_never_changes_a_bit(dtype):
    """band_attention keeps its scratch arrays between calls (_core._SCRATCH): the same calls on
    fresh scratch, on scratch left by other shapes, and on scratch poisoned with NaN and garbage
    indices give the same bits.  Prefill-sized and decode-sized items, sinks and a soft cap."""
    rng = np.random.default_rng(7)
    T, Hkv, G, D, W = 150, 3, 2, 20, 40
    q, k, v = random_qkv(rng, T, T, Hkv * G, Hkv, D, dtype=dtype)
    sinks = rng.standard_normal(Hkv * G)

    def calls():
        outs = []
        for variant in ({}, {"sinks": sinks}, {"softcap": 0.7}):
            c = swaref.RollingBufferCache(W, Hkv, D, dtype=dtype)
            outs.append(swaref.prefill(q[:100], k[:100], v[:100], c, chunk_size=33, backend="cython", **variant))
            outs += decode_rest(q[:110], k[:110], v[:110], c, 100, **variant)
        return outs

    _core._SCRATCH.clear()
    fresh = calls()
    assert _core._poison_scratch() > 0, "no scratch was kept: the pool is not exercised"
    for name, got in (("poisoned", calls()), ("kept", calls())):
        for i, (a, b) in enumerate(zip(got, fresh)):
            assert_bitwise_equal(a, b, name=f"{name} scratch, call {i}")


def test_kept_scratch_stays_bounded():
    """However many shapes and sizes are called, the kept scratch holds at most SCRATCH_KEYS keys
    of SCRATCH_SETS sets, none above SCRATCH_MAX_BYTES (a prefill-sized set is not kept)."""
    rng = np.random.default_rng(3)
    _core._SCRATCH.clear()
    for D in range(1, 41):                                     # 40 shapes: more keys than are kept
        q, k, v = random_qkv(rng, 2, 2, 2, 1, D)
        swaref.attention(q, k, v, window=2, backend="cython")
    q, k, v = random_qkv(rng, 600, 600, 8, 1, 256, dtype=np.float64)   # 2 threads x 0.9 MiB of scratch
    swaref.attention(q, k, v, window=300, backend="cython", num_threads=2)
    assert not any(key[0] == 8 and key[-1] == 256 for key in _core._SCRATCH), "a set above the bound was kept"
    sets = [bufs for free in _core._SCRATCH.values() for bufs in free]
    assert 0 < len(_core._SCRATCH) <= _core.SCRATCH_KEYS
    assert all(len(free) <= _core.SCRATCH_SETS for free in _core._SCRATCH.values())
    assert max(sum(b.nbytes for b in bufs) for bufs in sets) <= _core.SCRATCH_MAX_BYTES


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_non_contiguous_inputs_are_copied(dtype):
    rng = np.random.default_rng(5)
    T, H, D = 30, 2, 6
    big_q = rng.standard_normal((D, H, T)).astype(dtype)
    big_k = rng.standard_normal((T, H, 2 * D)).astype(dtype)
    q = big_q.transpose(2, 1, 0)                  # [T, H, D], strided
    k = big_k[:, :, ::2]
    v = np.asfortranarray(rng.standard_normal((T, H, D)).astype(dtype))
    assert not (q.flags.c_contiguous or k.flags.c_contiguous or v.flags.c_contiguous)
    got = swaref.attention(q, k, v, window=7, backend="cython")
    want = swaref.attention(*(np.ascontiguousarray(x) for x in (q, k, v)), window=7, backend="cython")
    assert_bitwise_equal(got, want, name="strided inputs")
    c1, c2 = (swaref.RollingBufferCache(7, H, D, dtype=dtype) for _ in range(2))
    assert_bitwise_equal(swaref.prefill(q, k, v, c1, chunk_size=4, backend="cython"),
                         swaref.prefill(*(np.ascontiguousarray(x) for x in (q, k, v)), c2, chunk_size=4,
                                        backend="cython"), name="strided prefill")


def test_no_t_by_s_allocation():
    """Peak traced memory (NumPy allocations, the kernel's scratch included) is O(T + block x W)."""
    T, H, D, W = 4096, 1, 4, 8
    rng = np.random.default_rng(1)
    q, k, v = random_qkv(rng, T, T, H, H, D, dtype=np.float64)
    swaref.attention(q[:8], k[:8], v[:8], window=W, backend="cython")
    tracemalloc.start()
    try:
        out = swaref.attention(q, k, v, window=W, backend="cython", num_threads=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, f"peak {peak} bytes: a T x S float64 array alone would be {8 * T * T}"
    assert out.shape == q.shape


# ------------------------------------------------------------- overflow
# For finite inputs whose reference result is finite, the kernel never returns NaN or Inf: a row
# whose fast path overflows (a score, the scale product, the unnormalised value sum) is
# recomputed in float64 from the row's own data, so the bits stay chunk-invariant.

BIG = {np.float32: float(np.finfo(np.float32).max), np.float64: float(np.finfo(np.float64).max)}


def _overflow_inputs(rng, T, Hkv, G, D, dtype, mode, rows):
    """Standard normal q, k, v with the given (query, head) rows made to overflow the fast path:

    * "qk" (float32): q row = FLT_MAX / 2 and the row's own key (which it always sees) positive
      with sum >= 2, so its score passes FLT_MAX; the reference's float64 score is finite;
    * "v": q row = 0 (equal weights) and the values of its own and previous key at 0.6 x the
      dtype's largest number, so the unnormalised sum passes it; the reference normalises first.
    """
    q, k, v = random_qkv(rng, T, T, Hkv * G, Hkv, D, dtype=dtype)
    for t, h in rows:
        g = h // G
        if mode == "qk":
            q[t, h] = BIG[dtype] / 2
            k[t, g] = 2.0 + np.abs(rng.standard_normal(D))
        else:
            q[t, h] = 0
            v[max(0, t - 1):t + 1, g] = 0.6 * BIG[dtype] * rng.choice([-1.0, 1.0], D)
    return q, k, v


def _assert_finite(x, name):
    bad = ~np.isfinite(x)
    assert not bad.any(), f"{name}: {int(bad.sum())} non-finite elements, first at {tuple(np.argwhere(bad)[0])}"


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_issue_example_huge_qk_gives_the_reference(dtype):
    """Issue 8 item 7: q = k = 1e19 (float32, D = 4: scores 4e38 / 2) gave NaN; the reference
    gives the values' mean, here 1."""
    q = k = np.full((2, 1, 4), 1e19, dtype=dtype)
    v = np.ones((2, 1, 4), dtype=dtype)
    got = swaref.attention(q, k, v, window=2, backend="cython")
    assert_bitwise_equal(got, np.ones((2, 1, 4), dtype=dtype), name="q = k = 1e19")


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_huge_values_with_equal_weights(dtype):
    """W keys with values at 0.9 x max and equal weights: the sum of values reaches W x max,
    the answer (their mean) is 0.9 x max."""
    W, D = 70, 5                                  # 70 keys: the row spans two tiles
    q = np.zeros((W, 2, D), dtype=dtype)
    k = np.ones((W, 1, D), dtype=dtype)
    v = np.full((W, 1, D), 0.9 * BIG[dtype], dtype=dtype)
    v[:, :, 1] *= -1
    got = swaref.attention(q, k, v, window=W, backend="cython")
    _assert_finite(got, "huge values")
    assert_close(got, dense_attention_f64(q, k, v, np.arange(W), np.arange(W), W), atol=tol(v, dtype),
                 name="huge values vs oracle")


def test_scale_beyond_float32_max():
    """scale = 1e39 is a finite float64 but Inf in float32: every row is recomputed."""
    rng = np.random.default_rng(2)
    q, k, v = random_qkv(rng, 30, 30, 4, 2, 8, dtype=np.float32)
    pos = np.arange(30)
    for scale in (1e39, 1e36):
        got = swaref.attention(q, k, v, window=9, scale=scale, backend="cython")
        _assert_finite(got, f"scale {scale}")
        assert_close(got, dense_attention_f64(q, k, v, pos, pos, 9, scale=scale), atol=tol(v, np.float32),
                     name=f"scale {scale} vs oracle")


def test_float64_large_scores_without_overflow():
    """float64 scores near 1e306 stay finite on both paths; the result is the reference's."""
    rng = np.random.default_rng(4)
    q, k, v = random_qkv(rng, 20, 20, 2, 1, 4, dtype=np.float64)
    q *= 1e153
    k *= 1e153
    pos = np.arange(20)
    got = swaref.attention(q, k, v, window=6, backend="cython")
    assert_close(got, dense_attention_f64(q, k, v, pos, pos, 6), atol=tol(v, np.float64), name="float64 1e306")


@settings(max_examples=settings.default.max_examples)
@given(data=st.data())
def test_overflowing_rows_are_finite_exact_and_chunk_invariant(data):
    """Rows forced to overflow (huge q.k or huge values), mixed with ordinary rows: every row
    finite and within tolerance of the oracle; the other rows keep their bits exactly; one-shot
    == prefill(any schedule) == prefill + decode, threads 1 and 2, to the bit."""
    dtype = data.draw(st.sampled_from(KERNEL_DTYPES), label="dtype")
    mode = data.draw(st.sampled_from(["qk", "v"] if dtype == np.float32 else ["v"]), label="mode")
    W = data.draw(st.sampled_from([1, 2, 5, 16, 64, 100, None]), label="W")
    T = data.draw(st.integers(2, 2 * (W or 40) + 30), label="T")
    Hkv = data.draw(st.integers(1, 2), label="Hkv")
    G = data.draw(st.sampled_from([1, 2, 3]), label="G")
    D = data.draw(st.sampled_from([1, 3, 16, 20]), label="D")
    start = data.draw(st.sampled_from(OFFSETS), label="start")
    sched = data.draw(schedules(T), label="schedule")
    n_pre = data.draw(st.integers(1, T), label="prefill before decoding")
    # spec 1.1: huge sinks against huge scores, or a cap, or neither
    variant = draw_variant(data, Hkv * G, sink_scales=(1.0, 1e3, 1e30, 1e38, 1e300), plain=True)
    rows = data.draw(st.lists(st.tuples(st.integers(0, T - 1), st.integers(0, Hkv * G - 1)),
                              min_size=1, max_size=3, unique=True), label="overflowing (query, head)")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    q, k, v = _overflow_inputs(rng, T, Hkv, G, D, dtype, mode, rows)
    pos = np.arange(start, start + T, dtype=np.int64)

    one_shot = assert_schedule_invariant(q, k, v, W, start, sched, n_pre, **variant)
    _assert_finite(one_shot, "one-shot")
    assert_close(one_shot, dense_attention_f64(q, k, v, pos, pos, W, **variant), atol=tol(v, dtype),
                 name=f"{list(variant)} vs oracle")
    # The ordinary rows: the same bits as with the overflowing q rows replaced by ordinary ones.
    q_plain = q.copy()
    for t, h in rows:
        q_plain[t, h] = rng.standard_normal(D)
    plain = swaref.attention(q_plain, k, v, window=W, q_pos=pos, k_pos=pos, backend="cython", num_threads=1,
                             **variant)
    keep = np.ones(q.shape[:2], dtype=bool)
    for t, h in rows:
        keep[t, h] = False
    assert_bitwise_equal(one_shot[keep], plain[keep], name="rows that do not overflow")


# -------------------------------------------------------------- contract

def test_backend_docstrings_name_the_public_reference():
    # The kernel's own contract (band_attention and its hooks) is tests/test_kernels.py.
    assert 'swaref.attention(..., backend="reference")' in _backend.attention.__doc__
    assert 'swaref.attend_chunk(..., backend="reference")' in _backend.attend_chunk.__doc__


def _qkv(T=6, S=6, Hq=2, Hkv=1, D=4, dtype=np.float64):
    rng = np.random.default_rng(0)
    return random_qkv(rng, T, S, Hq, Hkv, D, dtype=dtype)


def _expect(kind, fn, *args, match=None, **kwargs):
    with pytest.raises(SwarefError, match=match) as ei:
        fn(*args, **kwargs)
    assert ei.value.kind == kind, f"kind {ei.value.kind!r}, expected {kind!r}: {ei.value}"
    return ei.value


def test_backend_attention_checks_what_the_kernel_adds():
    """The public API validated everything else; the wrapper adds dtype, the 2**62 limit and layout."""
    q, k, v = _qkv()
    p = np.arange(6, dtype=np.int64)
    A = _backend.attention
    e = _expect("dtype", A, q.astype(np.float16), k.astype(np.float16), v.astype(np.float16), p, p, 3, 0.5)
    assert isinstance(e, SwarefTypeError) and "q" in str(e) and "float16" in str(e)
    big = p + 2 ** 62
    _expect("positions", A, q, k, v, big, big, 3, 0.5, match="2\\*\\*62")
    # Windows beyond int64 and absurd thread counts are handled, not overflowed.
    assert_bitwise_equal(A(q, k, v, p, p, 2 ** 70, 0.5, 10 ** 12), A(q, k, v, p, p, None, 0.5, 1),
                         name="huge window == causal")


def _misaligned(x):
    """A C-contiguous copy of x whose data starts one byte off its item alignment."""
    buf = np.zeros(x.nbytes + 1, dtype=np.uint8)
    y = np.frombuffer(buf.data, dtype=x.dtype, count=x.size, offset=1).reshape(x.shape)
    y[...] = x
    return y


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_kernel_never_reads_misaligned_or_strided_memory(dtype):
    """Misaligned, strided and Fortran-ordered inputs reach the kernel as aligned C copies
    and give the same bits as the contiguous input (UBSan reported misaligned loads before)."""
    rng = np.random.default_rng(3)
    q, k, v = random_qkv(rng, 9, 9, 4, 2, 8, dtype=dtype)
    want = swaref.attention(q, k, v, window=4, backend="cython")
    for how, f in (("misaligned", _misaligned), ("fortran", np.asfortranarray),
                   ("reversed", lambda x: x[::-1].copy()[::-1])):
        qq, kk, vv = f(q), f(k), f(v)
        if how == "misaligned":
            assert not qq.flags.aligned
        got = swaref.attention(qq, kk, vv, window=4, backend="cython")
        assert_bitwise_equal(got, want, name=how)
    c1, c2 = cache_for(4, 2, 8, dtype, 9), cache_for(4, 2, 8, dtype, 9)
    a = swaref.prefill(_misaligned(q), _misaligned(k), _misaligned(v), c1, chunk_size=3, backend="cython")
    b = swaref.prefill(q, k, v, c2, chunk_size=3, backend="cython")
    assert_bitwise_equal(a, b, name="prefill misaligned")


def test_backend_scans_the_ring_in_debug_builds(monkeypatch):
    """The cache's own write keeps the ring consistent; the debug build scans it on every call,
    so a cache modified behind swaref's back is caught there (and only there: O(1) otherwise)."""
    q, k, v = _qkv(T=4, S=4, Hq=2, Hkv=1, D=4)
    c = swaref.RollingBufferCache(8, 1, 4, dtype=np.float64)
    swaref.prefill(q, k, v, c)                                   # holds positions 0..3
    monkeypatch.setattr(_backend, "_core_debug", lambda: True)
    swaref.prefill(q[:1], k[:1], v[:1], c, backend="cython")      # consistent: accepted
    c.positions[2] = 13                                          # behind swaref's back
    before = c.positions.copy()
    _expect("cache", swaref.prefill, q[:1], k[:1], v[:1], c, match="belongs in slot", backend="cython")
    assert np.array_equal(c.positions, before) and c.n_seen == 5
    c.positions[2] = -1
    _expect("cache", swaref.decode_step, q[:1], k[:1], v[:1], c, match="consecutive", backend="cython")


def test_public_api_with_cython_backend_rejects_bad_input():
    q, k, v = _qkv()
    with pytest.raises(SwarefTypeError) as ei:
        swaref.attention(q.astype(np.float16), k.astype(np.float16), v.astype(np.float16), window=3,
                         backend="cython")
    assert ei.value.kind == "dtype" and "float16" in str(ei.value)
    c = swaref.RollingBufferCache(3, 1, 4, dtype=np.float16)
    with pytest.raises(SwarefTypeError) as ei:
        swaref.prefill(q.astype(np.float16), k.astype(np.float16), v.astype(np.float16), c, backend="cython")
    assert ei.value.kind == "dtype"
    assert c.n_seen == 0 and (c.positions == -1).all()          # rejected before the cache is touched
    for bad, kind in (({"window": 0}, "window"), ({"window": 3, "num_threads": 0}, "argument"),
                      ({"window": 3, "scale": float("inf")}, "scale"),
                      ({"window": 3, "q_pos": [0, 1, 2, 3, 4, 4]}, "positions")):
        with pytest.raises(SwarefError) as ei:
            swaref.attention(q, k, v, backend="cython", **bad)
        assert ei.value.kind == kind
    c = swaref.RollingBufferCache(3, 1, 4, dtype=np.float64)
    with pytest.raises(SwarefError) as ei:
        swaref.decode_step(q[:2], k[:2], v[:2], c, backend="cython")
    assert ei.value.kind == "shape" and c.n_seen == 0


# A visible score of -inf (a -inf key, or a finite one that overflows: scale 1e300) in an
# earlier 64-position tile made the online softmax compute exp(-inf - -inf) = NaN; found by
# tests/test_fuzz.py.  Its weight is exp(-inf) = 0, as in the reference.
@pytest.mark.parametrize("k_pos", [[63, 64], [127, 128], [2 ** 40 - 1, 2 ** 40], [0, 1]])
@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("finite", [True, False], ids=["finite, scale overflows", "key -inf"])
def test_minus_inf_score_in_an_earlier_tile_has_weight_zero(k_pos, dtype, finite):
    q = np.array([[[1.0]]], dtype=dtype)
    k = np.array([[[-1e10 if finite else -np.inf]], [[0.0]]], dtype=dtype)
    v = np.array([[[5.0]], [[7.0]]], dtype=dtype)
    scale = (1e300 if dtype == np.float64 else 1e30) if finite else 1.0
    for backend in ("reference", "cython"):
        out = swaref.attention(q, k, v, window=2, k_pos=k_pos, q_pos=[k_pos[1]], scale=scale, backend=backend)
        assert_bitwise_equal(out, np.array([[[7.0]]], dtype=dtype), name=backend)


def test_float64_scores_beyond_float64_agree_with_the_reference():
    """scale * q.k past 1.8e308 from finite float64 input: the fallback row computes in long
    double (exponent range to 1e4932), the reference factors the magnitudes out; both finite."""
    rng = np.random.default_rng(11)
    q = rng.standard_normal((9, 2, 4)) * 1e160
    k = rng.standard_normal((9, 1, 4)) * 1e160
    v = rng.standard_normal((9, 1, 4))
    want = swaref.attention(q, k, v, window=4)
    got = swaref.attention(q, k, v, window=4, backend="cython")
    assert np.isfinite(got).all()
    assert_close(got, want, 1e-12, name="float64 overflow fallback")
    c = swaref.RollingBufferCache(4, 1, 4, dtype=np.float64)
    a = swaref.prefill(q[:6], k[:6], v[:6], c, chunk_size=2, backend="cython")
    b = [swaref.decode_step(q[i:i + 1], k[i:i + 1], v[i:i + 1], c, backend="cython") for i in range(6, 9)]
    assert_bitwise_equal(np.concatenate([a, *b]), got, name="chunked == one-shot in the fallback")


@pytest.mark.parametrize("k_pos", [[63, 64], [0, 1]])
@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_a_row_of_only_minus_inf_scores_is_nan_as_in_the_reference(k_pos, dtype):
    """Every visible score -inf (from -inf keys): softmax is 0/0, NaN in the reference; the
    kernel's fallback gave 0.0 (found by tests/test_fuzz.py)."""
    q = np.ones((1, 1, 1), dtype=dtype)
    k = np.full((2, 1, 1), -np.inf, dtype=dtype)
    v = np.ones((2, 1, 1), dtype=dtype)
    for backend in ("reference", "cython"):
        out = swaref.attention(q, k, v, window=2, k_pos=k_pos, q_pos=[k_pos[1]], backend=backend)
        assert np.isnan(out).all(), (backend, out)
