"""The spec 1.1 window family (rule 1): Sliding with kept sink tokens, TwoSided, Chunked.

window_mask against the brute-force double loop of tests/oracle.py (rule 1 written from
the spec's words), the reference attention against the dense float64 softmax oracle,
visible_key_range against the brute-force mask, receptive_field against the dependency
measured in a layer stack; wrong-variant twins (off by one on either side, chunked read
as a sliding window, sink tokens dropped or misplaced) are shown to fail those checks.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import swaref
from swaref import Chunked, Sliding, TwoSided
from oracle import assert_bitwise_equal, assert_close, brute_force_mask, dense_attention_f64, visible
from ref_helpers import DTYPES, dtype_tol, f64_tol, increasing_positions, random_qkv

MORE = settings(max_examples=5 * settings.default.max_examples)


def family(n):
    """A window of the spec 1.1 family for a sequence of about n positions: small, edge and
    huge parameters (beyond int64 too, which fold to plain causal or an unbounded side)."""
    size = st.sampled_from([1, 2, 3, max(1, n // 2), n, n + 1, 2 ** 62, 2 ** 64])
    side = st.one_of(st.none(), st.sampled_from([0, 1, 2, 3, n, 2 ** 62, 2 ** 64]))
    return st.one_of(
        st.builds(Sliding, size, st.sampled_from([1, 2, 3, n, n + 2, 2 ** 64])),
        st.builds(TwoSided, side, side),
        st.builds(Chunked, size))


def queries_around(data, k_pos, label="q_pos"):
    """Sorted distinct query positions anywhere near the keys (between them, past them)."""
    lo, hi = int(k_pos[0]), int(k_pos[-1]) + 5
    return np.asarray(sorted(set(data.draw(st.lists(st.integers(lo, hi), min_size=1, max_size=12),
                                           label=label))), dtype=np.int64)


# ----- the mask ------------------------------------------------------------------------

@MORE
@given(st.data())
def test_window_mask_matches_brute_force(data):
    Tk = data.draw(st.integers(1, 20), label="Tk")
    k_pos = data.draw(increasing_positions(Tk), label="k_pos")
    q_pos = queries_around(data, k_pos)
    window = data.draw(family(Tk), label="window")
    m = swaref.window_mask(q_pos, k_pos, window)
    assert m.dtype == np.bool_
    np.testing.assert_array_equal(m, brute_force_mask(q_pos.tolist(), k_pos.tolist(), window))


EXTREMES = [-2 ** 63, -2 ** 62 - 1, -5, -1, 0, 1, 2, 3, 2 ** 62, 2 ** 63 - 2, 2 ** 63 - 1]


@pytest.mark.parametrize("window", [Sliding(2, 1), Sliding(2 ** 63, 3), TwoSided(1, 2), TwoSided(None, 2 ** 63),
                                    TwoSided(2 ** 64, None), Chunked(3), Chunked(2 ** 63), Chunked(2 ** 65)])
def test_window_mask_exact_at_int64_extremes(window):
    """Rule 1 holds for every integer: no difference or quotient formed where it overflows."""
    want = brute_force_mask(EXTREMES, EXTREMES, window)
    np.testing.assert_array_equal(swaref.window_mask(np.array(EXTREMES, np.int64), EXTREMES, window), want)
    big = EXTREMES + [2 ** 64 + 5]
    np.testing.assert_array_equal(swaref.window_mask(big, big, window), brute_force_mask(big, big, window))


@pytest.mark.parametrize("W", [1, 2, 5])
def test_spellings_of_one_rule_give_one_mask(W):
    """normalize: Sliding(W) and TwoSided(W - 1, 0) are W, TwoSided(None, 0) is None."""
    pos = np.arange(3 * W + 4)
    for a, b in [(Sliding(W), W), (Sliding(W, 0), W), (TwoSided(W - 1, 0), W), (TwoSided(None, 0), None)]:
        np.testing.assert_array_equal(swaref.window_mask(pos, pos, a), swaref.window_mask(pos, pos, b))


# The spec's worked examples on "The cat is on a chair" (positions 0..5), written out by hand.
WORKED = {
    Sliding(3, sink_tokens=1): ["x.....", "xx....", "xxx...", "xxxx..", "x.xxx.", "x..xxx"],
    TwoSided(1, 1): ["xx....", "xxx...", ".xxx..", "..xxx.", "...xxx", "....xx"],
    Chunked(3): ["x.....", "xx....", "xxx...", "...x..", "...xx.", "...xxx"],
}


@pytest.mark.parametrize("window", list(WORKED), ids=repr)
def test_worked_examples_of_the_spec(window):
    pos = np.arange(6)
    want = np.array([[c == "x" for c in row] for row in WORKED[window]])
    np.testing.assert_array_equal(swaref.window_mask(pos, pos, window), want)


def test_chunked_is_not_a_sliding_window():
    """At a chunk's first position the query sees only itself; a sliding window of C sees C keys."""
    pos = np.arange(8)
    m = swaref.window_mask(pos, pos, Chunked(4))
    assert m[4].sum() == 1 and m[3].sum() == 4 and m[7].sum() == 4
    assert (m != swaref.window_mask(pos, pos, 4)).any()


# ----- wrong-variant twins: each must fail the mask check ----------------------------

def _mask_by(rule, q_pos, k_pos):
    return np.array([[rule(int(p), int(j)) for j in k_pos] for p in q_pos], dtype=bool)


#: name: (the right window, a wrong rule a port might implement)
TWINS = {
    "two-sided left + 1": (TwoSided(2, 1), lambda p, j: p - 3 <= j <= p + 1),
    "two-sided left - 1": (TwoSided(2, 1), lambda p, j: p - 1 <= j <= p + 1),
    "two-sided right + 1": (TwoSided(2, 1), lambda p, j: p - 2 <= j <= p + 2),
    "two-sided right - 1": (TwoSided(2, 1), lambda p, j: p - 2 <= j <= p),
    "two-sided read as causal": (TwoSided(2, 2), lambda p, j: p - 2 <= j <= p),
    "chunked as a sliding window of C": (Chunked(3), lambda p, j: p - 3 < j <= p),
    "chunked boundary off by one": (Chunked(3), lambda p, j: j <= p and (j - 1) // 3 == (p - 1) // 3),
    "chunked without causality": (Chunked(3), lambda p, j: j // 3 == p // 3),
    "sink tokens dropped": (Sliding(3, 2), lambda p, j: p - 3 < j <= p),
    "sink tokens counted inside the window": (Sliding(3, 1), lambda p, j: j <= p and (j < 1 or p - 2 < j)),
    "sink tokens n + 1": (Sliding(3, 2), lambda p, j: j <= p and (j < 3 or p - 3 < j)),
    "sink tokens n - 1": (Sliding(3, 2), lambda p, j: j <= p and (j < 1 or p - 3 < j)),
    "sink tokens visible before their position": (Sliding(3, 2), lambda p, j: j < 2 or p - 3 < j <= p),
}


@pytest.mark.parametrize("twin", sorted(TWINS))
def test_wrong_variants_fail_the_mask_check(twin):
    window, rule = TWINS[twin]
    pos = np.arange(12)
    right = swaref.window_mask(pos, pos, window)
    np.testing.assert_array_equal(right, brute_force_mask(pos.tolist(), pos.tolist(), window))
    wrong = _mask_by(rule, pos, pos)
    assert (wrong != right).any(), f"{twin} is indistinguishable on 12 positions"
    with pytest.raises(AssertionError):
        np.testing.assert_array_equal(wrong, brute_force_mask(pos.tolist(), pos.tolist(), window))


#: Twins expressible as another window: swaref.attention with the wrong window must fail the
#: dense oracle of the right one (so the attention comparison below catches them too).
ATTENTION_TWINS = [
    (TwoSided(2, 1), TwoSided(3, 1)), (TwoSided(2, 1), TwoSided(1, 1)),
    (TwoSided(2, 1), TwoSided(2, 2)), (TwoSided(2, 1), TwoSided(2, 0)),
    (Chunked(3), 3), (Chunked(3), None),
    (Sliding(3, 2), 3), (Sliding(3, 2), Sliding(3, 1)), (Sliding(3, 2), Sliding(3, 3)),
    (Sliding(4, 2), Sliding(2, 2)),
]


@pytest.mark.parametrize("right,wrong", ATTENTION_TWINS, ids=repr)
def test_wrong_windows_fail_the_attention_oracle(right, wrong):
    rng = np.random.default_rng(0)
    q, k, v = random_qkv(rng, 12, 12, 2, 1, 4)
    pos = np.arange(12)
    want = dense_attention_f64(q, k, v, pos, pos, right)
    assert_close(swaref.attention(q, k, v, window=right), want, f64_tol(v), name=repr(right))
    with pytest.raises(AssertionError):
        assert_close(swaref.attention(q, k, v, window=wrong), want, 1e-6, name=f"{wrong!r} for {right!r}")


# ----- the reference attention ------------------------------------------------------------

@MORE
@given(st.data())
def test_reference_attention_matches_dense_oracle(data):
    S = data.draw(st.integers(1, 14), label="S")
    k_pos = data.draw(increasing_positions(S), label="k_pos")
    if data.draw(st.booleans(), label="explicit q_pos"):
        q_pos = queries_around(data, k_pos)
    else:
        q_pos = k_pos[S - data.draw(st.integers(1, S), label="T"):]
    T = len(q_pos)
    window = data.draw(family(S), label="window")
    G, Hkv, D = data.draw(st.sampled_from([(1, 1, 1), (2, 1, 4), (1, 2, 3), (3, 2, 2)]), label="G, Hkv, D")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    variant = data.draw(st.sampled_from([{}, {"softcap": 2.0}, "sinks"]), label="variant")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    if variant == "sinks":
        variant = {"sinks": rng.standard_normal(G * Hkv) * 2}
    q, k, v = random_qkv(rng, T, S, G * Hkv, Hkv, D, dtype=dtype, vscale=3.0)
    mask = brute_force_mask(q_pos.tolist(), k_pos.tolist(), window)
    if not mask.any(axis=1).all():
        with pytest.raises(swaref.SwarefError) as ei:
            swaref.attention(q, k, v, window=window, q_pos=q_pos, k_pos=k_pos, **variant)
        assert ei.value.kind == "no_visible_key"
        assert str(int(q_pos[np.argmin(mask.any(axis=1))])) in str(ei.value)
        return
    got = swaref.attention(q, k, v, window=window, q_pos=q_pos, k_pos=k_pos, **variant)
    assert got.dtype == np.dtype(dtype)
    want = dense_attention_f64(q, k, v, q_pos, k_pos, window, **variant)
    tol = f64_tol(v) if dtype == np.float64 else dtype_tol(v, dtype)
    assert_close(got, want, tol, name=f"{window!r} {variant}")


@settings(max_examples=60)
@given(st.data())
def test_visible_key_range_is_the_mask(data):
    S = data.draw(st.integers(1, 16), label="S")
    k_pos = data.draw(increasing_positions(S), label="k_pos")
    q_pos = queries_around(data, k_pos)
    window = data.draw(family(S), label="window")
    mask = brute_force_mask(q_pos.tolist(), k_pos.tolist(), window)
    if not mask.any(axis=1).all():
        with pytest.raises(swaref.SwarefError, match="sees no key"):
            swaref.visible_key_range(q_pos, k_pos, window)
        return
    ranges = swaref.visible_key_range(q_pos, k_pos, window)
    two = isinstance(window, Sliding) and swaref.windows.normalize(window) is window \
        and window.size < 2 ** 63 and window.sink_tokens < 2 ** 63
    assert len(ranges) == (3 if two else 2)
    got = np.zeros_like(mask)
    for i in range(len(q_pos)):
        got[i, ranges[-2][i]:ranges[-1][i]] = True
        if two:
            assert ranges[0][i] <= ranges[1][i]
            got[i, :ranges[0][i]] = True
    np.testing.assert_array_equal(got, mask)


def test_sliding_without_sinks_and_causal_two_sided_are_bitwise_spec_10():
    rng = np.random.default_rng(1)
    q, k, v = random_qkv(rng, 9, 9, 4, 2, 8, dtype=np.float32)
    for W in (1, 3, 20):
        plain = swaref.attention(q, k, v, window=W)
        for same in (Sliding(W), TwoSided(W - 1, 0)):
            assert_bitwise_equal(swaref.attention(q, k, v, window=same), plain, name=repr(same))
    assert_bitwise_equal(swaref.attention(q, k, v, window=TwoSided(None, 0)), swaref.attention(q, k, v, window=None))


@pytest.mark.parametrize("window", [Sliding(3, 2), Sliding(2 ** 64, 1), TwoSided(1, 2), TwoSided(None, None),
                                    TwoSided(0, 0), Chunked(4), Chunked(2 ** 64)], ids=repr)
def test_each_query_sees_exactly_its_keys(window):
    """One-hot values: query i's output weights are non-zero exactly on the keys the
    brute-force mask marks (nothing outside the rule is read, nothing inside is lost)."""
    S = 11
    q = k = np.zeros((S, 1, S))                       # every score 0: uniform over the visible keys
    v = np.eye(S).reshape(S, 1, S)                    # value j is the unit vector e_j
    out = swaref.attention(q, k, v, window=window)[:, 0]
    pos = list(range(S))
    mask = brute_force_mask(pos, pos, window)
    np.testing.assert_array_equal(out > 0, mask)
    assert_close(out, mask / mask.sum(axis=1, keepdims=True), 1e-15, name="uniform weights")


def test_no_visible_key_for_two_sided_and_chunked_with_gaps():
    q = np.zeros((1, 1, 2))
    k = v = np.zeros((2, 1, 2))
    for window, k_pos in [(TwoSided(0, 0), [3, 5]), (TwoSided(1, 0), [1, 2]), (Chunked(4), [0, 3]),
                          (Sliding(2, 1), [1, 2])]:
        with pytest.raises(swaref.SwarefError) as ei:
            swaref.attention(q, k, v, window=window, q_pos=[4], k_pos=k_pos)
        assert ei.value.kind == "no_visible_key" and "position 4" in str(ei.value), (window, str(ei.value))


# ----- receptive field (rule 6) ---------------------------------------------------------

def spec_receptive_field(window, L, p):
    """Rule 6 for each window, as the spec words it."""
    if window is None:
        return 0
    if L == 0:
        return p
    if isinstance(window, Sliding):
        return 0 if window.sink_tokens else max(0, p - L * (window.size - 1))
    if isinstance(window, TwoSided):
        return 0 if window.left is None else max(0, p - L * window.left)
    if isinstance(window, Chunked):
        return p - p % window.size
    return max(0, p - L * (window - 1))


@given(window=st.one_of(st.builds(Sliding, st.integers(1, 10 ** 6), st.integers(0, 5)),
                        st.builds(TwoSided, st.one_of(st.none(), st.integers(0, 10 ** 6)),
                                  st.one_of(st.none(), st.integers(0, 10 ** 6))),
                        st.builds(Chunked, st.integers(1, 10 ** 6))),
       L=st.integers(0, 100), p=st.integers(0, 10 ** 12))
def test_receptive_field_formula(window, L, p):
    assert swaref.receptive_field(window, L, p) == spec_receptive_field(window, L, p)


def _stack(x, layers, window, n_heads, n_kv_heads, D):
    T = x.shape[0]
    for Wq, Wk, Wv, Wo in layers:
        q = (x @ Wq).reshape(T, n_heads, D)
        k = (x @ Wk).reshape(T, n_kv_heads, D)
        v = (x @ Wv).reshape(T, n_kv_heads, D)
        x = x + swaref.attention(q, k, v, window=window).reshape(T, n_heads * D) @ Wo
    return x


@pytest.mark.parametrize("window,L", [(Sliding(2, 1), 2), (Sliding(3, 2), 1), (TwoSided(1, 1), 2),
                                      (TwoSided(2, 0), 2), (TwoSided(0, 2), 2), (Chunked(3), 1), (Chunked(4), 3)],
                         ids=repr)
def test_dependency_boundary_matches_the_visibility_relation(window, L):
    """Perturb input j; output p must change iff j is reachable from p in L steps of the mask
    (plus the residual), and the earliest such j is receptive_field."""
    T, Hq, Hkv, D = 14, 2, 1, 4
    dm = Hq * D
    rng = np.random.default_rng(7)
    layers = [tuple(rng.standard_normal(shape) / np.sqrt(dm) for shape in
                    ((dm, Hq * D), (dm, Hkv * D), (dm, Hkv * D), (Hq * D, dm))) for _ in range(L)]
    x = rng.standard_normal((T, dm))
    base = _stack(x, layers, window, Hq, Hkv, D)
    changed = np.zeros((T, T), dtype=bool)
    for j in range(T):
        xj = x.copy()
        xj[j] += rng.standard_normal(dm)
        diff = np.abs(_stack(xj, layers, window, Hq, Hkv, D) - base).max(axis=1)
        assert np.all((diff == 0) | (diff > 1e-9)), f"ambiguous change sizes for j={j}: {diff}"
        changed[:, j] = diff > 0
    step = brute_force_mask(list(range(T)), list(range(T)), window) | np.eye(T, dtype=bool)
    reach = np.eye(T, dtype=bool)
    for _ in range(L):
        reach = (reach.astype(int) @ step.astype(int)) > 0
    np.testing.assert_array_equal(changed, reach)
    for p in range(T):
        assert swaref.receptive_field(window, L, p) == int(np.argmax(reach[p])), p


# ----- errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("make,words", [
    (lambda: Sliding(0), ["Sliding.size", "0"]), (lambda: Sliding(3, -1), ["Sliding.sink_tokens", "-1"]),
    (lambda: Sliding(3.0), ["Sliding.size", "float"]), (lambda: Sliding(True), ["Sliding.size", "bool"]),
    (lambda: TwoSided(-1, 0), ["TwoSided.left", "-1"]), (lambda: TwoSided(1, 1.5), ["TwoSided.right", "1.5"]),
    (lambda: Chunked(0), ["Chunked.size", "0"]), (lambda: Chunked("4"), ["Chunked.size", "'4'"]),
])
def test_bad_window_parameters_are_rejected(make, words):
    with pytest.raises(swaref.SwarefError) as ei:
        make()
    assert ei.value.kind == "window" and all(w in str(ei.value) for w in words), str(ei.value)


@pytest.mark.parametrize("call", [
    lambda w: swaref.attention(np.zeros((2, 1, 2)), np.zeros((2, 1, 2)), np.zeros((2, 1, 2)), window=w),
    lambda w: swaref.window_mask([0, 1], [0, 1], w),
    lambda w: swaref.visible_key_range(np.arange(2), np.arange(2), w),
    lambda w: swaref.receptive_field(w, 1, 1),
])
@pytest.mark.parametrize("window", [(2, 0), "sliding", 2.0, [3]], ids=repr)
def test_a_window_outside_the_family_is_rejected(call, window):
    with pytest.raises(swaref.SwarefError) as ei:
        call(window)
    assert ei.value.kind == "window" and isinstance(ei.value, TypeError)
    assert "Sliding, TwoSided or Chunked" in str(ei.value), str(ei.value)


def _spec_tables():
    """The worked-example masks of docs/spec.md rule 1: {marker: 6 rows of 'x'/' '}."""
    import pathlib
    text = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "spec.md").read_text()
    tables = {}
    for marker in ("`Sliding(3, sink_tokens=1)`", "`TwoSided(1, 1)`", "`Chunked(3)`"):
        lines = text[text.index("Worked example, " + marker):].splitlines()
        start = next(i for i, ln in enumerate(lines) if ln.startswith("| query"))
        rows = lines[start + 2:start + 8]
        tables[marker] = [[cell.strip() == "x" for cell in row.strip("|").split("|")[1:]] for row in rows]
    return tables


def test_the_spec_tables_are_the_rule():
    """docs/spec.md's worked tables agree with the hand-written ones above and with window_mask."""
    tables = _spec_tables()
    for marker, window in [("`Sliding(3, sink_tokens=1)`", Sliding(3, 1)), ("`TwoSided(1, 1)`", TwoSided(1, 1)),
                           ("`Chunked(3)`", Chunked(3))]:
        want = np.array([[c == "x" for c in row] for row in WORKED[window]])
        np.testing.assert_array_equal(np.array(tables[marker]), want, err_msg=marker)
