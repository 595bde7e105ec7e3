"""The judge: one case's result against its golden values -> a Verdict.

A result is one of ("missing", message), ("crash", message), ("error", kind,
message) for a rejection, or ("tensors", tensors, dtypes, metadata).  Outputs
are compared per row against ``expected.out_atol`` (NaN/Inf against a finite
value is an infinite error), cache states exactly, rejections by kind
(docs/conformance.md, "How results are judged").  A failing output is also
compared with every applicable known-wrong variant, simulated from the case's
own inputs, so the FAIL line can say which bug it looks like.
"""
import dataclasses

import numpy as np

from .cases import ACCEPTED_FLOAT, DTYPES, ROLLBACK, CaseSpec, token_positions
from . import report
from . import safetensors_io as ST
from .variants import VARIANT_BUGS, Problem, abs_error, error_units, slot_positions, variant_rows

STATUSES = ("PASS", "FAIL", "MISSING", "SKIP")


@dataclasses.dataclass
class Verdict(report.Verdict):
    """The judgement of one case; ``line()`` is what the runner prints, ``to_json()`` what the report holds."""
    # case_id, status (one of STATUSES) and message come from report.Verdict
    max_abs_err: float = None
    max_rel_err: float = None
    err_units: float = None     # max |err| / atol
    worst_index: list = None
    first_bad_step: int = None
    matches_variants: list = None

    ERROR_FIELDS = ("max_abs_err", "max_rel_err", "err_units")

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


def as_f64(arr, dt):
    """A stored tensor (BF16 as bits) as float64 values (exact)."""
    return np.asarray(ST.as_float(arr, dt), dtype=np.float64)


def judge(entry, case, result):
    """Judge one case (see the module docstring for the result forms) -> Verdict."""
    cid = entry["id"]
    if result[0] == "missing":
        return Verdict(cid, "MISSING", result[1])
    if result[0] == "crash":
        return Verdict(cid, "FAIL", result[1])
    if entry["expect"] == "invalid":
        return _judge_negative(entry, result)
    if result[0] == "error":
        return Verdict(cid, "FAIL", f"rejected a valid input with kind {result[1]!r}"
                       + (f": {result[2]}" if result[2] else ""))
    return _judge_tensors(entry, case, result[1], result[2], result[3])


def _judge_negative(entry, result):
    cid, want = entry["id"], entry["error_kinds"]
    if result[0] != "error":
        named = sorted(b for b, r in entry.get("wrong_variants", {}).items() if r.get("applicable"))
        return Verdict(cid, "FAIL", f"accepted an input that must be rejected with kind {want[0]!r}"
                       + "".join(f"; matches known wrong variant {b} ({VARIANT_BUGS[b]})" for b in named),
                       matches_variants=named or None)
    if result[1] in want:
        return Verdict(cid, "PASS", f"rejected with kind {result[1]!r}")
    return Verdict(cid, "FAIL", f"rejected with kind {result[1]!r}, expected one of {want}"
                   + (f" ({result[2]})" if result[2] else ""))


def _layout_problem(entry, case, rt, rd, rmeta):
    """Why a result cannot be compared (other inputs, a missing tensor, a shape or dtype), or None."""
    etensors, _, emeta = case
    if rmeta.get("input_digest") not in (None, emeta.get("input_digest")):
        return ("result was computed from other inputs (input_digest differs): "
                "a results folder of another suite version?")
    for n in _result_names(etensors):
        if n not in rt:
            return f"result has no tensor {n!r} (has {sorted(rt)})"
        eshape = etensors["expected." + n].shape
        if tuple(rt[n].shape) != tuple(eshape):
            return f"{n}: shape {list(rt[n].shape)}, expected {list(eshape)}"
        ok = ("I64",) if n == "cache_pos" else ACCEPTED_FLOAT[DTYPES[entry["dtype"]][0]]
        if rd[n] not in ok:
            return f"{n}: dtype {rd[n]}, expected one of {list(ok)}"
    return None


def _result_names(etensors):
    return [n[len("expected."):] for n in sorted(etensors) if n.startswith("expected.") and not n.endswith("_atol")]


def _judge_tensors(entry, case, rt, rd, rmeta):
    cid = entry["id"]
    problem = _layout_problem(entry, case, rt, rd, rmeta)
    if problem:
        return Verdict(cid, "FAIL", problem)
    etensors = case[0]
    expected, atol = etensors["expected.out"], etensors["expected.out_atol"]
    actual = as_f64(rt["out"], rd["out"])
    units = error_units(actual, expected, atol)
    v = Verdict(cid, "PASS", err_units=float(units.max()), worst_index=_worst(units), **_abs_rel(actual, expected))
    row_units = units.reshape(units.shape[0], -1).max(axis=1)
    bad_rows = np.nonzero(row_units > 1.0)[0]
    msgs = [f"{bad_rows.size} output rows beyond tolerance (first row {int(bad_rows[0])})"] if bad_rows.size else []
    if "expected.cache_pos" in etensors:
        bad_step = _first_bad_cache_step(case, rt, rd)
        if bad_step is not None:
            msgs.append(f"cache state differs from step {bad_step} on (slot positions "
                        f"{rt['cache_pos'][bad_step].tolist()}, expected "
                        f"{etensors['expected.cache_pos'][bad_step].tolist()})")
        v.first_bad_step = _first_step(etensors, bad_rows, bad_step)
    if msgs:
        v.status = "FAIL"
        msgs += _hints(entry, case, actual, rt.get("cache_pos"))
        v.matches_variants = matching_variants(entry, case, actual, rt.get("cache_pos"))
        msgs += [f"matches known wrong variant {b} ({VARIANT_BUGS[b]})" for b in v.matches_variants]
        v.message = "; ".join(msgs)
    return v


def _abs_rel(actual, expected):
    diff = abs_error(actual, expected)
    with np.errstate(all="ignore"):
        rel = np.where(np.abs(expected) > 0, diff / np.abs(expected), np.where(diff > 0, np.inf, 0.0))
    return {"max_abs_err": float(diff.max()) if diff.size else 0.0,
            "max_rel_err": float(rel.max()) if rel.size else 0.0}


def _worst(units):
    return [int(i) for i in np.unravel_index(int(np.argmax(units)), units.shape)] if units.size else []


def _first_bad_cache_step(case, rt, rd):
    """The first step whose slot positions, or contents of a valid slot, differ (exactly), or None."""
    etensors, edtypes, _ = case
    epos = etensors["expected.cache_pos"]
    for i in range(epos.shape[0]):
        valid = epos[i] >= 0
        if not np.array_equal(rt["cache_pos"][i], epos[i]):
            return i
        for n in ("cache_k", "cache_v"):
            a = as_f64(rt[n][i], rd[n])[valid]
            e = as_f64(etensors["expected." + n][i], edtypes["expected." + n])[valid]
            if not bool(((a == e) | (np.isnan(a) & np.isnan(e))).all()):
                return i
    return None


def _program_of(tensors):
    """A trace's steps as (op, n) pairs, from its ``steps`` tensor or its schedule and n_decode."""
    if "steps" in tensors:
        return [(int(op), int(n)) for op, n in tensors["steps"].reshape(-1, 2)]
    return [(0, int(n)) for n in tensors["schedule"].reshape(-1)] + [(1, 1)] * int(tensors["n_decode"])


def _first_step(etensors, bad_rows, bad_step):
    """The first step (prompt chunk, decode token, rollback) whose output rows or cache state went wrong."""
    rows = [0 if op == ROLLBACK else n for op, n in _program_of(etensors)]
    first = int(np.repeat(np.arange(len(rows)), rows)[bad_rows[0]]) if bad_rows.size else None
    if bad_step is not None:
        first = bad_step if first is None else min(first, bad_step)
    return first


def _hints(entry, case, actual, cache_pos):
    """Say when NaN/Inf reached the output: in a poison case, a masked or stale key was read."""
    bad = np.nonzero(~np.isfinite(actual).all(axis=(1, 2)))[0]
    if not bad.size:
        return []
    where = f"NaN/Inf in {bad.size} output rows (first row {int(bad[0])})"
    if entry.get("poison"):
        return [where + ": a masked or stale key (poisoned with NaN/Inf) reached the output"]
    return [where]


def problem_of(entry, case):
    """The case's inputs as a variants.Problem (float64, history keys first), to simulate wrong variants."""
    t, d, _ = case
    f64 = {n: as_f64(t[n], d[n]) for n in ("q", "k", "v", "init_k", "init_v") if n in t}
    scalar = lambda n: int(t[n].reshape(-1)[0]) if n in t else None  # noqa: E731
    real = lambda n: float(t[n].reshape(-1)[0]) if n in t else None  # noqa: E731
    sinks = np.asarray(t["sinks"], dtype=np.float64) if "sinks" in t else None
    q, k, v = f64["q"], f64["k"], f64["v"]
    Hq, Hkv, D = q.shape[1], k.shape[1], q.shape[2]
    # CaseSpec.sinks is a level (it only says "has sinks" here); the values go to Problem.from_arrays
    common = {"scale": real("scale"), "softcap": real("softcap"), "sinks": None if sinks is None else 1.0,
              "sink_tokens": scalar("sink_tokens") or 0, "chunk": scalar("attention_chunk") or 0,
              "two_sided": tuple(None if int(x) == -1 else int(x) for x in t["two_sided"]) if "two_sided" in t else ()}
    if entry["op"] == "attention":
        spec = CaseSpec("attention", entry["dtype"], Hq, Hkv, D, scalar("window"), q.shape[0], k.shape[0], **common)
        return Problem.from_arrays(spec, q, k, v, t["k_pos"], 0, qpos=t["q_pos"], sinks=sinks)
    n_dec, start = scalar("n_decode"), scalar("start")
    sched = tuple(int(c) for c in t["schedule"].reshape(-1))
    steps = tuple(_program_of(t)) if "steps" in t else ()
    hist = 0
    kpos = np.asarray(token_positions(start, steps or [(0, q.shape[0])]), dtype=np.int64)
    if "init_pos" in t:
        ip = t["init_pos"]
        order = np.argsort(np.where(ip >= 0, ip, np.iinfo(np.int64).max), kind="stable")[:int((ip >= 0).sum())]
        hist = order.size
        k, v = np.concatenate([f64["init_k"][order], k]), np.concatenate([f64["init_v"][order], v])
        kpos = np.concatenate([ip[order], kpos])
    spec = CaseSpec(entry["op"], entry["dtype"], Hq, Hkv, D, scalar("window"), q.shape[0] - n_dec,
                    schedule=sched, n_decode=n_dec, start=start, hist=hist, capacity=scalar("capacity"),
                    steps=steps, **common)
    return Problem.from_arrays(spec, q, k, v, kpos, hist, sinks=sinks)


def matching_variants(entry, case, actual, cache_pos):
    """The applicable known-wrong variants whose output (within tolerance) and cache states the result matches."""
    try:
        prob = problem_of(entry, case)
        return [bug for bug, rec in sorted(entry.get("wrong_variants", {}).items())
                if rec.get("applicable") and _matches(prob, bug, actual, cache_pos, case[0]["expected.out_atol"])]
    except (ValueError, IndexError, KeyError, TypeError):       # a hand-made suite's odd inputs: no hint
        return []


def _matches(prob, bug, actual, cache_pos, atol):
    """Within tolerance of the variant on every row where the variant sees a key (elsewhere its output
    is undefined: NaN, zeros, anything), and the same slot positions after every step."""
    rows, sim = variant_rows(prob, bug)
    vis, states = sim.vis, sim.states
    seen = np.array([len(v) > 0 for v in vis])
    if not seen.any() or error_units(actual[seen], rows[seen], atol[seen]).max() > 1.0:
        return False
    return states is None or cache_pos is None or all(
        np.array_equal(cache_pos[i], slot_positions(prob, s)) for i, s in enumerate(states))
