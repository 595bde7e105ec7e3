"""The case catalogue: what each golden case tests, its id, dtypes and seeds.

``CaseSpec`` describes one case and builds its id from its parameters;
``core_cases`` (about 70, every port runs them) and ``full_cases`` (about 500)
list them; ``negative_cases`` are inputs a port must reject.  The dtype helpers
say how each case dtype is stored and rounded, and the tolerance constants
live here because the case list and the judge both use them
(docs/conformance.md, "Tolerances").
"""
import dataclasses
import hashlib
import math

import numpy as np

from .. import windows
from ..errors import SwarefError
from . import safetensors_io as ST

FORMAT = "swaref-vectors"
#: Format version 2 (spec 1.1): inputs softcap, sinks, steps; capacity >= W.  Version 3 (spec 1.1, the
#: window family): inputs sink_tokens, two_sided, attention_chunk.  A case file says the oldest version
#: that describes it: "1" without any 1.1 input, "2" with part one's only, byte for byte as written then.
FORMAT_VERSION = 3
SUITES = ("core", "full")
#: The spec version every case without a 1.1 feature tests (its vectors are those of 1.0.1).
BASE_SPEC = "1.0.1"
#: Features of spec 1.1 a case may need; a port that skips all of them can claim BASE_SPEC.
FEATURES_1_1 = ("softcap", "sinks", "slack", "rollback", "sink_tokens", "two_sided", "chunked")
#: The features of spec 1.1 part one (format version 2): a port of them skips the window family's.
FEATURES_1_1_PART_ONE = ("softcap", "sinks", "slack", "rollback")
#: Step ops of a trace's ``steps`` tensor: (op, n) rows.
PREFILL, DECODE, ROLLBACK = 0, 1, 2
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


class GeneratorError(SwarefError):
    """The generator produced a case that would not catch a bug it must catch (or is inconsistent)."""

    def __init__(self, message):
        super().__init__("suite", message)


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
    ``error`` names a negative case (see ``NEGATIVE``, ``NEGATIVE_1_1``).
    Spec 1.1: ``softcap`` the cap; ``sinks`` the level of the sink logits (each
    head's is level + U(-1, 1), drawn after q, k, v); ``neg_row``: one query's
    scores are all very negative; ``capacity`` > ``window``: slack; ``steps``:
    the trace as (op, n) pairs with rollbacks (build it with ``traced``).
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
    softcap: object = None
    sinks: object = None
    neg_row: bool = False
    steps: tuple = ()
    sink_tokens: int = 0
    two_sided: tuple = ()
    chunk: int = 0

    @property
    def window_tag(self):
        """The window part of the id: none, W, Wsink<n>, ts<left>-<right> (u: unbounded), chunk<C>."""
        if self.two_sided:
            return "ts" + "-".join("u" if x is None else str(x) for x in self.two_sided)
        if self.chunk:
            return f"chunk{self.chunk}"
        w = "none" if self.window is None else str(self.window)
        return w + (f"sink{self.sink_tokens}" if self.sink_tokens else "")

    @property
    def window_obj(self):
        """The window as swaref's API takes it (swaref.windows): None, an int, Sliding, TwoSided or Chunked."""
        if self.two_sided:
            return windows.TwoSided(*self.two_sided)
        if self.chunk:
            return windows.Chunked(self.chunk)
        if self.sink_tokens:
            return windows.Sliding(self.window, sink_tokens=self.sink_tokens)
        return self.window

    @property
    def ring(self):
        """The ring's default number of slots: W, the chunk size, or (no window) ``capacity``."""
        return self.chunk or self.window

    @property
    def case_id(self):
        w = self.window_tag
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
        if self.softcap is not None:
            parts.append("softcap" + repr(float(self.softcap)))
        if self.sinks is not None:
            parts.append("sinks" + repr(float(self.sinks)))
        if self.neg_row:
            parts.append("negrow")
        if self.steps:
            parts.append("prog" + "-".join("pdr"[op] + str(n) for op, n in self.steps))
        return "_".join(parts)

    @property
    def n_tokens(self):
        return self.T + self.n_decode

    @property
    def program(self):
        """The trace's steps as (op, n) pairs: ``steps`` if given, else the schedule then the decode tokens."""
        return list(self.steps) or [(PREFILL, n) for n in self.schedule] + [(DECODE, 1)] * self.n_decode

    @property
    def features(self):
        """The spec 1.1 features this case needs (``FEATURES_1_1``), sorted."""
        f = {"softcap"} if self.softcap is not None else set()
        f |= {"sinks"} if self.sinks is not None else set()
        f |= {"slack"} if self.window is not None and self.capacity > self.window else set()
        f |= {"rollback"} if self.steps else set()           # a port without rollback reads no 'steps'
        f |= {"slack"} if self.chunk and self.capacity > self.chunk else set()
        f |= {"sink_tokens"} if self.sink_tokens else set()
        f |= {"two_sided"} if self.two_sided else set()
        f |= {"chunked"} if self.chunk else set()
        return sorted(f)


def traced(spec, steps):
    """``spec`` running the program ``steps`` ((op, n) pairs): schedule, T and n_decode follow from it."""
    sched = tuple(n for op, n in steps if op == PREFILL)
    return dataclasses.replace(spec, steps=tuple(steps), schedule=sched, T=sum(sched),
                               n_decode=sum(1 for op, _ in steps if op == DECODE))


def token_positions(start, steps):
    """The position of each token row of a trace: each takes the next position; a rollback of n moves it back."""
    out, nxt = [], start
    for op, n in steps:
        if op == ROLLBACK:
            nxt -= n
        else:
            out += range(nxt, nxt + n)
            nxt += n
    return out


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
    from .cases_windows import core_cases_windows          # that module builds on this one's CaseSpec
    return cases + negative_cases() + core_cases_1_1() + core_cases_windows()


def core_cases_1_1():
    """Spec 1.1 cases of the core suite: softcap, sinks, slack and rollback, alone and combined as models
    use them, at the places where their bugs show; then their negative cases."""
    A, P, Dd = CaseSpec("attention"), CaseSpec("prefill"), CaseSpec("decode")
    r = dataclasses.replace
    cases = [
        # softcap: many masked keys in the dense row (S >> W) and small caps, so that a cap after an
        # additive mask leaks; GQA; W = 1; no window; an explicit scale; poison behind the mask
        r(A, Hq=4, Hkv=2, D=16, window=5, T=12, S=20, softcap=3.0),
        r(A, dtype="float16", window=4, T=9, S=30, softcap=5.0),
        r(A, dtype="bfloat16", Hq=4, Hkv=1, D=16, window=3, T=8, S=40, softcap=2.0),
        r(A, dtype="float64", Hq=2, Hkv=2, D=4, window=8, T=10, S=10, softcap=1.0),
        r(A, window=None, T=7, S=9, softcap=4.0),
        r(A, window=1, T=6, S=6, softcap=2.0),
        r(A, window=4, T=8, S=12, scale=0.3, softcap=2.5),
        r(A, dtype="float16", window=3, T=4, S=12, poison=True, softcap=3.0),
        # sinks: GQA, every dtype, W = 1 (the sink against a single key), no window, a row of very
        # negative scores (the sink takes nearly all the weight), poison, large positions
        r(A, Hq=8, Hkv=2, D=16, window=4, T=10, S=10, sinks=1.0),
        r(A, dtype="float16", window=3, T=8, S=12, sinks=2.0),
        r(A, dtype="bfloat16", Hq=4, Hkv=2, window=5, T=12, S=12, sinks=0.5),
        r(A, dtype="float64", window=2, T=5, S=7, sinks=-1.0),
        r(A, window=1, T=5, S=5, sinks=0.0),
        r(A, D=16, window=4, T=6, S=9, sinks=1.0, neg_row=True),
        r(A, dtype="bfloat16", Hq=4, Hkv=1, D=16, window=6, T=8, S=8, sinks=2.0, neg_row=True),
        r(A, window=4, T=5, S=14, poison=True, sinks=1.0),
        r(A, dtype="float16", window=None, T=6, S=6, sinks=1.5),
        r(A, window=4, T=9, S=12, start=2 ** 40 + 3, sinks=1.0),
        # traces: softcap and sinks through chunked prefill; slack, with decode reading all C slots
        r(P, window=4, T=11, schedule=(3, 2, 5, 1), softcap=3.0),
        r(P, dtype="float16", Hq=4, Hkv=2, window=5, T=11, schedule=(4, 4, 3), sinks=1.0),
        r(P, window=4, capacity=6, T=13, schedule=(5, 3, 5)),
        r(Dd, window=4, capacity=7, T=5, schedule=(2, 3), n_decode=10, softcap=2.0),
        r(Dd, dtype="bfloat16", window=3, capacity=5, T=4, schedule=(4,), n_decode=8, sinks=1.0),
        r(Dd, dtype="float64", window=3, capacity=5, T=3, schedule=(3,), n_decode=10),
        r(Dd, window=4, capacity=6, T=2, schedule=(2,), n_decode=6, start=9, hist=5, poison=True),
        # rollback: at the limit (C - W + 1 after wrapping, 1 without slack), everything, 0, with a
        # chunk after it (stale slots would be read), speculative decoding, with sinks and softcap
        traced(r(Dd, window=4, capacity=6), ((0, 10), (2, 3), (1, 1), (1, 1), (2, 1), (1, 1), (0, 3))),
        traced(r(Dd, dtype="float16", Hq=4, Hkv=2, window=3, capacity=6),
               ((0, 6), (1, 1), (0, 4), (2, 2), (1, 1), (0, 3), (2, 3), (1, 1), (1, 1))),
        traced(r(Dd, window=4, capacity=7, sinks=1.0), ((0, 5), (0, 4), (2, 4), (0, 6), (2, 2), (1, 1), (1, 1))),
        traced(r(Dd, dtype="bfloat16", window=3, capacity=5, softcap=2.0),
               ((0, 7), (2, 2), (0, 3), (1, 1), (2, 3), (1, 1), (1, 1))),
        traced(r(Dd, window=4, start=3), ((0, 5), (2, 5), (0, 4), (1, 1), (1, 1))),
        traced(r(Dd, dtype="float64", window=4), ((0, 9), (2, 1), (1, 1), (1, 1), (2, 1), (1, 1), (2, 0), (1, 1))),
        traced(r(Dd, window=None, capacity=12), ((0, 5), (1, 1), (2, 4), (0, 3), (1, 1), (2, 2), (1, 1))),
        traced(r(P, Hq=4, Hkv=1, window=3, capacity=5), ((0, 4), (0, 3), (2, 2), (0, 5), (2, 3), (0, 2))),
    ]
    return cases + negative_cases_1_1()


#: Negative cases of spec 1.1: name -> (spec, expected error kinds, features, known wrong variants it catches).
def _negatives_1_1():
    A = CaseSpec("attention", "float32", 2, 1, 4, 3, 5, 5)
    P = CaseSpec("prefill", "float32", 2, 1, 4, 3, 6, schedule=(2, 4))
    Dd = CaseSpec("decode", "float32", 2, 1, 4, 4)
    r = dataclasses.replace
    return {
        "softcap-zero": (r(A, softcap=0.0), ("softcap",), (), ()),
        "softcap-negative": (r(P, softcap=-1.0), ("softcap",), (), ()),
        "sinks-wrong-length": (r(A, sinks=1.0), ("sinks",), (), ()),
        "sinks-matrix": (r(P, sinks=1.0), ("sinks",), (), ()),
        "sinks-nonfinite": (r(A, sinks=1.0), ("sinks",), (), ()),
        "softcap-and-sinks": (r(A, softcap=2.0, sinks=1.0), ("argument",), (), ()),
        "capacity-below-window": (r(P, window=4, capacity=3), ("cache",), ("slack",), ()),
        "rollback-beyond-limit": (traced(r(Dd, capacity=6), ((0, 10), (2, 4), (1, 1))), ("rollback",), (),
                                  ("rollback_beyond_limit",)),
        "rollback-beyond-limit-no-slack": (traced(Dd, ((0, 9), (2, 2), (1, 1))), ("rollback",), (),
                                           ("rollback_beyond_limit",)),
        "rollback-more-than-written": (traced(r(Dd, capacity=6), ((0, 3), (2, 4))), ("rollback",), (), ()),
        "steps-unknown-op": (traced(r(Dd, capacity=6), ((0, 3), (1, 1))), ("schedule",), ("rollback",), ()),
        "steps-decode-of-two": (traced(r(Dd, capacity=6), ((0, 3), (1, 1))), ("schedule",), ("rollback",), ()),
    }


NEGATIVE_1_1 = _negatives_1_1()


def negative_cases_1_1():
    return [dataclasses.replace(spec, error=name) for name, (spec, _, _, _) in NEGATIVE_1_1.items()]


def negative_1_1(name):
    """(spec, error kinds, features, wrong variants it catches) of a spec 1.1 negative case, or None."""
    from .cases_windows import NEGATIVE_WINDOWS
    return NEGATIVE_1_1.get(name) or NEGATIVE_WINDOWS.get(name)


def negative_kinds(name):
    """The error kinds a port must reject negative case ``name`` with."""
    return NEGATIVE[name][1] if name in NEGATIVE else negative_1_1(name)[1]


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
    cases += full_cases_1_1()
    from .cases_windows import full_cases_windows
    cases += full_cases_windows()
    seen = {}
    for c in cases:
        seen.setdefault(c.case_id, c)
    return list(seen.values())


def full_cases_1_1():
    """The spec 1.1 part of the full suite: softcap, sinks, slack and rollback over windows, dtypes, heads."""
    rng = np.random.default_rng(20251201)          # fixed: the case list is part of the suite
    cases = []
    i = 0
    for W in (1, 2, 3, 4, 7, 16):
        for dt in _DT4:
            Hq, Hkv = ((4, 4), (4, 2), (8, 2), (8, 1))[i % 4]
            D = (2, 16, 64, 8, 32)[i % 5]
            low = dt in ("float16", "bfloat16")
            cap = (1.0, 2.0, 3.0)[i % 3] if low else (1.0, 3.0, 6.0)[i % 3]
            T = (2 * W + 3, W, W + 1)[(i // 3) % 3]           # past the window, at its edge, one beyond
            cases.append(CaseSpec("attention", dt, Hq, Hkv, D, W, T, T + 3 * W + 4, start=(0, 7)[i % 2], softcap=cap))
            T = 2 * W + 3
            cases.append(CaseSpec("attention", dt, Hq, Hkv, D, W, T, T + i % 3, sinks=(-1.0, 0.5, 2.0)[i % 3],
                                  neg_row=D >= 8 and i % 2 == 1))
            C = W + (1, 2, W)[i % 3]
            extra = ({"softcap": cap}, {"sinks": 1.0}, {})[i % 3]
            cases.append(traced(CaseSpec("decode", dt, Hq, Hkv, D, W, capacity=C, start=(0, 5)[i % 2], **extra),
                                _random_program(rng, W, C)))
            cases.append(CaseSpec("prefill", dt, Hq, Hkv, D, W, 3 * W + 2, schedule=_random_schedule(rng, 3 * W + 2),
                                  capacity=W + 2, **({"sinks": 0.5 if D >= 8 else 2.0}, {"softcap": cap})[i % 2]))
            i += 1
    return cases


def _random_program(rng, W, C, rounds=3):
    """A speculative-decoding trace: a prompt, then rounds of decode tokens, a draft chunk and a rollback
    (at the limit in every other round).  Never rolls back more tokens than the ring holds."""
    first = int(rng.integers(1, 2 * W + 3))
    steps, seen, held = [(PREFILL, first)], first, min(first, C)
    for r in range(rounds):
        for _ in range(int(rng.integers(0, 3))):
            steps.append((DECODE, 1))
            seen, held = seen + 1, min(held + 1, C)
        m = int(rng.integers(1, C - W + 3))
        steps.append((PREFILL, m))
        seen, held = seen + m, min(held + m, C)
        limit = seen if held == seen else (held if W == 1 else max(0, held - W + 1))
        n = limit if r % 2 == 0 else int(rng.integers(0, limit + 1))
        steps.append((ROLLBACK, n))
        seen, held = seen - n, held - n
    return tuple(steps) + ((DECODE, 1),)


def _random_schedule(rng, T):
    out = []
    while sum(out) < T:
        out.append(int(min(T - sum(out), rng.integers(1, max(2, T // 2 + 1)))))
    return tuple(out)


#: Negative cases: name -> (base spec, expected error kinds).  Inputs are built by _negative_inputs.
NEGATIVE = {
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
    """One case per entry of ``NEGATIVE``: a small valid case, then broken by ``generate``."""
    out = []
    for name, (op, _) in NEGATIVE.items():
        if op == "attention":
            out.append(CaseSpec(op, "float32", 2, 1, 4, 3, 5, 5, error=name))
        else:
            out.append(CaseSpec(op, "float32", 2, 1, 4, 3, 6, schedule=(2, 4), hist=3 if "cache" in name else 0,
                                start=3 if "cache" in name else 0, n_decode=2 if op == "decode" else 0,
                                error=name))
    return out


def cases_of(suite):
    """The case list of a named suite."""
    if suite == "core":
        return core_cases()
    if suite == "full":
        return full_cases()
    raise SwarefError("argument", f"suite must be one of {SUITES}, got {suite!r}")

