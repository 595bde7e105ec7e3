"""Weight streaming of swaref._linear: a decode step's matrices, read once from DRAM.

    python benchmarks/bench_linear.py [--threads 1,2] [--repeats 7] [--tokens 1]

Why: a decode step multiplies one token's activations by every weight matrix
(two flops per weight read), so it takes as long as memory needs to deliver the
weights.  bench_generate.py reports the whole step against that limit; this
file isolates the matrices, so that the kernel's rate can be read beside the
machine's.

What: the 85 matrices of the 124.7M-parameter Mistral of bench_generate.py
(12 layers of q, k, v, o, gate, up, down, then the 32000 x 768 LM head; 400 MB
in float32, 200 MB in bfloat16), each its own array, are multiplied by --tokens
rows of activations, all 85 in turn, best of --repeats sweeps.  Together they
are 12x a 32 MiB L3, so every sweep reads them from DRAM.  Side by side, in
this process:

  * swaref ``_linear.linear`` with float32 and with bfloat16 weights;
  * the same, on copies of the matrices in one arena, as a loaded model holds
    them (``swaref.models.weights.arena_views``: one 2 MiB-aligned buffer in
    huge pages, where NumPy leaves an array under 4 MiB in 4 KiB pages);
  * NumPy's ``x @ W.T`` (BLAS sgemv / sgemm) on the float32 weights;
  * the read rate of the same arrays: ``np.dot(w, w)`` over each one flattened
    (BLAS sdot: one read stream per array, what bench_memory.py calls a read).

Each row prints GB/s of weight bytes and its time over the read of the same
bytes (1.00: the kernel streams at the rate memory delivers).  With T threads,
swaref's kernel splits each matrix's rows over its OpenMP threads; BLAS gets T
threads as OPENBLAS_NUM_THREADS says (set it to the --threads you give: run
--threads 1 and --threads 2 separately); the read runs on one thread per
contiguous part, as in bench_memory.py, with BLAS on one thread.

Run it on a quiet machine; other processes' memory traffic lowers every row alike.
"""
import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_memory import header  # noqa: E402
from swaref import _linear  # noqa: E402
from swaref.models.bf16 import to_bfloat16  # noqa: E402
from swaref.models.weights import arena_views  # noqa: E402

D, FFN, KV, LAYERS, VOCAB = 768, 2048, 256, 12, 32000


def shapes():
    """[out, in] of every matrix of a decode step, in the order the step reads them."""
    layer = [(D, D), (KV, D), (KV, D), (D, D), (FFN, D), (FFN, D), (D, FFN)]
    return layer * LAYERS + [(VOCAB, D)]


def best(fn, repeats):
    fn()
    t = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        t = min(t, time.perf_counter() - t0)
    return t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=1)
    args = ap.parse_args(argv)
    blas = os.environ.get("OPENBLAS_NUM_THREADS", "all") + "T"
    rng = np.random.default_rng(0)
    ws = [rng.standard_normal(s, dtype=np.float32) * np.float32(0.02) for s in shapes()]
    wb = [to_bfloat16(w) for w in ws]

    def arena(arrays):
        views = arena_views([(i, w.shape, w.dtype) for i, w in enumerate(arrays)])
        for i, w in enumerate(arrays):
            views[i][...] = w
        return list(views.values())
    wsa, wba = arena(ws), arena(wb)
    xs = {n: rng.standard_normal((args.tokens, n), dtype=np.float32) for n in (D, FFN)}
    nbytes = sum(w.nbytes for w in ws)
    print(f"machine: {header()}")
    print(f"swaref._linear isa {_linear.isa()}; {len(ws)} matrices, {nbytes / 1e6:.0f} MB float32 / "
          f"{nbytes / 2e6:.0f} MB bfloat16; T = {args.tokens}; best of {args.repeats} sweeps")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{'threads':>7} {'what':34} {'ms':>8} {'GB/s':>7} {'/ read':>7}")
    for t in (int(s) for s in args.threads.split(",")):
        with ThreadPoolExecutor(t) as pool:
            def read(arrays):
                # Thread i reads part i of every array, all 85 in one task: one hand-off per sweep.
                flat = [w.reshape(-1) for w in arrays]
                parts = [[f[len(f) * i // t: len(f) * (i + 1) // t] for f in flat] for i in range(t)]

                def task(ps):
                    for p in ps:
                        np.dot(p, p)
                return lambda: [fut.result() for fut in [pool.submit(task, ps) for ps in parts]]

            def swaref(arrays):
                return lambda: [_linear.linear(xs[w.shape[1]], w, None, t) for w in arrays]

            def numpy(arrays):
                return lambda: [xs[w.shape[1]] @ w.T for w in arrays]

            rows = [("read float32 (np.dot(w, w))", read(ws), nbytes),
                    ("swaref linear float32", swaref(ws), nbytes),
                    (f"numpy x @ W.T float32 (BLAS {blas})", numpy(ws), nbytes),
                    ("read bfloat16 bytes", read([b.view(np.float32) for b in wb]), nbytes // 2),
                    ("swaref linear bfloat16", swaref(wb), nbytes // 2),
                    ("swaref linear float32, one arena", swaref(wsa), nbytes),
                    ("swaref linear bfloat16, one arena", swaref(wba), nbytes // 2)]
            base = {}
            for name, fn, nb in rows:
                sec = best(fn, args.repeats)
                if name.startswith("read"):
                    base[nb] = sec
                print(f"{t:7d} {name:34} {sec * 1e3:8.2f} {nb / sec / 1e9:7.1f} {sec / base[nb]:7.2f}")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
