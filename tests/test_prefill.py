"""Chunked prefill and decode (spec rule 5) against one-shot dense attention (tests/oracle.py).

Every schedule must give the one-shot answer (float64, within 1e-12 * max|V|) and
leave the cache bitwise equal to token-by-token decoding and to the state rule 4
predicts.  T > 3W throughout, so the buffer wraps several times.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import swaref
from oracle import assert_close, dense_attention_f64
from ref_helpers import assert_cache_state, dtype_tol, expected_state, f64_tol, random_qkv


# The main randomized comparison of this file runs longer than the profile's default
# (scaled, so HYPOTHESIS_PROFILE=ci-long scales it too).
MORE = settings(max_examples=5 * settings.default.max_examples)


def one_shot(q, k, v, start, W):
    pos = np.arange(start, start + q.shape[0], dtype=np.int64)
    return dense_attention_f64(q, k, v, pos, pos, W)


def decode_all(q, k, v, cache, start=None):
    """Token-by-token decoding of every row (start only for the first token)."""
    outs = [swaref.decode_step(q[i:i + 1], k[i:i + 1], v[i:i + 1], cache,
                               start=start if i == 0 else None) for i in range(q.shape[0])]
    return np.concatenate(outs)


def check_cache(cache, k, v, start, W, name):
    T = k.shape[0]
    ek, ev, ep = expected_state(W, k.shape[1], k.shape[2], k.dtype, k, v, start, T)
    assert_cache_state(cache, ek, ev, ep, T, start + T, name=name)


CASES = [(1, 5), (2, 7), (3, 11), (4, 15), (5, 17), (4, 4 * 4 + 3)]


@pytest.mark.parametrize("W,T", CASES)
@pytest.mark.parametrize("start", [0, 10 ** 9])
def test_every_chunk_size_equals_one_shot(W, T, start):
    assert T > 3 * W
    Hq, Hkv, D = 4, 2, 3
    rng = np.random.default_rng(W * 1000 + T)
    q, k, v = random_qkv(rng, T, T, Hq, Hkv, D)
    expected = one_shot(q, k, v, start, W)
    ref_cache = swaref.RollingBufferCache(W, Hkv, D, dtype=np.float64)
    assert_close(decode_all(q, k, v, ref_cache, start=start), expected, atol=f64_tol(v),
                 name=f"token-by-token decode W={W}")
    check_cache(ref_cache, k, v, start, W, "after decoding")
    for cs in range(1, T + 1):
        c = swaref.RollingBufferCache(W, Hkv, D, dtype=np.float64)
        out = swaref.prefill(q, k, v, c, chunk_size=cs, start=start)
        assert_close(out, expected, atol=f64_tol(v), name=f"prefill W={W} chunk_size={cs}")
        check_cache(c, k, v, start, W, f"after prefill chunk_size={cs}")
        assert_cache_state(c, ref_cache.k, ref_cache.v, ref_cache.positions, ref_cache.n_seen,
                           ref_cache.next_position, name=f"prefill chunk_size={cs} vs decoding")


@st.composite
def schedules(draw, T):
    """A random composition of T into chunks >= 1 (uneven, may exceed W)."""
    cuts = sorted(draw(st.sets(st.integers(1, T - 1), max_size=T - 1))) if T > 1 else []
    bounds = [0] + cuts + [T]
    return [b - a for a, b in zip(bounds, bounds[1:])]


@MORE
@given(st.data())
def test_uneven_schedule_then_decode_equals_one_shot(data):
    W = data.draw(st.integers(1, 6), label="W")
    T = data.draw(st.integers(3 * W + 1, 3 * W + 12), label="T")
    n_prefill = data.draw(st.integers(1, T), label="tokens prefilled, the rest decoded")
    sched = data.draw(schedules(n_prefill), label="schedule")
    start = data.draw(st.sampled_from([0, 1, 3, 10 ** 9]), label="start")
    Hq, Hkv = data.draw(st.sampled_from([(1, 1), (2, 1), (4, 2), (3, 3)]), label="heads")
    D = data.draw(st.sampled_from([1, 4]), label="D")
    seed = data.draw(st.integers(0, 2 ** 32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    q, k, v = random_qkv(rng, T, T, Hq, Hkv, D)
    c = swaref.RollingBufferCache(W, Hkv, D, dtype=np.float64)
    # Split the prefix into two prefill calls when it can be, so a prefill also
    # continues a non-empty cache through start=None.
    split = data.draw(st.integers(0, len(sched)), label="prefill calls split")
    a = sum(sched[:split])
    parts = []
    if a:
        parts.append(swaref.prefill(q[:a], k[:a], v[:a], c, chunk_size=sched[:split], start=start))
    b = n_prefill
    if b > a:
        parts.append(swaref.prefill(q[a:b], k[a:b], v[a:b], c, chunk_size=sched[split:],
                                    start=None if a else start))
    if T > b:
        parts.append(decode_all(q[b:], k[b:], v[b:], c))
    out = np.concatenate(parts)
    assert_close(out, one_shot(q, k, v, start, W), atol=f64_tol(v), name=f"schedule {sched} + decode")
    check_cache(c, k, v, start, W, f"after schedule {sched} + decode")


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_low_precision_prefill_matches_oracle_and_cache_bitwise(dtype):
    W, T, Hq, Hkv, D = 4, 17, 4, 1, 8
    rng = np.random.default_rng(11)
    q, k, v = random_qkv(rng, T, T, Hq, Hkv, D, dtype)
    c = swaref.RollingBufferCache(W, Hkv, D, dtype=dtype)
    out = swaref.prefill(q, k, v, c, chunk_size=[3, 1, 6, 2, 5])
    assert out.dtype == np.dtype(dtype)
    assert_close(out, one_shot(q, k, v, 0, W), atol=dtype_tol(v, dtype), name=np.dtype(dtype).name)
    check_cache(c, k, v, 0, W, np.dtype(dtype).name)


@pytest.mark.parametrize("W,T", [(3, 10), (4, 15)])
def test_default_chunk_size_is_W(W, T):
    assert swaref.chunk_schedule(T, None, W) == [W] * (T // W) + ([T % W] if T % W else [])
    rng = np.random.default_rng(5)
    q, k, v = random_qkv(rng, T, T, 2, 1, 4)
    c = swaref.RollingBufferCache(W, 1, 4, dtype=np.float64)
    assert_close(swaref.prefill(q, k, v, c), one_shot(q, k, v, 0, W), atol=f64_tol(v))
    check_cache(c, k, v, 0, W, "default chunk size")


def test_chunk_schedule_shapes():
    assert swaref.chunk_schedule(10, 3, 4) == [3, 3, 3, 1]
    assert swaref.chunk_schedule(10, 10, 4) == [10]
    assert swaref.chunk_schedule(10, 25, 4) == [10]
    assert swaref.chunk_schedule(5, 1, 4) == [1] * 5
    assert swaref.chunk_schedule(6, [1, 4, 1], 4) == [1, 4, 1]
    assert swaref.chunk_schedule(7, None, None) == [7]


def _write_then_attend(q, k, v, cache, sched):
    """The WRONG order for multi-token chunks, built from public pieces: write the chunk,
    then attend over what the cache holds."""
    outs, a = [], 0
    for s in sched:
        swaref.cache_write(cache, k[a:a + s], v[a:a + s], a)
        ck, cv, cpos = cache.view()
        outs.append(swaref.attention(q[a:a + s], ck, cv, window=cache.window,
                                     q_pos=np.arange(a, a + s), k_pos=cpos))
        a += s
    return np.concatenate(outs)


@pytest.mark.parametrize("W,s", [(4, 2), (4, 3), (4, 4), (5, 3)])
def test_regression_writing_a_chunk_before_attending_is_wrong(W, s):
    # Spec rule 5: a chunk of s >= 2 tokens written first overwrites positions its
    # early queries still need.  This pins the order: the wrong order must differ from
    # the oracle while swaref.prefill (attend, then write) matches it.
    T, Hq, Hkv, D = 3 * W + 2 * s, 2, 1, 4
    rng = np.random.default_rng(W * 10 + s)
    q, k, v = random_qkv(rng, T, T, Hq, Hkv, D)
    expected = one_shot(q, k, v, 0, W)
    sched = [s] * (T // s) + ([T % s] if T % s else [])
    wrong = _write_then_attend(q, k, v, swaref.RollingBufferCache(W, Hkv, D, dtype=np.float64), sched)
    err = np.abs(wrong - expected).max()
    assert err > 1e-3, f"write-then-attend should lose keys for chunks of {s} > 1, max diff {err:.2e}"
    # Only the first s - 1 queries of each chunk after the first W tokens lose keys.
    lost = np.abs(wrong - expected).max(axis=(1, 2)) > 1e-9
    pos = np.arange(T)
    in_chunk = pos % s
    assert not lost[in_chunk == s - 1].any(), "the last query of a chunk loses nothing"
    right = swaref.prefill(q, k, v, swaref.RollingBufferCache(W, Hkv, D, dtype=np.float64), chunk_size=s)
    assert_close(right, expected, atol=f64_tol(v), name="prefill (attend, then write)")


def test_decode_must_write_before_attending():
    # Decode sees its own key: a query whose own key is special shows it in the output.
    W, D = 3, 2
    c = swaref.RollingBufferCache(W, 1, D, dtype=np.float64)
    x = np.zeros((1, 1, D))
    swaref.prefill(np.zeros((5, 1, D)), np.zeros((5, 1, D)), np.zeros((5, 1, D)), c)
    out = swaref.decode_step(x + 1, x + 100, x + 7, c)      # its own key dominates the softmax
    assert np.allclose(out, 7.0), out


# ----- the window family (spec 1.1): kept sink tokens and chunked attention ------------

from swaref import Chunked, Sliding                     # noqa: E402


def _span(window):
    return window.size if isinstance(window, (Sliding, Chunked)) else window


@MORE
@given(st.data())
def test_any_schedule_with_sinks_or_chunks_equals_one_shot_and_token_by_token(data):
    """Rule 5's guarantee for Sliding with sink tokens and Chunked: every schedule (chunks
    crossing chunk boundaries, longer than C, prompts starting at start > 0, below or above
    the sink tokens, with ring slack) then decode gives one-shot attention, and leaves the
    cache bitwise equal to token-by-token decoding."""
    window = data.draw(st.one_of(st.builds(Sliding, st.integers(1, 5), st.integers(1, 4)),
                                 st.builds(Chunked, st.integers(1, 6))), label="window")
    span = _span(window)
    capacity = span + data.draw(st.sampled_from([0, 0, 1, 3]), label="slack")
    T = data.draw(st.integers(2 * span + 1, 3 * span + 10), label="T")
    n_prefill = data.draw(st.integers(1, T), label="tokens prefilled, the rest decoded")
    sched = data.draw(schedules(n_prefill), label="schedule")
    start = data.draw(st.sampled_from([0, 1, 2, 5, 10 ** 9]), label="start")
    Hq, Hkv = data.draw(st.sampled_from([(1, 1), (2, 1), (4, 2)]), label="heads")
    variant = data.draw(st.sampled_from([{}, {"softcap": 3.0}, {"sinks": [0.5, -1.0, 2.0, 0.0][:Hq]}]),
                        label="variant")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    q, k, v = random_qkv(rng, T, T, Hq, Hkv, 3)
    c = swaref.RollingBufferCache(window, Hkv, 3, dtype=np.float64, capacity=capacity)
    out = [swaref.prefill(q[:n_prefill], k[:n_prefill], v[:n_prefill], c, chunk_size=sched, start=start, **variant)]
    out += [swaref.decode_step(q[i:i + 1], k[i:i + 1], v[i:i + 1], c, **variant) for i in range(n_prefill, T)]
    pos = np.arange(start, start + T)
    assert_close(np.concatenate(out), dense_attention_f64(q, k, v, pos, pos, window, **variant), atol=f64_tol(v),
                 name=f"{window!r} schedule {sched} + decode from {start}")
    tbt = swaref.RollingBufferCache(window, Hkv, 3, dtype=np.float64, capacity=capacity)
    decode_all(q, k, v, tbt, start=start)
    assert_cache_state(c, tbt.k, tbt.v, tbt.positions, tbt.n_seen, tbt.next_position, name="cache vs token by token")
    assert c.n_held == tbt.n_held


@pytest.mark.parametrize("window,T", [(Chunked(4), 10), (Chunked(3), 9), (Sliding(3, 2), 10)], ids=repr)
def test_default_chunk_size_is_the_window_or_the_chunk(window, T):
    span = _span(window)
    assert swaref.chunk_schedule(T, None, window) == [span] * (T // span) + ([T % span] if T % span else [])
    rng = np.random.default_rng(5)
    q, k, v = random_qkv(rng, T, T, 2, 1, 4)
    c = swaref.RollingBufferCache(window, 1, 4, dtype=np.float64)
    pos = np.arange(T)
    assert_close(swaref.prefill(q, k, v, c), dense_attention_f64(q, k, v, pos, pos, window), atol=f64_tol(v))


def test_chunked_query_at_a_chunk_start_sees_only_itself_though_the_cache_holds_more():
    """Rule 4: at a chunk boundary every key of the previous chunk becomes invisible while it
    still sits in the ring; decode's output there is its own value row."""
    c = swaref.RollingBufferCache(Chunked(4), 1, 2, dtype=np.float64)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 1, 2))
    swaref.prefill(x, x, x, c)
    assert c.view()[2].tolist() == [0, 1, 2, 3]
    v4 = np.array([[[7.0, -3.0]]])
    out = swaref.decode_step(x[:1], x[:1], v4, c)
    assert_close(out, v4, 1e-15, name="query at the chunk start")
    assert c.view()[2].tolist() == [1, 2, 3, 4]


def test_decode_sees_the_sink_tokens_after_they_left_the_window():
    """Sliding(2, sink_tokens=1): the token at position 0 stays in its sink slot and in every
    later query's softmax; a cache without the sink slot (plain W = 2) gives another answer."""
    rng = np.random.default_rng(1)
    q, k, v = random_qkv(rng, 9, 9, 1, 1, 4)
    outs = {}
    for w in (Sliding(2, 1), 2):
        c = swaref.RollingBufferCache(w, 1, 4, dtype=np.float64)
        outs[repr(w)] = decode_all(q, k, v, c)
    assert c.positions.tolist() == [8, 7]
    pos = np.arange(9)
    assert_close(outs["Sliding(size=2, sink_tokens=1)"], dense_attention_f64(q, k, v, pos, pos, Sliding(2, 1)),
                 f64_tol(v))
    assert np.abs(outs["Sliding(size=2, sink_tokens=1)"] - outs["2"])[2:].min() > 1e-6


def test_attend_chunk_decode_finds_queries_in_sink_slots():
    c = swaref.RollingBufferCache(Sliding(2, 3), 1, 2, dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((6, 1, 2))
    swaref.cache_write(c, x[:2], x[:2])                      # positions 0, 1: sink slots only
    pos = np.arange(2)
    assert_close(swaref.attend_chunk(x[:2], x[:0], x[:0], c, 0),
                 dense_attention_f64(x[:2], x[:2], x[:2], pos, pos, Sliding(2, 3)), 1e-12)
    with pytest.raises(swaref.SwarefError) as ei:
        swaref.attend_chunk(x[:1], x[:0], x[:0], c, 2)
    assert ei.value.kind == "no_visible_key" and "sink positions [0, 1]" in str(ei.value)
