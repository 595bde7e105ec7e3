"""The thin wrapper between swaref's public API and the compiled kernel.

The public entry points (``swaref.attention``, ``prefill``, ``decode_step``,
``attend_chunk``) validate every argument once, before any cache is written,
and only then call here.  This module adds what ``swaref._core`` itself needs
and the public checks do not give it:

* the dtype is float32 or float64 (the public API also takes float16);
* every position is at most 2**62 (the kernel's tile arithmetic must not
  overflow int64; the public checks run ``_validate.check_kernel_position``
  before any write, this is the last line of defence);
* arrays are C-contiguous and aligned to their item size: anything else
  (a slice, a Fortran array, ``np.frombuffer(..., offset=1)``) is copied;
* the window as the kernel's four ints (``swaref.windows.kernel_params``:
  left, right, chunk, sink_tokens), a bound beyond every position given as
  none (an int64 the kernel can hold, the same visible keys);
* the cache's layout: ``cache.sink_tokens`` sink slots (position p < n in slot
  p), then ``cache.capacity`` ring slots holding the consecutive positions
  ``held_range(cache)`` (p >= n in slot ``n + (p - n) mod C``), because the
  cache's own write is its only writer.  The debug build (``SWAREF_DEBUG=1``)
  also scans every slot against that invariant.

Spec 1.1's ``softcap`` and ``sinks`` (checked by the public API, never both) pass
through to the kernel as a float and a float64 [Hq] array.

Both functions return [T, Hq, D] in the input dtype.
"""
import numpy as np

from . import _validate as V
from .cache import held_range
from .windows import kernel_params
from .errors import SwarefError, SwarefTypeError

KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
MAX_THREADS = 4096


_CORE = []
_CORE_DEBUG = []
_BAND = {}


def _core():
    """swaref._core: the kernel as compiled for the best target this CPU runs (swaref/_cpu.py;
    SWAREF_TARGET forces another), chosen at its first import; checked once, then remembered
    (a decode step calls this once per layer)."""
    if _CORE:
        return _CORE[0]
    try:
        from . import _core
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SwarefError(
            "backend", f"backend='cython' needs the compiled extension swaref._core, which is not built "
                       f"({exc}); run `python setup.py build_ext --inplace` or `pip install .`") from None
    from ._cpu import target_of
    if target_of(_core) is None:
        # A single-target swaref/_core.<ext> from before targets shadows swaref/_core.py: it was
        # built for some CPU, maybe not this one, and nothing checked.
        raise SwarefError(
            "backend", f"backend='cython': {_core.__file__} is a kernel from before swaref built one per CPU "
                       f"target, and nothing says this CPU runs it; delete it, or rebuild with "
                       f"`python setup.py build_ext --inplace` (which deletes it)")
    _CORE.append(_core)
    # What every call would otherwise look up again: the debug flag, and band_attention's
    # float32 / float64 versions (a fused function picks one per call from its arguments, ~1.5 us).
    _CORE_DEBUG.append(bool(getattr(_core, "DEBUG", False)))
    _BAND.update({np.dtype(np.float32): _core.band_attention["float"],
                  np.dtype(np.float64): _core.band_attention["double"]})
    return _core


def _kernel_array(x, name):
    """x itself when the kernel can read it in place, else a C-contiguous, aligned copy."""
    if x.dtype not in KERNEL_DTYPES:
        raise SwarefTypeError("dtype", f"backend='cython' supports float32 and float64; {name} has dtype {x.dtype}")
    if x.flags.c_contiguous and x.flags.aligned:
        return x
    return np.array(x, order="C", copy=True)     # a fresh array: contiguous and aligned


def _threads(num_threads):
    return None if num_threads is None else min(num_threads, MAX_THREADS)   # more threads than items are idle anyway


def _kernel_params(window, last_position, sink_slots=None):
    """(left, right, chunk, sink_tokens) of a normalized window for the kernel, where every
    position (query or key) is at most last_position (<= 2**62, checked before).

    A bound that no position reaches changes no visible key, so it goes to the kernel as
    none (left, right -1; chunk 0) rather than as an int64 it cannot hold: a window wider
    than every position is plain causal attention, the same keys and the same arithmetic.
    sink_tokens beyond every position likewise becomes last_position + 1 (every earlier key
    is a sink then), except for a cache (sink_slots = its sink slots), whose layout it is.
    """
    left, right, chunk, n = kernel_params(window)
    if left > last_position:            # p - left < 0 for every p
        left = -1
    if right > last_position:           # p + right beyond every key
        right = -1
    if chunk > last_position:           # every position in chunk 0
        chunk = 0
    if sink_slots is not None:
        n = sink_slots
    elif n > last_position + 1:
        n = last_position + 1
    return left, right, chunk, n


def _variants(softcap, sinks):
    """Spec 1.1's softcap and sinks as the kernel takes them (already checked, never both):
    a float or None, a C-contiguous float64 [Hq] array or None."""
    return {"softcap": None if softcap is None else float(softcap),
            "sinks": None if sinks is None else np.ascontiguousarray(sinks, dtype=np.float64)}


def attention(q, k, v, q_pos, k_pos, window, scale, num_threads=None, *, softcap=None, sinks=None):
    """Compiled banded attention over explicit keys, after ``swaref.attention``'s checks.

    q: [T, Hq, D], k, v: [S, Hkv, D] (float32 or float64), q_pos: [T], k_pos: [S]
    int64 strictly increasing, every query seeing at least one key  ->  [T, Hq, D]

    Must equal ``swaref.attention(..., backend="reference")``.
    """
    q, k, v = _kernel_array(q, "q"), _kernel_array(k, "k"), _kernel_array(v, "v")
    last = max(int(q_pos[-1]), int(k_pos[-1]))
    V.check_kernel_position(last, "the largest position")
    ring = np.zeros((0,) + k.shape[1:], dtype=q.dtype)
    ring_pos = np.zeros(0, dtype=np.int64)
    return _band(q.dtype)(q, q_pos, k, v, k_pos, ring, ring, ring_pos, 0, -1,
                          *_kernel_params(window, last), scale, _threads(num_threads),
                          **_variants(softcap, sinks))


def attend_chunk(q, k, v, start, cache, scale, num_threads=None, *, softcap=None, sinks=None):
    """Compiled attention of a chunk's queries over [cache slots, read in place] + [chunk keys],
    after ``swaref.attend_chunk``'s checks (the caller holds the cache).

    q: [s, Hq, D] at positions start .. start+s-1; k, v: [c, Hkv, D] with c == s
    (prefill: the chunk's keys, not yet in the cache) or c == 0 (decode: the
    tokens are already in the cache)  ->  [s, Hq, D].  Does not write.

    Must equal ``swaref.attend_chunk(..., backend="reference")``.
    """
    q, k, v = _kernel_array(q, "q"), _kernel_array(k, "k"), _kernel_array(v, "v")
    s, c = q.shape[0], k.shape[0]
    first, last = held_range(cache)          # the ring part: positions >= the sink slots
    n_sink = cache.sink_tokens
    if _core_debug():
        from .cache import check_ring
        if check_ring(cache.positions, cache.capacity, "cache.positions",
                      sink_tokens=n_sink) != (first, last) and last >= 0:
            raise SwarefError("cache", f"the cache's slots do not hold positions {first} .. {last} as its "
                                       f"counters say: it was modified outside swaref")
    V.check_kernel_position(max(start + s - 1, last), "the largest position")
    q_pos = np.arange(start, start + s, dtype=np.int64)
    k_pos = q_pos if c else q_pos[:0]
    return _band(q.dtype)(q, q_pos, k, v, k_pos, cache.k, cache.v, cache.positions, first, last,
                          *_kernel_params(cache.window, start + s - 1, n_sink), scale,
                          _threads(num_threads), **_variants(softcap, sinks))


def _core_debug():
    """True in the debug build, which scans every ring it is handed."""
    _core()
    return _CORE_DEBUG[0]


def _band(dtype):
    """band_attention's version for dtype (float32 or float64, checked by _kernel_array)."""
    _core()
    return _BAND[dtype]
