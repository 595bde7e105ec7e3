"""Sliding-window attention on the CPU: swaref's compiled kernel against every alternative, side by side.

    python benchmarks/bench_attention.py            # the issue's shapes (minutes; flex_attention compiles)
    python benchmarks/bench_attention.py --quick    # smaller shapes, one repeat, for a smoke run

One process, one table per (shape, dtype, threads): milliseconds (best of
``--repeat``), useful GFLOP/s (4 x Hq x D x query-key pairs inside the band:
only the work the band needs, whatever a competitor actually computes), the
ratio to swaref, and the peak extra memory of the call.

Competitors: the NumPy reference (swaref.attention, backend="reference";
on big shapes timed on the last queries only and extrapolated by band pairs,
marked "~"); a blocked NumPy implementation (query blocks of W, capped at 512 rows
to bound memory, over only the keys they need); torch scaled_dot_product_attention with a dense
sliding-window mask and block by block; flex_attention with a sliding-window
block mask under torch.compile (float32 only: it refuses float64 on CPU);
swaref backend="cython".  Rows whose library is missing are printed as skipped.

Spec 1.1's variants: the "swaref cython, softcap=50" and "swaref cython, sinks" rows time the
same call with Gemma 2's cap (a vector tanh per visible score) and with gpt-oss's learned sinks
(one logit per head starting each row's softmax), so that each variant's cost is the ratio to
the plain row.  The window rows time the same shape under the other windows of the family:
kept sink tokens (``Sliding(W, sink_tokens=4)``: W + 4 keys, a second pass over the first
tile), a two-sided window of W keys (``TwoSided(W/2 - 1, W/2)``) and chunked attention
(``Chunked(W)``: W/2 keys per query on average); their GFLOP/s count their own band pairs.
``--baseline PATH`` loads another build of swaref._core (e.g. the kernel before a
change, copied out of the tree) into the same process and adds a "kernel before/after" pair:
both kernels' band_attention called directly with the same arguments (each in its own
signature: spec 1.0's ``window`` or spec 1.1's four ints), repetitions interleaved.

Decode: one query at position 500,000 over a full cache, W = 4,096 and 16,384 slots, Hkv = 8,
D = 128, G = 1, 4, 8 (Hq = 8, 32, 64), plus Hkv = 32, G = 4 (128 MiB at float32), with K and V
evicted from every cache before each timed call (a buffer of 4x the L3 is read first: a real
model's cache, 32 layers of W slots, lives in DRAM).  Against torch SDPA on the same slots
(``--decode-numpy`` adds NumPy over the ring and the reference decode_step) and the floor: the
time to read K and V once (a NumPy sum of the same bytes, evicted likewise, best of the same
repetitions); a closing summary gives each case's ratio to the floor and SDPA's to swaref.

This is a benchmark, not a test: it asserts nothing, it prints.
"""
import argparse
import gc
import importlib.util
import math
import os
import platform
import sys
import threading
import time
import tracemalloc

import numpy as np

# torch first: its own OpenMP runtime reads GOMP_SPINCOUNT when it loads, and `import swaref`
# sets swaref's default for that variable (swaref/__init__.py); torch keeps its own defaults.
try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    torch = None

import swaref  # noqa: E402
from swaref import _backend, _core  # noqa: E402
from swaref.windows import Chunked, Sliding, TwoSided  # noqa: E402

try:
    import psutil
except ImportError:  # pragma: no cover
    psutil = None
try:
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_info = threadpool_limits = None


# ----------------------------------------------------------------- helpers

def band_pairs(q_pos, W):
    """Query-key pairs inside the band for queries at q_pos over keys 0 .. max(q_pos) (all present)."""
    q_pos = np.asarray(q_pos, dtype=np.int64)
    n = q_pos + 1 if W is None else np.minimum(q_pos + 1, W)
    return int(n.sum())


def overflow_one_row(q, k, v):
    """(q, v) copies in which query T//2, head 0 overflows the kernel's fast path while the
    reference stays finite: float32, a score past FLT_MAX (q row at FLT_MAX/2 along its own key's
    signs); float64, the unnormalised value sum past DBL_MAX (equal weights on two values at
    0.6 x DBL_MAX)."""
    q, v = q.copy(), v.copy()
    t = q.shape[0] // 2
    big = np.finfo(q.dtype).max
    if q.dtype == np.float32:
        q[t, 0] = big / 2 * np.where(k[t, 0] < 0, -1, 1)
    else:
        q[t, 0] = 0
        v[t - 1:t + 1, 0] = 0.6 * big
    return q, v


def window_pairs(T, window):
    """Query-key pairs a window of the family sees over positions 0 .. T-1 (all present)."""
    p = np.arange(T, dtype=np.int64)
    if isinstance(window, Sliding):
        n = np.minimum(p + 1, window.size) + np.minimum(window.sink_tokens, np.maximum(0, p - window.size + 1))
    elif isinstance(window, TwoSided):
        n = np.minimum(p, window.left) + 1 + np.minimum(T - 1 - p, window.right)
    else:
        n = p % window.size + 1
    return int(n.sum())


def window_call(q, k, v, window, threads):
    """attention under a window of the family: the public call where it takes the window, else
    the backend's (the same kernel; the public checks are O(T))."""
    try:
        swaref.attention(q[:1], k[:1], v[:1], window=window, backend="cython")
        return lambda: swaref.attention(q, k, v, window=window, backend="cython", num_threads=threads)
    except (swaref.SwarefError, TypeError):
        pos = np.arange(q.shape[0], dtype=np.int64)
        return lambda: _backend.attention(q, k, v, pos, pos, window, 1.0 / math.sqrt(q.shape[2]), threads)


def kernel_args(core, q, pos, k, v, e, ep, W, scale, threads):
    """band_attention's arguments for the plain window W in core's own signature."""
    if "sink_tokens" in (core.band_attention.__doc__ or ""):           # spec 1.1: kernel_params
        return (q, pos, k, v, pos, e, e, ep, 0, -1, -1 if W is None else W - 1, 0, 0, 0, scale, threads)
    return (q, pos, k, v, pos, e, e, ep, 0, -1, W, scale, threads)


def useful_gflop(Hq, D, pairs):
    return 4.0 * Hq * D * pairs / 1e9


class PeakRSS:
    """Peak resident-set growth during a block, sampled every 0.5 ms in a thread (catches torch too)."""

    def __enter__(self):
        self.proc = psutil.Process() if psutil else None
        self.base = self.proc.memory_info().rss if self.proc else 0
        self.peak = self.base
        self.stop = False
        if self.proc:
            self.t = threading.Thread(target=self._run, daemon=True)
            self.t.start()
        return self

    def _run(self):
        while not self.stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.0005)

    def __exit__(self, *exc):
        self.stop = True
        if self.proc:
            self.t.join()
            self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def extra_mb(self):
        return (self.peak - self.base) / 2 ** 20 if self.proc else float("nan")


def probe(fn):
    """Warm-up call that also measures peak extra memory: tracemalloc (NumPy allocations, exact)
    and sampled RSS (anything, torch included); the larger counts, in MB."""
    gc.collect()
    tracemalloc.start()
    with PeakRSS() as rss:
        fn()
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return max(traced / 2 ** 20, rss.extra_mb)


#: The clock of best_times: wall time, or with --cpu-time the calling thread's CPU time (less
#: disturbed by other jobs on a shared machine; meaningful for one thread only).
CLOCK = time.perf_counter


def best_times(fns, repeat, before=None):
    """Best of ``repeat`` times (CLOCK) per function, the repetitions interleaved round-robin
    so that a burst of load from elsewhere on the machine hits every competitor alike;
    ``before()`` (untimed) runs before each call (the decode rows evict the caches)."""
    best = [math.inf] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            if fn is None:
                continue
            if before is not None:
                before()
            t = CLOCK()
            fn()
            best[i] = min(best[i], CLOCK() - t)
    return best


def thread_limits(n):
    return threadpool_limits(n) if threadpool_limits else _Null()


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ---------------------------------------------------------- competitors

MAX_BLOCK = 512   # query rows per block in the blocked competitors: bounds their score block's memory


def numpy_blocked(q, k, v, W, scale):
    """Query blocks of min(W, 512) over only the keys they need, in q's dtype.

    q: [T, Hq, D], k, v: [T, Hkv, D] at positions 0 .. T-1  ->  [T, Hq, D]
    """
    T, Hq, D = q.shape
    Hkv = k.shape[1]
    G = Hq // Hkv
    Wb = min(T if W is None else W, MAX_BLOCK)
    out = np.empty_like(q)
    qg = q.reshape(T, Hkv, G, D)
    for i0 in range(0, T, Wb):
        i1 = min(T, i0 + Wb)
        j0 = 0 if W is None else max(0, i0 - W + 1)
        qb = qg[i0:i1].transpose(1, 2, 0, 3)                     # [Hkv, G, b, D]
        kb = k[j0:i1].transpose(1, 2, 0)[:, None]               # [Hkv, 1, D, n]
        s = (qb @ kb) * q.dtype.type(scale)                      # [Hkv, G, b, n]
        qp = np.arange(i0, i1)[:, None]
        kp = np.arange(j0, i1)[None, :]
        vis = kp <= qp if W is None else (kp <= qp) & (kp > qp - W)
        s = np.where(vis, s, -np.inf)
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=-1, keepdims=True)
        o = s @ v[j0:i1].transpose(1, 0, 2)[:, None]            # [Hkv, G, b, D]
        out[i0:i1] = o.transpose(2, 0, 1, 3).reshape(i1 - i0, Hq, D)
    return out


def torch_inputs(q, k, v):
    tq = torch.from_numpy(q).permute(1, 0, 2).unsqueeze(0).contiguous()   # [1, Hq, T, D]
    tk = torch.from_numpy(k).permute(1, 0, 2).unsqueeze(0).contiguous()
    tv = torch.from_numpy(v).permute(1, 0, 2).unsqueeze(0).contiguous()
    return tq, tk, tv


def torch_mask(i0, i1, j0, j1, W):
    qp = torch.arange(i0, i1)[:, None]
    kp = torch.arange(j0, j1)[None, :]
    return kp <= qp if W is None else (kp <= qp) & (kp > qp - W)


def torch_dense(tq, tk, tv, W, scale):
    T = tq.shape[2]
    with torch.no_grad():
        return F.scaled_dot_product_attention(tq, tk, tv, attn_mask=torch_mask(0, T, 0, T, W),
                                              scale=scale, enable_gqa=True)


def torch_blocked(tq, tk, tv, W, scale):
    """SDPA per query block of min(W, 512) over only the keys it needs."""
    T = tq.shape[2]
    Wb = min(T if W is None else W, MAX_BLOCK)
    out = torch.empty_like(tq)
    with torch.no_grad():
        for i0 in range(0, T, Wb):
            i1 = min(T, i0 + Wb)
            j0 = 0 if W is None else max(0, i0 - W + 1)
            out[:, :, i0:i1] = F.scaled_dot_product_attention(
                tq[:, :, i0:i1], tk[:, :, j0:i1], tv[:, :, j0:i1], attn_mask=torch_mask(i0, i1, j0, i1, W),
                scale=scale, enable_gqa=True)
    return out


_FLEX = {}


def flex_fn(T, W):
    """A compiled flex_attention and its sliding-window block mask for T tokens (cached per shape)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    key = (T, W)
    if key not in _FLEX:
        if W is None:
            def mask_mod(b, h, qi, ki):
                return qi >= ki
        else:
            def mask_mod(b, h, qi, ki):
                return (qi >= ki) & (qi - ki < W)
        bm = create_block_mask(mask_mod, None, None, T, T, device="cpu")
        _FLEX[key] = (torch.compile(flex_attention, dynamic=False), bm)
    return _FLEX[key]


# ------------------------------------------------------------------ prefill

def bench_prefill(name, T, Hq, Hkv, D, W, dtype, threads, args, rows_out):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((T, Hq, D)).astype(dtype)
    k = rng.standard_normal((T, Hkv, D)).astype(dtype)
    v = rng.standard_normal((T, Hkv, D)).astype(dtype)
    scale = 1.0 / math.sqrt(D)
    pos = np.arange(T, dtype=np.int64)
    pairs = band_pairs(pos, W)
    gflop = useful_gflop(Hq, D, pairs)
    entries = []          # [label, fn or None, note, repeat]; fn None: skipped, note says why

    def add(label, fn, note="", repeat=args.repeat, pairs=None):
        entries.append([label, fn, note, repeat, pairs])

    add("swaref cython", lambda: swaref.attention(q, k, v, window=W, backend="cython", num_threads=threads))
    if not args.no_variants:
        sinks = np.random.default_rng(2).standard_normal(Hq)
        add("swaref cython, softcap=50", lambda: swaref.attention(q, k, v, window=W, softcap=50.0, backend="cython",
                                                                  num_threads=threads), "spec 1.1 (Gemma 2's cap)")
        add("swaref cython, sinks", lambda: swaref.attention(q, k, v, window=W, sinks=sinks, backend="cython",
                                                             num_threads=threads), "spec 1.1 (gpt-oss's sinks)")
        if W is not None and W % 2 == 0:
            for label, window, note in (
                    ("swaref, kept sinks", Sliding(W, sink_tokens=4), f"spec 1.1 Sliding({W}, sink_tokens=4)"),
                    ("swaref, two-sided", TwoSided(W // 2 - 1, W // 2), f"spec 1.1 TwoSided({W // 2 - 1}, {W // 2})"),
                    ("swaref, chunked", Chunked(W), f"spec 1.1 Chunked({W})")):
                n_pairs = window_pairs(T, window)
                add(label, window_call(q, k, v, window, threads), f"{note}, {n_pairs:,} pairs", pairs=n_pairs)
    if args.baseline_core is not None:
        e, ep = np.zeros((0, Hkv, D), dtype=dtype), np.zeros(0, dtype=np.int64)
        after = kernel_args(_core, q, pos, k, v, e, ep, W, scale, threads)
        before = kernel_args(args.baseline_core, q, pos, k, v, e, ep, W, scale, threads)
        add("kernel after (this build)", lambda: _core.band_attention(*after), "band_attention, A/B")
        add("kernel before (--baseline)", lambda: args.baseline_core.band_attention(*before),
            f"band_attention of {os.path.basename(os.path.dirname(args.baseline))}/")
    if args.only_swaref:
        return _run_prefill(name, T, Hq, Hkv, D, W, dtype, threads, args, rows_out, entries, pairs, gflop, T, T)
    # The overflow fallback is per row and rare: one row forced past the dtype's largest number
    # costs that row's float64 recompute, and the plain call above pays only the finiteness test.
    qo, vo = overflow_one_row(q, k, v)
    add("swaref, 1 row overflows",
        lambda: swaref.attention(qo, k, vo, window=W, backend="cython", num_threads=threads),
        "that row recomputed in float64")
    # The reference: a Python loop over queries. On big shapes, time the last n queries and
    # scale by the band pairs (the cost per pair is flat once the window is full).
    n = min(T, args.ref_queries)
    sub_pairs = band_pairs(pos[T - n:], W)
    add("numpy reference", lambda: swaref.attention(q[T - n:], k, v, window=W, q_pos=pos[T - n:], k_pos=pos),
        f"~ extrapolated from the last {n} queries" if n < T else "", repeat=1)
    add("numpy blocked", lambda: numpy_blocked(q, k, v, W, scale))
    if torch is None:
        for label in ("torch sdpa dense mask", "torch sdpa blocked", "torch flex_attention"):
            add(label, None, "skipped: torch not installed")
    else:
        torch.set_num_threads(threads)
        tq, tk, tv = torch_inputs(q, k, v)
        add("torch sdpa dense mask", lambda: torch_dense(tq, tk, tv, W, scale), repeat=max(1, args.repeat // 2))
        add("torch sdpa blocked", lambda: torch_blocked(tq, tk, tv, W, scale))
        if dtype == np.float64:
            add("torch flex_attention", None, "skipped: flex_attention refuses float64 on CPU")
        elif args.no_flex:
            add("torch flex_attention", None, "skipped: --no-flex")
        else:
            try:
                t0 = time.perf_counter()
                fn, bm = flex_fn(T, W)
                with torch.no_grad():
                    fn(tq, tk, tv, block_mask=bm, scale=scale, enable_gqa=True)   # compile outside the timing
                ctime = time.perf_counter() - t0
                add("torch flex_attention", lambda: fn(tq, tk, tv, block_mask=bm, scale=scale, enable_gqa=True),
                    f"compiled (first call {ctime:.0f} s)")
            except Exception as exc:
                add("torch flex_attention", None, f"failed: {type(exc).__name__}: {str(exc)[:80]}")

    return _run_prefill(name, T, Hq, Hkv, D, W, dtype, threads, args, rows_out, entries, pairs, gflop, n, sub_pairs)


def _run_prefill(name, T, Hq, Hkv, D, W, dtype, threads, args, rows_out, entries, pairs, gflop, n, sub_pairs):
    results = []          # (label, seconds or None, extra MB, note)
    with thread_limits(threads):
        mem = {}
        for e in entries:
            if e[1] is None:
                continue
            try:
                mem[e[0]] = probe(e[1])
            except Exception as exc:  # a competitor failing is a result, not a crash
                e[1], e[2] = None, f"failed: {type(exc).__name__}: {str(exc)[:80]}"
        # Interleave the repetitions; competitors with fewer repetitions drop out of later rounds.
        best = [math.inf] * len(entries)
        for rep in range(max(e[3] for e in entries)):
            times = best_times([e[1] if e[1] is not None and rep < e[3] else None for e in entries], 1)
            best = [min(b, t) for b, t in zip(best, times)]
    for e, sec in zip(entries, best):
        label, fn, note, _, own_pairs = e
        if fn is None:
            results.append((label, None, None, note, None))
        elif label == "numpy reference" and n < T:
            results.append((label, sec * pairs / sub_pairs, mem[label], note, None))
        else:
            results.append((label, sec, mem[label], note, own_pairs))

    ours = results[0][1]
    print(f"\n## {name}: T={T} Hq={Hq} Hkv={Hkv} D={D} W={W} {np.dtype(dtype).name}, {threads} thread(s); "
          f"{pairs:,} band pairs, {gflop:.2f} useful GFLOP")
    print(f"{'competitor':24s} {'ms':>10s} {'GFLOP/s':>8s} {'x swaref':>9s} {'peak MB':>8s}  note")
    for label, sec, mb, note, own_pairs in results:
        if sec is None:
            print(f"{label:24s} {'-':>10s} {'-':>8s} {'-':>9s} {'-':>8s}  {note}")
            continue
        ratio = sec / ours if ours else float("nan")
        rate = (gflop if own_pairs is None else useful_gflop(Hq, D, own_pairs)) / sec
        print(f"{label:24s} {sec * 1e3:10.1f} {rate:8.1f} {ratio:9.2f} {mb:8.1f}  {note}")
        rows_out.append((name, np.dtype(dtype).name, threads, label, sec, rate, ratio, mb, note))
    sys.stdout.flush()


# ------------------------------------------------------------------- decode

def l3_bytes():
    """The last-level cache's size in bytes (sysfs; 0 if unknown)."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in os.listdir(base):
            try:
                with open(os.path.join(base, entry, "size")) as f:
                    text = f.read().strip()
            except OSError:
                continue
            mult = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30}.get(text[-1:], 1)
            best = max(best, int(text.rstrip("KMG")) * mult)
    except OSError:
        pass
    return best


class Evictor:
    """Reads a buffer of 4x the last-level cache (at least 128 MiB) before each timed call, so
    that every competitor starts with K and V in DRAM, as a real model's cache (32 layers of
    W = 4096 slots) is."""

    def __init__(self):
        self.llc = l3_bytes()
        self.buf = np.ones(max(4 * self.llc, 2 ** 27) // 4, dtype=np.float32)

    def __call__(self):
        self.buf.sum()


def decode_cases(args):
    """(W, Hq, Hkv, D) of the decode rows: the issue's grid, W x G at Hkv = 8, D = 128."""
    if args.quick:
        return [(1024, 32, 8, 128)]
    return [(W, 8 * G, 8, 128) for W in (4096, 16384) for G in (1, 4, 8)] + [(4096, 128, 32, 128)]


def bench_decode(W, Hq, Hkv, D, dtype, threads, position, args, rows_out, evict, summary):
    rng = np.random.default_rng(1)
    cache = swaref.RollingBufferCache(W, Hkv, D, dtype=dtype)
    swaref.cache_write(cache, rng.standard_normal((W, Hkv, D)).astype(dtype),
                       rng.standard_normal((W, Hkv, D)).astype(dtype), position - W)
    q = rng.standard_normal((1, Hq, D)).astype(dtype)
    k1 = rng.standard_normal((1, Hkv, D)).astype(dtype)
    scale = 1.0 / math.sqrt(D)
    G = Hq // Hkv
    n_seen = cache.n_seen

    def step(backend):
        # decode_step writes, then attends; rewind so that every repetition decodes `position`.
        cache.next_position, cache.n_seen = position, n_seen
        return swaref.decode_step(q, k1, k1, cache, backend=backend, num_threads=threads)

    def numpy_ring():
        # Over the slots in place, masked by the slots' positions (no unrotated copy).
        vis = (cache.positions >= 0) & (cache.positions <= position) & (cache.positions > position - W)
        s = np.einsum("hgd,chd->hgc", q[0].reshape(Hkv, G, D), cache.k) * dtype(scale)
        s = np.where(vis, s, -np.inf)
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=-1, keepdims=True)
        return np.einsum("hgc,chd->hgd", s, cache.v).reshape(1, Hq, D)

    def read_kv():
        return float(cache.k.sum()) + float(cache.v.sum())

    entries = [("swaref cython", lambda: step("cython"), "")]
    if args.decode_numpy:
        entries += [("numpy over the ring", numpy_ring, ""), ("numpy reference", lambda: step("reference"), "")]
    if torch is not None:
        torch.set_num_threads(threads)
        tk = torch.from_numpy(cache.k).permute(1, 0, 2).unsqueeze(0)      # views of the slots
        tv = torch.from_numpy(cache.v).permute(1, 0, 2).unsqueeze(0)
        tq = torch.from_numpy(q).permute(1, 0, 2).unsqueeze(0)

        def sdpa():
            vis = torch.from_numpy((cache.positions >= 0) & (cache.positions > position - W))[None, :]
            with torch.no_grad():
                return F.scaled_dot_product_attention(tq, tk, tv, attn_mask=vis, scale=scale, enable_gqa=True)
        entries.append(("torch sdpa", sdpa, ""))
    else:
        entries.append(("torch sdpa", None, "skipped: torch not installed"))
    entries.append(("read K and V once", read_kv,
                     f"{(cache.k.nbytes + cache.v.nbytes) / 2 ** 20:.0f} MiB, numpy sum: the floor"))
    if args.baseline_core is not None:      # both kernels called directly, same arguments
        entries.append(("kernel before", lambda: _direct_decode(args.baseline_core, cache, q, position, W, scale,
                                                               threads), "--baseline, band_attention"))
        entries.append(("kernel after", lambda: _direct_decode(_core, cache, q, position, W, scale, threads),
                        "this build, band_attention"))
    with thread_limits(threads):
        mem = [probe(fn) if fn is not None else None for _, fn, _ in entries]
        best = best_times([fn for _, fn, _ in entries], args.decode_repeat, before=evict)
    results = [(label, sec if fn is not None else None, mb, note)
               for (label, fn, note), sec, mb in zip(entries, best, mem)]
    ours = results[0][1]
    floor = dict((r[0], r[1]) for r in results)["read K and V once"]
    print(f"\n## decode at position {position:,}: W={W} Hq={Hq} Hkv={Hkv} (G={G}) D={D} "
          f"{np.dtype(dtype).name}, {threads} thread(s), K and V evicted before each call")
    print(f"{'competitor':24s} {'ms':>10s} {'GB/s K+V':>9s} {'x swaref':>9s} {'x floor':>8s} {'peak MB':>8s}  note")
    nbytes = cache.k.nbytes + cache.v.nbytes
    for label, sec, mb, note in results:
        if sec is None:
            print(f"{label:24s} {'-':>10s} {'-':>9s} {'-':>9s} {'-':>8s} {'-':>8s}  {note}")
            continue
        print(f"{label:24s} {sec * 1e3:10.3f} {nbytes / sec / 1e9:9.1f} {sec / ours:9.2f} {sec / floor:8.2f} "
              f"{mb:8.1f}  {note}")
        rows_out.append((f"decode@{position}", np.dtype(dtype).name, threads, label, sec, nbytes / sec / 1e9,
                         sec / ours, mb, note))
    sdpa_sec = dict((r[0], r[1]) for r in results).get("torch sdpa")
    by = dict((r[0], r[1]) for r in results)
    before_after = by["kernel before"] / by["kernel after"] if "kernel before" in by else None
    summary.append((W, G, Hkv, np.dtype(dtype).name, threads, nbytes, ours, floor, sdpa_sec, before_after))
    sys.stdout.flush()


def _direct_decode(core, cache, q, position, W, scale, threads):
    """A build's kernel on the same decode step, called directly (the cache as it stands: the
    step's own key already written by the swaref row's call)."""
    e = np.empty((0,) + cache.k.shape[1:], dtype=cache.k.dtype)
    ep = np.empty(0, dtype=np.int64)
    qp = np.array([position], dtype=np.int64)
    lo, hi = position - W + 1, position
    if "sink_tokens" in (core.band_attention.__doc__ or ""):           # spec 1.1: kernel_params
        return core.band_attention(q, qp, e, e, ep, cache.k, cache.v, cache.positions, lo, hi, W - 1, 0, 0, 0,
                                   scale, threads)
    return core.band_attention(q, qp, e, e, ep, cache.k, cache.v, cache.positions, lo, hi, W, scale, threads)


def print_decode_summary(summary, evict):
    print(f"\n## decode summary: K and V in DRAM (evicted: {evict.buf.nbytes / 2 ** 20:.0f} MiB read before "
          f"each call; L3 {evict.llc / 2 ** 20:.0f} MiB); floor = numpy sum of the same K and V, same process")
    print(f"{'W':>6s} {'G':>2s} {'Hkv':>3s} {'dtype':>7s} {'thr':>3s} {'K+V MiB':>8s} {'swaref ms':>10s} "
          f"{'floor ms':>9s} {'x floor':>8s} {'sdpa/swaref':>11s} {'before/after':>12s}")
    for W, G, Hkv, dt, t, nbytes, ours, floor, sdpa, before in summary:
        sd = f"{sdpa / ours:11.2f}" if sdpa else f"{'-':>11s}"
        bf = f"{before:12.2f}" if before else f"{'-':>12s}"
        print(f"{W:6d} {G:2d} {Hkv:3d} {dt:>7s} {t:3d} {nbytes / 2 ** 20:8.0f} {ours * 1e3:10.3f} {floor * 1e3:9.3f} "
              f"{ours / floor:8.2f} {sd} {bf}")
    sys.stdout.flush()


# ------------------------------------------------------------------- header

def matmul_rate(dtype, threads, n=2048):
    a = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)
    with thread_limits(threads):
        a @ a
        best = min(_timed(lambda: a @ a) for _ in range(3))
    return 2 * n ** 3 / best / 1e9


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def dram_read_rate():
    """GB/s of numpy summing a 1 GiB float32 array (larger than any cache here)."""
    a = np.ones(2 ** 28, dtype=np.float32)
    a.sum()
    return a.nbytes / min(_timed(a.sum) for _ in range(3)) / 1e9


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def header(args):
    print("# swaref attention benchmark")
    print(f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, swaref {swaref.__version__} "
          f"(OpenMP {'on' if _core.openmp_enabled() else 'off'}, default threads {_core.default_threads()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")
    if threadpool_info:
        for p in threadpool_info():
            print(f"BLAS/OpenMP pool: {p.get('internal_api')} {p.get('version')} "
                  f"kernel={p.get('architecture')} threads={p.get('num_threads')} ({os.path.basename(p['filepath'])})")
    else:
        from swaref._cpu import blas
        print(f"BLAS: {blas()} (threadpoolctl not installed: no thread counts)")
    print(f"torch: {torch.__version__ + f' ({torch.get_num_threads()} threads by default)' if torch else 'not installed: torch rows skipped'}")
    print(f"threads benchmarked: {args.threads}; dtypes: {args.dtypes}; best of {args.repeat} (prefill), "
          f"{args.decode_repeat} (decode); {'thread CPU time' if CLOCK is time.thread_time else 'wall time'}")
    for t in args.threads:
        print(f"matmul rate, {t} thread(s): float32 {matmul_rate(np.float32, t):.0f} GFLOP/s, "
              f"float64 {matmul_rate(np.float64, t):.0f} GFLOP/s (numpy 2048^3)")
    print(f"memory read rate: {dram_read_rate():.1f} GB/s (numpy sum of 1 GiB, 1 thread)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes, one repeat (a smoke run)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--shapes", default="A,B,C,decode", help="subset of A,B,C,decode")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--decode-repeat", type=int, default=20)
    ap.add_argument("--decode-numpy", action="store_true",
                    help="add the NumPy rows (over the ring, the reference) to each decode table")
    ap.add_argument("--ref-queries", type=int, default=256,
                    help="queries the NumPy reference is timed on (then extrapolated)")
    ap.add_argument("--no-flex", action="store_true", help="skip flex_attention (it compiles for minutes)")
    ap.add_argument("--skip-dense", action="store_true", help="skip dense-mask SDPA above 2 GiB of scores")
    ap.add_argument("--no-variants", action="store_true", help="skip the softcap and sinks rows")
    ap.add_argument("--baseline", help="path of another build's swaref/_core*.so: adds a kernel before/after pair")
    ap.add_argument("--only-swaref", action="store_true",
                    help="time only swaref's own rows (cython, variants, A/B): a quick before/after run")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time by the calling thread's CPU time (one thread only: on a shared machine)")
    args = ap.parse_args(argv)
    if args.cpu_time:
        global CLOCK
        if args.threads != "1":
            ap.error("--cpu-time measures the calling thread only: use it with --threads 1")
        CLOCK = time.thread_time
    args.baseline_core = None
    if args.baseline:
        spec = importlib.util.spec_from_file_location("swaref._core", args.baseline)
        args.baseline_core = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(args.baseline_core)
    args.threads = [int(t) for t in args.threads.split(",")]
    args.dtypes = [d.strip() for d in args.dtypes.split(",")]
    shapes = {s.strip() for s in args.shapes.split(",")}
    if args.quick:
        args.repeat, args.decode_repeat, args.ref_queries = 1, 5, 64
        prefill = {"A": (1024, 32, 8, 128, 128), "B": (1024, 32, 8, 128, 1024), "C": (512, 8, 8, 64, 64)}
        decode_position = 500_000
    else:
        prefill = {"A": (4096, 32, 8, 128, 512), "B": (4096, 32, 8, 128, 4096), "C": (2048, 8, 8, 64, 256)}
        decode_position = 500_000
    header(args)
    rows = []
    for name in ("A", "B", "C"):
        if name not in shapes:
            continue
        for dt in args.dtypes:
            for t in args.threads:
                bench_prefill(f"prefill ({name})", *prefill[name], np.dtype(dt).type, t, args, rows)
    if "decode" in shapes:
        evict, summary = Evictor(), []
        for W, Hq, Hkv, D in decode_cases(args):
            for dt in args.dtypes:
                for t in args.threads:
                    bench_decode(W, Hq, Hkv, D, np.dtype(dt).type, t, decode_position, args, rows, evict, summary)
        print_decode_summary(summary, evict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
