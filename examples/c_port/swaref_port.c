/*
 * swaref_port: a port of swaref's sliding-window attention, rolling buffer cache
 * and chunked prefill to plain C99 (libc + libm), written from
 * docs/conformance.md alone.  It reads one golden-vector case file and writes
 * its result:
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

static void *xmalloc(size_t n) {
    void *p = calloc(n ? n : 1, 1);
    if (!p) die("out of memory");
    return p;
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
        if (g_t[i].end < g_t[i].begin || g_t[i].end > g_data_len) die("tensor outside the data section");
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
    if (e == 31) return m ? NAN : s * INFINITY;
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
    int has_window;
    int64_t W;
    double scale;
} Problem;

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
    P->has_window = scalar_i64("window", &P->W);
    if (P->has_window && P->W < 1) reject("window", "window must be >= 1");
    P->scale = 1.0 / sqrt((double)P->D);
    if (sc) {
        double *s = as_double(sc);
        if (numel(sc) != 1 || !isfinite(s[0])) reject("scale", "scale must be one finite number");
        P->scale = s[0];
    }
    P->q = as_double(q); P->k = as_double(k); P->v = as_double(v);
}

static int visible(const Problem *P, int64_t p, int64_t j) {
    return j <= p && (!P->has_window || j > p - P->W);
}

/* out[Hq*D] = softmax attention of query row qrow over the n keys whose positions are visible.
 * keys[i] / vals[i] point at [Hkv*D] rows; returns 0 when no key is visible. */
static int attend(const Problem *P, const double *qrow, int64_t p, double **keys, double **vals,
                  const int64_t *pos, int64_t n, double *out) {
    int64_t G = P->Hq / P->Hkv, h, i, d, seen = 0;
    for (h = 0; h < P->Hq; h++) {
        int64_t g = h / G;                                   /* GQA: contiguous groups */
        double mx = -INFINITY, sum = 0.0;
        const double *qh = qrow + h * P->D;
        double *o = out + h * P->D;
        for (d = 0; d < P->D; d++) o[d] = 0.0;
        for (i = 0; i < n; i++) {                            /* pass 1: the largest logit */
            double s = 0.0;
            if (!visible(P, p, pos[i])) continue;
            for (d = 0; d < P->D; d++) s += qh[d] * keys[i][g * P->D + d];
            s *= P->scale;
            if (s > mx) mx = s;
        }
        for (i = 0; i < n; i++) {                            /* pass 2: weights and the weighted sum */
            double s = 0.0, w;
            if (!visible(P, p, pos[i])) continue;
            seen++;
            for (d = 0; d < P->D; d++) s += qh[d] * keys[i][g * P->D + d];
            w = exp(s * P->scale - mx);
            sum += w;
            for (d = 0; d < P->D; d++) o[d] += w * vals[i][g * P->D + d];
        }
        for (d = 0; d < P->D; d++) o[d] /= sum;
    }
    return seen > 0;
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
/* prefill / decode trace over a rolling buffer of C slots              */
/* ------------------------------------------------------------------ */

static void run_trace(const char *out_path) {
    Problem P;
    int64_t start, n_decode, C, N, T, nsched, *sched, sum = 0, i, s, step, nsteps, a;
    int64_t *ring_pos, last = -1;
    double *ring_k, *ring_v, *out, *st_k, *st_v, **keys, **vals;
    int64_t *st_pos, *kpos;
    Tensor *ts = find("schedule"), *ip = find("init_pos");
    size_t row;
    Out o[4];

    check_qkv(&P);
    N = P.T;
    row = (size_t)(P.Hkv * P.D);
    if (P.S != N) reject("shape", "k and v need one row per token");
    if (!scalar_i64("start", &start) || !scalar_i64("n_decode", &n_decode) || !scalar_i64("capacity", &C))
        reject("argument", "start, n_decode and capacity are required");
    if (P.has_window && C != P.W) reject("cache", "a sliding-window cache has capacity = window");
    if (C < 1) reject("argument", "capacity must be >= 1");
    if (n_decode < 0 || n_decode > N) reject("shape", "n_decode out of range");
    T = N - n_decode;
    if (!ts || strcmp(ts->dtype, "I64") || ts->ndim != 1) reject("schedule", "schedule must be 1-D I64");
    nsched = ts->shape[0];
    sched = as_i64(ts);
    for (i = 0; i < nsched; i++) {
        if (sched[i] < 1) reject("schedule", "chunk sizes must be >= 1");
        sum += sched[i];
    }
    if (sum != T) reject("schedule", "the schedule does not sum to the prompt length");
    if (start < 0) reject("positions", "start must be >= 0");

    ring_pos = xmalloc((size_t)C * sizeof(int64_t));
    ring_k = xmalloc((size_t)C * row * sizeof(double));
    ring_v = xmalloc((size_t)C * row * sizeof(double));
    for (s = 0; s < C; s++) ring_pos[s] = -1;
    if (ip) {                                    /* an initial state: validate, then load valid slots */
        Tensor *ik = find("init_k"), *iv = find("init_v");
        int64_t *p, lo = INT64_MAX, cnt = 0;
        double *kk, *vv;
        if (strcmp(ip->dtype, "I64") || ip->ndim != 1 || ip->shape[0] != C || !ik || !iv ||
            numel(ik) != C * (int64_t)row || numel(iv) != C * (int64_t)row)
            reject("shape", "init_pos [C], init_k and init_v [C, Hkv, D] required together");
        if (strcmp(ik->dtype, find("q")->dtype) || strcmp(iv->dtype, find("q")->dtype))
            reject("dtype", "init_k/init_v must have q's dtype");
        p = as_i64(ip);
        kk = as_double(ik);
        vv = as_double(iv);
        for (s = 0; s < C; s++) {
            if (p[s] < -1) reject("positions", "init_pos holds -1 or positions >= 0");
            if (p[s] < 0) continue;
            if (p[s] % C != s) reject("positions", "a cached position is not in slot p mod C");
            cnt++;
            if (p[s] < lo) lo = p[s];
            if (p[s] > last) last = p[s];
        }
        if (cnt && last - lo + 1 != cnt) reject("positions", "cached positions are not consecutive");
        for (s = 0; s < C; s++) {
            if (p[s] < 0) continue;
            ring_pos[s] = p[s];
            memcpy(ring_k + s * row, kk + s * row, row * sizeof(double));
            memcpy(ring_v + s * row, vv + s * row, row * sizeof(double));
        }
        if (cnt && start != last + 1) reject("positions", "start must continue the cache");
    }

    nsteps = nsched + n_decode;
    out = xmalloc((size_t)(N * P.Hq * P.D) * sizeof(double));
    st_pos = xmalloc((size_t)(nsteps * C) * sizeof(int64_t));
    st_k = xmalloc((size_t)nsteps * C * row * sizeof(double));
    st_v = xmalloc((size_t)nsteps * C * row * sizeof(double));
    keys = xmalloc((size_t)(C + N) * sizeof *keys);
    vals = xmalloc((size_t)(C + N) * sizeof *vals);
    kpos = xmalloc((size_t)(C + N) * sizeof(int64_t));

    a = 0;
    for (step = 0; step < nsteps; step++) {
        int64_t n = step < nsched ? sched[step] : 1;
        int decode = step >= nsched;
        int64_t nk = 0, t, keep, first_kept;
        /* Decode writes first (its query must see itself; it overwrites only p - W).
         * Prefill attends first: its early queries still need the slots the chunk would overwrite. */
        keep = n < C ? n : C;
        first_kept = a + n - keep;
        if (decode) {
            s = (start + a) % C;
            ring_pos[s] = start + a;
            memcpy(ring_k + s * row, P.k + a * row, row * sizeof(double));
            memcpy(ring_v + s * row, P.v + a * row, row * sizeof(double));
        }
        for (s = 0; s < C; s++) {
            if (ring_pos[s] < 0) continue;       /* empty slots are never read */
            keys[nk] = ring_k + s * row; vals[nk] = ring_v + s * row; kpos[nk] = ring_pos[s]; nk++;
        }
        if (!decode)
            for (t = a; t < a + n; t++) {
                keys[nk] = P.k + t * row; vals[nk] = P.v + t * row; kpos[nk] = start + t; nk++;
            }
        for (t = a; t < a + n; t++)
            if (!attend(&P, P.q + t * P.Hq * P.D, start + t, keys, vals, kpos, nk, out + t * P.Hq * P.D))
                reject("no_visible_key", "a query sees no key");
        if (!decode)
            for (t = first_kept; t < a + n; t++) {   /* only the last min(n, C) tokens are written */
                s = (start + t) % C;
                ring_pos[s] = start + t;
                memcpy(ring_k + s * row, P.k + t * row, row * sizeof(double));
                memcpy(ring_v + s * row, P.v + t * row, row * sizeof(double));
            }
        memcpy(st_pos + step * C, ring_pos, (size_t)C * sizeof(int64_t));
        memcpy(st_k + step * C * row, ring_k, (size_t)C * row * sizeof(double));
        memcpy(st_v + step * C * row, ring_v, (size_t)C * row * sizeof(double));
        a += n;
    }

    /* Sorted by name: cache_k, cache_pos, cache_v, out. */
    o[0].name = "cache_k"; o[0].dtype = "F64"; o[0].ndim = 4;
    o[0].shape[0] = nsteps; o[0].shape[1] = C; o[0].shape[2] = P.Hkv; o[0].shape[3] = P.D;
    o[0].data = st_k; o[0].bytes = (size_t)nsteps * C * row * sizeof(double);
    o[1].name = "cache_pos"; o[1].dtype = "I64"; o[1].ndim = 2;
    o[1].shape[0] = nsteps; o[1].shape[1] = C;
    o[1].data = st_pos; o[1].bytes = (size_t)(nsteps * C) * sizeof(int64_t);
    o[2] = o[0]; o[2].name = "cache_v"; o[2].data = st_v;
    o[3].name = "out"; o[3].dtype = "F64"; o[3].ndim = 3;
    o[3].shape[0] = N; o[3].shape[1] = P.Hq; o[3].shape[2] = P.D;
    o[3].data = out; o[3].bytes = (size_t)(N * P.Hq * P.D) * sizeof(double);
    write_result(out_path, o, 4);
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
    load_file(argv[1]);
    if (strcmp(g_op, "attention") == 0) run_attention(argv[2]);
    else if (strcmp(g_op, "prefill") == 0 || strcmp(g_op, "decode") == 0) run_trace(argv[2]);
    else die("unknown __metadata__.op");
    return 0;
}
