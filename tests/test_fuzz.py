"""Fuzz test for swaref's two promises (issue 8, item 10).

1. Bad input gets a clear ``swaref.SwarefError`` and a rejected call leaves the
   cache bitwise as it was (docs/spec.md, rule 7).
2. ``backend="cython"`` agrees with ``backend="reference"``, and both agree with
   the independent dense float64 oracle (tests/oracle.py), on accepted input.

Every fuzzed call goes through one harness, :func:`check_call`, which runs it on
both backends, each with its own copy of the cache, and asserts:

* (1) nothing but ``SwarefError`` escapes (anything else fails, with the call);
* (2) a rejected call leaves its cache bitwise unchanged (k, v, positions, n_seen,
  next_position, and every other attribute but the lock), no call modifies its
  inputs, and no call leaves the cache locked;
* (3) both backends accept or reject alike, with the same ``.kind``, except for
  the compiled backend's two documented refusals (float16, positions above
  2**62); accepted outputs agree within tolerance and the caches end up bitwise
  equal, each as spec rule 4 says;
* (4) where the oracle's output is finite, neither backend returns NaN/Inf;
* (5) accepted outputs equal the dense float64 oracle within tolerance;
* (6) each output entry lies within the range of its query's visible V values (a
  check that needs no tolerance, so it holds where scores overflow).

Inputs are drawn valid and invalid: random shapes, dtypes, memory layouts
(non-contiguous, negative strides, Fortran order, misaligned, read-only,
byte-swapped), windows up to 2**64, positions up to 2**63 - 1 (straddling the
kernel's 2**62 limit and its 64-position tiles), values and scales up to where
scores overflow (float32 q = k = 1e19, scale 4e38; float64 scale 1e300), chunk
schedules, starts, thread counts, and caches in every state (empty, loaded with
NaN in empty and stale slots, wrapped, full, held by another thread).  Then one
argument may be spoilt (``spoil_array``, ``bad_positions``, ``BAD_*``,
``spoilt_ring``), so every validation path is reached.  Other properties:
load_state, cache_write, the cache constructor, window_mask against a brute force on Python
ints, and a random sequence of steps on one cache per backend in lockstep.

Bounded for CI: every property runs ``SWAREF_FUZZ_EXAMPLES`` examples (default
300, about 12 s of CPU in all; the sequence property a quarter of that) with
``derandomize=True``, so a run is deterministic (the sanitizer build runs the
same examples, fewer of them: ``SWAREF_FUZZ_EXAMPLES=20``).  tools/fuzz.py runs
the same properties for longer, with fresh seeds.

Known swaref bugs found by this fuzzer are excluded from the strategies through
:data:`KNOWN_BUGS` and each has a strict-xfail reproducer at the end of this file.
When a fix makes a reproducer pass, remove its xfail marker *and* its entry in
KNOWN_BUGS, so the fuzzer covers those inputs again.
"""
import contextlib
import copy
import math
import os
import sys
import threading
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings, strategies as st

import swaref
from swaref import RollingBufferCache, SwarefError
from swaref.cache import load_state
from swaref import _validate as V
from oracle import brute_force_mask, dense_attention_f64, dense_attention_wide

#: Examples per property; the sanitizer job sets fewer, tools/fuzz.py many more.
N_EXAMPLES = int(os.environ.get("SWAREF_FUZZ_EXAMPLES", "300"))

FUZZ = settings(max_examples=N_EXAMPLES, derandomize=True, database=None, deadline=None,
                print_blob=True, suppress_health_check=list(HealthCheck))

#: name -> (body, strategies) of every property, for tools/fuzz.py to rerun with its own seeds.
PROPERTIES = {}


def fuzz_property(share=1.0, **strategies):
    """``@given(**strategies)`` under the CI settings above, with ``share`` x N_EXAMPLES examples
    (a property whose example is a whole sequence of calls takes fewer); registers the property
    in PROPERTIES."""
    def deco(fn):
        PROPERTIES[fn.__name__] = (fn, strategies)
        return settings(FUZZ, max_examples=max(1, round(share * N_EXAMPLES)))(given(**strategies)(fn))
    return deco


#: Bugs this fuzzer found (reproducers at the end of the file, strict xfail).  Their
#: inputs are left out of the strategies so the rest keeps being fuzzed; tools/fuzz.py
#: --include-known-bugs puts them back.  Remove an entry when its fix lands.
KNOWN_BUGS = set()          # all found so far are fixed; their reproducers are regression tests


def _debug_division_bug():
    return DEBUG_KERNEL and "debug_zero_division" in KNOWN_BUGS

def _kernel_checks_division():
    """True for a compiled kernel built with Cython's division checks (SWAREF_DEBUG=1, as the
    sanitizer job builds it): Cython then compiles in its "float division" error message."""
    try:
        from swaref import _core
        with open(_core.__file__, "rb") as f:
            return b"float division" in f.read()
    except Exception:                         # pragma: no cover - no compiled kernel
        return False


#: The kernel is a debug build: the known bug debug_zero_division applies.
DEBUG_KERNEL = _kernel_checks_division()

INT64_MAX = 2 ** 63 - 1
KERNEL_MAX = 2 ** 62            # spec rule 3: the compiled backend refuses positions above it
BACKENDS = ("reference", "cython")
CACHE = object()                # placeholder in a call's arguments: "this backend's cache here"


@pytest.fixture(autouse=True)
def _threads_even_for_small_shapes():
    """The kernel runs small calls on one thread; let it use every thread it is given
    (as tests/test_core.py does), so the multithreaded paths see fuzzed input too."""
    from swaref import _core
    old = _core.min_work_per_thread(1)
    yield
    _core.min_work_per_thread(old)


# ======================================================================================
# Describing a call (what a failure prints)
# ======================================================================================

def describe(x):
    """A value as a failure message needs it: arrays with their layout and (if small) values."""
    if isinstance(x, np.ndarray):
        f = x.flags
        layout = ",".join(n for n, on in (("C", f.c_contiguous), ("F", f.f_contiguous),
                                           ("aligned", f.aligned), ("writeable", f.writeable)) if on)
        head = f"array(shape={x.shape}, dtype={x.dtype.str}, strides={x.strides}, flags=[{layout}]"
        if x.size <= 48:
            with np.printoptions(precision=17, threshold=64):
                return head + f", values={x.tolist()!r})"
        return head + ")"
    if isinstance(x, RollingBufferCache):
        s = f"{x!r} positions={x.positions.tolist()}"
        if x.k.size <= 128:
            with np.printoptions(precision=17, threshold=256):
                s += f" k={x.k.tolist()!r} v={x.v.tolist()!r}"
        return s
    if x is CACHE:
        return "<cache>"
    return repr(x)


class Call:
    """One call of a swaref entry point: ``fn(*args, **kwargs)``; ``cache`` (if any) is
    the initial state, deep-copied for each backend and put where CACHE stands."""

    def __init__(self, fn, args, kwargs=None, cache=None, note=""):
        self.fn, self.args, self.kwargs, self.cache, self.note = fn, tuple(args), dict(kwargs or {}), cache, note

    def with_cache(self, cache):
        self.cache = clone(cache)
        return self

    def __repr__(self):
        parts = [describe(a) for a in self.args] + [f"{k}={describe(v)}" for k, v in self.kwargs.items()]
        s = f"swaref.{self.fn}({', '.join(parts)})"
        if self.cache is not None or any(a is CACHE for a in self.args):
            s += f"\n  with cache = {describe(self.cache)}"
        return s + (f"\n  [{self.note}]" if self.note else "")


# ======================================================================================
# The harness
# ======================================================================================

def _is_lock(val):
    return hasattr(val, "acquire") and hasattr(val, "release")


def clone(obj):
    """An independent copy of a cache made without its own copy() (which is under test):
    arrays copied, a lock replaced by a new one (locks are not state); anything else deep-copied."""
    if not isinstance(obj, RollingBufferCache):
        return copy.deepcopy(obj)
    new = RollingBufferCache.__new__(RollingBufferCache)
    for name, val in vars(obj).items():
        setattr(new, name, val.copy() if isinstance(val, np.ndarray) else type(val)() if _is_lock(val)
                else copy.deepcopy(val))
    return new


def snapshot(obj):
    """Every attribute of a cache (arrays as dtype, shape and bytes; not its lock), or None for
    a non-cache."""
    if not isinstance(obj, RollingBufferCache):
        return None
    return {name: (val.dtype.str, val.shape, val.tobytes()) if isinstance(val, np.ndarray) else val
            for name, val in vars(obj).items() if not _is_lock(val)}


def assert_not_left_locked(obj, what):
    """After any call, accepted or rejected, the cache's lock (if it has one) is free again:
    tried from another thread, since a re-entrant lock leaked by this one would let it in."""
    for name, val in vars(obj).items() if isinstance(obj, RollingBufferCache) else ():
        if _is_lock(val):
            got = []

            def try_lock():
                got.append(val.acquire(blocking=False))
                if got[0]:
                    val.release()
            t = threading.Thread(target=try_lock)
            t.start()
            t.join()
            assert got == [True], f"{what}: cache.{name} is still held after the call"


@contextlib.contextmanager
def held_by_another_thread(caches):
    """While inside, another thread holds each cache as a concurrent swaref call would
    (swaref.cache.exclusive), so any call on them must be refused with kind "cache"."""
    from swaref.cache import exclusive
    holding, release = threading.Barrier(len(caches) + 1), threading.Event()

    def hold(c):
        with exclusive(c):
            holding.wait()
            release.wait(30)
    threads = [threading.Thread(target=hold, args=(c,)) for c in caches]
    for t in threads:
        t.start()
    holding.wait(30)
    try:
        yield
    finally:
        release.set()
        for t in threads:
            t.join()


def assert_unchanged(before, after, what):
    if before == after:
        return
    bad = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    raise AssertionError(f"{what}: changed ({', '.join(bad)})")


def _input_bytes(call):
    return [(i, a.tobytes()) for i, a in enumerate(list(call.args) + list(call.kwargs.values()))
            if isinstance(a, np.ndarray)]


def invoke(call, backend, cache):
    """Run the call on one backend.  -> ("ok", result) or ("rejected", kind, message)."""
    fn = {"attention": swaref.attention, "prefill": swaref.prefill, "decode_step": swaref.decode_step,
          "load_state": load_state, "window_mask": swaref.window_mask, "cache_write": swaref.cache_write,
          "RollingBufferCache": RollingBufferCache}[call.fn]
    args = [cache if a is CACHE else a for a in call.args]
    kwargs = dict(call.kwargs)
    if call.fn in ("attention", "prefill", "decode_step"):
        kwargs["backend"] = backend
    ignored = []                              # exceptions raised and swallowed ("Exception ignored in")
    old_hook, sys.unraisablehook = sys.unraisablehook, lambda u: ignored.append(u)
    try:
        with np.errstate(all="ignore"):      # huge scales overflow in float64 too; outputs are checked
            result = ("ok", fn(*args, **kwargs))
    except SwarefError as e:
        result = ("rejected", e.kind, str(e))
    except Exception as e:                    # (1): nothing else may escape
        raise AssertionError(f"{type(e).__name__} escaped from backend={backend!r}: {e}\n  call: {call!r}") from e
    finally:
        sys.unraisablehook = old_hook
    # (1) also: no exception raised and swallowed inside (a noexcept kernel function gives up and
    # returns early; a debug build's division check is one such: the rest of its output is garbage).
    assert not ignored, (f"{ignored[0].exc_type.__name__}: {ignored[0].exc_value} raised and ignored in "
                         f"{ignored[0].object} (backend={backend!r})\n  call: {call!r}")
    return result


def cython_may_refuse(call):
    """Kinds the compiled backend may raise where the reference does not (spec rule 3):
    float16 ("dtype") and positions above 2**62 ("positions")."""
    kinds = set()
    arrays = [a for a in list(call.args) + list(call.kwargs.values()) if isinstance(a, np.ndarray)]
    if any(a.dtype == np.float16 for a in arrays):
        kinds.add("dtype")
    if max_position(call) > KERNEL_MAX:
        kinds.add("positions")
    return kinds


def max_position(call):
    """The largest position the call involves (keys, queries, the cache, a write)."""
    top = -1
    for name in ("q_pos", "k_pos"):
        p = call.kwargs.get(name)
        if p is not None:
            try:
                arr = np.asarray(p)
                if arr.size and arr.dtype.kind in "iu":
                    top = max(top, int(arr.max()))
            except Exception:
                pass
    if call.fn == "attention" and call.kwargs.get("k_pos") is None and isinstance(call.args[1], np.ndarray) \
            and call.args[1].ndim >= 1:
        top = max(top, call.args[1].shape[0] - 1)
    if isinstance(call.cache, RollingBufferCache):
        c = call.cache
        top = max(top, int(c.positions.max()))
        start = call.kwargs.get("start")
        if not isinstance(start, (int, np.integer)) or isinstance(start, (bool, np.bool_)):
            start = c.next_position or 0
        q = call.args[0]
        n = q.shape[0] if isinstance(q, np.ndarray) and q.ndim else 1
        top = max(top, int(start) + n - 1)
    return top


def finite_max(*arrays):
    vals = [np.abs(np.asarray(a, dtype=np.float64)) for a in arrays if a is not None and np.size(a)]
    vals = [a[np.isfinite(a)] for a in vals]
    return max([float(a.max()) for a in vals if a.size] + [0.0])


def tolerance(dtype, q, k, v, scale, D):
    """The issue's tolerance (float64 1e-12, float32 1e-5, float16 1e-3, times max|V|), times the
    conditioning of the scores: a score's rounding error grows with |scale| * |q| * |k| * D, and
    a weight's error with it.  Large-magnitude examples therefore get a looser (honest) bound;
    at scale 1e30 it is vacuous except for the finiteness check."""
    base = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5, np.dtype(np.float16): 1e-3}[np.dtype(dtype)]
    s = 1.0 / math.sqrt(D) if scale is None else abs(float(scale))
    cond = s * finite_max(q) * finite_max(k) * D
    return base * finite_max(v) * max(1.0, cond) + 4 * float(np.finfo(dtype).smallest_subnormal)


def compare(actual, expected, atol, what, call, kernel=None):
    """actual vs expected within atol, and (4) finite wherever expected is finite.

    Where expected is not finite (a NaN or Inf inside a window), the same NaN and Inf, with two
    allowances:

    * a softmax weight may underflow to 0 on one side but not the other (a score rounded
      differently at float64's subnormal edge, or a float32 kernel's weights, which underflow
      sooner), and 0 * Inf = NaN: NaN and +-Inf are accepted for each other;
    * ``kernel`` float32 (a compiled-backend output computed in its input precision, spec rule
      3): the scale and the scores are float32 (a scale of 1e-300 is 0 there, and
      0 * -Inf = NaN where float64 gives -Inf and a finite output), so with non-finite input
      only "expected NaN => NaN" is checked.  Both were found by this fuzzer (inf in a visible
      value whose float32 weight underflows; inf in a key at scale 1e-300)."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}\n  call: {call!r}"
    if np.isfinite(e).all():
        # (4): finite expected output, so no NaN/Inf here
        assert np.isfinite(a).all(), f"{what}: NaN/Inf where the expected output is finite\n  call: {call!r}"
        diff = np.abs(a - e)
        if diff.max() > atol:
            i = tuple(int(j) for j in np.unravel_index(np.argmax(diff), diff.shape))
            raise AssertionError(f"{what}: max |diff| {diff.max():.3e} > tol {atol:.3e} at {i}: "
                                 f"{a[i]!r} vs {e[i]!r}\n  call: {call!r}")
        return
    if kernel == np.float32:
        checks = [("NaN", np.isnan(a) | ~np.isnan(e), np.ones(e.shape, dtype=bool))]
    else:
        a, e = np.where(np.isnan(a) & np.isinf(e), e, a), np.where(np.isinf(a) & np.isnan(e), a, e)
        checks = [("NaN", np.isnan(a), np.isnan(e)),
                  ("Inf", np.where(np.isinf(a), a, 0), np.where(np.isinf(e), e, 0))]
    # Non-finite input inside a window: both must propagate it alike (spec rule 3).
    for name, sa, se in checks:
        if not np.array_equal(sa, se):
            i = tuple(int(j) for j in np.argwhere(sa != se)[0])
            raise AssertionError(f"{what}: {name} in other places, first at {i}: {a[i]!r} vs {e[i]!r}"
                                 f"\n  actual:   {a.tolist()}\n  expected: {e.tolist()}\n  call: {call!r}")
    if kernel == np.float32:
        return
    fin = np.isfinite(a) & np.isfinite(e)
    if fin.any() and np.abs(a[fin] - e[fin]).max() > atol:
        raise AssertionError(f"{what}: finite entries differ by {np.abs(a[fin] - e[fin]).max():.3e} > "
                             f"{atol:.3e}\n  call: {call!r}")


def oracle_for(call, cache_before):
    """(expected output [T, Hq, D] float64, key set (k, v) for the tolerance) of an accepted call.

    attention: the dense oracle over the given keys.  prefill/decode_step: the dense oracle
    over [the cache's valid slots] + [the new tokens] (spec rule 5: any schedule equals
    one-shot attention over the whole sequence; the cache holds every key a query can see).
    """
    q, k, v = call.args[:3]
    D = q.shape[2]
    scale = call.kwargs.get("scale")
    scale = None if scale is None else float(scale)
    if call.fn == "attention":
        S = k.shape[0]
        k_pos = np.arange(S) if call.kwargs.get("k_pos") is None else np.asarray(call.kwargs["k_pos"]).astype(np.int64)
        q_pos = k_pos[S - q.shape[0]:] if call.kwargs.get("q_pos") is None else \
            np.asarray(call.kwargs["q_pos"]).astype(np.int64)
        window = call.kwargs["window"]
        keys, vals = k, v
    else:
        c = cache_before
        start = call.kwargs.get("start")
        start = (c.next_position or 0) if start is None else int(start)
        ck, cv, cpos = c.view()
        keys, vals = np.concatenate([ck, k]), np.concatenate([cv, v])
        T = q.shape[0]
        k_pos = np.concatenate([cpos, np.arange(start, start + T, dtype=np.int64)])
        q_pos = np.arange(start, start + T, dtype=np.int64)
        window = c.window
    window = None if window is None or int(window) > INT64_MAX else int(window)   # wider = causal
    with np.errstate(all="ignore"):
        out = dense_attention_f64(q, keys, vals, q_pos, k_pos, window, scale)
    # Only the visible keys matter for the tolerance (poison elsewhere never reaches the output).
    lo = q_pos.min() - (window - 1) if window is not None else -1
    seen = (k_pos >= lo) & (k_pos <= q_pos.max())
    if not np.isfinite(out).all():
        # Scores that overflow float64 from finite q, k (scale 1e300): the float64 oracle's
        # inf - inf is not the answer; the same formula in a wider type is (the scores fit
        # there).  It runs row by row, so a NaN in one head's q stays in that head's row.
        with np.errstate(all="ignore"):
            out = dense_attention_wide(q, keys, vals, q_pos, k_pos, window, scale)
    return out, keys[seen], vals[seen], scale, D, (q_pos, k_pos, window, vals)


def check_in_hull(out, visible, call, what):
    """(6) Each finite output entry lies between the smallest and largest value its query's
    visible V rows hold there (a softmax average): precision-independent, so it still bites
    where scores overflow and the tolerance above says little.  Entries whose V column is not
    finite are skipped; NaN/Inf outputs are compare()'s (NaN from a NaN or Inf in q or k is
    IEEE propagation)."""
    q_pos, k_pos, window, vals = visible
    T, Hq, D = out.shape
    G = Hq // vals.shape[1]
    kp, qp = np.asarray(k_pos, dtype=np.int64), np.asarray(q_pos, dtype=np.int64)
    base = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5, np.dtype(np.float16): 1e-3}[out.dtype]
    slack = base * max(finite_max(vals), 1e-300) + 4 * float(np.finfo(out.dtype).smallest_subnormal)
    v64 = np.repeat(np.asarray(vals, dtype=np.float64), G, axis=1)          # [S, Hq, D]
    o = np.asarray(out, dtype=np.float64)
    for t in range(T):
        sel = kp <= qp[t]
        if window is not None:
            sel &= kp > qp[t] - window
        rows = v64[sel]
        ok = np.isfinite(rows).all(axis=0) & np.isfinite(o[t])
        lo, hi = rows.min(axis=0), rows.max(axis=0)
        bad = ok & ~((o[t] >= lo - slack) & (o[t] <= hi + slack))
        if bad.any():
            h, d = (int(i) for i in np.argwhere(bad)[0])
            raise AssertionError(f"{what}: output[{t}, {h}, {d}] = {o[t, h, d]!r} is outside the visible values' "
                                 f"range [{lo[h, d]!r}, {hi[h, d]!r}]\n  call: {call!r}")


def check_written(call, before, after):
    """After an accepted prefill/decode_step/cache_write: the cache is as spec rule 4 says."""
    k, v = call.args[1:3]
    T = k.shape[0]
    start = call.kwargs.get("start")
    start = (before.next_position or 0) if start is None else int(start)
    C = before.capacity
    exp_k, exp_v, exp_pos = before.k.copy(), before.v.copy(), before.positions.copy()
    for i in range(max(0, T - C), T):
        p = start + i
        exp_k[p % C], exp_v[p % C], exp_pos[p % C] = k[i], v[i], p
    assert after.n_seen == before.n_seen + T and after.next_position == start + T, \
        f"cache counters after the call: n_seen {after.n_seen}, next {after.next_position}\n  call: {call!r}"
    for name, want in (("k", exp_k), ("v", exp_v), ("positions", exp_pos)):
        got = getattr(after, name)
        assert got.tobytes() == want.tobytes(), f"cache.{name} after the call is not as rule 4 says\n  call: {call!r}"


def check_loaded(call, cache):
    """After an accepted load_state: the cache holds exactly the given ring."""
    _, pos, k, v = call.args
    pos = np.asarray(pos).astype(np.int64)
    held = pos[pos >= 0]
    for name, want, dt in (("positions", pos, np.int64), ("k", k, cache.dtype), ("v", v, cache.dtype)):
        assert getattr(cache, name).tobytes() == np.ascontiguousarray(want, dtype=dt).tobytes(), \
            f"cache.{name} after load_state is not what was loaded\n  call: {call!r}"
    n = held.size
    assert cache.n_seen == n and cache.next_position == (int(held.max()) + 1 if n else None), \
        f"after load_state: n_seen {cache.n_seen}, next_position {cache.next_position}\n  call: {call!r}"


def check_constructed(call, c):
    """A new cache is in the constructed state (spec rule 4)."""
    window = call.args[0]
    C = int(call.kwargs["capacity"]) if call.kwargs.get("capacity") is not None else int(window)
    shape = (C, int(call.args[1]), int(call.args[2]))
    assert c.k.shape == c.v.shape == shape and not c.k.any() and not c.v.any(), f"{c!r}\n  call: {call!r}"
    assert c.positions.dtype == np.int64 and (c.positions == -1).all() and c.positions.shape == (C,)
    assert c.n_seen == 0 and c.next_position is None and c.capacity == C
    assert not np.shares_memory(c.k, c.v)


def check_call(call, caches=None, held=False):
    """Run ``call`` on both backends and assert properties (1)-(6).

    caches: {backend: cache} to run on and leave updated (the sequence test); default a
    deep copy of call.cache per backend; held: another thread holds them (held_by_another_thread),
    so their locks are checked by the caller afterwards.  Returns {backend: outcome}.
    """
    if caches is None:
        caches = {b: clone(call.cache) for b in BACKENDS}
    inputs = _input_bytes(call)
    before = {b: clone(caches[b]) for b in BACKENDS}
    results = {}
    for b in BACKENDS:
        snap = snapshot(caches[b])
        results[b] = invoke(call, b, caches[b])
        if results[b][0] == "rejected":
            if snap is not None:                            # (2) rejected: cache untouched
                assert_unchanged(snap, snapshot(caches[b]),
                                 f"cache after a rejected call (backend={b}, kind={results[b][1]!r}: "
                                 f"{results[b][2]})\n  call: {call!r}")
        assert _input_bytes(call) == inputs, f"backend={b} modified an input array\n  call: {call!r}"
        if not held:
            assert_not_left_locked(caches[b], f"backend={b}, {results[b][0]}\n  call: {call!r}")
    ref, cy = results["reference"], results["cython"]
    event(f"{call.fn}: reference {ref[0]} {ref[1] if ref[0] == 'rejected' else ''}")
    event(f"{call.fn}: cython {cy[0]} {cy[1] if cy[0] == 'rejected' else ''}")
    note(f"reference: {ref[0]} {ref[1] if ref[0] == 'rejected' else ''}; cython: {cy[0]} "
         f"{cy[1] if cy[0] == 'rejected' else ''}")
    # (3) the same verdict, except the compiled backend's documented refusals
    computes = call.fn in ("attention", "prefill", "decode_step")
    if ref[0] != cy[0] or (ref[0] == "rejected" and ref[1] != cy[1]):
        allowed = cython_may_refuse(call)
        assert cy[0] == "rejected" and cy[1] in allowed, (
            f"backends disagree: reference {ref[0]} {ref[1:] if ref[0] == 'rejected' else ''}, "
            f"cython {cy[0]} {cy[1:] if cy[0] == 'rejected' else ''}\n  call: {call!r}")
        if ref[0] == "ok" and computes:       # float16, positions above 2**62: the reference alone (5)
            q = call.args[0]
            expected, keys, vals, scale, D, visible = oracle_for(call, before["reference"])
            compare(ref[1], expected, tolerance(q.dtype, [q], keys, vals, scale, D), "reference vs dense oracle",
                    call)
            check_in_hull(ref[1], visible, call, "reference")
            if call.fn != "attention":
                check_written(call, before["reference"], caches["reference"])
        return results
    if ref[0] == "ok" and call.fn == "load_state":
        for b in BACKENDS:
            check_loaded(call, caches[b])
    if ref[0] == "ok" and call.fn == "cache_write":
        for b in BACKENDS:
            check_written(call, before[b], caches[b])
    if ref[0] == "ok" and call.fn == "RollingBufferCache":
        check_constructed(call, ref[1])
    if ref[0] == "rejected" or not computes:
        return results
    # Both accepted: outputs against each other and the oracle (3, 4, 5)
    out_r, out_c = ref[1], cy[1]
    q = call.args[0]
    assert out_r.dtype == out_c.dtype == q.dtype and out_r.shape == out_c.shape == q.shape, \
        f"output dtype/shape: {out_r.dtype}{out_r.shape}, {out_c.dtype}{out_c.shape}\n  call: {call!r}"
    expected, keys, vals, scale, D, visible = oracle_for(call, before["reference"])
    tol = tolerance(q.dtype, [q], keys, vals, scale, D)
    check_in_hull(out_r, visible, call, "reference")
    check_in_hull(out_c, visible, call, "cython")
    compare(out_r, expected, tol, "reference vs dense oracle", call)
    compare(out_c, expected, tol, "cython vs dense oracle", call, kernel=q.dtype.type)
    compare(out_c, out_r, tol, "cython vs reference", call, kernel=q.dtype.type)
    if call.fn != "attention":
        check_written(call, before["reference"], caches["reference"])
        assert_unchanged(snapshot(caches["reference"]), snapshot(caches["cython"]),
                         f"cython's cache vs the reference's after the call\n  call: {call!r}")
    return results


# ======================================================================================
# Strategies: small pieces
# ======================================================================================

# Mostly small (fast, and the shrinker likes them); now and then long enough for several of
# the kernel's 64-position tiles and several row blocks.
SHAPES = dict(T=st.one_of(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9), st.integers(10, 70)),
              S=st.one_of(st.integers(1, 12), st.integers(1, 12), st.integers(1, 12), st.integers(13, 150)),
              Hkv=st.integers(1, 3), G=st.integers(1, 3),
              D=st.sampled_from([1, 2, 3, 4, 5, 8, 16, 17, 32]))


def magnitudes_for(dtype):
    """Typical sizes of q/k and of v, up to where scores overflow the dtype (1e19 in float32,
    1e160 in float64: both backends must then still give the finite softmax, spec rule 3)."""
    if dtype == np.float16:
        return st.sampled_from([1e-2, 1.0, 10.0]), st.sampled_from([1e-2, 1.0, 100.0])
    big = 1e19 if dtype == np.float32 else 1e160
    if _debug_division_bug():
        big = 1e3                             # (known bug debug_zero_division)
    qk = [1e-3, 1.0, 1.0, 1.0, 10.0, 1e3, big]
    vv = [1.0, 1.0, 1e-3, 1e3, 1e-30, 1e30]
    return st.sampled_from(qk), st.sampled_from(vv)


@st.composite
def arrays(draw, shape, dtype, mag):
    """A standard normal array times ``mag`` (NumPy's RNG from a drawn seed: fast; the seed
    is printed with the failing example)."""
    seed = draw(st.integers(0, 2 ** 32 - 1))
    x = np.random.default_rng(seed).standard_normal(shape) * mag
    return x.astype(dtype)


LAYOUTS = ("C", "C", "C", "strided", "reversed", "fortran", "misaligned", "readonly", "byteswapped")


def with_layout(x, layout):
    """The same values in another memory layout (byte-swapped: a non-native dtype, which
    both backends must refuse alike)."""
    if layout == "C":
        return np.ascontiguousarray(x)
    if layout == "strided":                  # every other element of a wider array
        big = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)
        big[..., ::2] = x
        return big[..., ::2]
    if layout == "reversed":                 # negative strides on the first two axes
        return np.ascontiguousarray(x[::-1, ::-1])[::-1, ::-1] if x.ndim >= 2 else x[::-1].copy()[::-1]
    if layout == "fortran":
        return np.asfortranarray(x)
    if layout == "misaligned":               # C-contiguous but one byte off alignment
        buf = np.zeros(x.nbytes + 1, np.uint8)
        y = np.frombuffer(buf.data, x.dtype, count=x.size, offset=1).reshape(x.shape)
        y[...] = x
        return y
    if layout == "readonly":
        y = x.copy()
        y.setflags(write=False)
        return y
    if layout == "byteswapped":
        return x.astype(x.dtype.newbyteorder())
    raise AssertionError(layout)


@st.composite
def laid_out(draw, arrays):
    """q, k, v in one drawn layout (a byte-swapped dtype for one of them only, and sometimes
    each in its own layout), so that most calls stay acceptable."""
    if draw(st.integers(0, 3)) == 0:
        return [with_layout(x, draw(st.sampled_from(LAYOUTS))) for x in arrays]
    layout = draw(st.sampled_from(LAYOUTS))
    swapped = draw(st.integers(0, len(arrays) - 1))
    return [with_layout(x, "C" if layout == "byteswapped" and i != swapped else layout)
            for i, x in enumerate(arrays)]


@st.composite
def increasing(draw, n):
    """n strictly increasing positions (Python ints), starting near an interesting offset:
    0, small, just before a multiple of 64 (so they cross one of the kernel's 64-position
    tiles), 10**9, the kernel's 2**62 limit (last position 2**62 - 1, 2**62 or 2**62 + 1),
    or the end of int64."""
    gaps = draw(st.one_of(st.just([1] * n), st.lists(st.integers(1, 4), min_size=n, max_size=n)))
    rel = np.cumsum([0] + gaps[1:]).tolist()
    span = rel[-1]
    where = draw(st.sampled_from(["zero", "small", "small", "tile", "tile", "1e9", "limit-1", "limit",
                                  "limit+1", "end"]))
    if where == "small":
        offset = draw(st.integers(0, 20))
    elif where == "tile":
        offset = draw(st.sampled_from([64, 128, 2 ** 40])) - draw(st.integers(1, 8))
    else:
        offset = {"zero": 0, "1e9": 10 ** 9, "limit-1": KERNEL_MAX - 1 - span, "limit": KERNEL_MAX - span,
                  "limit+1": KERNEL_MAX + 1 - span, "end": INT64_MAX - span}[where]
    return [offset + r for r in rel]


@st.composite
def position_arg(draw, pos):
    """Valid positions as any accepted container: int64/uint64/int32 arrays (some non-contiguous
    or read-only), list, tuple, range."""
    kind = draw(st.sampled_from(["int64", "int64", "uint64", "int32", "list", "tuple", "range",
                                 "strided", "readonly"]))
    if kind == "int32" and pos and max(pos) >= 2 ** 31:     # (load_state's rings are not sorted)
        kind = "int64"
    if kind == "range" and any(b - a != 1 for a, b in zip(pos, pos[1:])):
        kind = "list"
    if kind in ("int64", "uint64", "int32"):
        return np.array(pos, dtype=kind)
    if kind == "strided":
        big = np.zeros(2 * len(pos), dtype=np.int64)
        big[::2] = pos
        return big[::2]
    if kind == "readonly":
        a = np.array(pos, dtype=np.int64)
        a.setflags(write=False)
        return a
    if kind == "range":
        return range(pos[0], pos[-1] + 1) if pos else range(0)
    return {"list": list, "tuple": tuple}[kind](pos)


def windows(n):
    """Valid windows for a sequence of length n: small, around n, the huge ones, None, NumPy ints."""
    return st.sampled_from([1, 2, 3, max(1, n // 2), n, n + 1, 64, 65, 2 ** 62, 2 ** 63, 2 ** 64, None,
                            np.int64(2), np.uint64(2 ** 64 - 1)])


def scales():
    """Valid scales: default, 0, negative, tiny, huge (1e30; 4e38, beyond float32's range; 1e300,
    which makes float64 scores overflow from finite input)."""
    huge = [4e38, -1e40, 1e300, -1e300] if not _debug_division_bug() else []   # (debug_zero_division)
    return st.sampled_from([None, None, None, 0, 0.0, -0.5, 1, 0.125, 2.0, -3.0, 1e-300, 1e30, -1e30,
                            np.float32(0.5), np.int64(2), Fraction(1, 3)] + huge)


THREADS = st.sampled_from([None, None, 1, 2, 3, np.int64(2), 10 ** 6])


# ======================================================================================
# Mutations: spoil one argument of a valid call
# ======================================================================================

BAD_WINDOWS = [0, -1, -2 ** 63, -2 ** 64, True, False, 2.0, "3", np.float64(3), np.bool_(True), 1j]
BAD_SCALES = [np.nan, np.inf, -np.inf, True, np.bool_(False), "1", 1j, np.float32(np.nan), float("1e400")]
BAD_THREADS = [0, -1, True, 1.0, "2", np.int64(0), -10 ** 30]
BAD_ARRAY_KINDS = ["ndim+", "ndim-", "0-d", "list", "None", "int", "float16/64 mix", "D", "heads",
                   "empty T", "empty D", "v shape", "bool", "complex", "object"]


def spoil_array(x, how, which):
    """x (one of q, k, v) made invalid in one way."""
    if how == "ndim+":
        return x[None]
    if how == "ndim-":
        return x[0] if x.shape[0] else np.zeros(x.shape[1:], x.dtype)
    if how == "0-d":
        return np.asarray(x.flat[0]) if x.size else np.float64(1.0)
    if how == "list":
        return x.tolist()
    if how == "None":
        return None
    if how == "int":
        return x.astype(np.int64)
    if how == "float16/64 mix":
        with np.errstate(over="ignore"):      # large values become inf in float16: still a dtype error
            return x.astype(np.float16 if x.dtype != np.float16 else np.float64)
    if how == "D":
        return x[..., :-1] if x.shape[-1] > 1 else np.concatenate([x, x], axis=-1)
    if how == "heads":                       # Hq no longer a multiple of Hkv (or Hkv changed)
        return np.concatenate([x, x[:, :1]], axis=1)
    if how == "empty T":
        return x[:0]
    if how == "empty D":
        return x[..., :0]
    if how == "v shape":
        return x[:-1] if which == "v" and x.shape[0] > 1 else np.concatenate([x, x])
    if how == "bool":
        return x > 0
    if how == "complex":
        return x.astype(np.complex128)
    if how == "object":
        return x.astype(object)
    raise AssertionError(how)


@st.composite
def bad_positions(draw, pos, length):
    """Positions that must be refused: not increasing, negative, too large for int64, wrong
    length or type, 2-D; and values that only the compiled backend refuses are drawn by
    :func:`increasing` already."""
    pos = list(pos)
    choices = ["wrong length", "float", "bool", "2-D", "uint64 huge", "object huge", "None inside", "string"]
    if length >= 2:
        choices += ["repeat", "decrease"]
    if length >= 1:
        choices += ["negative"]
    choices += ["ragged"]                    # (fixed on main for attention's q_pos/k_pos)
    how = draw(st.sampled_from(choices))
    if how == "repeat":
        pos[1] = pos[0]
        return np.array(pos, dtype=np.int64)
    if how == "decrease":
        pos[0], pos[1] = pos[1], pos[0]
        return pos
    if how == "negative":
        return [p - pos[-1] - 1 for p in pos] if draw(st.booleans()) else [-1] + pos[1:]
    if how == "wrong length":
        return pos + [pos[-1] + 1] if pos and draw(st.booleans()) else pos[:-1]
    if how == "float":
        return np.array(pos, dtype=np.float64)
    if how == "bool":
        return np.ones(length, dtype=bool)
    if how == "2-D":
        return np.array(pos, dtype=np.int64)[None]
    if how == "uint64 huge":
        return np.array([2 ** 63 + i for i in range(length)], dtype=np.uint64)
    if how == "object huge":
        return [2 ** 64 + i for i in range(length)]
    if how == "None inside":
        return [None] * length
    if how == "string":
        return "0123"[:length]
    if how == "ragged":
        return [[p] for p in pos[:-1]] + [[pos[-1], pos[-1] + 1]] if pos else [[0], [1, 2]]
    raise AssertionError(how)


# ======================================================================================
# Strategies: whole calls
# ======================================================================================

@st.composite
def qkv(draw, T, S, Hq, Hkv, D, dtype):
    mqk, mv = magnitudes_for(dtype)
    q = draw(arrays((T, Hq, D), dtype, draw(mqk)))
    k = draw(arrays((S, Hkv, D), dtype, draw(mqk)))
    v = draw(arrays((S, Hkv, D), dtype, draw(mv)))
    if draw(st.integers(0, 9)) == 0:         # non-finite values, inside or outside windows
        # (in q or k: known bugs debug_zero_division, reference_row_independence)
        qk_ok = not _debug_division_bug() and "reference_row_independence" not in KNOWN_BUGS
        x = draw(st.sampled_from([q, k, v] if qk_ok else [v]))
        if x.size:
            x.flat[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return q, k, v


@st.composite
def attention_calls(draw):
    """swaref.attention(q, k, v, window=..., q_pos=..., k_pos=..., scale=..., num_threads=...),
    valid or with one argument spoilt."""
    T, S, Hkv, G, D = (draw(SHAPES[n]) for n in ("T", "S", "Hkv", "G", "D"))
    dtype = draw(st.sampled_from([np.float64, np.float64, np.float32, np.float32, np.float16]))
    q, k, v = draw(qkv(T, S, Hkv * G, Hkv, D, dtype))
    kw = dict(window=draw(windows(S)))
    k_pos = draw(increasing(S))
    how_q = draw(st.sampled_from(["default", "default", "last T", "own", "subset"]))
    if T > S and how_q != "own" and draw(st.integers(0, 3)):
        how_q = "own"                        # the default q_pos needs T <= S
    if how_q != "default" or T > S or draw(st.booleans()):
        kw["k_pos"] = draw(position_arg(k_pos))
    if how_q == "last T" and T <= S:
        kw["q_pos"] = draw(position_arg(k_pos[S - T:]))
    elif how_q == "own":                     # may outnumber the keys; may see no key
        own = draw(increasing(T))
        if draw(st.booleans()):              # mostly near the keys, so that most see one
            shift = min(k_pos[-1] + draw(st.integers(0, 2)), INT64_MAX) - own[-1]
            own = [p + shift for p in own] if own[0] + shift >= 0 else own
        kw["q_pos"] = draw(position_arg(own))
    elif how_q == "subset" and T <= S:
        kw["q_pos"] = sorted(draw(st.lists(st.sampled_from(k_pos), min_size=T, max_size=T, unique=True))) \
            if len(set(k_pos)) >= T else k_pos[:T]
    kw["scale"] = draw(scales())
    kw["num_threads"] = draw(THREADS)
    args = draw(laid_out((q, k, v)))
    mutation = draw(st.sampled_from(["none"] * 5 + ["array", "window", "positions", "scale", "threads"]))
    if mutation == "array":
        i = draw(st.integers(0, 2))
        args[i] = spoil_array(args[i], draw(st.sampled_from(BAD_ARRAY_KINDS)), "qkv"[i])
    elif mutation == "window":
        kw["window"] = draw(st.sampled_from(BAD_WINDOWS))
    elif mutation == "positions":
        name = draw(st.sampled_from(["q_pos", "k_pos"]))
        n = T if name == "q_pos" else S
        kw[name] = draw(bad_positions(k_pos[S - T:] if name == "q_pos" and T <= S else k_pos[:n]
                                      if n <= S else draw(increasing(n)), n))
    elif mutation == "scale":
        kw["scale"] = draw(st.sampled_from(BAD_SCALES + [10 ** 400, Fraction(10 ** 400, 3)]))
    elif mutation == "threads":
        kw["num_threads"] = draw(st.sampled_from(BAD_THREADS))
    return Call("attention", args, kw, note=f"mutation: {mutation}")


@st.composite
def ring_state(draw, C, Hkv, D, dtype, window):
    """A valid saved ring (positions [C], k, v) for load_state: n held consecutive positions
    ending anywhere (near 2**62 and the end of int64 too), garbage, NaN or Inf in empty slots."""
    n = draw(st.integers(0, C))
    pos = np.full(C, -1, dtype=np.int64)
    if n:
        last = draw(increasing(1))[0]
        last = max(last, n - 1)
        for p in range(last - n + 1, last + 1):
            pos[p % C] = p
    mqk, mv = magnitudes_for(dtype)
    k = draw(arrays((C, Hkv, D), dtype, draw(mqk)))
    v = draw(arrays((C, Hkv, D), dtype, draw(mv)))
    if draw(st.booleans()):                  # poison where no query can look: empty slots
        k[pos < 0] = np.nan
        v[pos < 0] = draw(st.sampled_from([np.nan, np.inf]))
    return pos, k, v


@st.composite
def caches(draw, Hkv, D, dtype, T):
    """A cache in one of its states: empty, loaded (load_state), or prefilled and wrapped; for
    a sliding window, the oldest held key may be poisoned (stale: no later query sees it)."""
    window = draw(st.sampled_from([1, 2, 3, 4, 5, 8, 1, 2, 3, 4, 5, 8, 63, 64, 65, 100, None]))
    capacity = None if window is not None else draw(st.integers(1, 3 * T + 4))
    c = RollingBufferCache(window, Hkv, D, dtype=dtype, capacity=capacity)
    state = draw(st.sampled_from(["empty", "loaded", "prefilled"]))
    if state == "loaded":
        load_state(c, *draw(ring_state(c.capacity, Hkv, D, dtype, window)))
    elif state == "prefilled":
        n = draw(st.integers(1, c.capacity if window is None else 3 * c.capacity))
        mqk, mv = magnitudes_for(dtype)
        q, k, v = (draw(arrays((n, h, D), dtype, draw(m))) for h, m in ((Hkv, mqk), (Hkv, mqk), (Hkv, mv)))
        start = min(draw(increasing(1))[0], INT64_MAX - n) if draw(st.booleans()) else None
        swaref.prefill(q, k, v, c, start=start, chunk_size=draw(st.integers(1, n)))
    if window is not None and c.n_seen >= c.capacity and draw(st.integers(0, 3)) == 0:
        oldest = int(np.argmin(np.where(c.positions >= 0, c.positions, np.iinfo(np.int64).max)))
        c.k[oldest] = np.nan                 # stale: outside every later query's window
        c.v[oldest] = np.inf
    return c


@st.composite
def chunk_sizes(draw, T):
    """None, an int (> T too), or a list of chunk lengths summing to T."""
    how = draw(st.sampled_from(["none", "int", "list", "list"]))
    if how == "none":
        return None
    if how == "int":
        return draw(st.sampled_from([1, 2, 3, T, T + 5, np.int64(2)]))
    cuts = sorted(draw(st.sets(st.integers(1, T - 1), max_size=5))) if T > 1 else []
    edges = [0] + cuts + [T]
    return [b - a for a, b in zip(edges, edges[1:])]


BAD_CHUNKS = [0, -1, True, 2.0, "3", [0], [True], [1.0], object()]


@st.composite
def step_calls(draw):
    """swaref.prefill(q, k, v, cache, ...) or swaref.decode_step(q, k, v, cache, ...) on a cache
    in some state, valid or with one argument (the cache included) spoilt."""
    decode = draw(st.booleans())
    T = 1 if decode else draw(SHAPES["T"])
    Hkv, D = draw(SHAPES["Hkv"]), draw(SHAPES["D"])
    dtype = draw(st.sampled_from([np.float64, np.float64, np.float32, np.float32, np.float16]))
    cache = draw(caches(Hkv, D, dtype, T))
    return draw(step_call_on(cache, decode, T))


STEP_MUTATIONS = ["array", "start", "chunks", "scale", "threads", "cache", "T"]


@st.composite
def step_call_on(draw, cache, decode, T, mutation=None):
    """A prefill of T tokens (or a decode step) on ``cache``; ``mutation`` None: drawn (often
    "none"), else that one ("cache" replaces the cache by one of other dims or dtype)."""
    Hkv, D, dtype = cache.n_kv_heads, cache.head_dim, cache.dtype.type
    G = draw(SHAPES["G"])
    q, k, v = draw(qkv(T, T, Hkv * G, Hkv, D, dtype))
    kw = {}
    nxt = cache.next_position
    start = draw(st.sampled_from(["default", "default", "explicit"]))
    if start == "explicit":
        kw["start"] = nxt if nxt is not None else draw(increasing(1))[0]
    if not decode:
        kw["chunk_size"] = draw(chunk_sizes(T))
    kw["scale"] = draw(scales())
    kw["num_threads"] = draw(THREADS)
    args = draw(laid_out((q, k, v))) + [CACHE]
    if mutation is None:
        mutation = draw(st.sampled_from(["none"] * 5 + STEP_MUTATIONS))
    if mutation == "array":
        i = draw(st.integers(0, 2))
        args[i] = spoil_array(args[i], draw(st.sampled_from(BAD_ARRAY_KINDS)), "qkv"[i])
    elif mutation == "start":
        base = nxt if nxt is not None else 0
        kw["start"] = draw(st.sampled_from([base + 1, base - 1, -1, True, 2.5, "0", 10 ** 400, 2 ** 63,
                                            INT64_MAX, np.uint64(2 ** 64 - 1)]))
    elif mutation == "chunks" and not decode:
        kw["chunk_size"] = draw(st.sampled_from(BAD_CHUNKS + [[T + 1], [T, 1], [T, 0], [-1, T + 1]]))
    elif mutation == "scale":
        kw["scale"] = draw(st.sampled_from(BAD_SCALES + [10 ** 400]))
    elif mutation == "threads":
        kw["num_threads"] = draw(st.sampled_from(BAD_THREADS))
    elif mutation == "cache":
        bad = draw(st.sampled_from(["not a cache", "None", "other D", "other Hkv", "other dtype"]))
        if bad == "not a cache":
            args[3] = {"k": cache.k}
        elif bad == "None":
            args[3] = None
        else:
            w = cache.window
            other = np.float64 if dtype == np.float32 else np.float32
            c2 = RollingBufferCache(w, Hkv + (bad == "other Hkv"), D + (bad == "other D"),
                                    dtype=other if bad == "other dtype" else dtype,
                                    capacity=None if w is not None else cache.capacity)
            args[3], cache = CACHE, c2
    elif mutation == "T":                    # k, v rows differ from q's (or decode of 2 tokens)
        if decode:
            args[:3] = [np.concatenate([x, x]) if isinstance(x, np.ndarray) else x for x in args[:3]]
        else:
            args[1], args[2] = args[1][:-1] if T > 1 else np.concatenate([args[1]] * 2), \
                args[2][:-1] if T > 1 else np.concatenate([args[2]] * 2)
    fn = "decode_step" if decode else "prefill"
    return Call(fn, args, kw, cache=cache if args[3] is CACHE else None, note=f"mutation: {mutation}")


@st.composite
def write_calls(draw, cache=None, mutation=None):
    """swaref.cache_write(cache, k, v, start=...): the public write, valid (zero tokens too) or
    with one argument spoilt."""
    if cache is None:
        Hkv, D = draw(SHAPES["Hkv"]), draw(SHAPES["D"])
        dtype = draw(st.sampled_from([np.float64, np.float32, np.float16]))
        cache = draw(caches(Hkv, D, dtype, 4))
    Hkv, D, dtype = cache.n_kv_heads, cache.head_dim, cache.dtype.type
    T = draw(st.sampled_from([0, 1, 1, 2, 3, cache.capacity, cache.capacity + 2]))
    _, mv = magnitudes_for(dtype)
    k = draw(arrays((T, Hkv, D), dtype, 1.0))
    v = draw(arrays((T, Hkv, D), dtype, draw(mv)))
    k, v = draw(laid_out((k, v)))
    kw = {}
    if draw(st.booleans()):
        kw["start"] = cache.next_position if cache.next_position is not None else draw(increasing(1))[0]
    args = [CACHE, k, v]
    if mutation is None:
        mutation = draw(st.sampled_from(["none"] * 4 + ["array", "start", "cache"]))
    if mutation == "array":
        i = draw(st.integers(1, 2))
        args[i] = spoil_array(args[i], draw(st.sampled_from(BAD_ARRAY_KINDS)), "qkv"[i])
    elif mutation == "start":
        base = cache.next_position if cache.next_position is not None else 0
        kw["start"] = draw(st.sampled_from([base + 1, base - 1, -1, True, 2.5, "0", 10 ** 400, INT64_MAX]))
    elif mutation == "cache":
        args[0] = draw(st.sampled_from([None, "cache", {"k": cache.k}]))
    return Call("cache_write", args, kw, cache=cache if args[0] is CACHE else None, note=f"mutation: {mutation}")


# ======================================================================================
# The properties
# ======================================================================================

@fuzz_property(call=attention_calls())
def test_fuzz_attention(call):
    """swaref.attention on both backends, valid or with one argument spoilt: properties (1)-(6)."""
    check_call(call)


@fuzz_property(call=step_calls())
def test_fuzz_prefill_and_decode(call):
    """prefill / decode_step on a cache in any state, both backends: (1)-(6) and rule 4."""
    check_call(call)


# --------------------------------------------------------------------------------------
# load_state, the constructor, window_mask
# --------------------------------------------------------------------------------------

@st.composite
def spoilt_ring(draw, pos, k, v, C):
    """A saved ring that load_state must refuse (or, for "garbage in empty slots", accept)."""
    how = draw(st.sampled_from(["wrong slot", "gap", "below -1", "uint64 huge", "float", "bool", "shape",
                                "k shape", "v dtype", "k list", "positions None", "2-D"]
                               + ["ragged"]))
    pos = pos.copy()
    if how == "wrong slot":
        i = draw(st.integers(0, C - 1))
        p = int(pos[i]) if pos[i] >= 0 else i
        step = draw(st.sampled_from([1, C + 1])) if C > 1 else C + 1
        pos[i] = p + step if p + step <= INT64_MAX else p - step       # (a position in another slot)
        if C == 1:                            # one slot holds anything; make it a real error
            pos[0] = -2
    elif how == "gap":
        held = np.nonzero(pos >= 0)[0]
        if held.size >= 2 and C >= 3:         # drop a middle position of the run: not consecutive
            order = held[np.argsort(pos[held])]
            pos[order[1]] = -1 if held.size >= 3 else pos[order[1]]
            if held.size < 3:
                pos[order[0]] = -5
        else:
            pos[0] = -3
    elif how == "below -1":
        pos[draw(st.integers(0, C - 1))] = draw(st.sampled_from([-2, -2 ** 63]))
    elif how == "uint64 huge":
        pos = np.full(C, 2 ** 64 - 1, dtype=np.uint64)
    elif how == "float":
        pos = pos.astype(np.float64)
    elif how == "bool":
        pos = pos >= 0
    elif how == "shape":
        pos = np.concatenate([pos, [-1]])
    elif how == "k shape":
        k = k[:, :, :-1] if k.shape[2] > 1 else k[:0]
    elif how == "v dtype":
        v = v.astype(np.float32 if v.dtype != np.float32 else np.float64)
    elif how == "k list":
        k = k.tolist()
    elif how == "positions None":
        pos = None
    elif how == "2-D":
        pos = pos[None]
    elif how == "ragged":
        pos = [[int(p)] for p in pos[:-1]] + [[int(pos[-1]), 0]]
    return pos, k, v, how


@fuzz_property(call=write_calls())
def test_fuzz_cache_write(call):
    """swaref.cache_write, valid (zero tokens too) or spoilt: refused writes change nothing."""
    check_call(call)


@fuzz_property(data=st.data())
def test_fuzz_load_state_then_decode(data):
    """load_state with valid and spoilt rings (poison in empty slots too); an accepted state
    then takes a decode step on both backends (the kernel reads the loaded ring in place)."""
    Hkv, D = data.draw(SHAPES["Hkv"]), data.draw(SHAPES["D"])
    dtype = data.draw(st.sampled_from([np.float64, np.float32, np.float16]))
    cache = data.draw(caches(Hkv, D, dtype, 4))
    pos, k, v = data.draw(ring_state(cache.capacity, Hkv, D, dtype, cache.window))
    how = "valid"
    if data.draw(st.booleans()):
        pos, k, v, how = data.draw(spoilt_ring(pos, k, v, cache.capacity))
    if isinstance(pos, np.ndarray) and data.draw(st.booleans()):
        pos = data.draw(position_arg(pos.tolist())) if pos.ndim == 1 and pos.dtype.kind == "i" and \
            (pos >= -1).all() and not (pos == -1).any() else pos
    caches_ = {b: clone(cache) for b in BACKENDS}
    results = check_call(Call("load_state", [CACHE, pos, k, v], cache=cache, note=how), caches_)
    if results["reference"][0] == "ok":
        check_call(data.draw(step_call_on(caches_["reference"], True, 1)).with_cache(caches_["reference"]),
                   caches_)


@fuzz_property(data=st.data())
def test_fuzz_cache_constructor(data):
    """RollingBufferCache(window, n_kv_heads, head_dim, dtype, capacity), valid or with one
    argument spoilt: only SwarefError escapes, and an accepted cache is in the constructed state."""
    huge = [10 ** 400]                                                    # beyond float range
    valid = dict(window=[1, 2, 7, None, np.int64(3)], Hkv=[1, 2, 3, np.int64(2)], D=[1, 2, 5, np.int64(2)],
                 dtype=[np.float16, np.float32, np.float64, "float32", "f8"], capacity=[1, 5, np.int64(4)])
    # Sizes no array can hold (>= 2**60 elements: refused before allocating); nothing in
    # between, which would really try to allocate terabytes.
    bad = dict(window=[0, -1, True, 2.0, "4", 2 ** 62, 2 ** 63, 2 ** 64] + huge,
               Hkv=[0, -1, True, 2.0, "2", None, 2 ** 62] + huge,
               D=[0, -1, True, 2.0, "2", None, 2 ** 62] + huge,
               dtype=[np.int32, np.complex64, "nonsense", object, np.dtype(">f8")],
               capacity=[0, -1, True, 2.5, "3", "missing", "other", 2 ** 62] + huge)
    arg = {name: data.draw(st.sampled_from(vals)) for name, vals in valid.items()}
    spoilt = data.draw(st.sampled_from(["none", "none"] + list(bad)))
    if spoilt != "none":
        arg[spoilt] = data.draw(st.sampled_from(bad[spoilt]))
    kw = {"dtype": arg["dtype"]}
    cap = arg["capacity"]
    w = arg["window"]
    if w is None or spoilt == "capacity" or data.draw(st.booleans()):
        # full attention needs one; a window takes none (C = W) or C >= W (slack, spec 1.1)
        if cap == "other":                              # below the window: refused
            cap = int(w) - 1 if V.is_int(w) and int(w) >= 2 else 0
        elif spoilt != "capacity" and V.is_int(w) and V.is_int(cap):
            cap = int(w) + int(cap) - 1                 # a valid slack capacity >= W
        if cap != "missing":
            kw["capacity"] = cap
    check_call(Call("RollingBufferCache", [arg["window"], arg["Hkv"], arg["D"]], kw, note=f"spoilt: {spoilt}"))


def mask_positions(domain):
    """1-D integer positions (any order, repeats, negatives) from one domain: 'nonneg' (all of
    0 .. 2**63 - 1), 'small' (|p| < 2**62, so that p - j fits int64), 'full' (all of int64 and
    uint64), 'python' (Python ints of any size, which window_mask takes in lists)."""
    lo, hi = {"nonneg": (0, INT64_MAX), "small": (1 - KERNEL_MAX, KERNEL_MAX - 1), "full": (-2 ** 63, 2 ** 64 - 1),
              "python": (-10 ** 30, 10 ** 30)}[domain]
    near = st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi, 0, 1, hi - 1, lo + 1, INT64_MAX, 2 ** 62]
                                                         ).filter(lambda p: lo <= p <= hi))
    return st.lists(near, min_size=0, max_size=6)


@st.composite
def as_int_array(draw, pos):
    """The positions as an int64 or uint64 array or a list (each where it holds them)."""
    kinds = []
    if all(-2 ** 63 <= p <= INT64_MAX for p in pos):
        kinds.append("int64")
    if all(0 <= p < 2 ** 64 for p in pos):
        kinds.append("uint64")
    if pos:                                   # lists: Python ints of any size
        kinds.append("list")
    kind = draw(st.sampled_from(kinds))
    return list(pos) if kind == "list" else np.array(pos, dtype=kind)


MASK_WINDOWS = st.sampled_from([None, 1, 2, 3, 7, 2 ** 31, 2 ** 62, INT64_MAX, 2 ** 63, 2 ** 64, 10 ** 30, 10 ** 40,
                                np.int64(5), np.uint64(2 ** 64 - 1)])


def check_window_mask(qp, kp, window):
    """window_mask against the brute force on Python ints (exact, no overflow)."""
    got = invoke(Call("window_mask", [qp, kp, window]), "reference", None)
    call = f"window_mask({describe(qp)}, {describe(kp)}, {window!r})"
    assert got[0] == "ok", f"{call} rejected valid input: {got}"
    w = None if window is None else int(window)
    want = brute_force_mask([int(p) for p in qp], [int(p) for p in kp], w)
    assert got[1].dtype == bool and got[1].shape == want.shape, f"{call}: {got[1].dtype}{got[1].shape}"
    bad = np.argwhere(got[1] != want)
    assert not bad.size, f"{call}: wrong at (query, key) {tuple(bad[0])}: got {got[1][tuple(bad[0])]}"


@fuzz_property(data=st.data())
def test_fuzz_window_mask_against_brute_force(data):
    """window_mask is rule 1 exactly: against a double loop on Python ints, for positions
    anywhere in 0 .. 2**63 - 1 or |p| < 2**62 (any order, repeats), all of int64 and uint64
    (spec: exact for every int64 and uint64 position) and Python ints of any size in lists;
    windows up to 10**40."""
    domains = ["nonneg", "small", "full", "python"]
    domain = data.draw(st.sampled_from(domains))
    qp = data.draw(as_int_array(data.draw(mask_positions(domain)).copy() or [0]))
    kp = data.draw(as_int_array(data.draw(mask_positions(domain)) or [1]))
    check_window_mask(qp, kp, data.draw(MASK_WINDOWS))


@fuzz_property(qp=st.sampled_from([[1.0], [True], [[1]], "12", None, 3, np.zeros((2, 2), np.int64)]),
               window=st.sampled_from([2, 0, -1, True, 2.5, "2", None]))
def test_fuzz_window_mask_rejects_only_with_swaref_error(qp, window):
    """window_mask with positions or windows of the wrong type or shape: only SwarefError."""
    for args in ((qp, [0], 2), ([0], qp, 2), ([0], [0], window)):
        invoke(Call("window_mask", list(args)), "reference", None)


# --------------------------------------------------------------------------------------
# A sequence of steps on one cache, both backends in lockstep
# --------------------------------------------------------------------------------------

@fuzz_property(share=0.25, data=st.data())       # up to 10 calls per example
def test_fuzz_sequence_both_backends_in_lockstep(data):
    """A random schedule of prefills, decode steps, rejected calls, reset, copy and load_state
    on one cache per backend: after every step both caches are bitwise equal (and, after a
    write, as rule 4 says) and the outputs agree with each other and the oracle."""
    Hkv, D = data.draw(SHAPES["Hkv"]), data.draw(SHAPES["D"])
    dtype = data.draw(st.sampled_from([np.float64, np.float32]))    # float16: cython refuses every step
    window = data.draw(st.sampled_from([1, 2, 3, 4, 6, None]))
    cache = RollingBufferCache(window, Hkv, D, dtype=dtype, capacity=None if window else data.draw(st.integers(4, 30)))
    pair = {b: clone(cache) for b in BACKENDS}
    for step in range(data.draw(st.integers(1, 10))):
        op = data.draw(st.sampled_from(["prefill", "prefill", "decode", "decode", "decode", "rejected",
                                        "busy", "reset", "copy", "load_state", "write"]), label=f"step {step}")
        ref = pair["reference"]
        if op in ("prefill", "decode", "rejected"):
            decode = op == "decode" or (op == "rejected" and data.draw(st.booleans()))
            T = 1 if decode else data.draw(SHAPES["T"])
            mutation = "none" if op != "rejected" else data.draw(
                st.sampled_from([m for m in STEP_MUTATIONS if m != "cache"]))
            call = data.draw(step_call_on(ref, decode, T, mutation)).with_cache(ref)
            results = check_call(call, pair)
            if results["reference"][0] != results["cython"][0]:
                return       # the compiled backend refused a position above 2**62: no longer in lockstep
        elif op == "busy":   # a valid call while another thread uses the cache: refused, nothing written
            decode = data.draw(st.booleans())
            call = data.draw(step_call_on(ref, decode, 1 if decode else data.draw(SHAPES["T"]), "none"))
            with held_by_another_thread(list(pair.values())):
                results = check_call(call.with_cache(ref), pair, held=True)
            for b, c in pair.items():
                assert_not_left_locked(c, f"backend={b}, after the other thread let go")
            for b, c in pair.items():
                free = invoke(call, b, clone(c))          # the same call on a free cache
                assert results[b][0] == "rejected" and (free[0] == "rejected" or results[b][1] == "cache"), \
                    f"backend={b}: {results[b][:2]} on a cache held by another thread, {free[:2]} on a free " \
                    f"one\n  call: {call!r}"
        elif op == "write":
            check_call(data.draw(write_calls(ref)).with_cache(ref), pair)
        elif op == "reset":
            for c in pair.values():
                c.reset()
            fresh = RollingBufferCache(window, Hkv, D, dtype=dtype, capacity=cache.capacity if window is None else None)
            assert_unchanged(snapshot(fresh), snapshot(pair["reference"]), "cache after reset() vs a new cache")
        elif op == "copy":
            for b, c in list(pair.items()):
                new = c.copy()
                assert_unchanged(snapshot(c), snapshot(new), "cache.copy()")
                assert not any(np.shares_memory(getattr(c, n), getattr(new, n)) for n in ("k", "v", "positions"))
                pair[b] = new
        else:
            pos, k, v = data.draw(ring_state(ref.capacity, Hkv, D, dtype, window))
            how = "valid"
            if data.draw(st.booleans()):
                pos, k, v, how = data.draw(spoilt_ring(pos, k, v, ref.capacity))
            check_call(Call("load_state", [CACHE, pos, k, v], cache=clone(ref), note=how), pair)
        assert_unchanged(snapshot(pair["reference"]), snapshot(pair["cython"]),
                         f"the two backends' caches after step {step} ({op})")


# ======================================================================================
# The harness can fail: each check caught on a deliberately broken swaref
# ======================================================================================

def _property_fails(strategy, body, monkeypatch=None, n=300):
    """Run ``body`` over ``strategy`` (generate phase only) and return the AssertionError it must raise."""
    from hypothesis import Phase

    @settings(max_examples=n, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              report_multiple_bugs=False, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(x):
        body(x)

    with pytest.raises(AssertionError) as info:
        run()
    return str(info.value)


# The broken versions wrap the public functions (what the harness calls), so that these tests
# do not depend on swaref's internals, which change.

def test_harness_catches_a_cache_written_before_validation(monkeypatch):
    # prefill/decode_step that write the cache before validating: on a call that will be
    # refused, they first spoil cache.k.  The property must report the changed cache.
    def writes_first(fn):
        def broken(q, k, v, cache, **kw):
            if isinstance(cache, RollingBufferCache):
                try:
                    fn(q, k, v, clone(cache), **kw)           # would it be refused?
                except SwarefError:
                    cache.k[...] = 7
                    raise
            return fn(q, k, v, cache, **kw)
        return broken

    monkeypatch.setattr(swaref, "prefill", writes_first(swaref.prefill))
    monkeypatch.setattr(swaref, "decode_step", writes_first(swaref.decode_step))
    msg = _property_fails(step_calls(), check_call)
    assert "cache after a rejected call" in msg and "changed (k)" in msg, msg


def test_harness_catches_a_compiled_decode_that_writes_other_bits(monkeypatch):
    # A compiled decode_step that stores the value rounded differently (last bit flipped in
    # its slot): the outputs may still agree, the caches must not.
    original = swaref.decode_step

    def other_bits(q, k, v, cache, **kw):
        out = original(q, k, v, cache, **kw)
        if kw.get("backend") == "cython":
            slot = (cache.next_position - 1) % cache.capacity
            bits = cache.v[slot].view(np.uint16 if cache.dtype == np.float16 else
                                      np.uint32 if cache.dtype == np.float32 else np.uint64)
            bits ^= 1
        return out

    monkeypatch.setattr(swaref, "decode_step", other_bits)
    msg = _property_fails(step_calls(), check_call)
    assert "cython's cache vs the reference's" in msg and "changed (v)" in msg, msg


def test_harness_catches_a_wrong_kernel_output(monkeypatch):
    # A compiled backend off by 1e-9 x max|V| in one element (within float32's tolerance, not float64's).
    original = swaref.attention

    def off(q, k, v, **kw):
        out = original(q, k, v, **kw)
        if kw.get("backend") == "cython" and out.dtype == np.float64:
            out.flat[0] += 1e-9 * max(1.0, float(np.abs(v).max()))
        return out

    monkeypatch.setattr(swaref, "attention", off)
    msg = _property_fails(attention_calls(), check_call)
    assert "cython vs" in msg or "cython: output" in msg, msg     # the comparison or the hull (6)


def test_harness_catches_an_escaping_exception_and_a_disagreement(monkeypatch):
    # An attention that raises a bare ZeroDivisionError for scale 0 (both backends); then a
    # compiled backend that refuses single queries, which the reference accepts.
    original = swaref.attention

    def zero_div(q, k, v, **kw):
        scale = kw.get("scale")
        if isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale == 0:
            raise ZeroDivisionError("scale")
        return original(q, k, v, **kw)

    monkeypatch.setattr(swaref, "attention", zero_div)
    msg = _property_fails(attention_calls(), check_call)
    assert "ZeroDivisionError escaped" in msg, msg

    def refuses(q, k, v, **kw):
        if kw.get("backend") == "cython" and isinstance(q, np.ndarray) and q.shape[:1] == (1,):
            raise SwarefError("shape", "one query")
        return original(q, k, v, **kw)

    monkeypatch.setattr(swaref, "attention", refuses)
    msg = _property_fails(attention_calls(), check_call)
    assert "backends disagree" in msg, msg


def test_harness_catches_a_wrong_window_mask(monkeypatch):
    # The W + 1 reading of the window ("W previous tokens plus self").
    monkeypatch.setattr(swaref, "window_mask", _w_plus_1)
    msg = _property_fails(st.tuples(mask_positions("nonneg"), mask_positions("nonneg"), MASK_WINDOWS),
                          lambda a: check_window_mask(np.array(a[0] or [0], dtype=np.int64),
                                                      np.array(a[1] or [0], dtype=np.int64), a[2]))
    assert "wrong at" in msg, msg


def _w_plus_1(qp, kp, w):
    qp, kp = np.asarray(qp, dtype=np.int64), np.asarray(kp, dtype=np.int64)
    d = qp[:, None] - kp[None, :]
    return (d >= 0) if w is None else (d >= 0) & (d <= int(w))


# ======================================================================================
# Bugs the fuzzer found, as minimal reproducers: fixed ones stay as regression tests
# (test_found_*), open ones are strict xfail (test_bug_*, each with its KNOWN_BUGS entry)
# ======================================================================================

def _small_qkv(dtype=np.float64):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((3, 2, 4)).astype(dtype), rng.standard_normal((3, 1, 4)).astype(dtype),
            rng.standard_normal((3, 1, 4)).astype(dtype))


@pytest.mark.parametrize("scale", [10 ** 400, Fraction(10 ** 400, 3)], ids=["10**400", "Fraction(10**400,3)"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_found_scale_beyond_float_range(scale, backend):
    # Found by this fuzzer (OverflowError escaped from float(scale)); fixed on main.
    q, k, v = _small_qkv()
    with pytest.raises(SwarefError) as info:
        swaref.attention(q, k, v, window=2, scale=scale, backend=backend)
    assert info.value.kind == "scale"
    c = RollingBufferCache(2, 1, 4, dtype=np.float64)
    with pytest.raises(SwarefError) as info:
        swaref.prefill(q, k, v, c, scale=scale, backend=backend)
    assert info.value.kind == "scale" and c.n_seen == 0


@pytest.mark.parametrize("where", ["q_pos", "k_pos", "load_state", "window_mask"])
def test_found_ragged_position_list(where):
    # Found by this fuzzer (NumPy's ValueError escaped from np.asarray); fixed on main.
    q, k, v = _small_qkv()
    ragged = [[0], [1, 2], [3]]
    with pytest.raises(SwarefError) as info:
        if where == "load_state":
            c = RollingBufferCache(3, 1, 4, dtype=np.float64)
            load_state(c, ragged, c.k.copy(), c.v.copy())
        elif where == "window_mask":
            swaref.window_mask(ragged, [0, 1], 2)
        else:
            swaref.attention(q, k, v, window=2, **{where: ragged})
    assert info.value.kind in ("positions", "cache")


@pytest.mark.parametrize("args,kwargs", [
    ((2 ** 62, 1, 1), {}), ((2 ** 63, 1, 1), {}), ((2 ** 64, 1, 1), {}), ((4, 2 ** 62, 1), {}),
    ((10 ** 400, 1, 1), {}), ((None, 1, 1), {"capacity": 10 ** 400}), ((4, 1, 10 ** 400), {}),
], ids=["W=2**62", "W=2**63", "W=2**64", "Hkv=2**62", "W=10**400", "capacity=10**400", "D=10**400"])
def test_found_cache_too_large_to_allocate(args, kwargs):
    # Found by this fuzzer (NumPy's ValueError, then for 10**400 an OverflowError in the size
    # message, escaped); fixed on main.
    with pytest.raises(SwarefError):
        RollingBufferCache(*args, **kwargs)


@pytest.mark.parametrize("qp,kp,window", [
    (np.array([2 ** 63], dtype=np.uint64), np.array([0], dtype=np.uint64), None),     # True (was False)
    (np.array([2 ** 64 - 1], dtype=np.uint64), np.array([2 ** 63 - 1], dtype=np.uint64), 2 ** 64),
    (np.array([-2 ** 63]), np.array([2 ** 63 - 1]), None),                          # False (was True)
    (np.array([2 ** 62]), np.array([-2 ** 62]), None),                              # True (was False)
])
def test_found_window_mask_overflow(qp, kp, window):
    # Found by this fuzzer (int64 casts and p - j overflowing); fixed on main.
    check_window_mask(qp, kp, window)


def test_fixed_float32_score_overflow():
    # The brief's reproducer (float32 scores overflow: q = k = 1e19, D = 4); fixed on main (the
    # kernel recomputes such rows in float64).
    q = np.full((1, 1, 4), 1e19, np.float32)
    k = np.full((2, 1, 4), 1e19, np.float32)
    v = np.ones((2, 1, 4), np.float32)
    ref = swaref.attention(q, k, v, window=2, q_pos=[1], scale=1.0)
    out = swaref.attention(q, k, v, window=2, q_pos=[1], scale=1.0, backend="cython")
    assert np.isfinite(ref).all()
    assert np.isfinite(out).all(), f"cython: {out.ravel()} where the reference gives {ref.ravel()}"


@pytest.mark.parametrize("k_pos", [[63, 64], [127, 128], [2 ** 40 - 1, 2 ** 40]])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("finite", [True, False], ids=["scale 1e300", "key -inf"])
def test_found_neg_inf_score_in_an_earlier_tile(k_pos, dtype, finite):
    # Found by this fuzzer: the kernel gave NaN for a query whose visible keys straddle a
    # 64-position tile boundary when every visible score in the earlier tile is -Inf (from
    # finite input too: scale=1e300 overflows the score); fixed on main.
    q = np.array([[[1.0]]], dtype=dtype)
    k = np.array([[[-1e10 if finite else -np.inf]], [[0.0]]], dtype=dtype)
    v = np.array([[[5.0]], [[7.0]]], dtype=dtype)
    scale = 1e300 if finite and dtype == np.float64 else 1e30 if finite else 1.0
    if finite and dtype == np.float32:
        k[0] = -1e30                              # float32: -1e30 * 1e30 overflows to -inf
    with np.errstate(all="ignore"):
        ref = swaref.attention(q, k, v, window=2, k_pos=k_pos, q_pos=[k_pos[1]], scale=scale)
        out = swaref.attention(q, k, v, window=2, k_pos=k_pos, q_pos=[k_pos[1]], scale=scale, backend="cython")
    assert ref.ravel().tolist() == [7.0]
    assert out.ravel().tolist() == [7.0], f"cython {out.ravel()} (reference {ref.ravel()})"


def test_neg_inf_score_within_one_tile_is_fine():
    # The same keys at positions 0 and 1 (one tile): both backends give 7.0, so the bug above is
    # the tile boundary, not the -Inf score itself.
    q = np.array([[[1.0]]])
    k = np.array([[[-np.inf]], [[0.0]]])
    v = np.array([[[5.0]], [[7.0]]])
    for backend in BACKENDS:
        with np.errstate(all="ignore"):
            out = swaref.attention(q, k, v, window=2, k_pos=[0, 1], q_pos=[1], backend=backend)
        assert out.ravel().tolist() == [7.0], backend


@pytest.mark.parametrize("scale", [4e38, 1e40, -1e40])
def test_found_float32_scale_beyond_float32_range(scale):
    # Found by this fuzzer: the float32 kernel rounded the scale to float32, so a finite scale
    # above 3.4e38 became inf and the output NaN though every score fits; fixed on main.
    q = np.full((1, 1, 1), 1e-4, np.float32)
    k = np.full((2, 1, 1), 1e-4, np.float32)
    v = np.array([[[0.5]], [[0.25]]], np.float32)
    ref = swaref.attention(q, k, v, window=2, q_pos=[1], scale=scale)
    out = swaref.attention(q, k, v, window=2, q_pos=[1], scale=scale, backend="cython")
    assert ref.ravel().tolist() == [0.375]
    assert np.isfinite(out).all(), f"cython: {out.ravel()} where the reference gives {ref.ravel()}"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_keys", [1, 2])
def test_found_row_of_neg_inf_scores(dtype, n_keys):
    # Found by this fuzzer: when every visible score of a row is -Inf (a -Inf key) the kernel
    # returned 0.0, outside the range of V, where the reference gives NaN (spec rule 3: NaN
    # and Inf inside a window propagate as IEEE says); fixed on main.
    q = np.ones((1, 1, 1), dtype)
    k = np.full((n_keys, 1, 1), -np.inf, dtype)
    v = np.full((n_keys, 1, 1), 5.0, dtype)
    call = Call("attention", [q, k, v], dict(window=n_keys, q_pos=[n_keys - 1]))
    ref, out = invoke(call, "reference", None)[1], invoke(call, "cython", None)[1]
    assert np.isnan(ref).all()
    assert np.isnan(out).all(), f"cython {out.ravel()} where the reference gives {ref.ravel()}"


@pytest.mark.parametrize("dtype,q0,k0,scale", [(np.float64, 1e160, -1e160, 1.0), (np.float32, 1.0, 1.0, -1e40)])
def test_found_debug_build_zero_division_on_overflowing_scores(dtype, q0, k0, scale):
    q = np.array([[[q0]], [[2.0]]], dtype)
    k = np.array([[[k0]], [[k0]]], dtype)
    v = np.array([[[5.0]], [[7.0]]], dtype)
    call = Call("attention", [q, k, v], dict(window=2, scale=scale))
    ref = invoke(call, "reference", None)
    assert ref[0] == "ok" and ref[1].ravel().tolist() == [5.0, 6.0]
    out = invoke(call, "cython", None)        # asserts that nothing was raised and ignored
    assert out[1].ravel().tolist() == [5.0, 6.0], out


@pytest.mark.parametrize("where", ["q", "k"])
def test_found_reference_overflow_path_per_head(where):
    q = np.array([[[1.0], [1e160]]])                   # T = 1, Hq = 2, D = 1
    k = np.array([[[1e160]], [[1.0]]])                 # S = 2, Hkv = 1
    v = np.array([[[5.0]], [[7.0]]])
    if where == "q":
        q[0, 0, 0] = np.nan                            # head 0's query only
    else:                                              # a second KV head's key (head 0 reads it)
        q = np.array([[[1.0], [1e160]]])
        k = np.array([[[np.nan], [1e160]], [[1.0], [1.0]]])
        v = np.array([[[5.0], [5.0]], [[7.0], [7.0]]])
    call = Call("attention", [q, k, v], dict(window=2, q_pos=[1]))
    ref, out = invoke(call, "reference", None)[1], invoke(call, "cython", None)[1]
    assert out[0, 1, 0] == 5.0, f"cython {out.ravel()}"
    assert ref[0, 1, 0] == 5.0, f"reference {ref.ravel()}, cython {out.ravel()}"
