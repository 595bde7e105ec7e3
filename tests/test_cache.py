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


# ----- the window family (spec 1.1): sink slots, the slot rule, chunked caches, rollback ----

from swaref import Chunked, Sliding, TwoSided          # noqa: E402
from oracle import visible                             # noqa: E402

FAMILY_CACHES = [(Sliding(3, 1), None), (Sliding(3, 2), 5), (Sliding(1, 3), None), (Chunked(4), None),
                 (Chunked(3), 5), (Chunked(1), 2), (3, 4)]


def rule_state(n_sink, C, Hkv, D, dtype, k_all, v_all, start, n):
    """Slot buffers after positions start .. start+n-1 were written, from rule 4 alone: position
    p < n_sink in sink slot p (never evicted), p >= n_sink in slot n_sink + (p - n_sink) mod C,
    only the last C ring positions kept; empty slots zero with position -1."""
    k = np.zeros((n_sink + C, Hkv, D), dtype=dtype)
    v = np.zeros_like(k)
    pos = np.full(n_sink + C, -1, dtype=np.int64)
    ring = [i for i in range(n) if start + i >= n_sink]
    for i in [i for i in range(n) if start + i < n_sink] + ring[max(0, len(ring) - C):]:
        p = start + i
        slot = p if p < n_sink else n_sink + (p - n_sink) % C
        k[slot], v[slot], pos[slot] = k_all[i], v_all[i], p
    return k, v, pos


def _sinks_and_ring(window, capacity):
    n_sink = window.sink_tokens if isinstance(window, Sliding) else 0
    span = window.size if isinstance(window, (Sliding, Chunked)) else window
    return n_sink, capacity or span


@pytest.mark.parametrize("window,capacity", FAMILY_CACHES, ids=repr)
@pytest.mark.parametrize("start", [0, 1, 2, 9])
def test_decode_follows_the_slot_rule_with_sinks_and_chunks(window, capacity, start):
    Hkv, D, n = 1, 2, 19
    rng = np.random.default_rng(start)
    k_all, v_all = rng.standard_normal((2, n, Hkv, D))
    c = swaref.RollingBufferCache(window, Hkv, D, dtype=np.float64, capacity=capacity)
    n_sink, C = _sinks_and_ring(window, capacity)
    assert (c.sink_tokens, c.capacity) == (n_sink, C) and c.k.shape == (n_sink + C, Hkv, D)
    for i in range(n):
        swaref.decode_step(k_all[i:i + 1], k_all[i:i + 1], v_all[i:i + 1], c, start=start if i == 0 else None)
        ek, ev, ep = rule_state(n_sink, C, Hkv, D, np.float64, k_all, v_all, start, i + 1)
        assert_cache_state(c, ek, ev, ep, i + 1, start + i + 1, name=f"{window!r} after token {i}")
        vk, vv, vp = c.view()
        held = sorted(p for p in ep.tolist() if p >= 0)
        assert vp.tolist() == held, "view: every valid slot, sinks included, in time order"
        assert_bitwise_equal(vk, k_all[np.array(held) - start], name="view k")
        ring = [p for p in held if p >= n_sink]
        from swaref.cache import held_range
        assert held_range(c) == ((ring[0], ring[-1]) if ring else (0, -1))
    for i in range(n):
        slot = swaref.slot_of(start + i, C, n_sink)
        assert slot == (start + i if start + i < n_sink else n_sink + (start + i - n_sink) % C)
        np.testing.assert_array_equal(swaref.slot_of(np.array([start + i]), C, n_sink), [slot])


@pytest.mark.parametrize("window,capacity", FAMILY_CACHES, ids=repr)
@pytest.mark.parametrize("s", [1, 2, 5, 11])
def test_cache_write_keeps_sinks_and_the_last_C_ring_tokens(window, capacity, s):
    rng = np.random.default_rng(s)
    k, v = rng.standard_normal((2, s, 2, 1))
    n_sink, C = _sinks_and_ring(window, capacity)
    for start in (0, 1, 4):
        c = swaref.RollingBufferCache(window, 2, 1, dtype=np.float64, capacity=capacity)
        swaref.cache_write(c, k, v, start)
        assert_cache_state(c, *rule_state(n_sink, C, 2, 1, np.float64, k, v, start, s), s, start + s)


def test_copy_of_a_sink_cache_is_independent():
    c = swaref.RollingBufferCache(Sliding(2, 2), 1, 1, dtype=np.float64, capacity=3)
    x = np.arange(7, dtype=np.float64).reshape(7, 1, 1)
    swaref.cache_write(c, x, x)
    d = c.copy()
    assert d.sink_tokens == 2 and d.window == Sliding(2, 2)
    assert_cache_state(d, c.k.copy(), c.v.copy(), c.positions.copy(), 7, 7, name="copy")
    swaref.cache_write(d, x[:2], x[:2])
    assert c.view()[2].tolist() == [0, 1, 4, 5, 6] and d.view()[2].tolist() == [0, 1, 6, 7, 8]


@pytest.mark.parametrize("window,capacity", FAMILY_CACHES, ids=repr)
@pytest.mark.parametrize("n", [0, 1, 3, 4, 13])
def test_load_state_round_trips_with_sink_slots(window, capacity, n):
    """A saved state loads into a fresh cache, which then continues exactly like the original."""
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n + 3, 1, 2))
    c = swaref.RollingBufferCache(window, 1, 2, dtype=np.float64, capacity=capacity)
    if n:
        swaref.cache_write(c, x[:n], x[:n])
    d = swaref.RollingBufferCache(window, 1, 2, dtype=np.float64, capacity=capacity)
    swaref.load_state(d, c.positions.copy(), c.k.copy(), c.v.copy())
    assert (d.n_held, d.next_position) == (c.n_held, c.next_position)
    assert d.n_seen == n - (c.view()[2][0] if n else 0), "every position from the oldest held counts as written"
    for cache in (c, d):
        swaref.cache_write(cache, x[n:], x[n:], n)
    assert_cache_state(d, c.k, c.v, c.positions, d.n_seen, c.next_position, name="loaded, then continued")


@pytest.mark.parametrize("positions,words", [
    ([1, -1, 2, 3, 4], ["sink slot 0", "its own position"]),
    ([-1, -1, 1, 2, 3], ["slot 2", "sink slot 1"]),
    ([0, -1, 5, 3, 4], ["sink slots hold 0 .. 0", "never evicted"]),
    ([-1, 1, 2, 6, 4], ["consecutive"]),
    ([-1, 1, 2, 4, 3], ["slot 3 holds position 4", "belongs in slot 4", "2 + (position - 2) mod 3"]),
    ([-1, -1, -1], ["shape (5,)"]),
])
def test_load_state_rejects_broken_sink_states(positions, words):
    c = swaref.RollingBufferCache(Sliding(3, 2), 1, 1, dtype=np.float64)
    x = np.ones((5, 1, 1))
    with pytest.raises(swaref.SwarefError) as ei:
        swaref.load_state(c, np.array(positions), x, x)
    assert ei.value.kind == "cache" and all(w in str(ei.value) for w in words), str(ei.value)
    assert (c.positions == -1).all() and c.next_position is None


@pytest.mark.parametrize("window", [TwoSided(1, 1), TwoSided(None, None), TwoSided(0, 2), TwoSided(3, None)],
                         ids=repr)
def test_a_cache_refuses_a_window_that_looks_ahead(window):
    with pytest.raises(swaref.SwarefError) as ei:
        swaref.RollingBufferCache(window, 1, 2, capacity=8)
    assert ei.value.kind == "window" and "causal" in str(ei.value) and repr(window) in str(ei.value)
    with pytest.raises(swaref.SwarefError) as ei:
        swaref.chunk_schedule(5, None, window)
    assert ei.value.kind == "window" and "causal" in str(ei.value)


def test_causal_two_sided_windows_make_ordinary_caches():
    assert swaref.RollingBufferCache(TwoSided(3, 0), 1, 2).window == 4
    assert swaref.RollingBufferCache(TwoSided(None, 0), 1, 2, capacity=5).window is None


class RingModel:
    """Rule 4 as sets of positions, for the rollback property: written = the positions written
    since the reset (less those rolled back), held = the sink positions written plus the last C
    ring positions written; a rollback of n is allowed iff every key a query at P = N - n or
    later sees (rule 1, brute force) that was written before P is still held."""

    def __init__(self, window, C, n_sink):
        self.window, self.C, self.n_sink = window, C, n_sink
        self.written, self.held = [], set()

    def write(self, start, s):
        new = list(range(start, start + s))
        self.written += new
        self.held |= set(new)
        ring = sorted(p for p in self.held if p >= self.n_sink)
        self.held -= set(ring[:max(0, len(ring) - self.C)])

    def allowed(self, n):
        if n > len(self.written):
            return False
        N = self.written[-1] + 1 if self.written else 0
        P = N - n
        span = self.window.size if isinstance(self.window, (Sliding, Chunked)) else self.window
        needed = {j for j in self.written if j < P
                  for Pq in range(P, P + span + 2) if visible(Pq, j, self.window)}
        return needed <= self.held

    def rollback(self, n):
        P = self.written[-1] + 1 - n
        self.written = [p for p in self.written if p < P]
        self.held = {p for p in self.held if p < P}


@settings(max_examples=120)
@given(st.data())
def test_rollback_is_exactly_the_general_rule(data):
    """For sink tokens and chunked attention (and an int W, as before): rollback accepts exactly
    the n the rule allows, refuses the others with the cache untouched, max_rollback is the
    largest n below which every n is allowed, and the cache holds what the rule says."""
    window = data.draw(st.sampled_from([Sliding(3, 1), Sliding(2, 3), Sliding(1, 2), Chunked(3), Chunked(4),
                                        Chunked(1), 3, 1]), label="window")
    n_sink, span = _sinks_and_ring(window, None)
    C = span + data.draw(st.integers(0, 4), label="slack")
    start = data.draw(st.sampled_from([0, 1, 2, 7]), label="start")
    c = swaref.RollingBufferCache(window, 1, 1, dtype=np.float64, capacity=C)
    model = RingModel(window, C, n_sink)
    nxt = start
    for step in range(data.draw(st.integers(1, 6), label="steps")):
        s = data.draw(st.integers(1, 9), label="write")
        x = np.zeros((s, 1, 1))
        swaref.cache_write(c, x, x, nxt if c.next_position is None else None)
        model.write(nxt, s)
        nxt += s
        allowed = [n for n in range(len(model.written) + 3) if model.allowed(n)]
        limit = next(n for n in range(len(model.written) + 2) if n not in allowed) - 1
        assert swaref.max_rollback(c) == limit, (window, C, model.written, allowed)
        n = data.draw(st.integers(0, len(model.written) + 1), label="rollback")
        before = (c.k.copy(), c.v.copy(), c.positions.copy(), c.n_seen, c.next_position)
        if n in allowed:
            swaref.rollback(c, n)
            model.rollback(n)
            nxt -= n
        else:
            with pytest.raises(swaref.SwarefError) as ei:
                swaref.rollback(c, n)
            assert ei.value.kind == "rollback"
            assert_cache_state(c, *before, name="cache after a refused rollback")
        assert sorted(p for p in c.positions.tolist() if p >= 0) == sorted(model.held)
        assert c.n_seen == len(model.written) and (c.next_position or start) == nxt


def test_rollback_worked_examples_of_the_spec():
    """Rule 4's examples.  Chunked(4), capacity 4, positions 0..9 written: the ring holds 6..9.
    Rolling back 1 or 2 is possible (a query at 9 or 8 needs 8 .. itself); 3 is not (a query at
    7 needs 4..6, and 4, 5 are gone); 6 is (back to the chunk start 4: nothing earlier needed)."""
    c = swaref.RollingBufferCache(Chunked(4), 1, 1, dtype=np.float64)
    x = np.zeros((10, 1, 1))
    swaref.cache_write(c, x, x)
    assert swaref.max_rollback(c) == 2
    assert [n for n in range(11) if swaref.cache._lost_key(c, n) is None] == [0, 1, 2, 6, 10]
    with pytest.raises(swaref.SwarefError, match="position 4"):
        swaref.rollback(c, 3)
    d = c.copy()
    swaref.rollback(d, 6)
    assert d.view()[2].tolist() == [] and d.next_position == 4
    swaref.rollback(c, 2)
    assert c.view()[2].tolist() == [6, 7] and c.next_position == 8
    # Sliding(3, sink_tokens=2), capacity 4, positions 0..9: sink slots hold 0, 1, the ring
    # 6..9; a query at P needs P - 2 .. P - 1 besides the sinks: n <= 4 - 3 + 1 = 2.
    s = swaref.RollingBufferCache(Sliding(3, 2), 1, 1, dtype=np.float64, capacity=4)
    swaref.cache_write(s, x, x)
    assert s.positions.tolist() == [0, 1, 6, 7, 8, 9] and swaref.max_rollback(s) == 2     # slot 2 + (p - 2) mod 4
    assert [n for n in range(11) if swaref.cache._lost_key(s, n) is None] == [0, 1, 2, 8, 9, 10]
    with pytest.raises(swaref.SwarefError, match="position 5"):
        swaref.rollback(s, 3)
    swaref.rollback(s, 9)                        # back into the sink tokens: possible
    assert s.view()[2].tolist() == [0] and s.next_position == 1


@pytest.mark.parametrize("window,capacity", FAMILY_CACHES + [(None, 3)], ids=repr)
def test_rolling_back_nothing_is_always_possible(window, capacity):
    c = swaref.RollingBufferCache(window, 1, 1, dtype=np.float64, capacity=capacity)
    swaref.rollback(c, 0)                        # a fresh cache: nothing written, nothing to take back
    assert swaref.max_rollback(c) == 0 and c.next_position is None
    with pytest.raises(swaref.SwarefError, match="holds 0 tokens"):
        swaref.rollback(c, 1)
