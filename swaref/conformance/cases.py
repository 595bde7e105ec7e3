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

from ..errors import SwarefError
from . import safetensors_io as ST

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
    ``error`` names a negative case (see ``NEGATIVE``).
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

