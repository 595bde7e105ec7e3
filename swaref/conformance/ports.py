"""Ports built on swaref's public API: examples of the ``--python`` port interface.

``swaref vectors check SUITE --python swaref.conformance.ports:reference_port``
runs the NumPy reference, ``...:cython_port`` the compiled kernel.  A port is
``fn(inputs, meta) -> {"out", and for traces "cache_pos", "cache_k",
"cache_v"}``; it rejects an input by raising ``SwarefError`` (the runner reads
``.kind``).  docs/conformance.md, "What a port writes", has the contract.
"""
import numpy as np

from .. import windows
from .._validate import check_int
from ..attention import attention
from ..cache import RollingBufferCache, load_state, rollback
from ..errors import SwarefError
from ..prefill import chunk_schedule, decode_step, prefill
from . import safetensors_io as ST


def _scalar_int(inputs, name):
    a = np.asarray(inputs[name])
    if a.size != 1:
        raise SwarefError("argument", f"{name} must hold one integer, got shape {a.shape}")
    return check_int(a.reshape(-1)[0], name)


def _load_initial_state(cache, inputs, floats):
    """Load the case's initial ring (init_pos, init_k, init_v) through swaref's one validated loader.

    The suite names ``init_pos`` a positions input: a ring that breaks rule 4
    (a position outside its slot p mod C, positions not consecutive) is rejected
    with kind "positions", as the negative cases expect; shapes and dtypes are
    checked first so that their kinds stay "shape" and "dtype".
    """
    pos, k, v = np.asarray(inputs["init_pos"]), floats["init_k"], floats["init_v"]
    if pos.shape != (cache.capacity,) or k.shape != cache.k.shape or v.shape != cache.v.shape:
        raise SwarefError("shape", f"init_pos/init_k/init_v must have shapes ({cache.capacity},) and "
                                   f"{cache.k.shape}, got {pos.shape}, {k.shape}, {v.shape}")
    if k.dtype != cache.dtype or v.dtype != cache.dtype:
        raise SwarefError("dtype", f"init_k and init_v must have q's dtype {cache.dtype}, got {k.dtype}, {v.dtype}")
    try:
        load_state(cache, pos, k, v)
    except SwarefError as e:
        raise SwarefError("positions", f"init_pos: {e}") from None


def swaref_port(inputs, meta, backend="reference"):
    """Run one case through swaref's public API.

    inputs: the case's input tensors (BF16 given as exact float32); meta: op,
    dtype, case_id.  -> {"out", and for traces "cache_pos", "cache_k",
    "cache_v"}.  Rejections propagate as SwarefError (the runner reads .kind).
    float16/bfloat16 cases run the compiled backend in float32 (exact upcast).
    """
    dtype = meta["dtype"]
    floats = {n: inputs[n] for n in ("q", "k", "v", "init_k", "init_v") if n in inputs}
    uniform = len({a.dtype for a in floats.values()}) == 1     # mixed dtypes must reach swaref's check
    if uniform and (backend == "cython" or dtype == "bfloat16"):
        floats = {n: a.astype(np.float32) if a.dtype in (np.float16, np.float32) else a
                  for n, a in floats.items()}
    window = window_of(inputs)
    kw = {"scale": float(np.asarray(inputs["scale"]).reshape(-1)[0]) if "scale" in inputs else None,
          "softcap": float(np.asarray(inputs["softcap"]).reshape(-1)[0]) if "softcap" in inputs else None,
          "sinks": inputs.get("sinks"), "backend": backend}
    if meta["op"] == "attention":
        out = attention(floats["q"], floats["k"], floats["v"], window=window, q_pos=inputs["q_pos"],
                        k_pos=inputs["k_pos"], **kw)
        return {"out": _round_out(out, dtype)}
    return _run_trace(inputs, floats, window, kw, dtype)


def window_of(inputs):
    """The case's window as swaref takes it: ``window`` (with ``sink_tokens``: Sliding), ``two_sided``
    (-1: unbounded on that side) or ``attention_chunk``; none of them: None.  At most one kind per case,
    and sink tokens only with a window (kind "window"); bad values are rejected by swaref.windows."""
    kinds = [n for n in ("window", "two_sided", "attention_chunk") if n in inputs]
    if len(kinds) > 1:
        raise SwarefError("window", f"a case gives one window, got {kinds}")
    if "sink_tokens" in inputs and "window" not in inputs:
        raise SwarefError("window", "sink_tokens needs a window (Sliding(W, sink_tokens=n))")
    if "two_sided" in inputs:
        lr = np.asarray(inputs["two_sided"])
        if lr.shape != (2,) or lr.dtype.kind not in "iu":
            raise SwarefError("window", f"two_sided must be two integers (left, right), got shape {lr.shape}")
        left, right = (None if int(x) == -1 else int(x) for x in lr)
        return windows.TwoSided(left, right)
    if "attention_chunk" in inputs:
        return windows.Chunked(_scalar_int(inputs, "attention_chunk"))
    if "window" not in inputs:
        return None
    W = _scalar_int(inputs, "window")
    return windows.Sliding(W, sink_tokens=_scalar_int(inputs, "sink_tokens")) if "sink_tokens" in inputs else W


def _program(inputs, sched, n_decode):
    """The trace's steps as (op, n): the ``steps`` tensor (checked against schedule and n_decode), or the
    schedule's chunks then n_decode decode tokens."""
    if "steps" not in inputs:
        return [(0, n) for n in sched] + [(1, 1)] * n_decode
    st = np.asarray(inputs["steps"])
    if st.ndim != 2 or st.shape[1] != 2 or st.dtype.kind not in "iu":
        raise SwarefError("schedule", f"steps must be integers of shape [n_steps, 2], got {st.shape}")
    prog = [(int(op), int(n)) for op, n in st]
    bad = [(op, n) for op, n in prog if op not in (0, 1, 2) or (op == 1 and n != 1) or n < (op == 0)]
    if bad:
        raise SwarefError("schedule", f"steps rows are (0, n >= 1) prefill, (1, 1) decode or (2, n >= 0) "
                                      f"rollback, got {bad[0]}")
    if [n for op, n in prog if op == 0] != list(sched) or sum(op == 1 for op, _ in prog) != n_decode:
        raise SwarefError("schedule", "steps disagree with schedule and n_decode")
    return prog


def _run_trace(inputs, floats, window, kw, dtype):
    """A prefill/decode case: its steps (prefill chunks, decode tokens, rollbacks) in order."""
    q, k, v = floats["q"], floats["k"], floats["v"]
    start = _scalar_int(inputs, "start")
    n_decode = _scalar_int(inputs, "n_decode")
    N = q.shape[0]
    if k.shape[0] != N or v.shape[0] != N:
        raise SwarefError("shape", f"q, k and v must have one row per token ({N}), got k {k.shape[0]}, "
                                   f"v {v.shape[0]}")
    if not 0 <= n_decode <= N:
        raise SwarefError("shape", f"n_decode must be in 0..{N}, got {n_decode}")
    T = N - n_decode
    cap = _scalar_int(inputs, "capacity")
    ring = window.size if isinstance(window, (windows.Sliding, windows.Chunked)) else window
    cache = RollingBufferCache(window, k.shape[1], k.shape[2], dtype=q.dtype,
                               capacity=cap if ring is None or cap != ring else None)
    sched = chunk_schedule(T, [int(c) for c in np.asarray(inputs["schedule"]).reshape(-1)], window) if T else []
    prog = _program(inputs, sched, n_decode)
    if "init_pos" in inputs:
        _load_initial_state(cache, inputs, floats)
    if cache.next_position is not None and start != cache.next_position:
        raise SwarefError("positions", f"the cache continues at {cache.next_position}, got start={start}")
    outs, pos, ks, vs = [], [], [], []
    a, nxt = 0, start
    for op, n in prog:
        sl = slice(a, a + n)
        if op == 2:
            rollback(cache, n)
            nxt -= n
        elif op == 0:
            outs.append(prefill(q[sl], k[sl], v[sl], cache, chunk_size=n, start=nxt, **kw))
        else:
            outs.append(decode_step(q[sl], k[sl], v[sl], cache, start=nxt, **kw))
        pos.append(cache.positions.copy())
        ks.append(cache.k.copy())
        vs.append(cache.v.copy())
        if op != 2:
            a, nxt = a + n, nxt + n
    return {"out": _round_out(np.concatenate(outs), dtype), "cache_pos": np.stack(pos),
            "cache_k": np.stack(ks), "cache_v": np.stack(vs)}


def _round_out(out, dtype):
    """The port's last step: round the output to the case dtype (bfloat16 kept as exact float32)."""
    if dtype == "bfloat16":
        return ST.bf16_to_f32(ST.f32_to_bf16(out.astype(np.float32)))
    return out.astype(dtype)


def reference_port(inputs, meta):
    """swaref's NumPy reference as a port (``--python swaref.conformance.ports:reference_port``)."""
    return swaref_port(inputs, meta, backend="reference")


def cython_port(inputs, meta):
    """swaref's compiled kernel as a port (``--python swaref.conformance.ports:cython_port``)."""
    return swaref_port(inputs, meta, backend="cython")
