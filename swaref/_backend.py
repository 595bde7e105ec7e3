"""The validating wrapper between swaref's public API and the compiled kernel.

Compiled code trusts nothing that a validating Python wrapper did not hand it.
``swaref.attention`` and ``swaref.prefill`` validate their arguments already;
this module checks again, here, everything ``swaref._core`` relies on, because
a mistake past this point is a wrong memory read, not an exception:

* q, k, v (and the cache's k, v) are ndarrays of one dtype, float32 or float64;
  float16 is refused (the kernel has no half-precision path);
* shapes agree (T, S, Hq, Hkv, D; Hq a multiple of Hkv; C slots);
* positions are int64, >= 0 and strictly increasing, with one per row;
* every query sees at least one key (otherwise its softmax would divide by 0);
* the cache ring is consistent: each valid slot holds a position p with
  slot == p mod C, and the valid positions form one run of consecutive
  positions (so the kernel never scans more than C positions);
* arrays are C-contiguous: non-contiguous inputs are copied (q, k, v) and so
  is a non-contiguous cache buffer (the cache itself is never modified).

Both functions return [T, Hq, D] in the input dtype.
"""
import numpy as np

from . import _validate as V
from .errors import SwarefError, SwarefTypeError

KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: Largest position the kernel takes: its tile arithmetic (position + 64, + prefetch distance)
#: must not overflow int64.
MAX_POSITION = 2 ** 62
MAX_THREADS = 4096


def _core():
    try:
        from . import _core
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SwarefError(
            "backend", f"backend='cython' needs the compiled extension swaref._core, which is not built "
                       f"({exc}); run `python setup.py build_ext --inplace` or `pip install .`") from None
    return _core


def _check_kernel_arrays(q, k, v):
    """Types, dtypes and shapes the kernel relies on.  q: [T, Hq, D], k, v: [S, Hkv, D] -> (T, S, Hq, Hkv, D)."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, np.ndarray):
            raise SwarefTypeError("dtype", f"{name} must be a numpy.ndarray, got {type(x).__name__}")
        if x.dtype not in KERNEL_DTYPES:
            raise SwarefTypeError(
                "dtype", f"backend='cython' supports float32 and float64; {name} has dtype {x.dtype}")
    return V.check_qkv(q, k, v, allow_empty_keys=True)


def _contiguous(x):
    """x itself when C-contiguous (no copy), else a C-contiguous copy."""
    return np.ascontiguousarray(x)


def _threads(num_threads):
    n = V.check_num_threads(num_threads)
    return None if n is None else min(n, MAX_THREADS)      # more threads than items are not used anyway


def _check_max_position(pos, name):
    if pos.size and int(pos.max()) > MAX_POSITION:
        raise SwarefError("positions", f"backend='cython' takes positions up to 2**62, got {name} up to "
                                       f"{int(pos.max())}; use backend='reference'")


def _kernel_window(window, last_position):
    """A window wider than every position is plain causal attention: hand the kernel None
    (the same visible keys, the same arithmetic) rather than an int64 it cannot hold."""
    return None if window is not None and window > last_position + 1 else window


def attention(q, k, v, q_pos, k_pos, window, scale, num_threads=None):
    """Compiled banded attention over explicit keys.

    q: [T, Hq, D], k, v: [S, Hkv, D] (float32 or float64), q_pos: [T], k_pos: [S]
    strictly increasing int positions  ->  [T, Hq, D] in q.dtype.

    Equals ``swaref.attention._attention_reference`` (via ``swaref.attention``).
    """
    T, S, Hq, Hkv, D = _check_kernel_arrays(q, k, v)
    if S < 1:
        raise SwarefError("shape", f"k must hold at least one key (S >= 1), got shape {k.shape}")
    window = V.check_window(window)
    q_pos = V.check_positions(q_pos, "q_pos", T)
    k_pos = V.check_positions(k_pos, "k_pos", S)
    scale = V.check_scale(scale, D)
    num_threads = _threads(num_threads)
    V.check_no_empty_rows(q_pos, k_pos, window)
    _check_max_position(q_pos, "q_pos")
    _check_max_position(k_pos, "k_pos")
    window = _kernel_window(window, int(q_pos[-1]))
    q, k, v = (_contiguous(x) for x in (q, k, v))
    ring = np.zeros((0, Hkv, D), dtype=q.dtype)
    ring_pos = np.zeros(0, dtype=np.int64)
    return _core().band_attention(q, q_pos, k, v, k_pos, ring, ring, ring_pos,
                                  0, -1, window, scale, num_threads)


def _check_ring(cache, Hkv, D, dtype):
    """The cache's arrays as the kernel reads them; returns (ck, cv, cpos, first, last position held)."""
    from .cache import RollingBufferCache
    if not isinstance(cache, RollingBufferCache):
        raise SwarefTypeError("cache", f"cache must be a RollingBufferCache, got {type(cache).__name__}")
    window = V.check_window(cache.window, "cache.window")
    ck, cv, cpos = cache.k, cache.v, cache.positions
    for name, x in (("cache.k", ck), ("cache.v", cv)):
        if not isinstance(x, np.ndarray) or x.dtype != dtype:
            raise SwarefTypeError("cache", f"{name} must be an ndarray of dtype {dtype}, got {V._describe(x)}")
        if x.ndim != 3 or x.shape[1:] != (Hkv, D) or x.shape[0] < 1:
            raise SwarefError("cache", f"{name} must have shape [C, {Hkv}, {D}] with C >= 1, got {x.shape}")
    C = ck.shape[0]
    if cv.shape != ck.shape:
        raise SwarefError("cache", f"cache.v must have the shape of cache.k {ck.shape}, got {cv.shape}")
    if window is not None and C != window:
        raise SwarefError("cache", f"a sliding-window cache has C = window = {window} slots, got {C}")
    if not isinstance(cpos, np.ndarray) or cpos.dtype != np.int64 or cpos.shape != (C,):
        raise SwarefError("cache", f"cache.positions must be an int64 array of shape ({C},), got {V._describe(cpos)}")
    valid = np.nonzero(cpos >= 0)[0]
    if np.any(cpos[cpos < 0] != -1):
        raise SwarefError("cache", "cache.positions must hold a position >= 0 or -1 (empty) per slot")
    if valid.size == 0:
        return _contiguous(ck), _contiguous(cv), _contiguous(cpos), 0, -1
    held = cpos[valid]
    if np.any(held % C != valid):
        i = int(valid[np.argmax(held % C != valid)])
        raise SwarefError("cache", f"cache slot {i} holds position {int(cpos[i])}, which belongs in slot "
                                   f"{int(cpos[i]) % C} (slot = position mod {C})")
    first, last = int(held.min()), int(held.max())
    if last - first + 1 != valid.size:
        raise SwarefError("cache", f"the cache's valid slots must hold consecutive positions, got "
                                   f"{valid.size} positions spread over {first} .. {last}")
    return _contiguous(ck), _contiguous(cv), _contiguous(cpos), first, last


def attend_chunk(q, k, v, q_pos, cache, scale, num_threads=None):
    """Compiled attention of a chunk's queries over [cache slots, read in place] + [chunk keys].

    q: [s, Hq, D] at consecutive positions q_pos: [s]; k, v: [c, Hkv, D] with
    c == s (prefill: the chunk's keys, not yet in the cache) or c == 0 (decode:
    the token is already in the cache)  ->  [s, Hq, D].  Does not write.

    Equals ``swaref.prefill.attend_chunk`` with backend="reference".
    """
    s, c, Hq, Hkv, D = _check_kernel_arrays(q, k, v)
    if c not in (0, s):
        raise SwarefError("shape", f"k and v must have one row per query (s = {s}) or none (decode), got {c}")
    q_pos = V.check_positions(q_pos, "q_pos", s)
    if s > 1 and np.any(np.diff(q_pos) != 1):
        raise SwarefError("positions", f"q_pos must be consecutive positions, got {q_pos[:8]}...")
    scale = V.check_scale(scale, D)
    num_threads = _threads(num_threads)
    ck, cv, cpos, first, last = _check_ring(cache, Hkv, D, q.dtype)
    _check_max_position(q_pos, "q_pos")
    _check_max_position(cpos, "cache.positions")
    start = int(q_pos[0])
    if c:
        # Prefill: the chunk follows what the cache holds; every query sees at least its own key.
        if last >= start:
            raise SwarefError("cache", f"the cache holds position {last}, not before the chunk starting at {start}")
        k_pos = q_pos
        ring_hi = last
    else:
        # Decode: every query position must already be in the cache (write, then attend).
        C = ck.shape[0]
        missing = cpos[q_pos % C] != q_pos
        if missing.any():
            p = int(q_pos[np.argmax(missing)])
            raise SwarefError("no_visible_key", f"decode query at position {p} does not find its own key in "
                                                f"the cache (write the token before attending)")
        k_pos = np.zeros(0, dtype=np.int64)
        ring_hi = last
    q, k, v = (_contiguous(x) for x in (q, k, v))
    return _core().band_attention(q, q_pos, k, v, k_pos, ck, cv, cpos, first, ring_hi,
                                  _kernel_window(cache.window, int(q_pos[-1])), scale, num_threads)
