# swaref/_core.pyx, included: the overflow fallback (a row recomputed in long double) and
# the end of a row (out = o / l).  Text of _core.pyx split out for size; see its docstring.

# ------------------------------------------------------ overflow fallback

cdef void _exact_row(const floating* qrow, int64_t p, Py_ssize_t g, const Keys* K, double scale, double cap,
                     const double* sink, double* acc, floating* orow) noexcept nogil:
    """The overflow fallback: one query row (position p, KV head g) recomputed as the reference
    does (scores, capped, max, sum in long double, which holds any float64 score; then
    normalised weights times values), so that neither a score nor the unnormalised value sum
    can overflow where the reference's result is finite.  The arithmetic of one key is
    swaref_exact_key's (swaref/_kernels.h).

    Its keys are the row's visible keys in increasing position: its sink prefix, then its range
    (_runs), each from the sink slots, the ring, then the explicit keys; its arithmetic depends on nothing else: the
    result is as chunk-, thread- and rotation-invariant as the fast path's.  cap > 0: the soft
    cap; sink (NULL: none): the row's float64 sink logit, which starts the running max and sum.
    acc: D doubles of scratch.
    """
    cdef swaref_exact_t X
    cdef int stage
    cdef int64_t lo, se = _runs(p, K, &lo)
    cdef Py_ssize_t d
    swaref_exact_init(&X, scale, cap, sink)
    for d in range(K.D):
        acc[d] = 0
    for stage in range(2):
        _exact_range(&X, stage, qrow, g, K, 0, se, acc)
        _exact_range(&X, stage, qrow, g, K, lo, _hi(p, K), acc)
    for d in range(K.D):
        orow[d] = <floating>acc[d]


cdef void _exact_range(swaref_exact_t* X, int stage, const floating* qrow, Py_ssize_t g, const Keys* K,
                       int64_t a, int64_t b, double* acc) noexcept nogil:
    """_exact_row's step over the keys at positions a .. b, in increasing position."""
    cdef const floating* k = <const floating*>K.k
    cdef const floating* v = <const floating*>K.v
    cdef const floating* ck = <const floating*>K.ck
    cdef const floating* cv = <const floating*>K.cv
    cdef Py_ssize_t i, slot, D = K.D, row = K.Hkv * K.D
    cdef int64_t j = a
    while j <= b and j < K.ns:
        if K.cpos[j] == j:
            _exact_key(X, stage, qrow, ck + j * row + g * D, cv + j * row + g * D, D, acc)
        j += 1
    j = a if a > K.ring_lo else K.ring_lo
    while j <= K.ring_hi and j <= b:
        slot = _ring_slot(K, j)
        if K.cpos[slot] == j:
            _exact_key(X, stage, qrow, ck + slot * row + g * D, cv + slot * row + g * D, D, acc)
        j += 1
    i = _lower_bound(K.k_pos, K.S, a)
    while i < K.S and K.k_pos[i] <= b:
        _exact_key(X, stage, qrow, k + i * row + g * D, v + i * row + g * D, D, acc)
        i += 1


cdef inline void _exact_key(swaref_exact_t* X, int stage, const floating* q, const floating* k,
                            const floating* v, Py_ssize_t D, double* acc) noexcept nogil:
    if floating is float:
        swaref_exact_key_f(X, stage, q, k, v, D, acc)
    else:
        swaref_exact_key_d(X, stage, q, k, v, D, acc)


@cython.cdivision(True)     # IEEE division in every build: a row whose sum l is 0 (every score -inf) is NaN
cdef void _finish_rows(const floating* q, const Rows* R, const Keys* K, const floating* o, const floating* l,
                       double scale, double* acc, floating* out) noexcept nogil:
    """out = o / l row by row; a row holding Inf or NaN after it is recomputed (_exact_row)."""
    cdef Py_ssize_t r, d
    cdef floating* orow
    cdef const double* sink = NULL
    cdef bint finite
    for r in range(R.n):
        orow = <floating*>_qrow(<const floating*>out, R, r)
        for d in range(R.D):
            orow[d] = o[r * R.D + d] / l[r]
        if floating is float:
            finite = swaref_all_finite_f(orow, R.D)
        else:
            finite = swaref_all_finite_d(orow, R.D)
        if not finite:
            if R.sinks != NULL:
                sink = R.sinks + R.g * R.G + r % R.G
            _exact_row(_qrow(q, R, r), R.q_pos[R.t0 + r // R.G], R.g, K, scale, R.softcap, sink, acc, orow)
