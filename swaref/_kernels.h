/* swaref/_kernels.h: the C half of swaref/_core.pyx (read that module's docstring first).
 *
 * Three things Cython cannot say well:
 *  - OpenMP or not, decided by the C preprocessor (no deprecated Cython IF);
 *  - an exp() that gives the same bits in scalar and vector code;
 *  - micro-kernels whose accumulators stay in registers (Cython spills an array of
 *    accumulators to the stack every iteration: measured about 2x slower).
 *
 * Every kernel is written once, as a macro over the element type, and expanded
 * for float (suffix _f) and double (_d).  Each one has a test hook in _core.pyx
 * checked against its NumPy one-liner in tests/test_kernels.py.
 */
#ifndef SWAREF_KERNELS_H
#define SWAREF_KERNELS_H

#if !defined(__GNUC__) && !defined(__clang__)
#error "swaref/_kernels.h needs GCC or Clang: its kernels are written with their vector extensions"
#endif

#include <math.h>
#include <stdint.h>

/* ---- Sizes ------------------------------------------------------------------
   One tile = SWAREF_TILE keys at the aligned positions [m*TILE, (m+1)*TILE); _core.pyx
   takes TILE from here.  What silently assumes its value is checked below. */
#define SWAREF_TILE 64
#define SWAREF_VLF 16                      /* lanes of a 64-byte float vector */
#define SWAREF_VLD 8                       /* lanes of a 64-byte double vector */
/* A window's "no bound on this side" (right = -1) as a position: above every position the
   kernel takes (swaref._backend refuses positions beyond 2**62) with room for + TILE and + 1,
   so that hi + 1 - tstart never overflows int64. */
#define SWAREF_POS_INF ((int64_t)3 << 61)
/* Rows per pass of the many-row score kernel; _core.pyx holds the row pointers of one pass in
   arrays of SWAREF_MAX_SROWS (act, qp, sp). */
#define SWAREF_MAX_SROWS 8
#ifndef SWAREF_SROWS_F
#define SWAREF_SROWS_F 6
#endif
#ifndef SWAREF_SROWS_D
#define SWAREF_SROWS_D 6
#endif
_Static_assert(SWAREF_TILE == 64, "a tile's keys are one 64-bit lane mask (uint64_t pbits, swaref_range_bits)");
_Static_assert(SWAREF_TILE % 16 == 0 && 16 % SWAREF_VLF == 0 && 16 % SWAREF_VLD == 0,
               "the softmax sums 16 lane groups, each vector feeding whole groups");
_Static_assert(SWAREF_SROWS_F >= 1 && SWAREF_SROWS_F <= SWAREF_MAX_SROWS
               && SWAREF_SROWS_D >= 1 && SWAREF_SROWS_D <= SWAREF_MAX_SROWS,
               "_core.pyx's act[], qp[], sp[] hold SWAREF_MAX_SROWS rows");
/* Score kernels cover SWAREF_NS(VL) vectors of lanes per pass (4: 24 accumulators for the
   six-row kernel); the caller steps through the tile in spans of SWAREF_SPAN_F / _D lanes, so
   that a float64 key tile's half (32 KiB at D = 128) stays in L1 while all rows pass over it. */
#define SWAREF_NS(VL) ((SWAREF_TILE / (VL)) < 4 ? (SWAREF_TILE / (VL)) : 4)
#define SWAREF_SPAN_F (SWAREF_NS(SWAREF_VLF) * SWAREF_VLF)
#define SWAREF_SPAN_D (SWAREF_NS(SWAREF_VLD) * SWAREF_VLD)
/* Output elements per value pass: 8 vectors (16 accumulators for two rows). */
#define SWAREF_PVSPAN_F (8 * SWAREF_VLF)
#define SWAREF_PVSPAN_D (8 * SWAREF_VLD)

/* OpenMP without Cython's deprecated IF blocks: the C preprocessor decides. */
#ifdef _OPENMP
#include <omp.h>
#define SWAREF_HAVE_OPENMP 1
static int swaref_max_threads(void) { return omp_get_max_threads(); }
#else
#define SWAREF_HAVE_OPENMP 0
static int swaref_max_threads(void) { return 1; }
#endif

/* Rows of one KV head lie Hkv*D elements apart (4 KiB and more): the hardware
   prefetcher does not follow strides across pages, so the tile gather asks
   for the rows it will need a few keys ahead. */
static inline void swaref_prefetch(const void* p, Py_ssize_t nbytes) {
    for (Py_ssize_t o = 0; o < nbytes; o += 64) __builtin_prefetch((const char*)p + o, 0, 3);
}

/* ---- Vector types -------------------------------------------------------- */
#if defined(__GNUC__) && !defined(__clang__)
/* The 64-byte vector types are only passed between static inline functions of this
   file, so GCC's note that their ABI differs without AVX-512 does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
#define SWAREF_UNROLL _Pragma("GCC unroll 16")
typedef float swaref_vf __attribute__((vector_size(64)));
typedef float swaref_vfu __attribute__((vector_size(64), aligned(4)));     /* unaligned load/store */
typedef double swaref_vd __attribute__((vector_size(64)));
typedef double swaref_vdu __attribute__((vector_size(64), aligned(8)));
typedef int swaref_vi __attribute__((vector_size(64)));                    /* 16 x int32, masks of swaref_vf */
typedef long long swaref_vl __attribute__((vector_size(64)));              /* 8 x int64, masks of swaref_vd */
#define SWAREF_LD(VU, p) (*(const VU*)(p))
#define SWAREF_ST(VU, p, x) (*(VU*)(p) = (x))
#define SWAREF_SEL(VI, V, m, a, b) ((V)(((VI)(a) & (m)) | ((VI)(b) & ~(m))))
/* The argument list of a kernel macro for one element type: suffix, scalar, vector,
   unaligned vector, mask vector, mask scalar, lanes. */
#define SWAREF_F f, float, swaref_vf, swaref_vfu, swaref_vi, int, SWAREF_VLF
#define SWAREF_D d, double, swaref_vd, swaref_vdu, swaref_vl, long long, SWAREF_VLD
#define SWAREF_EXPAND(M, ...) M(__VA_ARGS__)

/* ---- exp ------------------------------------------------------------------
   exp(x) for x <= 0 (the only arguments the kernel produces; x > 0 is treated as 0).
   Cody-Waite reduction x = k ln2 + r, |r| <= ln2/2, Taylor polynomial of e^r in Horner
   form, 2^k by building the exponent bits.  Branch-free, so that GCC vectorises the loops
   that call it, and the same formula in scalar and vector code (no libm, whose vector and
   scalar variants may differ in the last bit).  NaN in, NaN out.  Below EXP_MIN (where
   e^x is already below eps times the largest weight, 1) the result is exactly 0. */
#define SWAREF_LOG2E_D 1.4426950408889634
#define SWAREF_LN2_HI_D 0.6931471803691238      /* ln 2 = HI + LO, HI with trailing zero bits: k * HI is exact */
#define SWAREF_LN2_LO_D 1.9082149292705877e-10
#define SWAREF_ROUND_D 6755399441055744.0       /* 1.5 * 2**52: (x + R) - R is x rounded to an integer */
#define SWAREF_EXP_MIN_D (-708.0)
#define SWAREF_LOG2E_F 1.44269504f
#define SWAREF_LN2_HI_F 0.693145752f
#define SWAREF_LN2_LO_F 1.42860677e-6f
#define SWAREF_ROUND_F 12582912.0f              /* 1.5 * 2**23 */
#define SWAREF_EXP_MIN_F (-87.0f)
/* The reduction and Horner chain, written once per dtype and expanded in both the scalar and
   the vector exp, so the two cannot drift apart.  Z is the zero of the caller's type (0 or a
   zero vector); Z + c is exactly c. */
#define SWAREF_EXP_REDUCE_D(xc, kf, r) \
    kf = (xc * SWAREF_LOG2E_D + SWAREF_ROUND_D) - SWAREF_ROUND_D; \
    r = (xc - kf * SWAREF_LN2_HI_D) - kf * SWAREF_LN2_LO_D
/* p = (e^r - 1) / r: the Horner chain up to its coefficient of r^0 (= 1). */
#define SWAREF_EXPM1_POLY_D(Z, r, p) \
    p = (Z) + 1.0 / 6227020800.0; \
    p = p * r + 1.0 / 479001600.0; \
    p = p * r + 1.0 / 39916800.0; \
    p = p * r + 1.0 / 3628800.0; \
    p = p * r + 1.0 / 362880.0; \
    p = p * r + 1.0 / 40320.0; \
    p = p * r + 1.0 / 5040.0; \
    p = p * r + 1.0 / 720.0; \
    p = p * r + 1.0 / 120.0; \
    p = p * r + 1.0 / 24.0; \
    p = p * r + 1.0 / 6.0; \
    p = p * r + 0.5; \
    p = p * r + 1.0
#define SWAREF_EXP_CORE_D(Z, xc, kf, r, p) \
    SWAREF_EXP_REDUCE_D(xc, kf, r); \
    SWAREF_EXPM1_POLY_D(Z, r, p); \
    p = p * r + 1.0
#define SWAREF_EXP_REDUCE_F(xc, kf, r) \
    kf = (xc * SWAREF_LOG2E_F + SWAREF_ROUND_F) - SWAREF_ROUND_F; \
    r = (xc - kf * SWAREF_LN2_HI_F) - kf * SWAREF_LN2_LO_F
#define SWAREF_EXPM1_POLY_F(Z, r, p) \
    p = (Z) + 1.0f / 5040.0f; \
    p = p * r + 1.0f / 720.0f; \
    p = p * r + 1.0f / 120.0f; \
    p = p * r + 1.0f / 24.0f; \
    p = p * r + 1.0f / 6.0f; \
    p = p * r + 0.5f; \
    p = p * r + 1.0f
#define SWAREF_EXP_CORE_F(Z, xc, kf, r, p) \
    SWAREF_EXP_REDUCE_F(xc, kf, r); \
    SWAREF_EXPM1_POLY_F(Z, r, p); \
    p = p * r + 1.0f
/* The exponent field: BIAS and SHIFT (mantissa bits) of the format. */
#define SWAREF_EXP_BITS_D(kf, IT) (((IT)(kf) + 1023) << 52)
#define SWAREF_EXP_BITS_F(kf, IT) (((IT)(kf) + 127) << 23)
#define SWAREF_DEFINE_EXP(SFX, T, V, VU, VI, IT, VL, TAG) \
static inline T swaref_exp_##SFX(T x) { \
    const T lo = SWAREF_EXP_MIN_##TAG; \
    T xc = (x >= lo) ? x : lo; \
    xc = (xc <= (T)0) ? xc : (T)0; \
    T kf, r, p; \
    SWAREF_EXP_CORE_##TAG((T)0, xc, kf, r, p); \
    union { T f; IT i; } u; \
    u.i = SWAREF_EXP_BITS_##TAG(kf, IT); \
    T y = p * u.f; \
    return (x >= lo) ? y : ((x < lo) ? (T)0 : x); \
} \
static inline V swaref_vexp_##SFX(V x) { \
    const T lo = SWAREF_EXP_MIN_##TAG; \
    VI ge = x >= lo, lt = x < lo; \
    V xc = SWAREF_SEL(VI, V, ge, x, ((V){0} + lo)); \
    xc = SWAREF_SEL(VI, V, xc <= (T)0, xc, ((V){0})); \
    V kf, r, p; \
    SWAREF_EXP_CORE_##TAG(((V){0}), xc, kf, r, p); \
    VI e = SWAREF_EXP_BITS_##TAG(__builtin_convertvector(kf, VI), VI); \
    V y = p * (V)e; \
    V tail = SWAREF_SEL(VI, V, lt, ((V){0}), x);        /* NaN stays NaN */ \
    return SWAREF_SEL(VI, V, ge, y, tail); \
} \
/* For the tests: y = exp(x) elementwise with the scalar formula, or with the vector one \
   (full vectors; a tail shorter than a vector is padded with 0). */ \
static inline void swaref_exp_array_##SFX(const T* x, T* y, Py_ssize_t n, int vector) { \
    if (!vector) { \
        for (Py_ssize_t i = 0; i < n; i++) y[i] = swaref_exp_##SFX(x[i]); \
        return; \
    } \
    for (Py_ssize_t i = 0; i < n; i += VL) { \
        T buf[VL] = {0}; \
        for (int j = 0; j < VL && i + j < n; j++) buf[j] = x[i + j]; \
        V r = swaref_vexp_##SFX(SWAREF_LD(VU, buf)); \
        for (int j = 0; j < VL && i + j < n; j++) y[i + j] = r[j]; \
    } \
}
SWAREF_EXPAND(SWAREF_DEFINE_EXP, SWAREF_F, F)
SWAREF_EXPAND(SWAREF_DEFINE_EXP, SWAREF_D, D)

/* ---- tanh and the soft cap ---------------------------------------------------
   tanh(x) = -t / (2 + t) with t = expm1(-2|x|) in (-1, 0], the sign of x copied back.  expm1
   shares exp's reduction and polynomial (y = k ln2 + r): t = 2^k * (p(r) * r) + (2^k - 1), with
   p(r) * r = e^r - 1 accurate to a few ulp *relative* to itself, so tanh keeps its relative
   accuracy near 0 (no 1 - e^-2x cancellation): tests/test_kernels.py checks it within 4 ulp (measured: 2.5 float32, 2.7 float64)
   of long-double tanh over the whole range, subnormals included.  -2|x| is clamped at EXP_MIN
   (t = -1 then, tanh = +-1 exactly); +-inf give +-1; NaN stays NaN; tanh(+-0) = +-0.
   Vector only: the soft cap is applied in one place (swaref_softcap), to whole vectors. */
#define SWAREF_DEFINE_TANH(SFX, T, V, VU, VI, IT, VL, TAG) \
static inline V swaref_vtanh_##SFX(V x) { \
    const T lo = SWAREF_EXP_MIN_##TAG; \
    const VI sign = (VI)(-((V){0}));                  /* the sign bit alone: -0.0 */ \
    V y = (V)((VI)x | sign);                          /* -|x| */ \
    y = y + y;                                        /* -2|x|, exact */ \
    y = SWAREF_SEL(VI, V, y >= lo, y, ((V){0} + lo)); /* NaN -> lo, fixed below */ \
    V kf, r, p; \
    SWAREF_EXP_REDUCE_##TAG(y, kf, r); \
    SWAREF_EXPM1_POLY_##TAG(((V){0}), r, p); \
    V pk = (V)SWAREF_EXP_BITS_##TAG(__builtin_convertvector(kf, VI), VI);   /* 2^k */ \
    V t = pk * (p * r) + (pk - (T)1); \
    V th = -t / (t + (T)2);                           /* >= 0 */ \
    V res = (V)(((VI)th & ~sign) | ((VI)x & sign)); \
    return SWAREF_SEL(VI, V, x == x, res, x); \
} \
/* The soft cap of spec rule 3 on n scores (n a multiple of VL): s = cap * tanh(s / cap), and NaN \
   where s is not finite.  A score chain that overflowed stays +-inf whatever its true value (a \
   fused a + q*k never brings an infinite sum back), and the cap would turn that wrong inf into \
   a finite +-cap: + (s - s) (0 for finite s) makes it NaN instead, so the row takes the float64 \
   fallback like any other overflow. */ \
static inline void swaref_softcap_##SFX(T* s, Py_ssize_t n, T cap) { \
    for (Py_ssize_t i = 0; i < n; i += VL) { \
        V x = SWAREF_LD(VU, s + i); \
        SWAREF_ST(VU, s + i, cap * swaref_vtanh_##SFX(x / cap) + (x - x)); \
    } \
} \
/* For the tests: y = cap * tanh(x / cap) elementwise, NaN for non-finite x (cap = 1: tanh \
   itself, exactly: x / 1 and 1 * t are exact), whole vectors, a tail padded with 0. */ \
static inline void swaref_softcap_array_##SFX(const T* x, T* y, Py_ssize_t n, T cap) { \
    for (Py_ssize_t i = 0; i < n; i += VL) { \
        T buf[VL] = {0}; \
        for (int j = 0; j < VL && i + j < n; j++) buf[j] = x[i + j]; \
        swaref_softcap_##SFX(buf, VL, cap); \
        for (int j = 0; j < VL && i + j < n; j++) y[i + j] = buf[j]; \
    } \
}
SWAREF_EXPAND(SWAREF_DEFINE_TANH, SWAREF_F, F)
SWAREF_EXPAND(SWAREF_DEFINE_TANH, SWAREF_D, D)

/* ---- Products ----------------------------------------------------------------
   Every lane/element follows one fixed chain:
     scores: a = 0; a = a + q[d] * k[d] for d = 0 .. D-1; s = a * scale
     values: u = 0; u = u + p[j] * v[j][e] for visible j in order;
             o[e] = o[e] * alpha + u
   Each chain has a single candidate multiply per add, so when the compiler fuses
   multiply-adds (FMA) it does so identically in vector and scalar code: the bits of a row
   never depend on how it was batched. */

/* Scores of NR rows over one span of lanes (NR x SWAREF_NS accumulators): s[r][j] =
   (sum_d q[r][d] * kt[d*TILE + j]) * scale; each key vector loaded feeds NR FMAs. */
#define SWAREF_DEFINE_SCORES(NAME, NR, SFX, T, V, VU, VI, IT, VL) \
static inline void NAME(const T* const* q, const T* kt, Py_ssize_t D, T scale, T* const* s) { \
    V a[NR][SWAREF_NS(VL)]; \
    SWAREF_UNROLL for (int r = 0; r < NR; r++) SWAREF_UNROLL for (int i = 0; i < SWAREF_NS(VL); i++) a[r][i] = (V){0}; \
    for (Py_ssize_t d = 0; d < D; d++) { \
        const T* kr = kt + d * SWAREF_TILE; V kv[SWAREF_NS(VL)]; \
        SWAREF_UNROLL for (int i = 0; i < SWAREF_NS(VL); i++) kv[i] = SWAREF_LD(VU, kr + i * VL); \
        SWAREF_UNROLL for (int r = 0; r < NR; r++) { \
            T x = q[r][d]; \
            SWAREF_UNROLL for (int i = 0; i < SWAREF_NS(VL); i++) a[r][i] = a[r][i] + x * kv[i]; \
        } \
    } \
    SWAREF_UNROLL for (int r = 0; r < NR; r++) SWAREF_UNROLL for (int i = 0; i < SWAREF_NS(VL); i++) \
        SWAREF_ST(VU, s[r] + i * VL, a[r][i] * scale); \
}
/* n rows (1 .. SROWS): the SROWS-row kernel when full, else four, pairs and a last single. */
#define SWAREF_DEFINE_SCORES_ROWS(SFX, T, V, VU, VI, IT, VL, SROWS) \
SWAREF_DEFINE_SCORES(swaref_scores1_##SFX, 1, SFX, T, V, VU, VI, IT, VL) \
SWAREF_DEFINE_SCORES(swaref_scores2_##SFX, 2, SFX, T, V, VU, VI, IT, VL) \
SWAREF_DEFINE_SCORES(swaref_scores4_##SFX, 4, SFX, T, V, VU, VI, IT, VL) \
SWAREF_DEFINE_SCORES(swaref_scoresr_##SFX, SROWS, SFX, T, V, VU, VI, IT, VL) \
static inline void swaref_scores_rows_##SFX(int n, const T* const* q, const T* kt, Py_ssize_t D, T scale, \
                                            T* const* s) { \
    if (n == SROWS) { swaref_scoresr_##SFX(q, kt, D, scale, s); return; } \
    if (n == 4) { swaref_scores4_##SFX(q, kt, D, scale, s); return; } \
    int i = 0; \
    for (; i + 2 <= n; i += 2) swaref_scores2_##SFX(q + i, kt, D, scale, s + i); \
    if (i < n) swaref_scores1_##SFX(q + i, kt, D, scale, s + i); \
}
SWAREF_EXPAND(SWAREF_DEFINE_SCORES_ROWS, SWAREF_F, SWAREF_SROWS_F)
SWAREF_EXPAND(SWAREF_DEFINE_SCORES_ROWS, SWAREF_D, SWAREF_SROWS_D)

/* Value pass of R = 1 or 2 rows seeing the same lanes, NV vectors of o: elements
   e0 .. e0 + NV*VL - 1. */
#define SWAREF_DEFINE_PV(NV, SFX, T, V, VU, VI, IT, VL) \
static inline void swaref_pv##NV##_##SFX(int R, T* o0, T* o1, T al0, T al1, const T* p0, const T* p1, \
                                         const T** vp, const char* vis, Py_ssize_t ja, Py_ssize_t jb, \
                                         Py_ssize_t e0) { \
    V u0[NV], u1[NV]; \
    SWAREF_UNROLL for (int i = 0; i < NV; i++) { u0[i] = (V){0}; u1[i] = (V){0}; } \
    if (R == 2) { \
        for (Py_ssize_t j = ja; j < jb; j++) { \
            if (!vis[j]) continue; \
            const T* vr = vp[j] + e0; T x0 = p0[j], x1 = p1[j]; \
            SWAREF_UNROLL for (int i = 0; i < NV; i++) { \
                V vv = SWAREF_LD(VU, vr + i * VL); u0[i] = u0[i] + x0 * vv; u1[i] = u1[i] + x1 * vv; \
            } \
        } \
        SWAREF_UNROLL for (int i = 0; i < NV; i++) { \
            SWAREF_ST(VU, o0 + e0 + i * VL, SWAREF_LD(VU, o0 + e0 + i * VL) * al0 + u0[i]); \
            SWAREF_ST(VU, o1 + e0 + i * VL, SWAREF_LD(VU, o1 + e0 + i * VL) * al1 + u1[i]); \
        } \
    } else { \
        for (Py_ssize_t j = ja; j < jb; j++) { \
            if (!vis[j]) continue; \
            const T* vr = vp[j] + e0; T x0 = p0[j]; \
            SWAREF_UNROLL for (int i = 0; i < NV; i++) u0[i] = u0[i] + x0 * SWAREF_LD(VU, vr + i * VL); \
        } \
        SWAREF_UNROLL for (int i = 0; i < NV; i++) \
            SWAREF_ST(VU, o0 + e0 + i * VL, SWAREF_LD(VU, o0 + e0 + i * VL) * al0 + u0[i]); \
    } \
}
/* R = 1 or 2 rows, elements e_begin .. D-1: blocks of 8, 4, 2, 1 vectors, then a scalar tail
   with the same chains. */
#define SWAREF_DEFINE_PV_ROWS(SFX, T, V, VU, VI, IT, VL) \
SWAREF_DEFINE_PV(8, SFX, T, V, VU, VI, IT, VL) \
SWAREF_DEFINE_PV(4, SFX, T, V, VU, VI, IT, VL) \
SWAREF_DEFINE_PV(2, SFX, T, V, VU, VI, IT, VL) \
SWAREF_DEFINE_PV(1, SFX, T, V, VU, VI, IT, VL) \
static inline void swaref_pv_##SFX(int R, T* o0, T* o1, T al0, T al1, const T* p0, const T* p1, \
                                   const T** vp, const char* vis, Py_ssize_t ja, Py_ssize_t jb, \
                                   Py_ssize_t e_begin, Py_ssize_t D) { \
    Py_ssize_t e0 = e_begin; \
    while (D - e0 >= 8 * VL) { swaref_pv8_##SFX(R, o0, o1, al0, al1, p0, p1, vp, vis, ja, jb, e0); e0 += 8 * VL; } \
    while (D - e0 >= 4 * VL) { swaref_pv4_##SFX(R, o0, o1, al0, al1, p0, p1, vp, vis, ja, jb, e0); e0 += 4 * VL; } \
    while (D - e0 >= 2 * VL) { swaref_pv2_##SFX(R, o0, o1, al0, al1, p0, p1, vp, vis, ja, jb, e0); e0 += 2 * VL; } \
    while (D - e0 >= VL) { swaref_pv1_##SFX(R, o0, o1, al0, al1, p0, p1, vp, vis, ja, jb, e0); e0 += VL; } \
    if (e0 < D) { \
        T u0[VL], u1[VL]; Py_ssize_t n = D - e0; \
        for (Py_ssize_t e = 0; e < n; e++) { u0[e] = 0; u1[e] = 0; } \
        for (Py_ssize_t j = ja; j < jb; j++) { \
            if (!vis[j]) continue; \
            const T* vr = vp[j] + e0; T x0 = p0[j], x1 = (R == 2) ? p1[j] : 0; \
            for (Py_ssize_t e = 0; e < n; e++) { u0[e] = u0[e] + x0 * vr[e]; if (R == 2) u1[e] = u1[e] + x1 * vr[e]; } \
        } \
        for (Py_ssize_t e = 0; e < n; e++) { \
            o0[e0 + e] = o0[e0 + e] * al0 + u0[e]; \
            if (R == 2) o1[e0 + e] = o1[e0 + e] * al1 + u1[e]; \
        } \
    } \
} \
/* Four rows seeing the same lanes, 4 vectors of o each (16 accumulators): every value \
   vector loaded feeds four FMAs (the two-row kernel's 8 x 2 loads per 16 FMAs kept it waiting \
   on loads).  Elements past the last full 4-vector block go to the two-row kernel, rows \
   (0, 1) then (2, 3): each element's chain is the same whichever kernel runs it. */ \
static inline void swaref_pv4r_##SFX(T* const* o, const T* al, const T* const* p, \
                                     const T** vp, const char* vis, Py_ssize_t ja, Py_ssize_t jb, \
                                     Py_ssize_t e_begin, Py_ssize_t e_end) { \
    Py_ssize_t e0 = e_begin; \
    for (; e_end - e0 >= 4 * VL; e0 += 4 * VL) { \
        V u[4][4]; \
        SWAREF_UNROLL for (int r = 0; r < 4; r++) SWAREF_UNROLL for (int i = 0; i < 4; i++) u[r][i] = (V){0}; \
        for (Py_ssize_t j = ja; j < jb; j++) { \
            if (!vis[j]) continue; \
            const T* vr = vp[j] + e0; \
            V v0 = SWAREF_LD(VU, vr), v1 = SWAREF_LD(VU, vr + VL), v2 = SWAREF_LD(VU, vr + 2 * VL), \
              v3 = SWAREF_LD(VU, vr + 3 * VL); \
            SWAREF_UNROLL for (int r = 0; r < 4; r++) { \
                T x = p[r][j]; \
                u[r][0] = u[r][0] + x * v0; u[r][1] = u[r][1] + x * v1; \
                u[r][2] = u[r][2] + x * v2; u[r][3] = u[r][3] + x * v3; \
            } \
        } \
        SWAREF_UNROLL for (int r = 0; r < 4; r++) SWAREF_UNROLL for (int i = 0; i < 4; i++) \
            SWAREF_ST(VU, o[r] + e0 + i * VL, SWAREF_LD(VU, o[r] + e0 + i * VL) * al[r] + u[r][i]); \
    } \
    if (e0 < e_end) { \
        swaref_pv_##SFX(2, o[0], o[1], al[0], al[1], p[0], p[1], vp, vis, ja, jb, e0, e_end); \
        swaref_pv_##SFX(2, o[2], o[3], al[2], al[3], p[2], p[3], vp, vis, ja, jb, e0, e_end); \
    } \
} \
/* The value pass of rows r0 .. r1-1 (row r: o + r*D, weights sc + r*TILE, alpha al[r], \
   visible lanes ja[r] .. jb[r]-1 where vis is set; ja[r] == jb[r]: the row skips the tile). \
   Span by span of PVSPAN output elements (a float64 value tile's span stays in L1 across all \
   rows), four (else two) rows at a time where they see the same lanes. */ \
static inline void swaref_value_rows_##SFX(T* o, const T* al, const T* sc, const T** vp, const char* vis, \
                                           const Py_ssize_t* ja, const Py_ssize_t* jb, \
                                           Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t D, Py_ssize_t span) { \
    for (Py_ssize_t e0 = 0; e0 < D; e0 += span) { \
        Py_ssize_t e1 = (e0 + span < D) ? e0 + span : D; \
        Py_ssize_t r = r0; \
        while (r < r1) { \
            Py_ssize_t a = ja[r], b = jb[r], same = 1; \
            if (a >= b) { r++; continue; } \
            while (same < 4 && r + same < r1 && ja[r + same] == a && jb[r + same] == b) same++; \
            if (same == 4) { \
                T* o4[4] = {o + r * D, o + (r + 1) * D, o + (r + 2) * D, o + (r + 3) * D}; \
                const T* p4[4] = {sc + r * SWAREF_TILE, sc + (r + 1) * SWAREF_TILE, \
                                  sc + (r + 2) * SWAREF_TILE, sc + (r + 3) * SWAREF_TILE}; \
                swaref_pv4r_##SFX(o4, al + r, p4, vp, vis, a, b, e0, e1); \
                r += 4; \
            } else if (same >= 2) { \
                swaref_pv_##SFX(2, o + r * D, o + (r + 1) * D, al[r], al[r + 1], sc + r * SWAREF_TILE, \
                                sc + (r + 1) * SWAREF_TILE, vp, vis, a, b, e0, e1); \
                r += 2; \
            } else { \
                swaref_pv_##SFX(1, o + r * D, o, al[r], al[r], sc + r * SWAREF_TILE, sc + r * SWAREF_TILE, \
                                vp, vis, a, b, e0, e1); \
                r += 1; \
            } \
        } \
    } \
}
SWAREF_EXPAND(SWAREF_DEFINE_PV_ROWS, SWAREF_F)
SWAREF_EXPAND(SWAREF_DEFINE_PV_ROWS, SWAREF_D)

/* ---- Softmax step -----------------------------------------------------------
   Online-softmax step of one row over one tile (see _core.pyx, module docstring).  The
   visible lanes arrive as one 64-bit mask (present keys & ja <= lane < jb) and become
   vector masks by three operations per vector.  Masked lanes are replaced by a select
   (bitwise and/or), never multiplied, so a NaN there cannot leak.  The tile maximum is
   order-free (maxima of non-NaN values are exact; a NaN score never enters it, it reaches
   the sum through exp).  The sum: 16 partial sums P_i = lanes i, i+16, i+32, i+48 added in
   that order (vector t of the tile feeds P_{(t*VL) mod 16 ..}), then the fixed halving tree
   P_i += P_{i+8}, += P_{i+4}, += P_{i+2}, += P_{i+1}. */

/* Lanes ja .. jb-1 of a 64-bit lane mask. */
static inline uint64_t swaref_range_bits(int ja, int jb) {
    if (ja >= 64 || jb <= ja) return 0;
    uint64_t hi = (jb >= 64) ? ~0ULL : ((1ULL << jb) - 1ULL);
    return hi & ~((1ULL << ja) - 1ULL);
}
/* The two reductions of a softmax step, as shuffle trees (a scalar loop over the lanes cost a
   few percent of a decode step).  hmax: the maximum of the lanes, order-free.  tree16: the
   halving tree over the 16 partial sums held in 16 / VL vectors, the same pairs as above. */
#if defined(__clang__)
#define SWAREF_SHUF(MI, a, ...) __builtin_shufflevector(a, a, __VA_ARGS__)
#else
#define SWAREF_SHUF(MI, a, ...) __builtin_shuffle(a, (MI){__VA_ARGS__})
#endif
#define SWAREF_MAXSTEP(VI, V, mp, ...) do { \
        V y_ = SWAREF_SHUF(VI, mp, __VA_ARGS__); mp = SWAREF_SEL(VI, V, y_ > mp, y_, mp); } while (0)
static inline float swaref_hmax_f(swaref_vf mp) {
    SWAREF_MAXSTEP(swaref_vi, swaref_vf, mp, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    SWAREF_MAXSTEP(swaref_vi, swaref_vf, mp, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    SWAREF_MAXSTEP(swaref_vi, swaref_vf, mp, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    SWAREF_MAXSTEP(swaref_vi, swaref_vf, mp, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    return mp[0];
}
static inline double swaref_hmax_d(swaref_vd mp) {
    SWAREF_MAXSTEP(swaref_vl, swaref_vd, mp, 4, 5, 6, 7, 0, 1, 2, 3);
    SWAREF_MAXSTEP(swaref_vl, swaref_vd, mp, 2, 3, 0, 1, 6, 7, 4, 5);
    SWAREF_MAXSTEP(swaref_vl, swaref_vd, mp, 1, 0, 3, 2, 5, 4, 7, 6);
    return mp[0];
}
static inline float swaref_tree16_f(const swaref_vf* ps) {           /* P_i in lane i of ps[0] */
    swaref_vf t = ps[0] + SWAREF_SHUF(swaref_vi, ps[0], 8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15);
    t = t + SWAREF_SHUF(swaref_vi, t, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7);
    t = t + SWAREF_SHUF(swaref_vi, t, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
    t = t + SWAREF_SHUF(swaref_vi, t, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1);
    return t[0];
}
static inline double swaref_tree16_d(const swaref_vd* ps) {          /* P_i in ps[0], P_{i+8} in ps[1] */
    swaref_vd t = ps[0] + ps[1];
    t = t + SWAREF_SHUF(swaref_vl, t, 4, 5, 6, 7, 4, 5, 6, 7);
    t = t + SWAREF_SHUF(swaref_vl, t, 2, 3, 2, 3, 2, 3, 2, 3);
    t = t + SWAREF_SHUF(swaref_vl, t, 1, 1, 1, 1, 1, 1, 1, 1);
    return t[0];
}
#define SWAREF_DEFINE_SOFTMAX(SFX, T, V, VU, VI, IT, VL) \
static inline T swaref_softmax_##SFX(T* s, uint64_t present, int ja, int jb, T* m, T* l) { \
    enum { NV = SWAREF_TILE / VL, NP = 16 / VL };     /* vectors per tile, per 16 partial sums */ \
    const V ninf = (V){0} - INFINITY; \
    const uint64_t vis = present & swaref_range_bits(ja, jb); \
    VI bit, on[NV]; \
    for (int i = 0; i < VL; i++) bit[i] = (IT)1 << i; \
    V mp = ninf, ps[NP]; \
    for (int i = 0; i < NV; i++) { \
        on[i] = (((VI){0} + (IT)((vis >> (VL * i)) & ((1ULL << VL) - 1))) & bit) != 0; \
        V x = SWAREF_SEL(VI, V, on[i], SWAREF_LD(VU, s + VL * i), ninf); \
        mp = SWAREF_SEL(VI, V, x > mp, x, mp); \
    } \
    T mt = swaref_hmax_##SFX(mp); \
    T mnew = (mt > m[0]) ? mt : m[0]; \
    /* While every visible score so far is -inf, shift by 0: exp(-inf - -inf) would be NaN, \
       where each of those weights is exp(-inf) = 0.  A finite mnew is used as it is. */ \
    T msafe = (mnew == -INFINITY) ? (T)0 : mnew; \
    T alpha = swaref_exp_##SFX(m[0] - msafe); \
    for (int i = 0; i < NP; i++) ps[i] = (V){0}; \
    for (int i = 0; i < NV; i++) { \
        V x = swaref_vexp_##SFX(SWAREF_LD(VU, s + VL * i) - msafe); \
        x = SWAREF_SEL(VI, V, on[i], x, ((V){0})); \
        SWAREF_ST(VU, s + VL * i, x); \
        ps[i % NP] = ps[i % NP] + x; \
    } \
    m[0] = mnew; \
    l[0] = l[0] * alpha + swaref_tree16_##SFX(ps); \
    return alpha; \
}
SWAREF_EXPAND(SWAREF_DEFINE_SOFTMAX, SWAREF_F)
SWAREF_EXPAND(SWAREF_DEFINE_SOFTMAX, SWAREF_D)

/* ---- Key tile transpose ------------------------------------------------------
   kt[d * TILE + j] = rows[j][off + d] for the lanes j of the groups (VL lanes) that hold at
   least one key.  A pure data move: no bit of any score depends on how it is done.  Lanes
   without a key in such a group are filled from one that has (their scores are masked by
   selects, like the stale lanes of skipped groups).  Writing the tile one element at a time
   (TILE-strided scalar stores) cost 10-13% of a prefill and most of a decode step; with GCC,
   VL x VL blocks go through registers (log2(VL) shuffle stages). */
#if defined(__GNUC__) && !defined(__clang__)
#define SWAREF_ARR(...) {__VA_ARGS__}
#define SWAREF_TSTAGE(V, MI, a, i, h, lo, hi) do { \
        V x_ = a[i], y_ = a[(i) + (h)]; \
        a[i] = __builtin_shuffle(x_, y_, (MI)lo); a[(i) + (h)] = __builtin_shuffle(x_, y_, (MI)hi); \
    } while (0)
static inline void swaref_tr_f(swaref_vf* a) {
    for (int i = 0; i < 16; i++) if (!(i & 8)) SWAREF_TSTAGE(swaref_vf, swaref_vi, a, i, 8,
        SWAREF_ARR(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23),
        SWAREF_ARR(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31));
    for (int i = 0; i < 16; i++) if (!(i & 4)) SWAREF_TSTAGE(swaref_vf, swaref_vi, a, i, 4,
        SWAREF_ARR(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27),
        SWAREF_ARR(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31));
    for (int i = 0; i < 16; i++) if (!(i & 2)) SWAREF_TSTAGE(swaref_vf, swaref_vi, a, i, 2,
        SWAREF_ARR(0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29),
        SWAREF_ARR(2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31));
    for (int i = 0; i < 16; i++) if (!(i & 1)) SWAREF_TSTAGE(swaref_vf, swaref_vi, a, i, 1,
        SWAREF_ARR(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30),
        SWAREF_ARR(1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31));
}
static inline void swaref_tr_d(swaref_vd* a) {
    for (int i = 0; i < 8; i++) if (!(i & 4)) SWAREF_TSTAGE(swaref_vd, swaref_vl, a, i, 4,
        SWAREF_ARR(0, 1, 2, 3, 8, 9, 10, 11), SWAREF_ARR(4, 5, 6, 7, 12, 13, 14, 15));
    for (int i = 0; i < 8; i++) if (!(i & 2)) SWAREF_TSTAGE(swaref_vd, swaref_vl, a, i, 2,
        SWAREF_ARR(0, 1, 8, 9, 4, 5, 12, 13), SWAREF_ARR(2, 3, 10, 11, 6, 7, 14, 15));
    for (int i = 0; i < 8; i++) if (!(i & 1)) SWAREF_TSTAGE(swaref_vd, swaref_vl, a, i, 1,
        SWAREF_ARR(0, 8, 2, 10, 4, 12, 6, 14), SWAREF_ARR(1, 9, 3, 11, 5, 13, 7, 15));
}
#define SWAREF_HAVE_TR 1
#else
#define SWAREF_HAVE_TR 0
static inline void swaref_tr_f(swaref_vf* a) { (void)a; }
static inline void swaref_tr_d(swaref_vd* a) { (void)a; }
#endif
#define SWAREF_DEFINE_TRANSPOSE(SFX, T, V, VU, VI, IT, VL) \
static inline void swaref_transpose_tile_##SFX(T* kt, const T* const* rows, Py_ssize_t off, Py_ssize_t D) { \
    for (int j0 = 0; j0 < SWAREF_TILE; j0 += VL) { \
        const T* r[VL]; const T* any = 0; \
        for (int i = 0; i < VL; i++) if (rows[j0 + i]) { any = rows[j0 + i]; break; } \
        if (!any) continue; \
        for (int i = 0; i < VL; i++) r[i] = (rows[j0 + i] ? rows[j0 + i] : any) + off; \
        Py_ssize_t d0 = 0; \
        if (SWAREF_HAVE_TR) { \
            for (; d0 + VL <= D; d0 += VL) { \
                V a[VL]; \
                for (int i = 0; i < VL; i++) a[i] = SWAREF_LD(VU, r[i] + d0); \
                swaref_tr_##SFX(a); \
                for (int i = 0; i < VL; i++) SWAREF_ST(VU, kt + (d0 + i) * SWAREF_TILE + j0, a[i]); \
            } \
        } \
        for (; d0 < D; d0++) \
            for (int i = 0; i < VL; i++) kt[d0 * SWAREF_TILE + j0 + i] = r[i][d0]; \
    } \
}
SWAREF_EXPAND(SWAREF_DEFINE_TRANSPOSE, SWAREF_F)
SWAREF_EXPAND(SWAREF_DEFINE_TRANSPOSE, SWAREF_D)

/* ---- The overflow fallback, one key at a time (_exact_row in swaref/_core.pyx) -------------
   One query row recomputed as the reference computes it (swaref/attention.py, softmax_attend),
   visiting the row's keys in increasing position twice:
     stage 0: the score, soft-capped if cap > 0, then the running max m and sum l; a sink starts
              them (m = sink, l = 1) and has no value row;
     stage 1: acc += (exp(s - m) / l) * v.
   Scores, max and sum are long double, whose exponent range holds scale * q.k for any finite
   float64 q, k and scale: a float64 score that overflows is exact here, so the weights are the
   reference's (which factors the magnitudes out for the same reason), a sink competes with the
   true largest score, and the cap sees the true score (the reference's +-inf caps to the same
   +-c).  A -inf score (a -inf key) weighs exp(-inf) = 0, even while m is still -inf; a row of
   only -inf scores and no sink is NaN. */
typedef struct {
    long double scale, cap, m, l;      /* cap 0: none */
} swaref_exact_t;
static inline void swaref_exact_init(swaref_exact_t* X, double scale, double cap, const double* sink) {
    X->scale = scale; X->cap = cap;
    X->m = sink ? (long double)*sink : -INFINITY;
    X->l = sink ? 1.0L : 0.0L;
}
#define SWAREF_DEFINE_EXACT(SFX, T, V, VU, VI, IT, VL) \
static inline void swaref_exact_key_##SFX(swaref_exact_t* X, int stage, const T* q, const T* k, const T* v, \
                                          Py_ssize_t D, double* acc) { \
    long double s = 0, w; \
    for (Py_ssize_t d = 0; d < D; d++) s = s + (long double)q[d] * (long double)k[d]; \
    s = s * X->scale; \
    if (X->cap > 0) s = X->cap * tanhl(s / X->cap); \
    if (stage == 0) { \
        if (s > X->m) { X->l = X->l * expl(X->m - s) + 1.0L; X->m = s; }   /* a NaN never passes: it reaches l */ \
        else if (s != -INFINITY) X->l = X->l + expl(s - X->m); \
    } else { \
        /* exp(-inf - m) = 0 for a finite m; a row whose every score is -inf (only from -inf \
           inputs: long double cannot overflow here) is NaN, as IEEE and the reference say. */ \
        w = (s == -INFINITY && X->m != -INFINITY) ? 0.0L : expl(s - X->m) / X->l; \
        for (Py_ssize_t d = 0; d < D; d++) acc[d] = acc[d] + (double)w * (double)v[d]; \
    } \
}
SWAREF_EXPAND(SWAREF_DEFINE_EXACT, SWAREF_F)
SWAREF_EXPAND(SWAREF_DEFINE_EXACT, SWAREF_D)

/* ---- Overflow test ----------------------------------------------------------
   True when no element of x is Inf or NaN (x - x is exactly 0 for finite x, NaN otherwise). */
#define SWAREF_DEFINE_ALL_FINITE(SFX, T, V, VU, VI, IT, VL) \
static inline int swaref_all_finite_##SFX(const T* x, Py_ssize_t n) { \
    int ok = 1; \
    for (Py_ssize_t i = 0; i < n; i++) ok &= (x[i] - x[i] == 0); \
    return ok; \
}
SWAREF_EXPAND(SWAREF_DEFINE_ALL_FINITE, SWAREF_F)
SWAREF_EXPAND(SWAREF_DEFINE_ALL_FINITE, SWAREF_D)

#endif /* SWAREF_KERNELS_H */
