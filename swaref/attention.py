"""Sliding-window attention: the NumPy reference (the definition).

Dimension names used across swaref:

* ``T``   number of queries (tokens in a chunk)
* ``S``   number of keys
* ``Hq``  query heads, ``Hkv`` key/value heads, ``G = Hq // Hkv`` the group size
* ``D``   head dimension
* ``W``   window: the number of keys a query sees, itself included

The rule (docs/spec.md, rule 1): a query at absolute position ``p`` sees the
key at absolute position ``j`` iff ``p - W < j <= p``.  ``window=None`` means
plain causal attention (``j <= p``).  The spec 1.1 window family
(swaref/windows.py) adds ``Sliding(W, sink_tokens=n)``: ``j <= p and (j < n or
p - W < j)``; ``TwoSided(left, right)``: ``p - left <= j <= p + right``; and
``Chunked(C)``: ``j <= p and j // C == p // C``.
"""
from typing import Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from . import _backend, _validate as V
from .errors import SwarefError
from .windows import Chunked, Sliding, TwoSided, Window


def window_mask(q_pos: ArrayLike, k_pos: ArrayLike, window: Window) -> np.ndarray:
    """Boolean visibility mask, spec rule 1.

    q_pos: [Tq] int, k_pos: [Tk] int  ->  bool [Tq, Tk], True where query i sees key j.

    ``window``: None, an int W >= 1, or a window of swaref.windows.  Exact for any
    integers (int64, uint64, Python ints of any size; order and duplicates allowed):
    ``p - j`` is never formed where it could overflow.  This builds a Tq x Tk array:
    it is for explaining and testing, not for the attention itself (which never
    materialises a T x S mask).
    """
    window = V.check_window(window)
    q_pos = _as_positions(q_pos, "q_pos")
    k_pos = _as_positions(k_pos, "k_pos")
    if isinstance(window, Chunked) and window.size >= _SAFE_POSITION:    # j // C in Python ints
        q_pos, k_pos = q_pos.astype(object), k_pos.astype(object)
    p, j = q_pos[:, None], k_pos[None, :]
    d = p - j                                    # p - j (int64 when that cannot overflow, else Python ints)
    if window is None:
        return np.asarray(d >= 0, dtype=bool)
    if isinstance(window, Sliding):              # j <= p and (j < n or p - W < j)
        return np.asarray((d >= 0) & ((j < window.sink_tokens) | (d < window.size)), dtype=bool)
    if isinstance(window, TwoSided):             # p - left <= j <= p + right, None = unbounded
        left = np.ones_like(d, dtype=bool) if window.left is None else d <= window.left
        right = np.ones_like(d, dtype=bool) if window.right is None else -d <= window.right
        return np.asarray(left & right, dtype=bool)
    if isinstance(window, Chunked):              # j <= p and j // C == p // C
        return np.asarray((d >= 0) & (j // window.size == p // window.size), dtype=bool)
    return np.asarray((d >= 0) & (d < window), dtype=bool)   # 0 <= p - j < W  <=>  p - W < j <= p


#: Positions below this in magnitude have differences that fit in int64.
_SAFE_POSITION = 2 ** 62


def _as_positions(pos, name):
    """Positions for window_mask: any 1-D integers, as int64 when every difference fits in
    int64, else as an object array of Python ints (exact, slower)."""
    if isinstance(pos, (list, tuple, range)) and all(V.is_int(x) for x in pos):
        # np.asarray would turn a list mixing negatives and values above 2**63 into float64
        arr = np.array([int(x) for x in pos], dtype=object)
    else:
        try:
            arr = np.asarray(pos)
        except (ValueError, TypeError, OverflowError):       # ragged nested lists
            raise SwarefError("positions", f"{name} must be a 1-D sequence of integers, got "
                                           f"{V._describe(pos)}") from None
    if arr.ndim != 1:
        raise SwarefError("positions", f"{name} must be 1-D, got shape {arr.shape}")
    python_ints = arr.dtype == object and all(V.is_int(x) for x in arr)
    if not python_ints and (arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer)):
        raise V.SwarefTypeError("positions", f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.size and (int(arr.max()) >= _SAFE_POSITION or int(arr.min()) <= -_SAFE_POSITION):
        return np.array([int(x) for x in arr], dtype=object)
    return arr.astype(np.int64)


def visible_key_range(q_pos: np.ndarray, k_pos: np.ndarray, window: Window) -> Tuple[np.ndarray, ...]:
    """For sorted keys, the half-open index ranges each query sees.

    q_pos: [T] int64, k_pos: [S] int64 strictly increasing  ->  (first [T], last [T])
    with query i seeing exactly keys ``first[i] <= s < last[i]``; for a
    ``Sliding`` window with sink tokens a row is two ranges: (sink_last [T],
    first [T], last [T]), query i seeing ``s < sink_last[i]`` (its sink tokens)
    and ``first[i] <= s < last[i]`` (its window), ``sink_last <= first``.
    Raises SwarefError(kind="no_visible_key") if a query sees no key.
    """
    return V.check_no_empty_rows(q_pos, k_pos, V.causal_if_unbounded(V.check_window(window)))


def key_ranges(q_pos: np.ndarray, k_pos: np.ndarray, window: Window) -> Tuple[np.ndarray, ...]:
    """Rule 1 for the spec 1.1 windows as index ranges into sorted keys (``visible_key_range``
    without the empty-row check).  Every window's visible positions are one interval of
    positions, or two for kept sink tokens; the keys are sorted, so an interval of
    positions is an interval of indices, found by binary search.

    q_pos: [T] int64 >= 0, k_pos: [S] int64 strictly increasing, window normalized with
    every parameter within int64 (``_validate.causal_if_unbounded``).
    """
    p = q_pos
    big = np.iinfo(np.int64).max
    if isinstance(window, Sliding):
        n, W = window.sink_tokens, window.size
        # j <= p and j < n: the sink tokens 0 .. min(p, n - 1)
        sink_last = np.searchsorted(k_pos, np.minimum(p, n - 1), side="right")
        # j <= p and p - W < j, less the sink tokens already counted: max(p - W + 1, n) .. p
        last = np.searchsorted(k_pos, p, side="right")
        first = np.minimum(np.searchsorted(k_pos, np.maximum(p - W + 1, n), side="left"), last)
        return sink_last, first, last
    if isinstance(window, TwoSided):
        # p - left <= j <= p + right (p + right clamped to int64: no key lies beyond it)
        lo = np.zeros_like(p) if window.left is None else p - window.left
        hi = np.full_like(p, big) if window.right is None else p + np.minimum(window.right, big - p)
        return np.searchsorted(k_pos, lo, side="left"), np.searchsorted(k_pos, hi, side="right")
    if isinstance(window, Chunked):
        # j <= p and j // C == p // C: from the chunk's first position (p // C) * C to p
        C = window.size
        return np.searchsorted(k_pos, (p // C) * C, side="left"), np.searchsorted(k_pos, p, side="right")
    raise AssertionError(f"key_ranges takes a normalized spec 1.1 window, got {window!r}")  # pragma: no cover


def kv_head_of(h: int, n_heads: int, n_kv_heads: int) -> int:
    """GQA mapping, spec rule 3: query head h reads KV head h // (Hq // Hkv) (contiguous groups)."""
    return h // (n_heads // n_kv_heads)


def softmax_attend(q_row: np.ndarray, k_rows: np.ndarray, v_rows: np.ndarray, scale: float,
                   softcap: Optional[float] = None, sinks: Optional[np.ndarray] = None) -> np.ndarray:
    """One query over exactly the keys it sees, in float64 (spec rule 3).

    q_row: [Hq, D], k_rows, v_rows: [n, Hkv, D], sinks: [Hq] or None  ->  [Hq, D] float64

    Scores ``scale * q.k``; with ``softcap``, ``softcap * tanh(s / softcap)``;
    softmax over the n visible keys, with a learned sink logit per query head
    joining the denominator only; weighted sum of V.  Masked keys are never part
    of ``k_rows``, so nothing outside the window (not even a NaN) can reach the
    result, and no mask value can pass through the softcap.
    """
    Hq, D = q_row.shape
    n, Hkv, _ = k_rows.shape
    G = Hq // Hkv
    q = q_row.astype(np.float64, copy=False).reshape(Hkv, G, D)   # head h = g_kv * G + i
    k = k_rows.astype(np.float64, copy=False)
    v = v_rows.astype(np.float64, copy=False)
    sink = None if sinks is None else np.asarray(sinks, dtype=np.float64).reshape(Hkv, G, 1)
    with np.errstate(over="ignore"):                           # overflow is handled below
        s = np.einsum("hgd,nhd->hgn", q, k) * scale            # [Hkv, G, n]
    infinite = _infinite_pairs(q, k)                           # [Hkv, G, n]; almost always all False
    if infinite.any():                                         # an inf or NaN term decides the score alone
        s = np.where(infinite, _infinite_scores(q, k, scale), s)
    over = (~np.isfinite(s) & ~infinite).any(axis=-1, keepdims=True)   # [Hkv, G, 1]: overflowed from finite terms
    if softcap is not None:
        if over.any():                                         # +-inf where beyond range, never NaN
            s = np.where(over, _scores_beyond_float64(q, k, scale, s, infinite), s)
        s = softcap * np.tanh(s / softcap)                     # bounded: the plain path below is exact
        s, sink = _shift_by_max(s, sink)
    elif over.any():
        with np.errstate(invalid="ignore"):                    # the plain shift of those rows is discarded
            plain, plain_sink = _shift_by_max(s, sink)
        safe, safe_sink = _shifted_scores_without_overflow(q, k, scale, sink, s, infinite)
        s = np.where(over, safe, plain)
        sink = None if sink is None else np.where(over, safe_sink, plain_sink)
    else:
        s, sink = _shift_by_max(s, sink)
    p = np.exp(s)
    if sink is None:
        p /= p.sum(axis=-1, keepdims=True)
    else:
        p /= np.exp(sink) + p.sum(axis=-1, keepdims=True)      # the sink has no value row
    o = np.einsum("hgn,nhd->hgd", p, v)                        # [Hkv, G, D]
    return o.reshape(Hq, D)


def _infinite_pairs(q, k):
    """[Hkv, G, n] bool: the (query head, key) pairs whose dot product has a non-finite term
    (an inf or NaN in the q row or the key row).  q: [Hkv, G, D], k: [n, Hkv, D]."""
    return ~np.isfinite(q).all(axis=-1, keepdims=True) | ~_finite_keys(k)


def _infinite_scores(q, k, scale):
    """Exact scores of the pairs of ``_infinite_pairs``: +-inf, or NaN where undefined.

    An infinite term of q.k_j outweighs every finite one, however large, so only the
    non-finite terms count: a finite product that overflows float64 is still finite and
    must not turn inf into inf - inf = NaN.  q: [Hkv, G, D], k: [n, Hkv, D]  ->  [Hkv, G, n]
    (meaningless on the other pairs).  Builds [Hkv, G, n, D]: only rows with such input pay."""
    qt = q[:, :, None, :]                                      # [Hkv, G, 1, D]
    kt = np.moveaxis(k, 0, 1)[:, None]                         # [Hkv, 1, n, D]
    nonfinite = ~np.isfinite(qt) | ~np.isfinite(kt)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(nonfinite, qt * kt, 0.0).sum(axis=-1) * scale


def _finite_keys(k):
    """k: [n, Hkv, D]  ->  [Hkv, 1, n] bool, True where key row j of KV head h is finite."""
    return np.isfinite(k).all(axis=-1).T[:, None, :]


def _shift_by_max(s, sink):
    """(s - m, sink - m) with m the row maximum over the scores and the sink logit (if any).
    s: [Hkv, G, n], sink: [Hkv, G, 1] or None."""
    m = s.max(axis=-1, keepdims=True)
    if sink is None:
        return s - m, None
    m = np.maximum(m, sink)
    return s - m, sink - m


def _factored_scores(q, k, scale):
    """The finite keys' scores ``c * y``, from finite q; non-finite keys get y = 0 (unused).

    q: [Hkv, G, D], k: [n, Hkv, D]  ->  c: [Hkv, G, 1] (may be +-inf), y: [Hkv, G, n] with |y| <= D

    c = scale * max|q| * max|k| (over the finite key rows) carries the magnitude, so y is finite.
    """
    finite = np.isfinite(k).all(axis=-1, keepdims=True)                        # [n, Hkv, 1]
    k = np.where(finite, k, 0.0)
    qa = np.abs(q).max(axis=-1, keepdims=True)                 # [Hkv, G, 1]
    ka = np.abs(k).max(axis=(0, 2))[:, None, None]             # [Hkv, 1, 1]
    qa = np.where(qa > 0, qa, 1.0)
    ka = np.where(ka > 0, ka, 1.0)
    y = np.einsum("hgd,nhd->hgn", q / qa, k / np.moveaxis(ka, 0, 1))
    with np.errstate(over="ignore"):
        return scale * qa * ka, y


def _scores_beyond_float64(q, k, scale, s, infinite):
    """The scaled scores of rows with finite q, +-inf where they exceed float64 (0 where c * y
    is inf * 0); the pairs with a non-finite term keep their exact score from s."""
    c, y = _factored_scores(q, k, scale)
    with np.errstate(over="ignore", invalid="ignore"):
        finite_part = np.where(y == 0, 0.0, c * y)
    return np.where(infinite, s, finite_part)


def _shifted_scores_without_overflow(q, k, scale, sink, s, infinite):
    """``_shift_by_max`` for rows whose scores ``s = scale * q.k`` overflow float64, from finite q.

    -> (s - m [Hkv, G, n], sink - m [Hkv, G, 1] or None), every entry <= 0, 0 at the maximum.

    With s = c * y over the finite keys (``_factored_scores``), s - max(s) = c * (y - y*),
    y* the max of y (c >= 0) or its min (c < 0).  Where y == y*, the entry is 0 even if c
    overflowed (inf * 0 would be NaN); elsewhere an overflowed c gives -inf, whose exp is
    the 0 the exact weight rounds to.  A sink logit competes with t = c * y*, the largest
    score: t = +inf leaves the sink no weight, t = -inf gives it all.  A key with a
    non-finite entry has a truly infinite score (in s, from ``_infinite_scores``): -inf takes
    no weight; +inf or NaN makes the row NaN, as inf - inf does in IEEE arithmetic.
    """
    c, y = _factored_scores(q, k, scale)
    finite = ~infinite                                         # q is finite in these rows: the key decides
    s_inf = np.where(finite, -np.inf, s)
    undefined = (np.isnan(s_inf) | (s_inf == np.inf)).any(axis=-1, keepdims=True)
    with np.errstate(over="ignore", invalid="ignore"):
        ystar = np.where(c >= 0, np.where(finite, y, -np.inf).max(axis=-1, keepdims=True),
                         np.where(finite, y, np.inf).min(axis=-1, keepdims=True))
        dy = y - ystar
        shifted = np.where(finite, np.where(dy == 0, 0.0, c * dy), -np.inf)
        shifted = np.where(undefined, np.nan, shifted)
        if sink is None:
            return shifted, None
        t = c * ystar                                          # the largest score, +-inf beyond range
        m = np.maximum(t, sink)
        key_shift = np.where(np.isfinite(t), t - m, np.where(t > 0, 0.0, -np.inf))
        sink_shift = np.where(np.isfinite(t), sink - m, np.where(t > 0, -np.inf, 0.0))
        return shifted + key_shift, np.where(undefined, np.nan, sink_shift)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, *, window: Window,
              q_pos: Optional[ArrayLike] = None, k_pos: Optional[ArrayLike] = None,
              scale: Optional[float] = None, softcap: Optional[float] = None,
              sinks: Optional[ArrayLike] = None, backend: str = "reference",
              num_threads: Optional[int] = None) -> np.ndarray:
    """Sliding-window attention, spec rules 1-3.

    q: [T, Hq, D], k, v: [S, Hkv, D] (one dtype: float16, float32 or float64)
    window: None, an int W >= 1, or Sliding / TwoSided / Chunked (swaref.windows)
    q_pos: [T] int, default the last T of k_pos; k_pos: [S] int, default arange(S)
    softcap: None or a float > 0 (Gemma 2's logit soft-capping); sinks: None or
    [Hq] learned sink logits (gpt-oss)  ->  [T, Hq, D] in q's dtype

    Positions are absolute and strictly increasing.  ``backend="reference"``
    computes each query's softmax over exactly its visible keys in float64;
    ``backend="cython"`` runs the compiled banded kernel (float32/float64),
    which must equal this function (tests/test_core.py).  ``num_threads``
    only affects the compiled backend.
    """
    V.check_backend(backend)
    window = V.causal_if_unbounded(V.check_window(window))
    T, S, Hq, Hkv, D = V.check_qkv(q, k, v)
    num_threads = V.check_num_threads(num_threads)
    k_pos = V.check_positions(np.arange(S) if k_pos is None else k_pos, "k_pos", S)
    if q_pos is None:
        if T > S:
            raise SwarefError(
                "positions", f"q_pos defaults to the last T of k_pos, which needs T <= S; got T={T}, S={S}")
        q_pos = k_pos[S - T:]
    else:
        q_pos = V.check_positions(q_pos, "q_pos", T)
    scale = V.check_scale(scale, D)
    softcap, sinks = V.check_softmax_variants(softcap, sinks, Hq)
    ranges = V.check_no_empty_rows(q_pos, k_pos, window)
    if backend == "cython":
        return _backend.attention(q, k, v, q_pos, k_pos, window, scale, num_threads, softcap=softcap, sinks=sinks)
    return _attention_reference(q, k, v, ranges, scale, softcap, sinks)


def _attention_reference(q, k, v, ranges, scale, softcap=None, sinks=None):
    """Query by query over its visible keys; the literal definition.

    q: [T, Hq, D], k, v: [S, Hkv, D], ranges: (first, last) [T] from
    ``visible_key_range``, or (sink_last, first, last) for kept sink tokens;
    sinks: [Hq] float64 or None  ->  [T, Hq, D] in q.dtype

    Memory is O(W) per query: no T x S array exists, so long prompts fit.
    """
    out = np.empty(q.shape, dtype=q.dtype)
    # Upcast once (O(S) memory), not once per query.
    q64, k64, v64 = (x.astype(np.float64, copy=False) for x in (q, k, v))
    if len(ranges) == 2:
        first, last = ranges
        for i in range(q.shape[0]):
            a, b = first[i], last[i]
            out[i] = softmax_attend(q64[i], k64[a:b], v64[a:b], scale, softcap, sinks)
        return out
    sink_last, first, last = ranges
    for i in range(q.shape[0]):
        # Kept sink tokens: the row's keys are its sink tokens, then its window (rule 1).
        seen = np.r_[0:sink_last[i], first[i]:last[i]]
        out[i] = softmax_attend(q64[i], k64[seen], v64[seen], scale, softcap, sinks)
    return out


def receptive_field(window: Window, n_layers: int, position: int) -> int:
    """Earliest input position that position ``position`` can depend on after ``n_layers`` layers.

    Spec rule 6: each sliding-window layer reaches back W - 1 positions, so
    after L layers position p depends on positions >= max(0, p - L * (W - 1)).
    With window None (causal) it is 0.  Kept sink tokens make it 0 after one
    layer (position 0 is a sink token); a two-sided window reaches back ``left``
    per layer (and forward ``right``, which this function does not report);
    chunked attention never leaves the chunk: (p // C) * C for any L >= 1.
    """
    window = V.check_window(window)
    n_layers = V.check_int(n_layers, "n_layers", minimum=0)
    position = V.check_int(position, "position", minimum=0)
    if window is None:
        return 0
    if n_layers == 0:
        return position
    if isinstance(window, Sliding):
        return 0                                 # the sink token at position 0 is visible to every query
    if isinstance(window, TwoSided):
        return 0 if window.left is None else max(0, position - n_layers * window.left)
    if isinstance(window, Chunked):
        return (position // window.size) * window.size
    return max(0, int(position) - int(n_layers) * (window - 1))
