"""Receptive field (spec rule 6): the formula for every window, and the dependency boundary measured
in a layer stack: perturb input j, see which outputs move."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import swaref
from swaref import Chunked, Sliding, TwoSided
from oracle import brute_force_mask


def spec_receptive_field(window, L, p):
    """Rule 6 for each window, as the spec words it: earliest input position p depends on after L layers.
    Rule 1 first: a family window that is a spec 1.0 window (TwoSided(None, 0) is plain causal
    attention, TwoSided(k, 0) is W = k + 1, Sliding(W, 0) is W) follows that window's rule."""
    if isinstance(window, TwoSided) and window.right == 0:
        window = None if window.left is None else window.left + 1
    if isinstance(window, Sliding) and window.sink_tokens == 0:
        window = window.size
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


@given(W=st.one_of(st.none(), st.integers(1, 10 ** 6)), L=st.integers(0, 100),
       p=st.integers(0, 10 ** 12))
def test_receptive_field_formula(W, L, p):
    assert swaref.receptive_field(W, L, p) == spec_receptive_field(W, L, p)


@given(window=st.one_of(st.builds(Sliding, st.integers(1, 10 ** 6), st.integers(0, 5)),
                        st.builds(TwoSided, st.one_of(st.none(), st.integers(0, 10 ** 6)),
                                  st.one_of(st.none(), st.integers(0, 10 ** 6))),
                        st.builds(Chunked, st.integers(1, 10 ** 6))),
       L=st.integers(0, 100), p=st.integers(0, 10 ** 12))
def test_receptive_field_formula_for_the_window_family(window, L, p):
    assert swaref.receptive_field(window, L, p) == spec_receptive_field(window, L, p)


def test_receptive_field_papers_example():
    # Mistral 7B: W = 4096, 32 layers: the last token of a long prompt reaches back
    # 32 * 4095 = 131,040 positions, i.e. spans 131,041 tokens.
    p = 10 ** 6
    assert p - swaref.receptive_field(4096, 32, p) + 1 == 131_041


def _stack(x, layers, window, n_heads, n_kv_heads, D):
    """L residual attention layers built from swaref.attention.
    x: [T, d_model] float64 -> [T, d_model]."""
    T = x.shape[0]
    for Wq, Wk, Wv, Wo in layers:
        q = (x @ Wq).reshape(T, n_heads, D)
        k = (x @ Wk).reshape(T, n_kv_heads, D)
        v = (x @ Wv).reshape(T, n_kv_heads, D)
        a = swaref.attention(q, k, v, window=window)
        x = x + a.reshape(T, n_heads * D) @ Wo
    return x


def _dependence(window, L, T, rng, Hq=2, Hkv=1, D=4):
    """changed: [T, T] bool, changed[p, j]: output p of an L-layer stack with random weights moved when
    input j did.  Unchanged outputs must be bitwise unchanged (nothing outside the window is read),
    changed ones clearly changed (random weights make every path generic)."""
    dm = Hq * D
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
    return changed


@pytest.mark.parametrize("W,L", [(1, 3), (2, 1), (2, 3), (3, 2), (4, 3), (None, 2)])
def test_dependency_boundary_matches_formula(W, L):
    # Output p must change iff receptive_field <= j <= p.
    T = 16
    changed = _dependence(W, L, T, np.random.default_rng(10 * (W or 0) + L))
    expected = np.array([[spec_receptive_field(W, L, p) <= j <= p for j in range(T)] for p in range(T)])
    bad = np.argwhere(changed != expected)
    assert bad.size == 0, (
        f"W={W}, L={L}: dependency differs from rule 6 at (p, j) = {tuple(bad[0])}; "
        f"changed there: {changed[tuple(bad[0])]}")
    for p in range(T):
        assert swaref.receptive_field(W, L, p) == spec_receptive_field(W, L, p)


@pytest.mark.parametrize("window,L", [(Sliding(2, 1), 2), (Sliding(3, 2), 1), (TwoSided(1, 1), 2),
                                      (TwoSided(2, 0), 2), (TwoSided(0, 2), 2), (Chunked(3), 1), (Chunked(4), 3)],
                         ids=repr)
def test_dependency_boundary_matches_the_visibility_relation(window, L):
    """Perturb input j; output p must change iff j is reachable from p in L steps of the mask
    (plus the residual), and the earliest such j is receptive_field."""
    T = 14
    changed = _dependence(window, L, T, np.random.default_rng(7))
    step = brute_force_mask(list(range(T)), list(range(T)), window) | np.eye(T, dtype=bool)
    reach = np.eye(T, dtype=bool)
    for _ in range(L):
        reach = (reach.astype(int) @ step.astype(int)) > 0
    np.testing.assert_array_equal(changed, reach)
    for p in range(T):
        assert swaref.receptive_field(window, L, p) == int(np.argmax(reach[p])), p
