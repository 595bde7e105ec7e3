"""swaref's compiled linear layers: y = x W^T (+ b), W float32 or bfloat16, float32 accumulation.

A decode step multiplies a few token rows by every weight matrix once: it is
memory-bound, and what counts is streaming W at the DRAM read rate.
``linear`` does that for T <= ``SMALL_T`` tokens: OpenMP threads each take a
contiguous range of output rows, and each thread runs the micro-kernel of
swaref/_linear.h over its rows one after the other (one sequential stream,
prefetched ahead), every token group's accumulators in registers; a row serves
every group of tokens while it is in L1, so W leaves memory once whatever T.  For more
tokens the product is compute-bound and BLAS wins: float32 W goes to NumPy's
``x @ W.T``; bfloat16 W is widened (exactly) one block of rows at a time into
a float32 scratch of about 1 MiB and multiplied by NumPy there, so no full
float32 copy of W is ever made.

The module is compiled for the x86-64 baseline; the AVX2+FMA and AVX-512
micro-kernels are function-target versions chosen at import from the CPU's
features (``isa()``; ``set_isa`` forces a lower one, for tests).  Results are
bitwise fixed within one ISA and independent of T <= SMALL_T, of the thread
count and of which rows a thread computes (swaref/_linear.h states the order);
across ISAs they differ in the last bits.

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


def isa():
    """The micro-kernels in use: "baseline", "avx2" or "avx512"."""
    return ISAS[cur_isa]


def supported_isas():
    """The ISAs this CPU runs, lowest first."""
    return ISAS[: best_isa + 1]


def set_isa(name=None):
    """Use ISA ``name`` (one this CPU runs; None: the best) -> the previous one's name."""
    global cur_isa, rows_f32, rows_bf16
    old = ISAS[cur_isa]
    level = best_isa if name is None else (ISAS.index(name) if name in ISAS else -1)
    if level < 0 or level > best_isa:
        raise SwarefError("argument", f"isa must be one of {list(supported_isas())} on this CPU, got {name!r}")
    cur_isa, rows_f32, rows_bf16 = level, swl_f32_for(level), swl_bf16_for(level)
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
cdef object _rows_checked(cnp.ndarray x, cnp.ndarray w, b, int nt):
    """The streaming kernel on checked arguments (_check): x [T, in] -> [T, out] float32."""
    cdef Py_ssize_t T = x.shape[0], n = x.shape[1], out = w.shape[0]
    cdef cnp.ndarray y = np.empty((T, out), dtype=np.float32)
    if T == 0 or out == 0:
        return y
    if n == 0:
        y[...] = 0 if b is None else b
        return y
    nt = _threads(T * n * out, nt)
    cdef const float* bp = NULL if b is None else <const float*>cnp.PyArray_DATA(<cnp.ndarray>b)
    cdef bint bf16 = cnp.PyArray_TYPE(w) == cnp.NPY_UINT16
    cdef const float* xp = <const float*>cnp.PyArray_DATA(x)
    cdef const void* wp = cnp.PyArray_DATA(w)
    cdef float* yp = <float*>cnp.PyArray_DATA(y)
    with nogil:
        _rows(xp, T, n, wp, bf16, bp, yp, out, nt)
    return y


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


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
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
    cdef const float[:, ::1] xv = x
    cdef const float[::1] wv = w
    cdef float[:, ::1] yv = y
    cdef Py_ssize_t T = x.shape[0], d = x.shape[1], t, i
    cdef double ss
    cdef float r
    if d == 0:
        return y
    with nogil:
        for t in range(T):
            ss = 0.0
            for i in range(d):
                ss = ss + <double>xv[t, i] * <double>xv[t, i]
            r = <float>(1.0 / sqrt(ss / d + eps))
            for i in range(d):
                yv[t, i] = (xv[t, i] * r) * wv[i]
    return y
