"""swaref's compiled linear layers: y = x W^T (+ b), W float32 or bfloat16, float32 accumulation.

A decode step multiplies a few token rows by every weight matrix once: it is
memory-bound, and what counts is streaming W at the DRAM read rate.
``linear`` does that for T <= ``SMALL_T`` tokens: OpenMP threads each take a
contiguous range of output rows, and each thread runs the micro-kernel of
swaref/_linear.h over its rows one after the other (one sequential stream,
prefetched ahead), every token group's accumulators in registers; a row serves
every group of tokens while it is in L1, so W leaves memory once whatever T.  For more
tokens the product is compute-bound.  Where the AVX-512 ISA is in use, ``linear``
runs swaref's own GEMM (``gemm_kernel``): panels of 32 rows of W packed (bfloat16
widened exactly) and tiles of 12 tokens, each output one FMA chain over ``in`` in
order, at the rate of OpenBLAS's own AVX-512 kernels whatever BLAS NumPy loaded
(docs/performance.md, "Prefill's projections: swaref's own GEMM").  On the other
ISAs it is BLAS: float32 W goes to NumPy's ``x @ W.T``; bfloat16 W is widened
(exactly) one block of rows at a time into a float32 scratch of about 1 MiB and
multiplied by NumPy there, so no full float32 copy of W is ever made.

The module is compiled for the x86-64 baseline; the AVX2+FMA and AVX-512
micro-kernels are function-target versions chosen at import from the CPU's
features (``isa()``; ``set_isa`` forces a lower one, for tests).  Results are
bitwise fixed within one ISA and independent of T <= SMALL_T, of the thread
count and of which rows a thread computes (swaref/_linear.h states the order);
across ISAs they differ in the last bits.  The GEMM's results are likewise fixed
whatever T and the thread count.

bfloat16 weights are held as their raw bits, a uint16 array.
"""
cimport cython
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdint cimport uint16_t

import numpy as np
cimport numpy as cnp

cnp.import_array()

from .errors import SwarefError, SwarefTypeError

cdef extern from "_linear.h":
    ctypedef Py_ssize_t swl_idx
    ctypedef void (*swl_rows_f32_t)(const float*, swl_idx, swl_idx, const float*, const float*, float*, swl_idx,
                                    swl_idx, swl_idx) noexcept nogil
    ctypedef void (*swl_rows_bf16_t)(const float*, swl_idx, swl_idx, const uint16_t*, const float*, float*,
                                     swl_idx, swl_idx, swl_idx) noexcept nogil
    int swl_best_isa() noexcept nogil
    swl_rows_f32_t swl_f32_for(int isa) noexcept nogil
    swl_rows_bf16_t swl_bf16_for(int isa) noexcept nogil
    ctypedef void (*swl_gemm_t)(const float*, swl_idx, swl_idx, const void*, int, const float*, float*, swl_idx,
                                swl_idx, swl_idx, float*) noexcept nogil
    swl_gemm_t swl_gemm_for(int isa) noexcept nogil
    const int SWG_NR
    void swl_widen(const uint16_t* src, float* dst, swl_idx n) noexcept nogil
    int swl_max_threads() noexcept nogil
    const int SWL_R

#: ISA names by level (swaref/_linear.h).
ISAS = ("baseline", "avx2", "avx512")
#: Token rows up to which ``linear`` streams W through its own kernel (above: BLAS).
SMALL_T = 16
#: Multiply-adds per thread below which fewer threads run (a thread's start costs a few microseconds).
cdef Py_ssize_t min_work = 1 << 16
#: float32 elements of W widened per NumPy product on the large-T bfloat16 path (1 MiB).
cdef Py_ssize_t widen_block = 1 << 18

cdef int best_isa = swl_best_isa()
cdef int cur_isa = best_isa
cdef swl_rows_f32_t rows_f32 = swl_f32_for(best_isa)
cdef swl_rows_bf16_t rows_bf16 = swl_bf16_for(best_isa)
cdef swl_gemm_t gemm = swl_gemm_for(best_isa)


def isa():
    """The micro-kernels in use: "baseline", "avx2" or "avx512"."""
    return ISAS[cur_isa]


def supported_isas():
    """The ISAs this CPU runs, lowest first."""
    return ISAS[: best_isa + 1]


def set_isa(name=None):
    """Use ISA ``name`` (one this CPU runs; None: the best) -> the previous one's name."""
    global cur_isa, rows_f32, rows_bf16, gemm
    old = ISAS[cur_isa]
    level = best_isa if name is None else (ISAS.index(name) if name in ISAS else -1)
    if level < 0 or level > best_isa:
        raise SwarefError("argument", f"isa must be one of {list(supported_isas())} on this CPU, got {name!r}")
    cur_isa, rows_f32, rows_bf16, gemm = level, swl_f32_for(level), swl_bf16_for(level), swl_gemm_for(level)
    return old


def widen_block_elements(n=None):
    """Get, or set and return the previous, float32 elements of W widened per product on the
    large-T bfloat16 path (tests lower it to cross block boundaries with small matrices)."""
    global widen_block
    old = widen_block
    if n is not None:
        if int(n) < 1:
            raise SwarefError("argument", f"widen_block_elements must be >= 1, got {n}")
        widen_block = int(n)
    return old


def min_work_per_thread(n=None):
    """Get, or set and return the previous, multiply-adds per thread below which fewer threads run."""
    global min_work
    old = min_work
    if n is not None:
        if int(n) < 1:
            raise SwarefError("argument", f"min_work_per_thread must be >= 1, got {n}")
        min_work = int(n)
    return old


cdef inline bint _plain(x, int typenum, int ndim):
    """x is already what _check would return it as: an aligned C-contiguous ndarray of that type."""
    return (type(x) is np.ndarray and cnp.PyArray_TYPE(<cnp.ndarray>x) == typenum
            and cnp.PyArray_NDIM(<cnp.ndarray>x) == ndim
            and cnp.PyArray_CHKFLAGS(<cnp.ndarray>x, cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED))


cdef tuple _check(x, w, b, num_threads):
    """The arguments, checked before anything is written -> (x, w, b, threads).

    The common case (contiguous float32 x, float32 or bfloat16 w, no bias or a float32 one,
    threads None or a positive int) is decided first in a few C comparisons: a decode step
    makes ~85 calls."""
    if (_plain(x, cnp.NPY_FLOAT32, 2) and (_plain(w, cnp.NPY_FLOAT32, 2) or _plain(w, cnp.NPY_UINT16, 2))
            and w.shape[1] == x.shape[1]
            and (b is None or (_plain(b, cnp.NPY_FLOAT32, 1) and b.shape[0] == w.shape[0]))
            and (num_threads is None or (type(num_threads) is int and num_threads >= 1))):
        return x, w, b, swl_max_threads() if num_threads is None else min(num_threads, 1 << 16)
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 2:
        got = f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise SwarefTypeError("dtype", f"x must be a float32 array [T, in], got {got}")
    if not isinstance(w, np.ndarray) or w.dtype not in (np.float32, np.uint16) or w.ndim != 2:
        got = f"{w.dtype} array of shape {w.shape}" if isinstance(w, np.ndarray) else type(w).__name__
        raise SwarefTypeError("dtype", f"w must be a float32 or bfloat16 (uint16 bits) array [out, in], got {got}")
    if w.shape[1] != x.shape[1]:
        raise SwarefError("shape", f"w must have shape [out, {x.shape[1]}] (x's in), got {w.shape}")
    if b is not None:
        if not isinstance(b, np.ndarray) or b.dtype != np.float32 or b.shape != (w.shape[0],):
            got = f"{b.dtype} array of shape {b.shape}" if isinstance(b, np.ndarray) else type(b).__name__
            raise SwarefTypeError("dtype", f"b must be None or a float32 array of shape ({w.shape[0]},), got {got}")
        b = np.ascontiguousarray(b)
    if num_threads is None:
        nt = swl_max_threads()
    elif isinstance(num_threads, (int, np.integer)) and not isinstance(num_threads, bool) and num_threads >= 1:
        nt = min(int(num_threads), 1 << 16)       # more threads than that are idle anyway
    else:
        raise SwarefError("argument", f"num_threads must be None or an int >= 1, got {num_threads!r}")
    return np.ascontiguousarray(x), np.ascontiguousarray(w), b, nt


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _rows(const float* x, Py_ssize_t T, Py_ssize_t n, const void* w, bint bf16, const float* b, float* y,
                Py_ssize_t out, int nt) noexcept nogil:
    """y[T, out] = x W^T (+ b): thread c of nt takes rows [c*out/nt, (c+1)*out/nt), rounded to blocks of SWL_R."""
    cdef Py_ssize_t c, o0, o1, nblk = (out + SWL_R - 1) // SWL_R
    cdef swl_rows_f32_t f = rows_f32
    cdef swl_rows_bf16_t g = rows_bf16
    if nt <= 1:
        if bf16:
            g(x, T, n, <const uint16_t*>w, b, y, out, 0, out)
        else:
            f(x, T, n, <const float*>w, b, y, out, 0, out)
        return
    for c in prange(nt, nogil=True, num_threads=nt, schedule="static", chunksize=1):
        o0 = min(out, (c * nblk // nt) * SWL_R)
        o1 = min(out, ((c + 1) * nblk // nt) * SWL_R)
        if o0 < o1:
            if bf16:
                g(x, T, n, <const uint16_t*>w, b, y, out, o0, o1)
            else:
                f(x, T, n, <const float*>w, b, y, out, o0, o1)


cdef inline int _threads(Py_ssize_t madds, int nt) noexcept:
    if nt > 1 and madds // min_work < nt:
        nt = max(1, madds // min_work)
    return nt


@cython.boundscheck(False)
@cython.wraparound(False)
cdef object _product(cnp.ndarray x, cnp.ndarray w, b, int nt, bint many):
    """x W^T (+ b) on checked arguments (_check): x [T, in] -> [T, out] float32, by the streaming
    kernel, or with ``many`` by the many-token GEMM (AVX-512; ``gemm`` not NULL)."""
    cdef Py_ssize_t T = x.shape[0], n = x.shape[1], out = w.shape[0], c, p0, p1, panels
    cdef cnp.ndarray y = np.empty((T, out), dtype=np.float32)
    if T == 0 or out == 0:
        return y
    if n == 0:
        y[...] = 0 if b is None else b
        return y
    cdef const float* bp = NULL if b is None else <const float*>cnp.PyArray_DATA(<cnp.ndarray>b)
    cdef bint bf16 = cnp.PyArray_TYPE(w) == cnp.NPY_UINT16
    cdef const float* xp = <const float*>cnp.PyArray_DATA(x)
    cdef const void* wptr = cnp.PyArray_DATA(w)
    cdef float* yp = <float*>cnp.PyArray_DATA(y)
    if not many:
        nt = _threads(T * n * out, nt)
        with nogil:
            _rows(xp, T, n, wptr, bf16, bp, yp, out, nt)
        return y
    panels = (out + SWG_NR - 1) // SWG_NR
    nt = _threads(T * n * out, <int>min(nt, panels))
    # One packed panel (SWG_NR x n float32) per thread, 64-byte aligned for the kernel's aligned loads.
    scratch = np.empty(nt * SWG_NR * n + 16, dtype=np.float32)
    cdef float* wp = <float*>cnp.PyArray_DATA(scratch)
    wp += ((64 - <size_t>wp % 64) % 64) // 4
    cdef swl_gemm_t g = gemm
    with nogil:
        if nt <= 1:
            g(xp, T, n, wptr, bf16, bp, yp, out, 0, out, wp)
        else:
            for c in prange(nt, num_threads=nt, schedule="static", chunksize=1):
                p0 = c * panels // nt
                p1 = (c + 1) * panels // nt
                if p0 < p1:
                    g(xp, T, n, wptr, bf16, bp, yp, out, p0 * SWG_NR, min(out, p1 * SWG_NR), wp + c * SWG_NR * n)
    return y


cdef inline object _rows_checked(cnp.ndarray x, cnp.ndarray w, b, int nt):
    return _product(x, w, b, nt, False)


def gemm_kernel(x, w, b=None, num_threads=None):
    """The many-token kernel at any T (``linear`` uses it for T > SMALL_T where the AVX-512 ISA is in
    use): x [T, in] -> [T, out] float32, each output one FMA chain over ``in`` in order, then + b."""
    if gemm == NULL:
        raise SwarefError("backend", f"the many-token kernel needs the avx512 ISA; this one runs {isa()!r}")
    x, w, b, nt = _check(x, w, b, num_threads)
    return _product(x, w, b, nt, True)


def many_token_path():
    """What multiplies more than SMALL_T token rows with the ISA in use: "swaref's GEMM" (AVX-512) or
    "NumPy's BLAS"."""
    return "swaref's GEMM" if gemm != NULL else "NumPy's BLAS"


def rows_kernel(x, w, b=None, num_threads=None):
    """The streaming kernel at any T (``linear`` uses it for T <= SMALL_T): x [T, in] -> [T, out] float32."""
    x, w, b, nt = _check(x, w, b, num_threads)
    return _rows_checked(x, w, b, nt)


@cython.boundscheck(False)
@cython.wraparound(False)
def widen(w):
    """bfloat16 bits (uint16, any shape) -> float32, exactly (bits << 16); the compiled twin of
    ``swaref.models.bf16.widen``."""
    if not isinstance(w, np.ndarray) or w.dtype != np.uint16:
        raise SwarefTypeError("dtype", f"w must be a uint16 array of bfloat16 bits, got "
                                       f"{w.dtype if isinstance(w, np.ndarray) else type(w).__name__}")
    src = np.ascontiguousarray(w)
    out = np.empty(src.shape, dtype=np.float32)
    cdef const uint16_t[::1] s = src.reshape(-1)
    cdef float[::1] d = out.reshape(-1)
    if s.shape[0]:
        with nogil:
            swl_widen(&s[0], &d[0], s.shape[0])
    return out


@cython.boundscheck(False)
@cython.wraparound(False)
def linear(x, w, b=None, num_threads=None):
    """x [T, in] float32, w [out, in] float32 or bfloat16 bits (uint16), b [out] float32 or None
    -> x W^T (+ b), [T, out] float32 (float32 accumulation)."""
    x, w, b, nt = _check(x, w, b, num_threads)
    if x.shape[0] <= SMALL_T or x.shape[1] == 0:
        return _rows_checked(x, w, b, nt)
    if gemm != NULL:
        return _product(x, w, b, nt, True)
    if w.dtype == np.float32:
        y = x @ w.T
        return y if b is None else y + b
    cdef Py_ssize_t out = w.shape[0], n = w.shape[1], o, step = max(1, widen_block // max(n, 1))
    y = np.empty((x.shape[0], out), dtype=np.float32)
    scratch = np.empty((min(step, out), n), dtype=np.float32)
    cdef const uint16_t[:, ::1] wh = w
    cdef float[:, ::1] sv = scratch
    cdef Py_ssize_t m
    for o in range(0, out, step):
        m = min(step, out - o)
        with nogil:
            swl_widen(&wh[o, 0], &sv[0, 0], m * n)
        np.matmul(x, scratch[:m].T, out=y[:, o:o + m])
    return y if b is None else y + b


cdef inline float* _fp(cnp.ndarray a) noexcept:
    return <float*>cnp.PyArray_DATA(a)


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef void _rms(const float* x, Py_ssize_t T, Py_ssize_t d, const float* w, double eps, float* y) noexcept nogil:
    """y[t] = (x[t] * r) * w with r = float32(1 / sqrt(mean(x[t]^2) + eps)), the squares summed in
    float64 in index order; x, y: [T, d], d >= 1 (may be the same array)."""
    cdef Py_ssize_t t, i
    cdef double ss
    cdef float r
    for t in range(T):
        ss = 0.0
        for i in range(d):
            ss = ss + <double>x[t * d + i] * <double>x[t * d + i]
        r = <float>(1.0 / sqrt(ss / d + eps))
        for i in range(d):
            y[t * d + i] = (x[t * d + i] * r) * w[i]


def rms_norm(x, w, double eps):
    """x [T, d] float32, w [d] float32 -> (x * r) * w with r = float32(1 / sqrt(mean(x^2) + eps)), the
    mean of the squares accumulated in float64 in index order.

    The compiled twin of ``swaref.models.layers.rms_norm`` (whose NumPy mean sums pairwise: r can
    differ from it only when the float64 value lies within ~1e-16 of a float32 rounding boundary)."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 2:
        raise SwarefTypeError("dtype", f"x must be a float32 array [T, d], got "
                                       f"{x.dtype if isinstance(x, np.ndarray) else type(x).__name__}")
    if not isinstance(w, np.ndarray) or w.dtype != np.float32 or w.shape != (x.shape[1],):
        raise SwarefTypeError("dtype", f"w must be a float32 array of shape ({x.shape[1]},)")
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w)
    y = np.empty_like(x)
    cdef const float* xp = _fp(x)
    cdef const float* wp = _fp(w)
    cdef float* yp = _fp(y)
    cdef Py_ssize_t T = x.shape[0], d = x.shape[1]
    if d:
        with nogil:
            _rms(xp, T, d, wp, eps, yp)
    return y


# ----------------------------------------------------------------- a decode step's layer, fused
# The per-token work of an RMSNorm decoder layer with a gated MLP (Mistral, Llama, Qwen2/3, Gemma,
# OLMo, ...) between its matrix products was ~20 NumPy calls per layer, each a few microseconds:
# at one token, 10-15% of a bfloat16 step.  These three calls do it in compiled code, with the
# operations of swaref.models.layers in the same order (the same bits): rms_norm as above (every
# norm of the layer: before attention, q/k, after attention, before and after the MLP), the
# streaming kernel's rows, RoPE as a product, a product and a sum each rounded in turn (built with
# -ffp-contract=off, so no FMA joins them), residual adds as float32 additions.

cdef str _got(a):
    """What an argument was, for a refusal: "float32 of shape (2, 40)", or its type's name."""
    return f"{a.dtype} of shape {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__


cdef _check_decode_rows(x, name):
    if x.shape[0] > SMALL_T:
        raise SwarefError("shape", f"{name} must have at most SMALL_T = {SMALL_T} token rows (above, "
                                   f"linear multiplies through {many_token_path()}), got {x.shape[0]}")


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _rope(const float* x, float* y, Py_ssize_t T, Py_ssize_t H, Py_ssize_t D, Py_ssize_t R,
                bint interleaved, const float* c, const float* s) noexcept nogil:
    """y[t, h, j] = x[t, h, j] c[t, j] + x[t, h, p(j)] s[t, j] for j < R, p(j) = j ^ 1 (interleaved)
    or (j + R/2) mod R (half); y[t, h, j] = x[t, h, j] for R <= j < D."""
    cdef Py_ssize_t t, h, j, p, half = R // 2
    cdef const float* xr
    cdef float* yr
    cdef float a, b
    for t in range(T):
        for h in range(H):
            xr = x + (t * H + h) * D
            yr = y + (t * H + h) * D
            for j in range(R):
                if interleaved:
                    p = j ^ 1
                elif j < half:
                    p = j + half
                else:
                    p = j - half
                a = xr[j] * c[t * R + j]
                b = xr[p] * s[t * R + j]
                yr[j] = a + b
            for j in range(R, D):
                yr[j] = xr[j]


cdef cnp.ndarray _rotated(cnp.ndarray x, Py_ssize_t T, Py_ssize_t H, Py_ssize_t D, Py_ssize_t R, bint interleaved,
                          cnp.ndarray c, cnp.ndarray s):
    cdef cnp.ndarray y = np.empty((T, H, D), dtype=np.float32)
    cdef const float* xp = _fp(x)
    cdef float* yp = _fp(y)
    cdef const float* cp = _fp(c)
    cdef const float* sp = _fp(s)
    with nogil:
        _rope(xp, yp, T, H, D, R, interleaved, cp, sp)
    return y


def rope(x, cos, sin_signed, bint interleaved):
    """x [T, H, D] float32, cos, sin_signed: [T, ...] float32 tables of R values per token (R even,
    R <= D), the layout of ``swaref.models.rope.Rotation``  ->  rotated [T, H, D] float32.

    The compiled twin of ``swaref.models.rope.rotate`` (xp * cos + swap(xp) * sin_signed on the
    first R dims, the rest unchanged): the same bits."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 3:
        raise SwarefTypeError("dtype", f"x must be a float32 array [T, H, D], got "
                                       f"{x.dtype if isinstance(x, np.ndarray) else type(x).__name__}")
    x = np.ascontiguousarray(x)
    cdef Py_ssize_t T = x.shape[0], H = x.shape[1], D = x.shape[2]
    c, s, R = _tables(cos, sin_signed, T, D)
    return _rotated(x, T, H, D, R, interleaved, c, s)


cdef tuple _tables(cos, sin_signed, Py_ssize_t T, Py_ssize_t D):
    """RoPE's tables checked -> (cos, sin_signed as C-contiguous float32 [T * R], R)."""
    for a, name in ((cos, "cos"), (sin_signed, "sin_signed")):
        if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.ndim < 1 or a.shape[0] != T:
            raise SwarefTypeError("dtype", f"{name} must be a float32 array with one row per token ({T}), got "
                                           f"{_got(a)}")
    if cos.shape != sin_signed.shape:
        raise SwarefError("shape", f"cos and sin_signed must have the same shape, got {cos.shape} and {sin_signed.shape}")
    cdef Py_ssize_t R = cos.size // T if T else 0
    if T and (R % 2 or R > D):
        raise SwarefError("shape", f"the RoPE tables must hold an even number R <= D = {D} of values per token, got {R}")
    return np.ascontiguousarray(cos).reshape(-1), np.ascontiguousarray(sin_signed).reshape(-1), R


def attention_inputs(h, norm_w, double eps, wq, bq, wk, bk, wv, bv, Py_ssize_t n_heads, Py_ssize_t n_kv_heads,
                     Py_ssize_t head_dim, cos=None, sin_signed=None, bint interleaved=False, num_threads=None,
                     q_norm=None, k_norm=None, bint qk_per_head=True):
    """A decode step's attention inputs: h [T, d] float32 (T <= SMALL_T)  ->  q [T, Hq, D], k, v [T, Hkv, D].

    Equals, bit for bit: x = rms_norm(h, norm_w, eps) (norm_w None: x = h); q = linear(x, wq, bq),
    k = linear(x, wk, bk), v = linear(x, wv, bv); with q_norm / k_norm, q and k RMS-normalised
    (``rms_norm``, the same eps) over each head's D (qk_per_head) or over the whole projection;
    then q, k rotated by ``rope`` with the tables cos, sin_signed (None: no rotation)."""
    x = h if norm_w is None else rms_norm(h, norm_w, eps)
    x, wq, bq, nt = _check(x, wq, bq, num_threads)
    _check_decode_rows(x, "h")
    _, wk, bk, _ = _check(x, wk, bk, num_threads)
    _, wv, bv, _ = _check(x, wv, bv, num_threads)
    cdef Py_ssize_t T = x.shape[0], R = 0
    if n_heads < 1 or n_kv_heads < 1 or head_dim < 1 or wq.shape[0] != n_heads * head_dim \
            or wk.shape[0] != n_kv_heads * head_dim or wv.shape[0] != n_kv_heads * head_dim:
        raise SwarefError("shape", f"wq, wk, wv must have n_heads * head_dim = {n_heads} * {head_dim} and "
                                   f"n_kv_heads * head_dim = {n_kv_heads} * {head_dim} rows, got "
                                   f"{wq.shape[0]}, {wk.shape[0]}, {wv.shape[0]}")
    if (cos is None) != (sin_signed is None):
        raise SwarefError("argument", "cos and sin_signed must both be given (RoPE) or both be None")
    if (q_norm is None) != (k_norm is None):
        raise SwarefError("argument", "q_norm and k_norm must both be given or both be None")
    if cos is not None:
        cos, sin_signed, R = _tables(cos, sin_signed, T, head_dim)
    q = _rows_checked(x, wq, bq, nt)
    k = _rows_checked(x, wk, bk, nt)
    v = _rows_checked(x, wv, bv, nt).reshape(T, n_kv_heads, head_dim)
    if q_norm is not None:
        q = _normed(q, q_norm, eps, head_dim if qk_per_head else n_heads * head_dim, "q_norm")
        k = _normed(k, k_norm, eps, head_dim if qk_per_head else n_kv_heads * head_dim, "k_norm")
    if R:
        return (_rotated(q, T, n_heads, head_dim, R, interleaved, cos, sin_signed),
                _rotated(k, T, n_kv_heads, head_dim, R, interleaved, cos, sin_signed), v)
    return q.reshape(T, n_heads, head_dim), k.reshape(T, n_kv_heads, head_dim), v


cdef cnp.ndarray _normed(cnp.ndarray y, w, double eps, Py_ssize_t d, str name):
    """y (a fresh C-contiguous float32 array, a multiple of d elements) RMS-normalised in place in
    rows of d with the weight w [d]: ``rms_norm`` on y viewed as [-1, d]."""
    if not _plain(w, cnp.NPY_FLOAT32, 1) or w.shape[0] != d:
        raise SwarefTypeError("dtype", f"{name} must be a C-contiguous float32 array of shape ({d},), got "
                                       f"{_got(w)}")
    if d == 0:                                   # no element to normalise (and no row length to divide by)
        return y
    cdef float* yp = _fp(y)
    cdef const float* wp = _fp(w)
    cdef Py_ssize_t rows = y.size // d
    with nogil:
        _rms(yp, rows, d, wp, eps, yp)
    return y


def residual_linear(h, y, w, b=None, num_threads=None, out_norm=None, eps=None):
    """h [T, out] float32, y [T, in] (T <= SMALL_T)  ->  h + a with a = linear(y, w, b), or with
    out_norm (and its eps), a = rms_norm(linear(y, w, b), out_norm, eps); a new array (the same
    bits: the streaming kernel's rows, the RMSNorm core, then float32 additions)."""
    if out_norm is not None and eps is None:
        raise SwarefError("argument", "eps must be given with out_norm (the norm's epsilon)")
    return _residual_linear(h, y, w, b, num_threads, out_norm, 0.0 if eps is None else eps)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef cnp.ndarray _residual_linear(h, y, w, b, num_threads, out_norm, double eps):
    y, w, b, nt = _check(y, w, b, num_threads)
    _check_decode_rows(y, "y")
    cdef Py_ssize_t T = y.shape[0], out = w.shape[0], i
    if not _plain(h, cnp.NPY_FLOAT32, 2) or h.shape[0] != T or h.shape[1] != out:
        if not isinstance(h, np.ndarray) or h.dtype != np.float32 or h.shape != (T, out):
            raise SwarefTypeError("dtype", f"h must be a float32 array of shape ({T}, {out}), got "
                                           f"{_got(h)}")
        h = np.ascontiguousarray(h)
    cdef cnp.ndarray r = _rows_checked(y, w, b, nt)
    if out_norm is not None:
        _normed(r, out_norm, eps, out, "out_norm")
    cdef const float* hp = _fp(h)
    cdef float* rp = _fp(r)
    with nogil:
        for i in range(T * out):
            rp[i] = hp[i] + rp[i]
    return r


def mlp_inputs(h, o, wo, bo, norm_w, double eps, w_gate, b_gate, w_up, b_up, num_threads=None,
               attn_out_norm=None):
    """After attention: h [T, d] the residual stream, o [T, Hq * D] attention's output (T <= SMALL_T)
    ->  (h2, g, u), [T, d], [T, I], [T, I].

    Equals, bit for bit: h2 = residual_linear(h, o, wo, bo, out_norm=attn_out_norm, eps=eps);
    x = rms_norm(h2, norm_w, eps) (norm_w None: x = h2); g = linear(x, w_gate, b_gate);
    u = linear(x, w_up, b_up)."""
    h2 = _residual_linear(h, o, wo, bo, num_threads, attn_out_norm, eps)
    x = h2 if norm_w is None else rms_norm(h2, norm_w, eps)
    _, w_gate, b_gate, nt = _check(x, w_gate, b_gate, num_threads)
    _, w_up, b_up, _ = _check(x, w_up, b_up, num_threads)
    return h2, _rows_checked(x, w_gate, b_gate, nt), _rows_checked(x, w_up, b_up, nt)
