"""The generator: golden results for each case, adversarial inputs, and the suite folder.

``build_case`` turns a ``CaseSpec`` into its stored tensors (inputs and
``expected.*`` results from swaref's NumPy reference in float64) and its
manifest entry, after checking that every applicable wrong variant misses by
at least ``MIN_MISS`` tolerance units or changes the cache.
``generate_suite`` writes the case files and ``manifest.json``: the same
swaref version always writes the same bytes.
"""
import dataclasses
import hashlib
import json
import math
import os

import numpy as np

from .. import SPEC_VERSION, __version__
from ..attention import attention
from ..cache import RollingBufferCache
from ..errors import ERROR_KINDS, SwarefError
from ..prefill import decode_step, prefill
from ..cache import rollback
from . import safetensors_io as ST
from .cases import (BASE_SPEC, DTYPES, FEATURES_1_1, FORMAT, FORMAT_VERSION, MIN_MISS, negative_1_1,
                    PREFILL, ROLLBACK, SAFETY, U_ACC, GeneratorError, cases_of, negative_kinds, seed_of, to_storage)
from .files import NAME_PATTERN, is_safe_name
from .ports import reference_port
from .suite import manifest_hash
from .adversarial import boost, boost_softmax, pick_witnesses, very_negative_row
from .variants import (WINDOW_VARIANTS, WRONG_VARIANTS, Problem, error_units, mask_of, poison, row_tolerance,
                       simulate, slot_positions, variant_rows)

#: The manifest's generator.module: part of every suite hash, so it keeps the name the
#: format was published under (swaref.vectors still imports, as an alias of this package).
GENERATOR_MODULE = "swaref.vectors"

def _golden_swaref(prob):
    """Golden outputs and cache states from swaref's public NumPy reference on float64 copies."""
    s = prob.spec
    q, k, v = prob.q, prob.k, prob.v
    kw = {"scale": s.scale, "softcap": prob.softcap, "sinks": prob.sinks}
    if s.op == "attention":
        return attention(q, k, v, window=s.window_obj, q_pos=prob.qpos, k_pos=prob.kpos, **kw), None
    slack = s.ring is not None and prob.capacity > s.ring
    cache = RollingBufferCache(s.window_obj, s.Hkv, s.D, dtype=np.float64,
                               capacity=prob.capacity if s.ring is None or slack else None)
    if prob.hist:
        prefill(np.zeros((prob.hist, s.Hq, s.D)), k[:prob.hist], v[:prob.hist], cache,
                start=int(prob.kpos[0]), chunk_size=prob.hist)
    h = prob.hist
    outs, states = [], []
    a = 0
    for op, n in s.program:
        if op == ROLLBACK:
            rollback(cache, n)
        else:
            step = prefill if op == PREFILL else decode_step
            extra = {"chunk_size": n} if op == PREFILL else {}
            outs.append(step(q[a:a + n], k[h + a:h + a + n], v[h + a:h + a + n], cache,
                             start=int(prob.qpos[a]), **extra, **kw))
            a += n
        states.append((cache.positions.copy(), cache.k.copy(), cache.v.copy()))
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
    if s.sink_tokens:
        i64("sink_tokens", s.sink_tokens)
    if s.two_sided:                             # -1: unbounded on that side (FlashAttention's, ONNX's spelling)
        i64("two_sided", [-1 if x is None else x for x in s.two_sided])
    if s.chunk:
        i64("attention_chunk", s.chunk)
    if s.scale is not None:
        t["scale"] = (np.asarray(float(s.scale), dtype=np.float64), "F64")
    if s.softcap is not None:
        t["softcap"] = (np.asarray(float(s.softcap), dtype=np.float64), "F64")
    if prob.sinks is not None:
        t["sinks"] = (np.asarray(prob.sinks, dtype=np.float64), "F64")
    if s.steps:
        i64("steps", np.asarray(s.steps, dtype=np.int64).reshape(-1, 2))
    return t


def build_case(spec):
    """-> (tensors {name: (array, dtype name)}, manifest entry without file hash) of a valid case."""
    if spec.error:
        return _negative_case(spec)
    prob, out, states, atol, variants, _ = _first_good_build(spec)
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


def _first_good_build(spec):
    """The first try whose every applicable variant misses by MIN_MISS or changes the cache.

    A case with softcap or sinks first tries a softmax witness (adversarial.boost_softmax); should it
    weaken another variant below the margin, the case is built without it.  Fallbacks: witness values
    that differ in magnitude too, then all that again with the witnesses of the variants that missed
    picked first (where witnesses compete for queries, the first variants win).  A case that passes at
    once keeps its bytes; one that never passes raises the first GeneratorError.
    """
    softmax = (True, False) if spec.softcap is not None or spec.sinks is not None else (False,)
    tries = [(w, spread) for spread in (False, True) for w in softmax]
    first, error = (), None
    for _ in range(2):
        for softmax_witness, spread in tries:
            built = _build_valid(spec, softmax_witness, spread, first)
            if not built[-1]:
                return built
            error = error or built[-1][0][1]
        first = tuple(b for b, _ in built[-1])
    raise error


def _build_valid(spec, softmax_witness, spread, first):
    """One try -> (prob, out, states, atol, variant records, [(variant, GeneratorError)] that missed)."""
    prob, applicable = _adversarial_problem(spec, softmax_witness, spread, first)
    out, states = _golden_swaref(prob)
    atol, sim_states = _check_simulator(prob, out, states)
    # Every applicable wrong variant must miss by MIN_MISS tolerance units or change the cache.
    variants, missed = {}, []
    for b in WRONG_VARIANTS:
        try:
            variants[b] = _variant_record(prob, b, out, atol, sim_states) if b in applicable else {"applicable": False}
        except GeneratorError as e:
            missed.append((b, e))
    return prob, out, states, atol, variants, missed


def _adversarial_problem(spec, softmax_witness=False, spread=False, first=()):
    """The case's inputs (seeded by its id), poisoned if asked, boosted so that every wrong variant shows."""
    prob = Problem(spec, np.random.default_rng(seed_of(spec.case_id)))
    prob.quantize()
    gold_vis = prob.visible_golden()
    if spec.poison:
        poison(prob, gold_vis)
    applicable = [b for b in WRONG_VARIANTS if _applicable(prob, b)]
    sims = {b: simulate(prob, b) for b in applicable}
    order = [b for b in first if b in applicable] + [b for b in applicable if b not in first]
    vis_change = {b: sims[b].vis for b in order if sims[b].vis != gold_vis}
    witnesses = pick_witnesses(prob, gold_vis, vis_change, "wrong_scale" in applicable)
    boost(prob, witnesses, gold_vis, vis_change, spread)
    hosts = {w[0] for w in witnesses}
    if softmax_witness:
        hosts |= boost_softmax(prob, gold_vis, simulate(prob, None).dense, witnesses)
    if spec.neg_row:
        very_negative_row(prob, gold_vis, hosts)
    return prob, applicable


def _check_simulator(prob, out, states):
    """The simulator of the correct algorithm must agree with swaref -> (atol per row, simulated states)."""
    cid = prob.spec.case_id
    gold_vis = prob.visible_golden()
    sim_out, sim = variant_rows(prob, None)
    sim_states = sim.states
    if sim.vis != gold_vis:
        raise GeneratorError(f"{cid}: simulator visibility disagrees with rules 1 and 4")
    atol = row_tolerance(prob, gold_vis)
    if not np.isfinite(out).all():
        raise GeneratorError(f"{cid}: golden output is not finite (poison reached it)")
    if (np.abs(sim_out - out).max(axis=(1, 2)) > 1e-3 * atol).any():
        raise GeneratorError(f"{cid}: simulator and swaref disagree")
    for i, (pos, _, _) in enumerate(states or ()):
        if not np.array_equal(pos, slot_positions(prob, sim_states[i])):
            raise GeneratorError(f"{cid}: simulated cache disagrees with swaref at step {i}")
    return atol, sim_states


def _variant_record(prob, bug, out, atol, sim_states):
    """The manifest record of an applicable variant: how far its output misses, which cache states differ."""
    rows, sim = variant_rows(prob, bug)
    st = sim.states
    miss = float(error_units(rows, out, atol).max())
    wrong_steps = [i for i, (g, w) in enumerate(zip(sim_states or (), st or ())) if not np.array_equal(g, w)]
    if miss < MIN_MISS and not wrong_steps:
        raise GeneratorError(f"{prob.spec.case_id}: wrong variant {bug} would pass (misses by {miss:.2f} "
                             f"tolerance units, cache unchanged)")
    return {"applicable": True, "output_miss_units": round(miss, 2) if math.isfinite(miss) else "inf",
            "cache_steps_wrong": len(wrong_steps), "first_wrong_step": wrong_steps[0] if wrong_steps else None}


#: When each softmax variant of spec 1.1 changes anything: the case has the input, and it matters.
_SOFTMAX_VARIANTS = {
    "sink_scaled": lambda prob: prob.sinks is not None and abs(prob.scale) != 1.0,
    "sink_value_row": lambda prob: prob.sinks is not None,
    "softcap_before_scale": lambda prob: prob.softcap is not None and abs(prob.scale) != 1.0 and any(
        len(v) >= 2 for v in simulate(prob, None).vis),
    "softcap_after_mask": lambda prob: prob.softcap is not None and _some_row_masks(prob),
}


def _some_row_masks(prob):
    """Whether some query's dense score row (what an engine with an additive mask holds) has a masked key."""
    sim = simulate(prob, None)
    return any(len(dense) > len(vis) for vis, dense in zip(sim.vis, sim.dense))


def _applicable(prob, bug):
    s = prob.spec
    if bug in _SOFTMAX_VARIANTS:
        return _SOFTMAX_VARIANTS[bug](prob)
    if bug == "rollback_keeps_slots":               # the state after the rollback shows it
        return s.op != "attention" and any(op == ROLLBACK and n > 0 for op, n in s.program)
    if s.op == "attention" and bug in ("write_before_attend", "no_wrap", "stale_slot_leak"):
        return False
    if s.window is None and bug in ("window_plus_1", "window_minus_1"):
        return False
    if s.ring is None and bug in ("stale_slot_leak", "no_wrap"):      # a full-attention cache never evicts
        return False
    if bug in WINDOW_VARIANTS and mask_of(s, bug) == mask_of(s):      # not this case's kind of window
        return False
    gold_vis, _, gold_st, _ = simulate(prob, None)
    if bug == "wrong_scale":           # the scale only matters where a query sees two keys, or a key and a sink
        return any(len(v) >= (1 if prob.sinks is not None else 2) for v in gold_vis)
    vis, _, st, _ = simulate(prob, bug)
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
                  "history": s.hist, "capacity": s.capacity or s.ring, "steps": len(s.program)})
    e["poison"] = s.poison
    e["softcap"] = None if s.softcap is None else float(s.softcap)
    e["sinks"] = s.sinks is not None
    e["features"] = s.features
    e["sink_tokens"] = s.sink_tokens
    e["two_sided"] = list(s.two_sided) if s.two_sided else None
    e["attention_chunk"] = s.chunk or None
    return e


# Negative cases -------------------------------------------------------------

def _negative_case(spec):
    rng = np.random.default_rng(seed_of(spec.case_id))
    name = spec.error
    prob = Problem(dataclasses.replace(spec, error=""), rng)
    prob.quantize()
    t = _input_tensors(prob)
    entry = _entry(spec)
    entry["error_kinds"] = list(negative_kinds(name))
    entry["negative"] = name
    if negative_1_1(name):
        _, _, features, catches = negative_1_1(name)
        entry["features"] = sorted(set(entry["features"]) | set(features))
        if catches:
            entry["wrong_variants"] = {b: {"applicable": True} for b in catches}
        _break_1_1(name, t)
        return t, entry
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
    return t, entry


def _break_1_1(name, t):
    """The change that makes a spec 1.1 negative case invalid (most are invalid by their spec already)."""
    if name == "sinks-wrong-length":
        t["sinks"] = (np.append(t["sinks"][0], 0.5), "F64")
    elif name == "sinks-matrix":
        t["sinks"] = (t["sinks"][0].reshape(1, -1), "F64")
    elif name == "sinks-nonfinite":
        t["sinks"] = (np.array([1.0, math.inf]), "F64")
    elif name == "steps-unknown-op":
        t["steps"] = (np.array([[0, 3], [3, 1]], dtype=np.int64), "I64")
    elif name == "two-sided-negative":          # -1 is "unbounded" (FlashAttention's spelling): -2 is the bad one
        t["two_sided"] = (np.array([-2, 2], dtype=np.int64), "I64")
    elif name in ("two-sided-and-window", "chunk-and-window"):
        t["window"] = (np.asarray(3, dtype=np.int64), "I64")
    elif name == "two-sided-no-visible-key":    # keys 0..4; the query at 7 sees 6..8
        t["q_pos"] = (np.array([0, 1, 2, 3, 7], dtype=np.int64), "I64")
    elif name == "chunk-no-visible-key":        # keys 0..4; the query at 8 sees its chunk 8..11 up to itself
        t["q_pos"] = (np.array([0, 1, 2, 3, 8], dtype=np.int64), "I64")
    elif name == "chunk-zero":
        t["attention_chunk"] = (np.asarray(0, dtype=np.int64), "I64")
    elif name == "chunk-negative":
        t["attention_chunk"] = (np.asarray(-3, dtype=np.int64), "I64")
    elif name == "sink-tokens-negative":
        t["sink_tokens"] = (np.asarray(-1, dtype=np.int64), "I64")
    elif name == "sink-tokens-without-window":
        del t["window"]
    elif name == "steps-decode-of-two":        # one decode step of 2 tokens (and n_decode to match)
        t["steps"] = (np.array([[0, 2], [1, 2]], dtype=np.int64), "I64")
        t["schedule"] = (np.array([2], dtype=np.int64), "I64")
        t["n_decode"] = (np.asarray(2, dtype=np.int64), "I64")


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
        "softcap": "with a 'softcap' tensor c: each visible key's score s = scale * q.k becomes c * tanh(s / c) "
                   "before the softmax; masked keys are not in the row",
        "sinks": "with a 'sinks' tensor [Hq]: w_j = exp(s_j - m) / (exp(sinks[h] - m) + sum_i exp(s_i - m)), "
                 "m = max(sinks[h], max_i s_i); the sink is not scaled and has no value row",
        "slack": "capacity C >= W; position p lives in slot p mod C",
        "rollback": "a 'steps' row (2, n) empties the slots of the last n positions and moves the next position "
                    "back by n; refused (kind rollback) beyond max_rollback: n <= n_held - W + 1 once the ring "
                    "has evicted a token, any n <= tokens written otherwise",
        "sink_tokens": "with a 'sink_tokens' tensor n (and 'window' W): key j is visible to query p iff j <= p and "
                       "(j < n or p - W < j); a cache has n fixed slots first (position p < n in slot p) and a ring of "
                       "C = 'capacity' slots (p >= n in slot n + (p - n) mod C): cache states have n + C slots",
        "two_sided": "with a 'two_sided' tensor (left, right), -1 = unbounded on that side: p - left <= j <= p + right; "
                     "no 'window'; attention only (a cache is causal: a lookahead given to a cache is rejected, "
                     "kind window); (W - 1, 0) is the window W",
        "chunked": "with an 'attention_chunk' tensor C: j <= p and j // C == p // C (not a sliding window); no "
                   "'window'; a cache has capacity >= C slots (default C), position p in slot p mod capacity",
        "rollback_general": "rollback(n) is possible iff n <= tokens written and (no ring position was evicted, or "
                            "lo(N - n) >= the oldest ring position held), N the next position, lo(P) the first "
                            "non-sink key a query at P needs: max(P - W + 1, n_sink) sliding, (P // C) * C chunked",
        "spec_1_1_features": list(FEATURES_1_1),
        "base_spec_version": BASE_SPEC,
        "errors": list(ERROR_KINDS),
    }


def _data_digest(tensors):
    h = hashlib.sha256()
    for name in sorted(tensors):
        arr, dt = tensors[name]
        h.update(f"{name}:{dt}:{list(np.shape(arr))};".encode())
        h.update(np.ascontiguousarray(arr, dtype=ST.DTYPES[dt]).tobytes())
    return h.hexdigest()


def generate_suite(out_dir, suite="core", cases=None, log=None):
    """Write a suite into ``out_dir`` (created if needed); returns the manifest dict."""
    specs = cases_of(suite) if cases is None else list(cases)
    ids = [c.case_id for c in specs]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise GeneratorError(f"duplicate case ids: {sorted(dup)}")
    unsafe = [i for i in ids if not is_safe_name(i)]
    if unsafe:       # ids become file names and --exec arguments: letters, digits and '._-' only
        raise GeneratorError(f"unsafe case id {unsafe[0]!r}: a case id must match {NAME_PATTERN}")
    os.makedirs(out_dir, exist_ok=True)
    entries = []
    for spec in specs:
        entries.append(_write_case(out_dir, spec))
        if log:
            log(spec.case_id)
    manifest = _manifest(suite if cases is None else "custom", entries)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    return manifest


#: Inputs format versions 2 and 3 added, and the features that need them.
_INPUTS_2 = ("softcap", "sinks", "steps")
_INPUTS_3 = ("sink_tokens", "two_sided", "attention_chunk")
_FEATURES_3 = ("sink_tokens", "two_sided", "chunked")


def _write_case(out_dir, spec):
    """Build one case, write ``<case_id>.safetensors`` and return its complete manifest entry."""
    tensors, entry = build_case(spec)
    digest = _data_digest(tensors)
    # A case that needs no 1.1 feature is a format version 1 file, byte for byte; one that needs only part
    # one's a version 2 file (as version 2 wrote it).
    features = set(entry.get("features", ()))
    if features & set(_FEATURES_3) or any(n in tensors for n in _INPUTS_3):
        version = FORMAT_VERSION
    else:
        version = 2 if features or any(n in tensors for n in _INPUTS_2) else 1
    meta = {"format": FORMAT, "format_version": str(version), "case_id": spec.case_id,
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
    return entry


def _manifest(suite, entries):
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "spec_version": SPEC_VERSION, "suite": suite,
        "generator": {"name": "swaref", "version": __version__, "module": GENERATOR_MODULE},
        "conventions": conventions(),
        "tolerance_model": {
            "out": "atol[row] = SAFETY * vmax * (u_out + u_acc * (2 * sqrt(D) * A + n + 2)); rtol = 0",
            "SAFETY": SAFETY, "u_out": {k: v[1] for k, v in DTYPES.items()}, "u_acc": U_ACC,
            "min_wrong_variant_miss_units": MIN_MISS,
            "exact": ["cache_pos", "cache_k", "cache_v", "error kinds"],
        },
        "cases": sorted(entries, key=lambda e: e["id"]),
    }
    manifest["suite_hash"] = manifest_hash(manifest)
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


