"""swaref's compiled kernel: banded attention under spec 1.1's windows, read in place.

Only ``swaref._backend`` calls this module: it validates every input and hands
over C-contiguous float32/float64 arrays, int64 positions and consistent
shapes.  Nothing here re-checks them, except what only the kernel needs: arrays
aligned to their element size (its vector loads assume it).  The debug build,
``SWAREF_DEBUG=1``, turns Cython's bounds checks on to prove the indexing; the
sanitizer build, ``SWAREF_SANITIZE=1``, runs it under ASan and UBSan.

Layers
------
1. ``_block``: the ``noexcept nogil`` core of one (KV heads, query block) work
   item, on raw pointers: two passes over key tiles (``_cursor``, then per
   tile ``_gather_tile`` and ``_row_ranges`` once, and for each KV head of the
   item ``_head_tile``, ``_score_pass``, ``_value_pass``: swaref/_tile.pxi); then
   ``_finish_rows`` (with the overflow fallback ``_exact_row``: swaref/_fallback.pxi).
   Both .pxi files are text of this module, included where the tile and the
   fallback code stood.
   Products, softmax step, tile transpose, exp, the soft cap's tanh and the
   overflow fallback's key step are C in swaref/_kernels.h (Cython cannot keep
   an array of accumulators in registers: measured about 2x slower); the
   micro-kernels have test hooks (swaref/_hooks.pxi: ``scores_kernel``,
   ``softmax_kernel``, ``value_kernel``, ``transpose_kernel``, ``exp_kernel``,
   ``tanh_kernel``; tests/test_kernels.py).
2. ``_band_core``: ``noexcept nogil`` on ``const floating[:, :, ::1]``
   memoryviews (fused float/double); splits the work into items and runs them
   in an OpenMP ``prange`` (in a plain loop at one thread, and when built without OpenMP).
3. ``band_attention``: the thin ``def`` wrapper that allocates the output, takes
   the per-thread scratch (kept between calls: ``_SCRATCH``) and releases the GIL.

Which keys a query sees
-----------------------
The window arrives as the four ints of ``swaref.windows.kernel_params``: key j
is visible to the query at p iff ``lo(p) <= j <= hi(p)`` (its *range*) or
``j < n and j <= p`` (a kept sink token), with ``lo(p) = max(0, p - left,
(p // chunk) * chunk)``, ``hi(p) = p + right`` (left, right = -1: unbounded;
chunk = 0: none; n = sink_tokens).  So a row's visible keys are at most two
runs of consecutive positions (``_runs``): its *sink prefix* ``0 .. n - 1``
when ``n < lo(p)``, and its *range* ``lo(p) .. hi(p)``; where the sink tokens
reach the range (``n >= lo(p)``) the two are one run, the range
``0 .. hi(p)``, and the prefix is empty.  None, W, ``Sliding(W,
sink_tokens=n)``, ``TwoSided`` and ``Chunked`` all have this one shape.  Both
runs' ends never decrease with p, so the keys of a block of consecutive
queries are two runs too.

Where keys come from
--------------------
A key at absolute position j is read where it lies (copied only into the
current tile's scratch, never into a time-ordered buffer of the cache): from a
rolling buffer cache, whose buffers hold n sink slots and then C ring slots
(spec rule 4): a *sink slot* (j < n: slot j) or the *ring* (j >= n: slot
``n + (j - n) mod C``, read only for ``ring_lo <= j <= ring_hi``), used only if
``cache_positions[slot] == j``; and otherwise from the *explicit* keys (``k``,
``v`` with sorted positions ``k_pos``).  Every cache position lies below the
explicit ones.  ``attention`` passes all keys as explicit keys and no cache; a
prefill chunk passes its own keys as explicit keys and the cache; a decode
step passes only the cache.  Each source is walked only inside the positions a
pass needs: a decode step far beyond its sink tokens reads the n sink slots
and its W ring slots, never the positions between (O(n + W), not O(p)).

Order of operations (the whole contract of bitwise chunk invariance)
--------------------------------------------------------------------
For one query row (query position p, query head h, KV head g = h // G) the
arithmetic depends only on p, the window, the row of q and the keys it sees,
never on which other rows, chunk or thread share its work item:

* Keys are visited in two passes, each in increasing absolute position: first
  the row's sink prefix (none with n = 0, so the windows of spec 1.0 run
  exactly as before), then its range.  A pass goes by *tiles*: the aligned
  position ranges ``[m*B, (m+1)*B)`` with B = TILE = 64 (``SWAREF_TILE``).  Inside a tile, key
  position j sits in lane ``j - m*B`` (gaps stay empty), so even the lane of a
  key is fixed.  A tile in which the row sees no key of the pass is skipped; a
  tile holding both prefix and range keys of a row (n = 4, W = 30, p = 40:
  tile 0) is visited twice, once per pass, each time with the row's lanes of
  that pass only.
* Scores: ``a_j = 0; a_j = a_j + q[d] * k_j[d]`` for d = 0, 1, ..., D-1 in
  that order (one chain per lane), then ``s_j = a_j * scale``; all in the
  input precision.  With ``softcap`` c: ``s_j = c * tanh(s_j / c)`` (tanh of
  swaref/_kernels.h, vector only), NaN where s_j was not finite (an
  overflowed chain: the row then takes the fallback below).
* Online softmax (FlashAttention-style), per tile and pass, with the visible
  keys V_t (present, and inside the pass's run of positions for the row):
  ``m_t = max_{j in V_t} s_j`` (exact, order-free); ``m' = max(m, m_t)``;
  ``alpha = exp(m - m')``.  Each row starts at m = -inf, l = 0 (alpha = 0 on
  its first tile), or with ``sinks`` at m = sink_h (cast once to the input
  precision), l = 1: the sink enters every row first, whatever the tiling;
  ``p_j = exp(s_j - m')`` on visible lanes and exactly 0 on the others (a
  select, never a product);
  tile sum: 16 partial sums ``P_i = ((p_i + p_{i+16}) + p_{i+32}) + p_{i+48}``
  (lane order, i = 0..15), reduced by the fixed halving tree
  ``P_i += P_{i+8}`` (i < 8), ``P_i += P_{i+4}`` (i < 4), ``P_i += P_{i+2}``,
  ``P_0 += P_1``; ``l = l * alpha + P_0``;
  values: ``u[e] = 0; u[e] = u[e] + p_j * v_j[e]`` for visible j in increasing
  position, then ``o[e] = o[e] * alpha + u[e]``.
* Finally ``out[e] = o[e] / l``.
* Overflow: if that row holds an Inf or NaN (a score, the scale product or
  the unnormalised value sum passed the largest finite number, or a sink
  beyond float32; inputs inside the window are finite, or the row is NaN
  anyway), the row is recomputed as the reference does
  (``_exact_row``: scores, capped, max with the float64 sink, sum in long
  double, which holds any float64 score; then normalised weights times values,
  keys in increasing position: the sink prefix, then the range).  The test reads only the
  row's own result, so which rows take this path, and their bits, are as
  chunk-invariant as the fast path.
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

Masked keys (outside the window, stale or empty slots, positions between the
sink prefix and the range) never enter a row's
arithmetic: their scores may be computed as by-products of the vectorised
tile product, but they are replaced by -inf or 0 by selects and their values
are never multiplied, so a NaN or Inf there cannot reach the output.

Work split: items are (KV heads, block of ``ROWS_PER_ITEM // G`` queries) in an
OpenMP ``prange``; each gathers a tile's keys once and builds each head's tile
in per-thread scratch, O(TILE x D + heads x rows x (TILE + D)): no T x S array.
Many rows per item (prefill): one KV head per item.  Few rows (T x G <= 16: a
decode step, a few draft tokens): the KV heads split evenly over the threads
(all of them at one thread), tiles outer and heads inner, so that each key
row's block of the item's heads is read together, in position order, first in
address order (``decode_touch_bytes``) and then head by head from the cache
where the hardware prefetchers left it.  A row's chain of operations is the
same in both schedules: which heads share an item never changes a bit.
"""
cimport cython
from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t, uint64_t
from libc.math cimport INFINITY
from libc.string cimport memcpy

import numpy as np

include "_kernels.pxi"          # the declarations of swaref/_kernels.h

ctypedef fused floating:
    float
    double

cdef enum:
    ROWS_PER_ITEM = 256    # query rows (queries x heads of one KV head) per work item


cdef struct Keys:
    # Where the keys come from and which a query sees (module docstring); k, v, ck, cv point at
    # float or double rows of Hkv * D elements, cast back in the fused functions that read them.
    const void* k
    const void* v
    const int64_t* k_pos
    Py_ssize_t S
    const void* ck          # the cache's buffers: ns sink slots, then C ring slots
    const void* cv
    const int64_t* cpos
    Py_ssize_t ns, C
    int64_t ring_lo, ring_hi
    int64_t left, right, chunk, nsink    # the window: swaref.windows.kernel_params
    Py_ssize_t Hkv, D


cdef struct Rows:
    # The rows of one work item: queries t0 .. t0+nq-1, the G query heads of KV head g.
    # Item row r = tq * G + i is query t0 + tq, query head g * G + i (a query's heads adjacent).
    # Spec 1.1's variants, at most one: softcap (0: none) and sinks ([Hq] float64 logits, NULL: none).
    const int64_t* q_pos
    Py_ssize_t Hq, G, g, t0, nq, n, D
    double softcap
    const double* sinks


cdef struct Cursor:
    # The tile gather's progress through one pass's positions a .. b (_cursor), source by source.
    int64_t sp, send        # next sink slot (its position) to look at; the last one
    int64_t rp, rend        # next ring position to look at; the last one
    Py_ssize_t e, eb        # next explicit key; one past the last


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


#: Key and value bytes of a decode tile (its item's slices of the tile's rows) read ahead in
#: address order before its heads are computed (_block; 0: none).  4 MiB: the whole tile for
#: every shape measured (Hkv = 32 at float64: 64 rows of 32 KiB, twice), where a smaller
#: budget (parts of rows) cost up to 1.3x; results never depend on it.
cdef Py_ssize_t touch_bytes = 1 << 22


def decode_touch_bytes(n=None):
    """Get, or set and return the previous, bytes of a decode tile read ahead in address order (0: none)."""
    global touch_bytes
    old = touch_bytes
    if n is not None:
        if int(n) < 0:
            raise ValueError(f"decode_touch_bytes must be >= 0, got {n}")
        touch_bytes = int(n)
    return old


#: Scratch arrays kept between calls, by (dtype, threads, sizes): a decode step calls the kernel
#: once per layer, after the layer's weights have streamed through the caches, and four fresh
#: arrays per call were four cold trips through NumPy's allocator (a list per key: a call pops
#: one set, under the GIL, and puts it back; concurrent calls take different sets).  The
#: kernel never reads scratch it has not written in the same call, or only in lanes its selects
#: discard (module docstring), so stale contents cannot change a bit; ``_poison_scratch`` fills
#: the kept sets with NaN and garbage so that the tests can prove it.  Only sets of at most
#: SCRATCH_MAX_BYTES are kept (a prefill's larger scratch is allocated per call, a cost its work
#: dwarfs), SCRATCH_SETS per key, SCRATCH_KEYS keys: at most 32 MiB, whatever the calls.
_SCRATCH = {}
SCRATCH_KEYS = 16
SCRATCH_SETS = 2
SCRATCH_MAX_BYTES = 1 << 20


cdef tuple _take_scratch(tuple key, dtype, int nthreads, Py_ssize_t wlen, Py_ssize_t rows, Py_ssize_t block,
                         Py_ssize_t D):
    free = _SCRATCH.get(key)
    if free:
        try:
            return free.pop()
        except IndexError:                    # another thread took the last one
            pass
    return (np.empty((nthreads, wlen), dtype=dtype), np.empty((nthreads, 2 * rows), dtype=np.intp),
            np.empty((nthreads, 3 * block), dtype=np.int64), np.empty((nthreads, D), dtype=np.float64))


cdef void _give_scratch(tuple key, tuple bufs):
    free = _SCRATCH.get(key)
    if free is None:
        if sum([b.nbytes for b in bufs]) > SCRATCH_MAX_BYTES:
            return
        if len(_SCRATCH) >= SCRATCH_KEYS:
            _SCRATCH.clear()
        free = _SCRATCH.setdefault(key, [])
    if len(free) < SCRATCH_SETS:
        free.append(bufs)


def _poison_scratch():
    """Test hook: fill every kept scratch set with NaN (floating) and out-of-range values (integer)."""
    for free in _SCRATCH.values():
        for bufs in free:
            bufs[0].fill(np.nan)
            bufs[1].fill(-(1 << 40))
            bufs[2].fill(-(1 << 62))
            bufs[3].fill(np.nan)
    return sum(len(free) for free in _SCRATCH.values())


def openmp_enabled():
    """True when this build was compiled with OpenMP."""
    return bool(SWAREF_HAVE_OPENMP)


def default_threads():
    """Threads a call with num_threads=None uses: OMP_NUM_THREADS or the OpenMP default (1 without OpenMP)."""
    return swaref_max_threads()


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


cdef inline int64_t _lo(int64_t p, const Keys* K) noexcept nogil:
    """lo(p): the first key of the window's range, max(0, p - left, (p // chunk) * chunk)."""
    cdef int64_t lo = 0, c
    if K.left >= 0 and p - K.left > lo:
        lo = p - K.left
    if K.chunk > 0:
        c = (p // K.chunk) * K.chunk
        if c > lo:
            lo = c
    return lo


cdef inline int64_t _hi(int64_t p, const Keys* K) noexcept nogil:
    """hi(p): the last key of the window's range, p + right (POS_INF: unbounded)."""
    if K.right < 0 or K.right > POS_INF - p:
        return POS_INF
    return p + K.right


cdef inline int64_t _runs(int64_t p, const Keys* K, int64_t* a) noexcept nogil:
    """The visible keys of the query at p as two runs of positions: its sink prefix
    0 .. (returned value) and its range a[0] .. hi(p).  The prefix is the kept sink tokens
    0 .. n-1 when they end before lo(p); otherwise sink tokens and range touch and are one run,
    0 .. hi(p): the prefix is empty (-1 returned) and the range starts at 0 (so every key a
    sink token is plain causal attention, bit for bit)."""
    a[0] = _lo(p, K)
    if K.nsink < a[0]:
        return K.nsink - 1
    a[0] = 0
    return -1


cdef inline Py_ssize_t _ring_slot(const Keys* K, int64_t j) noexcept nogil:
    """The cache slot of ring position j >= ns: ns + (j - ns) mod C (the slot rule)."""
    return K.ns + (j - K.ns) % K.C


cdef inline const floating* _qrow(const floating* q, const Rows* R, Py_ssize_t r) noexcept nogil:
    """The q row (and, with out for q, the output row) of item row r."""
    return q + ((R.t0 + r // R.G) * R.Hq + R.g * R.G + r % R.G) * R.D


include "_tile.pxi"          # one key tile: gather, lanes, scores, softmax step, values
include "_fallback.pxi"      # the overflow fallback and the end of a row


# ------------------------------------------------------------- work item

cdef void _block(const floating* q, const int64_t* q_pos, Py_ssize_t Hq, const Keys* K, floating scale,
                 double scale64, double softcap, const double* sinks, Py_ssize_t g0, Py_ssize_t g1,
                 Py_ssize_t t0, Py_ssize_t t1, floating* work, Py_ssize_t* iwork, int64_t* pwork,
                 double* dwork, floating* out) noexcept nogil:
    """One work item: queries t0 .. t1-1, the query heads of KV heads g0 .. g1-1.

    Tiles outer, KV heads inner: each tile's key rows are gathered once, then every head of the
    item takes its slice of them (so a decode step reads each key's Hkv * D block together, in
    position order, instead of one head's slice of every key, rows a page apart).  Each head
    keeps its own rows' state; a row's arithmetic is the same whatever the item's heads.

    work: TILE*D (transposed key tile, lane = position mod TILE) + TILE*D (value tile), then per
    head TILE*n (scores, then weights) + n*D (o) + 3*n (m, l, alpha) elements; iwork: 2*n
    (each row's visible lanes); pwork: 3*nq (each query's lo, hi and last kept sink token);
    dwork: D (the overflow fallback); n = nq * G rows, nq = t1 - t0 queries.
    """
    cdef Rows R
    R.q_pos, R.Hq, R.G, R.g, R.t0, R.nq, R.D = q_pos, Hq, Hq // K.Hkv, g0, t0, t1 - t0, K.D
    R.n = R.nq * R.G
    R.softcap, R.sinks = softcap, sinks
    cdef Py_ssize_t D = K.D, r, d, tq, npass, hh, nh = g1 - g0, j, hend
    # Heads whose slices of a tile's key and value rows are read ahead together (touch_bytes).
    cdef Py_ssize_t tb = touch_bytes
    cdef Py_ssize_t hsub = tb // (2 * TILE * D * sizeof(floating)) or 1
    cdef Py_ssize_t esize = sizeof(floating)
    cdef Py_ssize_t hs = TILE * R.n + R.n * D + 3 * R.n     # one head's state
    cdef floating* kt = work
    cdef floating* vt = kt + TILE * D
    cdef floating* hw                                    # the current head's state: sc, o, m, l, al
    cdef floating* sc
    cdef floating* o
    cdef floating* m
    cdef floating* l
    cdef floating* al
    cdef Py_ssize_t* rja = iwork
    cdef Py_ssize_t* rjb = iwork + R.n
    cdef int64_t* lo = pwork                             # per query: its range lo(p) .. hi(p)
    cdef int64_t* hi = pwork + R.nq
    cdef int64_t* se = pwork + 2 * R.nq                  # and its last kept sink token before lo(p)
    cdef const int64_t* plo
    cdef const int64_t* phi
    # Many rows reuse a tile's values: copy them to stride D (rows Hkv*D apart fight over the
    # same L1 sets).  A decode step's few rows read them once: in place.
    cdef bint copy_v = R.n > 16
    cdef const floating* vrows[TILE]
    cdef const void* kbase[TILE]
    cdef const void* vbase[TILE]
    cdef char present[TILE]
    cdef uint64_t pbits = 0                              # present as a lane mask
    cdef int64_t tstart, pa, pb
    cdef Cursor c
    for hh in range(nh):
        hw = work + 2 * TILE * D + hh * hs
        m, l = hw + TILE * R.n + R.n * D, hw + TILE * R.n + R.n * D + R.n
        for r in range(R.n):
            # A sink starts its row's chain, whatever the tiling: m = sink (cast to the input
            # precision once), l = exp(sink - m) = 1, no value.
            m[r] = -INFINITY if sinks == NULL else <floating>sinks[(g0 + hh) * R.G + r % R.G]
            l[r] = 0 if sinks == NULL else 1
            for d in range(D):
                hw[TILE * R.n + r * D + d] = 0
    for tq in range(R.nq):
        se[tq] = _runs(q_pos[t0 + tq], K, lo + tq)
        hi[tq] = _hi(q_pos[t0 + tq], K)
    # Two passes over the keys, each in increasing position: the sink prefixes (positions
    # 0 .. se), then the ranges (lo .. hi).  lo, hi and se never decrease with the query
    # position, so a pass's keys for the whole item are pa .. pb below.
    for npass in range(2):
        if npass == 0:
            if se[R.nq - 1] < 0:
                continue                                 # no row keeps a sink token besides its range
            pa, pb, plo, phi = 0, se[R.nq - 1], NULL, se
        else:
            pa, pb, plo, phi = lo[0], hi[R.nq - 1], lo, hi
        _cursor(K, &c, pa, pb)
        while True:
            tstart = _gather_tile(K, &c, esize, kbase, vbase, present, &pbits)
            if tstart < 0:
                break
            _row_ranges(&R, plo, phi, tstart, pbits, rja, rjb)
            for hh in range(nh):
                if not copy_v and tb and hh % hsub == 0:
                    # Read the next heads' slices of the tile's rows in address order first: a
                    # sequential stream the hardware prefetchers follow (about 1.4x the rate of
                    # reading each head's slice of 64 rows a page apart), into L2 for the heads'
                    # transposes and value passes just below.
                    hend = hh + hsub if hh + hsub < nh else nh
                    for j in range(TILE):
                        if present[j]:
                            swaref_touch(<const char*>kbase[j] + (g0 + hh) * D * esize, (hend - hh) * D * esize)
                            swaref_touch(<const char*>vbase[j] + (g0 + hh) * D * esize, (hend - hh) * D * esize)
                R.g = g0 + hh
                hw = work + 2 * TILE * D + hh * hs
                sc, o = hw, hw + TILE * R.n
                m, l, al = o + R.n * D, o + R.n * D + R.n, o + R.n * D + 2 * R.n
                _head_tile(K, R.g, copy_v, kbase, vbase, present, kt, vt, vrows)
                _score_pass(q, &R, kt, scale, sc, rja, rjb)
                _value_pass(&R, sc, o, m, l, al, vrows, present, pbits, rja, rjb)
    for hh in range(nh):
        R.g = g0 + hh
        hw = work + 2 * TILE * D + hh * hs
        _finish_rows(q, &R, K, hw + TILE * R.n, hw + TILE * R.n + R.n * D + R.n, scale64, dwork, out)


cdef inline void _item(const floating[:, :, ::1] q, const int64_t[::1] q_pos, const Keys* K,
                       floating scale, double scale64, double softcap, const double* sinks,
                       Py_ssize_t block, Py_ssize_t hpi, Py_ssize_t ngroups, Py_ssize_t item,
                       floating* work, Py_ssize_t* iwork, int64_t* pwork, double* dwork,
                       floating[:, :, ::1] out) noexcept nogil:
    """Work item ``item`` (query block item // ngroups, KV heads from (item % ngroups) * hpi) on one
    thread's scratch."""
    cdef Py_ssize_t T = q.shape[0]
    cdef Py_ssize_t t0 = (item // ngroups) * block, g0 = (item % ngroups) * hpi
    cdef Py_ssize_t t1 = t0 + block, g1 = g0 + hpi
    if t1 > T:
        t1 = T
    if g1 > K.Hkv:
        g1 = K.Hkv
    _block(&q[0, 0, 0], &q_pos[0], q.shape[1], K, scale, scale64, softcap, sinks, g0, g1, t0, t1,
           work, iwork, pwork, dwork, &out[0, 0, 0])


cdef void _band_core(const floating[:, :, ::1] q, const int64_t[::1] q_pos, const Keys* K,
                     floating scale, double scale64, double softcap, const double* sinks,
                     Py_ssize_t block, Py_ssize_t hpi, floating[:, ::1] work, Py_ssize_t[:, ::1] iwork,
                     int64_t[:, ::1] pwork, double[:, ::1] dwork, floating[:, :, ::1] out,
                     int nthreads) noexcept nogil:
    """All (KV head group, query block) items, in parallel; each row's bits do not depend on the
    split.  hpi: KV heads per item."""
    cdef Py_ssize_t nblocks = (q.shape[0] + block - 1) // block
    cdef Py_ssize_t ngroups = (K.Hkv + hpi - 1) // hpi
    cdef Py_ssize_t item
    if nthreads <= 1:
        # One thread: the same items in order, without entering an OpenMP region.  A decode step
        # calls this once per layer, after the layer's weights have streamed through the caches,
        # and a cold parallel region (libgomp's team start and its data) cost ~15-20 us there.
        for item in range(ngroups * nblocks):
            _item(q, q_pos, K, scale, scale64, softcap, sinks, block, hpi, ngroups, item,
                  &work[0, 0], &iwork[0, 0], &pwork[0, 0], &dwork[0, 0], out)
        return
    for item in prange(ngroups * nblocks, nogil=True, schedule="dynamic", chunksize=1, num_threads=nthreads):
        _item(q, q_pos, K, scale, scale64, softcap, sinks, block, hpi, ngroups, item,
              &work[threadid(), 0], &iwork[threadid(), 0], &pwork[threadid(), 0], &dwork[threadid(), 0], out)


cdef const void* _address(const void* p, Py_ssize_t n, Py_ssize_t align, name) except? NULL:
    """p, checked to be aligned to align bytes (the vector loads assume it); NULL when n == 0."""
    if n == 0:
        return NULL
    if <size_t>p % <size_t>align:
        raise ValueError(f"swaref._core: {name} is not aligned to its {align}-byte elements; "
                         f"pass an aligned copy (swaref._backend makes one)")
    return p


def band_attention(const floating[:, :, ::1] q, const int64_t[::1] q_pos,
                   const floating[:, :, ::1] k, const floating[:, :, ::1] v, const int64_t[::1] k_pos,
                   const floating[:, :, ::1] ck, const floating[:, :, ::1] cv, const int64_t[::1] cpos,
                   int64_t ring_lo, int64_t ring_hi, int64_t left, int64_t right, int64_t chunk,
                   int64_t sink_tokens, double scale, num_threads, *, softcap=None, sinks=None):
    """Banded attention under a window of the spec 1.1 family, over explicit keys and/or a
    rolling buffer cache read in place.

    q: [T, Hq, D], q_pos: [T] int64 strictly increasing; k, v: [S, Hkv, D] with
    k_pos: [S] int64 strictly increasing (S may be 0); ck, cv: [n + C, Hkv, D] with
    cpos: [n + C] int64 (-1 = empty; n + C may be 0: no cache), n = sink_tokens sink slots
    (slot p holds position p < n) then C ring slots (position p >= n in slot n + (p - n) mod C),
    ring positions ring_lo .. ring_hi; every cache position below k_pos[0]  ->  [T, Hq, D] in
    q's dtype.  The window: left, right, chunk, sink_tokens of ``swaref.windows.kernel_params``
    (key j is visible to query p iff j < sink_tokens and j <= p, or lo(p) <= j <= hi(p) with
    lo(p) = max(0, p - left, (p // chunk) * chunk), hi(p) = p + right; left = -1, right = -1:
    unbounded, chunk = 0: none).  softcap: None or a float > 0; sinks: None or [Hq] float64
    logits (not both: the public API refuses the pair).

    Equals: swaref.attention (explicit keys, empty ring) and swaref.attend_chunk,
    swaref.prefill, swaref.decode_step (the cache as the ring) with
    backend="reference", float64 within 1e-12 x max|V|, float32 within 1e-5 x max|V|
    (tests/test_kernels.py runs each function named here; tests/test_core.py the rest).

    Only ``swaref._backend`` may call it: inputs are trusted, except their alignment and
    what would make the kernel index outside its arrays (checked here, ValueError).
    """
    cdef Py_ssize_t T = q.shape[0], Hq = q.shape[1], D = q.shape[2]
    cdef Py_ssize_t G = Hq // k.shape[1]
    cdef Py_ssize_t block = ROWS_PER_ITEM // G if G < ROWS_PER_ITEM else 1
    cdef int nthreads = swaref_max_threads() if num_threads is None else num_threads
    cdef Py_ssize_t esize = sizeof(floating)
    cdef Py_ssize_t nslots = ck.shape[0]
    cdef Keys K
    cdef const double[::1] sinks_v = None if sinks is None else np.ascontiguousarray(sinks, dtype=np.float64)
    cdef const double* sinks_p = NULL
    cdef double cap = 0.0 if softcap is None else softcap
    if sinks is not None:
        if sinks_v.shape[0] != Hq:
            raise ValueError(f"swaref._core: sinks must have Hq = {Hq} entries, got {sinks_v.shape[0]}")
        sinks_p = &sinks_v[0]
    if left < -1 or right < -1 or chunk < 0 or sink_tokens < 0:
        raise ValueError(f"swaref._core: the window (left={left}, right={right}, chunk={chunk}, "
                         f"sink_tokens={sink_tokens}) is not one of swaref.windows.kernel_params")
    if nslots and (nslots <= sink_tokens or cv.shape[0] != nslots or cpos.shape[0] != nslots):
        raise ValueError(f"swaref._core: a cache needs sink_tokens = {sink_tokens} sink slots and at least one "
                         f"ring slot in k, v and positions, got {nslots}, {cv.shape[0]}, {cpos.shape[0]} rows")
    K.S, K.Hkv, K.D = k.shape[0], k.shape[1], D
    # No cache: no sink slot either (then sink_tokens only says which keys are visible).
    K.ns = sink_tokens if nslots else 0
    K.C = nslots - K.ns
    # The ring holds positions >= ns only, and none without ring slots: the slot arithmetic
    # then never sees a negative or zero divisor, whatever the caller passed.
    K.ring_lo, K.ring_hi = (ring_lo if ring_lo > K.ns else K.ns), (ring_hi if K.C else -1)
    K.left, K.right, K.chunk, K.nsink = left, right, chunk, sink_tokens
    # Empty arrays have no element 0: NULL, never dereferenced (S == 0: no explicit key,
    # nslots == 0: no cache).
    _address(&q[0, 0, 0], T * Hq * D, esize, "q")
    _address(&q_pos[0], T, 8, "q_pos")
    K.k = _address(&k[0, 0, 0] if K.S else NULL, K.S * K.Hkv * D, esize, "k")
    K.v = _address(&v[0, 0, 0] if K.S else NULL, K.S * K.Hkv * D, esize, "v")
    K.k_pos = <const int64_t*>_address(&k_pos[0] if K.S else NULL, K.S, 8, "k_pos")
    K.ck = _address(&ck[0, 0, 0] if nslots else NULL, nslots * K.Hkv * D, esize, "cache k")
    K.cv = _address(&cv[0, 0, 0] if nslots else NULL, nslots * K.Hkv * D, esize, "cache v")
    K.cpos = <const int64_t*>_address(&cpos[0] if nslots else NULL, nslots, 8, "cache positions")
    if block > T:
        block = T
    nitems = K.Hkv * ((T + block - 1) // block)
    nthreads = max(1, min(nthreads, nitems))
    # Waking a thread costs microseconds, and on a busy machine a spinning OpenMP worker takes
    # the caller's core: give each thread at least min_work multiply-adds (bits do not change).
    keys = K.S + nslots
    width = None                                # keys one query sees at most, where bounded
    if left >= 0 and right >= 0:
        width = int(left) + int(right) + 1      # Python ints: no int64 overflow
    if chunk > 0 and (width is None or chunk < width):
        width = chunk
    if width is not None and width + sink_tokens < keys:
        keys = width + sink_tokens
    work_madds = T * Hq * D * keys
    if nthreads > 1 and work_madds // min_work < nthreads:
        nthreads = max(1, work_madds // min_work)
    rows = block * G
    # Few rows per item (a decode step: rows = T * G <= 16, values read in place): an item
    # takes a range of KV heads, one per thread, so that key rows are read whole, in position
    # order (_block).  Many rows: one KV head per item.
    cdef Py_ssize_t hpi = 1
    if rows <= 16:
        hpi = (K.Hkv + nthreads - 1) // nthreads
    dtype = np.float32 if floating is float else np.float64
    out = np.empty((T, Hq, D), dtype=dtype)
    # Per thread: the item's work (key and value tiles, then each head's scores, o, m, l, alpha),
    # each row's visible lanes, each query's lo, hi and last sink token, the overflow fallback's row.
    wlen = 2 * TILE * D + hpi * (TILE * rows + rows * D + 3 * rows)
    key = (esize, nthreads, wlen, rows, block, D)
    bufs = _take_scratch(key, dtype, nthreads, wlen, rows, block, D)
    cdef floating[:, ::1] work_v = bufs[0]
    cdef Py_ssize_t[:, ::1] iwork_v = bufs[1]
    cdef int64_t[:, ::1] pwork_v = bufs[2]
    cdef double[:, ::1] dwork_v = bufs[3]
    cdef floating[:, :, ::1] out_v = out
    with nogil:
        _band_core(q, q_pos, &K, <floating>scale, scale, cap, sinks_p, block, hpi, work_v, iwork_v, pwork_v, dwork_v,
                   out_v, nthreads)
    _give_scratch(key, bufs)
    return out


include "_hooks.pxi"
