"""DRAM read rate: how fast this machine streams a buffer far larger than its caches.

    python benchmarks/bench_memory.py [--mib 1024] [--threads 1,2] [--repeats 10] [--json]

Why: a decode step multiplies one token's activations by every weight matrix,
so it reads all the weights once per token (about 400 MB for the 124.7M
Mistral of bench_generate.py in float32, 200 MB in bfloat16) and does two flops
per weight read; at this arithmetic intensity the time is the bytes divided by
the rate at which memory delivers them.  bench_generate.py divides the one by
the other and calls it the weight-streaming limit.

What: one float32 buffer of --mib MiB (default 1 GiB), written once before
timing (so that every page is mapped), is read whole by each kernel, best of
--repeats passes (the best pass is the one least disturbed by other processes;
the rate is a ceiling, so the best is the estimate).  The size is 32x a 32 MiB
L3 (the header prints this machine's): whatever the L3 still holds from the
previous pass is at most 1/32 of the bytes, and passes go front to back, so the
front was evicted long before it is read again.  With T threads the buffer is
split in T contiguous parts, one per thread, and the rate is all bytes over the
wall time of the slowest part.

Kernels (each reads every byte once):
  * sdot:  ``np.dot(x, x)`` (BLAS sdot; both operands are the same addresses, so
    DRAM sees one read stream; BLAS kept to one thread, the threads are ours);
  * sum:   ``np.add.reduce(x)`` (NumPy's pairwise float32 sum);
  * copy:  ``np.copyto(y, x)``, printed as bytes copied per second (it also writes
    y: a memcpy moves at least twice the bytes, so it is not a read rate).
The read rate is the fastest read kernel: a slower one is limited by its
arithmetic, not by the memory (on the AMD EPYC of docs/performance.md the pairwise
sum reaches about half of sdot's rate).

Run it on a quiet machine; other processes' memory traffic lowers the numbers.
"""
import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

# BLAS's own threads would be a second level of parallelism under ours: one per thread of ours.
# (Set before NumPy loads OpenBLAS; bench_generate.py runs this file as a subprocess for that.)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402

READ_KERNELS = ("sdot", "sum")


def cache_sizes():
    """{level: bytes} of CPU 0's data/unified caches, from sysfs (Linux); {} elsewhere."""
    out = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return out
    for e in entries:
        try:
            with open(f"{base}/{e}/level") as f:
                level = int(f.read())
            with open(f"{base}/{e}/type") as f:
                kind = f.read().strip()
            with open(f"{base}/{e}/size") as f:
                size = f.read().strip()
        except (OSError, ValueError):
            continue
        if kind == "Instruction":
            continue
        mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1:], 1)
        out[level] = int(size.rstrip("KMG")) * mult
    return out


def _kernel(name, x, y):
    """The work one thread does on its part: x, y [n] float32 (y only for copy)."""
    if name == "sdot":
        return lambda: np.dot(x, x)
    if name == "sum":
        return lambda: np.add.reduce(x)
    if name == "copy":
        return lambda: np.copyto(y, x)
    raise ValueError(name)


def best_seconds(fns, pool, repeats):
    """Best wall time over `repeats` passes of running every fn in fns at once (one per thread)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for fut in [pool.submit(fn) for fn in fns]:
            fut.result()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(mib=1024, threads=(1, 2), repeats=10, kernels=("sdot", "sum", "copy")):
    """{kernel: {threads: GB/s}} and the read rate {threads: GB/s} (the best read kernel)."""
    n = mib * 2**20 // 4
    x = np.ones(n, np.float32)       # written: every page mapped before timing
    y = np.zeros(n, np.float32) if "copy" in kernels else None
    rates = {k: {} for k in kernels}
    with ThreadPoolExecutor(max(threads)) as pool:
        for t in threads:
            bounds = [n * i // t for i in range(t + 1)]
            for k in kernels:
                fns = [_kernel(k, x[a:b], None if y is None else y[a:b]) for a, b in zip(bounds, bounds[1:])]
                fns[0]()             # warm the code path (and the BLAS library) once
                rates[k][t] = x.nbytes / best_seconds(fns, pool, repeats) / 1e9
    read = {t: max(rates[k][t] for k in READ_KERNELS if k in rates) for t in threads}
    return rates, read


def header():
    caches = cache_sizes()
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        cpu = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
        flags = next(line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags"))
        cpu += f"; avx512f {'yes' if 'avx512f' in flags else 'no'}, avx512_bf16 {'yes' if 'avx512_bf16' in flags else 'no'}"
    except (OSError, StopIteration):
        pass
    levels = ", ".join(f"L{lv} {b / 2**20:g} MiB" if b >= 2**20 else f"L{lv} {b / 2**10:g} KiB"
                       for lv, b in sorted(caches.items()))
    return f"{cpu}; {os.cpu_count()} logical CPUs; caches (per instance) {levels or '?'}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=1024, help="buffer size in MiB (default 1024: 32x a 32 MiB L3)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--repeats", type=int, default=10, help="passes per kernel; the best counts (default 10)")
    ap.add_argument("--json", action="store_true", help="also print one JSON line (for bench_generate.py)")
    args = ap.parse_args(argv)
    threads = tuple(int(t) for t in args.threads.split(","))
    caches = cache_sizes()
    print(f"machine: {header()}")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if 3 in caches and args.mib * 2**20 < 8 * caches[3]:
        print(f"warning: {args.mib} MiB is less than 8x the L3 ({caches[3] / 2**20:g} MiB): part of each pass "
              f"may come from the cache")
    rates, read = measure(args.mib, threads, args.repeats)
    print(f"buffer {args.mib} MiB float32, best of {args.repeats} passes; GB/s = 1e9 bytes/s")
    print(f"{'kernel':8} " + " ".join(f"{f'{t} thread(s)':>12}" for t in threads))
    for k, r in rates.items():
        print(f"{k:8} " + " ".join(f"{r[t]:12.1f}" for t in threads) + ("   (bytes copied/s)" if k == "copy" else ""))
    print("read rate (fastest read kernel): " + ", ".join(f"{read[t]:.1f} GB/s at {t} thread(s)" for t in threads))
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.json:
        print(json.dumps({"mib": args.mib, "repeats": args.repeats, "read_gb_s": {str(t): v for t, v in read.items()},
                          "kernels": {k: {str(t): v for t, v in r.items()} for k, r in rates.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
