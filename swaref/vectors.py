"""Golden test vectors for ports of swaref, and the judge that checks a port's results.

A *suite* is a folder with ``manifest.json`` and one ``<case_id>.safetensors``
per case (docs/conformance.md describes every field).  Each case file holds the
inputs and the golden results (names starting with ``expected.``).  Golden
outputs are computed in float64 from the exact stored inputs with swaref's
NumPy reference; cache states come from swaref's RollingBufferCache.

For every valid case the generator also runs known-wrong variants of the
algorithm (window W+1 and W-1, write-before-attend in chunked prefill, a ring
that never wraps, a wrong softmax scale, a position offset ignored when
choosing slots, stale cached keys leaking past the window) and records by how
many tolerance units each misses.  Inputs are made adversarial for that: for
one query per variant, the key the variant wrongly adds or drops gets a large
logit and a distinct value.  A variant that changes which keys a query sees
(or the cache) but would still pass the tolerance is a generator error.

Module layout: dtype helpers; the case list (``CaseSpec``, ``core_cases``,
``full_cases``); the simulators of the correct and the wrong algorithms; the
generator (``generate_suite``); the ports built on swaref (``reference_port``,
``cython_port``); the judge and the runner (``check_suite``).
"""
import dataclasses
import hashlib
import json
import math
import os
import shlex
import subprocess
import tempfile
import traceback

import numpy as np

from . import _safetensors as ST
from .errors import ERROR_KINDS, SwarefError

FORMAT = "swaref-vectors"
FORMAT_VERSION = 1
SUITES = ("core", "full")

# --------------------------------------------------------------------------
# dtypes: names, storage, unit roundoff
# --------------------------------------------------------------------------

#: case dtype -> (safetensors name, unit roundoff of the output dtype u_out)
DTYPES = {
    "float16": ("F16", 2.0 ** -11),
    "bfloat16": ("BF16", 2.0 ** -8),
    "float32": ("F32", 2.0 ** -24),
    "float64": ("F64", 2.0 ** -53),
}
SHORT = {"float16": "f16", "bfloat16": "bf16", "float32": "f32", "float64": "f64"}
#: safetensors names a result may use for a float tensor of a case dtype: the dtype itself or wider.
ACCEPTED_FLOAT = {
    "F16": ("F16", "F32", "F64"), "BF16": ("BF16", "F32", "F64"),
    "F32": ("F32", "F64"), "F64": ("F64",),
}

#: Tolerance model (docs/conformance.md, "Tolerances").  A conforming port
#: computes in at least float32 (float64 for float64 cases) and rounds its
#: output to the case dtype or keeps it wider.
U_ACC = {"float16": 2.0 ** -24, "bfloat16": 2.0 ** -24, "float32": 2.0 ** -24, "float64": 2.0 ** -53}
#: Safety factor over the error model (calibration in docs/conformance.md).
SAFETY = 4.0
#: A wrong variant must miss by at least this many tolerance units.
MIN_MISS = 4.0


def quantize(x, dtype):
    """float64 values -> float64 holding the nearest values of ``dtype`` (exact round trip)."""
    x = np.asarray(x, dtype=np.float64)
    if dtype == "bfloat16":
        return ST.bf16_to_f32(ST.f32_to_bf16(x.astype(np.float32))).astype(np.float64)
    return x.astype(dtype).astype(np.float64)


def to_storage(x, dtype):
    """float64 values of ``dtype`` -> (array to store, safetensors dtype name)."""
    name = DTYPES[dtype][0]
    if dtype == "bfloat16":
        return ST.f32_to_bf16(np.asarray(x, dtype=np.float32)), name
    return np.asarray(x).astype(dtype), name


def poison_value(i, dtype):
    """The i-th poison value: NaN, +Inf, -Inf, a huge finite value (1e30, or 65504 in float16)."""
    huge = 65504.0 if dtype == "float16" else 1e30
    return (math.nan, math.inf, -math.inf, huge)[i % 4]


def seed_of(case_id):
    """The RNG seed of a case: derived from its id, never from generation order."""
    return int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:8], "little")


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else "nan")
    return x


# --------------------------------------------------------------------------
# The case list
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CaseSpec:
    """Parameters of one case; its id is built from them.

    op: "attention" (one-shot with explicit positions), "prefill" (chunked,
    n_decode = 0) or "decode" (chunked prefill of a prompt, then n_decode
    single-token steps).  attention: T queries at the last T of S key
    positions starting at ``start`` (with ``gaps``, keys skip positions).
    prefill/decode: tokens at start, start+1, ...; ``hist`` tokens of history
    (start-hist .. start-1) are handed over as an initial cache state.
    ``error`` names a negative case (see ``_NEGATIVE``).
    """
    op: str
    dtype: str = "float32"
    Hq: int = 2
    Hkv: int = 1
    D: int = 8
    window: object = 4
    T: int = 8
    S: int = 0
    start: int = 0
    gaps: bool = False
    schedule: tuple = ()
    n_decode: int = 0
    hist: int = 0
    capacity: int = 0
    scale: object = None
    poison: bool = False
    error: str = ""

    @property
    def case_id(self):
        w = "none" if self.window is None else str(self.window)
        parts = [self.op if not self.error else "neg-" + self.error, SHORT[self.dtype], "w" + w,
                 f"h{self.Hq}x{self.Hkv}", f"d{self.D}"]
        if self.op == "attention":
            parts += [f"t{self.T}", f"s{self.S or self.T}"]
        else:
            parts += [f"t{self.T}", "c" + "-".join(str(c) for c in self.schedule)]
            if self.n_decode:
                parts.append(f"dec{self.n_decode}")
            if self.hist:
                parts.append(f"hist{self.hist}")
            if self.capacity:
                parts.append(f"cap{self.capacity}")
        if self.start:
            parts.append(f"p{self.start}")
        if self.gaps:
            parts.append("gaps")
        if self.scale is not None:
            parts.append("scale" + repr(float(self.scale)))
        if self.poison:
            parts.append("poison")
        return "_".join(parts)

    @property
    def n_tokens(self):
        return self.T + self.n_decode


_DT4 = ("float32", "float16", "bfloat16", "float64")
_HEADS4 = ((2, 1), (2, 2), (4, 1), (4, 2))


def core_cases():
    """The small suite every port (and the test suite) runs: about 80 cases."""
    cases = []
    i = 0
    for W in (1, 2, 3, 5, 8):
        for T in sorted({1, max(1, W - 1), W, W + 1, 2 * W + 3}):
            Hq, Hkv = _HEADS4[i % 4]
            cases.append(CaseSpec("attention", _DT4[i % 4], Hq, Hkv, (4, 8, 3, 16)[i % 4], W, T, T))
            i += 1
    A = CaseSpec("attention")
    cases += [
        dataclasses.replace(A, window=16, T=6, S=6),                                # W > T
        dataclasses.replace(A, window=None, T=7, S=7, dtype="bfloat16"),            # plain causal
        dataclasses.replace(A, Hq=8, Hkv=1, D=16, window=3, T=9, S=9),              # multi-query
        dataclasses.replace(A, Hq=8, Hkv=2, D=8, window=4, T=10, S=10, dtype="float16"),  # GQA 4
        dataclasses.replace(A, Hq=1, Hkv=1, D=1, window=3, T=8, S=8),               # D = 1
        dataclasses.replace(A, Hq=2, Hkv=1, D=256, window=3, T=6, S=6, dtype="float64"),
        dataclasses.replace(A, Hq=4, Hkv=2, D=128, window=5, T=7, S=9, dtype="bfloat16"),
        dataclasses.replace(A, window=4, T=9, S=12, start=2 ** 40 + 3),             # large offset
        dataclasses.replace(A, window=5, T=6, S=11, gaps=True, dtype="float64"),    # gaps in positions
        dataclasses.replace(A, window=4, T=8, S=8, scale=0.3),
        dataclasses.replace(A, window=3, T=7, S=7, scale=2.0, dtype="float16"),
        dataclasses.replace(A, window=4, T=5, S=14, poison=True),
        dataclasses.replace(A, window=3, T=4, S=10, poison=True, dtype="float16", start=17),
        dataclasses.replace(A, window=2, T=3, S=9, poison=True, dtype="bfloat16"),
    ]
    P = CaseSpec("prefill")
    cases += [
        dataclasses.replace(P, window=4, T=11, schedule=(3, 2, 5, 1)),
        dataclasses.replace(P, window=5, T=13, schedule=(1, 4, 6, 2), start=7, dtype="float16"),
        dataclasses.replace(P, window=3, T=10, schedule=(10,), dtype="bfloat16"),
        dataclasses.replace(P, window=4, T=9, schedule=(2, 2, 2, 2, 1), dtype="float64"),
        dataclasses.replace(P, window=None, T=7, schedule=(3, 4), capacity=9),
        dataclasses.replace(P, window=2, T=7, schedule=(1, 1, 3, 2), dtype="bfloat16"),
        dataclasses.replace(P, Hq=8, Hkv=2, D=32, window=6, T=15, schedule=(5, 7, 3)),
        dataclasses.replace(P, Hq=4, Hkv=4, window=4, T=9, schedule=(3, 3, 3), start=2 ** 33 + 5,
                            dtype="float16"),
        dataclasses.replace(P, window=4, T=5, schedule=(2, 3), start=20, hist=4, poison=True),
        dataclasses.replace(P, window=5, T=6, schedule=(1, 2, 3), start=2, hist=2, poison=True,
                            dtype="bfloat16"),
    ]
    Dd = CaseSpec("decode")
    cases += [
        dataclasses.replace(Dd, window=4, T=5, schedule=(2, 3), n_decode=13),
        dataclasses.replace(Dd, window=3, T=4, schedule=(4,), n_decode=10, start=1000003, dtype="float16"),
        dataclasses.replace(Dd, window=1, T=2, schedule=(1, 1), n_decode=5, dtype="bfloat16"),
        dataclasses.replace(Dd, Hq=4, Hkv=1, window=8, T=3, schedule=(3,), n_decode=20, dtype="float64"),
        dataclasses.replace(Dd, window=5, T=2, schedule=(2,), n_decode=12, start=3, hist=3, poison=True),
        dataclasses.replace(Dd, window=None, T=3, schedule=(3,), n_decode=4, capacity=7, dtype="float16"),
        dataclasses.replace(Dd, D=64, window=4, T=6, schedule=(4, 2), n_decode=9, dtype="bfloat16"),
        dataclasses.replace(Dd, Hq=3, Hkv=3, D=5, window=2, T=1, schedule=(1,), n_decode=9, start=6),
    ]
    return cases + negative_cases()


def full_cases():
    """The larger suite: the core plus a product of windows, lengths, heads, dims, dtypes, schedules."""
    cases = list(core_cases())
    rng = np.random.default_rng(20231010)          # fixed: the case list is part of the suite
    i = 0
    for W in (1, 2, 3, 4, 7, 16, 64):
        for T in sorted({1, max(1, W - 1), W, W + 1, 2 * W + 3, 4 * W + 1}):
            if T > 200:
                continue
            for dt in _DT4:
                Hq, Hkv = ((4, 4), (4, 2), (8, 2), (8, 1))[i % 4]
                D = (2, 16, 64, 128, 256, 1)[i % 6]
                i += 1
                cases.append(CaseSpec("attention", dt, Hq, Hkv, D, W, T, T + (i % 3) * W,
                                      start=(0, 5, 2 ** 31 + 1)[i % 3]))
                if T >= 2:
                    sched = _random_schedule(rng, T)
                    cases.append(CaseSpec("prefill", dt, Hq, Hkv, D, W, T, schedule=sched,
                                          start=(0, W + 1, 12345)[i % 3]))
                if T <= 3 * W + 3:
                    cases.append(CaseSpec("decode", dt, Hq, Hkv, D, W, T, schedule=_random_schedule(rng, T),
                                          n_decode=min(3 * W + 2, 150), start=(0, 3)[i % 2]))
    for dt in _DT4:
        cases.append(CaseSpec("decode", dt, 4, 2, 32, 16, 20, schedule=(7, 9, 4), n_decode=100))
        cases.append(CaseSpec("attention", dt, 4, 2, 16, 8, 6, 30, poison=True))
        cases.append(CaseSpec("prefill", dt, 4, 2, 16, 8, 12, schedule=(5, 7), start=40, hist=8, poison=True))
        cases.append(CaseSpec("prefill", dt, 4, 1, 16, None, 12, schedule=(5, 7), capacity=12))
    seen = {}
    for c in cases:
        seen.setdefault(c.case_id, c)
    return list(seen.values())


def _random_schedule(rng, T):
    out = []
    while sum(out) < T:
        out.append(int(min(T - sum(out), rng.integers(1, max(2, T // 2 + 1)))))
    return tuple(out)


#: Negative cases: name -> (base spec, expected error kinds).  Inputs are built by _negative_inputs.
_NEGATIVE = {
    "window-zero": ("attention", ("window",)),
    "window-negative": ("attention", ("window",)),
    "head-dim-mismatch": ("attention", ("shape",)),
    "kv-length-mismatch": ("attention", ("shape",)),
    "qpos-length-mismatch": ("attention", ("positions",)),
    "heads-not-multiple": ("attention", ("heads",)),
    "mixed-dtypes": ("attention", ("dtype",)),
    "kpos-not-increasing": ("attention", ("positions",)),
    "no-visible-key": ("attention", ("no_visible_key",)),
    "schedule-sum": ("prefill", ("schedule",)),
    "schedule-zero-chunk": ("prefill", ("schedule",)),
    "cache-positions-out-of-order": ("prefill", ("positions",)),
    "cache-start-not-consecutive": ("decode", ("positions",)),
    "prefill-window-zero": ("prefill", ("window",)),
    "prefill-kv-length-mismatch": ("prefill", ("shape",)),
}


def negative_cases():
    out = []
    for name, (op, _) in _NEGATIVE.items():
        if op == "attention":
            out.append(CaseSpec(op, "float32", 2, 1, 4, 3, 5, 5, error=name))
        else:
            out.append(CaseSpec(op, "float32", 2, 1, 4, 3, 6, schedule=(2, 4), hist=3 if "cache" in name else 0,
                                start=3 if "cache" in name else 0, n_decode=2 if op == "decode" else 0,
                                error=name))
    return out


def cases_of(suite):
    if suite == "core":
        return core_cases()
    if suite == "full":
        return full_cases()
    raise ValueError(f"unknown suite {suite!r}; known: {SUITES}")


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------

class Problem:
    """One valid case's inputs in float64 (exact values of the case dtype) plus its key table.

    The key table holds every key any query may see, in increasing position:
    for attention the S keys; for a trace the ``hist`` history keys, then the
    N tokens (query t of a trace is key hist + t).
    q: [Nq, Hq, D], k, v: [Nk, Hkv, D] float64; kpos: [Nk], qpos: [Nq] int64;
    poisoned: [Nk] bool (keys holding NaN/Inf/huge values).
    """

    def __init__(self, spec, rng):
        self.spec = spec
        s = spec
        self.scale = 1.0 / math.sqrt(s.D) if s.scale is None else float(s.scale)
        if s.op == "attention":
            S = s.S or s.T
            step = rng.integers(1, 4, size=S) if s.gaps else np.ones(S, dtype=np.int64)
            self.kpos = (s.start + np.cumsum(step) - step[0]).astype(np.int64)
            self.qpos = self.kpos[S - s.T:].copy()
            self.hist = 0
        else:
            self.hist = s.hist
            self.kpos = np.arange(s.start - s.hist, s.start + s.n_tokens, dtype=np.int64)
            self.qpos = self.kpos[s.hist:].copy()
        Nk, Nq = len(self.kpos), len(self.qpos)
        self.q = rng.standard_normal((Nq, s.Hq, s.D))
        self.k = rng.standard_normal((Nk, s.Hkv, s.D))
        self.v = rng.standard_normal((Nk, s.Hkv, s.D))
        self.poisoned = np.zeros(Nk, dtype=bool)
        self.capacity = s.capacity or s.window
        self.empty_garbage = None

    def quantize(self):
        d = self.spec.dtype
        self.q, self.k, self.v = quantize(self.q, d), quantize(self.k, d), quantize(self.v, d)

    def visible_golden(self):
        """Per query, the key-table indices it sees under spec rule 1."""
        W = self.spec.window
        out = []
        for p in self.qpos:
            m = self.kpos <= p
            if W is not None:
                m &= self.kpos > p - W
            out.append(tuple(np.nonzero(m)[0].tolist()))
        return out


def _poison(prob, gold_vis):
    """Put NaN/Inf/huge values into keys no query sees (and, for traces, into the empty slots)."""
    seen = set(j for vis in gold_vis for j in vis)
    bad = [j for j in range(len(prob.kpos)) if j not in seen]
    has_empty = prob.spec.op != "attention" and prob.hist < prob.capacity
    if not bad and not has_empty:
        raise GeneratorError(f"{prob.spec.case_id}: a poison case needs keys outside every window")
    for n, j in enumerate(bad):
        val = poison_value(n, prob.spec.dtype)
        prob.k[j] = val
        prob.v[j] = poison_value(n + 1, prob.spec.dtype)
        prob.poisoned[j] = True
    if has_empty:
        prob.empty_garbage = math.nan


class GeneratorError(RuntimeError):
    """The generator produced a case that would not catch a bug it must catch (or is inconsistent)."""


# --------------------------------------------------------------------------
# Simulators: the correct algorithm and its known-wrong variants
# --------------------------------------------------------------------------

WRONG_VARIANTS = ("window_plus_1", "window_minus_1", "write_before_attend", "no_wrap",
                  "wrong_scale", "ignored_position_offset", "stale_slot_leak")


def wrong_scale_of(prob):
    """The scale a 'wrong scale' port uses: the default when the case gives one, else no scaling (1.0)."""
    s = prob.spec
    if s.scale is not None:
        return 1.0 / math.sqrt(s.D) if abs(1.0 / math.sqrt(s.D) - prob.scale) > 1e-9 else 2.0 * prob.scale
    return 1.0 if s.D > 1 else 2.0


def simulate_attention(prob, bug=None):
    """-> (visible key indices per query, scale) of a one-shot attention port with ``bug``."""
    W = prob.spec.window
    kpos, qpos = prob.kpos, prob.qpos
    if bug == "ignored_position_offset":        # the port numbers keys 0..S-1 and queries as the last T
        S, T = len(kpos), len(qpos)
        kpos = np.arange(S)
        qpos = kpos[S - T:]
    if W is not None and bug == "window_plus_1":
        W += 1
    elif W is not None and bug == "window_minus_1":
        W -= 1
    vis = []
    for p in qpos:
        m = kpos <= p
        if W is not None:
            m &= kpos > p - W
        vis.append(tuple(np.nonzero(m)[0].tolist()))
    scale = wrong_scale_of(prob) if bug == "wrong_scale" else prob.scale
    return vis, scale, None


def simulate_trace(prob, bug=None):
    """Run a prefill/decode trace through a ring of C slots the way a port with ``bug`` would.

    -> (visible key-table indices per query, scale, states) where states[i] is the
    slot -> key-table index map (-1 empty) after step i.  Key-table index j holds
    position prob.kpos[j], so equal maps mean equal slot positions and contents.
    """
    s = prob.spec
    C = prob.capacity
    W = s.window
    if W is not None and bug == "window_plus_1":
        W += 1
    elif W is not None and bug == "window_minus_1":
        W -= 1
    base = int(prob.kpos[0])
    slot = np.full(C, -1, dtype=np.int64)
    stored = 0

    def write(idx):
        nonlocal stored
        for j in idx[max(0, len(idx) - C):]:
            if bug == "no_wrap" and stored >= C:
                continue                           # the ring is full and never wraps: the write is lost
            p = int(prob.kpos[j])
            sl = (p - base) % C if bug == "ignored_position_offset" else p % C
            slot[sl] = j
            stored += 1

    write(list(range(prob.hist)))
    steps = list(s.schedule) + [1] * s.n_decode
    vis, states = [], []
    a = 0
    for i, n in enumerate(steps):
        chunk = list(range(prob.hist + a, prob.hist + a + n))
        write_first = i >= len(s.schedule) or bug == "write_before_attend"
        if write_first:
            write(chunk)
        cached = [int(j) for j in slot if j >= 0]
        for t in range(a, a + n):
            p = int(prob.qpos[t])
            cand = cached + ([] if write_first else chunk)
            seen = []
            for j in cand:
                kp = int(prob.kpos[j])
                if kp > p:
                    continue
                leak = bug == "stale_slot_leak" and j in cached
                if W is None or kp > p - W or leak:
                    seen.append(j)
            vis.append(tuple(sorted(set(seen))))
        if not write_first:
            write(chunk)
        states.append(slot.copy())
        a += n
    scale = wrong_scale_of(prob) if bug == "wrong_scale" else prob.scale
    return vis, scale, states


def simulate(prob, bug=None):
    if prob.spec.op == "attention":
        return simulate_attention(prob, bug)
    return simulate_trace(prob, bug)


def _softmax_rows(prob, vis, scale):
    """Outputs of every query over its visible keys, float64; a query that sees nothing gives NaN."""
    from .attention import softmax_attend
    s = prob.spec
    out = np.empty((len(prob.qpos), s.Hq, s.D))
    with np.errstate(all="ignore"):
        for t, idx in enumerate(vis):
            if not idx:
                out[t] = np.nan
                continue
            idx = list(idx)
            out[t] = softmax_attend(prob.q[t], prob.k[idx], prob.v[idx], scale)
    return out


def _row_tolerance(prob, vis):
    """atol per query row: SAFETY * vmax * (u_out + u_acc * (2 * sqrt(D) * A + n + 2)).

    vmax = max |v| over the row's visible keys, A = scale * max over heads and
    visible keys of sum_d |q_d| |k_d| (a bound on |logit|), n = visible keys.
    docs/conformance.md derives it.
    """
    s = prob.spec
    u_out, u_acc = DTYPES[s.dtype][1], U_ACC[s.dtype]
    G = s.Hq // s.Hkv
    atol = np.empty(len(vis))
    for t, idx in enumerate(vis):
        idx = list(idx)
        vmax = np.abs(prob.v[idx]).max()
        qa = np.abs(prob.q[t]).reshape(s.Hkv, G, s.D)
        ka = np.abs(prob.k[idx])                                     # [n, Hkv, D]
        A = abs(prob.scale) * np.einsum("hgd,nhd->hgn", qa, ka).max()
        atol[t] = SAFETY * vmax * (u_out + u_acc * (2.0 * math.sqrt(s.D) * A + len(idx) + 2))
    return atol


# --------------------------------------------------------------------------
# Adversarial boosting
# --------------------------------------------------------------------------

#: Norm of a boosted key along its direction, and the magnitude of its distinct value.
BOOST_KEY = 12.0
BOOST_VALUE = 3.5
#: Logit of the anchor key that makes an 'extra' witness sensitive to the softmax scale.
ANCHOR_LOGIT = 2.4


def _differences(gold_vis, var_vis):
    """[(query, key, 'extra'|'missing')] where a variant's visible sets differ from the golden ones."""
    out = []
    for t, (g, w) in enumerate(zip(gold_vis, var_vis)):
        g, w = set(g), set(w)
        out += [(t, j, "extra") for j in sorted(w - g)]
        out += [(t, j, "missing") for j in sorted(g - w)]
    return out


def _boost(prob, witnesses, gold_vis, variant_vis):
    """Make each witness key stand out for its query, then re-quantize.

    A witness query points along one axis d (its own); every other key it may
    see (under the golden rule or a variant) gets 0 on that axis, so their
    logits are exactly 0, and each of its witness keys gets logit
    L = ln(n) + 1 (n = keys seen) and the value +-3.5 in every component
    (signs alternate).  Such a weight (about 0.7 for one key) is large enough
    that adding or dropping the key moves the output by about |v|, and
    moderate enough that a wrong softmax scale moves it too.  An 'extra'
    witness that must also expose a wrong scale gives one golden key (the
    anchor) logit 2.4, where a two-way softmax is most sensitive to the scale.
    """
    s = prob.spec
    by_query = {}
    for t, j, kind, var in witnesses:
        by_query.setdefault(t, []).append((j, kind, var))
    n_val = 0
    for n, (t, ws) in enumerate(by_query.items()):
        d = n % s.D
        seen = set(gold_vis[t])
        for _, _, var in ws:
            seen |= set(variant_vis.get(var, gold_vis)[t])
        L = math.log(max(len(seen), 2)) + 1.0
        anchor = None
        if any(kind == "extra+scale" for _, kind, _ in ws):
            anchor = [a for a in gold_vis[t] if not prob.poisoned[a]][-1]
            L += ANCHOR_LOGIT
        prob.q[t] = 0.0
        prob.q[t, :, d] = L / (prob.scale * BOOST_KEY)
        keys = {j for j, _, _ in ws}
        for other in seen - keys:
            if not prob.poisoned[other]:
                prob.k[other, :, d] = 0.0
        for j in sorted(keys):
            prob.k[j, :, d] = BOOST_KEY
            prob.v[j] = (1.0 if n_val % 2 == 0 else -1.0) * BOOST_VALUE
            n_val += 1
        if anchor is not None and anchor not in keys:
            prob.k[anchor, :, d] = BOOST_KEY * ANCHOR_LOGIT / L
            prob.v[anchor] = (1.0 if n_val % 2 == 0 else -1.0) * BOOST_VALUE
            n_val += 1
    prob.quantize()


def _pick_witnesses(prob, gold_vis, variant_vis, want_scale):
    """(query, key, kind, variant) witnesses: one per variant whose visibility differs, plus one for the scale.

    A query may host several witness keys; a witness key must not be visible
    to another witness query, and a witness query must not see another
    query's witness key, so boosts do not interfere.
    """
    chosen = []

    def sees(t, var=None):
        out = set(gold_vis[t])
        for c in chosen:
            if c[0] == t:
                out |= set(variant_vis.get(c[3], gold_vis)[t])
        if var is not None:
            out |= set(variant_vis.get(var, gold_vis)[t])
        return out

    def free(t, j, var):
        for u, k, _, _ in chosen:
            if k == j and u != t:
                return False
            if u != t and (j in sees(u) or k in sees(t, var)):
                return False
        return True

    for name, vis in variant_vis.items():
        diffs = _differences(gold_vis, vis)
        if not diffs or any(prob.poisoned[j] for _, j, _ in diffs):
            continue                               # no change, or a poisoned key reaches it: NaN/Inf miss
        if any((c[0], c[1], c[2]) in diffs for c in chosen):
            continue
        hosts = {c[0] for c in chosen}
        ok = [w for w in diffs if free(w[0], w[1], name)]
        ok.sort(key=lambda w: (w[0] in hosts, w[0]))     # prefer sharing a query already boosted
        if ok:
            t, j, kind = ok[-1]
            chosen.append((t, j, kind, name))
    # The wrong scale needs a query whose golden softmax has two distinct logits: a 'missing'
    # witness has them; otherwise a free query, or else an 'extra' witness with an anchor key.
    if want_scale and not any(c[2] == "missing" and len(gold_vis[c[0]]) >= 2 for c in chosen):
        for t in reversed(range(len(gold_vis))):
            js = [j for j in gold_vis[t] if not prob.poisoned[j]]
            if len(gold_vis[t]) >= 2 and js and free(t, js[-1], None):
                chosen.append((t, js[-1], "missing", None))
                break
        else:
            for i, c in enumerate(chosen):
                if c[2] == "extra" and len(gold_vis[c[0]]) >= 2 and any(
                        not prob.poisoned[a] for a in gold_vis[c[0]]):
                    chosen[i] = (c[0], c[1], "extra+scale", c[3])
                    break
    return chosen


# --------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------

def _golden_swaref(prob):
    """Golden outputs and cache states from swaref's public NumPy reference on float64 copies."""
    import swaref
    s = prob.spec
    q, k, v = prob.q, prob.k, prob.v
    if s.op == "attention":
        out = swaref.attention(q, k, v, window=s.window, q_pos=prob.qpos, k_pos=prob.kpos,
                               scale=s.scale)
        return out, None
    cache = swaref.RollingBufferCache(s.window, s.Hkv, s.D, dtype=np.float64,
                                      capacity=prob.capacity if s.window is None else None)
    if prob.hist:
        swaref.prefill(np.zeros((prob.hist, s.Hq, s.D)), k[:prob.hist], v[:prob.hist], cache,
                       start=int(prob.kpos[0]), chunk_size=prob.hist)
    h = prob.hist
    outs, states = [], []
    a = 0
    for n in s.schedule:
        outs.append(swaref.prefill(q[a:a + n], k[h + a:h + a + n], v[h + a:h + a + n], cache,
                                   chunk_size=n, start=int(prob.qpos[a]), scale=s.scale))
        states.append((cache.positions.copy(), cache.k.copy(), cache.v.copy()))
        a += n
    for _ in range(s.n_decode):
        outs.append(swaref.decode_step(q[a:a + 1], k[h + a:h + a + 1], v[h + a:h + a + 1], cache,
                                       start=int(prob.qpos[a]), scale=s.scale))
        states.append((cache.positions.copy(), cache.k.copy(), cache.v.copy()))
        a += 1
    return np.concatenate(outs), states


def _input_tensors(prob):
    """Name -> (array, dtype name) of a valid case's inputs as stored."""
    s = prob.spec
    t = {}
    h = prob.hist

    def fl(name, x):
        t[name] = to_storage(x, s.dtype)

    def i64(name, x):
        t[name] = (np.asarray(x, dtype=np.int64), "I64")

    if s.op == "attention":
        fl("q", prob.q)
        fl("k", prob.k)
        fl("v", prob.v)
        i64("q_pos", prob.qpos)
        i64("k_pos", prob.kpos)
    else:
        fl("q", prob.q)
        fl("k", prob.k[h:])
        fl("v", prob.v[h:])
        i64("start", s.start)
        i64("schedule", list(s.schedule))
        i64("n_decode", s.n_decode)
        i64("capacity", prob.capacity)
        if h:
            C = prob.capacity
            ik = np.zeros((C, s.Hkv, s.D))
            iv = np.zeros((C, s.Hkv, s.D))
            if prob.empty_garbage is not None:
                ik[:] = prob.empty_garbage
                iv[:] = prob.empty_garbage
            ipos = np.full(C, -1, dtype=np.int64)
            for j in range(h):
                sl = int(prob.kpos[j]) % C
                ik[sl], iv[sl], ipos[sl] = prob.k[j], prob.v[j], prob.kpos[j]
            fl("init_k", ik)
            fl("init_v", iv)
            i64("init_pos", ipos)
    if s.window is not None:
        i64("window", s.window)
    if s.scale is not None:
        t["scale"] = (np.asarray(float(s.scale), dtype=np.float64), "F64")
    return t


def build_case(spec):
    """-> (tensors {name: (array, dtype name)}, manifest entry without file hash) of a valid case."""
    if spec.error:
        return _negative_case(spec)
    rng = np.random.default_rng(seed_of(spec.case_id))
    prob = Problem(spec, rng)
    prob.quantize()
    gold_vis = prob.visible_golden()
    if spec.poison:
        _poison(prob, gold_vis)
    applicable = [b for b in WRONG_VARIANTS if _applicable(prob, b)]
    sims = {b: simulate(prob, b) for b in applicable}
    vis_change = {b: sims[b][0] for b in applicable if sims[b][0] != gold_vis}
    _boost(prob, _pick_witnesses(prob, gold_vis, vis_change, "wrong_scale" in applicable),
           gold_vis, vis_change)

    # Golden results from swaref; the simulator of the correct algorithm must agree.
    out, states = _golden_swaref(prob)
    sim_vis, _, sim_states = simulate(prob, None)
    if sim_vis != gold_vis:
        raise GeneratorError(f"{spec.case_id}: simulator visibility disagrees with rule 1")
    sim_out = _softmax_rows(prob, gold_vis, prob.scale)
    atol = _row_tolerance(prob, gold_vis)
    if not np.isfinite(out).all():
        raise GeneratorError(f"{spec.case_id}: golden output is not finite (poison reached it)")
    if (np.abs(sim_out - out).max(axis=(1, 2)) > 1e-3 * atol).any():
        raise GeneratorError(f"{spec.case_id}: simulator and swaref disagree")
    if states is not None:
        for i, (pos, _, _) in enumerate(states):
            want = np.where(sim_states[i] >= 0, prob.kpos[np.maximum(sim_states[i], 0)], -1)
            if not np.array_equal(pos, want):
                raise GeneratorError(f"{spec.case_id}: simulated cache disagrees with swaref at step {i}")

    # Every applicable wrong variant must miss by MIN_MISS tolerance units or change the cache.
    variants = {}
    for b in WRONG_VARIANTS:
        if b not in applicable:
            variants[b] = {"applicable": False}
            continue
        vis, scale, st = simulate(prob, b)
        wrong = _softmax_rows(prob, vis, scale)
        with np.errstate(invalid="ignore"):
            units = np.abs(wrong - out) / atol[:, None, None]
        units = np.where(np.isnan(units), np.inf, units)
        miss = float(units.max())
        cache_steps = 0
        first_step = None
        if st is not None:
            for i, (g, w) in enumerate(zip(sim_states, st)):
                if not np.array_equal(g, w):
                    cache_steps += 1
                    first_step = i if first_step is None else first_step
        if miss < MIN_MISS and cache_steps == 0:
            raise GeneratorError(
                f"{spec.case_id}: wrong variant {b} would pass (misses by {miss:.2f} tolerance units, "
                f"cache unchanged)")
        variants[b] = {"applicable": True, "output_miss_units": _jsonable(round(miss, 2) if math.isfinite(miss)
                                                                           else miss),
                       "cache_steps_wrong": cache_steps, "first_wrong_step": first_step}

    tensors = _input_tensors(prob)
    tensors["expected.out"] = (out, "F64")
    tensors["expected.out_atol"] = (atol, "F64")
    if states is not None:
        tensors["expected.cache_pos"] = (np.stack([p for p, _, _ in states]), "I64")
        tensors["expected.cache_k"] = to_storage(np.stack([k for _, k, _ in states]), spec.dtype)
        tensors["expected.cache_v"] = to_storage(np.stack([v for _, _, v in states]), spec.dtype)
    entry = _entry(spec)
    entry["wrong_variants"] = variants
    entry["tolerance"] = {
        "out": {"rule": "abs(actual - expected) <= expected.out_atol[row]",
                "max_atol": float(atol.max()), "min_atol": float(atol.min())},
    }
    if states is not None:
        entry["tolerance"].update({"cache_pos": "exact", "cache_k": "exact (valid slots)",
                                   "cache_v": "exact (valid slots)"})
    return tensors, entry


def _applicable(prob, bug):
    s = prob.spec
    if s.op == "attention" and bug in ("write_before_attend", "no_wrap", "stale_slot_leak"):
        return False
    if s.window is None and bug in ("window_plus_1", "window_minus_1", "stale_slot_leak"):
        return False
    if bug == "no_wrap" and s.window is None:
        return False
    gold_vis, _, gold_st = simulate(prob, None)
    if bug == "wrong_scale":                       # the scale only matters where a query sees two keys
        return any(len(v) >= 2 for v in gold_vis)
    vis, _, st = simulate(prob, bug)
    if vis != gold_vis:
        return True
    return st is not None and any(not np.array_equal(a, b) for a, b in zip(st, gold_st))


def _entry(spec):
    s = spec
    e = {"id": s.case_id, "op": s.op, "dtype": s.dtype, "expect": "invalid" if s.error else "valid",
         "window": s.window, "scale": s.scale, "Hq": s.Hq, "Hkv": s.Hkv, "D": s.D}
    if s.op == "attention":
        e.update({"T": s.T, "S": s.S or s.T, "positions": "gaps" if s.gaps else "consecutive",
                  "first_key_position": s.start})
    else:
        e.update({"T_prompt": s.T, "schedule": list(s.schedule), "n_decode": s.n_decode, "start": s.start,
                  "history": s.hist, "capacity": s.capacity or s.window,
                  "steps": len(s.schedule) + s.n_decode})
    e["poison"] = s.poison
    return e


# Negative cases -------------------------------------------------------------

def _negative_case(spec):
    rng = np.random.default_rng(seed_of(spec.case_id))
    name = spec.error
    op, kinds = _NEGATIVE[name]
    prob = Problem(dataclasses.replace(spec, error=""), rng)
    prob.quantize()
    t = _input_tensors(prob)
    f32 = lambda x: (np.asarray(x, dtype=np.float32), "F32")  # noqa: E731
    if name == "window-zero" or name == "prefill-window-zero":
        t["window"] = (np.asarray(0, dtype=np.int64), "I64")
    elif name == "window-negative":
        t["window"] = (np.asarray(-2, dtype=np.int64), "I64")
    elif name == "head-dim-mismatch":
        t["k"] = f32(rng.standard_normal((5, 1, 3)))
        t["v"] = f32(rng.standard_normal((5, 1, 3)))
    elif name in ("kv-length-mismatch", "prefill-kv-length-mismatch"):
        t["v"] = f32(t["v"][0][:-1])
    elif name == "qpos-length-mismatch":
        t["q_pos"] = (t["q_pos"][0][:-1], "I64")
    elif name == "heads-not-multiple":
        t["q"] = f32(rng.standard_normal((5, 3, 4)))
        t["k"] = f32(rng.standard_normal((5, 2, 4)))
        t["v"] = f32(rng.standard_normal((5, 2, 4)))
    elif name == "mixed-dtypes":
        t["k"] = (t["k"][0].astype(np.float16), "F16")
    elif name == "kpos-not-increasing":
        kp = t["k_pos"][0].copy()
        kp[1], kp[2] = kp[2], kp[1]
        t["k_pos"] = (kp, "I64")
    elif name == "no-visible-key":
        t["q_pos"] = (np.asarray([0, 1, 2, 3, 20], dtype=np.int64), "I64")
    elif name == "schedule-sum":
        t["schedule"] = (np.asarray([2, 3], dtype=np.int64), "I64")
    elif name == "schedule-zero-chunk":
        t["schedule"] = (np.asarray([2, 0, 4], dtype=np.int64), "I64")
    elif name == "cache-positions-out-of-order":
        ip = t["init_pos"][0].copy()             # history 0,1,2 in slots 0,1,2: swap two slots' positions
        ip[0], ip[1] = ip[1], ip[0]
        t["init_pos"] = (ip, "I64")
    elif name == "cache-start-not-consecutive":
        t["start"] = (np.asarray(4, dtype=np.int64), "I64")   # history ends at 2, so 3 is next
    else:  # pragma: no cover
        raise GeneratorError(f"unknown negative case {name}")
    entry = _entry(spec)
    entry["error_kinds"] = list(kinds)
    entry["negative"] = name
    return t, entry


# --------------------------------------------------------------------------
# Writing a suite
# --------------------------------------------------------------------------

def conventions():
    """The conventions every case follows (recorded in the manifest)."""
    return {
        "window_rule": "query at absolute position p sees key at position j iff p - W < j <= p "
                       "(W keys, itself included); window absent = plain causal (j <= p)",
        "flash_attention_equivalent": "window_size = (W - 1, 0)",
        "gqa": "query head h reads KV head h // (Hq // Hkv)",
        "default_scale": "1 / sqrt(D) when the case has no 'scale' tensor",
        "layout": "q [T, Hq, D], k and v [S, Hkv, D], row-major, little-endian; positions int64",
        "cache": "C slots (C = W, or 'capacity' for window absent); position p lives in slot p mod C; "
                 "a chunk writes only its last min(s, C) tokens; empty slots have position -1",
        "prefill": "a chunk's queries attend to [cache] + [chunk keys], then the chunk is written",
        "decode": "the token is written first, then its query attends to the cache",
        "errors": list(ERROR_KINDS),
    }


def _manifest_hash(manifest):
    body = {k: v for k, v in manifest.items() if k != "suite_hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _data_digest(tensors):
    h = hashlib.sha256()
    for name in sorted(tensors):
        arr, dt = tensors[name]
        h.update(f"{name}:{dt}:{list(np.shape(arr))};".encode())
        h.update(np.ascontiguousarray(arr, dtype=ST.DTYPES[dt]).tobytes())
    return h.hexdigest()


def generate_suite(out_dir, suite="core", cases=None, log=None):
    """Write a suite into ``out_dir`` (created if needed); returns the manifest dict."""
    import swaref
    specs = cases_of(suite) if cases is None else list(cases)
    ids = [c.case_id for c in specs]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise GeneratorError(f"duplicate case ids: {sorted(dup)}")
    os.makedirs(out_dir, exist_ok=True)
    entries = []
    for spec in specs:
        tensors, entry = build_case(spec)
        digest = _data_digest(tensors)
        meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "case_id": spec.case_id,
                "op": spec.op, "dtype": spec.dtype, "input_digest": digest}
        data = ST.encode({n: a for n, (a, _) in tensors.items()},
                         dtypes={n: d for n, (_, d) in tensors.items()}, metadata=meta)
        fname = spec.case_id + ".safetensors"
        with open(os.path.join(out_dir, fname), "wb") as f:
            f.write(data)
        entry["file"] = fname
        entry["sha256"] = hashlib.sha256(data).hexdigest()
        entry["input_digest"] = digest
        entry["tensors"] = {n: {"dtype": d, "shape": list(np.shape(a))} for n, (a, d) in sorted(tensors.items())}
        if spec.error:
            _confirm_negative(spec, tensors, entry)
        entries.append(entry)
        if log:
            log(spec.case_id)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "spec_version": swaref.SPEC_VERSION,
        "suite": suite if cases is None else "custom",
        "generator": {"name": "swaref", "version": swaref.__version__, "module": "swaref.vectors"},
        "conventions": conventions(),
        "tolerance_model": {
            "out": "atol[row] = SAFETY * vmax * (u_out + u_acc * (2 * sqrt(D) * A + n + 2)); rtol = 0",
            "SAFETY": SAFETY, "u_out": {k: v[1] for k, v in DTYPES.items()}, "u_acc": U_ACC,
            "min_wrong_variant_miss_units": MIN_MISS,
            "exact": ["cache_pos", "cache_k", "cache_v", "error kinds"],
        },
        "cases": sorted(entries, key=lambda e: e["id"]),
    }
    manifest["suite_hash"] = _manifest_hash(manifest)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    return manifest


def _confirm_negative(spec, tensors, entry):
    """The reference must reject a negative case with one of its kinds (else the case is wrong)."""
    inputs = {n: ST.as_float(a, d) if d == "BF16" else np.asarray(a) for n, (a, d) in tensors.items()}
    try:
        reference_port(inputs, {"op": spec.op, "dtype": spec.dtype, "case_id": spec.case_id})
    except SwarefError as e:
        if e.kind not in entry["error_kinds"]:
            raise GeneratorError(f"{spec.case_id}: reference rejects with kind {e.kind!r}, "
                                 f"expected {entry['error_kinds']}: {e}") from None
        return
    raise GeneratorError(f"{spec.case_id}: the reference accepts this negative case")


# --------------------------------------------------------------------------
# Ports built on swaref (what --python swaref.vectors:reference_port runs)
# --------------------------------------------------------------------------

def _scalar_int(inputs, name):
    a = np.asarray(inputs[name])
    if a.size != 1:
        raise SwarefError("argument", f"{name} must hold one integer, got shape {a.shape}")
    return int(a.reshape(-1)[0])


def _cache_from_state(cache, init_pos, init_k, init_v):
    """Load a rolling buffer state (slot positions, contents) into ``cache``, validating it first.

    A valid state holds consecutive positions r .. n-1 (at most C of them), each in slot p mod C.
    """
    import swaref
    C = cache.capacity
    pos = np.asarray(init_pos)
    if pos.shape != (C,) or np.asarray(init_k).shape != cache.k.shape or np.asarray(init_v).shape != cache.v.shape:
        raise SwarefError("shape", f"init_pos/init_k/init_v must have shapes ({C},) and {cache.k.shape}, got "
                                   f"{pos.shape}, {np.shape(init_k)}, {np.shape(init_v)}")
    valid = np.nonzero(pos >= 0)[0]
    if pos[pos < 0].size and (pos[pos < 0] != -1).any():
        raise SwarefError("positions", "init_pos may hold -1 (empty) or positions >= 0")
    if valid.size:
        p = np.sort(pos[valid])
        if (np.diff(p) != 1).any():
            raise SwarefError("positions", f"the cached positions must be consecutive, got {p.tolist()}")
        for sl in valid:
            if swaref.slot_of(int(pos[sl]), C) != sl:
                raise SwarefError("positions", f"slot {sl} holds position {int(pos[sl])}, which belongs in slot "
                                               f"{int(pos[sl]) % C}")
        cache.positions[:] = pos
        cache.k[valid] = np.asarray(init_k)[valid]
        cache.v[valid] = np.asarray(init_v)[valid]
        cache.n_seen = int(valid.size)
        cache.next_position = int(p[-1]) + 1


def swaref_port(inputs, meta, backend="reference"):
    """Run one case through swaref's public API.

    inputs: the case's input tensors (BF16 given as exact float32); meta: op,
    dtype, case_id.  -> {"out", and for traces "cache_pos", "cache_k",
    "cache_v"}.  Rejections propagate as SwarefError (the runner reads .kind).
    float16/bfloat16 cases run the compiled backend in float32 (exact upcast).
    """
    import swaref
    dtype = meta["dtype"]
    floats = {n: inputs[n] for n in ("q", "k", "v", "init_k", "init_v") if n in inputs}
    uniform = len({a.dtype for a in floats.values()}) == 1     # mixed dtypes must reach swaref's check
    if uniform and (backend == "cython" or dtype == "bfloat16"):
        floats = {n: a.astype(np.float32) if a.dtype in (np.float16, np.float32) else a
                  for n, a in floats.items()}
    q, k, v = floats["q"], floats["k"], floats["v"]
    window = _scalar_int(inputs, "window") if "window" in inputs else None
    scale = float(np.asarray(inputs["scale"]).reshape(-1)[0]) if "scale" in inputs else None
    if meta["op"] == "attention":
        out = swaref.attention(q, k, v, window=window, q_pos=inputs["q_pos"], k_pos=inputs["k_pos"],
                               scale=scale, backend=backend)
        return {"out": _round_out(out, dtype)}
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
    cache = swaref.RollingBufferCache(window, k.shape[1], k.shape[2], dtype=q.dtype,
                                      capacity=cap if window is None else (cap if cap != window else None))
    sched = swaref.chunk_schedule(T, [int(c) for c in np.asarray(inputs["schedule"]).reshape(-1)], window) \
        if T else []
    if "init_pos" in inputs:
        _cache_from_state(cache, inputs["init_pos"], floats["init_k"], floats["init_v"])
    if cache.next_position is not None and start != cache.next_position:
        raise SwarefError("positions", f"the cache continues at {cache.next_position}, got start={start}")
    outs, pos, ks, vs = [], [], [], []
    a = 0
    for n in sched + [1] * n_decode:
        sl = slice(a, a + n)
        step = swaref.prefill if a < T else swaref.decode_step
        kw = {"chunk_size": n} if a < T else {}
        outs.append(step(q[sl], k[sl], v[sl], cache, start=start + a, scale=scale, backend=backend, **kw))
        pos.append(cache.positions.copy())
        ks.append(cache.k.copy())
        vs.append(cache.v.copy())
        a += n
    return {"out": _round_out(np.concatenate(outs), dtype), "cache_pos": np.stack(pos),
            "cache_k": np.stack(ks), "cache_v": np.stack(vs)}


def _round_out(out, dtype):
    """The port's last step: round the output to the case dtype (bfloat16 kept as exact float32)."""
    if dtype == "bfloat16":
        return ST.bf16_to_f32(ST.f32_to_bf16(out.astype(np.float32)))
    return out.astype(dtype)


def reference_port(inputs, meta):
    """swaref's NumPy reference as a port (``--python swaref.vectors:reference_port``)."""
    return swaref_port(inputs, meta, backend="reference")


def cython_port(inputs, meta):
    """swaref's compiled kernel as a port (``--python swaref.vectors:cython_port``)."""
    return swaref_port(inputs, meta, backend="cython")


# --------------------------------------------------------------------------
# The judge
# --------------------------------------------------------------------------

class SuiteError(Exception):
    """The suite itself is corrupt or tampered with (exit code 2)."""


@dataclasses.dataclass
class Verdict:
    case_id: str
    status: str                 # PASS, FAIL, MISSING
    message: str = ""
    max_abs_err: float = None
    max_rel_err: float = None
    err_units: float = None     # max |err| / atol
    worst_index: list = None
    first_bad_step: int = None

    def line(self):
        s = f"{self.status:7s} {self.case_id}"
        if self.err_units is not None:
            s += (f"  max_abs={self.max_abs_err:.3g} max_rel={self.max_rel_err:.3g} "
                  f"err/tol={self.err_units:.3g} worst={self.worst_index}")
        if self.first_bad_step is not None:
            s += f" first_bad_step={self.first_bad_step}"
        if self.message:
            s += f"  {self.message}"
        return s

    def to_json(self):
        d = dataclasses.asdict(self)
        return {k: _jsonable(v) if isinstance(v, float) else v for k, v in d.items()}


def load_suite(suite_dir):
    """Read and verify a suite -> (manifest, {case_id: (tensors, dtypes, metadata)}).

    Raises SuiteError listing every problem: manifest unreadable or of another
    format, suite hash mismatch, a file missing, a sha256 mismatch, malformed
    safetensors, or a file whose contents disagree with its manifest entry.
    """
    path = os.path.join(suite_dir, "manifest.json")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except OSError as e:
        raise SuiteError(f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise SuiteError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SuiteError(f"{path}: not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise SuiteError(f"{path}: format version {manifest.get('format_version')!r}, this runner reads "
                         f"{FORMAT_VERSION}")
    if manifest.get("suite_hash") != _manifest_hash(manifest):
        raise SuiteError(f"{path}: suite_hash does not match the manifest's contents (manifest edited?)")
    problems, cases = [], {}
    for e in manifest.get("cases", []):
        cid = e.get("id", "?")
        fpath = os.path.join(suite_dir, str(e.get("file", "")))
        try:
            with open(fpath, "rb") as f:
                data = f.read()
        except OSError as err:
            problems.append(f"{cid}: cannot read {fpath}: {err.strerror}")
            continue
        if hashlib.sha256(data).hexdigest() != e.get("sha256"):
            problems.append(f"{cid}: sha256 of {e.get('file')} does not match the manifest (file modified)")
            continue
        try:
            tensors, dtypes, meta = ST.decode(data, what=e.get("file"))
        except ST.SafetensorsError as err:
            problems.append(f"{cid}: malformed safetensors: {err}")
            continue
        want = e.get("tensors", {})
        got = {n: {"dtype": dtypes[n], "shape": list(tensors[n].shape)} for n in tensors}
        if meta.get("case_id") != cid or got != want:
            problems.append(f"{cid}: file contents disagree with the manifest entry")
            continue
        cases[cid] = (tensors, dtypes, meta)
    if problems:
        raise SuiteError("; ".join(problems))
    return manifest, cases


def _as_f64(arr, dt):
    return np.asarray(ST.as_float(arr, dt), dtype=np.float64)


def _compare_float(actual, expected, atol):
    """-> (max_abs, max_rel, units, worst index, per-row units) with NaN/Inf mismatches as infinite error."""
    with np.errstate(all="ignore"):
        diff = np.abs(actual - expected)
        same_special = (np.isnan(actual) & np.isnan(expected)) | (np.isinf(actual) & (actual == expected))
        diff = np.where(same_special, 0.0, diff)
        diff = np.where(np.isnan(diff), np.inf, diff)
        atol_b = atol.reshape(atol.shape + (1,) * (diff.ndim - atol.ndim))
        units = diff / atol_b
        rel = np.where(np.abs(expected) > 0, diff / np.abs(expected), np.where(diff > 0, np.inf, 0.0))
    worst = np.unravel_index(int(np.argmax(units)), units.shape) if units.size else ()
    row_units = units.reshape(units.shape[0], -1).max(axis=1) if units.size else units
    return (float(diff.max()) if diff.size else 0.0, float(rel.max()) if rel.size else 0.0,
            float(units.max()) if units.size else 0.0, [int(i) for i in worst], row_units)


def judge(entry, case, result):
    """Judge one case.  result: ("missing", msg) | ("error", kind, msg) | ("tensors", tensors, dtypes, meta)."""
    cid = entry["id"]
    if result[0] == "missing":
        return Verdict(cid, "MISSING", result[1])
    if result[0] == "crash":
        return Verdict(cid, "FAIL", result[1])
    if entry["expect"] == "invalid":
        want = entry["error_kinds"]
        if result[0] == "error":
            if result[1] in want:
                return Verdict(cid, "PASS", f"rejected with kind {result[1]!r}")
            return Verdict(cid, "FAIL", f"rejected with kind {result[1]!r}, expected one of {want}"
                           + (f" ({result[2]})" if result[2] else ""))
        return Verdict(cid, "FAIL", f"accepted an input that must be rejected with kind {want[0]!r}")
    if result[0] == "error":
        return Verdict(cid, "FAIL", f"rejected a valid input with kind {result[1]!r}"
                       + (f": {result[2]}" if result[2] else ""))
    if result[0] == "crash":
        return Verdict(cid, "FAIL", result[1])
    _, rt, rd, rmeta = result
    etensors, edtypes, emeta = case
    if rmeta.get("input_digest") not in (None, emeta.get("input_digest")):
        return Verdict(cid, "FAIL", "result was computed from other inputs (input_digest differs): "
                                    "a results folder of another suite version?")
    case_dt = DTYPES[entry["dtype"]][0]
    names = [n[len("expected."):] for n in sorted(etensors) if n.startswith("expected.") and not n.endswith("_atol")]
    for n in names:
        if n not in rt:
            return Verdict(cid, "FAIL", f"result has no tensor {n!r} (has {sorted(rt)})")
        eshape = etensors["expected." + n].shape
        if tuple(rt[n].shape) != tuple(eshape):
            return Verdict(cid, "FAIL", f"{n}: shape {list(rt[n].shape)}, expected {list(eshape)}")
        ok = ("I64",) if n == "cache_pos" else ACCEPTED_FLOAT[case_dt]
        if rd[n] not in ok:
            return Verdict(cid, "FAIL", f"{n}: dtype {rd[n]}, expected one of {list(ok)}")
    atol = etensors["expected.out_atol"]
    actual = _as_f64(rt["out"], rd["out"])
    mx, rel, units, worst, row_units = _compare_float(actual, etensors["expected.out"], atol)
    v = Verdict(cid, "PASS", max_abs_err=mx, max_rel_err=rel, err_units=units, worst_index=worst)
    msgs = []
    bad_rows = np.nonzero(row_units > 1.0)[0]
    if "cache_pos" in names:
        steps = list(entry["schedule"]) + [1] * entry["n_decode"]
        step_of_row = np.repeat(np.arange(len(steps)), steps)
        first = int(step_of_row[bad_rows[0]]) if bad_rows.size else None
        epos = etensors["expected.cache_pos"]
        bad_cache = None
        for i in range(epos.shape[0]):
            valid = epos[i] >= 0
            same = np.array_equal(rt["cache_pos"][i], epos[i])
            for n in ("cache_k", "cache_v"):
                a = _as_f64(rt[n][i], rd[n])[valid]
                e = _as_f64(etensors["expected." + n][i], edtypes["expected." + n])[valid]
                same = same and bool(((a == e) | (np.isnan(a) & np.isnan(e))).all())
            if not same:
                bad_cache = i
                break
        if bad_cache is not None:
            msgs.append(f"cache state differs from step {bad_cache} on "
                        f"(slot positions {rt['cache_pos'][bad_cache].tolist()}, expected {epos[bad_cache].tolist()})")
            first = bad_cache if first is None else min(first, bad_cache)
        v.first_bad_step = first
    if bad_rows.size:
        msgs.insert(0, f"{bad_rows.size} output rows beyond tolerance (first row {int(bad_rows[0])})")
    if msgs:
        v.status = "FAIL"
        v.message = "; ".join(msgs)
    return v


# --------------------------------------------------------------------------
# Obtaining results: a folder, a Python function, or a subprocess per case
# --------------------------------------------------------------------------

def read_result(results_dir, cid):
    """The result a port left for case ``cid`` in ``results_dir`` (see judge for the tuple forms)."""
    out = os.path.join(results_dir, cid + ".out.safetensors")
    err = os.path.join(results_dir, cid + ".err.json")
    has_out, has_err = os.path.exists(out), os.path.exists(err)
    if has_out and has_err:
        return ("crash", f"both {cid}.out.safetensors and {cid}.err.json exist; write exactly one")
    if has_err:
        try:
            with open(err) as f:
                doc = json.load(f)
            kind = doc["kind"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            return ("crash", f"{cid}.err.json is not a JSON object with a 'kind' ({type(e).__name__}: {e})")
        if kind not in ERROR_KINDS:
            return ("crash", f"{cid}.err.json: kind {kind!r} is not in the closed list {list(ERROR_KINDS)}")
        return ("error", kind, str(doc.get("message", "")))
    if not has_out:
        return ("missing", f"no {cid}.out.safetensors or {cid}.err.json in {results_dir}")
    try:
        tensors, dtypes, meta = ST.read(out)
    except ST.SafetensorsError as e:
        return ("crash", f"malformed result file: {e}")
    except OSError as e:
        return ("crash", f"cannot read {out}: {e.strerror}")
    return ("tensors", tensors, dtypes, meta)


def _python_inputs(case):
    tensors, dtypes, meta = case
    inputs = {n: (ST.as_float(a, dtypes[n]) if dtypes[n] == "BF16" else a)
              for n, a in tensors.items() if not n.startswith("expected.")}
    return inputs, {"op": meta["op"], "dtype": meta["dtype"], "case_id": meta["case_id"],
                    "dtypes": {n: d for n, d in dtypes.items() if not n.startswith("expected.")}}


def run_python(fn, case):
    """Call a Python port; its exceptions with a ``kind`` are rejections, other exceptions crashes."""
    inputs, meta = _python_inputs(case)
    try:
        res = fn(inputs, meta)
    except Exception as e:  # noqa: BLE001 - the port's failure is a verdict, not our crash
        kind = getattr(e, "kind", None)
        if kind is not None:
            return ("error", kind, str(e))
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return ("crash", f"port raised {type(e).__name__}: {e} (at {os.path.basename(tb.filename)}:{tb.lineno})")
    if not isinstance(res, dict):
        return ("crash", f"port returned {type(res).__name__}, expected a dict of arrays")
    tensors, dtypes = {}, {}
    for n, a in res.items():
        a = np.asarray(a)
        try:
            dtypes[n] = ST.dtype_name(a)
        except ST.SafetensorsError as e:
            return ("crash", f"result {n!r}: {e}")
        tensors[n] = a
    return ("tensors", tensors, dtypes, {})


def write_result(results_dir, case_id, result=None, error=None, input_digest=None):
    """Write one case's result the way any port must: tensors or a rejection.

    result: name -> ndarray (float arrays in their own dtype, positions int64);
    error: an error kind from ERROR_KINDS (writes <case_id>.err.json instead).
    """
    if error is not None:
        with open(os.path.join(results_dir, case_id + ".err.json"), "w") as f:
            json.dump({"kind": error}, f)
        return
    meta = {"input_digest": input_digest} if input_digest else None
    ST.write(os.path.join(results_dir, case_id + ".out.safetensors"),
             {n: np.asarray(a) for n, a in result.items()}, metadata=meta)


def run_port_to_dir(suite_dir, fn, results_dir):
    """Run a Python port over a suite and leave a results folder (for ``check --results``)."""
    manifest, cases = load_suite(suite_dir)
    os.makedirs(results_dir, exist_ok=True)
    for entry in manifest["cases"]:
        case = cases[entry["id"]]
        res = run_python(fn, case)
        if res[0] == "error":
            write_result(results_dir, entry["id"], error=res[1])
        elif res[0] == "tensors":
            write_result(results_dir, entry["id"], res[1], input_digest=case[2].get("input_digest"))


def load_python_port(spec):
    """'module:function' -> the function (raises ValueError with a clear message)."""
    import importlib
    if ":" not in spec:
        raise ValueError(f"--python expects module:function, got {spec!r}")
    mod, fn = spec.split(":", 1)
    try:
        m = importlib.import_module(mod)
    except ImportError as e:
        raise ValueError(f"cannot import {mod!r}: {e}") from None
    if not callable(getattr(m, fn, None)):
        raise ValueError(f"{mod!r} has no function {fn!r}")
    return getattr(m, fn)


def run_exec(cmd, suite_dir, entry, tmp, timeout):
    """Run ``cmd`` with {in}, {out}, {err} replaced by quoted paths, then read what it wrote."""
    cid = entry["id"]
    paths = {"in": os.path.join(suite_dir, entry["file"]),
             "out": os.path.join(tmp, cid + ".out.safetensors"),
             "err": os.path.join(tmp, cid + ".err.json")}
    line = cmd
    for k, p in paths.items():
        line = line.replace("{" + k + "}", shlex.quote(p))
    try:
        r = subprocess.run(line, shell=True, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return ("crash", f"port timed out after {timeout} s")
    res = read_result(tmp, cid)
    if r.returncode != 0:                 # a port that failed is not trusted even if it left a file
        tail = (r.stderr or r.stdout).decode(errors="replace").strip().splitlines()[-3:]
        return ("crash", f"port exited with status {r.returncode}: {' | '.join(tail)}")
    if res[0] == "missing":
        return ("missing", "port exited 0 but wrote neither {out} nor {err}")
    return res


def check_suite(suite_dir, *, results_dir=None, python=None, exec_cmd=None, json_report=None,
                out=None, timeout=60.0, only=None):
    """Judge a port on a suite; prints one line per case and a summary.  -> exit code 0, 1 or 2.

    Exactly one of results_dir, python (a function or 'module:function') and
    exec_cmd gives the results.  ``only``: optional iterable of case ids.
    """
    out = out or (lambda s: print(s, flush=True))
    try:
        manifest, cases = load_suite(suite_dir)
    except SuiteError as e:
        out(f"CORRUPT suite {suite_dir}: {e}")
        out("summary: suite corrupt or tampered; nothing judged")
        _write_report(json_report, {"status": "corrupt", "error": str(e)})
        return 2
    if isinstance(python, str):
        python = load_python_port(python)
    verdicts = []
    with tempfile.TemporaryDirectory(prefix="swaref-vectors-") as tmp:
        for entry in manifest["cases"]:
            if only is not None and entry["id"] not in only:
                continue
            case = cases[entry["id"]]
            if results_dir is not None:
                res = read_result(results_dir, entry["id"])
            elif python is not None:
                res = run_python(python, case)
            else:
                res = run_exec(exec_cmd, suite_dir, entry, tmp, timeout)
            try:
                v = judge(entry, case, res)
            except Exception as e:  # noqa: BLE001 - a malformed result must not crash the runner
                v = Verdict(entry["id"], "FAIL", f"result could not be judged: {type(e).__name__}: {e}")
            verdicts.append(v)
            out(v.line())
    extra = []
    if results_dir is not None and os.path.isdir(results_dir):
        known = {e["id"] for e in manifest["cases"]}
        for f in sorted(os.listdir(results_dir)):
            for suf in (".out.safetensors", ".err.json"):
                if f.endswith(suf) and f[:-len(suf)] not in known:
                    extra.append(f)
    counts = {s: sum(v.status == s for v in verdicts) for s in ("PASS", "FAIL", "MISSING")}
    summary = (f"summary: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['MISSING']} missing "
               f"of {len(verdicts)} cases; suite {manifest['suite']} {manifest['suite_hash']}; "
               f"spec {manifest['spec_version']}; format {FORMAT} v{FORMAT_VERSION}")
    if extra:
        out(f"note: {len(extra)} result files name no case of this suite (another suite version?), "
            f"e.g. {extra[0]}")
    out(summary)
    code = 0 if counts["FAIL"] == 0 and counts["MISSING"] == 0 else 1
    _write_report(json_report, {
        "status": "pass" if code == 0 else "fail", "suite": manifest["suite"], "suite_hash": manifest["suite_hash"],
        "spec_version": manifest["spec_version"], "format_version": FORMAT_VERSION, "counts": counts,
        "unknown_result_files": extra, "cases": [v.to_json() for v in verdicts]})
    return code


def _write_report(path, doc):
    if path:
        with open(path, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.write("\n")
