# cython: language_level=3
"""swaref's compiled kernel: banded sliding-window attention, read in place.

Only ``swaref._backend`` calls this module: it validates every input and hands
over C-contiguous float32/float64 arrays, int64 positions and consistent
shapes.  Nothing here re-checks them (the debug build, ``SWAREF_DEBUG=1``,
turns Cython's bounds checks on to prove the indexing).

Layers
------
1. ``_block``: the ``noexcept nogil`` core of one (KV head, query block) work
   item, on raw pointers; its products, softmax step and exp are the C
   micro-kernels in swaref/_kernels.h (Cython cannot keep an array of
   accumulators in registers: measured about 2x slower).
2. ``_band_core``: ``noexcept nogil`` on ``const floating[:, :, ::1]``
   memoryviews (fused float/double); splits the work into items and runs them
   in an OpenMP ``prange`` (sequentially when built without OpenMP).
3. ``band_attention``: the thin ``def`` wrapper that allocates the output and
   the per-thread scratch and releases the GIL.

Where keys come from
--------------------
A key at absolute position j is read where it lies (copied only into the
current tile's scratch, never into a time-ordered buffer of the cache): from the *ring* (a rolling buffer cache, slot ``j mod C``, used only
if ``cache_positions[slot] == j``) when ``ring_lo <= j <= ring_hi``, and from
the *explicit* keys (``k``, ``v`` with sorted positions ``k_pos``) otherwise.
``attention`` passes all keys as explicit keys and an empty ring; a prefill
chunk passes its own keys as explicit keys and the cache as the ring; a decode
step passes only the ring.

Order of operations (the whole contract of bitwise chunk invariance)
--------------------------------------------------------------------
For one query row (query position p, query head h, KV head g = h // G) the
arithmetic depends only on p, the window, the row of q and the keys it sees,
never on which other rows, chunk or thread share its work item:

* Keys are visited in increasing absolute position, in *tiles*: the aligned
  position ranges ``[m*B, (m+1)*B)`` with B = TILE = 64.  Inside a tile, key
  position j sits in lane ``j - m*B`` (gaps stay empty), so even the lane of a
  key is fixed.  A tile in which the row sees no key is skipped.
* Scores: ``a_j = 0; a_j = a_j + q[d] * k_j[d]`` for d = 0, 1, ..., D-1 in
  that order (one chain per lane), then ``s_j = a_j * scale``; all in the
  input precision.
* Online softmax (FlashAttention-style), per tile, with the visible keys V_t
  (present and ``p - W < j <= p``; all keys ``<= p`` when window is None):
  ``m_t = max_{j in V_t} s_j`` (exact, order-free); ``m' = max(m, m_t)``;
  ``alpha = exp(m - m')`` (0 for the first tile, where m = -inf);
  ``p_j = exp(s_j - m')`` on visible lanes and exactly 0 on the others (a
  select, never a product);
  tile sum: 16 partial sums ``P_i = ((p_i + p_{i+16}) + p_{i+32}) + p_{i+48}``
  (lane order, i = 0..15), reduced by the fixed halving tree
  ``P_i += P_{i+8}`` (i < 8), ``P_i += P_{i+4}`` (i < 4), ``P_i += P_{i+2}``,
  ``P_0 += P_1``; ``l = l * alpha + P_0``;
  values: ``u[e] = 0; u[e] = u[e] + p_j * v_j[e]`` for visible j in increasing
  position, then ``o[e] = o[e] * alpha + u[e]``.
* Finally ``out[e] = o[e] / l``.
* ``exp`` is swaref's own (swaref/_kernels.h): Cody-Waite reduction and a
  Taylor polynomial, relative error below 4 ulp on x <= 0, exactly 1 at 0 and
  exactly 0 below -708 (float64) / -87 (float32), where the true value is
  already below eps times the largest weight (which is 1).  One scalar
  formula (for alpha) and one vector formula (for the p_j), each used in
  exactly one place, so no row can see both variants for the same quantity.

The compiler may fuse each ``a + x * y`` into one FMA.  Every chain above is
written with exactly one candidate product per addition, so fusing is the
same decision in scalar and vector code; builds without FMA (SWAREF_PORTABLE
on a CPU without it, the -O0 debug build) round the product separately, again
everywhere alike.  Bits can differ between builds, never between calls of
one build.

Masked keys (outside the window, stale or empty slots) never enter a row's
arithmetic: their scores may be computed as by-products of the vectorised
tile product, but they are replaced by -inf or 0 by selects and their values
are never multiplied, so a NaN or Inf there cannot reach the output.

Work split: items are (KV head, block of ``ROWS_PER_ITEM // G`` consecutive
queries), run in an OpenMP ``prange`` with dynamic scheduling; each item
gathers a tile's keys once, transposed (``kt[d, lane]``), and its values
(``vt[lane, :]``), into per-thread scratch, and runs its G x block rows over
it.  Scratch is O(TILE x D + rows x (TILE + D)) per thread: no T x S array.
"""
cimport cython
from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t, uint64_t
from libc.math cimport INFINITY, exp
from libc.string cimport memcpy

import numpy as np

cdef extern from "_kernels.h":
    const int SWAREF_HAVE_OPENMP
    int swaref_max_threads() noexcept nogil
    void swaref_prefetch(const void* p, Py_ssize_t nbytes) noexcept nogil
    double swaref_exp_d(double x) noexcept nogil
    float swaref_exp_f(float x) noexcept nogil
    void swaref_exp_array_f(const float* x, float* y, Py_ssize_t n, int vector) noexcept nogil
    void swaref_exp_array_d(const double* x, double* y, Py_ssize_t n, int vector) noexcept nogil
    float swaref_softmax_f(float* s, uint64_t present, int ja, int jb, float* m, float* l) noexcept nogil
    double swaref_softmax_d(double* s, uint64_t present, int ja, int jb, double* m, double* l) noexcept nogil
    void swaref_scores1_f(const float* q0, const float* kt, Py_ssize_t D, float scale, float* s0) noexcept nogil
    void swaref_scores1_d(const double* q0, const double* kt, Py_ssize_t D, double scale, double* s0) noexcept nogil
    void swaref_scores2_f(const float* q0, const float* q1, const float* kt, Py_ssize_t D, float scale,
                          float* s0, float* s1) noexcept nogil
    void swaref_scores2_d(const double* q0, const double* q1, const double* kt, Py_ssize_t D, double scale,
                          double* s0, double* s1) noexcept nogil
    const int SWAREF_SPAN_F
    const int SWAREF_SPAN_D
    void swaref_scores4_f(const float* q0, const float* q1, const float* q2, const float* q3, const float* kt,
                          Py_ssize_t D, float scale, float* s0, float* s1, float* s2, float* s3) noexcept nogil
    void swaref_scores4_d(const double* q0, const double* q1, const double* q2, const double* q3,
                          const double* kt, Py_ssize_t D, double scale,
                          double* s0, double* s1, double* s2, double* s3) noexcept nogil
    void swaref_transpose_tile_f(float* kt, const float* const* rows, Py_ssize_t off, Py_ssize_t D) noexcept nogil
    void swaref_transpose_tile_d(double* kt, const double* const* rows, Py_ssize_t off, Py_ssize_t D) noexcept nogil
    void swaref_pv4r_f(float* const* o, const float* al, const float* const* p, const float** vp,
                       const char* vis, Py_ssize_t ja, Py_ssize_t jb, Py_ssize_t e0, Py_ssize_t e1) noexcept nogil
    void swaref_pv4r_d(double* const* o, const double* al, const double* const* p, const double** vp,
                       const char* vis, Py_ssize_t ja, Py_ssize_t jb, Py_ssize_t e0, Py_ssize_t e1) noexcept nogil
    uint64_t swaref_range_bits(int ja, int jb) noexcept nogil
    bint swaref_all_finite_f(const float* x, Py_ssize_t n) noexcept nogil
    bint swaref_all_finite_d(const double* x, Py_ssize_t n) noexcept nogil
    const int SWAREF_SROWS_F
    const int SWAREF_SROWS_D
    void swaref_scoresr_f(const float* const* q, const float* kt, Py_ssize_t D, float scale,
                          float* const* s) noexcept nogil
    void swaref_scoresr_d(const double* const* q, const double* kt, Py_ssize_t D, double scale,
                          double* const* s) noexcept nogil
    const int SWAREF_PVSPAN_F
    const int SWAREF_PVSPAN_D
    void swaref_pv_f(int R, float* o0, float* o1, float al0, float al1, const float* p0, const float* p1,
                     const float** vp, const char* vis, Py_ssize_t ja, Py_ssize_t jb, Py_ssize_t e0,
                     Py_ssize_t e1) noexcept nogil
    void swaref_pv_d(int R, double* o0, double* o1, double al0, double al1, const double* p0, const double* p1,
                     const double** vp, const char* vis, Py_ssize_t ja, Py_ssize_t jb, Py_ssize_t e0,
                     Py_ssize_t e1) noexcept nogil

ctypedef fused floating:
    float
    double

cdef enum:
    TILE = 64              # keys per tile; tiles cover the aligned position ranges [m*TILE, (m+1)*TILE)
    ROWS_PER_ITEM = 256    # query rows (queries x heads of one KV group) per work item
    PREFETCH = 8           # keys ahead whose rows the tile gather prefetches


#: Multiply-adds per thread below which a call uses fewer threads (tests lower it to 1
#: so that even their small shapes run on several threads).
cdef Py_ssize_t min_work = 1 << 20


def min_work_per_thread(n=None):
    """Get, or set and return the previous, multiply-adds per thread below which fewer threads run."""
    global min_work
    old = min_work
    if n is not None:
        if int(n) < 1:
            raise ValueError(f"min_work_per_thread must be >= 1, got {n}")
        min_work = int(n)
    return old


def openmp_enabled():
    """True when this build was compiled with OpenMP."""
    return bool(SWAREF_HAVE_OPENMP)


def default_threads():
    """Threads a call with num_threads=None uses: OMP_NUM_THREADS or the OpenMP default (1 without OpenMP)."""
    return swaref_max_threads()


def exp_kernel(x, vector=False):
    """swaref's exp on a 1-D float32/float64 array: the scalar formula (alpha) or, with
    vector=True, the vector one (the weights).  For the tests: within 4 ulp of numpy.exp on x <= 0."""
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


cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return swaref_exp_f(x)
    else:
        return swaref_exp_d(x)


cdef inline Py_ssize_t _lower_bound(const int64_t* a, Py_ssize_t n, int64_t x) noexcept nogil:
    """First index i with a[i] >= x (a sorted), n if none."""
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = lo + (hi - lo) // 2
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline void _scores1(const floating* q0, const floating* kt, Py_ssize_t D, floating scale,
                          floating* s0) noexcept nogil:
    """s0[j] = (sum_d q0[d] * kt[d*TILE + j]) * scale for the lanes j of one span; d = 0 .. D-1 in order."""
    if floating is float:
        swaref_scores1_f(q0, kt, D, scale, s0)
    else:
        swaref_scores1_d(q0, kt, D, scale, s0)


cdef inline void _scores2(const floating* q0, const floating* q1, const floating* kt, Py_ssize_t D,
                          floating scale, floating* s0, floating* s1) noexcept nogil:
    """_scores1 for two rows at once (shared key loads; each lane's arithmetic is unchanged)."""
    if floating is float:
        swaref_scores2_f(q0, q1, kt, D, scale, s0, s1)
    else:
        swaref_scores2_d(q0, q1, kt, D, scale, s0, s1)


cdef inline void _pv(int R, floating* o0, floating* o1, floating alpha0, floating alpha1,
                     const floating* p0, const floating* p1, const floating** vp,
                     const char* vis, Py_ssize_t ja, Py_ssize_t jb, Py_ssize_t e0, Py_ssize_t e1) noexcept nogil:
    """For R = 1 or 2 rows seeing the same lanes, elements e0 .. e1-1: u[e] = sum of p[j] * vp[j][e]
    over the visible lanes j = ja .. jb-1 in order (from 0), then o[e] = o[e] * alpha + u[e]."""
    if floating is float:
        swaref_pv_f(R, o0, o1, alpha0, alpha1, p0, p1, vp, vis, ja, jb, e0, e1)
    else:
        swaref_pv_d(R, o0, o1, alpha0, alpha1, p0, p1, vp, vis, ja, jb, e0, e1)


cdef inline floating _softmax_tile(floating* s, uint64_t present, Py_ssize_t ja, Py_ssize_t jb,
                                   floating* m, floating* l) noexcept nogil:
    """Online-softmax step of one row over one tile; returns alpha, leaves the weights in s.

    Visible lanes: bit j of present set and ja <= j < jb.  m_t = max of their scores;
    m' = max(m, m_t); alpha = exp(m - m'); s[j] = exp(s[j] - m') on visible
    lanes and exactly 0 elsewhere (a select, so a NaN score on a masked lane
    never propagates); tile sum = 16 lane-group sums (lanes j, j+16, j+32,
    j+48 added in that order) reduced by the fixed halving tree
    (8, 4, 2, 1); l = l * alpha + tile sum.  Lanes are positions mod TILE,
    so the whole step depends only on the row's visible keys.
    """
    if floating is float:
        return swaref_softmax_f(s, present, <int>ja, <int>jb, m, l)
    else:
        return swaref_softmax_d(s, present, <int>ja, <int>jb, m, l)


cdef inline const floating* _qrow(const floating* q, Py_ssize_t r, Py_ssize_t nq, Py_ssize_t G,
                                  Py_ssize_t Hq, Py_ssize_t D, Py_ssize_t g0, Py_ssize_t t0) noexcept nogil:
    """The q row of item row r (see _block)."""
    return q + ((t0 + (r // G) % nq) * Hq + (g0 + r // (nq * G)) * G + r % G) * D


cdef inline void _scores_rows(const Py_ssize_t* act, Py_ssize_t n, const floating* q, Py_ssize_t nq,
                              Py_ssize_t G, Py_ssize_t Hq, Py_ssize_t D, Py_ssize_t g0, Py_ssize_t t0,
                              const floating* kt, floating scale, floating* sc, Py_ssize_t l0) noexcept nogil:
    """Scores of the n (1 .. SWAREF_SROWS) item rows act[0 .. n-1] over lanes l0 .. l0 + span - 1 of one key tile."""
    cdef Py_ssize_t i = 0
    cdef const floating* qp[8]
    cdef floating* sp[8]
    cdef Py_ssize_t nsr = SWAREF_SROWS_D
    if floating is float:
        nsr = SWAREF_SROWS_F
    if n == nsr:
        for i in range(n):
            qp[i] = _qrow(q, act[i], nq, G, Hq, D, g0, t0)
            sp[i] = sc + act[i] * TILE + l0
        if floating is float:
            swaref_scoresr_f(qp, kt + l0, D, scale, sp)
        else:
            swaref_scoresr_d(qp, kt + l0, D, scale, sp)
        return
    i = 0
    if n == 4:
        if floating is float:
            swaref_scores4_f(_qrow(q, act[0], nq, G, Hq, D, g0, t0), _qrow(q, act[1], nq, G, Hq, D, g0, t0),
                             _qrow(q, act[2], nq, G, Hq, D, g0, t0), _qrow(q, act[3], nq, G, Hq, D, g0, t0),
                             kt + l0, D, scale, sc + act[0] * TILE + l0, sc + act[1] * TILE + l0,
                             sc + act[2] * TILE + l0, sc + act[3] * TILE + l0)
        else:
            swaref_scores4_d(_qrow(q, act[0], nq, G, Hq, D, g0, t0), _qrow(q, act[1], nq, G, Hq, D, g0, t0),
                             _qrow(q, act[2], nq, G, Hq, D, g0, t0), _qrow(q, act[3], nq, G, Hq, D, g0, t0),
                             kt + l0, D, scale, sc + act[0] * TILE + l0, sc + act[1] * TILE + l0,
                             sc + act[2] * TILE + l0, sc + act[3] * TILE + l0)
        return
    while i + 2 <= n:
        _scores2(_qrow(q, act[i], nq, G, Hq, D, g0, t0), _qrow(q, act[i + 1], nq, G, Hq, D, g0, t0),
                 kt + l0, D, scale, sc + act[i] * TILE + l0, sc + act[i + 1] * TILE + l0)
        i += 2
    if i < n:
        _scores1(_qrow(q, act[i], nq, G, Hq, D, g0, t0), kt + l0, D, scale, sc + act[i] * TILE + l0)


cdef inline void _gather_row(const floating** krows, const floating** vbase, floating* vt, bint copy_v,
                             const floating* krow, const floating* vrow, Py_ssize_t j,
                             Py_ssize_t D) noexcept nogil:
    """Put one key into lane j: its key row is noted (transposed into the tiles after the
    gather, _transpose_tile), its value row copied to the value tile or pointed at in place."""
    krows[j] = krow
    if copy_v:
        memcpy(vt + j * D, vrow, D * sizeof(floating))
        vbase[j] = vt + j * D
    else:
        vbase[j] = vrow


cdef inline void _transpose_tile(floating* kt, const floating** krows, Py_ssize_t HG, Py_ssize_t D) noexcept nogil:
    """kt[gi][d, j] = krows[j][gi * D + d] for each KV head gi of the item and each lane j
    with a key (krows[j] != NULL); a pure data move (swaref/_kernels.h)."""
    cdef Py_ssize_t gi
    for gi in range(HG):
        if floating is float:
            swaref_transpose_tile_f(kt + gi * TILE * D, krows, gi * D, D)
        else:
            swaref_transpose_tile_d(kt + gi * TILE * D, krows, gi * D, D)


cdef inline void _exact_key(int stage, const floating* qrow, const floating* krow, const floating* vrow,
                            Py_ssize_t D, double scale, double* m, double* l, double* acc) noexcept nogil:
    """One visible key of _exact_row: stage 0 updates the running max m and sum l, stage 1 adds
    its normalised weight times its value row to acc.  The score is recomputed in each stage
    (the same float64 chain both times: a product of two floats is exact in float64)."""
    cdef double s = 0, w
    cdef Py_ssize_t d
    for d in range(D):
        s = s + <double>qrow[d] * <double>krow[d]
    s = s * scale
    if stage == 0:
        if s > m[0]:                                     # a NaN score never passes: it reaches l below
            l[0] = l[0] * exp(m[0] - s) + 1.0
            m[0] = s
        else:
            l[0] = l[0] + exp(s - m[0])
    else:
        w = exp(s - m[0]) / l[0]
        for d in range(D):
            acc[d] = acc[d] + w * <double>vrow[d]


cdef void _exact_row(const floating* qrow, int64_t p, int64_t window, Py_ssize_t g,
                     const floating* k, const floating* v, const int64_t* k_pos, Py_ssize_t S,
                     const floating* ck, const floating* cv, const int64_t* cpos, Py_ssize_t C,
                     int64_t ring_lo, int64_t ring_hi, Py_ssize_t Hkv, Py_ssize_t D, double scale,
                     double* acc, floating* orow) noexcept nogil:
    """The overflow fallback: one query row (position p, KV head g) recomputed in float64 as the
    reference does (scores, max, sum, then normalised weights times values), so that neither a
    score nor the unnormalised value sum can overflow where the reference's result is finite.

    Its keys are the row's visible keys in increasing position (ring, then explicit keys), and
    its arithmetic depends on nothing else: the result is as chunk-, thread- and
    rotation-invariant as the fast path's.  acc: D doubles of scratch.
    """
    cdef double m = -INFINITY, l = 0
    cdef int stage
    cdef int64_t j, lo = 0
    cdef Py_ssize_t i, slot, d
    if window > 0 and p - window + 1 > 0:
        lo = p - window + 1
    for d in range(D):
        acc[d] = 0
    for stage in range(2):
        j = lo if lo > ring_lo else ring_lo
        while j <= ring_hi and j <= p:
            slot = j % C
            if cpos[slot] == j:
                _exact_key(stage, qrow, ck + (slot * Hkv + g) * D, cv + (slot * Hkv + g) * D, D, scale,
                           &m, &l, acc)
            j += 1
        i = _lower_bound(k_pos, S, lo)
        while i < S and k_pos[i] <= p:
            _exact_key(stage, qrow, k + (i * Hkv + g) * D, v + (i * Hkv + g) * D, D, scale, &m, &l, acc)
            i += 1
    for d in range(D):
        orow[d] = <floating>acc[d]


cdef void _block(const floating* q, const int64_t* q_pos, Py_ssize_t Hq,
                 const floating* k, const floating* v, const int64_t* k_pos, Py_ssize_t S,
                 const floating* ck, const floating* cv, const int64_t* cpos, Py_ssize_t C,
                 int64_t ring_lo, int64_t ring_hi,
                 Py_ssize_t Hkv, Py_ssize_t D, int64_t window, floating scale, double scale64,
                 Py_ssize_t g0, Py_ssize_t g1, Py_ssize_t t0, Py_ssize_t t1,
                 floating* work, Py_ssize_t* iwork, double* dwork, floating* out) noexcept nogil:
    """One work item: queries t0 .. t1-1, the query heads of KV heads g0 .. g1-1.

    Rows: r = ((gi * nq) + tq) * G + i for KV head g0 + gi, query t0 + tq and
    query head (g0 + gi) * G + i, so the G heads of one query are adjacent.
    work: HG*TILE*D (transposed key tiles, lane = position mod TILE) + TILE*D
    (value tile) + TILE*R (scores, then weights) + R*D (o) + 3*R (m, l, alpha)
    floats; iwork: 2*R; HG = g1 - g0, R = HG * (t1 - t0) * G.
    """
    cdef Py_ssize_t G = Hq // Hkv
    cdef Py_ssize_t HG = g1 - g0
    cdef Py_ssize_t nq = t1 - t0
    cdef Py_ssize_t nrows = HG * nq * G
    cdef floating* kt = work
    cdef floating* vt = kt + HG * TILE * D
    cdef floating* sc = vt + TILE * D
    cdef floating* o = sc + TILE * nrows
    cdef floating* m = o + nrows * D
    cdef floating* l = m + nrows
    cdef floating* al = l + nrows
    # Many rows reuse a tile's values: copy them to stride D (rows Hkv*D apart fight over the
    # same L1 sets).  A decode step's few rows read them once: in place.
    cdef bint copy_v = HG == 1 and nrows > 16
    # Rows reading V in place are few (decode): they wait on memory, and the rows of one KV head
    # lie Hkv*D apart, a stride the hardware prefetcher does not follow across pages.
    cdef Py_ssize_t* rja = iwork
    cdef Py_ssize_t* rjb = iwork + nrows
    cdef const floating* vbase[TILE]
    cdef const floating* vptr[TILE]
    cdef const floating* krows[TILE]
    cdef char present[TILE]
    cdef uint64_t pbits                                  # present as a lane mask
    cdef Py_ssize_t r, rend, d, j, ja, jb, slot, e, eb, gi, tq, i, nact
    cdef Py_ssize_t act[8]
    cdef Py_ssize_t nsr = SWAREF_SROWS_D
    cdef floating* o4[4]
    cdef const floating* p4[4]
    cdef Py_ssize_t l0, span = SWAREF_SPAN_D, e0, e1, pvspan = SWAREF_PVSPAN_D
    if floating is float:
        span = SWAREF_SPAN_F
        pvspan = SWAREF_PVSPAN_F
        nsr = SWAREF_SROWS_F
    cdef int64_t lo, hi, pos, tstart, tend, p, rp
    cdef floating* orow
    cdef Py_ssize_t seg = HG * D * sizeof(floating)     # bytes of one key's row segment

    for r in range(nrows):
        m[r] = -INFINITY
        l[r] = 0
        for d in range(D):
            o[r * D + d] = 0

    # Keys any row of the item can see: positions lo .. hi.
    hi = q_pos[t1 - 1]
    lo = 0
    if window > 0 and q_pos[t0] - window + 1 > 0:
        lo = q_pos[t0] - window + 1
    rp = lo if lo > ring_lo else ring_lo                 # next ring position to look at
    e = _lower_bound(k_pos, S, lo)                       # next explicit key
    eb = _lower_bound(k_pos, S, hi + 1)
    while True:
        # The next present key decides the tile [tstart, tend); gather its keys at lane
        # position - tstart (ring positions all lie below the explicit ones: _backend checks it).
        while rp <= ring_hi and rp <= hi and cpos[rp % C] != rp:
            rp += 1
        if rp <= ring_hi and rp <= hi:
            pos = rp
        elif e < eb:
            pos = k_pos[e]
        else:
            break
        tstart = (pos // TILE) * TILE
        tend = tstart + TILE
        for j in range(TILE):
            present[j] = 0
            krows[j] = NULL
        pbits = 0
        while rp <= ring_hi and rp <= hi and rp < tend:
            if not copy_v:
                slot = (rp + PREFETCH) % C
                swaref_prefetch(ck + (slot * Hkv + g0) * D, seg)
                swaref_prefetch(cv + (slot * Hkv + g0) * D, seg)
            slot = rp % C
            if cpos[slot] == rp:
                j = rp - tstart
                present[j] = 1
                pbits |= (<uint64_t>1) << j
                _gather_row(krows, vbase, vt, copy_v, ck + (slot * Hkv + g0) * D, cv + (slot * Hkv + g0) * D,
                            j, D)
            rp += 1
        while e < eb and k_pos[e] < tend:
            if not copy_v and e + PREFETCH < eb:
                swaref_prefetch(k + ((e + PREFETCH) * Hkv + g0) * D, seg)
                swaref_prefetch(v + ((e + PREFETCH) * Hkv + g0) * D, seg)
            j = k_pos[e] - tstart
            present[j] = 1
            pbits |= (<uint64_t>1) << j
            _gather_row(krows, vbase, vt, copy_v, k + (e * Hkv + g0) * D, v + (e * Hkv + g0) * D, j, D)
            e += 1
        _transpose_tile(kt, krows, HG, D)

        # Each query's visible lanes: positions in [p - W + 1, p] of this tile, present
        # (the same for all its heads).
        for tq in range(nq):
            p = q_pos[t0 + tq]
            ja = 0
            if window > 0 and p - window + 1 > tstart:
                ja = p - window + 1 - tstart
            jb = TILE
            if p + 1 < tend:
                jb = p + 1 - tstart
            if ja >= jb or not (pbits & swaref_range_bits(<int>ja, <int>jb)):
                ja = jb = 0                              # nothing visible: the rows skip this tile
            for gi in range(HG):
                for i in range(G):
                    r = (gi * nq + tq) * G + i
                    rja[r] = ja
                    rjb[r] = jb

        for gi in range(HG):
            # Scores, six rows at a time (any rows: lanes and rows are independent), one span of
            # lanes after the other (the whole tile for float32, halves for float64).
            rend = (gi + 1) * nq * G
            l0 = 0
            while l0 < TILE:
                nact = 0
                for r in range(gi * nq * G, rend):
                    # A row skips spans outside its visible lanes (float64 halves: the window's
                    # first and the diagonal tile); those lanes keep stale scores, which the
                    # softmax step masks like any invisible lane.
                    if rja[r] < rjb[r] and rja[r] < l0 + span and rjb[r] > l0:
                        act[nact] = r
                        nact += 1
                        if nact == nsr:
                            _scores_rows(act, nsr, q, nq, G, Hq, D, g0, t0, kt + gi * TILE * D, scale, sc, l0)
                            nact = 0
                if nact:
                    _scores_rows(act, nact, q, nq, G, Hq, D, g0, t0, kt + gi * TILE * D, scale, sc, l0)
                l0 += span
            # Softmax steps, then values: span by span of output elements (the whole row for
            # float32 up to D = 128; a float64 value tile's span stays in L1 across all rows),
            # four (else two) rows at a time where they see the same lanes.
            for j in range(TILE):
                if present[j]:
                    vptr[j] = vbase[j] + (0 if copy_v else gi * D)
            for r in range(gi * nq * G, rend):
                if rja[r] < rjb[r]:
                    al[r] = _softmax_tile(sc + r * TILE, pbits, rja[r], rjb[r], m + r, l + r)
            e0 = 0
            while e0 < D:
                e1 = e0 + pvspan if e0 + pvspan < D else D
                r = gi * nq * G
                while r < rend:
                    ja = rja[r]
                    jb = rjb[r]
                    if ja >= jb:
                        r += 1
                    elif (r + 3 < rend and rja[r + 1] == ja and rjb[r + 1] == jb and rja[r + 2] == ja
                          and rjb[r + 2] == jb and rja[r + 3] == ja and rjb[r + 3] == jb):
                        for i in range(4):
                            o4[i] = o + (r + i) * D
                            p4[i] = sc + (r + i) * TILE
                        if floating is float:
                            swaref_pv4r_f(o4, al + r, p4, vptr, present, ja, jb, e0, e1)
                        else:
                            swaref_pv4r_d(o4, al + r, p4, vptr, present, ja, jb, e0, e1)
                        r += 4
                    elif r + 1 < rend and rja[r + 1] == ja and rjb[r + 1] == jb:
                        _pv(2, o + r * D, o + (r + 1) * D, al[r], al[r + 1], sc + r * TILE,
                            sc + (r + 1) * TILE, vptr, present, ja, jb, e0, e1)
                        r += 2
                    else:
                        _pv(1, o + r * D, o, al[r], al[r], sc + r * TILE, sc + r * TILE, vptr, present,
                            ja, jb, e0, e1)
                        r += 1
                e0 = e1

    for r in range(nrows):
        orow = out + ((t0 + (r // G) % nq) * Hq + (g0 + r // (nq * G)) * G + r % G) * D
        for d in range(D):
            orow[d] = o[r * D + d] / l[r]
        # Overflow (a score, the scale product or the unnormalised value sum past the largest
        # finite number) shows as Inf or NaN in the row and nowhere else: inputs inside the
        # window are finite here or the row is NaN anyway.  Such a row is recomputed in float64;
        # the test reads only the row's own result, so which rows take it is chunk-invariant.
        if floating is float:
            if not swaref_all_finite_f(orow, D):
                _exact_row(_qrow(q, r, nq, G, Hq, D, g0, t0), q_pos[t0 + (r // G) % nq], window,
                           g0 + r // (nq * G), k, v, k_pos, S, ck, cv, cpos, C, ring_lo, ring_hi, Hkv, D,
                           scale64, dwork, orow)
        else:
            if not swaref_all_finite_d(orow, D):
                _exact_row(_qrow(q, r, nq, G, Hq, D, g0, t0), q_pos[t0 + (r // G) % nq], window,
                           g0 + r // (nq * G), k, v, k_pos, S, ck, cv, cpos, C, ring_lo, ring_hi, Hkv, D,
                           scale64, dwork, orow)


cdef void _band_core(const floating[:, :, ::1] q, const int64_t[::1] q_pos,
                     const floating[:, :, ::1] k, const floating[:, :, ::1] v, const int64_t[::1] k_pos,
                     const floating[:, :, ::1] ck, const floating[:, :, ::1] cv, const int64_t[::1] cpos,
                     int64_t ring_lo, int64_t ring_hi, int64_t window, floating scale, double scale64,
                     Py_ssize_t block, Py_ssize_t hg, floating[:, ::1] work, Py_ssize_t[:, ::1] iwork,
                     double[:, ::1] dwork, floating[:, :, ::1] out, int nthreads) noexcept nogil:
    """All (KV-head group, query block) items, in parallel; each row's bits do not depend on the split."""
    cdef Py_ssize_t T = q.shape[0], Hq = q.shape[1], D = q.shape[2]
    cdef Py_ssize_t S = k.shape[0], Hkv = k.shape[1], C = ck.shape[0]
    cdef Py_ssize_t nblocks = (T + block - 1) // block
    cdef Py_ssize_t ngroups = (Hkv + hg - 1) // hg
    cdef Py_ssize_t item, g0, g1, b, t0, t1
    # Empty arrays have no element 0 to take the address of: hand over a harmless pointer instead
    # (never dereferenced: S == 0 means no explicit key, C == 0 an empty ring).
    cdef const floating* kp = &q[0, 0, 0]
    cdef const floating* vp = &q[0, 0, 0]
    cdef const int64_t* kpp = &q_pos[0]
    cdef const floating* ckp = &q[0, 0, 0]
    cdef const floating* cvp = &q[0, 0, 0]
    cdef const int64_t* cpp = &q_pos[0]
    if S > 0:
        kp = &k[0, 0, 0]
        vp = &v[0, 0, 0]
        kpp = &k_pos[0]
    if C > 0:
        ckp = &ck[0, 0, 0]
        cvp = &cv[0, 0, 0]
        cpp = &cpos[0]
    for item in prange(ngroups * nblocks, nogil=True, schedule="dynamic", chunksize=1,
                       num_threads=nthreads):
        g0 = (item % ngroups) * hg
        g1 = g0 + hg
        if g1 > Hkv:
            g1 = Hkv
        b = item // ngroups
        t0 = b * block
        t1 = t0 + block
        if t1 > T:
            t1 = T
        _block(&q[0, 0, 0], &q_pos[0], Hq, kp, vp, kpp, S, ckp, cvp, cpp, C,
               ring_lo, ring_hi, Hkv, D, window, scale, scale64, g0, g1, t0, t1,
               &work[threadid(), 0], &iwork[threadid(), 0], &dwork[threadid(), 0], &out[0, 0, 0])


def band_attention(const floating[:, :, ::1] q, const int64_t[::1] q_pos,
                   const floating[:, :, ::1] k, const floating[:, :, ::1] v, const int64_t[::1] k_pos,
                   const floating[:, :, ::1] ck, const floating[:, :, ::1] cv, const int64_t[::1] cpos,
                   int64_t ring_lo, int64_t ring_hi, window, double scale, num_threads):
    """Banded sliding-window attention over explicit keys and/or a rolling buffer read in place.

    q: [T, Hq, D], q_pos: [T] int64 strictly increasing; k, v: [S, Hkv, D] with
    k_pos: [S] int64 strictly increasing (S may be 0); ck, cv: [C, Hkv, D] with
    cpos: [C] int64 (-1 = empty; C may be 0), ring positions ring_lo .. ring_hi
    all below k_pos[0]  ->  [T, Hq, D] in q's dtype.

    Must equal ``swaref.attention._attention_reference`` over the same key set
    (through ``swaref.attention.attention`` and ``swaref.prefill.attend_chunk``;
    tests/test_core.py): float64 within 1e-12 x max|V|, float32 within 1e-5 x max|V|.
    Only ``swaref._backend`` may call it: inputs are trusted.
    """
    cdef Py_ssize_t T = q.shape[0], Hq = q.shape[1], D = q.shape[2]
    cdef Py_ssize_t Hkv = k.shape[1]
    cdef Py_ssize_t G = Hq // Hkv
    cdef Py_ssize_t block = ROWS_PER_ITEM // G if G < ROWS_PER_ITEM else 1
    cdef Py_ssize_t hg = 1
    cdef int64_t w = 0 if window is None else window
    cdef int nthreads = swaref_max_threads() if num_threads is None else num_threads
    if block > T:
        block = T
    nblocks = (T + block - 1) // block
    if nthreads < 1:
        nthreads = 1
    # Items hold one KV head (hg = 1).  Items of several adjacent KV heads read a decode
    # step's slots contiguously, but their key tiles no longer fit in L1: measured 2x slower
    # (docs/performance.md).  _block keeps the general form.
    nitems = nblocks * ((Hkv + hg - 1) // hg)
    if nthreads > nitems:
        nthreads = nitems
    # Waking a thread costs microseconds, and on a busy machine a spinning OpenMP worker takes
    # the caller's core: give each thread at least min_work multiply-adds (bits do not change).
    keys = k.shape[0] + ck.shape[0]
    if w and w < keys:
        keys = w
    work_madds = T * Hq * D * keys
    if nthreads > 1 and work_madds // min_work < nthreads:
        nthreads = max(1, work_madds // min_work)
    rows = block * G * hg
    dtype = np.float32 if floating is float else np.float64
    out = np.empty((T, Hq, D), dtype=dtype)
    work = np.zeros((nthreads, (hg + 1) * TILE * D + TILE * rows + rows * D + 3 * rows), dtype=dtype)
    iwork = np.zeros((nthreads, 2 * rows), dtype=np.intp)
    dwork = np.zeros((nthreads, D), dtype=np.float64)        # the overflow fallback's row (_exact_row)
    cdef floating[:, ::1] work_v = work
    cdef double[:, ::1] dwork_v = dwork
    cdef Py_ssize_t[:, ::1] iwork_v = iwork
    cdef floating[:, :, ::1] out_v = out
    with nogil:
        _band_core(q, q_pos, k, v, k_pos, ck, cv, cpos, ring_lo, ring_hi, w, <floating>scale, scale,
                   block, hg, work_v, iwork_v, dwork_v, out_v, nthreads)
    return out
