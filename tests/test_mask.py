"""window_mask (spec rule 1) against the brute-force double loop in tests/oracle.py."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import swaref
from oracle import brute_force_mask
from ref_helpers import increasing_positions, window_for


# The main randomized comparison of this file runs longer than the profile's default
# (scaled, so HYPOTHESIS_PROFILE=ci-long scales it too).
MORE = settings(max_examples=5 * settings.default.max_examples)


@MORE
@given(st.data())
def test_window_mask_matches_brute_force(data):
    Tk = data.draw(st.integers(1, 24), label="Tk")
    k_pos = data.draw(increasing_positions(Tk), label="k_pos")
    # Queries anywhere around the keys, not only at key positions: the rule is on
    # positions, and a query may sit past the last key or between keys.
    lo, hi = int(k_pos[0]), int(k_pos[-1]) + 5
    q_pos = np.asarray(sorted(set(data.draw(
        st.lists(st.integers(lo, hi), min_size=1, max_size=16), label="q_pos"))), dtype=np.int64)
    window = window_for(data.draw, Tk)
    m = swaref.window_mask(q_pos, k_pos, window)
    assert m.dtype == np.bool_
    np.testing.assert_array_equal(m, brute_force_mask(q_pos.tolist(), k_pos.tolist(), window))


@pytest.mark.parametrize("W", [1, 2, 3, 5])
def test_each_row_sees_exactly_W_keys_once_full(W):
    n = 4 * W + 3
    pos = np.arange(n)
    m = swaref.window_mask(pos, pos, W)
    counts = m.sum(axis=1)
    # Row p sees min(p + 1, W) keys: W keys, itself included, and fewer at the start.
    np.testing.assert_array_equal(counts, np.minimum(pos + 1, W))
    assert m[np.arange(n), np.arange(n)].all(), "a query must see its own key"
    for p in range(W, n):
        assert not m[p, p - W], f"p={p}: the key at p - W must be invisible"


@pytest.mark.parametrize("n", [1, 2, 7, 16])
def test_window_at_least_length_is_exactly_causal(n):
    pos = np.arange(n)
    causal = swaref.window_mask(pos, pos, None)
    np.testing.assert_array_equal(causal, np.tril(np.ones((n, n), dtype=bool)))
    for W in (n, n + 1, 10 * n, 2 ** 62, 2 ** 63 - 1):
        np.testing.assert_array_equal(swaref.window_mask(pos, pos, W), causal, err_msg=f"W={W}")


def test_huge_offsets_do_not_change_the_mask():
    # The rule depends only on differences p - j: shifting every position by 10**9
    # (or close to the int64 limit) must give the same mask.
    pos = np.arange(20, dtype=np.int64)
    for W in (1, 3, 7, None):
        base = swaref.window_mask(pos, pos, W)
        for off in (10 ** 9, 2 ** 62):
            np.testing.assert_array_equal(swaref.window_mask(pos + off, pos + off, W), base,
                                          err_msg=f"W={W} offset={off}")


def test_numpy_integer_window_and_list_positions_accepted():
    m = swaref.window_mask([0, 1, 2, 3], [0, 1, 2, 3], np.int64(2))
    np.testing.assert_array_equal(m, brute_force_mask([0, 1, 2, 3], [0, 1, 2, 3], 2))


# Extremes of int64 and uint64: p - j does not fit in int64 there, so the mask must not
# be computed from an int64 difference (issue: [2**63-1] vs [-1] gave False).
EXTREMES = [-2 ** 63, -2 ** 62 - 1, -2, -1, 0, 1, 2 ** 62, 2 ** 63 - 2, 2 ** 63 - 1]
U_EXTREMES = [0, 1, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 2, 2 ** 64 - 1]
WINDOWS = [None, 1, 2, 2 ** 62, 2 ** 63 - 1, 2 ** 63, 2 ** 64, 2 ** 65]


@pytest.mark.parametrize("window", WINDOWS)
def test_window_mask_exact_at_int64_and_uint64_extremes(window):
    cases = [(np.array(EXTREMES, np.int64), np.array(EXTREMES, np.int64)),
             (np.array(U_EXTREMES, np.uint64), np.array(U_EXTREMES, np.uint64)),
             (np.array(U_EXTREMES, np.uint64), np.array(EXTREMES, np.int64)),
             (EXTREMES + [2 ** 64 + 5], U_EXTREMES)]                   # Python ints beyond uint64
    for q_pos, k_pos in cases:
        want = brute_force_mask([int(x) for x in q_pos], [int(x) for x in k_pos], window)  # Python ints
        np.testing.assert_array_equal(swaref.window_mask(q_pos, k_pos, window), want)


def test_window_mask_issue_reproducers():
    assert swaref.window_mask([2 ** 63 - 1], [-1], None)[0, 0]
    assert swaref.window_mask(np.array([2 ** 63], np.uint64), [0], None)[0, 0]
    assert not swaref.window_mask([-2], [2 ** 63 - 1], None)[0, 0]
    assert swaref.window_mask([2 ** 63 - 1], [-1], 2 ** 64)[0, 0]
    assert not swaref.window_mask([2 ** 63 - 1], [-1], 2 ** 63)[0, 0]      # p - j = 2**63 = W: outside
