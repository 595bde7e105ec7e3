"""Input validation shared by every backend.

Everything here runs *before* any computation or cache mutation, so a rejected
call leaves no trace.  The compiled kernel trusts only what these functions
hand it: C-contiguous arrays of one float dtype, int64 positions, checked
shapes.
"""
import numbers
import math

import numpy as np

from .errors import SwarefError, SwarefTypeError

#: Largest position the compiled kernel takes: its tile arithmetic (position + 64, plus a
#: prefetch distance) must not overflow int64.  Checked before any cache is written.
KERNEL_MAX_POSITION = 2 ** 62

#: dtypes the reference accepts for q, k, v (the compiled backend: float32, float64).
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
BACKENDS = ("reference", "cython")


def _describe(x):
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"


def is_int(x):
    """swaref's one definition of an integer argument: any ``numbers.Integral``
    (Python int, NumPy integer) except bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def check_int(x, name, *, kind="argument", minimum=None, maximum=None):
    """Return ``x`` as a Python int in [minimum, maximum] (either bound may be None)."""
    if not is_int(x):
        raise SwarefTypeError(kind, f"{name} must be {_int_wanted(minimum, maximum)}, got {_describe(x)}")
    n = int(x)
    if (minimum is not None and n < minimum) or (maximum is not None and n > maximum):
        raise SwarefError(kind, f"{name} must be {_int_wanted(minimum, maximum)}, got {n}")
    return n


def _int_wanted(minimum, maximum):
    """check_int's "an int >= a and <= b", made only for a message (a decode step checks ~30 ints)."""
    lo = "" if minimum is None else f" >= {minimum}"
    hi = "" if maximum is None else f" <= {maximum}"
    return f"an int{lo}{' and' if lo and hi else ''}{hi}"


def check_window(window, name="window"):
    """Return ``window`` normalized (``windows.normalize``): None (plain causal attention),
    a Python int >= 1, or a ``Sliding`` with sink tokens, ``TwoSided`` looking ahead or
    ``Chunked`` (docs/spec.md, rule 1).  An int or None takes exactly the spec 1.0 path."""
    if window is None:
        return None
    if is_int(window):
        w = int(window)
        if w < 1:
            raise SwarefError("window", f"{name} must be an int >= 1 or None (no window), got {w}")
        return w
    from . import windows          # windows imports this module: import at call time
    if isinstance(window, (windows.Sliding, windows.TwoSided, windows.Chunked)):
        return windows.normalize(window, name)
    raise SwarefTypeError("window", f"{name} must be None, an int >= 1, Sliding, TwoSided or Chunked, "
                                    f"got {_describe(window)}")


def check_int_window(window, name="window"):
    """Return ``window`` as a Python int >= 1, or None: for the callers that take only
    the spec 1.0 window (a sliding window of W keys or plain causal)."""
    if window is not None and not is_int(window):
        raise SwarefTypeError("window", f"{name} must be an int >= 1 or None, got {_describe(window)}")
    return check_window(window, name)


def causal_if_unbounded(window):
    """A window wider than any int64 position difference is plain causal (rule 1:
    W >= the sequence length is exactly causal); folding it to None keeps the int64
    position arithmetic (p - W + 1) from overflowing for W >= 2**63.  The same holds for
    each parameter of the spec 1.1 windows (positions are 0 .. 2**63 - 1): a size or a
    number of sink tokens beyond int64 makes every earlier key visible, a side of a
    two-sided window beyond int64 is unbounded, a chunk beyond int64 is one chunk."""
    big = np.iinfo(np.int64).max
    if window is None or is_int(window):
        return None if window is not None and window > big else window
    from . import windows
    if isinstance(window, windows.Sliding):
        return None if window.size > big or window.sink_tokens > big else window
    if isinstance(window, windows.Chunked):
        return None if window.size > big else window
    left = None if window.left is None or window.left > big else window.left
    right = None if window.right is None or window.right > big else window.right
    return windows.normalize(windows.TwoSided(left, right))


def check_array(x, name, ndim=3):
    """Return ``x`` as an ndarray of a supported float dtype with ``ndim`` dims."""
    if not isinstance(x, np.ndarray):
        raise SwarefTypeError("dtype", f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise SwarefTypeError(
            "dtype", f"{name} must have dtype float16, float32 or float64, got {x.dtype}")
    if x.ndim != ndim:
        raise SwarefError("shape", f"{name} must have {ndim} dimensions, got shape {x.shape}")
    return x


def check_qkv(q, k, v, *, allow_empty_keys=False):
    """Validate q: [T, Hq, D], k and v: [S, Hkv, D] of one float dtype.

    Returns (T, S, Hq, Hkv, D).
    """
    check_array(q, "q")
    check_array(k, "k")
    check_array(v, "v")
    if not (q.dtype == k.dtype == v.dtype):
        raise SwarefTypeError(
            "dtype", f"q, k and v must share one dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    T, Hq, D = q.shape
    S, Hkv, Dk = k.shape
    if v.shape != k.shape:
        raise SwarefError("shape", f"v must have the shape of k {k.shape}, got {v.shape}")
    if T < 1:
        raise SwarefError("shape", f"q must hold at least one query (T >= 1), got shape {q.shape}")
    if S < 1 and not allow_empty_keys:
        raise SwarefError("shape", f"k must hold at least one key (S >= 1), got shape {k.shape}")
    if D < 1:
        raise SwarefError("shape", f"head_dim must be >= 1, got q of shape {q.shape}")
    if Dk != D:
        raise SwarefError("shape", f"k and v head_dim must equal q's head_dim {D}, got {Dk}")
    if Hkv < 1 or Hq < 1 or Hq % Hkv != 0:
        raise SwarefError(
            "heads", f"the number of query heads (q.shape[1] = {Hq}) must be a positive multiple "
                     f"of the number of KV heads (k.shape[1] = {Hkv})")
    return T, S, Hq, Hkv, D


def check_positions(pos, name, length):
    """Return ``pos`` as a C-contiguous int64 array of ``length`` strictly increasing values >= 0."""
    if isinstance(pos, np.ndarray):
        arr = pos
    elif isinstance(pos, (list, tuple, range)):
        if not all(is_int(x) for x in pos):
            bad = next(x for x in pos if not is_int(x))
            raise SwarefTypeError("positions", f"{name} must hold integers, got {_describe(bad)}")
        if any(not 0 <= int(x) <= np.iinfo(np.int64).max for x in pos):
            bad = next(int(x) for x in pos if not 0 <= int(x) <= np.iinfo(np.int64).max)
            raise SwarefError("positions", f"{name} values must be in 0 .. 2**63 - 1, got {bad}")
        arr = np.array([int(x) for x in pos], dtype=np.int64)
    else:
        raise SwarefTypeError(
            "positions", f"{name} must be a 1-D array of integers, got {type(pos).__name__}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise SwarefTypeError(
            "positions", f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise SwarefError("positions", f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != length:
        raise SwarefError("positions", f"{name} must have length {length}, got {arr.shape[0]}")
    if np.issubdtype(arr.dtype, np.unsignedinteger) and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise SwarefError("positions", f"{name} values must fit in int64")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr.size and arr.min() < 0:
        i = int(np.argmax(arr < 0))
        raise SwarefError("positions", f"{name} must be >= 0, got {name}[{i}] = {arr[i]}")
    if arr.size > 1:
        bad = np.nonzero(np.diff(arr) <= 0)[0]
        if bad.size:
            i = int(bad[0])
            raise SwarefError(
                "positions", f"{name} must be strictly increasing, got {name}[{i}] = {arr[i]} "
                             f"and {name}[{i + 1}] = {arr[i + 1]}")
    return arr


def is_real(x):
    """swaref's one definition of a real-number argument: any ``numbers.Real`` except bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def check_real(x, name, *, kind, positive=False, none_means=None):
    """Return ``x`` as a finite Python float (> 0 when ``positive``); ``none_means`` says what
    None would mean, for the message.  Integers beyond float64 (10**400) are refused too."""
    want = "a real number" + (" > 0" if positive else "") + (" or None" if none_means else "")
    if not is_real(x):
        raise SwarefTypeError(kind, f"{name} must be {want}, got {_describe(x)}")
    try:
        f = float(x)
    except OverflowError:
        raise SwarefError(kind, f"{name} must be finite in float64, got {x!r:.40}") from None
    if not math.isfinite(f) or (positive and not f > 0):
        extra = f" (None: {none_means})" if none_means else ""
        raise SwarefError(kind, f"{name} must be a finite real number{' > 0' if positive else ''}{extra}, got {f}")
    return f


def check_scale(scale, D):
    """Return the softmax scale as a Python float (default 1/sqrt(D))."""
    if scale is None:
        return 1.0 / math.sqrt(D)
    return check_real(scale, "scale", kind="scale", none_means="1/sqrt(D)")


def check_softcap(softcap):
    """Return the logit soft-cap as a Python float > 0, or None (spec rule 3, step 2b)."""
    if softcap is None:
        return None
    return check_real(softcap, "softcap", kind="softcap", positive=True, none_means="no cap")


def check_sinks(sinks, Hq):
    """Return learned sink logits as a read-only float64 array [Hq], or None (spec rule 3, step 3)."""
    if sinks is None:
        return None
    arr = sinks if isinstance(sinks, np.ndarray) else None
    if arr is None:
        if not isinstance(sinks, (list, tuple)) or not all(is_real(x) for x in sinks):
            raise SwarefTypeError("sinks", f"sinks must be a 1-D array of {Hq} real numbers (one per query "
                                           f"head) or None, got {_describe(sinks)}")
        arr = np.array(sinks, dtype=np.float64)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise SwarefTypeError("sinks", f"sinks must hold real numbers, got dtype {arr.dtype}")
    if arr.shape != (Hq,):
        raise SwarefError("sinks", f"sinks must have shape ({Hq},) (one logit per query head), got {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        i = int(np.argmax(~np.isfinite(arr)))
        raise SwarefError("sinks", f"sinks must be finite, got sinks[{i}] = {arr[i]}")
    arr.setflags(write=False)
    return arr


def check_softmax_variants(softcap, sinks, Hq):
    """(softcap, sinks) checked, and their combination refused: no model uses both, so spec
    rule 3 does not define whether the cap applies to the sink logit."""
    softcap, sinks = check_softcap(softcap), check_sinks(sinks, Hq)
    if softcap is not None and sinks is not None:
        raise SwarefError("argument", "softcap and sinks together are not defined (no model uses both); "
                                      "give one of them")
    return softcap, sinks


def check_backend(backend):
    if backend not in BACKENDS:
        raise SwarefError("backend", f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def check_num_threads(num_threads):
    """Return the thread count (an int >= 1) or None for 'the environment decides'."""
    if num_threads is None:
        return None
    return check_int(num_threads, "num_threads", minimum=1)


def check_kernel_position(last, name):
    """Reject a position above what backend='cython' can take (spec rule 3)."""
    if last > KERNEL_MAX_POSITION:
        raise SwarefError("positions", f"backend='cython' takes positions up to 2**62, got {name} = {last}; "
                                       f"use backend='reference'")


def check_no_empty_rows(q_pos, k_pos, window):
    """Reject a query position that sees no key: spec rule 'no visible key'.

    q_pos: [T] int64, k_pos: [S] int64 strictly increasing, window normalized.
    Returns (first, last) [T]: query i sees keys first[i] <= s < last[i]; for a
    ``Sliding`` with sink tokens (sink_last, first, last): query i also sees the
    keys 0 <= s < sink_last[i] (sink_last <= first).

    Keys are sorted, so query p sees a key iff the first key > p - W (or >= 0
    when window is None) exists and is <= p.
    """
    window = causal_if_unbounded(window)
    if window is None or is_int(window):
        lo = q_pos - window + 1 if window is not None else np.zeros_like(q_pos)
        first = np.searchsorted(k_pos, lo, side="left")
        last = np.searchsorted(k_pos, q_pos, side="right")
        ranges = (first, last)
        empty = np.nonzero(last <= first)[0]
    else:
        from .attention import key_ranges        # the rule's ranges live beside the reference
        ranges = key_ranges(q_pos, k_pos, window)
        first, last = ranges[-2:]
        seen = last - first if len(ranges) == 2 else last - first + ranges[0]
        empty = np.nonzero(seen == 0)[0]
    if empty.size:
        i = int(empty[0])
        raise SwarefError(
            "no_visible_key",
            f"query {i} at position {int(q_pos[i])} sees no key (window={window}); "
            f"a query with no visible key is rejected rather than silently zeroed")
    return ranges
