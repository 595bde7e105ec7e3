"""Why swaref does not use BLAS for its tile products: speed on item-sized tiles, and per-row bits vs batch size.

    python benchmarks/bench_blas_tiles.py

One thread.  (1) Row 0 of Q[:M] @ Kt for M = 1 .. 256: if its bits change with M, a kernel built
on BLAS would give a decode step (one row) other bits than a prefill chunk (many rows).
(2) GFLOP/s of OpenBLAS on the products one swaref work item does per key tile.
"""
import numpy as np, time
from threadpoolctl import threadpool_limits
rng = np.random.default_rng(0)
D, TILE = 128, 64
with threadpool_limits(1):
    for dt in (np.float32, np.float64):
        # (1) bits of row 0 of Q[M] @ Kt for M = 1 .. 256: does OpenBLAS change the summation with M?
        Q = rng.standard_normal((256, D)).astype(dt); Kt = rng.standard_normal((D, TILE)).astype(dt)
        V = rng.standard_normal((TILE, D)).astype(dt)
        ref = (Q[:1] @ Kt)[0]
        bad = [M for M in range(1, 257) if not np.array_equal((Q[:M] @ Kt)[0], ref)]
        refv = (Q[:1, :TILE] @ V)[0]
        badv = [M for M in range(1, 257) if not np.array_equal((Q[:M, :TILE] @ V)[0], refv)]
        # row r of a batch vs computed alone
        alone = np.stack([(Q[r:r + 1] @ Kt)[0] for r in range(256)])
        diff_rows = int((alone != Q @ Kt).any(axis=1).sum())
        print(f"{dt.__name__}: Q[:M] @ Kt row 0 differs from M=1 for M in {bad[:10]}{'...' if len(bad) > 10 else ''} "
              f"({len(bad)} of 256); P[:M] @ V: {len(badv)} of 256; rows of Q @ Kt that differ from the row alone: {diff_rows} of 256")
        # (2) throughput of the item-sized products through BLAS (batched matmul: no Python per call)
        n = 512
        Qb = rng.standard_normal((n, 256, D)).astype(dt); Ktb = rng.standard_normal((n, D, TILE)).astype(dt)
        Pb = rng.standard_normal((n, 256, TILE)).astype(dt); Vb = rng.standard_normal((n, TILE, D)).astype(dt)
        Qb @ Ktb
        t = time.perf_counter(); Qb @ Ktb; Pb @ Vb; dtm = time.perf_counter() - t
        print(f"{dt.__name__}: OpenBLAS on item tiles (256 x {D} x {TILE} and 256 x {TILE} x {D}), 1 thread: "
              f"{2 * 2 * n * 256 * D * TILE / dtm / 1e9:.0f} GFLOP/s")
