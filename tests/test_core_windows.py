"""Spec 1.1's window family on the compiled kernel (swaref/_core.pyx through swaref/_backend.py):
kept sink tokens (``Sliding(W, sink_tokens=n)``), two-sided windows (``TwoSided``) and chunked
attention (``Chunked``), alone and with softcap or sinks, with the guarantees tests/test_core.py
gives the plain window:

* against a dense float64 oracle whose mask is a double loop over the rule's text (written
  here, sharing nothing with swaref.windows.kernel_params): float64 within 1e-12 x max|V|,
  float32 within 1e-5 x max|V|;
* bitwise: one-shot attention == chunks attending a cache with sink slots (any schedule,
  ring rotation, slack) == prefill + decode, threads 1 and 2;
* poison in the positions a row does not see (between the sink tokens and the window, beyond
  a chunk boundary, beyond a two-sided window's sides, empty and stale slots) never reaches it;
* overflowing rows take the float64 fallback over the same visible keys, chunk-invariantly;
* a decode step far past the sink tokens reads O(n + W) slots, never the positions between;
* each check fails on a wrong variant of the window (the known-wrong variants of the
  contract: sinks dropped, counted inside the window, off by one; two-sided off by one or
  causal; chunked as a sliding window of C or off by one at the boundary).
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from swaref import _backend, _core
from swaref.windows import Chunked, Sliding, TwoSided, normalize
from oracle import assert_bitwise_equal, assert_close
from ref_helpers import assert_runs_without_the_gil, draw_variant, random_qkv
from test_core import schedules

KERNEL_DTYPES = (np.float32, np.float64)
OFFSETS = (0, 3, 10 ** 9, 2 ** 40)


@pytest.fixture(autouse=True)
def threads_even_for_small_shapes():
    """As in tests/test_core.py: small calls may use every thread they are given."""
    old = _core.min_work_per_thread(1)
    yield
    _core.min_work_per_thread(old)


def tol(v, dtype):
    vmax = max(1.0, float(np.max(np.abs(v.astype(np.float64)))))
    return (1e-12 if np.dtype(dtype) == np.float64 else 1e-5) * vmax


# ------------------------------------------------------------------ the oracle

def sees(p, j, window):
    """Spec rule 1, word for word: does the query at p see the key at j?"""
    if window is None:
        return j <= p
    if isinstance(window, Sliding):
        return j <= p and (j < window.sink_tokens or p - window.size < j)
    if isinstance(window, TwoSided):
        return (window.left is None or p - window.left <= j) and (window.right is None or j <= p + window.right)
    if isinstance(window, Chunked):
        return j <= p and j // window.size == p // window.size
    return p - window < j <= p


def rule_mask(q_pos, k_pos, window):
    return np.array([[sees(int(p), int(j), window) for j in k_pos] for p in q_pos], dtype=bool).reshape(
        len(q_pos), len(k_pos))


def dense_masked_f64(q, k, v, mask, scale, softcap=None, sinks=None):
    """Dense softmax in float64 over the keys mask allows: q [T, Hq, D], k, v [S, Hkv, D],
    mask [T, S] -> [T, Hq, D]; the cap before the mask, a sink as one more softmax column."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    T, Hq, D = q.shape
    G = Hq // k.shape[1]
    kk, vv = np.repeat(k, G, axis=1), np.repeat(v, G, axis=1)
    s = np.einsum("thd,shd->hts", q, kk) * scale
    if softcap is not None:
        s = softcap * np.tanh(s / softcap)
    s = np.where(mask[None], s, -np.inf)
    if sinks is not None:
        s = np.concatenate([s, np.broadcast_to(np.asarray(sinks, dtype=np.float64)[:, None, None], (Hq, T, 1))], -1)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p = (p / p.sum(axis=-1, keepdims=True))[..., :k.shape[0]]
    out = np.empty((T, Hq, D))
    for t in range(T):
        sel = mask[t]
        for h in range(Hq):
            out[t, h] = p[h, t, sel] @ vv[sel, h]
    return out


# ------------------------------------------------------ a cache with sink slots

class SinkRing:
    """A stand-in for spec rule 4's cache, written from the contract: n sink slots (position
    p < n in slot p), then C ring slots (p >= n in slot n + (p - n) mod C); buffers n + C rows.
    It has what swaref._backend.attend_chunk reads: window, capacity, sink_tokens, k, v,
    positions, n_held (ring positions held) and next_position."""

    def __init__(self, window, Hkv, D, dtype, capacity, sink_tokens=0):
        self.window, self.capacity, self.sink_tokens = window, capacity, sink_tokens
        rows = sink_tokens + capacity
        self.k = np.zeros((rows, Hkv, D), dtype=dtype)
        self.v = np.zeros_like(self.k)
        self.positions = np.full(rows, -1, dtype=np.int64)
        self.n_held, self.next_position, self.first = 0, None, None

    def slot(self, p):
        n = self.sink_tokens
        return p if p < n else n + (p - n) % self.capacity

    def write(self, k, v, start):
        for i in range(k.shape[0]):
            s = self.slot(start + i)
            self.k[s], self.v[s], self.positions[s] = k[i], v[i], start + i
        self.first = start if self.first is None else self.first
        self.next_position = start + k.shape[0]
        ring_first = max(self.first, self.sink_tokens)
        self.n_held = max(0, min(self.capacity, self.next_position - ring_first))


def run_chunks(q, k, v, window, start, sched, n_decode, capacity, sink_tokens, scale, threads=None, **variant):
    """Prefill by the schedule (each chunk attends [cache] + [chunk], then is written), then
    decode the last n_decode tokens (write, then attend the cache alone): [T, Hq, D]."""
    T = q.shape[0]
    sched = [sched] * T if isinstance(sched, int) else sched
    c = SinkRing(window, k.shape[1], k.shape[2], q.dtype, capacity, sink_tokens)
    outs, a = [], 0
    for s in sched:
        s = min(s, T - n_decode - a)
        if s <= 0:
            break
        outs.append(_backend.attend_chunk(q[a:a + s], k[a:a + s], v[a:a + s], start + a, c, scale, threads,
                                          **variant))
        c.write(k[a:a + s], v[a:a + s], start + a)
        a += s
    while a < T:
        c.write(k[a:a + 1], v[a:a + 1], start + a)
        outs.append(_backend.attend_chunk(q[a:a + 1], k[:0], v[:0], start + a, c, scale, threads, **variant))
        a += 1
    return np.concatenate(outs)


# ------------------------------------------------------------- strategies

@st.composite
def windows(draw, T, causal=False):
    """A normalized window of the spec 1.1 family for T tokens (sizes around T, the tile (64)
    and 1), or None/int now and then."""
    kind = draw(st.sampled_from(["sinks", "chunked"] + ([] if causal else ["twosided"]) + ["plain"]))
    size = st.sampled_from([1, 2, 3, 7, max(1, T // 2), 63, 64, 65, T + 5])
    if kind == "sinks":
        w = Sliding(draw(size), sink_tokens=draw(st.sampled_from([1, 2, 4, 5, 64, 70, T + 3])))
    elif kind == "chunked":
        w = Chunked(draw(size))
    elif kind == "twosided":
        side = st.one_of(st.none(), st.sampled_from([0, 1, 2, 5, 40, 64, 100]))
        left, right = draw(side), draw(side)
        w = TwoSided(left, right if right != 0 else draw(st.sampled_from([1, 3, None])))
    else:
        w = draw(st.sampled_from([None, 1, 5, 64]))
    return normalize(w)


def cache_capacity(window, T, slack):
    if window is None:
        return T + slack
    if isinstance(window, Sliding):
        return window.size + slack
    if isinstance(window, Chunked):
        return window.size + slack
    return window + slack


# ------------------------------------------------------- against the oracle

@settings(max_examples=2 * settings.default.max_examples)
@given(data=st.data())
def test_windows_match_the_dense_oracle(data):
    T = data.draw(st.integers(1, 90), label="T")
    S = data.draw(st.integers(T, T + 30), label="S")
    Hkv = data.draw(st.integers(1, 2), label="Hkv")
    G = data.draw(st.sampled_from([1, 2, 3]), label="G")
    D = data.draw(st.sampled_from([1, 3, 8, 16, 33]), label="D")
    dtype = data.draw(st.sampled_from(KERNEL_DTYPES), label="dtype")
    window = data.draw(windows(S), label="window")
    gaps = data.draw(st.booleans(), label="gapped positions")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    k_pos = np.cumsum(rng.integers(1, 4, S) if gaps else np.ones(S, dtype=np.int64)) - 1
    k_pos = (k_pos + data.draw(st.sampled_from([0, 0, 5]), label="offset")).astype(np.int64)
    two_sided = isinstance(window, TwoSided)
    q_pos = np.sort(rng.choice(k_pos, T, replace=False)) if two_sided else k_pos[S - T:]
    q_pos = q_pos.astype(np.int64)
    mask = rule_mask(q_pos, k_pos, window)
    if not mask.any(axis=1).all():
        return                              # a query with no visible key: the public API refuses it
    variant = draw_variant(data, Hkv * G, plain=True)
    q, k, v = random_qkv(rng, T, S, Hkv * G, Hkv, D, dtype=dtype, vscale=data.draw(st.sampled_from([1.0, 1e3])))
    q *= dtype(data.draw(st.sampled_from([0.3, 1.0, 6.0]), label="score magnitude"))
    scale = 1 / np.sqrt(D)
    got = _backend.attention(q, k, v, q_pos, k_pos, window, scale, data.draw(st.sampled_from([1, 2])), **variant)
    assert got.dtype == dtype and got.shape == q.shape
    assert_close(got, dense_masked_f64(q, k, v, mask, scale, **variant), atol=tol(v, dtype),
                 name=f"{window} {list(variant)} vs oracle")


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("window", [Sliding(100, sink_tokens=4), Sliding(64, sink_tokens=70), TwoSided(50, 30),
                                    TwoSided(None, 64), TwoSided(10, None), Chunked(64), Chunked(100)])
@pytest.mark.parametrize("D", [1, 64, 128])
def test_long_rows_wide_heads_and_gqa(window, dtype, D):
    """Rows over several tiles, wide heads, GQA (bitwise equal to repeating K/V), softcap and
    sinks, positions at 2**40 (where a window's tiles lie far from the sink tokens: the kernel
    would never finish if it walked the positions between)."""
    rng = np.random.default_rng(D)
    T, Hkv, G = 300, 2, 4
    q, k, v = random_qkv(rng, T, T, Hkv * G, Hkv, D, dtype=dtype)
    q *= 3
    for base in (0, 2 ** 40):
        pos = np.arange(T, dtype=np.int64) + base
        if isinstance(window, Sliding):
            pos[window.sink_tokens:] += base         # the sink tokens at 0.., the rest far beyond
            pos[:window.sink_tokens] -= base
        mask = rule_mask(pos, pos, window)
        for variant in ({}, {"softcap": 2.0}, {"sinks": np.linspace(-2, 4, Hkv * G)}):
            got = _backend.attention(q, k, v, pos, pos, window, 0.125, 2, **variant)
            assert_close(got, dense_masked_f64(q, k, v, mask, 0.125, **variant), atol=tol(v, dtype),
                         name=f"{window} base {base} {list(variant)}")
            rep = _backend.attention(q, np.repeat(k, G, axis=1), np.repeat(v, G, axis=1), pos, pos, window, 0.125,
                                     1, **variant)
            assert_bitwise_equal(got, rep, name=f"GQA vs repeated K/V, {window}")


# ------------------------------------------------------------ known-wrong variants

def wrong_variants(window):
    """The contract's known-wrong readings of a window, as kernel parameters, each of which must
    fail the oracle comparison (so the comparison can fail)."""
    if isinstance(window, Sliding):
        W, n = window.size, window.sink_tokens
        return {"sinks dropped": (W - 1, 0, 0, 0), "sinks inside the window": (W - n - 1, 0, 0, n),
                "sinks n + 1": (W - 1, 0, 0, n + 1), "sinks n - 1": (W - 1, 0, 0, n - 1)}
    if isinstance(window, TwoSided):
        l, r = window.left, window.right
        return {"left off by one": (l + 1, r, 0, 0), "left short by one": (l - 1, r, 0, 0),
                "right off by one": (l, r + 1, 0, 0), "right short by one": (l, r - 1, 0, 0),
                "causal": (l, 0, 0, 0)}
    C = window.size
    return {"sliding window of C": (C - 1, 0, 0, 0), "boundary off by one": (C, 0, 0, 0)}


@pytest.mark.parametrize("window", [Sliding(20, sink_tokens=4), TwoSided(7, 5), Chunked(16)])
def test_the_oracle_comparison_catches_every_known_wrong_variant(window):
    """The kernel with the right parameters passes; with each wrong reading of the window it
    misses the oracle by far more than the tolerance (the chunked boundary off by one is read as
    chunk C + 1 with the lower bound shifted: (p // (C+1)) * (C+1))."""
    rng = np.random.default_rng(5)
    T, D = 80, 8
    q, k, v = random_qkv(rng, T, T, 2, 1, D, dtype=np.float64)
    q *= 3
    pos = np.arange(T, dtype=np.int64)
    e, ep = np.zeros((0, 1, D)), np.zeros(0, dtype=np.int64)
    want = dense_masked_f64(q, k, v, rule_mask(pos, pos, window), 0.3)
    right = _core.band_attention(q, pos, k, v, pos, e, e, ep, 0, -1, *_backend._kernel_params(window, T - 1), 0.3, 1)
    assert_close(right, want, atol=tol(v, np.float64), name=f"{window}")
    for name, params in wrong_variants(window).items():
        if name == "boundary off by one":
            params = (-1, 0, window.size + 1, 0)
        got = _core.band_attention(q, pos, k, v, pos, e, e, ep, 0, -1, *params, 0.3, 1)
        miss = float(np.abs(got - want).max())
        assert miss > 1e-3, f"{window}: the wrong variant '{name}' {params} passes (miss {miss:.2e})"


# ------------------------------------------------------ bitwise invariance

@settings(max_examples=2 * settings.default.max_examples)
@given(data=st.data())
def test_bitwise_chunk_rotation_slack_and_thread_invariance(data):
    """one-shot attention (1 thread) == 2 threads == chunks over a cache with sink slots (any
    schedule, slack, offset) + decode, to the bit; and within tolerance of the oracle."""
    T = data.draw(st.integers(1, 150), label="T")
    window = data.draw(windows(T, causal=True), label="window")
    Hkv = data.draw(st.integers(1, 2), label="Hkv")
    G = data.draw(st.sampled_from([1, 2, 4]), label="G")
    D = data.draw(st.sampled_from([1, 3, 16, 20]), label="D")
    dtype = data.draw(st.sampled_from(KERNEL_DTYPES), label="dtype")
    start = data.draw(st.sampled_from(OFFSETS), label="start")
    slack = data.draw(st.sampled_from([0, 1, 5, 17]), label="slack")
    sched = data.draw(schedules(T), label="schedule")
    n_decode = data.draw(st.integers(0, T - 1), label="decoded tokens")
    variant = draw_variant(data, Hkv * G, plain=True)
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    q, k, v = random_qkv(rng, T, T, Hkv * G, Hkv, D, dtype=dtype)
    scale = 1 / np.sqrt(D)
    pos = np.arange(start, start + T, dtype=np.int64)
    one = _backend.attention(q, k, v, pos, pos, window, scale, 1, **variant)
    assert_bitwise_equal(_backend.attention(q, k, v, pos, pos, window, scale, 2, **variant), one,
                         name="2 threads vs 1")
    n_sink = window.sink_tokens if isinstance(window, Sliding) else 0
    got = run_chunks(q, k, v, window, start, sched, n_decode, cache_capacity(window, T, slack), n_sink, scale,
                     data.draw(st.sampled_from([1, 2]), label="threads"), **variant)
    assert_bitwise_equal(got, one, name=f"{window}: schedule {sched} + {n_decode} decoded vs one-shot")
    assert_close(one, dense_masked_f64(q, k, v, rule_mask(pos, pos, window), scale, **variant),
                 atol=tol(v, dtype), name=f"{window} vs oracle")


class WrongSlots(SinkRing):
    """A mutated twin of the stand-in cache: ring position p in slot p mod (n + C), the slot
    rule of a cache that forgot its sink slots (it overwrites them)."""

    def slot(self, p):
        return p % (self.sink_tokens + self.capacity)


def test_the_invariance_check_catches_a_wrong_slot_rule():
    """The bitwise comparison above fails when the cache breaks the contract's slot rule."""
    rng = np.random.default_rng(6)
    T, window = 40, Sliding(6, sink_tokens=3)
    q, k, v = random_qkv(rng, T, T, 2, 1, 8, dtype=np.float64)
    pos = np.arange(T, dtype=np.int64)
    one = _backend.attention(q, k, v, pos, pos, window, 0.3, 1)
    assert_bitwise_equal(run_chunks(q, k, v, window, 0, [5] * 8, 10, 7, 3, 0.3), one, name="right slot rule")
    c = WrongSlots(window, 1, 8, np.float64, 7, 3)
    c.write(k[:30], v[:30], 0)
    got = _backend.attend_chunk(q[30:], k[30:], v[30:], 30, c, 0.3, 1)
    assert np.abs(got - one[30:]).max() > 1e-3, "a cache with the wrong slot rule passed"


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_decode_far_past_the_sink_tokens_reads_only_the_window(dtype):
    """Sink tokens 0..3, then tokens at 2**40 onwards (a gap of 2**40 positions): prefill and
    decode equal the one-shot bits and the oracle.  A gather (or fallback) that walked the
    positions between the sink slots and the window one by one would not finish."""
    n, W, Hkv, G, D, T = 4, 16, 2, 2, 16, 80
    rng = np.random.default_rng(2)
    q, k, v = random_qkv(rng, T, T, Hkv * G, Hkv, D, dtype=dtype)
    pos = np.concatenate([np.arange(n), 2 ** 40 + np.arange(T - n)]).astype(np.int64)
    window = Sliding(W, sink_tokens=n)
    one = _backend.attention(q, k, v, pos, pos, window, 0.25, 1)
    assert_close(one, dense_masked_f64(q, k, v, rule_mask(pos, pos, window), 0.25), atol=tol(v, dtype),
                 name="sinks + far window vs oracle")
    c = SinkRing(window, Hkv, D, dtype, W + 3, n)
    c.write(k[:n], v[:n], 0)
    out = [_backend.attend_chunk(q[:n], k[:0], v[:0], 0, c, 0.25, 1)[:0]]      # (nothing to compare: positions 0..3)
    outs = []
    c.next_position = 2 ** 40                              # the cache continues far away (a stand-in's liberty)
    c.first = 2 ** 40
    for i in range(n, T):
        c.write(k[i:i + 1], v[i:i + 1], int(pos[i]))
        outs.append(_backend.attend_chunk(q[i:i + 1], k[:0], v[:0], int(pos[i]), c, 0.25, 1))
    assert_bitwise_equal(np.concatenate(outs), one[n:], name="decode past a 2**40 gap")
    del out
    # The overflow fallback walks the same keys: a float32 row forced past FLT_MAX at the end.
    if dtype == np.float32:
        qo = q.copy()
        qo[-1, 0] = 1e19 * np.sign(k[-1, 0])
        got = _backend.attention(qo, k, v, pos, pos, window, 1e19, 1)
        assert np.isfinite(got).all()


# -------------------------------------------------------------- poison

@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("window", [Sliding(10, sink_tokens=3), TwoSided(5, 7), Chunked(16), Chunked(64)])
def test_poison_a_row_does_not_see_never_reaches_it(window, dtype, bad):
    """Every key a query does not see set to NaN/Inf, query by query: the output row keeps its
    bits (the masked keys never enter its arithmetic, not even as 0 * NaN)."""
    rng = np.random.default_rng(3)
    T, D = 150, 8
    q, k, v = random_qkv(rng, T, T, 2, 1, D, dtype=dtype)
    pos = np.arange(T, dtype=np.int64)
    clean = _backend.attention(q, k, v, pos, pos, window, 0.3, 1)
    mask = rule_mask(pos, pos, window)
    for t in (0, 9, 10, 15, 16, 63, 64, 100, 149):
        kp, vp = k.copy(), v.copy()
        kp[~mask[t]], vp[~mask[t]] = bad, bad
        got = _backend.attention(q[t:t + 1], kp, vp, pos[t:t + 1], pos, window, 0.3, 1)
        assert_bitwise_equal(got, clean[t:t + 1], name=f"{window}: query {t}, poisoned keys it does not see")


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_poison_in_empty_and_stale_slots_with_sink_slots(dtype):
    """Empty sink slots (a cache that started past them) and ring slots a query no longer sees,
    poisoned before every decode step: the one-shot bits."""
    n, W, D, T = 3, 8, 8, 60
    rng = np.random.default_rng(4)
    q, k, v = random_qkv(rng, T, T, 2, 1, D, dtype=dtype)
    for start in (0, 1, 5):
        pos = np.arange(start, start + T, dtype=np.int64)
        window = Sliding(W, sink_tokens=n)
        one = _backend.attention(q, k, v, pos, pos, window, 0.3, 1)
        c = SinkRing(window, 1, D, dtype, W + 2, n)
        c.k[:], c.v[:] = np.nan, np.inf
        c.write(k[:2], v[:2], start)
        outs = [_backend.attend_chunk(q[:2], k[:0], v[:0], start, c, 0.3, 1)[:0]]
        for i in range(2, T):
            c.write(k[i:i + 1], v[i:i + 1], start + i)
            p = start + i
            stale = (c.positions >= n) & (c.positions <= p - W)
            c.k[stale], c.v[stale] = np.nan, -np.inf
            c.k[c.positions < 0], c.v[c.positions < 0] = np.inf, np.nan
            outs.append(_backend.attend_chunk(q[i:i + 1], k[:0], v[:0], p, c, 0.3, 1))
        assert_bitwise_equal(np.concatenate(outs), one[2:], name=f"poisoned slots, start {start}")


# ------------------------------------------------------------- overflow

@settings(max_examples=settings.default.max_examples)
@given(data=st.data())
def test_overflowing_rows_follow_the_window(data):
    """float32 rows forced past FLT_MAX (huge q against its own key) and float64 rows of huge
    values: finite, within tolerance of the oracle (its float64 scores are exact for float32
    input), one-shot == chunks to the bit; the fallback sees the same keys as the fast path."""
    dtype = data.draw(st.sampled_from(KERNEL_DTYPES), label="dtype")
    T = data.draw(st.integers(2, 100), label="T")
    window = data.draw(windows(T, causal=True), label="window")
    D = data.draw(st.sampled_from([1, 4, 16]), label="D")
    start = data.draw(st.sampled_from(OFFSETS[:3]), label="start")
    sched = data.draw(schedules(T), label="schedule")
    variant = draw_variant(data, 2, sink_scales=(1.0, 1e3, 1e38), plain=True)
    rows = data.draw(st.lists(st.integers(0, T - 1), min_size=1, max_size=3, unique=True), label="rows")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    q, k, v = random_qkv(rng, T, T, 2, 1, D, dtype=dtype)
    big = float(np.finfo(dtype).max)
    for t in rows:
        if dtype == np.float32:
            q[t, 0] = big / 2
            k[t, 0] = 2.0 + np.abs(rng.standard_normal(D))
        else:
            q[t, 0] = 0
            v[max(0, t - 1):t + 1, 0] = 0.6 * big * rng.choice([-1.0, 1.0], D)
    pos = np.arange(start, start + T, dtype=np.int64)
    one = _backend.attention(q, k, v, pos, pos, window, 1.0, 1, **variant)
    assert np.isfinite(one).all()
    assert_close(one, dense_masked_f64(q, k, v, rule_mask(pos, pos, window), 1.0, **variant), atol=tol(v, dtype),
                 name=f"{window} overflow rows vs oracle")
    n_sink = window.sink_tokens if isinstance(window, Sliding) else 0
    got = run_chunks(q, k, v, window, start, sched, 1, cache_capacity(window, T, 2), n_sink, 1.0, 2, **variant)
    assert_bitwise_equal(got, one, name=f"{window} overflow rows, chunks vs one-shot")


# ------------------------------------------------------------------ GIL

@pytest.mark.parametrize("window", [Sliding(256, sink_tokens=4), TwoSided(128, 128), Chunked(256)])
def test_windows_run_without_the_gil(window):
    rng = np.random.default_rng(0)
    q, k, v = random_qkv(rng, 2048, 2048, 8, 2, 64, dtype=np.float64)
    pos = np.arange(2048, dtype=np.int64)
    assert_runs_without_the_gil(lambda: _backend.attention(q, k, v, pos, pos, window, 0.125, 1))


# --------------------------------------------------------- the wrapper's ints

def test_bounds_beyond_every_position_are_none():
    """_backend hands the kernel int64s: a bound no position reaches is 'none' (same keys)."""
    kp = _backend._kernel_params
    assert kp(None, 10) == (-1, 0, 0, 0)
    assert kp(5, 10) == (4, 0, 0, 0) and kp(2 ** 70, 10) == (-1, 0, 0, 0)
    assert kp(TwoSided(3, 10 ** 30), 10) == (3, -1, 0, 0) and kp(TwoSided(None, 2), 10) == (-1, 2, 0, 0)
    assert kp(Chunked(10 ** 30), 10) == (-1, 0, 0, 0) and kp(Chunked(4), 10) == (-1, 0, 4, 0)
    assert kp(Sliding(4, sink_tokens=10 ** 30), 10) == (3, 0, 0, 11)
    assert kp(Sliding(4, sink_tokens=10 ** 30), 10, sink_slots=7) == (3, 0, 0, 7)     # a cache's layout
    rng = np.random.default_rng(1)
    q, k, v = random_qkv(rng, 12, 12, 2, 1, 4, dtype=np.float64)
    p = np.arange(12, dtype=np.int64)
    A = _backend.attention
    assert_bitwise_equal(A(q, k, v, p, p, TwoSided(None, 10 ** 30), 0.5), A(q, k, v, p, p, TwoSided(None, 11), 0.5),
                         name="unbounded right == right past every key")
    assert_bitwise_equal(A(q, k, v, p, p, Chunked(10 ** 30), 0.5), A(q, k, v, p, p, None, 0.5),
                         name="a chunk past every position == causal")
    assert_bitwise_equal(A(q, k, v, p, p, Sliding(3, sink_tokens=10 ** 30), 0.5), A(q, k, v, p, p, None, 0.5),
                         name="every key a sink == causal")


def test_the_kernel_refuses_parameters_it_cannot_index_with():
    q = np.zeros((2, 1, 4))
    p = np.arange(2, dtype=np.int64)
    e, ep = np.zeros((0, 1, 4)), np.zeros(0, dtype=np.int64)
    for bad in ((-2, 0, 0, 0), (0, -2, 0, 0), (0, 0, -1, 0), (0, 0, 0, -1)):
        with pytest.raises(ValueError, match="kernel_params"):
            _core.band_attention(q, p, q, q, p, e, e, ep, 0, -1, *bad, 1.0, 1)
    ring, rpos = np.zeros((3, 1, 4)), np.full(3, -1, dtype=np.int64)
    with pytest.raises(ValueError, match="sink slots"):          # 3 rows cannot hold 3 sink slots and a ring
        _core.band_attention(q, p, q, q, p, ring, ring, rpos, 0, -1, 1, 0, 0, 3, 1.0, 1)


# ------------------------------------------------------ through the public API
# With the cache of spec rule 4 (sink slots, slack, rollback): backend="cython" against
# backend="reference", and bitwise across schedules, threads, ring rotations and slack.

def public_cache(window, Hkv, D, dtype, T, slack):
    """A cache of the window's span + slack slots; a full-attention one also holds slack + 2
    drafts beyond T."""
    import swaref
    span = None if window is None else (window.size if isinstance(window, (Sliding, Chunked)) else window)
    return swaref.RollingBufferCache(window, Hkv, D, dtype=dtype,
                                     capacity=(T + 2 if span is None else span) + slack)


@given(data=st.data())
def test_public_api_cython_equals_reference_bitwise_across_schedules(data):
    """attention (1 and 2 threads) == prefill(any schedule, slack, offset) == prefill + decode
    through rolled-back drafts, all backend="cython", to the bit; each within tolerance of
    backend="reference" (attention, prefill and the cache states bitwise equal)."""
    import swaref
    T = data.draw(st.integers(1, 100), label="T")
    window = data.draw(windows(T, causal=True), label="window")
    Hkv = data.draw(st.integers(1, 2), label="Hkv")
    G = data.draw(st.sampled_from([1, 2, 4]), label="G")
    D = data.draw(st.sampled_from([1, 4, 16, 20]), label="D")
    dtype = data.draw(st.sampled_from(KERNEL_DTYPES), label="dtype")
    start = data.draw(st.sampled_from(OFFSETS), label="start")
    slack = data.draw(st.sampled_from([0, 1, 4, 17]), label="slack")
    sched = data.draw(schedules(T), label="schedule")
    n_pre = data.draw(st.integers(1, T), label="prefill before decoding")
    variant = draw_variant(data, Hkv * G, plain=True)
    drafts = data.draw(st.lists(st.integers(0, slack + 2), min_size=T, max_size=T), label="drafts")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    q, k, v = random_qkv(rng, T, T, Hkv * G, Hkv, D, dtype=dtype)
    pos = np.arange(start, start + T, dtype=np.int64)
    kw = dict(window=window, q_pos=pos, k_pos=pos, **variant)
    one = swaref.attention(q, k, v, backend="cython", num_threads=1, **kw)
    assert_bitwise_equal(swaref.attention(q, k, v, backend="cython", num_threads=2, **kw), one, name="threads")
    assert_close(one, swaref.attention(q, k, v, **kw), atol=tol(v, dtype), name=f"{window}: cython vs reference")

    c_cy, c_ref = (public_cache(window, Hkv, D, dtype, T, slack) for _ in range(2))
    got = swaref.prefill(q, k, v, c_cy, chunk_size=sched, start=start, backend="cython", num_threads=2, **variant)
    assert_bitwise_equal(got, one, name=f"{window}: prefill {sched} vs one-shot")
    ref = swaref.prefill(q, k, v, c_ref, chunk_size=sched, start=start, **variant)
    assert_close(got, ref, atol=tol(v, dtype), name="prefill cython vs reference")
    for name in ("k", "v", "positions"):
        assert_bitwise_equal(getattr(c_cy, name), getattr(c_ref, name), name=f"cache.{name}")

    c = public_cache(window, Hkv, D, dtype, T, slack)
    outs = [swaref.prefill(q[:n_pre], k[:n_pre], v[:n_pre], c, start=start, backend="cython", **variant)]
    for i, n_draft in zip(range(n_pre, T), drafts):
        # Draft on a copy; keep it, rolled back, where the cache allows taking the drafts back.
        d = c.copy()
        dq, dk, dv = random_qkv(rng, n_draft, n_draft, Hkv * G, Hkv, D, dtype=dtype)
        for j in range(n_draft):
            swaref.decode_step(dq[j:j + 1], dk[j:j + 1], dv[j:j + 1], d, backend="cython", **variant)
        if n_draft <= swaref.max_rollback(d):
            swaref.rollback(d, n_draft)
            c = d
        outs.append(swaref.decode_step(q[i:i + 1], k[i:i + 1], v[i:i + 1], c, backend="cython",
                                       num_threads=1 + i % 2, **variant))
    assert_bitwise_equal(np.concatenate(outs), one, name=f"{window}: prefill {n_pre} + decode through drafts {drafts}")


@settings(max_examples=settings.default.max_examples)
@given(data=st.data())
def test_public_api_two_sided_attention(data):
    """TwoSided windows (attention only): cython == reference within tolerance, threads bitwise,
    gapped positions and queries anywhere among the keys."""
    import swaref
    S = data.draw(st.integers(1, 150), label="S")
    T = data.draw(st.integers(1, S), label="T")
    side = st.one_of(st.none(), st.sampled_from([0, 1, 3, 30, 64, 65]))
    window = TwoSided(data.draw(side, label="left"), data.draw(st.one_of(st.none(), st.sampled_from([1, 2, 40, 64])),
                                                               label="right"))
    D = data.draw(st.sampled_from([1, 8, 16]), label="D")
    dtype = data.draw(st.sampled_from(KERNEL_DTYPES), label="dtype")
    variant = draw_variant(data, 4, plain=True)
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    offset = data.draw(st.sampled_from([0, 2 ** 40]), label="offset")
    k_pos = (np.cumsum(rng.integers(1, 3, S)) + offset).astype(np.int64)
    q_pos = np.sort(rng.choice(k_pos, T, replace=False)).astype(np.int64)
    if not rule_mask(q_pos, k_pos, window).any(axis=1).all():
        return
    q, k, v = random_qkv(rng, T, S, 4, 2, D, dtype=dtype)
    kw = dict(window=window, q_pos=q_pos, k_pos=k_pos, **variant)
    got = swaref.attention(q, k, v, backend="cython", num_threads=2, **kw)
    assert_bitwise_equal(swaref.attention(q, k, v, backend="cython", num_threads=1, **kw), got, name="threads")
    assert_close(got, swaref.attention(q, k, v, **kw), atol=tol(v, dtype), name=f"{window} cython vs reference")


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_public_decode_past_the_sink_tokens_at_2_40(dtype):
    """A cache holding its sink tokens 0 .. 3 and a ring near 2**40 (a saved state, load_state)
    decodes on: the compiled decode equals one-shot attention over the same positions to the bit
    and the reference decode within tolerance.  A gather walking from the sink slots to the
    window would not finish."""
    import swaref
    from swaref.cache import load_state, slot_of
    n, W, C, T = 4, 8, 11, 60
    far = 2 ** 40
    rng = np.random.default_rng(8)
    q, k, v = random_qkv(rng, T, T, 4, 2, 16, dtype=dtype)
    window = Sliding(W, sink_tokens=n)
    pos = np.concatenate([np.arange(n), far - W + np.arange(T - n)]).astype(np.int64)
    held = n + W                                    # sink tokens and the W ring tokens before `far`
    one = swaref.attention(q, k, v, window=window, q_pos=pos, k_pos=pos, backend="cython")
    assert_close(one, swaref.attention(q, k, v, window=window, q_pos=pos, k_pos=pos), atol=tol(v, dtype),
                 name="one-shot across the gap")
    outs = []
    for backend in ("cython", "reference"):
        c = swaref.RollingBufferCache(window, 2, 16, dtype=dtype, capacity=C)
        slots = slot_of(pos[:held], C, n)
        kk, vv, pp = np.zeros_like(c.k), np.zeros_like(c.v), np.full(n + C, -1, dtype=np.int64)
        kk[slots], vv[slots], pp[slots] = k[:held], v[:held], pos[:held]
        load_state(c, pp, kk, vv)
        assert c.next_position == far
        outs.append(np.concatenate([swaref.decode_step(q[i:i + 1], k[i:i + 1], v[i:i + 1], c, backend=backend)
                                    for i in range(held, T)]))
    assert_bitwise_equal(outs[0], one[held:], name="cython decode across a 2**40 gap vs one-shot")
    assert_close(outs[0], outs[1], atol=tol(v, dtype), name="cython vs reference decode")
