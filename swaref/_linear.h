/* swaref/_linear.h: the micro-kernels of swaref._linear (a model's linear layers).

   y[t, o] = sum_i x[t, i] * W[o, i]  (+ b[o]),  x float32 [T, n], W [out, n] float32 or bfloat16
   (raw uint16 bits), float32 accumulation, for the output rows o in [o0, o1).

   Compiled for the x86-64 baseline (no -march flags); the AVX2+FMA and AVX-512 versions are
   GCC function-target versions, chosen at run time (swl_pick) from __builtin_cpu_supports.

   Order of operations (what makes a row's result independent of T, of the thread that computes
   it and of the rows computed beside it): for one (t, o), virtual lane l of 2 VL lanes accumulates
   a_l = fma(x[t, i], W[o, i], a_l) for i = l, l + 2 VL, l + 4 VL, ... in increasing i (on
   AVX-512 a masked tail in the lanes of its position; on AVX2 the tail past the last whole VL
   is scalar, see below); then a_l + a_{l+VL} for l < VL, then those VL lanes are summed (the
   ISA's fixed reduction), then (AVX2, baseline: the scalar tail fma(x[i], W[o, i], s) in
   increasing i) the bias is added.  The baseline has one set of VL = 4 lanes, plain multiply then
   add.  VL and the contraction (FMA or not) are the ISA's, so results differ in the last bits
   across ISAs, and are bitwise fixed within one.  Two accumulators per (row, token) keep two
   FMA chains in flight for one row.  A block of R rows and TB tokens runs its chains side by
   side: W is streamed once per group of TB tokens. */
#ifndef SWAREF_LINEAR_H
#define SWAREF_LINEAR_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef ptrdiff_t swl_idx;

/* bfloat16 is the top half of a float32: widening shifts the bits up (exact). */
static inline float swl_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ------------------------------------------------------------------ baseline (any x86-64, any CPU)
   4 lanes (the SSE2 width the compiler may use), plain multiply then add. */
#define SWL_BASE_VL 4

#define SWL_BASE_BODY(LOADW)                                                                      \
    for (swl_idx o = o0; o < o1; o++) {                                                           \
        for (swl_idx t = 0; t < T; t++) {                                                         \
            const float* xr = x + t * n;                                                          \
            float a[SWL_BASE_VL] = {0.0f, 0.0f, 0.0f, 0.0f};                                       \
            swl_idx i = 0;                                                                        \
            for (; i + SWL_BASE_VL <= n; i += SWL_BASE_VL)                                        \
                for (int l = 0; l < SWL_BASE_VL; l++) a[l] = a[l] + xr[i + l] * LOADW(o * n + i + l); \
            float s = (a[0] + a[1]) + (a[2] + a[3]);                                               \
            for (; i < n; i++) s = s + xr[i] * LOADW(o * n + i);                                   \
            y[t * ldy + o] = b ? s + b[o] : s;                                                    \
        }                                                                                         \
    }

#define SWL_LOAD_F32(k) (w[k])
#define SWL_LOAD_BF16(k) swl_bf16_to_f32(w[k])

static void swl_rows_f32_base(const float* x, swl_idx T, swl_idx n, const float* w, const float* b,
                              float* y, swl_idx ldy, swl_idx o0, swl_idx o1) {
    SWL_BASE_BODY(SWL_LOAD_F32)
}

static void swl_rows_bf16_base(const float* x, swl_idx T, swl_idx n, const uint16_t* w, const float* b,
                               float* y, swl_idx ldy, swl_idx o0, swl_idx o1) {
    SWL_BASE_BODY(SWL_LOAD_BF16)
}

/* Rows of W per block and tokens per group (the R x TB accumulators stay in registers).
   One row at a time: W is then read as one sequential stream, which every hardware prefetcher
   follows.  Blocks of several rows read several streams a row (3 KiB) apart in lockstep, and
   on Zen 5 that halved the rate.  Measured (Zen 5, one core, the 400 MB of a 124.7M-parameter
   model's matrices, T = 1, against a plain AVX-512 read of the same bytes at 31-34 GB/s;
   rerun with benchmarks/bench_linear.py): float32 R = 4 14 GB/s, R = 2 23, R = 1 29-32;
   bfloat16 R = 4 16 GB/s, R = 1 29.5.  R changes no bit (a row's chain is its own). */
#ifndef SWL_R
#define SWL_R 1
#endif
#define SWL_TB 4
/* Bytes ahead of the current position that the row's stream prefetches (once per 64-byte
   line).  Same measurement, R = 1: float32 8 KiB 29-32 GB/s, 16 KiB 27-29, 32 KiB 29;
   bfloat16 4 KiB 26, 8 KiB 29.5, 16 KiB 28.7; locality 3 (into L1) beat 0 and 2 by 5-10%.
   (On Zen 4 with R = 4, an earlier session measured no prefetch or 1 KiB at 13-16 GB/s.) */
#ifndef SWL_PF_HINT
#define SWL_PF_HINT 3
#endif
#ifndef SWL_PF_BYTES
#define SWL_PF_BYTES 8192
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(SWL_NO_SIMD)
#define SWL_HAVE_X86 1
#include <immintrin.h>

/* ------------------------------------------------------------------ AVX-512 (16 lanes, FMA) */
#define SWL512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"))) static inline

SWL512 __m512 swl512_w_f32(const float* p) { return _mm512_loadu_ps(p); }
SWL512 __m512 swl512_w_f32_m(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
SWL512 __m512 swl512_w_bf16(const uint16_t* p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
}
SWL512 __m512 swl512_w_bf16_m(const uint16_t* p, __mmask16 m) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

/* One block: R rows (R <= SWL_R) x TB tokens (TB <= SWL_TB); always_inline so that R and TB are
   constants and the accumulator arrays live in registers.  Two accumulators per (row, token):
   lanes 0-15 and 16-31 of the 32 virtual lanes (see the top of this file), so that two FMA
   chains are in flight for one row (a bfloat16 row's one chain was latency-bound at ~27 GB/s). */
#define SWL512_BLOCK(NAME, WT, LOADW, LOADWM)                                                     \
__attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx2,fma"))) static inline void NAME(      \
        const float* x, swl_idx n, const WT* w, const float* b, float* y, swl_idx ldy, swl_idx o,          \
        swl_idx t0, const int R, const int TB) {                                                           \
    __m512 acc[2][SWL_R][SWL_TB];                                                                          \
    for (int h = 0; h < 2; h++)                                                                            \
        for (int r = 0; r < R; r++) for (int t = 0; t < TB; t++) acc[h][r][t] = _mm512_setzero_ps();      \
    const WT* wr[SWL_R];                                                                                   \
    for (int r = 0; r < R; r++) wr[r] = w + (o + r) * n;                                                   \
    swl_idx i = 0;                                                                                         \
    for (; i + 32 <= n; i += 32) {                                                                         \
        for (int r = 0; r < R; r++)                                                                        \
            for (int c = 0; c < (int)(32 * sizeof(WT)) / 64; c++)                                          \
                __builtin_prefetch((const char*)(wr[r] + i) + 64 * c + SWL_PF_BYTES, 0, SWL_PF_HINT);       \
        for (int h = 0; h < 2; h++) {                                                                      \
            __m512 xv[SWL_TB];                                                                             \
            for (int t = 0; t < TB; t++) xv[t] = _mm512_loadu_ps(x + (t0 + t) * n + i + 16 * h);           \
            for (int r = 0; r < R; r++) {                                                                  \
                __m512 wv = LOADW(wr[r] + i + 16 * h);                                                     \
                for (int t = 0; t < TB; t++) acc[h][r][t] = _mm512_fmadd_ps(xv[t], wv, acc[h][r][t]);      \
            }                                                                                              \
        }                                                                                                  \
    }                                                                                                      \
    /* The tail: a whole 16 into lanes 0-15, then the masked rest into the lanes of its position. */      \
    if (i + 16 <= n) {                                                                                     \
        for (int r = 0; r < R; r++) {                                                                      \
            __m512 wv = LOADW(wr[r] + i);                                                                  \
            for (int t = 0; t < TB; t++)                                                                   \
                acc[0][r][t] = _mm512_fmadd_ps(_mm512_loadu_ps(x + (t0 + t) * n + i), wv, acc[0][r][t]);   \
        }                                                                                                  \
        i += 16;                                                                                           \
    }                                                                                                      \
    if (i < n) {                                                                                           \
        const int h = (int)((i >> 4) & 1);                                                                 \
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);                                                   \
        for (int r = 0; r < R; r++) {                                                                      \
            __m512 wv = LOADWM(wr[r] + i, m);                                                              \
            for (int t = 0; t < TB; t++)                                                                   \
                acc[h][r][t] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + (t0 + t) * n + i), wv, acc[h][r][t]); \
        }                                                                                                  \
    }                                                                                                      \
    for (int r = 0; r < R; r++)                                                                            \
        for (int t = 0; t < TB; t++) {                                                                     \
            float s = _mm512_reduce_add_ps(_mm512_add_ps(acc[0][r][t], acc[1][r][t]));                     \
            y[(t0 + t) * ldy + o + r] = b ? s + b[o + r] : s;                                              \
        }                                                                                                  \
}

SWL512_BLOCK(swl512_block_f32, float, swl512_w_f32, swl512_w_f32_m)
SWL512_BLOCK(swl512_block_bf16, uint16_t, swl512_w_bf16, swl512_w_bf16_m)

/* The row loop: blocks of SWL_R rows (then single rows), and for each block every group of SWL_TB
   tokens while the block's rows are in L1: W is read from memory once whatever T. */
#define SWL_GROUPS(BLOCK, RV)                                                                             \
    for (swl_idx t0 = 0; t0 < T; t0 += SWL_TB) {                                                           \
        switch (T - t0 < SWL_TB ? T - t0 : SWL_TB) {                                                       \
        case 1: BLOCK(x, n, w, b, y, ldy, o, t0, RV, 1); break;                                            \
        case 2: BLOCK(x, n, w, b, y, ldy, o, t0, RV, 2); break;                                            \
        case 3: BLOCK(x, n, w, b, y, ldy, o, t0, RV, 3); break;                                            \
        default: BLOCK(x, n, w, b, y, ldy, o, t0, RV, 4); break;                                           \
        }                                                                                                  \
    }

#define SWL_ROWS(NAME, ATTR, WT, BLOCK)                                                                   \
ATTR void NAME(const float* x, swl_idx T, swl_idx n, const WT* w, const float* b, float* y, swl_idx ldy,   \
               swl_idx o0, swl_idx o1) {                                                                   \
    swl_idx o = o0;                                                                                        \
    for (; o + SWL_R <= o1; o += SWL_R) { SWL_GROUPS(BLOCK, SWL_R) }                                       \
    for (; o < o1; o++) { SWL_GROUPS(BLOCK, 1) }                                                           \
}

SWL_ROWS(swl_rows_f32_avx512, __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"))) static, float,
         swl512_block_f32)
SWL_ROWS(swl_rows_bf16_avx512, __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"))) static, uint16_t,
         swl512_block_bf16)

/* ------------------------------------------------------------------ AVX-512 GEMM (T > SMALL_T)
   Many tokens make the product compute-bound.  Each output is one FMA chain over i in order:
   acc = 0; acc = fma(x[t, i], w[o, i], acc) for i = 0 .. n-1; then + b[o].  So a token's row is
   the same bits whatever T, the thread count and the panels a thread takes (not the bits of the
   few-token kernel above, whose lanes sum in another order).
   Panels of SWG_NR = 32 rows of W are packed (bfloat16 widened exactly) into wp[i][0..31], so one
   step of i loads two vectors of 16 outputs; tiles of SWG_MR = 12 tokens keep 24 accumulators in
   registers and broadcast x[t, i].  Every token runs through a panel while it is in L2, so W is
   read from memory once. */
#define SWG_MR 12
#define SWG_NR 32

SWL512 void swg_pack_f32(const float* w, swl_idx n, swl_idx nr, float* wp) {
    for (swl_idx j = 0; j < SWG_NR; j++)
        for (swl_idx i = 0; i < n; i++) wp[i * SWG_NR + j] = j < nr ? w[j * n + i] : 0.0f;
}

SWL512 void swg_pack_bf16(const uint16_t* w, swl_idx n, swl_idx nr, float* wp) {
    for (swl_idx j = 0; j < SWG_NR; j++)
        for (swl_idx i = 0; i < n; i++) {
            uint32_t u = j < nr ? (uint32_t)w[j * n + i] << 16 : 0u;
            memcpy(wp + i * SWG_NR + j, &u, 4);
        }
}

/* R (<= SWG_MR) tokens x one packed panel; m0, m1: the panel's valid outputs (a last panel of W
   may have fewer than 32 rows). */
__attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx2,fma"))) static inline void swg_tile(
        const float* x, swl_idx n, const float* wp, const float* b, float* y, swl_idx ldy, __mmask16 m0,
        __mmask16 m1, const int R) {
    __m512 acc[SWG_MR][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (swl_idx i = 0; i < n; i++) {
        __m512 w0 = _mm512_load_ps(wp + i * SWG_NR), w1 = _mm512_load_ps(wp + i * SWG_NR + 16);
        for (int r = 0; r < R; r++) {
            __m512 xb = _mm512_set1_ps(x[r * n + i]);
            acc[r][0] = _mm512_fmadd_ps(xb, w0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(xb, w1, acc[r][1]);
        }
    }
    for (int r = 0; r < R; r++) {
        if (b) {
            acc[r][0] = _mm512_add_ps(acc[r][0], _mm512_maskz_loadu_ps(m0, b));
            acc[r][1] = _mm512_add_ps(acc[r][1], _mm512_maskz_loadu_ps(m1, b + 16));
        }
        _mm512_mask_storeu_ps(y + r * ldy, m0, acc[r][0]);
        _mm512_mask_storeu_ps(y + r * ldy + 16, m1, acc[r][1]);
    }
}

/* y[T, ldy] columns [o0, o1) = x[T, n] W[o0:o1]^T (+ b); wp: SWG_NR * n floats, 64-byte aligned. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"))) static void swg_gemm_avx512(
        const float* x, swl_idx T, swl_idx n, const void* w, int bf16, const float* b, float* y, swl_idx ldy,
        swl_idx o0, swl_idx o1, float* wp) {
    for (swl_idx o = o0; o < o1; o += SWG_NR) {
        swl_idx nr = o1 - o < SWG_NR ? o1 - o : SWG_NR;
        if (bf16) swg_pack_bf16((const uint16_t*)w + o * n, n, nr, wp);
        else swg_pack_f32((const float*)w + o * n, n, nr, wp);
        __mmask16 m0 = nr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1u);
        __mmask16 m1 = nr >= 32 ? (__mmask16)0xFFFF : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1u) : 0;
        const float* bo = b ? b + o : NULL;
        swl_idx t = 0;
        for (; t + SWG_MR <= T; t += SWG_MR) swg_tile(x + t * n, n, wp, bo, y + t * ldy + o, ldy, m0, m1, SWG_MR);
        const float* xt = x + t * n;
        float* yt = y + t * ldy + o;
        switch (T - t) {
        case 1: swg_tile(xt, n, wp, bo, yt, ldy, m0, m1, 1); break;
        case 2: swg_tile(xt, n, wp, bo, yt, ldy, m0, m1, 2); break;
        case 3: swg_tile(xt, n, wp, bo, yt, ldy, m0, m1, 3); break;
        case 4: swg_tile(xt, n, wp, bo, yt, ldy, m0, m1, 4); break;
        case 5: swg_tile(xt, n, wp, bo, yt, ldy, m0, m1, 5); break;
        case 6: swg_tile(xt, n, wp, bo, yt, ldy, m0, m1, 6); break;
        case 7: swg_tile(xt, n, wp, bo, yt, ldy, m0, m1, 7); break;
        case 8: swg_tile(xt, n, wp, bo, yt, ldy, m0, m1, 8); break;
        case 9: swg_tile(xt, n, wp, bo, yt, ldy, m0, m1, 9); break;
        case 10: swg_tile(xt, n, wp, bo, yt, ldy, m0, m1, 10); break;
        case 11: swg_tile(xt, n, wp, bo, yt, ldy, m0, m1, 11); break;
        default: break;
        }
    }
}

/* ------------------------------------------------------------------ AVX2 + FMA (8 lanes) */
__attribute__((target("avx2,fma"))) static inline __m256 swl256_w_f32(const float* p) { return _mm256_loadu_ps(p); }
__attribute__((target("avx2,fma"))) static inline __m256 swl256_w_bf16(const uint16_t* p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p)), 16));
}
/* Lane sum in a fixed order: ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)). */
__attribute__((target("avx2,fma"))) static inline float swl256_sum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

#define SWL256_BLOCK(NAME, WT, LOADW, LOADS)                                                              \
__attribute__((always_inline, target("avx2,fma"))) static inline void NAME(                              \
        const float* x, swl_idx n, const WT* w, const float* b, float* y, swl_idx ldy, swl_idx o,          \
        swl_idx t0, const int R, const int TB) {                                                           \
    __m256 acc[2][SWL_R][SWL_TB];                                                                          \
    for (int h = 0; h < 2; h++)                                                                            \
        for (int r = 0; r < R; r++) for (int t = 0; t < TB; t++) acc[h][r][t] = _mm256_setzero_ps();      \
    const WT* wr[SWL_R];                                                                                   \
    for (int r = 0; r < R; r++) wr[r] = w + (o + r) * n;                                                   \
    swl_idx i = 0;                                                                                         \
    for (; i + 16 <= n; i += 16) {                                                                         \
        if (((i * (swl_idx)sizeof(WT)) & 63) == 0)                                                         \
            for (int r = 0; r < R; r++) __builtin_prefetch((const char*)(wr[r] + i) + SWL_PF_BYTES, 0, SWL_PF_HINT);  \
        for (int h = 0; h < 2; h++) {                                                                      \
            __m256 xv[SWL_TB];                                                                             \
            for (int t = 0; t < TB; t++) xv[t] = _mm256_loadu_ps(x + (t0 + t) * n + i + 8 * h);            \
            for (int r = 0; r < R; r++) {                                                                  \
                __m256 wv = LOADW(wr[r] + i + 8 * h);                                                      \
                for (int t = 0; t < TB; t++) acc[h][r][t] = _mm256_fmadd_ps(xv[t], wv, acc[h][r][t]);      \
            }                                                                                              \
        }                                                                                                  \
    }                                                                                                      \
    if (i + 8 <= n) {                                                                                      \
        for (int r = 0; r < R; r++) {                                                                      \
            __m256 wv = LOADW(wr[r] + i);                                                                  \
            for (int t = 0; t < TB; t++)                                                                   \
                acc[0][r][t] = _mm256_fmadd_ps(_mm256_loadu_ps(x + (t0 + t) * n + i), wv, acc[0][r][t]);   \
        }                                                                                                  \
        i += 8;                                                                                            \
    }                                                                                                      \
    for (int r = 0; r < R; r++)                                                                            \
        for (int t = 0; t < TB; t++) {                                                                     \
            const float* xr = x + (t0 + t) * n;                                                            \
            float s = swl256_sum(_mm256_add_ps(acc[0][r][t], acc[1][r][t]));                               \
            for (swl_idx j = i; j < n; j++) s = __builtin_fmaf(xr[j], LOADS(wr[r][j]), s);                 \
            y[(t0 + t) * ldy + o + r] = b ? s + b[o + r] : s;                                              \
        }                                                                                                  \
}

#define SWL_ID(v) (v)
SWL256_BLOCK(swl256_block_f32, float, swl256_w_f32, SWL_ID)
SWL256_BLOCK(swl256_block_bf16, uint16_t, swl256_w_bf16, swl_bf16_to_f32)

SWL_ROWS(swl_rows_f32_avx2, __attribute__((target("avx2,fma"))) static, float, swl256_block_f32)
SWL_ROWS(swl_rows_bf16_avx2, __attribute__((target("avx2,fma"))) static, uint16_t, swl256_block_bf16)
#endif

/* ------------------------------------------------------------------ run-time choice */
typedef void (*swl_rows_f32_t)(const float*, swl_idx, swl_idx, const float*, const float*, float*, swl_idx,
                               swl_idx, swl_idx);
typedef void (*swl_rows_bf16_t)(const float*, swl_idx, swl_idx, const uint16_t*, const float*, float*, swl_idx,
                                swl_idx, swl_idx);

/* ISA levels: 0 baseline, 1 AVX2+FMA, 2 AVX-512 (F, BW, VL). */
static int swl_best_isa(void) {
#ifdef SWL_HAVE_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

static swl_rows_f32_t swl_f32_for(int isa) {
#ifdef SWL_HAVE_X86
    if (isa >= 2) return swl_rows_f32_avx512;
    if (isa == 1) return swl_rows_f32_avx2;
#endif
    (void)isa;
    return swl_rows_f32_base;
}

static swl_rows_bf16_t swl_bf16_for(int isa) {
#ifdef SWL_HAVE_X86
    if (isa >= 2) return swl_rows_bf16_avx512;
    if (isa == 1) return swl_rows_bf16_avx2;
#endif
    (void)isa;
    return swl_rows_bf16_base;
}

/* The GEMM for many tokens: AVX-512 only (NULL: the caller uses BLAS). */
typedef void (*swl_gemm_t)(const float*, swl_idx, swl_idx, const void*, int, const float*, float*, swl_idx, swl_idx,
                           swl_idx, float*);
static swl_gemm_t swl_gemm_for(int isa) {
#ifdef SWL_HAVE_X86
    if (isa >= 2) return swg_gemm_avx512;
#endif
    (void)isa;
    return NULL;
}

/* Widen n bfloat16 values to float32 (exact); plain C, the compiler vectorises the shift. */
static void swl_widen(const uint16_t* src, float* dst, swl_idx n) {
    for (swl_idx i = 0; i < n; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(dst + i, &u, 4);
    }
}

#ifdef _OPENMP
#include <omp.h>
static int swl_max_threads(void) { return omp_get_max_threads(); }
#else
static int swl_max_threads(void) { return 1; }
#endif
#endif
