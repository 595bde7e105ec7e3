"""The rolling buffer cache (spec rule 4): slots, positions, n_seen, view, reset, copy.

Expected cache contents come from ref_helpers.expected_state, built from the rule,
never read back from swaref.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import swaref
from oracle import assert_bitwise_equal, assert_close, dense_attention_f64
from ref_helpers import DTYPES, assert_cache_state, expected_state


# The main randomized comparison of this file runs longer than the profile's default
# (scaled, so HYPOTHESIS_PROFILE=ci-long scales it too).
MORE = settings(max_examples=5 * settings.default.max_examples)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fresh_cache_is_zeroed_and_empty(dtype):
    c = swaref.RollingBufferCache(4, 2, 3, dtype=dtype)
    assert c.k.shape == c.v.shape == (4, 2, 3) and c.k.dtype == c.v.dtype == np.dtype(dtype)
    assert c.positions.dtype == np.int64
    assert_cache_state(c, np.zeros((4, 2, 3), dtype), np.zeros((4, 2, 3), dtype),
                       np.full(4, -1, np.int64), 0, None)
    k, v, pos = c.view()
    assert k.shape == (0, 2, 3) and v.shape == (0, 2, 3) and pos.shape == (0,)


@MORE
@given(W=st.integers(1, 6), n=st.integers(1, 30), dtype=st.sampled_from(DTYPES),
       start=st.sampled_from([0, 1, 5, 10 ** 9, 2 ** 40 + 3]), seed=st.integers(0, 2 ** 32 - 1))
def test_decode_writes_slot_p_mod_W_exactly(W, n, dtype, start, seed):
    # Token by token: after each step the slots hold exactly the last min(i, W) tokens,
    # stored bitwise as given (even float16, even values that do not round-trip via float32),
    # with position bookkeeping, and view() lists them in time order.
    Hkv, D, Hq = 2, 3, 2
    rng = np.random.default_rng(seed)
    k_all = rng.standard_normal((n, Hkv, D)).astype(dtype)
    v_all = rng.standard_normal((n, Hkv, D)).astype(dtype)
    q_all = rng.standard_normal((n, Hq, D)).astype(dtype)
    c = swaref.RollingBufferCache(W, Hkv, D, dtype=dtype)
    for i in range(n):
        swaref.decode_step(q_all[i:i + 1], k_all[i:i + 1], v_all[i:i + 1], c,
                           start=start if i == 0 else None)
        ek, ev, ep = expected_state(W, Hkv, D, dtype, k_all, v_all, start, i + 1)
        assert_cache_state(c, ek, ev, ep, i + 1, start + i + 1, name=f"after token {i}")
        vk, vv, vp = c.view()
        lo = max(0, i + 1 - W)
        assert_bitwise_equal(vp, np.arange(start + lo, start + i + 1, dtype=np.int64), name="view positions")
        assert_bitwise_equal(vk, k_all[lo:i + 1], name="view k")
        assert_bitwise_equal(vv, v_all[lo:i + 1], name="view v")


def test_tutorial_fifth_token_overwrites_the_first_slot():
    # W = 4 over "The cat is on a chair": after "a" (position 4) slot 0, which held "The"
    # (position 0), holds "a"; the others still hold cat, is, on.
    words = "The cat is on a chair".split()
    D = 4
    emb = np.arange(len(words) * D, dtype=np.float32).reshape(len(words), 1, D)
    c = swaref.RollingBufferCache(4, 1, D)
    for i in range(5):
        swaref.decode_step(emb[i:i + 1], emb[i:i + 1], emb[i:i + 1], c)
    np.testing.assert_array_equal(c.positions, [4, 1, 2, 3])
    np.testing.assert_array_equal(c.k[0], emb[4])
    _, _, pos = c.view()
    assert [words[p] for p in pos] == ["cat", "is", "on", "a"]


@pytest.mark.parametrize("s", [1, 3, 4, 5, 11])
def test_cache_write_keeps_last_min_s_W(s):
    W, Hkv, D = 4, 1, 2
    start = 6
    k = np.arange(s * Hkv * D, dtype=np.float64).reshape(s, Hkv, D) + 1
    v = -k
    c = swaref.RollingBufferCache(W, Hkv, D, dtype=np.float64)
    swaref.cache_write(c, k, v, start)
    ek, ev, ep = expected_state(W, Hkv, D, np.float64, k, v, start, s)
    assert_cache_state(c, ek, ev, ep, s, start + s)


def test_view_returns_copies_and_time_order_after_wrap():
    W = 3
    c = swaref.RollingBufferCache(W, 1, 1, dtype=np.float64)
    x = np.arange(7, dtype=np.float64).reshape(7, 1, 1)
    swaref.cache_write(c, x, 10 * x, 0)
    k, v, pos = c.view()
    np.testing.assert_array_equal(pos, [4, 5, 6])
    np.testing.assert_array_equal(c.positions, [6, 4, 5])       # slots out of time order after wrap
    np.testing.assert_array_equal(k[:, 0, 0], [4, 5, 6])
    np.testing.assert_array_equal(v[:, 0, 0], [40, 50, 60])
    k[...] = 99
    pos[...] = 99
    np.testing.assert_array_equal(c.k[:, 0, 0], [6, 4, 5])
    np.testing.assert_array_equal(c.positions, [6, 4, 5])


def test_reset_and_copy():
    c = swaref.RollingBufferCache(3, 2, 2, dtype=np.float32)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 2, 2)).astype(np.float32)
    swaref.cache_write(c, x, x + 1, 2)
    d = c.copy()
    assert_cache_state(d, c.k.copy(), c.v.copy(), c.positions.copy(), 5, 7, name="copy")
    swaref.cache_write(d, x[:1], x[:1], 7)                    # the copy moves on ...
    ek, ev, ep = expected_state(3, 2, 2, np.float32, x, x + 1, 2, 5)
    assert_cache_state(c, ek, ev, ep, 5, 7, name="original")  # ... the original does not
    c.reset()
    assert_cache_state(c, np.zeros_like(ek), np.zeros_like(ev), np.full(3, -1, np.int64), 0, None,
                       name="after reset")
    swaref.cache_write(c, x[:2], x[:2], 100)                 # after reset, any start >= 0 again
    assert c.next_position == 102


def test_full_attention_cache_is_plain_causal_and_refuses_overflow():
    # window=None with an explicit capacity: a plain buffer, every key kept.
    T, Hq, Hkv, D = 9, 2, 1, 3
    rng = np.random.default_rng(3)
    q = rng.standard_normal((T, Hq, D))
    k = rng.standard_normal((T, Hkv, D))
    v = rng.standard_normal((T, Hkv, D))
    c = swaref.RollingBufferCache(None, Hkv, D, dtype=np.float64, capacity=T)
    out = swaref.prefill(q[:5], k[:5], v[:5], c, chunk_size=2)
    for i in range(5, T):
        out = np.concatenate([out, swaref.decode_step(q[i:i + 1], k[i:i + 1], v[i:i + 1], c)])
    assert_close(out, dense_attention_f64(q, k, v, np.arange(T), np.arange(T), None), atol=1e-12)
    before = (c.k.copy(), c.v.copy(), c.positions.copy(), c.n_seen, c.next_position)
    with pytest.raises(swaref.SwarefError) as exc:
        swaref.decode_step(q[:1], k[:1], v[:1], c)
    assert exc.value.kind == "cache"
    assert_cache_state(c, *before, name="full cache after refused write")


@pytest.mark.parametrize("dtype", DTYPES)
def test_keys_stored_bit_for_bit(dtype):
    # "Stored exactly as given": compare raw bits, so -0.0, NaN payloads, subnormals and
    # infinities must survive (== would let -0.0 == 0.0 and any NaN slip through).
    W, Hkv, D = 4, 1, 6
    fi = np.finfo(dtype)
    uint = {2: np.uint16, 4: np.uint32, 8: np.uint64}[np.dtype(dtype).itemsize]
    special = np.array([-0.0, fi.smallest_subnormal, -np.inf, np.inf, fi.max, fi.tiny], dtype=dtype)
    nan_payload = np.array([np.nan], dtype=dtype).view(uint) | uint(1)     # a non-default NaN
    k = np.stack([np.roll(special, i) for i in range(6)]).reshape(6, Hkv, D).astype(dtype)
    k[2, 0, 3] = nan_payload.view(dtype)[0]
    v = k[::-1].copy()
    c = swaref.RollingBufferCache(W, Hkv, D, dtype=dtype)
    swaref.cache_write(c, k, v, 0)
    ek, ev, _ = expected_state(W, Hkv, D, dtype, k, v, 0, 6)
    np.testing.assert_array_equal(c.k.view(uint), ek.view(uint))
    np.testing.assert_array_equal(c.v.view(uint), ev.view(uint))
    vk, vv, _ = c.view()
    np.testing.assert_array_equal(vk.view(uint), k[2:].view(uint))


# ----- one caller at a time (spec rule 4) --------------------------------------------

def _hold_cache_in_other_thread(cache, started, release):
    """Stand-in for a long call on another thread: takes the cache's lock exactly as a
    swaref call does (cache.exclusive) and keeps it until told to stop."""
    from swaref.cache import exclusive
    with exclusive(cache):
        started.set()
        release.wait(10)


@pytest.mark.parametrize("call", ["prefill", "decode_step", "cache_write", "attend_chunk", "reset", "copy",
                                  "view", "load_state"])
@pytest.mark.parametrize("backend", ["reference", "cython"])
def test_concurrent_call_is_refused_and_leaves_the_cache_alone(call, backend):
    import threading
    from swaref.cache import load_state
    rng = np.random.default_rng(0)
    c = swaref.RollingBufferCache(4, 1, 2, dtype=np.float64)
    x = rng.standard_normal((6, 1, 2))
    swaref.prefill(x, x, x, c)
    before = (c.k.copy(), c.v.copy(), c.positions.copy(), c.n_seen, c.next_position)
    started, release = threading.Event(), threading.Event()
    t = threading.Thread(target=_hold_cache_in_other_thread, args=(c, started, release))
    t.start()
    started.wait(10)
    try:
        fn = {"prefill": lambda: swaref.prefill(x[:2], x[:2], x[:2], c, backend=backend),
              "decode_step": lambda: swaref.decode_step(x[:1], x[:1], x[:1], c, backend=backend),
              "cache_write": lambda: swaref.cache_write(c, x[:1], x[:1]),
              "attend_chunk": lambda: swaref.attend_chunk(x[:1], x[:0], x[:0], c, 5, backend=backend),
              "reset": c.reset, "copy": c.copy, "view": c.view,
              "load_state": lambda: load_state(c, np.full(4, -1), c.k, c.v)}[call]
        with pytest.raises(swaref.SwarefError, match="in use by another call") as ei:
            fn()
        assert ei.value.kind == "cache"
    finally:
        release.set()
        t.join()
    assert_cache_state(c, *before, name=f"cache after a refused concurrent {call}")
    fn()                                   # the same call goes through once the cache is free


def test_threads_decoding_into_one_cache_never_corrupt_it():
    """The issue's reproducer: two threads decoding into one cache left n_seen and
    next_position inconsistent.  Now every step either runs whole or is refused, so the
    cache always equals a sequential decode of the steps that ran."""
    import threading
    rng = np.random.default_rng(1)
    W, n = 4, 40
    x = rng.standard_normal((n, 2, 8))
    for trial in range(20):
        c = swaref.RollingBufferCache(W, 2, 8, dtype=np.float64)
        done, refused = [], []
        lock = threading.Lock()

        def worker():
            for _ in range(n // 2):
                with lock:
                    i = len(done)
                try:
                    swaref.decode_step(x[i:i + 1], x[i:i + 1], x[i:i + 1], c, start=i, backend="cython")
                    with lock:
                        done.append(i)
                except swaref.SwarefError as e:
                    refused.append(e.kind)

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(refused) <= {"cache", "positions"}, refused
        m = len(done)
        assert c.n_seen == m and c.next_position == m, (c.n_seen, c.next_position, m)
        assert sorted(done) == list(range(m))
        k, v, pos = c.view()
        assert_bitwise_equal(pos, np.arange(max(0, m - W), m), name="positions held")
        assert_bitwise_equal(k, x[max(0, m - W):m], name="keys held")
