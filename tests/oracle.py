"""Independent oracles for the tests: written from the spec, sharing no code with swaref.

* ``dense_attention_f64``: a dense float64 masked softmax (mask built with NumPy
  broadcasting, GQA by repeating K/V), the textbook formula.
* ``brute_force_mask``: a double Python loop over (query, key), each pair decided by
  ``visible``, rule 1 for every window of the spec (None, an int, Sliding, TwoSided,
  Chunked) written from the spec's words, reading only the window's fields.
* ``assert_close``: fails loudly with the max difference and the first
  mismatching index.
"""
import numpy as np


def visible(p, j, window):
    """Rule 1 for one query position p and key position j (Python ints, exact)."""
    kind = type(window).__name__
    if window is None:
        return j <= p
    if kind == "Sliding":       # kept sink tokens: the first n positions, plus the window of W keys
        return j <= p and (j < window.sink_tokens or p - window.size < j)
    if kind == "TwoSided":      # p - left <= j <= p + right, None = unbounded on that side
        return ((window.left is None or p - window.left <= j)
                and (window.right is None or j <= p + window.right))
    if kind == "Chunked":       # its own chunk of C positions, up to itself
        return j <= p and j // window.size == p // window.size
    return p - window < j <= p


def brute_force_mask(q_pos, k_pos, window):
    """mask[i, j] = True iff query at q_pos[i] sees key at k_pos[j] (spec rule 1), by a double loop."""
    m = np.zeros((len(q_pos), len(k_pos)), dtype=bool)
    for i, p in enumerate(q_pos):
        for j, kp in enumerate(k_pos):
            if window is None:
                m[i, j] = kp <= p
            elif isinstance(window, (int, np.integer)):
                m[i, j] = p - window < kp <= p
            else:
                m[i, j] = visible(int(p), int(kp), window)
    return m


def dense_attention_f64(q, k, v, q_pos, k_pos, window, scale=None, softcap=None, sinks=None):
    """Dense masked softmax in float64.  q: [T, Hq, D], k, v: [S, Hkv, D] -> [T, Hq, D] float64.

    softcap: cap * tanh(s / cap) on the scaled scores, then the mask; sinks: [Hq]
    logits appended as one more softmax column, dropped before the value product
    (gpt-oss's formulation, written independently of swaref's).
    """
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    T, Hq, D = q.shape
    Hkv = k.shape[1]
    if scale is None:
        scale = 1.0 / np.sqrt(D)
    kk = np.repeat(k, Hq // Hkv, axis=1)     # head h -> kv head h // (Hq // Hkv)
    vv = np.repeat(v, Hq // Hkv, axis=1)
    qp = np.asarray(q_pos, dtype=np.int64)[:, None]
    kp = np.asarray(k_pos, dtype=np.int64)[None, :]
    if window is None or isinstance(window, (int, np.integer)):
        mask = kp <= qp
        if window is not None:
            mask &= kp > qp - window
    else:
        mask = brute_force_mask(list(q_pos), list(k_pos), window)
    assert mask.any(axis=1).all(), "oracle: a query with no visible key"
    s = np.einsum("thd,shd->hts", q, kk) * scale
    if softcap is not None:
        s = softcap * np.tanh(s / softcap)                  # cap first, then mask (spec rule 3)
    s = np.where(mask[None], s, -np.inf)
    if sinks is not None:
        col = np.broadcast_to(np.asarray(sinks, dtype=np.float64)[:, None, None], (Hq, T, 1))
        s = np.concatenate([s, col], axis=-1)               # [Hq, T, S + 1]
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p = p / p.sum(axis=-1, keepdims=True)
    p = p[..., :k.shape[0]]                                 # the sink column has no value row
    # np.where again so that a masked NaN value row can never leak via 0 * NaN.
    vv_t = np.transpose(vv, (1, 0, 2))                      # [Hq, S, D]
    out = np.empty((Hq, T, D))
    for h in range(Hq):
        for t in range(T):
            sel = mask[t]
            out[h, t] = p[h, t, sel] @ vv_t[h, sel]
    return np.transpose(out, (1, 0, 2))


def assert_close(actual, expected, atol, rtol=0.0, name="output"):
    """assert |actual - expected| <= atol + rtol*|expected| everywhere; report max diff and first bad index."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{name}: shape {a.shape} != expected {e.shape}"
    diff = np.abs(a - e)
    both_nan = np.isnan(a) & np.isnan(e)
    same_inf = np.isinf(a) & (a == e)
    diff = np.where(both_nan | same_inf, 0.0, diff)
    diff = np.where(np.isnan(diff), np.inf, diff)
    bad = diff > atol + rtol * np.abs(np.nan_to_num(e))
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(
            f"{name}: max |diff| = {diff.max():.3e} (atol {atol:.1e}, rtol {rtol:.1e}); "
            f"{int(bad.sum())} of {bad.size} elements off; first at index {first}: "
            f"actual {a[first]!r} vs expected {e[first]!r}")


def assert_bitwise_equal(actual, expected, name="output"):
    """Exact equality (NaNs in the same places count as equal); reports the first differing index."""
    a = np.asarray(actual)
    e = np.asarray(expected)
    assert a.shape == e.shape, f"{name}: shape {a.shape} != expected {e.shape}"
    assert a.dtype == e.dtype, f"{name}: dtype {a.dtype} != expected {e.dtype}"
    if a.dtype.kind == "f":
        neq = ~((a == e) | (np.isnan(a) & np.isnan(e)))
    else:
        neq = a != e
    if neq.any():
        first = tuple(int(i) for i in np.argwhere(neq)[0])
        diff = np.abs(a.astype(np.float64) - e.astype(np.float64)) if a.dtype.kind in "fi" else None
        raise AssertionError(
            f"{name}: not bitwise equal: {int(neq.sum())} of {neq.size} elements differ"
            + (f", max |diff| = {np.nanmax(diff):.3e}" if diff is not None else "")
            + f"; first at {first}: {a[first]!r} vs {e[first]!r}")


def dense_attention_wide(q, k, v, q_pos, k_pos, window, scale=None):
    """``dense_attention_f64`` computed in NumPy's longdouble (x87 80-bit on x86-64 Linux:
    exponent range to 1e4932), for scores ``scale * q.k`` that overflow float64 from finite
    input (a finite scale of 1e300, say), where the float64 oracle gives inf - inf = NaN.
    Returns float64.  Where longdouble is just float64 it is no wider (check np.finfo)."""
    wide = np.longdouble
    q = np.asarray(q, dtype=np.float64).astype(wide)
    k = np.asarray(k, dtype=np.float64).astype(wide)
    v = np.asarray(v, dtype=np.float64).astype(wide)
    T, Hq, D = q.shape
    Hkv = k.shape[1]
    scale = wide(1.0) / np.sqrt(wide(D)) if scale is None else wide(scale)
    kk = np.repeat(k, Hq // Hkv, axis=1)
    vv = np.repeat(v, Hq // Hkv, axis=1)
    qp = [int(p) for p in q_pos]
    kp = [int(p) for p in k_pos]
    out = np.zeros((T, Hq, D), dtype=wide)
    for t in range(T):
        sel = [j for j in range(len(kp)) if visible(qp[t], kp[j], window)]
        assert sel, "oracle: a query with no visible key"
        for h in range(Hq):
            s = np.array([scale * np.sum(q[t, h] * kk[j, h]) for j in sel], dtype=wide)
            p = np.exp(s - s.max())
            p = p / p.sum()
            out[t, h] = np.sum(p[:, None] * vv[sel, h], axis=0)
    return out.astype(np.float64)
