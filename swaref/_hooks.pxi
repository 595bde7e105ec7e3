# swaref/_hooks.pxi: test hooks of swaref/_core.pyx (included at its end, so they are part of
# swaref._core).  Each runs one micro-kernel alone on NumPy arrays, through the same wrapper
# _block calls, and its docstring's "Equals:" line is the NumPy one-liner that
# tests/test_kernels.py checks it against.  Arrays are C-contiguous, of one float dtype.

def exp_kernel(x, vector=False):
    """swaref's exp on a 1-D float32/float64 array: the scalar formula (alpha) or, with
    vector=True, the vector one (the weights).

    Equals: numpy.exp(x) within 4 ulp on x <= 0 (exactly 0 below -708 / -87).
    """
    x = np.ascontiguousarray(x)
    if x.ndim != 1:
        raise ValueError(f"exp_kernel takes a 1-D array, got shape {x.shape}")
    out = np.empty_like(x)
    cdef float[::1] xf, of
    cdef double[::1] xd, od
    if x.dtype == np.float32 and x.shape[0]:
        xf, of = x, out
        swaref_exp_array_f(&xf[0], &of[0], xf.shape[0], bool(vector))
    elif x.dtype == np.float64 and x.shape[0]:
        xd, od = x, out
        swaref_exp_array_d(&xd[0], &od[0], xd.shape[0], bool(vector))
    elif x.dtype not in (np.float32, np.float64):
        raise TypeError(f"exp_kernel takes float32 or float64, got {x.dtype}")
    return out


def _tile_check(name, n, expected):
    if n != expected:
        raise ValueError(f"{name}: expected {expected} along that axis, got {n}")


def scores_kernel(const floating[:, ::1] q, const floating[:, ::1] kt, double scale, double softcap=0):
    """Scores of n query rows q [n, D] over one transposed key tile kt [D, TILE] -> [n, TILE],
    through _score_pass (the SROWS-, four-, two- and one-row kernels, by n; span by span), and
    with softcap > 0 soft-capped there (c * tanh(s / c) in the input precision).

    Equals: (q @ kt) * scale
    """
    cdef Rows R
    cdef Py_ssize_t n = q.shape[0], D = q.shape[1]
    _tile_check("kt rows", kt.shape[0], D)
    _tile_check("kt columns", kt.shape[1], TILE)
    if n < 1 or D < 1:
        raise ValueError("scores_kernel needs n >= 1 rows of D >= 1")
    R.q_pos, R.Hq, R.G, R.g, R.t0, R.nq, R.n, R.D = NULL, 1, 1, 0, 0, n, n, D   # row r = q[r]
    R.softcap, R.sinks = softcap, NULL
    ja, jb = np.zeros(n, dtype=np.intp), np.full(n, TILE, dtype=np.intp)
    s = np.zeros((n, TILE), dtype=np.float32 if floating is float else np.float64)
    cdef Py_ssize_t[::1] ja_v = ja, jb_v = jb
    cdef floating[:, ::1] s_v = s
    _score_pass(&q[0, 0], &R, &kt[0, 0], <floating>scale, &s_v[0, 0], &ja_v[0], &jb_v[0])
    return s


def softmax_kernel(const floating[::1] s, present, int ja, int jb, double m, double l):
    """One online-softmax step (_softmax_tile) of a row over one tile: scores s [TILE], keys
    present [TILE] (bool), visible lanes ja .. jb-1, running max m and sum l
    -> (weights [TILE], alpha, new m, new l).

    Equals: vis = present & (ja <= lane < jb); m' = max(m, s[vis].max());
    alpha = exp(m - m'); weights = where(vis, exp(s - m'), 0); l' = l * alpha + weights.sum()
    """
    _tile_check("s", s.shape[0], TILE)
    cdef uint64_t pbits = 0
    for j in np.flatnonzero(np.asarray(present, dtype=bool)):
        pbits |= (<uint64_t>1) << <int>j
    w = np.array(s)
    cdef floating[::1] w_v = w
    cdef floating mm = <floating>m, ll = <floating>l
    alpha = _softmax_tile(&w_v[0], pbits, ja, jb, &mm, &ll)
    return w, alpha, mm, ll


def value_kernel(const floating[:, ::1] o, const floating[::1] alpha, const floating[:, ::1] p,
                 const floating[:, ::1] v, present, ja, jb):
    """The value pass (_value_rows) of n rows: o [n, D], alpha [n], weights p [n, TILE], value
    tile v [TILE, D], keys present [TILE] (bool), visible lanes ja[r] .. jb[r]-1 -> new o
    (rows with equal lanes go through the four- and two-row kernels).

    Equals: vis = present & (ja[:, None] <= lane) & (lane < jb[:, None]);
    o * alpha[:, None] + where(vis, p, 0) @ v
    """
    cdef Py_ssize_t n = o.shape[0], D = o.shape[1], j
    _tile_check("alpha", alpha.shape[0], n)
    _tile_check("p rows", p.shape[0], n)
    _tile_check("p columns", p.shape[1], TILE)
    _tile_check("v rows", v.shape[0], TILE)
    _tile_check("v columns", v.shape[1], D)
    pres = np.ascontiguousarray(present, dtype=np.uint8)
    _tile_check("present", pres.shape[0], TILE)
    ja_a = np.ascontiguousarray(ja, dtype=np.intp)
    jb_a = np.ascontiguousarray(jb, dtype=np.intp)
    _tile_check("ja", ja_a.shape[0], n)
    _tile_check("jb", jb_a.shape[0], n)
    if ((ja_a < 0) | (jb_a > TILE)).any():
        raise ValueError("value_kernel: lanes must lie in 0 .. TILE")
    out = np.array(o)
    cdef floating[:, ::1] out_v = out
    cdef const unsigned char[::1] pres_v = pres
    cdef const Py_ssize_t[::1] ja_v = ja_a, jb_v = jb_a
    cdef const floating* vrows[TILE]
    for j in range(TILE):
        vrows[j] = &v[j, 0]
    _value_rows(&out_v[0, 0], &alpha[0], &p[0, 0], vrows, <const char*>&pres_v[0], &ja_v[0], &jb_v[0], n, D)
    return out


def transpose_kernel(const floating[:, ::1] rows, present):
    """The tile gather's transpose: key rows [TILE, D], keys present [TILE] (bool) -> kt [D, TILE].
    Lanes without a key hold 0 or a copy of a lane with one (they are masked downstream).

    Equals: rows.T on the present lanes
    """
    cdef Py_ssize_t D = rows.shape[1], j
    _tile_check("rows", rows.shape[0], TILE)
    pres = np.asarray(present, dtype=bool)
    _tile_check("present", pres.shape[0], TILE)
    kt = np.zeros((D, TILE), dtype=np.float32 if floating is float else np.float64)
    cdef floating[:, ::1] kt_v = kt
    cdef const floating* krows[TILE]
    for j in range(TILE):
        krows[j] = &rows[j, 0] if pres[j] else NULL
    if floating is float:
        swaref_transpose_tile_f(&kt_v[0, 0], krows, 0, D)
    else:
        swaref_transpose_tile_d(&kt_v[0, 0], krows, 0, D)
    return kt


def tanh_kernel(x, cap=1.0):
    """The soft cap's tanh on a 1-D float32/float64 array: cap * tanh(x / cap) with the vector
    formula of the score pass (swaref_softcap; cap = 1: tanh itself, exactly), NaN where x is
    not finite (the pass sends such a score's row to the float64 fallback).

    Equals: numpy.tanh(x) within 4 ulp (long-double tanh as the truth) on finite x; tanh(+-0) = 0
    """
    x = np.ascontiguousarray(x)
    if x.ndim != 1:
        raise ValueError(f"tanh_kernel takes a 1-D array, got shape {x.shape}")
    out = np.empty_like(x)
    cdef float[::1] xf, of
    cdef double[::1] xd, od
    if x.dtype == np.float32 and x.shape[0]:
        xf, of = x, out
        swaref_softcap_array_f(&xf[0], &of[0], xf.shape[0], <float>cap)
    elif x.dtype == np.float64 and x.shape[0]:
        xd, od = x, out
        swaref_softcap_array_d(&xd[0], &od[0], xd.shape[0], <double>cap)
    elif x.dtype not in (np.float32, np.float64):
        raise TypeError(f"tanh_kernel takes float32 or float64, got {x.dtype}")
    return out


def runs_kernel(q_pos, int64_t left, int64_t right, int64_t chunk, int64_t sink_tokens):
    """The visible keys of queries at q_pos [T] (int64, >= 0) under the window's kernel
    parameters, as _block and _exact_row take them (_runs, _hi) -> (prefix_last, lo, hi), each
    [T] int64: the query at p sees the positions 0 .. prefix_last[t] and lo[t] .. hi[t]
    (hi = POS_INF where unbounded; prefix_last = -1: no prefix, and then lo = 0 or no sink
    token reaches the range).

    Equals: {j : j <= prefix_last} | {j : lo <= j <= hi} ==
    {j : (j < sink_tokens and j <= p) or lo(p) <= j <= hi(p)}
    """
    cdef Keys K
    K.left, K.right, K.chunk, K.nsink = left, right, chunk, sink_tokens
    qp = np.ascontiguousarray(q_pos, dtype=np.int64)
    if qp.ndim != 1 or (qp < 0).any():
        raise ValueError("runs_kernel takes a 1-D array of positions >= 0")
    pre, lo, hi = (np.empty(qp.shape[0], dtype=np.int64) for _ in range(3))
    cdef int64_t[::1] pre_v = pre, lo_v = lo, hi_v = hi
    cdef const int64_t[::1] qp_v = qp
    cdef Py_ssize_t t
    for t in range(qp.shape[0]):
        pre_v[t] = _runs(qp_v[t], &K, &lo_v[t])
        hi_v[t] = _hi(qp_v[t], &K)
    return pre, lo, hi


def lanes_kernel(lo, hi, int64_t tstart, present):
    """Each query's visible lanes in the tile at tstart (_row_ranges, one head per query): the
    run of positions lo[t] .. hi[t] (lo None: from 0), keys present [TILE] (bool) ->
    (ja [T], jb [T]) intp.

    Equals: ja, jb = clip(lo - tstart, 0, TILE), clip(hi + 1 - tstart, 0, TILE);
    (0, 0) where ja >= jb or no present lane lies in ja .. jb-1
    """
    cdef Rows R
    hi_a = np.ascontiguousarray(hi, dtype=np.int64)
    n = hi_a.shape[0]
    lo_a = None if lo is None else np.ascontiguousarray(lo, dtype=np.int64)
    if lo_a is not None:
        _tile_check("lo", lo_a.shape[0], n)
    pres = np.asarray(present, dtype=bool)
    _tile_check("present", pres.shape[0], TILE)
    if n < 1:
        raise ValueError("lanes_kernel needs at least one query")
    cdef uint64_t pbits = 0
    for j in np.flatnonzero(pres):
        pbits |= (<uint64_t>1) << <int>j
    R.G, R.nq, R.n = 1, n, n
    ja, jb = np.zeros(n, dtype=np.intp), np.zeros(n, dtype=np.intp)
    cdef Py_ssize_t[::1] ja_v = ja, jb_v = jb
    cdef const int64_t[::1] hi_v = hi_a
    cdef const int64_t[::1] lo_v
    cdef const int64_t* lo_p = NULL
    if lo_a is not None:
        lo_v = lo_a
        lo_p = &lo_v[0]
    _row_ranges(&R, lo_p, &hi_v[0], tstart, pbits, &ja_v[0], &jb_v[0])
    return ja, jb
