"""Spec 1.1 variants on both backends: logit soft-capping, learned sinks (rule 3), ring slack
and rollback (rule 4).

Expected values come from tests/oracle.py (a dense float64 masked softmax with the
cap applied before the mask and the sinks as an extra column) and from brute-force
sets of positions, never from swaref.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import swaref
from oracle import assert_close, dense_attention_f64
from ref_helpers import assert_cache_state, increasing_positions, random_qkv, window_for

BACKENDS = ("reference", "cython")


def _tol(v):
    return 1e-12 * max(1.0, float(np.abs(v).max()))


# ----- rule 3: softcap and sinks -------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=60)
@given(data=st.data())
def test_softcap_and_sinks_match_the_dense_oracle(backend, data):
    T = data.draw(st.integers(1, 12), label="T")
    S = T + data.draw(st.integers(0, 6), label="extra keys")
    G, Hkv, D = data.draw(st.sampled_from([(1, 1, 4), (2, 2, 3), (4, 1, 8)]), label="G, Hkv, D")
    k_pos = data.draw(increasing_positions(S), label="k_pos")
    window = window_for(data.draw, S)
    variant = data.draw(st.sampled_from(["softcap", "sinks"]), label="variant")
    seed = data.draw(st.integers(0, 2 ** 16), label="seed")
    rng = np.random.default_rng(seed)
    q, k, v = random_qkv(rng, T, S, G * Hkv, Hkv, D, vscale=3.0)
    q *= data.draw(st.sampled_from([0.1, 1.0, 8.0]), label="score magnitude")
    kw = {"softcap": data.draw(st.sampled_from([0.5, 5.0, 50.0]), label="cap")} if variant == "softcap" else \
        {"sinks": rng.standard_normal(G * Hkv) * data.draw(st.sampled_from([0.5, 3.0, 30.0]), label="sink")}
    q_pos = k_pos[S - T:]
    try:
        want = dense_attention_f64(q, k, v, q_pos, k_pos, window, **kw)
    except AssertionError:              # a query with no visible key: swaref rejects it
        return
    got = swaref.attention(q, k, v, window=window, k_pos=k_pos, **kw, backend=backend)
    assert_close(got, want, _tol(v), name=f"{variant} vs dense oracle")


@pytest.mark.parametrize("backend", BACKENDS)
def test_sink_worked_example_of_the_spec(backend):
    """Two visible keys with scores (0, 0) and sink 0: w = (1/3, 1/3), o = (v0 + v1) / 3."""
    q = np.zeros((1, 1, 2))
    k = np.ones((2, 1, 2))
    v = np.array([[[3.0, 0.0]], [[0.0, 6.0]]])
    out = swaref.attention(q, k, v, window=2, sinks=[0.0], backend=backend)
    assert_close(out, [[[1.0, 2.0]]], 1e-15, name="sink worked example")


@pytest.mark.parametrize("backend", BACKENDS)
def test_sink_logit_is_not_scaled_and_has_no_value_row(backend):
    """The known bugs of the issue: sink times scale, sink in the numerator (a value row of
    zeros would not show it, a value row of ones would), sink left out of the max."""
    rng = np.random.default_rng(3)
    q, k, v = random_qkv(rng, 5, 5, 2, 1, 16)
    sinks = np.array([2.0, -1.0])
    right = swaref.attention(q, k, v, window=3, sinks=sinks, backend=backend)
    scaled = swaref.attention(q, k, v, window=3, sinks=sinks / 4.0, backend=backend)    # scale = 1/sqrt(16)
    assert np.abs(right - scaled).max() > 1e-3
    plain = swaref.attention(q, k, v, window=3, backend=backend)
    assert np.abs(right - plain).max() > 1e-3
    # A huge sink takes (almost) all the weight: the output goes to 0, never to a value row.
    assert np.abs(swaref.attention(q, k, v, window=3, sinks=[700.0, 700.0], backend=backend)).max() < 1e-200


@pytest.mark.parametrize("backend", BACKENDS)
def test_softcap_bounds_scores_and_large_caps_change_nothing(backend):
    rng = np.random.default_rng(4)
    q, k, v = random_qkv(rng, 6, 6, 2, 2, 4)
    plain = swaref.attention(q, k, v, window=4, backend=backend)
    assert_close(swaref.attention(q, k, v, window=4, softcap=1e9, backend=backend), plain, 1e-12,
                 name="cap 1e9 == no cap")
    # With a tiny cap every score is about 0: uniform weights over the visible keys.
    tiny = swaref.attention(q, k, v, window=4, softcap=1e-9, backend=backend)
    uniform = dense_attention_f64(np.zeros_like(q), k, v, np.arange(6), np.arange(6), 4)
    assert_close(tiny, uniform, 1e-8, name="cap 1e-9 == uniform")


@pytest.mark.parametrize("backend", BACKENDS)
def test_softcap_applies_to_the_scaled_score(backend):
    """Capping q.k before scaling (a known bug) gives another answer."""
    rng = np.random.default_rng(5)
    q, k, v = random_qkv(rng, 4, 4, 1, 1, 16)
    q *= 6
    right = swaref.attention(q, k, v, window=4, softcap=2.0, backend=backend)
    s = np.einsum("thd,shd->ts", q, k)
    wrong_s = 2.0 * np.tanh(s / 2.0) * 0.25                  # cap, then scale
    wrong_s = np.where(np.tril(np.ones((4, 4), bool)), wrong_s, -np.inf)
    w = np.exp(wrong_s - wrong_s.max(1, keepdims=True))
    wrong = (w / w.sum(1, keepdims=True)) @ v[:, 0]
    assert np.abs(right[:, 0] - wrong).max() > 1e-3


@pytest.mark.parametrize("mag,sink", [(1e160, 0.0), (1e160, 1e300), (1e160, -1e300)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_sinks_with_scores_beyond_float64_stay_finite(mag, sink, backend):
    q = np.array([[[mag, 0.0]]])
    k = np.array([[[mag, 0.0]], [[-mag, 0.0]]])
    v = np.array([[[1.0, 2.0]], [[5.0, 7.0]]])
    out = swaref.attention(q, k, v, window=2, sinks=[sink], k_pos=[0, 1], q_pos=[1], backend=backend)
    assert np.isfinite(out).all()
    # Score +1e320 on key 0 beats any finite sink: all weight on key 0.
    assert_close(out, [[[1.0, 2.0]]], 1e-15, name="overflowing score vs sink")
    k2 = -k                                                  # now key 1 has +inf, key 0 -inf
    assert_close(swaref.attention(q, k2, v, window=2, sinks=[sink], k_pos=[0, 1], q_pos=[1], backend=backend),
                 [[[5.0, 7.0]]], 1e-15, name="overflowing score vs sink, other key")
    allneg = np.array([[[-mag, 0.0]], [[-mag, 0.0]]])        # every score -1e320: the sink takes all
    assert_close(swaref.attention(q, allneg, v, window=2, sinks=[sink], k_pos=[0, 1], q_pos=[1], backend=backend),
                 [[[0.0, 0.0]]], 1e-300, name="all scores -inf beyond range")


@pytest.mark.parametrize("chunk", [1, 2, 3, 7])
@pytest.mark.parametrize("kw", [{"softcap": 3.0}, {"sinks": [0.5, -2.0, 1.0, 4.0]}])
@pytest.mark.parametrize("backend", BACKENDS)
def test_prefill_and_decode_with_variants_equal_one_shot(chunk, kw, backend):
    rng = np.random.default_rng(6)
    q, k, v = random_qkv(rng, 17, 17, 4, 2, 8)
    want = swaref.attention(q, k, v, window=5, **kw, backend=backend)
    c = swaref.RollingBufferCache(5, 2, 8, dtype=np.float64)
    a = swaref.prefill(q[:12], k[:12], v[:12], c, chunk_size=chunk, **kw, backend=backend)
    b = [swaref.decode_step(q[i:i + 1], k[i:i + 1], v[i:i + 1], c, **kw, backend=backend) for i in range(12, 17)]
    assert_close(np.concatenate([a, *b]), want, 1e-12, name="prefill + decode with variant")


@pytest.mark.parametrize("kw,kind,words", [
    ({"softcap": 0.0}, "softcap", ["softcap", "> 0"]),
    ({"softcap": -1.0}, "softcap", ["softcap"]),
    ({"softcap": float("inf")}, "softcap", ["softcap"]),
    ({"softcap": float("nan")}, "softcap", ["softcap"]),
    ({"softcap": 10 ** 400}, "softcap", ["softcap", "finite"]),
    ({"softcap": True}, "softcap", ["softcap", "bool"]),
    ({"softcap": "5"}, "softcap", ["softcap", "str"]),
    ({"sinks": [0.0]}, "sinks", ["sinks", "(2,)", "(1,)"]),
    ({"sinks": [[0.0, 0.0]]}, "sinks", ["sinks", "1-D"]),
    ({"sinks": np.zeros((1, 2))}, "sinks", ["sinks", "(1, 2)"]),
    ({"sinks": [0.0, float("nan")]}, "sinks", ["sinks[1]", "nan"]),
    ({"sinks": [0.0, -float("inf")]}, "sinks", ["sinks[1]"]),
    ({"sinks": ["a", "b"]}, "sinks", ["sinks"]),
    ({"sinks": np.array([True, False])}, "sinks", ["sinks", "bool"]),
    ({"sinks": 0.5}, "sinks", ["sinks", "float"]),
    ({"sinks": [0.0, 1.0], "softcap": 5.0}, "argument", ["softcap and sinks"]),
])
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_variant_arguments_are_rejected_before_any_write(kw, kind, words, backend):
    rng = np.random.default_rng(7)
    q, k, v = random_qkv(rng, 3, 3, 2, 1, 4)
    with pytest.raises(swaref.SwarefError) as ei:
        swaref.attention(q, k, v, window=2, backend=backend, **kw)
    assert ei.value.kind == kind and all(w in str(ei.value) for w in words), str(ei.value)
    c = swaref.RollingBufferCache(2, 1, 4, dtype=np.float64)
    swaref.prefill(q[:1], k[:1], v[:1], c)
    before = (c.k.copy(), c.v.copy(), c.positions.copy(), c.n_seen, c.next_position)
    for call in (lambda: swaref.prefill(q[1:], k[1:], v[1:], c, backend=backend, **kw),
                 lambda: swaref.decode_step(q[1:2], k[1:2], v[1:2], c, backend=backend, **kw)):
        with pytest.raises(swaref.SwarefError) as ei:
            call()
        assert ei.value.kind == kind
        assert_cache_state(c, *before, name="cache after a rejected variant")


# ----- rule 4: slack and rollback ------------------------------------------------------

def _rollback_allowed(W, C, start, N, n):
    """Brute force from the rule: after writing start .. N-1 into C slots, the ring holds the
    last C of them; rolling back n is possible iff n tokens were written and every key a
    query at P = N - n needs (P - W + 1 .. P - 1, those ever written) is still held."""
    if n > N - start:
        return False
    held = set(range(max(start, N - C), N))
    P = N - n
    needed = set(range(max(start, P - W + 1), P))
    return needed <= held


@settings(max_examples=150)
@given(W=st.integers(1, 6), slack=st.integers(0, 5), start=st.sampled_from([0, 3, 10 ** 6]),
       written=st.integers(1, 25), n=st.integers(0, 30))
def test_max_rollback_is_exactly_the_rule(W, slack, start, written, n):
    c = swaref.RollingBufferCache(W, 1, 2, dtype=np.float64, capacity=W + slack)
    x = np.zeros((written, 1, 2))
    swaref.cache_write(c, x, x, start)
    allowed = _rollback_allowed(W, W + slack, start, start + written, n)
    assert (n <= swaref.max_rollback(c) or n == written) == allowed
    before = (c.k.copy(), c.v.copy(), c.positions.copy(), c.n_seen, c.next_position)
    if allowed:
        swaref.rollback(c, n)
        assert c.next_position == start + written - n and c.n_seen == written - n
        held = sorted(p for p in c.positions.tolist() if p >= 0)
        assert held == list(range(max(start, start + written - (W + slack)), start + written - n))
    else:
        with pytest.raises(swaref.SwarefError) as ei:
            swaref.rollback(c, n)
        assert ei.value.kind == "rollback"
        assert_cache_state(c, *before, name="cache after a refused rollback")


def test_rollback_worked_example_of_the_spec():
    """W = 4, C = 6, positions 0..9 written: the ring holds 4..9 and max_rollback is 3."""
    c = swaref.RollingBufferCache(4, 1, 1, dtype=np.float64, capacity=6)
    x = np.arange(10, dtype=np.float64).reshape(10, 1, 1)
    swaref.cache_write(c, x, x)
    assert swaref.max_rollback(c) == 3
    with pytest.raises(swaref.SwarefError, match="position 3"):
        swaref.rollback(c, 4)
    swaref.rollback(c, 3)
    assert swaref.cache_view(c)[2].tolist() == [4, 5, 6] and c.next_position == 7
    no_slack = swaref.RollingBufferCache(4, 1, 1, dtype=np.float64)
    swaref.cache_write(no_slack, x, x)
    assert swaref.max_rollback(no_slack) == 1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("W,slack,n_draft,accept", [(4, 3, 3, 1), (4, 3, 4, 0), (5, 0, 1, 0), (3, 6, 5, 2)])
def test_speculative_decoding_with_rollback_equals_the_accepted_sequence(backend, W, slack, n_draft, accept):
    """Decode n_draft draft tokens, roll back the rejected ones, decode the real next tokens:
    the outputs equal one-shot attention over the accepted sequence, and the cache equals a
    cache that only ever saw the accepted tokens (rolled-back slots are invisible)."""
    rng = np.random.default_rng(W * 100 + slack * 10 + n_draft)
    T0, T1 = 11, 6
    q, k, v = random_qkv(rng, T0 + T1, T0 + T1, 2, 1, 8)
    dq, dk, dv = random_qkv(rng, n_draft, n_draft, 2, 1, 8)       # drafts, mostly rejected
    dq[:accept], dk[:accept], dv[:accept] = q[T0:T0 + accept], k[T0:T0 + accept], v[T0:T0 + accept]
    c = swaref.RollingBufferCache(W, 1, 8, dtype=np.float64, capacity=W + slack)
    swaref.prefill(q[:T0], k[:T0], v[:T0], c, backend=backend)
    for i in range(n_draft):
        swaref.decode_step(dq[i:i + 1], dk[i:i + 1], dv[i:i + 1], c, backend=backend)
    swaref.rollback(c, n_draft - accept)
    outs = [swaref.decode_step(q[i:i + 1], k[i:i + 1], v[i:i + 1], c, backend=backend)
            for i in range(T0 + accept, T0 + T1)]
    want = dense_attention_f64(q, k, v, np.arange(T0 + T1), np.arange(T0 + T1), W)[T0 + accept:]
    assert_close(np.concatenate(outs), want, 1e-12, name="decode after rollback")
    honest = swaref.RollingBufferCache(W, 1, 8, dtype=np.float64, capacity=W + slack)
    swaref.cache_write(honest, k, v)
    assert sorted(swaref.cache_view(c)[2].tolist()) == sorted(swaref.cache_view(honest)[2].tolist())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("slack", [0, 1, 5])
def test_slack_changes_no_output(backend, slack):
    """A ring of W + slack slots gives the same outputs as one of W (rule 4: the window, not the
    capacity, decides what a query sees); the compiled backend bitwise."""
    rng = np.random.default_rng(slack)
    q, k, v = random_qkv(rng, 23, 23, 4, 2, 8, dtype=np.float32 if backend == "cython" else np.float64)
    outs = []
    for cap in (5, 5 + slack):
        c = swaref.RollingBufferCache(5, 2, 8, dtype=q.dtype, capacity=cap)
        a = swaref.prefill(q[:15], k[:15], v[:15], c, chunk_size=4, backend=backend)
        b = [swaref.decode_step(q[i:i + 1], k[i:i + 1], v[i:i + 1], c, backend=backend) for i in range(15, 23)]
        outs.append(np.concatenate([a, *b]))
    assert np.array_equal(outs[0], outs[1])


@pytest.mark.parametrize("n,words", [(-1, ["n", ">= 0"]), (2.0, ["n", "float"]), (True, ["n", "bool"]),
                                     (50, ["holds 10 tokens"]), (9, ["at most 1, or all 10", "position 0"])])
def test_bad_rollback_is_rejected(n, words):
    c = swaref.RollingBufferCache(4, 1, 1, dtype=np.float64, capacity=4 if n == 9 else 20)
    x = np.zeros((10, 1, 1))
    swaref.cache_write(c, x, x)
    with pytest.raises(swaref.SwarefError) as ei:
        swaref.rollback(c, n)
    assert ei.value.kind == "rollback" and all(w in str(ei.value) for w in words), str(ei.value)
    assert c.next_position == 10


def test_rollback_of_everything_from_a_wrapped_ring_then_more_tokens():
    """n_held went negative when all n_seen tokens of a wrapped ring were rolled back, so a
    later rollback within the limit was refused (found by the C port's author)."""
    c = swaref.RollingBufferCache(4, 1, 1, dtype=np.float64, capacity=6)
    x = np.arange(13, dtype=np.float64).reshape(13, 1, 1)
    swaref.cache_write(c, x[:10], x[:10])
    swaref.rollback(c, 10)
    assert c.n_held == 0 and c.n_seen == 0 and (c.positions == -1).all() and c.next_position == 0
    swaref.cache_write(c, x[:3], x[:3])
    assert c.n_held == 3 and swaref.max_rollback(c) == 3
    swaref.rollback(c, 2)
    assert swaref.cache_view(c)[2].tolist() == [0] and c.next_position == 1


def test_rollback_of_everything_leaves_an_empty_cache_that_continues():
    c = swaref.RollingBufferCache(4, 1, 1, dtype=np.float64, capacity=8)
    x = np.ones((3, 1, 1))
    swaref.cache_write(c, x, x, 5)
    swaref.rollback(c, 3)
    assert (c.positions == -1).all() and c.n_seen == 0 and c.n_held == 0 and c.next_position == 5
    swaref.decode_step(x[:1], x[:1], x[:1], c)
    assert swaref.cache_view(c)[2].tolist() == [5]
