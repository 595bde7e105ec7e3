"""Chunked prefill and decode over a rolling buffer cache (docs/spec.md, rule 5).

Order matters and differs between the two:

* **prefill** a chunk: its queries attend to [cache in time order] + [chunk],
  *then* the chunk is written.  With C = W slots, the cache holds positions
  n-W .. n-1 when a chunk starts at n.  The chunk's first query (position n)
  needs n-W+1 .. n.  Writing a chunk of s >= 2 tokens first would overwrite
  positions n-W .. n-W+s-1, of which n-W+1 .. n-W+s-1 are still needed: up
  to s-1 keys silently lost (tests/test_prefill.py keeps a regression test).
* **decode** one token: write, *then* attend.  The single write overwrites
  only position n-W, which lies outside the new query's window, and the
  query must see its own key.

Both hold for every causal window of swaref.windows: kept sink tokens live in
slots that are never overwritten, and a chunked query at p needs the keys
(p // C) * C .. p, always among the last C positions (rule 5).
"""
from typing import List, Optional, Sequence, Union

import numpy as np
from numpy.typing import ArrayLike

from . import _backend, _validate as V
from .attention import _attention_reference
from .cache import RollingBufferCache, _write, cache_view, check_cache, check_write, exclusive, held_range, ring_span
from .errors import SwarefError, SwarefTypeError
from .windows import Window, is_causal


def chunk_schedule(T: int, chunk_size: Union[None, int, Sequence[int]], window: Window) -> List[int]:
    """The list of chunk lengths for a prompt of T tokens.

    chunk_size: None (-> W, the chunk size C for ``Chunked(C)``, or T for a
    full-attention cache), an int >= 1 (equal chunks, the last one shorter), or a
    sequence of ints >= 1 summing to T.  ``window`` is a cache's window (causal).
    """
    if chunk_size is None:
        if not is_causal(window):
            raise SwarefError("window", f"window={window!r} looks ahead: chunked prefill fills a cache, and a "
                                        f"cache is causal")
        span = ring_span(window)
        chunk_size = span if span is not None else T
    if isinstance(chunk_size, (bool, np.bool_)):
        raise SwarefTypeError("schedule", f"chunk_size must be an int >= 1 or a list of them, got {chunk_size!r}")
    if V.is_int(chunk_size):
        c = V.check_int(chunk_size, "chunk_size", kind="schedule", minimum=1)
        return [min(c, T - s) for s in range(0, T, c)]
    try:
        sched = list(chunk_size)
    except TypeError:
        raise SwarefTypeError(
            "schedule", f"chunk_size must be an int >= 1 or a list of them, got {type(chunk_size).__name__}") from None
    sched = [V.check_int(c, f"chunk_size[{i}]", kind="schedule", minimum=1) for i, c in enumerate(sched)]
    if sum(sched) != T:
        raise SwarefError("schedule", f"the chunk schedule {sched} sums to {sum(sched)}, not T = {T}")
    return sched


def _check_step(q, k, v, cache, backend, num_threads):
    """Arrays, cache and options of a prefill/decode/attend_chunk call -> (T, S, D, num_threads)."""
    V.check_backend(backend)
    T, S, Hq, Hkv, D = V.check_qkv(q, k, v, allow_empty_keys=True)
    check_cache(cache, Hkv, D, q.dtype)
    num_threads = V.check_num_threads(num_threads)
    if backend == "cython" and q.dtype == np.float16:
        raise SwarefTypeError("dtype", "backend='cython' supports float32 and float64, got float16")
    return T, S, D, num_threads


def _check_one_key_per_query(T, S):
    if S != T:
        raise SwarefError("shape", f"k and v must have one row per query (T = {T}), got {S}")


def check_cache_step(cache: RollingBufferCache, n_tokens: int, start: Optional[int],
                     backend: str = "reference") -> int:
    """Everything a prefill or decode of ``n_tokens`` tokens from ``start`` checks about
    the cache and the positions, without writing; returns the start position.

    A caller that runs several caches in one call (a model's layers) runs this on
    every cache first, so that no cache is touched when any would refuse.
    """
    V.check_backend(backend)
    start = check_write(cache, n_tokens, start)
    if backend == "cython":
        V.check_kernel_position(start + n_tokens - 1, "the last position written")
    return start


def attend_chunk(q: np.ndarray, k: np.ndarray, v: np.ndarray, cache: RollingBufferCache, start: int,
                 scale: Optional[float] = None, backend: str = "reference",
                 num_threads: Optional[int] = None, *, softcap: Optional[float] = None,
                 sinks: Optional[ArrayLike] = None) -> np.ndarray:
    """Attention of queries at start .. start+s-1 over [cache in time order] + [chunk keys].

    q: [s, Hq, D]; k, v: [c, Hkv, D] with c = s (prefill: the chunk's own keys,
    not yet in the cache, which must end at start - 1) or c = 0 (decode: the
    tokens were written first, so the cache holds start .. start+s-1)
    ->  [s, Hq, D].  Does not write.
    """
    T, S, D, num_threads = _check_step(q, k, v, cache, backend, num_threads)
    start = V.check_int(start, "start", kind="positions", minimum=0)
    scale = V.check_scale(scale, D)
    softcap, sinks = V.check_softmax_variants(softcap, sinks, q.shape[1])
    with exclusive(cache):
        if S == T:
            check_cache_step(cache, T, start, backend)       # the chunk continues the cache
        elif S == 0:
            _check_in_cache(cache, start, T, backend)
        else:
            raise SwarefError("shape", f"k and v must have one row per query (s = {T}) or none (decode), got {S}")
        return _attend_chunk(q, k, v, cache, start, scale, backend, num_threads, softcap, sinks)


def _check_in_cache(cache, start, n, backend):
    """Decode queries at start .. start+n-1 must find their own keys in the cache (in its ring,
    or in its sink slots for positions below sink_tokens)."""
    first, last = held_range(cache)
    ns, end = cache.sink_tokens, start + n - 1
    in_sinks = start >= ns or bool((cache.positions[start:min(end + 1, ns)] >= 0).all())
    in_ring = end < ns or first <= max(start, ns) <= end <= last
    if not (in_sinks and in_ring):
        held = f"{first} .. {last}" if last >= 0 else "nothing"
        if ns:
            sinks = cache.positions[:ns]
            held = f"sink positions {sinks[sinks >= 0].tolist()} and {held} in its ring"
        raise SwarefError("no_visible_key", f"decode queries at positions {start} .. {end} must already "
                                            f"be in the cache (write, then attend); it holds " + held)
    if backend == "cython":
        V.check_kernel_position(end, "the last query position")


def _attend_chunk(q, k, v, cache, start, scale, backend, num_threads, softcap=None, sinks=None):
    """attend_chunk after its checks (the caller holds the cache)."""
    s, c = q.shape[0], k.shape[0]
    if backend == "cython":
        return _backend.attend_chunk(q, k, v, start, cache, scale, num_threads, softcap=softcap, sinks=sinks)
    q_pos = np.arange(start, start + s, dtype=np.int64)
    ck, cv, cpos = cache_view(cache)
    keys = np.concatenate([ck, k])
    vals = np.concatenate([cv, v])
    k_pos = np.concatenate([cpos, np.arange(start, start + c, dtype=np.int64)])
    ranges = V.check_no_empty_rows(q_pos, k_pos, cache.window)
    return _attention_reference(q, keys, vals, ranges, scale, softcap, sinks)


def prefill(q: np.ndarray, k: np.ndarray, v: np.ndarray, cache: RollingBufferCache, *,
            chunk_size: Union[None, int, Sequence[int]] = None, start: Optional[int] = None,
            scale: Optional[float] = None, softcap: Optional[float] = None,
            sinks: Optional[ArrayLike] = None, backend: str = "reference",
            num_threads: Optional[int] = None) -> np.ndarray:
    """Chunked prefill: per chunk, attend to cache + chunk, then write the chunk.

    q: [T, Hq, D], k, v: [T, Hkv, D] at positions start .. start+T-1  ->  [T, Hq, D]

    ``start`` defaults to where the cache continues (0 for an empty cache).
    ``chunk_size``: None (W), an int >= 1, or a list of chunk lengths summing to T.
    Everything is validated before the cache is touched.
    """
    T, S, D, num_threads = _check_step(q, k, v, cache, backend, num_threads)
    _check_one_key_per_query(T, S)
    sched = chunk_schedule(T, chunk_size, cache.window)
    scale = V.check_scale(scale, D)
    softcap, sinks = V.check_softmax_variants(softcap, sinks, q.shape[1])
    with exclusive(cache):
        start = check_cache_step(cache, T, start, backend)
        out = np.empty(q.shape, dtype=q.dtype)
        a = 0
        for s in sched:
            sl = slice(a, a + s)
            out[sl] = _prefill_chunk(q[sl], k[sl], v[sl], cache, start + a, scale, backend, num_threads,
                                     softcap, sinks)
            a += s
    return out


def _prefill_chunk(q, k, v, cache, start, scale, backend, num_threads, softcap=None, sinks=None):
    """One prefill chunk after its checks (the caller holds the cache).  Attend first: the
    chunk's early queries still need the slots its write would overwrite."""
    out = _attend_chunk(q, k, v, cache, start, scale, backend, num_threads, softcap, sinks)
    _write(cache, k, v, start)
    return out


def _decode(q, k, v, cache, start, scale, backend, num_threads, softcap=None, sinks=None):
    """One decode token after its checks (the caller holds the cache).  Write first: the token
    must see itself, and the slot it overwrites held p - C, outside its window."""
    _write(cache, k, v, start)
    return _attend_chunk(q, k[:0], v[:0], cache, start, scale, backend, num_threads, softcap, sinks)


def decode_step(q: np.ndarray, k: np.ndarray, v: np.ndarray, cache: RollingBufferCache, *,
                start: Optional[int] = None, scale: Optional[float] = None,
                softcap: Optional[float] = None, sinks: Optional[ArrayLike] = None,
                backend: str = "reference", num_threads: Optional[int] = None) -> np.ndarray:
    """One generated token: write its key and value, then attend over the cache.

    q: [1, Hq, D], k, v: [1, Hkv, D] at position ``start`` (default: where the
    cache continues)  ->  [1, Hq, D]
    """
    T, S, D, num_threads = _check_step(q, k, v, cache, backend, num_threads)
    _check_one_key_per_query(T, S)
    if T != 1:
        raise SwarefError("shape", f"decode_step takes exactly one token, got q of shape {q.shape}; use prefill")
    scale = V.check_scale(scale, D)
    softcap, sinks = V.check_softmax_variants(softcap, sinks, q.shape[1])
    with exclusive(cache):
        start = check_cache_step(cache, 1, start, backend)
        return _decode(q, k, v, cache, start, scale, backend, num_threads, softcap, sinks)
