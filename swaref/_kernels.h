/* swaref/_kernels.h: the C half of swaref/_core.pyx (read that module's docstring first).
 *
 * Three things Cython cannot say well:
 *  - OpenMP or not, decided by the C preprocessor (no deprecated Cython IF);
 *  - an exp() that gives the same bits in scalar and vector code;
 *  - micro-kernels whose accumulators stay in registers.
 */
#ifndef SWAREF_KERNELS_H
#define SWAREF_KERNELS_H

#include <math.h>

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
#if defined(__GNUC__) || defined(__clang__)
    for (Py_ssize_t o = 0; o < nbytes; o += 64) __builtin_prefetch((const char*)p + o, 0, 3);
#else
    (void)p; (void)nbytes;
#endif
}

/* exp(x) for x <= 0 (the only arguments the kernel produces; x > 0 is
   treated as 0).  Cody-Waite reduction x = k ln2 + r, |r| <= ln2/2,
   Taylor polynomial in Horner form, 2^k by building the exponent bits.
   Branch-free so that GCC vectorises the loops that call it, and the same
   formula in scalar and vector code (no libm, whose vector and scalar
   variants may differ in the last bit).  NaN in, NaN out. */
/* The formula itself, written once per dtype and expanded in both the scalar exp here and
   the vector exp below, so the two cannot drift apart: Cody-Waite reduction xc = k ln2 + r,
   then the Taylor polynomial of e^r in Horner form.  Z is the zero of the caller's type
   (0.0 or a zero vector); Z + c is exactly c. */
#define SWAREF_EXP_CORE_D(Z, xc, kf, r, p) \
    kf = (xc * 1.4426950408889634 + 6755399441055744.0) - 6755399441055744.0; \
    r = (xc - kf * 0.6931471803691238) - kf * 1.9082149292705877e-10; \
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
    p = p * r + 1.0; \
    p = p * r + 1.0
#define SWAREF_EXP_CORE_F(Z, xc, kf, r, p) \
    kf = (xc * 1.44269504f + 12582912.0f) - 12582912.0f; \
    r = (xc - kf * 0.693145752f) - kf * 1.42860677e-6f; \
    p = (Z) + 1.0f / 5040.0f; \
    p = p * r + 1.0f / 720.0f; \
    p = p * r + 1.0f / 120.0f; \
    p = p * r + 1.0f / 24.0f; \
    p = p * r + 1.0f / 6.0f; \
    p = p * r + 0.5f; \
    p = p * r + 1.0f; \
    p = p * r + 1.0f

static inline double swaref_exp_d(double x) {
    const double lo = -708.0;
    double xc = (x >= lo) ? x : lo;
    xc = (xc <= 0.0) ? xc : 0.0;
    double kf, r, p;
    SWAREF_EXP_CORE_D(0.0, xc, kf, r, p);
    union { double d; long long i; } u;
    u.i = ((long long)kf + 1023LL) << 52;
    double y = p * u.d;
    return (x >= lo) ? y : ((x < lo) ? 0.0 : x);
}
static inline float swaref_exp_f(float x) {
    const float lo = -87.0f;
    float xc = (x >= lo) ? x : lo;
    xc = (xc <= 0.0f) ? xc : 0.0f;
    float kf, r, p;
    SWAREF_EXP_CORE_F(0.0f, xc, kf, r, p);
    union { float f; int i; } u;
    u.i = ((int)kf + 127) << 23;
    float y = p * u.f;
    return (x >= lo) ? y : ((x < lo) ? 0.0f : x);
}

/* ---- Micro-kernels (C, GCC/Clang vector extensions) ----------------------
   Cython cannot keep an array of accumulators in registers (GCC spills
   them to the stack every iteration: measured about 2x slower), so the two
   products live here.  Every lane/element follows one fixed chain:
     scores: a = 0; a = a + q[d] * k[d] for d = 0 .. D-1; s = a * scale
     values: u = 0; u = u + p[j] * v[j][e] for visible j in order;
             o[e] = o[e] * alpha + u
   Each chain has a single candidate multiply per add, so when the
   compiler fuses multiply-adds (FMA) it does so identically in vector
   and scalar code: the bits of a row never depend on how it was batched. */
#define SWAREF_TILE 64
/* Score kernels cover SWAREF_NS(VL) vectors of lanes per pass (4: 24 accumulators for the
   six-row kernel, 16 for the four-row one); the caller steps through the tile in spans of SWAREF_SPAN_F / _D lanes, so that a
   float64 key tile's half (32 KiB at D = 128) stays in L1 while all rows pass over it. */
#define SWAREF_NS(VL) ((SWAREF_TILE / (VL)) < 4 ? (SWAREF_TILE / (VL)) : 4)
#define SWAREF_LD(VU, p) (*(const VU*)(p))
#define SWAREF_ST(VU, p, x) (*(VU*)(p) = (x))
#if defined(__GNUC__) && !defined(__clang__)
/* The 64-byte vector types are only passed between static inline functions of this
   file, so GCC's note that their ABI differs without AVX-512 does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
#if defined(__GNUC__) || defined(__clang__)
#define SWAREF_UNROLL _Pragma("GCC unroll 16")
typedef float swaref_vf __attribute__((vector_size(64)));
typedef float swaref_vfu __attribute__((vector_size(64), aligned(4)));
typedef double swaref_vd __attribute__((vector_size(64)));
typedef double swaref_vdu __attribute__((vector_size(64), aligned(8)));
#define SWAREF_VLF 16
#define SWAREF_VLD 8
#else
/* Other compilers: one-element "vectors", the same chains, slower. */
#define SWAREF_UNROLL
typedef float swaref_vf; typedef float swaref_vfu;
typedef double swaref_vd; typedef double swaref_vdu;
#define SWAREF_VLF 1
#define SWAREF_VLD 1
#endif
#define SWAREF_DEFINE_KERNELS(SFX, T, V, VU, VL) \
static inline void swaref_scores1_##SFX(const T* q0, const T* kt, Py_ssize_t D, T scale, T* s0) { \
    V a0[SWAREF_NS(VL)]; \
    SWAREF_UNROLL for (int i = 0; i < SWAREF_NS(VL); i++) a0[i] = (V){0}; \
    for (Py_ssize_t d = 0; d < D; d++) { \
        const T* kr = kt + d * SWAREF_TILE; T x0 = q0[d]; \
        SWAREF_UNROLL for (int i = 0; i < SWAREF_NS(VL); i++) a0[i] = a0[i] + x0 * SWAREF_LD(VU, kr + i * VL); \
    } \
    SWAREF_UNROLL for (int i = 0; i < SWAREF_NS(VL); i++) SWAREF_ST(VU, s0 + i * VL, a0[i] * scale); \
} \
static inline void swaref_scores2_##SFX(const T* q0, const T* q1, const T* kt, Py_ssize_t D, T scale, \
                                        T* s0, T* s1) { \
    V a0[SWAREF_NS(VL)], a1[SWAREF_NS(VL)]; \
    SWAREF_UNROLL for (int i = 0; i < SWAREF_NS(VL); i++) { a0[i] = (V){0}; a1[i] = (V){0}; } \
    for (Py_ssize_t d = 0; d < D; d++) { \
        const T* kr = kt + d * SWAREF_TILE; T x0 = q0[d], x1 = q1[d]; \
        SWAREF_UNROLL for (int i = 0; i < SWAREF_NS(VL); i++) { \
            V kv = SWAREF_LD(VU, kr + i * VL); \
            a0[i] = a0[i] + x0 * kv; a1[i] = a1[i] + x1 * kv; \
        } \
    } \
    SWAREF_UNROLL for (int i = 0; i < SWAREF_NS(VL); i++) { \
        SWAREF_ST(VU, s0 + i * VL, a0[i] * scale); SWAREF_ST(VU, s1 + i * VL, a1[i] * scale); \
    } \
} \
    static inline void swaref_scores4_##SFX(const T* q0, const T* q1, const T* q2, const T* q3, \
                                            const T* kt, Py_ssize_t D, T scale, \
                                            T* s0, T* s1, T* s2, T* s3) { \
        V a0[SWAREF_NS(VL)], a1[SWAREF_NS(VL)], a2[SWAREF_NS(VL)], a3[SWAREF_NS(VL)]; \
        SWAREF_UNROLL for (int i = 0; i < SWAREF_NS(VL); i++) { \
            a0[i] = (V){0}; a1[i] = (V){0}; a2[i] = (V){0}; a3[i] = (V){0}; \
        } \
        for (Py_ssize_t d = 0; d < D; d++) { \
            const T* kr = kt + d * SWAREF_TILE; T x0 = q0[d], x1 = q1[d], x2 = q2[d], x3 = q3[d]; \
            SWAREF_UNROLL for (int i = 0; i < SWAREF_NS(VL); i++) { \
                V kv = SWAREF_LD(VU, kr + i * VL); \
                a0[i] = a0[i] + x0 * kv; a1[i] = a1[i] + x1 * kv; \
                a2[i] = a2[i] + x2 * kv; a3[i] = a3[i] + x3 * kv; \
            } \
        } \
        SWAREF_UNROLL for (int i = 0; i < SWAREF_NS(VL); i++) { \
            SWAREF_ST(VU, s0 + i * VL, a0[i] * scale); SWAREF_ST(VU, s1 + i * VL, a1[i] * scale); \
            SWAREF_ST(VU, s2 + i * VL, a2[i] * scale); SWAREF_ST(VU, s3 + i * VL, a3[i] * scale); \
        } \
    } \
    /* NV vectors of o for R rows: e = e0 .. e0 + NV*VL - 1 */ \
SWAREF_DEFINE_PV(SFX, T, V, VU, VL, 8) \
SWAREF_DEFINE_PV(SFX, T, V, VU, VL, 4) \
SWAREF_DEFINE_PV(SFX, T, V, VU, VL, 2) \
SWAREF_DEFINE_PV(SFX, T, V, VU, VL, 1) \
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
}
#define SWAREF_DEFINE_PV(SFX, T, V, VU, VL, NV) \
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
/* Four rows seeing the same lanes, 4 vectors of o each (16 accumulators): every value
   vector loaded feeds four FMAs (the two-row kernel's 8 x 2 loads per 16 FMAs kept it waiting
   on loads).  Elements past the last full 4-vector block go to the two-row kernel, rows
   (0, 1) then (2, 3): each element's chain is the same whichever kernel runs it. */
#define SWAREF_DEFINE_PV4R(SFX, T, V, VU, VL) \
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
}
/* Scores of NR rows over one span (NR x SWAREF_NS accumulators): each key vector loaded
   feeds NR FMAs.  Same chains as swaref_scores1 lane by lane. */
#define SWAREF_DEFINE_SCORESR(SFX, T, V, VU, VL, NR) \
static inline void swaref_scoresr_##SFX(const T* const* q, const T* kt, Py_ssize_t D, T scale, \
                                       T* const* s) { \
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
#ifndef SWAREF_SROWS_F
#define SWAREF_SROWS_F 6
#endif
#ifndef SWAREF_SROWS_D
#define SWAREF_SROWS_D 6
#endif
#define SWAREF_SPAN_F (SWAREF_NS(SWAREF_VLF) * SWAREF_VLF)
/* Output elements per value pass: 8 vectors (16 accumulators for two rows). */
#define SWAREF_PVSPAN_F (8 * SWAREF_VLF)
#define SWAREF_PVSPAN_D (8 * SWAREF_VLD)
#define SWAREF_SPAN_D (SWAREF_NS(SWAREF_VLD) * SWAREF_VLD)
SWAREF_DEFINE_KERNELS(f, float, swaref_vf, swaref_vfu, SWAREF_VLF)
SWAREF_DEFINE_KERNELS(d, double, swaref_vd, swaref_vdu, SWAREF_VLD)
SWAREF_DEFINE_PV4R(f, float, swaref_vf, swaref_vfu, SWAREF_VLF)
SWAREF_DEFINE_SCORESR(f, float, swaref_vf, swaref_vfu, SWAREF_VLF, SWAREF_SROWS_F)
SWAREF_DEFINE_SCORESR(d, double, swaref_vd, swaref_vdu, SWAREF_VLD, SWAREF_SROWS_D)
SWAREF_DEFINE_PV4R(d, double, swaref_vd, swaref_vdu, SWAREF_VLD)

/* Online-softmax step of one row over one tile (see _core.pyx, _softmax_tile).
   Visible lanes: bit t of present set and ja <= t < jb.  Masked lanes are
   replaced by a select (bitwise and/or), never multiplied, so a NaN there
   cannot leak.  The 16 partial sums hold lanes t = j, j+16, j+32, j+48 (in
   that order) for j = 0..15, for both dtypes. */
#if defined(__GNUC__) || defined(__clang__)
typedef int swaref_vi __attribute__((vector_size(64)));          /* 16 x int32, matches swaref_vf */
typedef long long swaref_vl __attribute__((vector_size(64)));    /* 8 x int64, matches swaref_vd */
typedef signed char swaref_c16 __attribute__((vector_size(16), aligned(1)));
typedef signed char swaref_c8 __attribute__((vector_size(8), aligned(1)));
#define SWAREF_SEL(VI, V, m, a, b) ((V)(((VI)(a) & (m)) | ((VI)(b) & ~(m))))

/* Vector exp: the formula of swaref_exp_f / swaref_exp_d, lane by lane. */
static inline swaref_vf swaref_vexp_f(swaref_vf x) {
    swaref_vi ge = x >= -87.0f, lt = x < -87.0f;
    swaref_vf xc = SWAREF_SEL(swaref_vi, swaref_vf, ge, x, ((swaref_vf){0} - 87.0f));
    xc = SWAREF_SEL(swaref_vi, swaref_vf, xc <= 0.0f, xc, ((swaref_vf){0}));
    swaref_vf kf, r, p;
    SWAREF_EXP_CORE_F(((swaref_vf){0}), xc, kf, r, p);
    swaref_vi e = (__builtin_convertvector(kf, swaref_vi) + 127) << 23;
    swaref_vf y = p * (swaref_vf)e;
    swaref_vf tail = SWAREF_SEL(swaref_vi, swaref_vf, lt, ((swaref_vf){0}), x);   /* NaN stays NaN */
    return SWAREF_SEL(swaref_vi, swaref_vf, ge, y, tail);
}
static inline swaref_vd swaref_vexp_d(swaref_vd x) {
    swaref_vl ge = x >= -708.0, lt = x < -708.0;
    swaref_vd xc = SWAREF_SEL(swaref_vl, swaref_vd, ge, x, ((swaref_vd){0} - 708.0));
    xc = SWAREF_SEL(swaref_vl, swaref_vd, xc <= 0.0, xc, ((swaref_vd){0}));
    swaref_vd kf, r, p;
    SWAREF_EXP_CORE_D(((swaref_vd){0}), xc, kf, r, p);
    swaref_vl e = (__builtin_convertvector(kf, swaref_vl) + 1023) << 52;
    swaref_vd y = p * (swaref_vd)e;
    swaref_vd tail = SWAREF_SEL(swaref_vl, swaref_vd, lt, ((swaref_vd){0}), x);
    return SWAREF_SEL(swaref_vl, swaref_vd, ge, y, tail);
}

/* True when no element of x is Inf or NaN (x - x is 0 exactly for finite x, NaN otherwise). */
#define SWAREF_DEFINE_ALL_FINITE(SFX, T) \
static inline int swaref_all_finite_##SFX(const T* x, Py_ssize_t n) { \
    int ok = 1; \
    for (Py_ssize_t i = 0; i < n; i++) ok &= (x[i] - x[i] == 0); \
    return ok; \
}
SWAREF_DEFINE_ALL_FINITE(f, float)
SWAREF_DEFINE_ALL_FINITE(d, double)

/* Lanes ja .. jb-1 of a 64-bit lane mask. */
static inline unsigned long long swaref_range_bits(int ja, int jb) {
    if (ja >= 64 || jb <= ja) return 0;
    unsigned long long hi = (jb >= 64) ? ~0ULL : ((1ULL << jb) - 1ULL);
    return hi & ~((1ULL << ja) - 1ULL);
}
#if defined(__clang__)
#define SWAREF_SHUF(MI, a, ...) __builtin_shufflevector(a, a, __VA_ARGS__)
#else
#define SWAREF_SHUF(MI, a, ...) __builtin_shuffle(a, (MI){__VA_ARGS__})
#endif
/* The visible lanes arrive as one 64-bit mask (present keys & ja <= lane < jb): three vector
   operations per 16 lanes, where unpacking a char array went through scalar inserts.  The tile
   maximum folds the 16 partial maxima by a shuffle tree (maxima of non-NaN values are exact, so
   the order does not matter; a NaN score never enters them, it reaches the sum through exp); the
   sum runs the documented halving tree P_i += P_{i+8}, += P_{i+4}, += P_{i+2}, += P_{i+1} as
   vector adds of the same pairs. */
static inline float swaref_softmax_f(float* s, unsigned long long present, int ja, int jb, float* m, float* l) {
    const swaref_vi bit = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768};
    const swaref_vf ninf = (swaref_vf){0} - INFINITY;
    unsigned long long vis = present & swaref_range_bits(ja, jb);
    swaref_vi on[4];
    swaref_vf mp = ninf, ps = (swaref_vf){0};
    for (int i = 0; i < 4; i++) {
        on[i] = (((swaref_vi){0} + (int)((vis >> (16 * i)) & 0xffffULL)) & bit) != 0;
        swaref_vf x = SWAREF_SEL(swaref_vi, swaref_vf, on[i], SWAREF_LD(swaref_vfu, s + 16 * i), ninf);
        mp = SWAREF_SEL(swaref_vi, swaref_vf, x > mp, x, mp);
    }
    swaref_vf y;
    y = SWAREF_SHUF(swaref_vi, mp, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    mp = SWAREF_SEL(swaref_vi, swaref_vf, y > mp, y, mp);
    y = SWAREF_SHUF(swaref_vi, mp, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    mp = SWAREF_SEL(swaref_vi, swaref_vf, y > mp, y, mp);
    y = SWAREF_SHUF(swaref_vi, mp, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    mp = SWAREF_SEL(swaref_vi, swaref_vf, y > mp, y, mp);
    y = SWAREF_SHUF(swaref_vi, mp, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    mp = SWAREF_SEL(swaref_vi, swaref_vf, y > mp, y, mp);
    float mt = mp[0];
    float mnew = (mt > m[0]) ? mt : m[0];
    float alpha = swaref_exp_f(m[0] - mnew);
    for (int i = 0; i < 4; i++) {
        swaref_vf x = swaref_vexp_f(SWAREF_LD(swaref_vfu, s + 16 * i) - mnew);
        x = SWAREF_SEL(swaref_vi, swaref_vf, on[i], x, ((swaref_vf){0}));
        SWAREF_ST(swaref_vfu, s + 16 * i, x);
        ps = ps + x;
    }
    ps = ps + SWAREF_SHUF(swaref_vi, ps, 8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15);
    ps = ps + SWAREF_SHUF(swaref_vi, ps, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7);
    ps = ps + SWAREF_SHUF(swaref_vi, ps, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
    ps = ps + SWAREF_SHUF(swaref_vi, ps, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1);
    m[0] = mnew;
    l[0] = l[0] * alpha + ps[0];
    return alpha;
}

static inline double swaref_softmax_d(double* s, unsigned long long present, int ja, int jb, double* m, double* l) {
    const swaref_vl bit = {1, 2, 4, 8, 16, 32, 64, 128};
    const swaref_vd ninf = (swaref_vd){0} - INFINITY;
    unsigned long long vis = present & swaref_range_bits(ja, jb);
    swaref_vl on[8];
    swaref_vd mp = ninf, ps[2] = {(swaref_vd){0}, (swaref_vd){0}};
    for (int i = 0; i < 8; i++) {
        on[i] = (((swaref_vl){0} + (long long)((vis >> (8 * i)) & 0xffULL)) & bit) != 0;
        swaref_vd x = SWAREF_SEL(swaref_vl, swaref_vd, on[i], SWAREF_LD(swaref_vdu, s + 8 * i), ninf);
        mp = SWAREF_SEL(swaref_vl, swaref_vd, x > mp, x, mp);
    }
    swaref_vd y;
    y = SWAREF_SHUF(swaref_vl, mp, 4, 5, 6, 7, 0, 1, 2, 3);
    mp = SWAREF_SEL(swaref_vl, swaref_vd, y > mp, y, mp);
    y = SWAREF_SHUF(swaref_vl, mp, 2, 3, 0, 1, 6, 7, 4, 5);
    mp = SWAREF_SEL(swaref_vl, swaref_vd, y > mp, y, mp);
    y = SWAREF_SHUF(swaref_vl, mp, 1, 0, 3, 2, 5, 4, 7, 6);
    mp = SWAREF_SEL(swaref_vl, swaref_vd, y > mp, y, mp);
    double mt = mp[0];
    double mnew = (mt > m[0]) ? mt : m[0];
    double alpha = swaref_exp_d(m[0] - mnew);
    for (int i = 0; i < 8; i++) {
        swaref_vd x = swaref_vexp_d(SWAREF_LD(swaref_vdu, s + 8 * i) - mnew);
        x = SWAREF_SEL(swaref_vl, swaref_vd, on[i], x, ((swaref_vd){0}));
        SWAREF_ST(swaref_vdu, s + 8 * i, x);
        ps[i & 1] = ps[i & 1] + x;      /* vector i holds lanes 8i .. 8i+7: lane groups (i & 1) * 8 + 0..7 */
    }
    /* P_j (j < 8) in ps[0], P_{j+8} in ps[1]: the first halving step is one vector add. */
    swaref_vd t = ps[0] + ps[1];
    t = t + SWAREF_SHUF(swaref_vl, t, 4, 5, 6, 7, 4, 5, 6, 7);
    t = t + SWAREF_SHUF(swaref_vl, t, 2, 3, 2, 3, 2, 3, 2, 3);
    t = t + SWAREF_SHUF(swaref_vl, t, 1, 1, 1, 1, 1, 1, 1, 1);
    m[0] = mnew;
    l[0] = l[0] * alpha + t[0];
    return alpha;
}
#else
/* Other compilers: the same steps, one lane at a time. */
#define SWAREF_DEFINE_SOFTMAX(SFX, T) \
static inline T swaref_softmax_##SFX(T* s, unsigned long long present, int ja, int jb, T* m, T* l) { \
    T mt = -INFINITY, t[16]; \
    for (int j = 0; j < SWAREF_TILE; j++) \
        if (((present >> j) & 1) && j >= ja && j < jb && s[j] > mt) mt = s[j]; \
    T mnew = (mt > m[0]) ? mt : m[0]; \
    T alpha = swaref_exp_##SFX(m[0] - mnew); \
    for (int j = 0; j < 16; j++) t[j] = 0; \
    for (int j = 0; j < SWAREF_TILE; j++) { \
        T x = (((present >> j) & 1) && j >= ja && j < jb) ? swaref_exp_##SFX(s[j] - mnew) : (T)0; \
        s[j] = x; t[j % 16] = t[j % 16] + x; \
    } \
    for (int w = 8; w >= 1; w /= 2) \
        for (int j = 0; j < w; j++) t[j] = t[j] + t[j + w]; \
    m[0] = mnew; \
    l[0] = l[0] * alpha + t[0]; \
    return alpha; \
}
SWAREF_DEFINE_SOFTMAX(f, float)
SWAREF_DEFINE_SOFTMAX(d, double)
#endif

/* Key tile gather, transposed: kt[d * TILE + j] = rows[j][d] for the lanes j of the groups
   (16 lanes float32, 8 float64) that hold at least one key.  A pure data move: no bit of any
   score depends on how it is done.  Lanes without a key in such a group are filled from one
   that has (their scores are masked by selects, like the stale lanes of skipped groups).
   Writing the tile one element at a time (TILE-strided scalar stores) cost 10-13% of a
   prefill and most of a decode step; here 16 x 16 blocks go through registers (64 shuffles
   for 16 loads and 16 stores). */
#if defined(__GNUC__) && !defined(__clang__)
#define SWAREF_ARR(...) {__VA_ARGS__}
#define SWAREF_TSTAGE(V, MI, a, i, h, lo, hi) do { \
        V x_ = a[i], y_ = a[(i) + (h)]; \
        a[i] = __builtin_shuffle(x_, y_, (MI)lo); a[(i) + (h)] = __builtin_shuffle(x_, y_, (MI)hi); \
    } while (0)
static inline void swaref_tr16_f(swaref_vf* a) {
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
static inline void swaref_tr8_d(swaref_vd* a) {
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
#endif

#define SWAREF_DEFINE_GATHER(SFX, T, V, VU, VL, TR) \
static inline void swaref_transpose_tile_##SFX(T* kt, const T* const* rows, Py_ssize_t off, Py_ssize_t D) { \
    for (int j0 = 0; j0 < SWAREF_TILE; j0 += VL) { \
        const T* r[VL]; const T* any = 0; \
        for (int i = 0; i < VL; i++) if (rows[j0 + i]) { any = rows[j0 + i]; break; } \
        if (!any) continue; \
        for (int i = 0; i < VL; i++) r[i] = (rows[j0 + i] ? rows[j0 + i] : any) + off; \
        Py_ssize_t d0 = 0; \
        if (SWAREF_HAVE_TR && VL > 1) { \
            for (; d0 + VL <= D; d0 += VL) { \
                V a[VL]; \
                for (int i = 0; i < VL; i++) a[i] = SWAREF_LD(VU, r[i] + d0); \
                TR(a); \
                for (int i = 0; i < VL; i++) SWAREF_ST(VU, kt + (d0 + i) * SWAREF_TILE + j0, a[i]); \
            } \
        } \
        for (; d0 < D; d0++) \
            for (int i = 0; i < VL; i++) kt[d0 * SWAREF_TILE + j0 + i] = r[i][d0]; \
    } \
}
#if SWAREF_HAVE_TR
SWAREF_DEFINE_GATHER(f, float, swaref_vf, swaref_vfu, SWAREF_VLF, swaref_tr16_f)
SWAREF_DEFINE_GATHER(d, double, swaref_vd, swaref_vdu, SWAREF_VLD, swaref_tr8_d)
#else
static inline void swaref_tr_none(void* a) { (void)a; }
SWAREF_DEFINE_GATHER(f, float, swaref_vf, swaref_vfu, SWAREF_VLF, swaref_tr_none)
SWAREF_DEFINE_GATHER(d, double, swaref_vd, swaref_vdu, SWAREF_VLD, swaref_tr_none)
#endif

/* For the tests: y = exp(x) elementwise with the scalar formula, or with the vector one
   (full vectors; a tail shorter than a vector is padded with 0). */
static inline void swaref_exp_array_f(const float* x, float* y, Py_ssize_t n, int vector) {
#if defined(__GNUC__) || defined(__clang__)
    if (vector) {
        for (Py_ssize_t i = 0; i < n; i += 16) {
            float buf[16] = {0};
            for (int j = 0; j < 16 && i + j < n; j++) buf[j] = x[i + j];
            swaref_vf r = swaref_vexp_f(SWAREF_LD(swaref_vfu, buf));
            for (int j = 0; j < 16 && i + j < n; j++) y[i + j] = r[j];
        }
        return;
    }
#endif
    for (Py_ssize_t i = 0; i < n; i++) y[i] = swaref_exp_f(x[i]);
}
static inline void swaref_exp_array_d(const double* x, double* y, Py_ssize_t n, int vector) {
#if defined(__GNUC__) || defined(__clang__)
    if (vector) {
        for (Py_ssize_t i = 0; i < n; i += 8) {
            double buf[8] = {0};
            for (int j = 0; j < 8 && i + j < n; j++) buf[j] = x[i + j];
            swaref_vd r = swaref_vexp_d(SWAREF_LD(swaref_vdu, buf));
            for (int j = 0; j < 8 && i + j < n; j++) y[i + j] = r[j];
        }
        return;
    }
#endif
    for (Py_ssize_t i = 0; i < n; i++) y[i] = swaref_exp_d(x[i]);
}

#endif /* SWAREF_KERNELS_H */
