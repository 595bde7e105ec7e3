"""The rolling buffer KV cache (docs/spec.md, rule 4).

The class holds state only; the rules live in the module-level functions
``slot_of``, ``cache_write`` and ``cache_view``.

State of a cache of window W and capacity C >= W slots (C = W unless slack
is asked for, ``capacity=W + slack``, so that the last tokens can be rolled back;
for ``Chunked(C)`` the chunk size plays W's part), plus n = ``sink_tokens`` fixed
slots for a ``Sliding`` window with kept sink tokens (0 otherwise):

* ``k``, ``v``: [n + C, Hkv, D] slot buffers, zero-initialised, in slot order: the
  n sink slots first (position p < n in slot p, never evicted), then the ring
  (position p >= n in slot n + (p - n) mod C);
* ``positions``: [n + C] int64, the absolute position held by each slot, -1 if empty;
* ``n_seen``: number of tokens written since the last reset, less those rolled back
  (they are the positions ``next_position - n_seen .. next_position - 1``);
* ``n_held``: number of valid ring slots (the consecutive positions
  ``next_position - n_held .. next_position - 1``, all >= n);
* ``next_position``: the position the next written token must have (None
  while the cache is empty: the first write may start anywhere >= 0).

A full-attention layer (``window=None``) needs every key, so its cache is a
plain buffer of an explicit ``capacity`` that refuses to overwrite.
"""
import contextlib
import threading

from typing import Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _validate as V
from .errors import SwarefError, SwarefTypeError
from .windows import Chunked, Sliding, Window, is_causal

INT64_MAX = int(np.iinfo(np.int64).max)    # checked once per cache per model step: a constant, not an iinfo


class RollingBufferCache:
    """One layer's rolling buffer of W slots for one sequence, used by one caller at a time.

    RollingBufferCache(window, n_kv_heads, head_dim, dtype=np.float32, capacity=None)

    ``window``: None (full attention: an explicit capacity, never overwritten), an
    int W, ``Sliding(W, sink_tokens=n)`` (n fixed sink slots besides the ring) or
    ``Chunked(C)``.  A ``TwoSided`` window that looks ahead is refused: a cache is
    causal.  ``capacity`` is the ring's slots, at least W (or C), W (or C) by default.

    Every swaref call that reads or writes the cache holds its lock for the whole
    call without waiting: a second, concurrent call is refused with
    SwarefError(kind="cache") instead of interleaving its writes (spec rule 4).
    The lock is re-entrant, so a caller (a model's forward pass) may hold all its
    layers' caches for a whole step and call swaref on them inside.
    """

    def __init__(self, window: Optional[int], n_kv_heads: int, head_dim: int,
                 dtype: DTypeLike = np.float32, capacity: Optional[int] = None) -> None:
        window = V.check_window(window)
        if not is_causal(window):
            raise SwarefError("window", f"window={window!r} looks ahead, and a cache is causal (a query never "
                                        f"sees a later token); a two-sided window is for attention() only")
        n_kv_heads = V.check_int(n_kv_heads, "n_kv_heads", minimum=1)
        head_dim = V.check_int(head_dim, "head_dim", minimum=1)
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise SwarefTypeError("dtype", f"dtype must be float16, float32 or float64, got {dtype!r}") from None
        if dt not in V.FLOAT_DTYPES:
            raise SwarefTypeError("dtype", f"dtype must be float16, float32 or float64, got {dt}")
        if window is None and capacity is None:
            raise SwarefError("cache", "a full-attention cache (window=None) needs an explicit capacity")
        span = ring_span(window)
        cap = V.check_int(span if capacity is None else capacity, "capacity", kind="cache",
                          minimum=1 if span is None else span)
        self.window = window
        self.capacity = cap
        self.sink_tokens = window.sink_tokens if isinstance(window, Sliding) else 0
        self.n_kv_heads = n_kv_heads
        self.head_dim = head_dim
        self.dtype = dt
        self.k, self.v, self.positions = _allocate(self.sink_tokens + cap, n_kv_heads, head_dim, dt)
        self.n_seen = 0
        self.n_held = 0
        self.next_position = None
        self._lock = threading.RLock()

    def reset(self) -> None:
        """Back to the freshly constructed state (zeroed buffers, all slots empty)."""
        with exclusive(self):
            self.k[...] = 0
            self.v[...] = 0
            self.positions[...] = -1
            self.n_seen = 0
            self.n_held = 0
            self.next_position = None

    def copy(self) -> "RollingBufferCache":
        """An independent deep copy (e.g. to fork a prompt's cache)."""
        with exclusive(self):
            new = RollingBufferCache.__new__(RollingBufferCache)
            new.__dict__.update(self.__dict__)
            new.k = self.k.copy()
            new.v = self.v.copy()
            new.positions = self.positions.copy()
            new._lock = threading.RLock()
        return new

    def view(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(k [n, Hkv, D], v [n, Hkv, D], positions [n]) of the valid slots in time order."""
        return cache_view(self)

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes + self.positions.nbytes

    def __repr__(self):
        return (f"RollingBufferCache(window={self.window!r}, n_kv_heads={self.n_kv_heads}, "
                f"head_dim={self.head_dim}, dtype={self.dtype.name}, n_seen={self.n_seen}, "
                f"next_position={self.next_position})")


def ring_span(window: Window) -> Optional[int]:
    """The positions a query's window part reaches back over, itself included: W for a
    sliding window (an int or ``Sliding``), C for ``Chunked(C)``, None for full attention.
    A ring of at least this many slots holds every non-sink key any query can see."""
    if isinstance(window, (Sliding, Chunked)):
        return window.size
    return window


def _allocate(capacity, n_kv_heads, head_dim, dtype):
    """Zeroed k, v: [C, Hkv, D] and positions: [C] (-1 = empty), or a SwarefError naming the size;
    C counts every slot (sink slots and ring)."""
    nbytes = 2 * capacity * n_kv_heads * head_dim * dtype.itemsize + 8 * capacity   # exact, in Python ints
    def n(x):                                          # 10**400 slots must not print 400 digits
        return f"{x:,}" if x < 10 ** 21 else f"about 10**{len(str(x)) - 1}"
    what = (f"a cache of {n(capacity)} slots x {n(n_kv_heads)} KV heads x head_dim {n(head_dim)} in {dtype.name} "
            f"needs {n(nbytes)} bytes ({n(nbytes // 2 ** 30)} GiB)")
    if capacity * n_kv_heads * head_dim > np.iinfo(np.intp).max // 8:
        raise SwarefError("argument", f"{what}: more than any array can hold")
    try:
        k = np.zeros((capacity, n_kv_heads, head_dim), dtype=dtype)
        v = np.zeros_like(k)
        positions = np.full(capacity, -1, dtype=np.int64)
    except (MemoryError, ValueError) as e:
        raise SwarefError("argument", f"{what}, which could not be allocated ({type(e).__name__})") from None
    return k, v, positions


@contextlib.contextmanager
def exclusive(cache):
    """Hold ``cache``'s lock for a whole call, or refuse at once if another call holds it.

    A cache belongs to one sequence and one caller at a time (spec rule 4): two
    threads decoding into one cache would interleave writes and leave it
    inconsistent, so the second caller gets an error rather than a wait.
    """
    lock = acquire(cache)
    try:
        yield cache
    finally:
        lock.release()


def acquire(cache):
    """``exclusive``'s refusal, for a caller that holds many caches at once (a model's step):
    ``cache``'s lock, taken (the caller releases it), or the error ``exclusive`` raises."""
    lock = getattr(cache, "_lock", None)
    if lock is None or not lock.acquire(blocking=False):
        if lock is None:
            raise SwarefTypeError("cache", f"cache must be a RollingBufferCache, got {type(cache).__name__}")
        raise SwarefError("cache", "the cache is in use by another call (another thread is reading or writing "
                                   "it); a cache belongs to one sequence and one caller at a time")
    return lock


def slot_of(position, capacity: int, sink_tokens: int = 0):
    """Slot that holds absolute position p (spec rule 4): p mod C (C = W for a sliding window);
    with n kept sink tokens, p itself for p < n (a fixed sink slot), else n + (p - n) mod C."""
    if sink_tokens == 0:
        return position % capacity
    if V.is_int(position):
        p = int(position)
        return p if p < sink_tokens else sink_tokens + (p - sink_tokens) % capacity
    p = np.asarray(position)
    return np.where(p < sink_tokens, p, sink_tokens + (p - sink_tokens) % capacity)


def cache_view(cache: "RollingBufferCache") -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The chronological ("unrotated") view of the valid slots.

    -> k [m, Hkv, D], v [m, Hkv, D], positions [m] int64 of the m valid slots, sink
    slots included (copies, ordered by increasing position).

    After wrap-around the slots are out of time order (slot 0 may hold a newer
    position than slot C-1).  That does not matter for attention, which
    depends only on the set of (position, key, value) triples, and keys were
    rotated at their absolute positions before being stored.  This view exists
    for readers, tests and the reference prefill; the compiled kernel reads the
    slots in place.
    """
    with exclusive(cache):
        valid = np.nonzero(cache.positions >= 0)[0]
        order = valid[np.argsort(cache.positions[valid], kind="stable")]
        return cache.k[order], cache.v[order], cache.positions[order]


def held_range(cache: "RollingBufferCache") -> Tuple[int, int]:
    """(first, last) position the ring holds (sink slots not included), (0, -1) when empty,
    from its counters in O(1): the ring invariant (``check_ring``) makes them
    next_position - n_held .. next_position - 1."""
    if cache.n_held == 0:
        return 0, -1
    return cache.next_position - cache.n_held, cache.next_position - 1


def check_cache(cache, n_kv_heads, head_dim, dtype, name="cache"):
    """Reject a cache whose dims or dtype differ from the keys about to enter it."""
    if not isinstance(cache, RollingBufferCache):
        raise SwarefTypeError("cache", f"{name} must be a RollingBufferCache, got {type(cache).__name__}")
    if (cache.n_kv_heads, cache.head_dim) != (n_kv_heads, head_dim):
        raise SwarefError(
            "cache", f"{name} holds (Hkv={cache.n_kv_heads}, D={cache.head_dim}) but k has "
                     f"(Hkv={n_kv_heads}, D={head_dim})")
    if cache.dtype != dtype:
        raise SwarefTypeError("cache", f"{name} has dtype {cache.dtype} but k has dtype {dtype}")
    if not is_causal(cache.window):
        raise SwarefError("window", f"{name}.window={cache.window!r} looks ahead, and a cache is causal")
    # O(1): the buffers are still the ones the constructor allocated (the compiled kernel reads
    # them in place, so an array swapped in behind swaref's back must not reach it).
    C = cache.sink_tokens + cache.capacity
    want = (C, cache.n_kv_heads, cache.head_dim)
    for attr, shape, dt in (("k", want, cache.dtype), ("v", want, cache.dtype), ("positions", (C,), np.int64)):
        x = getattr(cache, attr, None)
        if not (isinstance(x, np.ndarray) and x.shape == shape and x.dtype == dt and x.flags.c_contiguous
                and x.flags.aligned and x.flags.writeable):
            raise SwarefError("cache", f"{name}.{attr} must be the C-contiguous {np.dtype(dt).name} array of shape "
                                       f"{shape} the cache was built with, got {V._describe(x)}; a cache's arrays "
                                       f"are changed only through swaref's functions")


def check_write(cache, n_tokens, start):
    """Validate a write of ``n_tokens`` consecutive positions from ``start``; return start.

    ``start=None`` continues the cache (0 for an empty cache).
    """
    if start is None:
        start = 0 if cache.next_position is None else cache.next_position
    start = V.check_int(start, "start", kind="positions", minimum=0)
    if cache.next_position is not None and start != cache.next_position:
        raise SwarefError(
            "positions", f"the cache continues at position {cache.next_position}, got start={start}; "
                         f"tokens must be written at consecutive positions (reset() to start over)")
    if start + n_tokens > INT64_MAX:
        raise SwarefError("positions", "positions must fit in int64")
    if cache.window is None and cache.n_held + n_tokens > cache.capacity:
        raise SwarefError(
            "cache", f"full-attention cache of capacity {cache.capacity} holds {cache.n_seen} tokens "
                     f"and cannot take {n_tokens} more")
    return start


def cache_write(cache: "RollingBufferCache", k: np.ndarray, v: np.ndarray, start: Optional[int] = None) -> None:
    """Write s consecutive tokens at positions start .. start+s-1 (validated first).

    k, v: [s, Hkv, D] in the cache's dtype; ``start=None`` continues the cache.
    Nothing is written when any check fails.
    """
    k = V.check_array(k, "k")
    v = V.check_array(v, "v")
    if v.shape != k.shape or v.dtype != k.dtype:
        raise SwarefError("shape", f"v must have the shape and dtype of k {k.shape} {k.dtype}, got {v.shape} {v.dtype}")
    with exclusive(cache):
        check_cache(cache, k.shape[1], k.shape[2], k.dtype)
        _write(cache, k, v, check_write(cache, k.shape[0], start))


def _write(cache, k, v, start):
    """cache_write after its checks: the only code that changes a cache's slots.

    Positions below ``sink_tokens`` go to their fixed sink slots.  Of the others, only
    the last min(s, C) are written: earlier ones would be overwritten by later ones of
    the same chunk anyway (Mistral's ``to_cache_mask``), and writing them would give
    duplicate slot targets.  Writing position by position in this order keeps the ring
    invariant (``check_ring``) true, which the compiled backend relies on.
    """
    s, n = k.shape[0], cache.sink_tokens
    sink = min(s, max(0, n - start))              # the leading rows at positions < n
    if s == 1 and not sink:
        # A decode step's one ring token (once per layer of a model's step): the same slot as
        # below, without the index arrays.
        slot = slot_of(start, cache.capacity, n)
        cache.k[slot] = k[0]
        cache.v[slot] = v[0]
        cache.positions[slot] = start
    else:
        if sink:
            cache.k[start:start + sink] = k[:sink]
            cache.v[start:start + sink] = v[:sink]
            cache.positions[start:start + sink] = np.arange(start, start + sink, dtype=np.int64)
        keep = min(s - sink, cache.capacity)
        pos = np.arange(start + s - keep, start + s, dtype=np.int64)
        slots = slot_of(pos, cache.capacity, n)
        cache.k[slots] = k[s - keep:]
        cache.v[slots] = v[s - keep:]
        cache.positions[slots] = pos
    cache.n_seen += s
    cache.n_held = min(cache.n_held + s - sink, cache.capacity)
    cache.next_position = start + s


def _window_start(window, P):
    """The first non-sink position a query at P sees (rule 1): P - W + 1 for a sliding
    window, the chunk's first position (P // C) * C for chunked attention."""
    if isinstance(window, Chunked):
        return (P // window.size) * window.size
    return P - ring_span(window) + 1


def _lost_key(cache, n):
    """Rule 4's rollback condition for 0 <= n <= n_seen: None when rolling back n tokens is
    possible, else the first position a later query would need that the ring no longer holds.

    After the rollback the cache continues at P = N - n (N = next_position).  A query at
    P' >= P sees the non-sink keys from _window_start(P') on, so the earliest key any of
    them needs that was written before P is need = max(_window_start(P), n_sink, first)
    (first = N - n_seen, the first position written; sink slots are never evicted).  The
    ring holds N - n_held .. N - 1.  Possible iff no such key exists (need >= P) or need
    is still held (need >= N - n_held).
    """
    if cache.window is None or n == 0:           # a full-attention cache never evicts
        return None
    N = cache.next_position
    P = N - n
    need = max(_window_start(cache.window, P), cache.sink_tokens, N - cache.n_seen)
    return None if need >= P or need >= N - cache.n_held else need


def max_rollback(cache: "RollingBufferCache") -> int:
    """The largest n such that ``rollback`` can take back any n' <= n tokens (spec rule 4).

    After rolling back n tokens the cache continues at P = next_position - n, and a
    query at P or later needs the keys max(first, P - W + 1) .. P - 1, where first =
    next_position - n_seen is the first position written.  The ring holds
    next_position - n_held .. next_position - 1.  So n is possible iff n <= n_seen and
    those keys are held: always when nothing was evicted (n_held == n_seen) or
    W = 1 (a query needs only itself); otherwise iff n <= n_held - W + 1, which for a
    wrapped ring of C slots is n <= C - W + 1.  Rolling back all n_seen tokens is
    possible too (no earlier key is needed then): ``rollback`` accepts it.

    The same rule with sink tokens (never evicted) and for chunked attention
    (``_lost_key``): a chunked cache can also always go back to a chunk's first
    position, beyond this limit.
    """
    if cache.window is None or V.is_int(cache.window):
        if cache.n_held == cache.n_seen or cache.window is None or cache.window == 1:
            return cache.n_seen
        return max(0, min(cache.n_seen, cache.n_held - cache.window + 1))
    N, span = cache.next_position, ring_span(cache.window)
    first = max(cache.sink_tokens, N - cache.n_seen) if cache.n_seen else 0
    oldest = N - cache.n_held if cache.n_seen else 0
    if cache.n_seen == 0 or first >= oldest or span == 1:
        return cache.n_seen                      # nothing a later query needs was evicted
    if isinstance(cache.window, Sliding):        # as for an int W: n - 1 keys before P, from the ring
        return max(0, min(cache.n_seen, cache.n_held - span + 1))
    # Chunked(C): P fails iff it is not a chunk start and its chunk began before the oldest
    # ring position; the largest such P is the one before the first chunk start >= oldest, or
    # N - 1 if that start lies beyond N (then N - 1 >= oldest is inside oldest's chunk, past its
    # start; an empty ring, oldest = N, is left only by a rollback to a chunk start).
    top = min(-(-oldest // span) * span, N) - 1
    return cache.n_seen if top <= N - cache.n_seen else N - top - 1


def rollback(cache: "RollingBufferCache", n: int) -> None:
    """Take back the last ``n`` tokens (speculative decoding): their slots become empty and
    the cache continues at ``next_position - n``.  Refused, with the cache untouched, when a
    key some later query needs was already overwritten (``max_rollback``); taking back every
    token written since the last reset is always possible (the cache is then empty)."""
    if not isinstance(cache, RollingBufferCache):
        raise SwarefTypeError("cache", f"cache must be a RollingBufferCache, got {type(cache).__name__}")
    n = V.check_int(n, "n", kind="rollback", minimum=0)
    with exclusive(cache):
        if n > cache.n_seen:
            raise SwarefError("rollback", f"cannot roll back {n} tokens: the cache holds {cache.n_seen} tokens "
                                          f"written since its last reset")
        need = _lost_key(cache, n)
        if need is not None:
            raise SwarefError("rollback", _refusal(cache, n, need))
        if n == 0:
            return
        N, P, ns = cache.next_position, cache.next_position - n, cache.sink_tokens
        if P < ns:                                # rolled-back sink positions: their slots empty
            cache.positions[P:min(N, ns)] = -1
        # Only held slots need clearing: rolling back all n_seen tokens of a long sequence must not
        # build an array of n_seen positions.
        gone = np.arange(N - min(n, cache.n_held), N, dtype=np.int64)
        cache.positions[slot_of(gone, cache.capacity, ns)] = -1
        cache.n_seen -= n
        cache.n_held -= min(n, cache.n_held)      # all n_seen back from a wrapped ring: more than it held
        cache.next_position = P


def _refusal(cache, n, need):
    """The message of a refused rollback: the limit, the key that is gone, and why."""
    limit, P = max_rollback(cache), cache.next_position - n
    head = (f"cannot roll back {n} tokens (at most {limit}, or all {cache.n_seen}): a query at position {P} "
            f"would need position {need}, already overwritten; ")
    if isinstance(cache.window, Chunked):
        return head + (f"a chunked cache (chunk {cache.window.size}, capacity {cache.capacity}) rolls back at "
                       f"most {limit} tokens, or back to the first position of a chunk")
    W = ring_span(cache.window)
    sinks = " (its sink tokens are never evicted)" if cache.sink_tokens else ""
    return head + (f"capacity {cache.capacity} with window {W} allows rolling back at most "
                   f"capacity - window + 1 = {cache.capacity - W + 1} tokens after it wraps{sinks}")


def check_ring(positions: ArrayLike, capacity: int, name: str = "positions", *,
               sink_tokens: int = 0) -> Tuple[int, int]:
    """Validate a cache's slot positions; returns (first, last) position the ring holds, or
    (0, -1) if the ring is empty.

    positions: [n + C] int (n = sink_tokens)  --  each slot holds -1 (empty) or a position:
    sink slot i < n holds i; a ring slot holds a position p >= n with slot == n + (p - n) mod C;
    the ring's positions form one run of consecutive positions, and so do the sink slots',
    which reach n - 1 when the ring holds anything (sink slots are never evicted; spec rule 4).
    Every write through ``cache_write`` keeps this true, so the compiled backend scans the
    ring only in debug builds; ``load_state`` runs it on every state that comes from outside.
    """
    return _check_slots(positions, capacity, sink_tokens, name)[2:]


def _check_slots(positions, capacity, n, name="positions"):
    """check_ring -> (sink_first, sink_last, first, last): the runs held by the sink slots and
    by the ring, each (0, -1) when empty."""
    try:
        pos = np.asarray(positions)
    except (ValueError, TypeError, OverflowError):           # ragged or not numbers
        raise SwarefError("cache", f"{name} must be an integer array of shape ({n + capacity},), got "
                                   f"{V._describe(positions)}") from None
    if pos.shape != (n + capacity,) or not (pos.dtype.kind in "iu" and pos.dtype != np.bool_):
        raise SwarefError("cache", f"{name} must be an integer array of shape ({n + capacity},), got "
                                   f"{V._describe(pos)}")
    if pos.dtype.kind == "u" and pos.size and pos.max() > np.iinfo(np.int64).max:
        raise SwarefError("cache", f"{name} must fit in int64")
    pos = pos.astype(np.int64, copy=False)
    if np.any(pos < -1):
        raise SwarefError("cache", f"{name} must hold -1 (empty) or a position >= 0 per slot, got "
                                   f"{int(pos[np.argmax(pos < -1)])}")
    sinks, ring = pos[:n], pos[n:]
    wrong = (sinks >= 0) & (sinks != np.arange(n))
    if wrong.any():
        i = int(np.argmax(wrong))
        raise SwarefError("cache", f"sink slot {i} holds position {int(sinks[i])}; a sink slot holds its own "
                                   f"position or -1")
    sink_run = _run(sinks, "sink slots")
    valid = np.nonzero(ring >= 0)[0]
    if valid.size == 0:
        return sink_run + (0, -1)
    held = ring[valid]
    if held.min() < n:
        i = int(valid[np.argmax(held < n)])
        raise SwarefError("cache", f"slot {n + i} holds position {int(ring[i])}, which belongs in sink slot "
                                   f"{int(ring[i])} (positions below {n} are sink tokens)")
    wrong = (held - n) % capacity != valid
    if wrong.any():
        i = int(valid[np.argmax(wrong)])
        rule = f"slot = position mod {capacity}" if n == 0 else f"slot = {n} + (position - {n}) mod {capacity}"
        raise SwarefError("cache", f"slot {n + i} holds position {int(ring[i])}, which belongs in slot "
                                   f"{int(slot_of(int(ring[i]), capacity, n))} ({rule})")
    ring_run = _run(ring, "valid slots" if n == 0 else "ring slots")
    if sink_run[1] >= 0 and sink_run[1] != n - 1:
        raise SwarefError("cache", f"the sink slots hold {sink_run[0]} .. {sink_run[1]} but the ring holds "
                                   f"{ring_run[0]} .. {ring_run[1]}: sink slots are never evicted, so they "
                                   f"hold every sink position up to {n - 1} once the ring holds any")
    return sink_run + ring_run


def _run(pos, what):
    """(first, last) of the positions >= 0 in ``pos``, which must be consecutive; (0, -1) if none."""
    held = pos[pos >= 0]
    if held.size == 0:
        return 0, -1
    first, last = int(held.min()), int(held.max())
    if last - first + 1 != held.size:
        raise SwarefError("cache", f"the {what} must hold consecutive positions, got {held.size} "
                                   f"positions spread over {first} .. {last}")
    return first, last


def load_state(cache: "RollingBufferCache", positions: ArrayLike, k: np.ndarray, v: np.ndarray) -> None:
    """Replace the cache's contents by a saved state, validated before anything is written.

    positions: [n + C] int (-1 = empty slot), k, v: [n + C, Hkv, D] in slot order, sink
    slots first (what ``cache.positions``, ``cache.k`` and ``cache.v`` hold).  Afterwards
    the cache continues at the position after the newest one held (or, if every slot is
    empty, is as freshly reset), and counts as written every position from the oldest one
    held on.  Contents of empty slots are stored as given: they are never visible.
    """
    if not isinstance(cache, RollingBufferCache):
        raise SwarefTypeError("cache", f"cache must be a RollingBufferCache, got {type(cache).__name__}")
    sink_first, sink_last, first, last = _check_slots(positions, cache.capacity, cache.sink_tokens)
    for name, x in (("k", k), ("v", v)):
        if not isinstance(x, np.ndarray):
            raise SwarefTypeError("cache", f"{name} must be a numpy.ndarray, got {type(x).__name__}")
        if x.shape != cache.k.shape:
            raise SwarefError("cache", f"{name} must have the cache's shape {cache.k.shape}, got {x.shape}")
        if x.dtype != cache.dtype:
            raise SwarefTypeError("cache", f"{name} must have the cache's dtype {cache.dtype}, got {x.dtype}")
    with exclusive(cache):
        cache.k[...] = k
        cache.v[...] = v
        cache.positions[...] = np.asarray(positions, dtype=np.int64)
        n_ring, n_sink = last - first + 1, sink_last - sink_first + 1
        nxt = last + 1 if n_ring else (sink_last + 1 if n_sink else None)
        cache.n_held = n_ring
        cache.n_seen = 0 if nxt is None else nxt - (sink_first if n_sink else first)
        cache.next_position = nxt
