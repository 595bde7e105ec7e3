"""Bad input (spec rule 7): each is rejected with SwarefError of the right kind, a message
that names the argument and what came, and, for cache operations, the cache left
exactly as it was (buffers, positions, n_seen, next_position, bitwise).
"""
import functools

import numpy as np
import pytest

import swaref
from swaref.cache import load_state
from swaref import ERROR_KINDS, SwarefError, SwarefTypeError
from ref_helpers import assert_cache_state

T, S, HQ, HKV, D = 4, 6, 4, 2, 3
RNG = np.random.default_rng(0)
Q = RNG.standard_normal((T, HQ, D))
K = RNG.standard_normal((S, HKV, D))
V = RNG.standard_normal((S, HKV, D))


def _att(**over):
    args = dict(q=Q, k=K, v=V, window=3)
    args.update(over)
    q, k, v = args.pop("q"), args.pop("k"), args.pop("v")
    return lambda: swaref.attention(q, k, v, **args)


def check_error(fn, kind, *words, type_error=None):
    with pytest.raises(SwarefError) as exc:
        fn()
    err = exc.value
    assert err.kind == kind, f"kind {err.kind!r}, expected {kind!r}: {err}"
    assert err.kind in ERROR_KINDS
    assert isinstance(err, ValueError)
    if type_error is not None:
        assert isinstance(err, TypeError) == type_error, f"TypeError-ness should be {type_error}: {err!r}"
    msg = str(err)
    for w in words:
        assert w in msg, f"message should mention {w!r}: {msg!r}"
    return err


ATTENTION_CASES = {
    # name: (call, kind, words the message must contain, is a TypeError)
    "q 2-D": (_att(q=Q[:, 0]), "shape", ["q", "(4, 3)"], False),
    "v shape != k": (_att(v=V[:5]), "shape", ["v", "(5, 2, 3)"], False),
    "k head_dim != q": (_att(k=K[:, :, :2], v=V[:, :, :2]), "shape", ["head_dim", "2"], False),
    "Hq not a multiple of Hkv": (_att(q=Q[:, :3]), "heads", ["q.shape[1] = 3", "k.shape[1] = 2"], False),
    "zero KV heads": (_att(k=K[:, :0], v=V[:, :0]), "heads", ["k.shape[1] = 0"], False),
    "no queries": (_att(q=Q[:0]), "shape", ["q", "T >= 1"], False),
    "head_dim 0": (_att(q=Q[..., :0], k=K[..., :0], v=V[..., :0]), "shape", ["head_dim", "(4, 4, 0)"], False),
    "k 4-D": (_att(k=K[None], v=V[None]), "shape", ["k", "(1, 6, 2, 3)"], False),
    "no keys": (_att(k=K[:0], v=V[:0], q_pos=[0, 1, 2, 3], k_pos=[]), "shape", ["k", "S >= 1"], False),
    "window 0": (_att(window=0), "window", ["window", "0"], False),
    "window -2": (_att(window=-2), "window", ["window", "-2"], False),
    "window float": (_att(window=3.0), "window", ["window", "3.0"], True),
    "window numpy float": (_att(window=np.float64(3)), "window", ["window", "3.0"], True),
    "window bool": (_att(window=True), "window", ["window", "True"], True),
    "window str": (_att(window="3"), "window", ["window", "'3'"], True),
    "q int": (_att(q=Q.astype(np.int64)), "dtype", ["q", "int64"], True),
    "k complex": (_att(k=K.astype(np.complex128)), "dtype", ["k", "complex128"], True),
    "v bool": (_att(v=V > 0), "dtype", ["v", "bool"], True),
    "q_pos ragged list": (_att(q_pos=[[0, 1], [2], [3], [4]]), "positions", ["q_pos", "[0, 1]"], True),
    "k_pos list beyond uint64": (_att(k_pos=[0, 1, 2, 3, 4, 2 ** 64]), "positions", ["k_pos", str(2 ** 64)], False),
    "k_pos list mixing -1 and 2**63": (_att(k_pos=[-1, 0, 1, 2, 3, 2 ** 63]), "positions", ["k_pos", "-1"], False),
    "q a list": (_att(q=Q.tolist()), "dtype", ["q", "list"], True),
    "mixed dtypes": (_att(k=K.astype(np.float32)), "dtype", ["float32", "float64"], True),
    "mixed half": (_att(v=V.astype(np.float16)), "dtype", ["float16", "float64"], True),
    "k_pos wrong length": (_att(k_pos=np.arange(5)), "positions", ["k_pos", "6", "5"], False),
    "q_pos wrong length": (_att(q_pos=np.arange(3)), "positions", ["q_pos", "4", "3"], False),
    "k_pos float": (_att(k_pos=np.arange(6.0)), "positions", ["k_pos", "float64"], True),
    "k_pos bool": (_att(k_pos=np.ones(6, dtype=bool)), "positions", ["k_pos", "bool"], True),
    "q_pos str": (_att(q_pos="0123"), "positions", ["q_pos", "str"], True),
    "q_pos scalar": (_att(q_pos=3), "positions", ["q_pos", "int"], True),
    "k_pos 2-D": (_att(k_pos=np.arange(6).reshape(2, 3)), "positions", ["k_pos", "(2, 3)"], False),
    "k_pos negative": (_att(k_pos=np.arange(6) - 2), "positions", ["k_pos", "-2"], False),
    "q_pos negative": (_att(q_pos=[-1, 3, 4, 5]), "positions", ["q_pos", "-1"], False),
    "k_pos unsorted": (_att(k_pos=[0, 1, 3, 2, 4, 5]), "positions", ["k_pos", "increasing"], False),
    "k_pos duplicated": (_att(k_pos=[0, 1, 2, 2, 3, 4]), "positions", ["k_pos", "increasing"], False),
    "q_pos duplicated": (_att(q_pos=[2, 3, 3, 5]), "positions", ["q_pos", "increasing"], False),
    "k_pos beyond int64": (_att(k_pos=np.array([0, 1, 2, 3, 4, 2 ** 63], dtype=np.uint64)),
                           "positions", ["k_pos", "int64"], False),
    "T > S default q_pos": (_att(k=K[:2], v=V[:2]), "positions", ["q_pos", "T=4", "S=2"], False),
    "no visible key": (_att(q_pos=[0, 1, 2, 30]), "no_visible_key", ["30"], False),
    "unknown backend": (_att(backend="torch"), "backend", ["backend", "'torch'"], False),
    "scale NaN": (_att(scale=float("nan")), "scale", ["scale", "nan"], False),
    "scale inf": (_att(scale=np.inf), "scale", ["scale", "inf"], False),
    "scale str": (_att(scale="0.5"), "scale", ["scale", "'0.5'"], True),
    "num_threads 0": (_att(num_threads=0), "argument", ["num_threads", "0"], False),
}


@pytest.mark.parametrize("case", sorted(ATTENTION_CASES))
def test_attention_rejects(case):
    fn, kind, words, is_type = ATTENTION_CASES[case]
    check_error(fn, kind, *words, type_error=is_type)


def test_type_errors_are_catchable_as_TypeError():
    with pytest.raises(TypeError):
        swaref.attention(Q, K, V, window=2.5)
    assert issubclass(SwarefTypeError, SwarefError) and issubclass(SwarefError, ValueError)


# ----- cache operations: rejected and the cache left exactly as it was -----------------

W = 3
N0 = 5          # tokens already in the cache when the bad call comes (it has wrapped)


def filled_cache(dtype=np.float64, window=W, hkv=HKV, d=D):
    c = swaref.RollingBufferCache(window, hkv, d, dtype=dtype)
    rng = np.random.default_rng(1)
    swaref.prefill(rng.standard_normal((N0, HQ, d)).astype(dtype),
                   rng.standard_normal((N0, hkv, d)).astype(dtype),
                   rng.standard_normal((N0, hkv, d)).astype(dtype), c, chunk_size=2, start=7)
    return c


def snapshot(c):
    return c.k.copy(), c.v.copy(), c.positions.copy(), c.n_seen, c.next_position


q2 = RNG.standard_normal((2, HQ, D))
k2 = RNG.standard_normal((2, HKV, D))
v2 = RNG.standard_normal((2, HKV, D))

BACKENDS = ("reference", "cython")
PF = {b: functools.partial(swaref.prefill, backend=b) for b in BACKENDS}
DS = {b: functools.partial(swaref.decode_step, backend=b) for b in BACKENDS}
AC = {b: functools.partial(swaref.attend_chunk, backend=b) for b in BACKENDS}

# name: (function of the cache and the backend, kind, words); every case runs on both backends.
CACHE_CASES = {
    "prefill empty": (lambda c, be: PF[be](q2[:0], k2[:0], v2[:0], c), "shape", ["q", "T >= 1"]),
    "prefill k rows != T": (lambda c, be: PF[be](q2, K[:3], V[:3], c), "shape", ["k", "T = 2", "3"]),
    "prefill D mismatch": (lambda c, be: PF[be](q2[..., :2], k2[..., :2], v2[..., :2], c),
                           "cache", ["cache", "D=3", "D=2"]),
    "prefill Hq not multiple": (lambda c, be: PF[be](q2[:, :3], k2, v2, c), "heads", ["q.shape[1] = 3"]),
    "prefill v shape": (lambda c, be: PF[be](q2, k2, v2[:1], c), "shape", ["v"]),
    "prefill mixed dtypes": (lambda c, be: PF[be](q2, k2.astype(np.float32), v2, c), "dtype", ["float32"]),
    "prefill int dtype": (lambda c, be: PF[be](q2.astype(np.int32), k2, v2, c), "dtype", ["q", "int32"]),
    "cache of other Hkv": (lambda c, be: PF[be](q2, k2[:, :1], v2[:, :1], c), "cache", ["cache", "Hkv=1"]),
    "cache of other dtype": (lambda c, be: PF[be](q2.astype(np.float32), k2.astype(np.float32),
                                                      v2.astype(np.float32), c), "cache", ["cache", "float32"]),
    "chunk_size 0": (lambda c, be: PF[be](q2, k2, v2, c, chunk_size=0), "schedule", ["chunk_size", "0"]),
    "chunk_size -1": (lambda c, be: PF[be](q2, k2, v2, c, chunk_size=-1), "schedule", ["chunk_size", "-1"]),
    "chunk_size bool": (lambda c, be: PF[be](q2, k2, v2, c, chunk_size=True), "schedule", ["chunk_size", "True"]),
    "chunk_size float": (lambda c, be: PF[be](q2, k2, v2, c, chunk_size=1.0), "schedule", ["chunk_size", "float"]),
    "schedule sum != T": (lambda c, be: PF[be](q2, k2, v2, c, chunk_size=[1, 2]), "schedule", ["3", "T = 2"]),
    "schedule with 0": (lambda c, be: PF[be](q2, k2, v2, c, chunk_size=[0, 2]), "schedule", ["chunk_size[0]", "0"]),
    "schedule with bool": (lambda c, be: PF[be](q2, k2, v2, c, chunk_size=[True, 1]), "schedule",
                           ["chunk_size[0]", "True"]),
    "start not continuing (gap)": (lambda c, be: PF[be](q2, k2, v2, c, start=N0 + 8), "positions",
                                   ["start", str(N0 + 7), str(N0 + 8)]),
    "start not continuing (back)": (lambda c, be: DS[be](q2[:1], k2[:1], v2[:1], c, start=0), "positions",
                                    ["start", "0", str(N0 + 7)]),
    "start float": (lambda c, be: PF[be](q2, k2, v2, c, start=12.0), "positions", ["start", "12.0"]),
    "unknown backend": (lambda c, be: PF[be](q2, k2, v2, c, backend="gpu"), "backend", ["backend", "'gpu'"]),
    "scale NaN": (lambda c, be: PF[be](q2, k2, v2, c, scale=np.nan), "scale", ["scale", "nan"]),
    "num_threads 0": (lambda c, be: PF[be](q2, k2, v2, c, num_threads=0), "argument", ["num_threads"]),
    "decode two tokens": (lambda c, be: DS[be](q2, k2, v2, c), "shape", ["decode_step", "(2, 4, 3)"]),
    "decode D mismatch": (lambda c, be: DS[be](q2[:1, :, :2], k2[:1, :, :2], v2[:1, :, :2], c),
                          "cache", ["cache", "D=2"]),
    "decode scale inf": (lambda c, be: DS[be](q2[:1], k2[:1], v2[:1], c, scale=np.inf), "scale", ["scale"]),
    "decode not a cache": (lambda c, be: DS[be](q2[:1], k2[:1], v2[:1], {"k": c.k}), "cache",
                           ["cache", "dict"]),
    "cache_write start back": (lambda c, be: swaref.cache_write(c, k2, v2, 3), "positions", ["start", "3"]),
    "cache_write D mismatch": (lambda c, be: swaref.cache_write(c, k2[..., :2], v2[..., :2]), "cache", ["D=2"]),
    "cache_write v shape": (lambda c, be: swaref.cache_write(c, k2, v2[:1]), "shape", ["v"]),
    "cache_write not arrays": (lambda c, be: swaref.cache_write(c, k2.tolist(), v2), "dtype", ["k", "list"]),
    "attend_chunk D mismatch": (lambda c, be: AC[be](q2[..., :2], k2[..., :2], v2[..., :2], c, N0 + 7),
                                "cache", ["D=2"]),
    "attend_chunk start gap": (lambda c, be: AC[be](q2, k2, v2, c, N0 + 9), "positions", ["start"]),
    "attend_chunk decode not written": (lambda c, be: AC[be](q2[:1], k2[:0], v2[:0], c, N0 + 7),
                                        "no_visible_key", ["write, then attend"]),
    "attend_chunk 1 key for 2 queries": (lambda c, be: AC[be](q2, k2[:1], v2[:1], c, N0 + 7), "shape", ["none"]),
    "load_state not consecutive": (lambda c, be: load_state(c, np.array([9, 7, 11]), c.k, c.v), "cache",
                                   ["consecutive"]),
    "load_state wrong slot": (lambda c, be: load_state(c, np.array([9, 11, 10]), c.k, c.v), "cache",
                              ["belongs in slot"]),
    "load_state dtype": (lambda c, be: load_state(c, c.positions, c.k.astype(np.float32), c.v), "cache",
                         ["float32"]),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CACHE_CASES))
def test_cache_operations_reject_and_leave_cache_untouched(case, backend):
    fn, kind, words = CACHE_CASES[case]
    c = filled_cache()
    before = snapshot(c)
    check_error(lambda: fn(c, backend), kind, *words)
    assert_cache_state(c, *before, name=f"cache after rejected {case}")
    # ... and still usable: the next correct call continues where it was.
    rng = np.random.default_rng(2)
    swaref.decode_step(rng.standard_normal((1, HQ, D)), rng.standard_normal((1, HKV, D)),
                       rng.standard_normal((1, HKV, D)), c)
    assert c.n_seen == N0 + 1 and c.next_position == 7 + N0 + 1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("start,kind", [(-1, "positions"), (True, "positions"), ("3", "positions"),
                                        (2 ** 63 - 2, "positions")])
def test_fresh_cache_rejects_bad_start(start, kind, backend):
    c = swaref.RollingBufferCache(W, HKV, D, dtype=np.float64)
    before = snapshot(c)
    check_error(lambda: PF[backend](q2, k2, v2, c, start=start), kind, "start" if start != 2 ** 63 - 2 else "int64")
    assert_cache_state(c, *before, name="fresh cache after rejected start")


@pytest.mark.parametrize("call", ["decode", "prefill in one chunk", "prefill in chunks of 2", "attend_chunk"])
def test_kernel_position_limit_is_checked_before_any_write(call):
    """Issue: decode_step(start=2**62 + 1, backend='cython') wrote the slot before _backend refused,
    and prefill(start=2**62 - 1, chunk_size=2) wrote its first chunk, then rejected the second."""
    c = swaref.RollingBufferCache(W, HKV, D, dtype=np.float64)
    before = snapshot(c)
    fn = {"decode": lambda: DS["cython"](q2[:1], k2[:1], v2[:1], c, start=2 ** 62 + 1),
          "prefill in one chunk": lambda: PF["cython"](q2, k2, v2, c, start=2 ** 62),
          "prefill in chunks of 2": lambda: PF["cython"](np.concatenate([q2, q2]), np.concatenate([k2, k2]),
                                                       np.concatenate([v2, v2]), c, start=2 ** 62 - 1, chunk_size=2),
          "attend_chunk": lambda: AC["cython"](q2, k2, v2, c, 2 ** 62)}[call]
    check_error(fn, "positions", "2**62")
    assert_cache_state(c, *before, name=f"cache after rejected {call}")
    # The reference backend has no such limit: the same call is accepted there.
    if call != "attend_chunk":
        swaref.prefill(q2, k2, v2, c, start=2 ** 62)
        assert c.next_position == 2 ** 62 + 2


@pytest.mark.parametrize("call", ["prefill", "decode"])
def test_float16_is_refused_by_cython_before_any_write(call):
    c = swaref.RollingBufferCache(W, HKV, D, dtype=np.float16)
    before = snapshot(c)
    h = [x.astype(np.float16) for x in (q2, k2, v2)]
    fn = (lambda: PF["cython"](*h, c)) if call == "prefill" else (lambda: DS["cython"](*(x[:1] for x in h), c))
    check_error(fn, "dtype", "float16")
    assert_cache_state(c, *before, name="float16 cache after rejected call")


@pytest.mark.parametrize("args,kwargs,kind,word", [
    ((0, 2, 3), {}, "window", "window"),
    ((2.0, 2, 3), {}, "window", "window"),
    ((True, 2, 3), {}, "window", "window"),
    ((3, 0, 3), {}, "argument", "n_kv_heads"),
    ((3, 2, 0), {}, "argument", "head_dim"),
    ((3, 2.0, 3), {}, "argument", "n_kv_heads"),
    ((3, 2, 3), {"dtype": np.int32}, "dtype", "int32"),
    ((3, 2, 3), {"dtype": np.complex64}, "dtype", "complex64"),
    ((3, 2, 3), {"dtype": "not a dtype"}, "dtype", "dtype"),
    ((3, 2, 3), {"capacity": 2}, "cache", "capacity"),
    ((3, 2, 3), {"capacity": 2.5}, "cache", "capacity"),
    ((None, 2, 3), {}, "cache", "capacity"),
    ((None, 2, 3), {"capacity": 0}, "cache", "capacity"),
    ((2 ** 62, 1, 1), {}, "argument", "bytes"),
    ((10 ** 7, 8, 128), {}, "argument", "GiB"),
    ((None, 2 ** 40, 2 ** 40), {"capacity": 2 ** 40}, "argument", "more than any array"),
])
def test_cache_constructor_rejects(args, kwargs, kind, word):
    check_error(lambda: swaref.RollingBufferCache(*args, **kwargs), kind, word)


@pytest.mark.parametrize("args,kind,word", [
    ((0, 2, 5), "window", "window"),
    ((1.5, 2, 5), "window", "window"),
    ((3, -1, 5), "argument", "n_layers"),
    ((3, 2, -1), "argument", "position"),
    ((3, 2.0, 5), "argument", "n_layers"),
])
def test_receptive_field_rejects(args, kind, word):
    check_error(lambda: swaref.receptive_field(*args), kind, word)


@pytest.mark.parametrize("args,kind,word", [
    (([0, 1], [0, 1], 0), "window", "window"),
    (([0, 1], [0, 1], 1.0), "window", "window"),
    (([0.0, 1.0], [0, 1], 2), "positions", "q_pos"),
    (([0, 1], [[0, 1]], 2), "positions", "k_pos"),
    (([0.5, 2 ** 70], [0], None), "positions", "q_pos"),
])
def test_window_mask_rejects(args, kind, word):
    check_error(lambda: swaref.window_mask(*args), kind, word)


def test_every_exception_swaref_defines_derives_from_swaref_error():
    """One exception root: `except swaref.SwarefError` catches every rejection swaref makes."""
    import importlib
    import inspect
    import pkgutil
    found = []
    for info in pkgutil.walk_packages(swaref.__path__, "swaref."):
        if info.name.endswith("__main__"):
            continue
        mod = importlib.import_module(info.name)
        for name, obj in vars(mod).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == mod.__name__:
                found.append(obj)
                assert issubclass(obj, SwarefError), f"{mod.__name__}.{name} does not derive from SwarefError"
    assert SwarefError in found and len(found) >= 3, found


@pytest.mark.parametrize("call,kind", [
    (lambda: swaref.window_mask([[0, 1], [2]], [0], 2), "positions"),
    (lambda: swaref.RollingBufferCache(10 ** 400, 1, 1), "argument"),
    (lambda: load_state(swaref.RollingBufferCache(2, 1, 1), [[0], [1, 2]], np.zeros((2, 1, 1), np.float32),
                        np.zeros((2, 1, 1), np.float32)), "cache"),
])
def test_fuzz_found_inputs_are_swaref_errors(call, kind):
    """Ragged position lists (NumPy's ValueError) and a size too large to print as a float
    (OverflowError in the message) escaped as raw exceptions; found by tests/test_fuzz.py."""
    check_error(call, kind)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("attr,value", [
    ("k", np.ones((1, HKV, D))),                                  # fewer slots: the kernel read past it
    ("v", np.asfortranarray(np.zeros((W, HKV, D)))),              # not C-contiguous: a raw Cython error
    ("positions", np.full(W, -1, dtype=np.int32)),
    ("k", np.zeros((W, HKV, D), dtype=np.float32)),
])
def test_a_cache_array_swapped_behind_swarefs_back_is_refused(attr, value, backend):
    """The compiled kernel reads a cache's buffers in place; since the O(1) ring bounds replaced
    the full scan, the buffers themselves are checked (O(1)) before any call reads or writes them
    (found in review: a 1-slot k reached the kernel)."""
    c = filled_cache()
    setattr(c, attr, value)
    before = snapshot(c)
    check_error(lambda: DS[backend](q2[:1], k2[:1], v2[:1], c), "cache", f"cache.{attr}")
    assert_cache_state(c, *before, name="cache with a swapped buffer")


# ----- the window family (spec 1.1): the same promise for sink-token and chunked caches ----

from swaref import Chunked, Sliding, TwoSided          # noqa: E402

FAMILY = {"sink tokens": (Sliding(3, 2), None), "sink tokens with slack": (Sliding(2, 1), 4),
          "chunked": (Chunked(3), None), "chunked with slack": (Chunked(3), 5)}
N1 = 8          # tokens in the cache when the bad call comes: sinks held, the ring wrapped


def family_cache(window, capacity):
    c = swaref.RollingBufferCache(window, HKV, D, dtype=np.float64, capacity=capacity)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N1, HQ, D))
    swaref.prefill(x, x[:, :HKV], x[:, HKV:], c, chunk_size=[3, 1, 4])
    return c


def _rollback_beyond(c):
    limit = swaref.max_rollback(c)
    n = next(n for n in range(limit + 1, c.n_seen) if swaref.cache._lost_key(c, n) is not None)
    return swaref.rollback(c, n)


def _broken_state(c, how):
    pos = c.positions.copy()
    if how == "sink slot":
        pos[0] = 1 if c.sink_tokens else pos[0]
    elif how == "ring slot":
        pos[c.sink_tokens] += 1
    return load_state(c, pos, c.k.copy(), c.v.copy())


# name: (function of the cache, kind, words); every case runs on every window of FAMILY.
FAMILY_CASES = {
    "prefill k rows != T": (lambda c: swaref.prefill(q2, K[:3], V[:3], c), "shape", ["T = 2"]),
    "prefill D mismatch": (lambda c: swaref.prefill(q2[..., :2], k2[..., :2], v2[..., :2], c), "cache", ["D=2"]),
    "prefill Hq not multiple": (lambda c: swaref.prefill(q2[:, :3], k2, v2, c), "heads", ["q.shape[1] = 3"]),
    "chunk_size 0": (lambda c: swaref.prefill(q2, k2, v2, c, chunk_size=0), "schedule", ["chunk_size"]),
    "schedule sum != T": (lambda c: swaref.prefill(q2, k2, v2, c, chunk_size=[1, 2]), "schedule", ["T = 2"]),
    "start gap": (lambda c: swaref.prefill(q2, k2, v2, c, start=N1 + 1), "positions", ["start", str(N1)]),
    "start back": (lambda c: swaref.decode_step(q2[:1], k2[:1], v2[:1], c, start=1), "positions", ["start"]),
    "scale NaN": (lambda c: swaref.prefill(q2, k2, v2, c, scale=np.nan), "scale", ["scale"]),
    "softcap and sinks": (lambda c: swaref.prefill(q2, k2, v2, c, softcap=1.0, sinks=np.zeros(HQ)), "argument",
                          ["softcap and sinks"]),
    "sinks of the wrong shape": (lambda c: swaref.decode_step(q2[:1], k2[:1], v2[:1], c, sinks=[0.0]), "sinks",
                                 ["sinks"]),
    "decode two tokens": (lambda c: swaref.decode_step(q2, k2, v2, c), "shape", ["decode_step"]),
    "cache_write start back": (lambda c: swaref.cache_write(c, k2, v2, 3), "positions", ["start", "3"]),
    "attend_chunk decode not written": (lambda c: swaref.attend_chunk(q2[:1], k2[:0], v2[:0], c, N1),
                                        "no_visible_key", ["write, then attend"]),
    "attend_chunk start gap": (lambda c: swaref.attend_chunk(q2, k2, v2, c, N1 + 2), "positions", ["start"]),
    "rollback more than written": (lambda c: swaref.rollback(c, N1 + 1), "rollback", ["holds 8 tokens"]),
    "rollback beyond the limit": (_rollback_beyond, "rollback", ["already overwritten"]),
    "load_state ring slot": (lambda c: _broken_state(c, "ring slot"), "cache", ["belongs in slot"]),
    "load_state wrong length": (lambda c: load_state(c, c.positions[1:], c.k, c.v), "cache", ["shape"]),
    "load_state k of another shape": (lambda c: load_state(c, c.positions, c.k[1:], c.v), "cache", ["k", "shape"]),
}


@pytest.mark.parametrize("window", sorted(FAMILY))
@pytest.mark.parametrize("case", sorted(FAMILY_CASES))
def test_family_cache_operations_reject_and_leave_cache_untouched(case, window):
    fn, kind, words = FAMILY_CASES[case]
    c = family_cache(*FAMILY[window])
    before = snapshot(c)
    check_error(lambda: fn(c), kind, *words)
    assert_cache_state(c, *before, name=f"{window} cache after rejected {case}")
    rng = np.random.default_rng(2)
    swaref.decode_step(rng.standard_normal((1, HQ, D)), rng.standard_normal((1, HKV, D)),
                       rng.standard_normal((1, HKV, D)), c)
    assert c.n_seen == N1 + 1 and c.next_position == N1 + 1


def test_load_state_refuses_a_sink_slot_holding_another_position():
    c = family_cache(Sliding(3, 2), None)
    before = snapshot(c)
    check_error(lambda: _broken_state(c, "sink slot"), "cache", "sink slot 0", "own position")
    assert_cache_state(c, *before, name="sink cache after a refused load_state")


@pytest.mark.parametrize("args,kwargs,kind,words", [
    ((TwoSided(1, 1), 2, 3), {"capacity": 4}, "window", ["causal", "TwoSided(left=1, right=1)"]),
    ((TwoSided(None, None), 2, 3), {"capacity": 4}, "window", ["causal"]),
    ((Sliding(3, 1), 2, 3), {"capacity": 2}, "cache", ["capacity", ">= 3"]),
    ((Chunked(4), 2, 3), {"capacity": 3}, "cache", ["capacity", ">= 4"]),
    ((Chunked(4), 2, 3), {"capacity": 4.0}, "cache", ["capacity", "float"]),
    ((Sliding(3, 2 ** 62), 1, 1), {}, "argument", ["bytes"]),
    ((Chunked(2 ** 62), 1, 1), {}, "argument", ["bytes"]),
    (((3, 1), 2, 3), {}, "window", ["Sliding, TwoSided or Chunked", "tuple"]),
])
def test_family_cache_constructor_rejects(args, kwargs, kind, words):
    check_error(lambda: swaref.RollingBufferCache(*args, **kwargs), kind, *words)


@pytest.mark.parametrize("window", [Sliding(3, 1), TwoSided(1, 0), TwoSided(2, 2), Chunked(3)], ids=repr)
def test_attention_with_the_family_rejects_like_spec_10(window):
    """The spec 1.0 checks hold for every window: a few of ATTENTION_CASES with a new window."""
    for over, kind in [({"q": Q[:, :3]}, "heads"), ({"k_pos": [0, 1, 3, 2, 4, 5]}, "positions"),
                       ({"scale": np.inf}, "scale"), ({"softcap": 0.0}, "softcap"),
                       ({"k_pos": np.arange(10, 16), "q_pos": [10, 11, 12, 40]}, "no_visible_key")]:
        check_error(_att(window=window, **over), kind)
