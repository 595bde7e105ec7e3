"""The window family's cases (spec 1.1 part two, format version 3): kept sink tokens, two-sided windows,
chunked attention, alone and as models combine them, at the positions where their bugs show.

Where bugs show: a query at a window edge (the first query whose window no longer reaches a sink or the
start), at a chunk boundary (a query at the chunk's first position sees only itself), at the sink count's
edge (keys at n_sink - 1 and n_sink), prefill chunks that straddle chunk boundaries, decode after the ring
wrapped, rollbacks at and beyond rule 4's limit on chunked and kept-sink caches, rows of very negative
scores against a learned sink.  ``rollback_limit`` is rule 4's general limit, used to build the traces.
"""
import dataclasses

import numpy as np

from .cases import DECODE, PREFILL, ROLLBACK, CaseSpec, _random_schedule, traced

_DT4 = ("float32", "float16", "bfloat16", "float64")


def _lo(spec, P):
    """The first non-sink key a query at P needs (rule 4), or None when no key is ever evicted."""
    if spec.chunk:
        return (P // spec.chunk) * spec.chunk
    if spec.window is None:
        return None
    return max(P - spec.window + 1, spec.sink_tokens)


def rollback_limit(spec, capacity, start, steps):
    """The most tokens rule 4 lets a rollback take back after ``steps``: n <= tokens written, and once the
    ring has evicted a position, lo(N - n) >= the oldest ring position held (N: the next position)."""
    n_sink = spec.sink_tokens
    nxt, seen, seen_ring, held = start, 0, 0, 0
    for op, n in steps:
        ring = sum(p >= n_sink for p in (range(nxt - n, nxt) if op == ROLLBACK else range(nxt, nxt + n)))
        if op == ROLLBACK:
            nxt, seen, seen_ring, held = nxt - n, seen - n, seen_ring - ring, max(0, held - ring)
        else:
            nxt, seen, seen_ring, held = nxt + n, seen + n, seen_ring + ring, min(held + ring, capacity)
    if held == seen_ring or _lo(spec, nxt) is None:
        return seen
    n = 0
    while n < seen and _lo(spec, nxt - n - 1) >= nxt - held:
        n += 1
    return n


def program(spec, capacity, start, parts):
    """A trace from ``parts``: (op, n) steps, where a rollback's n may be "limit" (rule 4's limit there)."""
    steps = []
    for op, n in parts:
        if n == "limit":
            n = rollback_limit(spec, capacity, start, steps)
        steps.append((op, n))
    return traced(dataclasses.replace(spec, capacity=capacity if capacity != spec.ring else 0), steps)


def random_program(rng, spec, capacity, rounds=3):
    """Speculative decoding over a window-family cache: a prompt, then rounds of decode tokens, a draft chunk
    and a rollback (at rule 4's limit in every other round)."""
    ring = spec.chunk or spec.window
    steps = [(PREFILL, int(rng.integers(1, 2 * ring + 3)))]
    for r in range(rounds):
        steps += [(DECODE, 1)] * int(rng.integers(0, 3))
        steps.append((PREFILL, int(rng.integers(1, capacity - ring + 3))))
        limit = rollback_limit(spec, capacity, spec.start, steps)
        steps.append((ROLLBACK, limit if r % 2 == 0 else int(rng.integers(0, limit + 1))))
    return tuple(steps) + ((DECODE, 1),)


def core_cases_windows():
    """The window family's cases of the core suite, then their negative cases."""
    A, P, Dd = CaseSpec("attention"), CaseSpec("prefill"), CaseSpec("decode")
    r = dataclasses.replace
    cases = [
        # kept sink tokens: the first query whose window leaves the sinks, n_sink = W, W = 1, keys starting
        # at 1 (sink 0 absent), gaps, GQA, poison between the sinks and the window
        r(A, window=4, sink_tokens=2, T=14, S=14),
        r(A, dtype="float16", Hq=4, Hkv=2, window=3, sink_tokens=1, T=10, S=16),
        r(A, dtype="bfloat16", D=16, window=5, sink_tokens=4, T=12, S=12),
        r(A, dtype="float64", window=1, sink_tokens=1, T=6, S=6),
        r(A, window=3, sink_tokens=2, T=8, S=8, start=1),
        r(A, dtype="float64", window=4, sink_tokens=3, T=6, S=12, gaps=True),
        r(A, window=3, sink_tokens=2, T=4, S=14, poison=True),
        # kept sinks with softcap or learned sinks (a row of very negative scores)
        r(A, Hq=4, Hkv=2, D=16, window=4, sink_tokens=2, T=8, S=24, softcap=3.0),
        r(A, D=16, window=4, sink_tokens=2, T=12, S=12, sinks=1.0, neg_row=True),
        # two-sided: both sides bounded, GQA, one side unbounded, left 0, gaps, (W - 1, 0) = W, both unbounded,
        # queries before the end of S, poison, large positions, with softcap and with sinks
        r(A, window=None, two_sided=(2, 2), T=12, S=12),
        r(A, window=None, dtype="float16", Hq=4, Hkv=2, two_sided=(3, 1), T=10, S=10),
        r(A, window=None, dtype="bfloat16", two_sided=(None, 2), T=9, S=9),
        r(A, window=None, dtype="float64", two_sided=(2, None), T=9, S=9),
        r(A, window=None, two_sided=(0, 3), T=8, S=8),
        r(A, window=None, two_sided=(1, 1), T=10, S=10, gaps=True),
        r(A, window=None, two_sided=(2, 0), T=8, S=8),
        r(A, window=None, dtype="float16", two_sided=(None, None), T=6, S=6),
        r(A, window=None, two_sided=(2, 3), T=5, S=12),
        r(A, window=None, two_sided=(1, 1), T=4, S=12, start=5, poison=True),
        r(A, window=None, two_sided=(2, 2), T=8, S=8, start=2 ** 40 + 3),
        r(A, window=None, Hq=4, Hkv=2, D=16, two_sided=(2, 2), T=16, S=16, softcap=3.0),
        r(A, window=None, dtype="bfloat16", Hq=8, Hkv=2, D=16, two_sided=(3, 2), T=12, S=12, sinks=1.0,
          neg_row=True),
        # chunked: several boundaries, GQA, a start inside a chunk, chunk 1, large positions, poison in the
        # previous chunks, gaps, with softcap and with sinks
        r(A, window=None, chunk=4, T=13, S=13),
        r(A, window=None, dtype="float16", Hq=4, Hkv=2, chunk=3, T=10, S=10),
        r(A, window=None, dtype="bfloat16", chunk=5, T=9, S=16, start=3),
        r(A, window=None, dtype="float64", chunk=1, T=5, S=5),
        r(A, window=None, chunk=8, T=12, S=12, start=2 ** 40 + 5),
        r(A, window=None, chunk=4, T=4, S=12, poison=True),
        r(A, window=None, dtype="float64", chunk=4, T=8, S=14, gaps=True),
        r(A, window=None, Hq=4, Hkv=2, D=16, chunk=4, T=16, S=16, softcap=2.0),
        r(A, window=None, dtype="float16", D=16, chunk=4, T=12, S=12, sinks=1.0, neg_row=True),
    ]
    cases += [
        # kept-sink caches: prompts that write the sinks chunk by chunk, the prompt ending at n_sink then
        # decode after the wrap, n_sink = W with slack, the first position 1, softcap
        r(P, window=4, sink_tokens=2, T=14, schedule=(1, 3, 5, 5)),
        r(P, dtype="float16", Hq=4, Hkv=2, window=3, sink_tokens=1, T=10, schedule=(7, 3)),
        r(Dd, window=3, sink_tokens=2, T=2, schedule=(2,), n_decode=10),
        r(Dd, dtype="bfloat16", window=4, sink_tokens=4, capacity=6, T=5, schedule=(5,), n_decode=9),
        r(Dd, dtype="float64", window=4, sink_tokens=2, T=3, schedule=(3,), n_decode=8, start=1),
        r(Dd, window=4, sink_tokens=2, capacity=6, T=6, schedule=(6,), n_decode=8, softcap=2.0),
        # chunked caches: one prompt under several schedules across the boundaries, decode after the wrap,
        # slack, a start inside a chunk, softcap, sinks
        r(P, window=None, chunk=4, T=14, schedule=(3, 2, 5, 4)),
        r(P, window=None, chunk=4, T=14, schedule=(4, 4, 4, 2)),
        r(P, window=None, chunk=4, T=14, schedule=(14,)),
        r(P, window=None, dtype="float16", chunk=3, T=11, schedule=(2, 2, 2, 2, 2, 1)),
        r(P, window=None, dtype="bfloat16", chunk=4, T=11, schedule=(2, 6, 3), start=5),
        r(Dd, window=None, dtype="bfloat16", chunk=4, T=3, schedule=(3,), n_decode=12),
        r(Dd, window=None, dtype="float64", chunk=4, capacity=6, T=5, schedule=(2, 3), n_decode=10),
        r(P, window=None, chunk=4, T=12, schedule=(5, 7), softcap=3.0),
        r(Dd, window=None, Hq=4, Hkv=2, chunk=3, T=4, schedule=(4,), n_decode=8, sinks=1.0),
    ]
    # rollback: at rule 4's limit on chunked and kept-sink caches (with and without slack), at a chunk
    # boundary, into the sink slots, then chunks and decode tokens reading what is left
    ck = r(Dd, window=None, chunk=4)
    sk = r(Dd, window=3, sink_tokens=2)
    cases += [
        program(ck, 4, 0, ((0, 10), (2, "limit"), (1, 1), (1, 1), (0, 3), (2, "limit"), (1, 1))),
        program(ck, 4, 0, ((0, 8), (2, "limit"), (0, 5), (1, 1))),
        program(r(ck, dtype="float16", Hq=4, Hkv=2), 6, 0, ((0, 9), (1, 1), (2, "limit"), (0, 4), (2, 2),
                                                             (1, 1))),
        program(r(ck, dtype="bfloat16", start=3), 5, 3, ((0, 7), (2, "limit"), (1, 1), (0, 6), (2, "limit"),
                                                         (1, 1))),
        program(sk, 3, 0, ((0, 9), (2, "limit"), (1, 1), (0, 4), (2, "limit"), (1, 1))),
        program(r(sk, dtype="float64"), 5, 0, ((0, 10), (2, "limit"), (0, 3), (1, 1), (2, 1), (1, 1))),
        program(r(Dd, window=4, sink_tokens=3), 4, 0, ((0, 5), (2, 3), (1, 1), (1, 1), (0, 4), (2, "limit"),
                                                      (1, 1))),
        program(r(sk, sinks=1.0, dtype="float16"), 4, 0, ((0, 8), (2, "limit"), (0, 3), (1, 1))),
        program(r(ck, softcap=2.0), 6, 0, ((0, 11), (2, "limit"), (0, 4), (1, 1))),
        # beyond the limit and still possible: back to a chunk start (its queries need nothing older), back
        # to n_sink (the sinks suffice); a port that applies the limit literally refuses these
        program(ck, 4, 0, ((0, 10), (2, 6), (0, 5), (1, 1))),
        program(sk, 3, 0, ((0, 9), (2, 7), (1, 1), (0, 4))),
    ]
    return cases + negative_cases_windows()


def _negatives():
    """name -> (spec, expected error kinds, features, known wrong variants it catches)."""
    A = CaseSpec("attention", "float32", 2, 1, 4, 3, 5, 5)
    P = CaseSpec("prefill", "float32", 2, 1, 4, 3, 6, schedule=(2, 4))
    Dd = CaseSpec("decode", "float32", 2, 1, 4, 4)
    r = dataclasses.replace
    return {
        "two-sided-cache": (r(P, window=None, two_sided=(2, 1), capacity=8), ("window",), (), ()),
        "two-sided-cache-decode": (r(P, op="decode", window=None, two_sided=(None, 1), capacity=8, n_decode=2,
                                     T=4, schedule=(4,)), ("window",), (), ()),
        "two-sided-negative": (r(A, window=None, two_sided=(2, 2)), ("window",), (), ()),
        "two-sided-and-window": (r(A, window=None, two_sided=(2, 2)), ("window",), (), ()),
        "two-sided-no-visible-key": (r(A, window=None, two_sided=(1, 1)), ("no_visible_key",), (), ()),
        "chunk-zero": (r(A, window=None, chunk=4), ("window",), (), ()),
        "chunk-negative": (r(P, window=None, chunk=4), ("window",), (), ()),
        "chunk-and-window": (r(A, window=None, chunk=4), ("window",), (), ()),
        "chunk-no-visible-key": (r(A, window=None, chunk=4), ("no_visible_key",), (), ()),
        "capacity-below-chunk": (r(P, window=None, chunk=4, capacity=3), ("cache",), (), ()),
        "sink-tokens-negative": (r(A, sink_tokens=1), ("window",), (), ()),
        "sink-tokens-without-window": (r(A, sink_tokens=1), ("window",), (), ()),
        "rollback-beyond-limit-chunked": (program(r(Dd, window=None, chunk=4), 4, 0, ((0, 10), (2, 3), (1, 1))),
                                          ("rollback",), (), ("rollback_beyond_limit",)),
        "rollback-beyond-limit-chunked-slack": (program(r(Dd, window=None, chunk=4), 6, 0,
                                                        ((0, 13), (2, 6), (1, 1))),
                                                ("rollback",), (), ("rollback_beyond_limit",)),
        "rollback-beyond-limit-sink-tokens": (program(r(Dd, window=3, sink_tokens=2), 3, 0,
                                                      ((0, 10), (2, 2), (1, 1))),
                                              ("rollback",), (), ("rollback_beyond_limit",)),
    }


NEGATIVE_WINDOWS = _negatives()


def negative_cases_windows():
    return [dataclasses.replace(spec, error=name) for name, (spec, _, _, _) in NEGATIVE_WINDOWS.items()]


def full_cases_windows():
    """The window family over dtypes, heads, dims, edges and schedules (the full suite's part two)."""
    rng = np.random.default_rng(20261201)          # fixed: the case list is part of the suite
    cases = []
    i = 0
    kinds = ([{"window": W, "sink_tokens": n} for W, n in ((4, 1), (3, 2), (8, 4), (2, 1), (6, 6))]
             + [{"window": None, "two_sided": lr} for lr in ((1, 1), (3, 2), (None, 1), (2, None), (0, 2))]
             + [{"window": None, "chunk": c} for c in (2, 3, 4, 8)])
    for kind in kinds:
        for dt in _DT4:
            Hq, Hkv = ((4, 4), (4, 2), (8, 2), (8, 1))[i % 4]
            D = (16, 64, 8, 32, 4)[i % 5]
            reach = kind.get("window") or kind.get("chunk") or 3
            T = 3 * reach + 2
            extra = ({}, {"softcap": 3.0}, {"sinks": 1.0}, {})[i % 4]
            cases.append(CaseSpec("attention", dt, Hq, Hkv, D, T=T, S=T + (i % 3) * reach,
                                  start=(0, 1, 7)[i % 3] if "two_sided" in kind or "chunk" in kind else (0, 1)[i % 2],
                                  **kind, **extra))
            if "two_sided" not in kind:
                spec = CaseSpec("prefill", dt, Hq, Hkv, D, T=T, schedule=_random_schedule(rng, T), **kind, **extra)
                cases.append(spec)
                ring = kind.get("chunk") or kind["window"]
                C = ring + (0, 1, 2)[i % 3]
                spec = CaseSpec("decode", dt, Hq, Hkv, D, start=0 if "sink_tokens" in kind else (0, 5)[i % 2],
                                **kind, **extra)
                cases.append(program(spec, C, spec.start, random_program(rng, spec, C)))
            i += 1
    return cases
