"""Receptive field (spec rule 6): formula, and the dependency boundary measured in a layer stack."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import swaref


def spec_receptive_field(W, L, p):
    """Rule 6 as written in the spec: earliest input position p depends on after L layers."""
    return 0 if W is None else max(0, p - L * (W - 1))


@given(W=st.one_of(st.none(), st.integers(1, 10 ** 6)), L=st.integers(0, 100),
       p=st.integers(0, 10 ** 12))
def test_receptive_field_formula(W, L, p):
    assert swaref.receptive_field(W, L, p) == spec_receptive_field(W, L, p)


def test_receptive_field_papers_example():
    # Mistral 7B: W = 4096, 32 layers: the last token of a long prompt reaches back
    # 32 * 4095 = 131,040 positions, i.e. spans 131,041 tokens.
    p = 10 ** 6
    assert p - swaref.receptive_field(4096, 32, p) + 1 == 131_041


def _stack(x, layers, W, n_heads, n_kv_heads, D):
    """L residual sliding-window attention layers built from swaref.attention.
    x: [T, d_model] float64 -> [T, d_model]."""
    T = x.shape[0]
    for Wq, Wk, Wv, Wo in layers:
        q = (x @ Wq).reshape(T, n_heads, D)
        k = (x @ Wk).reshape(T, n_kv_heads, D)
        v = (x @ Wv).reshape(T, n_kv_heads, D)
        a = swaref.attention(q, k, v, window=W)
        x = x + a.reshape(T, n_heads * D) @ Wo
    return x


@pytest.mark.parametrize("W,L", [(1, 3), (2, 1), (2, 3), (3, 2), (4, 3), (None, 2)])
def test_dependency_boundary_matches_formula(W, L):
    # Perturb input token j and record which outputs change.  Output p must change iff
    # receptive_field <= j <= p: unchanged outputs must be bitwise unchanged (nothing
    # outside the window is read), changed ones clearly changed (random weights make
    # every path generic).
    T, Hq, Hkv, D = 16, 2, 1, 4
    dm = Hq * D
    rng = np.random.default_rng(10 * (W or 0) + L)
    layers = [(rng.standard_normal((dm, Hq * D)) / np.sqrt(dm),
               rng.standard_normal((dm, Hkv * D)) / np.sqrt(dm),
               rng.standard_normal((dm, Hkv * D)) / np.sqrt(dm),
               rng.standard_normal((Hq * D, dm)) / np.sqrt(dm)) for _ in range(L)]
    x = rng.standard_normal((T, dm))
    base = _stack(x, layers, W, Hq, Hkv, D)
    changed = np.zeros((T, T), dtype=bool)          # changed[p, j]: output p moved when input j did
    for j in range(T):
        xj = x.copy()
        xj[j] += rng.standard_normal(dm)
        diff = np.abs(_stack(xj, layers, W, Hq, Hkv, D) - base).max(axis=1)
        assert np.all((diff == 0) | (diff > 1e-9)), f"ambiguous change sizes for j={j}: {diff}"
        changed[:, j] = diff > 0
    expected = np.array([[spec_receptive_field(W, L, p) <= j <= p for j in range(T)] for p in range(T)])
    bad = np.argwhere(changed != expected)
    assert bad.size == 0, (
        f"W={W}, L={L}: dependency differs from rule 6 at (p, j) = {tuple(bad[0])}; "
        f"changed there: {changed[tuple(bad[0])]}")
    for p in range(T):
        assert swaref.receptive_field(W, L, p) == spec_receptive_field(W, L, p)
