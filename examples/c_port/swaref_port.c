/*
 * swaref_port: a port of swaref's sliding-window attention, rolling buffer cache
 * and chunked prefill to plain C99 (libc + libm), written from docs/conformance.md
 * and docs/spec.md alone.  Spec 1.1: soft-capping and learned sinks (rule 3), ring
 * slack and rollback (rule 4), and the window family (rule 1): kept sink tokens,
 * two-sided windows and chunked attention.  It reads one golden-vector case file
 * and writes its result:
 *
 *     swaref_port CASE.safetensors OUT.out.safetensors [ERR.err.json]
 *
 * On an input the spec rejects it writes {"kind": "..."} to ERR (default: OUT
 * with ".out.safetensors" replaced by ".err.json") and exits 0.  Exit status 1
 * means the port itself failed (unreadable file, out of memory).
 *
 * All arithmetic is in double.  Outputs are written as F64 (allowed: wider
 * than the case dtype), cache positions as I64.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Failure paths                                                       */
/* ------------------------------------------------------------------ */

static const char *g_err_path;

static void die(const char *msg) {
    fprintf(stderr, "swaref_port: %s\n", msg);
    exit(1);
}

/* A rejected input: write the error kind and stop (status 0: rejecting is a valid answer). */
static void reject(const char *kind, const char *why) {
    FILE *f = fopen(g_err_path, "w");
    if (!f) die("cannot write the error file");
    fprintf(f, "{\"kind\": \"%s\", \"message\": \"%s\"}\n", kind, why);
    fclose(f);
    exit(0);
}

/* Every buffer lives until the process ends (one case per run), so allocations are
 * recorded here and released together at exit, on every path including rejections:
 * no per-path bookkeeping, and LeakSanitizer finds nothing. */
static void **g_allocs;
static size_t g_nallocs, g_allocs_cap;

static void release_all(void) {
    while (g_nallocs) free(g_allocs[--g_nallocs]);
    free(g_allocs);
    g_allocs = NULL;
    g_allocs_cap = 0;
}

/* Records p for release_all; p must be non-NULL. */
static void *track(void *p) {
    if (g_nallocs == g_allocs_cap) {
        size_t cap = g_allocs_cap ? 2 * g_allocs_cap : 64;
        void **grown = realloc(g_allocs, cap * sizeof *grown);
        if (!grown) {
            free(p);
            die("out of memory");
        }
        g_allocs = grown;
        g_allocs_cap = cap;
    }
    g_allocs[g_nallocs++] = p;
    return p;
}

/* n zeroed bytes, or exit 1: the port itself ran out of memory. */
static void *xmalloc(size_t n) {
    void *p = calloc(n ? n : 1, 1);
    if (!p) die("out of memory");
    return track(p);
}

/* A buffer whose size the case chose through a value (the cache capacity): one that
 * cannot be allocated is refused as spec rule 4 says (kind "argument"), not a port failure. */
static void *xmalloc_cache(size_t n) {
    void *p = calloc(n ? n : 1, 1);
    if (!p) reject("argument", "a cache of this capacity cannot be allocated");
    return track(p);
}

/* ------------------------------------------------------------------ */
/* safetensors: header parsing                                          */
/* ------------------------------------------------------------------ */

#define MAX_TENSORS 64
#define MAX_DIMS 8

typedef struct {
    char name[64];
    char dtype[8];
    int ndim;
    int64_t shape[MAX_DIMS];
    uint64_t begin, end;
} Tensor;

static Tensor g_t[MAX_TENSORS];
static int g_nt;
static unsigned char *g_data;     /* start of the data section */
static uint64_t g_data_len;
static char g_digest[128];        /* __metadata__.input_digest, echoed into the result */
static char g_op[128];             /* __metadata__.op: attention, prefill or decode */

typedef struct { const char *s, *end; } Cursor;

static void ws(Cursor *c) { while (c->s < c->end && (*c->s == ' ' || *c->s == '\n' || *c->s == '\t' || *c->s == '\r')) c->s++; }

static void expect(Cursor *c, char ch) {
    ws(c);
    if (c->s >= c->end || *c->s != ch) die("malformed safetensors header");
    c->s++;
}

static int peek(Cursor *c, char ch) { ws(c); return c->s < c->end && *c->s == ch; }

static void parse_string(Cursor *c, char *out, size_t cap) {
    size_t n = 0;
    expect(c, '"');
    while (c->s < c->end && *c->s != '"') {
        char ch = *c->s++;
        if (ch == '\\' && c->s < c->end) ch = *c->s++;   /* our files never escape; keep the next char */
        if (n + 1 < cap) out[n++] = ch;
    }
    if (c->s >= c->end) die("unterminated string in header");
    c->s++;
    out[n] = 0;
}

static int64_t parse_int(Cursor *c) {
    char *e;
    long long v;
    ws(c);
    v = strtoll(c->s, &e, 10);
    if (e == c->s) die("expected an integer in header");
    c->s = e;
    return (int64_t)v;
}

static int parse_int_list(Cursor *c, int64_t *out, int cap) {
    int n = 0;
    expect(c, '[');
    if (peek(c, ']')) { c->s++; return 0; }
    for (;;) {
        int64_t v = parse_int(c);
        if (n >= cap) die("too many dimensions");
        out[n++] = v;
        if (peek(c, ',')) { c->s++; continue; }
        expect(c, ']');
        return n;
    }
}

static void parse_header(const char *h, size_t len) {
    Cursor c = {h, h + len};
    char key[64];
    expect(&c, '{');
    if (peek(&c, '}')) return;
    for (;;) {
        parse_string(&c, key, sizeof key);
        expect(&c, ':');
        if (strcmp(key, "__metadata__") == 0) {
            char mk[64], mv[128];
            expect(&c, '{');
            while (!peek(&c, '}')) {
                parse_string(&c, mk, sizeof mk);
                expect(&c, ':');
                parse_string(&c, mv, sizeof mv);
                if (strcmp(mk, "input_digest") == 0) strcpy(g_digest, mv);
                if (strcmp(mk, "op") == 0) snprintf(g_op, sizeof g_op, "%s", mv);
                if (peek(&c, ',')) c.s++;
            }
            c.s++;
        } else {
            Tensor *t;
            char field[32];
            int64_t offs[2];
            if (g_nt >= MAX_TENSORS) die("too many tensors");
            t = &g_t[g_nt++];
            snprintf(t->name, sizeof t->name, "%s", key);
            expect(&c, '{');
            while (!peek(&c, '}')) {
                parse_string(&c, field, sizeof field);
                expect(&c, ':');
                if (strcmp(field, "dtype") == 0) parse_string(&c, t->dtype, sizeof t->dtype);
                else if (strcmp(field, "shape") == 0) t->ndim = parse_int_list(&c, t->shape, MAX_DIMS);
                else if (strcmp(field, "data_offsets") == 0) {
                    if (parse_int_list(&c, offs, 2) != 2) die("bad data_offsets");
                    t->begin = (uint64_t)offs[0];
                    t->end = (uint64_t)offs[1];
                } else die("unknown tensor field");
                if (peek(&c, ',')) c.s++;
            }
            c.s++;
        }
        if (peek(&c, ',')) { c.s++; continue; }
        expect(&c, '}');
        return;
    }
}

/* Bytes per element of the dtypes this port decodes; 0 for any other (never decoded:
 * such a tensor is rejected by kind before its data is read). */
static uint64_t dtype_size(const char *dt) {
    if (!strcmp(dt, "F64") || !strcmp(dt, "I64")) return 8;
    if (!strcmp(dt, "F32")) return 4;
    if (!strcmp(dt, "F16") || !strcmp(dt, "BF16")) return 2;
    return 0;
}

static void load_file(const char *path) {
    FILE *f = fopen(path, "rb");
    long size;
    unsigned char *buf;
    uint64_t hlen = 0;
    int i;
    if (!f) die("cannot open the case file");
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (size < 8) die("case file too short");
    buf = xmalloc((size_t)size);
    if (fread(buf, 1, (size_t)size, f) != (size_t)size) die("cannot read the case file");
    fclose(f);
    for (i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];          /* little-endian u64 */
    if (hlen > (uint64_t)size - 8) die("truncated header");
    parse_header((const char *)buf + 8, (size_t)hlen);
    g_data = buf + 8 + hlen;
    g_data_len = (uint64_t)size - 8 - hlen;
    for (i = 0; i < g_nt; i++) {
        const Tensor *t = &g_t[i];
        uint64_t esize = dtype_size(t->dtype), n = 1;
        int d;
        if (t->end < t->begin || t->end > g_data_len) die("tensor outside the data section");
        for (d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0) die("negative dimension in header");
            if (t->shape[d] && n > g_data_len / (uint64_t)t->shape[d]) die("tensor larger than the file");
            n *= (uint64_t)t->shape[d];
        }
        /* The decoders below read numel * size bytes: they must be exactly the tensor's. */
        if (esize && n * esize != t->end - t->begin) die("tensor size disagrees with its data_offsets");
    }
}

static Tensor *find(const char *name) {
    int i;
    for (i = 0; i < g_nt; i++)
        if (strcmp(g_t[i].name, name) == 0) return &g_t[i];
    return NULL;
}

static int64_t numel(const Tensor *t) {
    int64_t n = 1;
    int i;
    for (i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* ------------------------------------------------------------------ */
/* dtype decoding (little-endian files; bytes assembled explicitly)     */
/* ------------------------------------------------------------------ */

static uint64_t le(const unsigned char *p, int n) {
    uint64_t v = 0;
    int i;
    for (i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static double half_to_double(uint16_t h) {
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double s = (h & 0x8000) ? -1.0 : 1.0;
    if (e == 0) return s * ldexp((double)m, -24);                 /* zero and subnormals */
    if (e == 31) return m ? (double)NAN : s * (double)INFINITY;
    return s * ldexp((double)(m | 0x400), e - 25);
}

static double bits_to_double(uint64_t b) { double d; memcpy(&d, &b, 8); return d; }

static double f32_bits(uint32_t b) { float f; memcpy(&f, &b, 4); return (double)f; }

static int is_float(const Tensor *t) {
    return !strcmp(t->dtype, "F16") || !strcmp(t->dtype, "BF16") || !strcmp(t->dtype, "F32") ||
           !strcmp(t->dtype, "F64");
}

/* A float tensor as doubles (exact for every supported dtype). */
static double *as_double(const Tensor *t) {
    int64_t n = numel(t), i;
    double *out = xmalloc((size_t)n * sizeof(double));
    const unsigned char *p = g_data + t->begin;
    for (i = 0; i < n; i++) {
        if (!strcmp(t->dtype, "F64")) out[i] = bits_to_double(le(p + 8 * i, 8));
        else if (!strcmp(t->dtype, "F32")) out[i] = f32_bits((uint32_t)le(p + 4 * i, 4));
        else if (!strcmp(t->dtype, "F16")) out[i] = half_to_double((uint16_t)le(p + 2 * i, 2));
        else out[i] = f32_bits((uint32_t)le(p + 2 * i, 2) << 16);  /* BF16: the top half of an F32 */
    }
    return out;
}

static int64_t *as_i64(const Tensor *t) {
    int64_t n = numel(t), i;
    int64_t *out = xmalloc((size_t)n * sizeof(int64_t));
    for (i = 0; i < n; i++) out[i] = (int64_t)le(g_data + t->begin + 8 * i, 8);
    return out;
}

/* An optional I64 scalar (shape [] or [1]); returns 0 when absent. */
static int scalar_i64(const char *name, int64_t *v) {
    Tensor *t = find(name);
    if (!t) return 0;
    if (strcmp(t->dtype, "I64") || numel(t) != 1) reject("argument", "scalar must be one I64");
    *v = as_i64(t)[0];
    return 1;
}

/* ------------------------------------------------------------------ */
/* Validation shared by both operations                                 */
/* ------------------------------------------------------------------ */

typedef struct {
    int64_t T, S, Hq, Hkv, D;
    double *q, *k, *v;
    /* The window (rule 1), as four numbers: key j is visible to query p iff
     * (j < n_sink and j <= p) or (p - j <= left and j - p <= right and j >= chunk start),
     * left / right = -1 unbounded, chunk = 0 none.  has_window: a causal sliding window
     * of W keys (window, or two_sided (W - 1, 0)), which a cache's ring must hold. */
    int64_t left, right, chunk, n_sink;
    int has_window;
    int64_t W;
    double scale;
    int has_softcap;      /* spec 1.1: logit soft-capping s <- c * tanh(s / c) */
    double softcap;
    double *sinks;        /* spec 1.1: one learned sink logit per query head, or NULL */
    /* Scratch for one query, sized for the most keys it can be offered (use_scratch). */
    int64_t *vis;
    const double **krow, **vrow;
    double *s, *y;
} Problem;

static void use_scratch(Problem *P, int64_t max_keys) {
    size_t n = (size_t)max_keys;
    P->vis = xmalloc(n * sizeof *P->vis);
    P->krow = xmalloc(n * sizeof *P->krow);
    P->vrow = xmalloc(n * sizeof *P->vrow);
    P->s = xmalloc(n * sizeof *P->s);
    P->y = xmalloc(n * sizeof *P->y);
}

/* softcap and sinks (spec 1.1, rule 3).  Either is optional; both together are
 * undefined by the spec (no model uses both) and rejected as "argument". */
static void check_softmax_variants(Problem *P) {
    Tensor *c = find("softcap"), *s = find("sinks");
    int64_t h;
    P->has_softcap = 0;
    P->sinks = NULL;
    if (c) {
        double *x;
        if (!is_float(c) || numel(c) != 1) reject("softcap", "softcap must be one real number");
        x = as_double(c);
        if (!isfinite(x[0]) || !(x[0] > 0)) reject("softcap", "softcap must be finite and > 0");
        P->has_softcap = 1;
        P->softcap = x[0];
    }
    if (s) {
        if (!is_float(s) || s->ndim != 1 || s->shape[0] != P->Hq)
            reject("sinks", "sinks must be [Hq] real numbers (one logit per query head)");
        P->sinks = as_double(s);
        for (h = 0; h < P->Hq; h++)
            if (!isfinite(P->sinks[h])) reject("sinks", "sinks must be finite");
    }
    if (c && s) reject("argument", "softcap and sinks together are not defined (no model uses both)");
}

/* The case's window: `window` W (with `sink_tokens` n: W plus the first n positions),
 * `two_sided` (left, right) with -1 unbounded, or `attention_chunk` C; none: causal.
 * One kind per case; anything else is rejected with kind "window". */
static void check_window(Problem *P) {
    Tensor *w = find("window"), *ts = find("two_sided"), *ch = find("attention_chunk"), *sk = find("sink_tokens");
    P->left = -1; P->right = 0; P->chunk = 0; P->n_sink = 0; P->has_window = 0; P->W = 0;
    if (!!w + !!ts + !!ch > 1) reject("window", "a case gives one window: window, two_sided or attention_chunk");
    if (sk && !w) reject("window", "sink_tokens needs a window");
    if (w) {
        scalar_i64("window", &P->W);
        if (P->W < 1) reject("window", "window must be >= 1");
        P->has_window = 1;
        P->left = P->W - 1;
    }
    if (sk) {
        scalar_i64("sink_tokens", &P->n_sink);
        if (P->n_sink < 0) reject("window", "sink_tokens must be >= 0");
    }
    if (ts) {
        int64_t *lr;
        if (strcmp(ts->dtype, "I64") || ts->ndim != 1 || ts->shape[0] != 2)
            reject("window", "two_sided must be two I64 (left, right)");
        lr = as_i64(ts);
        if (lr[0] < -1 || lr[1] < -1) reject("window", "two_sided sides must be >= 0 (or -1: unbounded)");
        P->left = lr[0];
        P->right = lr[1];
        if (P->right == 0 && P->left >= 0 && P->left < INT64_MAX) {   /* (W - 1, 0) is the window W */
            P->has_window = 1;
            P->W = P->left + 1;
        }
    }
    if (ch) {
        scalar_i64("attention_chunk", &P->chunk);
        if (P->chunk < 1) reject("window", "attention_chunk must be >= 1");
    }
}

static void check_qkv(Problem *P) {
    Tensor *q = find("q"), *k = find("k"), *v = find("v");
    Tensor *sc = find("scale");
    if (!q || !k || !v) reject("shape", "q, k and v are required");
    if (!is_float(q) || !is_float(k) || !is_float(v)) reject("dtype", "q, k, v must be float tensors");
    if (strcmp(q->dtype, k->dtype) || strcmp(q->dtype, v->dtype)) reject("dtype", "q, k and v must share one dtype");
    if (q->ndim != 3 || k->ndim != 3 || v->ndim != 3) reject("shape", "q, k, v must have 3 dimensions");
    if (k->shape[0] != v->shape[0] || k->shape[1] != v->shape[1] || k->shape[2] != v->shape[2])
        reject("shape", "v must have the shape of k");
    P->T = q->shape[0]; P->Hq = q->shape[1]; P->D = q->shape[2];
    P->S = k->shape[0]; P->Hkv = k->shape[1];
    if (P->T < 1 || P->S < 1 || P->D < 1) reject("shape", "empty q or k");
    if (k->shape[2] != P->D) reject("shape", "head_dim of k differs from q");
    if (P->Hkv < 1 || P->Hq < 1 || P->Hq % P->Hkv) reject("heads", "Hq must be a multiple of Hkv");
    check_window(P);
    P->scale = 1.0 / sqrt((double)P->D);
    if (sc) {
        double *s = as_double(sc);
        if (numel(sc) != 1 || !isfinite(s[0])) reject("scale", "scale must be one finite number");
        P->scale = s[0];
    }
    P->q = as_double(q); P->k = as_double(k); P->v = as_double(v);
}

/* Differences of positions >= 0 never overflow; p + right could, so it is never formed. */
static int visible(const Problem *P, int64_t p, int64_t j) {
    if (j < P->n_sink && j <= p) return 1;
    if (P->left >= 0 && p - j > P->left) return 0;
    if (P->right >= 0 && j - p > P->right) return 0;
    if (P->chunk && j < (p / P->chunk) * P->chunk) return 0;
    return 1;
}

/* ------------------------------------------------------------------ */
/* The softmax of one query head over its visible keys (rule 3)        */
/* ------------------------------------------------------------------ */

/* One query head against the n keys it sees: krow[i] points at that key's [D] row
 * for the head's KV group, vrow[i] at its value row. */
typedef struct {
    const double *q;
    const double **krow, **vrow;
    int64_t n, D;
} Head;

static double dot(const double *a, const double *b, int64_t D) {
    double s = 0.0;
    int64_t d;
    for (d = 0; d < D; d++) s += a[d] * b[d];
    return s;
}

static int all_finite(const double *x, int64_t n) {
    int64_t i;
    for (i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* Spec 1.0.1, "finite input, finite output": the scores of finite q and k overflowed
 * float64 iff some score is not finite while q and every visible key row are.  Decided
 * per head (the reference decides per query row): a head's result depends only on its
 * own data, and heads that do not overflow keep the plain formula either way. */
static int scores_overflowed(const Head *H, const double *s) {
    int64_t i;
    if (all_finite(s, H->n) || !all_finite(H->q, H->D)) return 0;
    for (i = 0; i < H->n; i++)
        if (!all_finite(H->krow[i], H->D)) return 0;
    return 1;
}

/* Scores that overflowed, as s_i = c * y_i: c = scale * max|q| * max|k| carries the
 * magnitude (it may be +-inf), y_i = (q / max|q|) . (k_i / max|k|) is finite, |y_i| <= D. */
static double factored_scores(const Head *H, double scale, double *y) {
    double qa = 0.0, ka = 0.0;
    int64_t i, d;
    for (d = 0; d < H->D; d++) qa = fmax(qa, fabs(H->q[d]));
    for (i = 0; i < H->n; i++)
        for (d = 0; d < H->D; d++) ka = fmax(ka, fabs(H->krow[i][d]));
    if (qa == 0.0) qa = 1.0;
    if (ka == 0.0) ka = 1.0;
    for (i = 0; i < H->n; i++) {
        double t = 0.0;
        for (d = 0; d < H->D; d++) t += (H->q[d] / qa) * (H->krow[i][d] / ka);
        y[i] = t;
    }
    return scale * qa * ka;
}

/* s <- s - m and *sink <- sink - m, m = max(max_i s_i, sink): every shifted logit <= 0. */
static void shift_by_max(double *s, int64_t n, const double *sink, double *sink_shift) {
    double m = -INFINITY;
    int64_t i;
    for (i = 0; i < n; i++)
        if (s[i] > m) m = s[i];
    if (sink && *sink > m) m = *sink;
    for (i = 0; i < n; i++) s[i] -= m;
    if (sink) *sink_shift = *sink - m;
}

/* shift_by_max for scores that overflowed float64 (no softcap), from s = c * y:
 * s_i - max s = c * (y_i - y*), y* the max of y (c >= 0) or its min (c < 0); it is 0
 * where y_i == y* even when c overflowed (inf * 0 would be NaN), -inf (weight 0, as the
 * exact weight underflows) elsewhere when c did.  A sink competes with t = c * y*, the
 * largest score: t = +inf leaves it no weight, t = -inf gives it all. */
static void shift_overflowed(double c, const double *y, int64_t n, double *s, const double *sink,
                             double *sink_shift) {
    double ystar = y[0], t, key_shift = 0.0;
    int64_t i;
    for (i = 1; i < n; i++)
        if (c >= 0 ? y[i] > ystar : y[i] < ystar) ystar = y[i];
    for (i = 0; i < n; i++) s[i] = y[i] == ystar ? 0.0 : c * (y[i] - ystar);
    if (!sink) return;
    t = c * ystar;
    if (isfinite(t)) {
        double m = fmax(t, *sink);
        key_shift = t - m;
        *sink_shift = *sink - m;
    } else if (t > 0) {
        *sink_shift = -INFINITY;
    } else {
        key_shift = -INFINITY;
        *sink_shift = 0.0;
    }
    for (i = 0; i < n; i++) s[i] += key_shift;
}

/* o[D] = sum_i w_i v_i for one query head (spec rule 3, steps 2-5, in this order):
 * scale, then the optional cap, then the softmax over the visible keys only (with the
 * optional sink logit in the denominator and the maximum, never scaled, no value row).
 * The cap sees only visible keys: a masked key is never given a score (no -inf to cap).
 * s and y are scratch of H->n. */
static void attend_head(const Problem *P, const Head *H, const double *sink, double *s, double *y,
                        double *o) {
    double sink_shift = 0.0, sum = 0.0;
    int64_t i, d;
    int overflow;
    for (i = 0; i < H->n; i++) s[i] = P->scale * dot(H->q, H->krow[i], H->D);
    overflow = scores_overflowed(H, s);
    if (P->has_softcap) {
        const double c = P->softcap;
        if (overflow) {                          /* +-inf beyond float64, which the cap maps to +-c */
            double f = factored_scores(H, P->scale, y);
            for (i = 0; i < H->n; i++) s[i] = y[i] == 0.0 ? 0.0 : f * y[i];
        }
        for (i = 0; i < H->n; i++) s[i] = c * tanh(s[i] / c);
        shift_by_max(s, H->n, sink, &sink_shift);
    } else if (overflow) {
        double f = factored_scores(H, P->scale, y);
        shift_overflowed(f, y, H->n, s, sink, &sink_shift);
    } else {
        shift_by_max(s, H->n, sink, &sink_shift);
    }
    for (d = 0; d < H->D; d++) o[d] = 0.0;
    for (i = 0; i < H->n; i++) {
        double w = exp(s[i]);
        sum += w;
        for (d = 0; d < H->D; d++) o[d] += w * H->vrow[i][d];
    }
    if (sink) sum += exp(sink_shift);            /* the sink joins the denominator only */
    for (d = 0; d < H->D; d++) o[d] /= sum;
}

/* out[Hq*D] = attention of query row qrow at position p over those of the n keys
 * (keys[i] / vals[i]: [Hkv*D] rows at positions pos[i]) that it sees.  Returns 0 when
 * it sees none (the caller rejects).  Keys outside the window are never read.
 * n is at most the max_keys given to use_scratch. */
static int attend(const Problem *P, const double *qrow, int64_t p, double **keys, double **vals,
                  const int64_t *pos, int64_t n, double *out) {
    int64_t G = P->Hq / P->Hkv, h, i, nv = 0;
    for (i = 0; i < n; i++)
        if (visible(P, p, pos[i])) P->vis[nv++] = i;
    for (h = 0; nv && h < P->Hq; h++) {
        int64_t g = h / G;                                   /* GQA: contiguous groups */
        Head H;
        for (i = 0; i < nv; i++) {
            P->krow[i] = keys[P->vis[i]] + g * P->D;
            P->vrow[i] = vals[P->vis[i]] + g * P->D;
        }
        H.q = qrow + h * P->D; H.krow = P->krow; H.vrow = P->vrow; H.n = nv; H.D = P->D;
        attend_head(P, &H, P->sinks ? &P->sinks[h] : NULL, P->s, P->y, out + h * P->D);
    }
    return nv > 0;
}

/* ------------------------------------------------------------------ */
/* Output                                                               */
/* ------------------------------------------------------------------ */

typedef struct { const char *name, *dtype; int ndim; int64_t shape[4]; const void *data; size_t bytes; } Out;

static void put_le(FILE *f, uint64_t v, int n) {
    int i;
    for (i = 0; i < n; i++) fputc((int)((v >> (8 * i)) & 0xff), f);
}

/* outs must be sorted by name (the header lists them in that order; offsets back to back). */
static void write_result(const char *path, Out *outs, int n) {
    char header[4096];
    size_t len = 0, off = 0;
    int i, d;
    FILE *f;
    len += (size_t)snprintf(header + len, sizeof header - len, "{");
    for (i = 0; i < n; i++) {
        len += (size_t)snprintf(header + len, sizeof header - len, "\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                                outs[i].name, outs[i].dtype);
        for (d = 0; d < outs[i].ndim; d++)
            len += (size_t)snprintf(header + len, sizeof header - len, "%s%lld", d ? "," : "",
                                    (long long)outs[i].shape[d]);
        len += (size_t)snprintf(header + len, sizeof header - len, "],\"data_offsets\":[%lu,%lu]},",
                                (unsigned long)off, (unsigned long)(off + outs[i].bytes));
        off += outs[i].bytes;
    }
    len += (size_t)snprintf(header + len, sizeof header - len, "\"__metadata__\":{\"input_digest\":\"%s\"}}",
                            g_digest);
    while (len % 8) header[len++] = ' ';
    f = fopen(path, "wb");
    if (!f) die("cannot write the result file");
    put_le(f, len, 8);
    fwrite(header, 1, len, f);
    for (i = 0; i < n; i++) {
        /* Values are written byte by byte in little-endian order, whatever the host's order. */
        const unsigned char *p = outs[i].data;
        size_t j;
        for (j = 0; j < outs[i].bytes; j += 8) {
            uint64_t v;
            memcpy(&v, p + j, 8);
            put_le(f, v, 8);
        }
    }
    fclose(f);
}

/* ------------------------------------------------------------------ */
/* attention: one shot with explicit positions                         */
/* ------------------------------------------------------------------ */

static int64_t *positions(const char *name, int64_t n) {
    Tensor *t = find(name);
    int64_t *p, i;
    if (!t || strcmp(t->dtype, "I64") || t->ndim != 1) reject("positions", "positions must be 1-D I64");
    if (t->shape[0] != n) reject("positions", "positions length differs from the rows");
    p = as_i64(t);
    for (i = 0; i < n; i++) {
        if (p[i] < 0) reject("positions", "positions must be >= 0");
        if (i && p[i] <= p[i - 1]) reject("positions", "positions must be strictly increasing");
    }
    return p;
}

static void run_attention(const char *out_path) {
    Problem P;
    int64_t *qp, *kp, i, j;
    double **keys, **vals, *out;
    Out o;
    check_qkv(&P);
    kp = positions("k_pos", P.S);
    qp = positions("q_pos", P.T);
    check_softmax_variants(&P);
    use_scratch(&P, P.S);
    keys = xmalloc((size_t)P.S * sizeof *keys);
    vals = xmalloc((size_t)P.S * sizeof *vals);
    for (j = 0; j < P.S; j++) {
        keys[j] = P.k + j * P.Hkv * P.D;
        vals[j] = P.v + j * P.Hkv * P.D;
    }
    out = xmalloc((size_t)(P.T * P.Hq * P.D) * sizeof(double));
    for (i = 0; i < P.T; i++) {                 /* validate every query before computing any */
        int seen = 0;
        for (j = 0; j < P.S; j++) seen |= visible(&P, qp[i], kp[j]);
        if (!seen) reject("no_visible_key", "a query sees no key");
    }
    for (i = 0; i < P.T; i++)
        attend(&P, P.q + i * P.Hq * P.D, qp[i], keys, vals, kp, P.S, out + i * P.Hq * P.D);
    o.name = "out"; o.dtype = "F64"; o.ndim = 3;
    o.shape[0] = P.T; o.shape[1] = P.Hq; o.shape[2] = P.D;
    o.data = out; o.bytes = (size_t)(P.T * P.Hq * P.D) * sizeof(double);
    write_result(out_path, &o, 1);
}

/* ------------------------------------------------------------------ */
/* The rolling buffer cache (rule 4)                                    */
/* ------------------------------------------------------------------ */

/* n_sink fixed slots, then a ring of C slots (rule 4's slot rule): position p < n_sink
 * lives in slot p, position p >= n_sink in slot n_sink + (p - n_sink) mod C.  The ring's
 * valid slots always hold the consecutive positions next - n_held .. next - 1 (the ring
 * invariant); a sink slot holds its position or -1. */
typedef struct {
    int64_t C;           /* ring slots */
    int64_t n_sink;      /* fixed slots before the ring */
    int64_t NS;          /* n_sink + C: the slots a state has */
    int has_window;      /* a sliding window of W keys */
    int64_t W, chunk;    /* chunk: chunked attention's chunk size, 0 none */
    size_t row;          /* Hkv * D */
    int64_t *pos;        /* [NS], -1 = empty (never read) */
    double *k, *v;       /* [NS, row] */
    int64_t n_seen;      /* tokens written since the (constructed) empty state */
    int64_t seen_ring;   /* of them, at positions >= n_sink */
    int64_t n_held;      /* valid ring slots */
    int64_t next;        /* position the next token must have; -1 while empty */
} Ring;

static void ring_init(Ring *R, const Problem *P, int64_t C) {
    int64_t s;
    R->C = C;
    R->n_sink = P->n_sink;
    R->NS = P->n_sink + C;
    R->has_window = P->has_window;
    R->W = P->W;
    R->chunk = P->chunk;
    R->row = (size_t)(P->Hkv * P->D);
    R->pos = xmalloc_cache((size_t)R->NS * sizeof(int64_t));
    R->k = xmalloc_cache((size_t)R->NS * R->row * sizeof(double));
    R->v = xmalloc_cache((size_t)R->NS * R->row * sizeof(double));
    for (s = 0; s < R->NS; s++) R->pos[s] = -1;
    R->n_seen = R->seen_ring = R->n_held = 0;
    R->next = -1;
}

static int64_t slot_of(const Ring *R, int64_t p) {
    return p < R->n_sink ? p : R->n_sink + (p - R->n_sink) % R->C;
}

static void ring_put(Ring *R, int64_t p, const double *k, const double *v) {
    int64_t s = slot_of(R, p);
    R->pos[s] = p;
    memcpy(R->k + s * R->row, k, R->row * sizeof(double));
    memcpy(R->v + s * R->row, v, R->row * sizeof(double));
}

/* How many of the positions lo .. hi - 1 (lo <= hi) are ring positions (>= n_sink). */
static int64_t ring_count(const Ring *R, int64_t lo, int64_t hi) {
    return hi - (lo > R->n_sink ? lo : (hi < R->n_sink ? hi : R->n_sink));
}

/* The case's initial ring (init_pos, init_k, init_v; [NS] slots): validated, then its
 * valid slots loaded.  It then counts as n_seen = the number of valid slots (as swaref's
 * load_state: nothing before them was ever written, so nothing was evicted). */
static void ring_load(Ring *R, const char *dtype) {
    Tensor *ip = find("init_pos"), *ik = find("init_k"), *iv = find("init_v");
    int64_t *p, lo = INT64_MAX, hi = -1, cnt = 0, ring = 0, s, NS = R->NS;
    double *kk, *vv;
    if (!ip) return;
    if (strcmp(ip->dtype, "I64") || ip->ndim != 1 || ip->shape[0] != NS || !ik || !iv ||
        numel(ik) != NS * (int64_t)R->row || numel(iv) != NS * (int64_t)R->row)
        reject("shape", "init_pos [n_sink + C], init_k and init_v [n_sink + C, Hkv, D] required together");
    if (strcmp(ik->dtype, dtype) || strcmp(iv->dtype, dtype)) reject("dtype", "init_k/init_v must have q's dtype");
    p = as_i64(ip);
    for (s = 0; s < NS; s++) {
        if (p[s] < -1) reject("positions", "init_pos holds -1 or positions >= 0");
        if (p[s] < 0) continue;
        if (slot_of(R, p[s]) != s) reject("positions", "a cached position is not in its slot (rule 4)");
        cnt++;
        ring += p[s] >= R->n_sink;
        if (p[s] < lo) lo = p[s];
        if (p[s] > hi) hi = p[s];
    }
    if (cnt && hi - lo + 1 != cnt) reject("positions", "cached positions are not consecutive");
    if (hi == INT64_MAX) reject("positions", "the cache's next position must fit in int64");
    kk = as_double(ik);
    vv = as_double(iv);
    for (s = 0; s < NS; s++)
        if (p[s] >= 0) ring_put(R, p[s], kk + s * R->row, vv + s * R->row);
    R->n_seen = cnt;
    R->seen_ring = R->n_held = ring;
    R->next = cnt ? hi + 1 : -1;
}

/* Checks for writing n tokens at positions from `first`, before anything is written. */
static void ring_check_write(const Ring *R, int64_t first, int64_t n) {
    if (first < 0) reject("positions", "positions must be >= 0");
    if (R->next >= 0 && first != R->next) reject("positions", "a write must continue the cache");
    if (n > INT64_MAX - first) reject("positions", "positions must fit in int64");
    if (!R->has_window && !R->chunk && R->n_held + n > R->C) reject("cache", "a full-attention cache is full");
}

/* Write n tokens (rows k, v) at positions first .. first + n - 1: every sink position,
 * and of the ring positions only the last min(count, C), as earlier ones would be
 * overwritten within the same write. */
static void ring_write(Ring *R, int64_t first, int64_t n, const double *k, const double *v) {
    int64_t ring, t;
    ring_check_write(R, first, n);
    ring = ring_count(R, first, first + n);
    for (t = 0; t < n; t++) {
        int64_t p = first + t;
        if (p < R->n_sink || p >= first + n - (ring < R->C ? ring : R->C))
            ring_put(R, p, k + t * R->row, v + t * R->row);
    }
    R->n_seen += n;
    R->seen_ring += ring;
    R->n_held = R->n_held + ring < R->C ? R->n_held + ring : R->C;
    R->next = first + n;
}

/* Whether rollback(n) is possible (rule 4), n <= n_seen.  After taking back n the cache
 * continues at P = next - n, and the queries at P and later need (besides the fixed sink
 * slots) the ring keys from a = max(lo(P), first, n_sink) to P - 1, where first = next -
 * n_seen is the first position written and lo(P) the first key the window lets a query
 * at P see: P - W + 1 (sliding), (P / chunk) * chunk (chunked), none (full attention).
 * Possible iff that range is empty or held: a >= next - n_held, the oldest ring position.
 * For a sliding window this is n <= n_held - W + 1 once the ring wrapped, any n for
 * W = 1, any n before a wrap, and all n_seen tokens. */
static int ring_can_roll_back(const Ring *R, int64_t n) {
    int64_t P = R->next - n, first = R->next - R->n_seen, a = first;
    if (R->has_window && P - (R->W - 1) > a) a = P - (R->W - 1);
    if (R->chunk && (P / R->chunk) * R->chunk > a) a = (P / R->chunk) * R->chunk;
    if (R->n_sink > a) a = R->n_sink;
    return a > P - 1 || a >= R->next - R->n_held;
}

/* Take back the last n tokens: their slots become empty (-1, never read again).
 * Refused, with the ring untouched, when a key a later query needs is already
 * overwritten. */
static void ring_rollback(Ring *R, int64_t n) {
    int64_t p, lo, ring;
    if (n < 0) reject("rollback", "rollback needs n >= 0");
    if (n > R->n_seen) reject("rollback", "cannot roll back more tokens than were written");
    if (n == 0) return;
    if (!ring_can_roll_back(R, n))
        reject("rollback", "a later query would need a key already overwritten (rule 4)");
    /* Sink positions among the last n empty their fixed slot; of the ring positions only
     * the n_held newest are in the ring (rolling back everything after a wrap takes back
     * more than it holds). */
    for (p = R->next - n; p < R->next && p < R->n_sink; p++) R->pos[p] = -1;
    ring = ring_count(R, R->next - n, R->next);
    lo = R->next - (ring < R->n_held ? ring : R->n_held);
    for (p = lo; p < R->next; p++) R->pos[slot_of(R, p)] = -1;
    R->n_seen -= n;
    R->seen_ring -= ring;
    R->n_held -= ring < R->n_held ? ring : R->n_held;
    R->next -= n;
}

/* ------------------------------------------------------------------ */
/* prefill / decode trace                                               */
/* ------------------------------------------------------------------ */

/* One step of a trace: a prefill chunk of n tokens, a decode token, or a rollback of n. */
enum { STEP_CHUNK, STEP_DECODE, STEP_ROLLBACK };
typedef struct { int kind; int64_t n; } Step;

/* Collects, per step, the ring's state (what the case compares exactly). */
typedef struct { int64_t *pos; double *k, *v; int64_t n; } States;

static void record(States *S, const Ring *R) {
    memcpy(S->pos + S->n * R->NS, R->pos, (size_t)R->NS * sizeof(int64_t));
    memcpy(S->k + S->n * R->NS * R->row, R->k, (size_t)R->NS * R->row * sizeof(double));
    memcpy(S->v + S->n * R->NS * R->row, R->v, (size_t)R->NS * R->row * sizeof(double));
    S->n++;
}

/* Queries a .. a + n - 1 (tokens of the trace) at positions first .. first + n - 1 attend
 * to the ring's valid slots plus `extra` of their own keys (a prefill chunk: n; decode: 0,
 * it is in the ring already).  keys/vals/kpos are scratch of C + n entries. */
static void attend_step(const Problem *P, const Ring *R, int64_t a, int64_t n, int64_t first, int extra,
                        double **keys, double **vals, int64_t *kpos, double *out) {
    int64_t nk = 0, s, t;
    for (s = 0; s < R->NS; s++) {
        if (R->pos[s] < 0) continue;          /* empty slots are never read */
        keys[nk] = R->k + s * R->row; vals[nk] = R->v + s * R->row; kpos[nk] = R->pos[s]; nk++;
    }
    for (t = 0; extra && t < n; t++) {
        keys[nk] = P->k + (a + t) * R->row; vals[nk] = P->v + (a + t) * R->row; kpos[nk] = first + t; nk++;
    }
    for (t = 0; t < n; t++)
        if (!attend(P, P->q + (a + t) * P->Hq * P->D, first + t, keys, vals, kpos, nk,
                    out + (a + t) * P->Hq * P->D))
            reject("no_visible_key", "a query sees no key");
}

/* The trace's steps.  Without a `steps` tensor (format 1): the schedule's chunks, then
 * n_decode decode tokens.  With it (spec 1.1): rows (op, n), op 0 a chunk of n >= 1
 * token rows, 1 a decode token (n = 1), 2 a rollback of n >= 0 (no token row); the
 * schedule and n_decode still list the chunks and count the decodes, and must agree. */
static Step *read_steps(const Problem *P, int64_t *nsteps) {
    Tensor *ts = find("schedule"), *tp = find("steps");
    int64_t n_decode, nsched, *sched, sum = 0, i, *rows, ichunk = 0, ndec = 0;
    Step *steps;
    if (!scalar_i64("n_decode", &n_decode)) reject("argument", "n_decode is required");
    if (n_decode < 0 || n_decode > P->T) reject("shape", "n_decode out of range");
    if (!ts || strcmp(ts->dtype, "I64") || ts->ndim != 1) reject("schedule", "schedule must be 1-D I64");
    nsched = ts->shape[0];
    sched = as_i64(ts);
    for (i = 0; i < nsched; i++) {
        if (sched[i] < 1) reject("schedule", "chunk sizes must be >= 1");
        if (sched[i] > P->T - sum) reject("schedule", "the schedule sums past the prompt length");
        sum += sched[i];                 /* never overflows: sum <= T */
    }
    if (sum != P->T - n_decode) reject("schedule", "the schedule does not sum to the prompt length");
    if (!tp) {
        *nsteps = nsched + n_decode;
        steps = xmalloc((size_t)*nsteps * sizeof *steps);
        for (i = 0; i < *nsteps; i++) {
            steps[i].kind = i < nsched ? STEP_CHUNK : STEP_DECODE;
            steps[i].n = i < nsched ? sched[i] : 1;
        }
        return steps;
    }
    if (strcmp(tp->dtype, "I64") || tp->ndim != 2 || tp->shape[1] != 2)
        reject("schedule", "steps must be I64 [n_steps, 2]");
    *nsteps = tp->shape[0];
    rows = as_i64(tp);
    steps = xmalloc((size_t)(*nsteps ? *nsteps : 1) * sizeof *steps);
    for (i = 0; i < *nsteps; i++) {
        /* A malformed program is a malformed schedule (kind "schedule"), whatever the row. */
        int64_t op = rows[2 * i], n = rows[2 * i + 1];
        if (!((op == 0 && n >= 1) || (op == 1 && n == 1) || (op == 2 && n >= 0)))
            reject("schedule", "steps rows are (0, n >= 1) prefill, (1, 1) decode or (2, n >= 0) rollback");
        steps[i].kind = op == 0 ? STEP_CHUNK : op == 1 ? STEP_DECODE : STEP_ROLLBACK;
        steps[i].n = n;
        if (op == 0 && (ichunk >= nsched || n != sched[ichunk++]))
            reject("schedule", "a chunk step differs from the schedule");
        ndec += op == 1;
    }
    if (ichunk != nsched || ndec != n_decode) reject("schedule", "steps disagree with schedule and n_decode");
    return steps;
}

/* A running trace: the problem, its ring, the outputs and states so far. */
typedef struct {
    Problem P;
    Ring R;
    States st;
    int64_t start;           /* position of the first token written into an empty ring */
    int64_t a;               /* token rows consumed */
    double *out;             /* [N, Hq, D] */
    double **keys, **vals;   /* scratch: the keys one step offers its queries (n_sink + C + N at most) */
    int64_t *kpos;
} Trace;

/* One step.  Each token takes the ring's next position (the first one `start`), so after a
 * rollback of n the next rows reuse the positions of the rolled-back tokens. */
static void trace_step(Trace *X, const Step *sp) {
    Problem *P = &X->P;
    Ring *R = &X->R;
    int64_t first = R->next >= 0 ? R->next : X->start;
    if (sp->kind == STEP_ROLLBACK) {
        ring_rollback(R, sp->n);
    } else if (sp->kind == STEP_DECODE) {
        /* Decode writes first: its query must see itself, and the one slot it
         * overwrites held p - C (or older), outside its window. */
        if (X->a + 1 > P->T) reject("shape", "more tokens consumed than q has rows");
        ring_write(R, first, 1, P->k + X->a * R->row, P->v + X->a * R->row);
        attend_step(P, R, X->a, 1, first, 0, X->keys, X->vals, X->kpos, X->out);
        X->a += 1;
    } else {
        /* A prefill chunk attends first: its early queries still need slots that
         * writing the chunk would overwrite; then the chunk is written. */
        if (X->a + sp->n > P->T) reject("shape", "more tokens consumed than q has rows");
        ring_check_write(R, first, sp->n);
        attend_step(P, R, X->a, sp->n, first, 1, X->keys, X->vals, X->kpos, X->out);
        ring_write(R, first, sp->n, P->k + X->a * R->row, P->v + X->a * R->row);
        X->a += sp->n;
    }
    record(&X->st, R);
}

/* out, and the ring's state after every step: cache_k, cache_pos, cache_v (sorted by name). */
static void write_trace(const char *out_path, const Trace *X) {
    const Problem *P = &X->P;
    int64_t n = X->st.n, C = X->R.NS;
    Out o[4];
    o[0].name = "cache_k"; o[0].dtype = "F64"; o[0].ndim = 4;
    o[0].shape[0] = n; o[0].shape[1] = C; o[0].shape[2] = P->Hkv; o[0].shape[3] = P->D;
    o[0].data = X->st.k; o[0].bytes = (size_t)n * C * X->R.row * sizeof(double);
    o[1].name = "cache_pos"; o[1].dtype = "I64"; o[1].ndim = 2;
    o[1].shape[0] = n; o[1].shape[1] = C;
    o[1].data = X->st.pos; o[1].bytes = (size_t)(n * C) * sizeof(int64_t);
    o[2] = o[0]; o[2].name = "cache_v"; o[2].data = X->st.v;
    o[3].name = "out"; o[3].dtype = "F64"; o[3].ndim = 3;
    o[3].shape[0] = P->T; o[3].shape[1] = P->Hq; o[3].shape[2] = P->D;
    o[3].data = X->out; o[3].bytes = (size_t)(P->T * P->Hq * P->D) * sizeof(double);
    write_result(out_path, o, 4);
}

static void run_trace(const char *out_path) {
    Trace X;
    Problem *P = &X.P;
    Step *steps;
    int64_t C, NS, N, nsteps, i;

    check_qkv(P);
    N = P->T;
    if (P->S != N) reject("shape", "k and v need one row per token");
    if (P->right != 0) reject("window", "a cache is causal: a two-sided window that looks ahead needs attention");
    if (!scalar_i64("start", &X.start) || !scalar_i64("capacity", &C))
        reject("argument", "start and capacity are required");
    if (C < 1) reject("cache", "capacity must be >= 1");
    if (P->has_window && C < P->W) reject("cache", "a sliding-window cache needs capacity >= window");
    if (P->chunk && C < P->chunk) reject("cache", "a chunked cache needs capacity >= the chunk size");
    steps = read_steps(P, &nsteps);
    /* C and n_sink are the sizes that come from values, not shapes: the slots and the state
     * after each step are (n_sink + C) * Hkv * D doubles each, which must not wrap size_t
     * (spec rule 4: a cache that cannot be allocated is refused with kind "argument"). */
    if (P->n_sink > INT64_MAX - C) reject("argument", "a cache of this size cannot be allocated");
    NS = P->n_sink + C;
    if ((uint64_t)NS > SIZE_MAX / sizeof(double) / (uint64_t)(P->Hkv * P->D) / (uint64_t)(nsteps + 2) ||
        (uint64_t)NS > SIZE_MAX / sizeof(double) - (uint64_t)N)
        reject("argument", "a cache of this capacity cannot be allocated");
    check_softmax_variants(P);
    ring_init(&X.R, P, C);
    ring_load(&X.R, find("q")->dtype);
    if (X.R.next >= 0 && X.start != X.R.next) reject("positions", "start must continue the cache");
    if (X.start < 0) reject("positions", "start must be >= 0");

    X.a = 0;
    X.out = xmalloc((size_t)(N * P->Hq * P->D) * sizeof(double));
    X.st.pos = xmalloc_cache((size_t)(nsteps * NS) * sizeof(int64_t));
    X.st.k = xmalloc_cache((size_t)nsteps * NS * X.R.row * sizeof(double));
    X.st.v = xmalloc_cache((size_t)nsteps * NS * X.R.row * sizeof(double));
    X.st.n = 0;
    X.keys = xmalloc_cache((size_t)(NS + N) * sizeof *X.keys);
    X.vals = xmalloc_cache((size_t)(NS + N) * sizeof *X.vals);
    X.kpos = xmalloc_cache((size_t)(NS + N) * sizeof(int64_t));
    use_scratch(P, NS + N);

    for (i = 0; i < nsteps; i++) trace_step(&X, &steps[i]);
    write_trace(out_path, &X);
}

/* ------------------------------------------------------------------ */

int main(int argc, char **argv) {
    static char err_path[4096];
    if (argc < 3) {
        fprintf(stderr, "usage: %s CASE.safetensors OUT.out.safetensors [ERR.err.json]\n", argv[0]);
        return 2;
    }
    if (argc > 3) {
        g_err_path = argv[3];
    } else {
        size_t n = strlen(argv[2]);
        const char *suf = ".out.safetensors";
        size_t m = strlen(suf);
        if (n >= m && strcmp(argv[2] + n - m, suf) == 0) n -= m;
        if (n + 16 > sizeof err_path) die("path too long");
        memcpy(err_path, argv[2], n);
        strcpy(err_path + n, ".err.json");
        g_err_path = err_path;
    }
    atexit(release_all);
    load_file(argv[1]);
    if (strcmp(g_op, "attention") == 0) run_attention(argv[2]);
    else if (strcmp(g_op, "prefill") == 0 || strcmp(g_op, "decode") == 0) run_trace(argv[2]);
    else die("unknown __metadata__.op");
    return 0;
}
