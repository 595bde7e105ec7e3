"""Hypothesis strategies and helpers shared by the reference tests (test_attention, test_cache, ...).

Nothing here calls swaref: inputs are drawn from the spec's domain and the
expected values come from tests/oracle.py.
"""
import threading
import time

import numpy as np
from hypothesis import strategies as st

from oracle import assert_bitwise_equal

DTYPES = (np.float16, np.float32, np.float64)


def window_for(draw, n):
    """A window covering the spec's cases for a sequence of length n:
    1, 2, W < n, W = n, W > n (including a huge one), None (causal)."""
    return draw(st.sampled_from([
        1, 2,
        max(1, n // 2), max(1, n - 1), n, n + 1, 3 * n + 7, 2 ** 62, None,
    ]))


@st.composite
def increasing_positions(draw, n, max_offset=10 ** 9, max_gap=5):
    """n strictly increasing int64 positions >= 0: an offset (often 0, sometimes huge)
    plus gaps >= 1 (often exactly 1, i.e. consecutive)."""
    offset = draw(st.sampled_from([0, 0, 1, 7, 10 ** 9, max_offset]))
    if draw(st.booleans()):
        gaps = [1] * n
    else:
        gaps = draw(st.lists(st.integers(1, max_gap), min_size=n, max_size=n))
    return offset + np.cumsum(np.asarray(gaps, dtype=np.int64)) - gaps[0]


def random_qkv(rng, T, S, Hq, Hkv, D, dtype=np.float64, vscale=1.0):
    """q [T, Hq, D], k, v [S, Hkv, D] of one dtype, standard normal (v times vscale)."""
    q = rng.standard_normal((T, Hq, D)).astype(dtype)
    k = rng.standard_normal((S, Hkv, D)).astype(dtype)
    v = (vscale * rng.standard_normal((S, Hkv, D))).astype(dtype)
    return q, k, v


def f64_tol(v):
    """Spec tolerance for float64 outputs: 1e-12 times max|V| (the output is a convex
    combination of V rows, so its error scales with max|V|, not with |output|)."""
    return 1e-12 * max(1.0, float(np.max(np.abs(np.asarray(v, dtype=np.float64)))))


def dtype_tol(v, dtype):
    """Tolerance for an output of ``dtype`` against the float64 oracle on the same
    (upcast) inputs: the reference accumulates in float64 and rounds once, so the
    error is at most half an ulp of |o| <= max|V| (eps * max|V| leaves a factor 2),
    plus the subnormal spacing and the float64 part."""
    fi = np.finfo(dtype)
    vmax = float(np.max(np.abs(np.asarray(v, dtype=np.float64))))
    return float(fi.eps) * vmax + float(fi.smallest_subnormal) + 1e-12 * max(1.0, vmax)


def expected_state(W, Hkv, D, dtype, k_all, v_all, start, n):
    """Slot buffers after tokens start .. start+n-1 (rows 0..n-1 of k_all/v_all) were
    written, from spec rule 4: position p in slot p mod W, only the last W positions
    kept, empty slots zero with position -1."""
    k = np.zeros((W, Hkv, D), dtype=dtype)
    v = np.zeros((W, Hkv, D), dtype=dtype)
    pos = np.full(W, -1, dtype=np.int64)
    for i in range(max(0, n - W), n):
        p = start + i
        k[p % W], v[p % W], pos[p % W] = k_all[i], v_all[i], p
    return k, v, pos


def assert_cache_state(cache, k, v, pos, n_seen, next_position, name="cache"):
    assert_bitwise_equal(cache.k, k, name=f"{name}.k")
    assert_bitwise_equal(cache.v, v, name=f"{name}.v")
    assert_bitwise_equal(cache.positions, pos, name=f"{name}.positions")
    assert cache.n_seen == n_seen, f"{name}.n_seen = {cache.n_seen}, expected {n_seen}"
    assert cache.next_position == next_position, (
        f"{name}.next_position = {cache.next_position}, expected {next_position}")


def draw_variant(data, Hq, sink_scales=(0.5, 3.0, 30.0), caps=(0.05, 0.5, 5.0, 50.0), plain=False):
    """{"softcap": c} or {"sinks": [Hq] float64} (or {} when plain is allowed)."""
    kinds = ["softcap", "sinks"] + (["plain"] if plain else [])
    kind = data.draw(st.sampled_from(kinds), label="variant")
    if kind == "softcap":
        return {"softcap": data.draw(st.sampled_from(caps), label="softcap")}
    if kind == "sinks":
        rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="sink seed"))
        return {"sinks": rng.standard_normal(Hq) * data.draw(st.sampled_from(sink_scales), label="sink scale")}
    return {}


def assert_runs_without_the_gil(call, repeats=3):
    """Run ``call()`` ``repeats`` times in another thread and count how often this thread runs
    Python meanwhile: a call that held the GIL would leave it (almost) no turn."""
    done = threading.Event()

    def target():
        for _ in range(repeats):
            call()
        done.set()

    t = threading.Thread(target=target)
    t.start()
    time.sleep(0.01)
    ticks = 0
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    t.join()
    assert ticks > 10, f"the main thread ran {ticks} times during the call: the kernel held the GIL"
