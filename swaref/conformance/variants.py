"""Simulators of the correct algorithm and of its known-wrong variants.

``Problem`` holds one valid case's inputs and its key table; ``simulate`` runs
the correct rule or a wrong variant (``WRONG_VARIANTS``) through the case's
steps (prefill chunks, decode tokens, rollbacks) and says which keys each query
sees, which its dense score row holds and what the ring holds after each step;
``softmax_rows`` (with the case's softcap and sinks, as a softmax variant
computes them) and ``row_tolerance`` turn that into outputs and tolerances.  The
generator uses them (with ``adversarial``) to make inputs adversarial and to
record by how much each variant misses; the judge uses them to name the variant
a failing port matches.
"""
import collections
import math

import numpy as np

from ..attention import softmax_attend
from .cases import DTYPES, ROLLBACK, SAFETY, U_ACC, GeneratorError, poison_value, quantize, token_positions

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
            self.kpos = np.concatenate([np.arange(s.start - s.hist, s.start),
                                        token_positions(s.start, s.program)]).astype(np.int64)
            self.qpos = self.kpos[s.hist:].copy()
        Nk, Nq = len(self.kpos), len(self.qpos)
        self.q = rng.standard_normal((Nq, s.Hq, s.D))
        self.k = rng.standard_normal((Nk, s.Hkv, s.D))
        self.v = rng.standard_normal((Nk, s.Hkv, s.D))
        self.poisoned = np.zeros(Nk, dtype=bool)
        self.capacity = s.capacity or s.ring
        self.empty_garbage = None
        self.softcap = None if s.softcap is None else float(s.softcap)
        # Drawn after q, k, v: a case without sinks draws exactly what format version 1 drew.
        self.sinks = None if s.sinks is None else float(s.sinks) + rng.uniform(-1.0, 1.0, s.Hq)

    @classmethod
    def from_arrays(cls, spec, q, k, v, kpos, hist, qpos=None, sinks=None):
        """A Problem from stored inputs (the judge's view): k, v, kpos include the ``hist`` history keys;
        queries sit at the last len(q) key positions unless ``qpos`` says otherwise."""
        self = cls.__new__(cls)
        self.spec = spec
        self.softcap = None if spec.softcap is None else float(spec.softcap)
        self.sinks = sinks
        self.scale = 1.0 / math.sqrt(spec.D) if spec.scale is None else float(spec.scale)
        self.q, self.k, self.v = q, k, v
        self.kpos = np.asarray(kpos, dtype=np.int64)
        self.hist = hist
        self.qpos = self.kpos[len(self.kpos) - len(q):].copy() if qpos is None else np.asarray(qpos, np.int64)
        self.poisoned = ~np.isfinite(k).all(axis=(1, 2))
        self.capacity = spec.capacity or spec.ring
        self.empty_garbage = None
        return self

    def quantize(self):
        d = self.spec.dtype
        self.q, self.k, self.v = quantize(self.q, d), quantize(self.k, d), quantize(self.v, d)

    def visible_golden(self):
        """Per query, the key-table indices it sees under spec rules 1 and 4 (rolled-back keys are gone)."""
        mask = mask_of(self.spec)
        alive = np.ones(len(self.kpos), dtype=bool)
        born = np.zeros(len(self.kpos), dtype=np.int64)       # the step that wrote each key
        out = []
        if self.spec.op != "attention":
            born[:self.hist] = -1
            a = self.hist
            for i, (op, n) in enumerate(self.spec.program):
                if op != ROLLBACK:
                    born[a:a + n] = i
                    a += n
        step_of_query = born[len(self.kpos) - len(self.qpos):]
        for t, p in enumerate(self.qpos):
            if self.spec.op != "attention":          # keys rolled back before this query's step are gone
                alive = _alive_at(self, int(step_of_query[t]), born)
            m = alive & visible(mask, int(p), self.kpos)
            out.append(tuple(np.nonzero(m)[0].tolist()))
        return out


def _alive_at(prob, step, born):
    """Keys written by step ``step`` or before and not rolled back by then."""
    alive = born <= step
    a = prob.hist
    written = list(range(prob.hist))
    for i, (op, n) in enumerate(prob.spec.program[:step]):
        if op == ROLLBACK:
            for j in written[len(written) - n:]:
                alive[j] = False
            del written[len(written) - n:]
        else:
            written += range(a, a + n)
            a += n
    return alive


def poison(prob, gold_vis):
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


# --------------------------------------------------------------------------
# Simulators: the correct algorithm and its known-wrong variants
# --------------------------------------------------------------------------

WRONG_VARIANTS = ("window_plus_1", "window_minus_1", "write_before_attend", "no_wrap",
                  "wrong_scale", "ignored_position_offset", "stale_slot_leak",
                  "sink_scaled", "sink_value_row", "softcap_after_mask", "softcap_before_scale",
                  "rollback_keeps_slots",
                  "two_sided_left_plus_1", "two_sided_left_minus_1", "two_sided_right_plus_1",
                  "two_sided_right_minus_1", "two_sided_as_causal", "chunked_as_sliding",
                  "chunk_boundary_minus_1", "chunk_boundary_plus_1", "sink_tokens_dropped",
                  "sink_tokens_in_window", "sink_tokens_plus_1", "sink_tokens_minus_1")
#: The window family's mask variants (spec 1.1 part two): each changes one parameter of the rule.
WINDOW_VARIANTS = WRONG_VARIANTS[WRONG_VARIANTS.index("two_sided_left_plus_1"):]
#: Known-wrong variants only negative cases catch (a port that accepts what it must refuse).
NEGATIVE_VARIANTS = ("rollback_beyond_limit",)
#: What each variant gets wrong, as the runner names it on a FAIL line.
VARIANT_BUGS = {
    "window_plus_1": "sees W+1 keys (p - W <= j <= p)",
    "window_minus_1": "sees W-1 keys",
    "write_before_attend": "writes a prefill chunk into the ring before its queries attend",
    "no_wrap": "the ring stops taking writes once full",
    "wrong_scale": "wrong softmax scale (default 1/sqrt(D) not applied, or the given scale ignored)",
    "ignored_position_offset": "slots or positions taken from the index in the sequence, not the absolute position",
    "stale_slot_leak": "cached keys visible regardless of the window",
    "sink_scaled": "the sink logit multiplied by the softmax scale",
    "sink_value_row": "the sink treated as a key with a value row of ones (its weight reaches the output)",
    "softcap_after_mask": "soft-cap applied after an additive -inf mask: masked keys get the score -softcap",
    "softcap_before_scale": "soft-cap applied to the unscaled score q.k, then scaled",
    "rollback_keeps_slots": "rolled-back slots keep their positions and stay visible until overwritten",
    "rollback_beyond_limit": "accepts a rollback beyond max_rollback and serves later queries from overwritten slots",
    "two_sided_left_plus_1": "two-sided window one key wider on the left (p - left - 1 <= j)",
    "two_sided_left_minus_1": "two-sided window one key narrower on the left (p - left + 1 <= j)",
    "two_sided_right_plus_1": "two-sided window one key wider on the right (j <= p + right + 1)",
    "two_sided_right_minus_1": "two-sided window one key narrower on the right (j <= p + right - 1)",
    "two_sided_as_causal": "two-sided window treated as causal: the lookahead (right) dropped",
    "chunked_as_sliding": "chunked attention treated as a sliding window of the chunk size",
    "chunk_boundary_minus_1": "chunk starts one position early: a query also sees the previous chunk's last key",
    "chunk_boundary_plus_1": "chunk starts one position late: a query misses its chunk's first key",
    "sink_tokens_dropped": "kept sink tokens dropped (the plain sliding window)",
    "sink_tokens_in_window": "sink tokens counted inside the window (a window of W - n_sink keys besides them)",
    "sink_tokens_plus_1": "one sink token too many (n_sink + 1)",
    "sink_tokens_minus_1": "one sink token too few (n_sink - 1)",
}
#: A simulated port: visible key indices per query, softmax scale, ring states per step (traces) and the
#: keys its dense score row holds per query (what an additive mask hides).
Sim = collections.namedtuple("Sim", "vis scale states dense")


def wrong_scale_of(prob):
    """The scale a 'wrong scale' port uses: the default when the case gives one, else no scaling (1.0)."""
    s = prob.spec
    if s.scale is not None:
        return 1.0 / math.sqrt(s.D) if abs(1.0 / math.sqrt(s.D) - prob.scale) > 1e-9 else 2.0 * prob.scale
    return 1.0 if s.D > 1 else 2.0


#: A visibility rule (docs/spec.md rule 1; windows.kernel_params with None for unbounded): key j is visible
#: to query p iff (j < sink and j <= p) or lo(p) <= j <= hi(p), lo(p) = max(p - left, (p // chunk) * chunk
#: + shift), hi(p) = p + right.
Mask = collections.namedtuple("Mask", "left right chunk sink shift")


def mask_of(spec, bug=None):
    """The rule a port with ``bug`` applies to the case's window (None: the correct one)."""
    s = spec
    left, right, chunk, sink, shift = None, 0, 0, s.sink_tokens, 0
    if s.two_sided:
        left, right = s.two_sided
    elif s.chunk:
        chunk = s.chunk
    elif s.window is not None:
        left = s.window - 1
    sliding = not s.two_sided and not s.chunk and s.window is not None
    if sliding and bug in ("window_plus_1", "window_minus_1"):
        left += 1 if bug == "window_plus_1" else -1
    elif s.two_sided and bug is not None and bug.startswith("two_sided_") and bug != "two_sided_as_causal":
        side, delta = bug.split("_")[2], (1 if bug.endswith("plus_1") else -1)
        if side == "left" and left is not None:
            left += delta
        elif side == "right" and right is not None:
            right += delta
    elif s.two_sided and bug == "two_sided_as_causal":
        right = 0
    elif chunk and bug == "chunked_as_sliding":
        chunk, left = 0, s.chunk - 1
    elif chunk and bug in ("chunk_boundary_minus_1", "chunk_boundary_plus_1"):
        shift = -1 if bug == "chunk_boundary_minus_1" else 1
    elif sink and bug == "sink_tokens_dropped":
        sink = 0
    elif sink and bug == "sink_tokens_in_window":
        left = s.window - sink - 1
    elif sink and bug in ("sink_tokens_plus_1", "sink_tokens_minus_1"):
        sink += 1 if bug == "sink_tokens_plus_1" else -1
    return Mask(left, right, chunk, sink, shift)


def visible(mask, p, kpos):
    """Which of the key positions ``kpos`` query position ``p`` sees under ``mask`` -> bool array."""
    kp = np.asarray(kpos, dtype=np.int64)
    m = np.ones(kp.shape, dtype=bool)
    if mask.left is not None:
        m &= kp >= p - mask.left
    if mask.right is not None:
        m &= kp <= p + mask.right
    if mask.chunk:
        m &= kp >= (p // mask.chunk) * mask.chunk + mask.shift
    if mask.sink:
        m |= (kp < mask.sink) & (kp <= p)
    return m


def simulate_attention(prob, bug=None):
    """-> Sim of a one-shot attention port with ``bug`` (no ring states)."""
    mask = mask_of(prob.spec, bug)
    kpos, qpos = prob.kpos, prob.qpos
    if bug == "ignored_position_offset":        # the port numbers keys 0..S-1 and queries as the last T
        S, T = len(kpos), len(qpos)
        kpos = np.arange(S)
        qpos = kpos[S - T:]
    vis = []
    for p in qpos:
        vis.append(tuple(np.nonzero(visible(mask, int(p), kpos))[0].tolist()))
    scale = wrong_scale_of(prob) if bug == "wrong_scale" else prob.scale
    return Sim(vis, scale, None, [tuple(range(len(kpos)))] * len(qpos))


def simulate_trace(prob, bug=None):
    """Run a trace (its program of prefill chunks, decode tokens, rollbacks) through a ring of C slots the
    way a port with ``bug`` would.

    -> Sim whose states[i] is the slot -> key-table index map (-1 empty) after step i.  Key-table
    index j holds position prob.kpos[j], so equal maps mean equal slot positions and contents.
    """
    s = prob.spec
    C, n_sink = prob.capacity, s.sink_tokens
    mask = mask_of(s, bug)
    base = int(prob.kpos[0]) if len(prob.kpos) else 0
    slot = np.full(n_sink + C, -1, dtype=np.int64)
    stored = 0
    nxt = int(s.start)

    def true_slot(p):
        # Rule 4's slot rule: position p < n_sink in slot p, p >= n_sink in slot n_sink + (p - n_sink) mod C.
        return p if p < n_sink else n_sink + (p - n_sink) % C

    def slot_of(p):
        return true_slot(p - base) if bug == "ignored_position_offset" else true_slot(p)

    def write(idx):
        nonlocal stored
        ring = [j for j in idx if int(prob.kpos[j]) >= n_sink]
        for j in idx:                              # sink positions are written whatever the chunk's length
            if int(prob.kpos[j]) < n_sink:
                slot[slot_of(int(prob.kpos[j]))] = j
        for j in ring[max(0, len(ring) - C):]:
            if bug == "no_wrap" and stored >= C:
                continue                           # the ring is full and never wraps: the write is lost
            slot[slot_of(int(prob.kpos[j]))] = j
            stored += 1

    for j in range(prob.hist):                     # a saved ring is loaded as given: slot p mod C
        slot[true_slot(int(prob.kpos[j]))] = j
    stored = prob.hist
    vis, dense, states = [], [], []
    a = 0
    for i, (op, n) in enumerate(s.program):
        if op == ROLLBACK:
            for p in range(nxt - n, nxt):
                if bug != "rollback_keeps_slots":
                    slot[slot_of(p)] = -1
            stored, nxt = max(0, stored - sum(p >= n_sink for p in range(nxt - n, nxt))), nxt - n
            states.append(slot.copy())
            continue
        chunk = list(range(prob.hist + a, prob.hist + a + n))
        write_first = op != 0 or bug == "write_before_attend"
        if write_first:
            write(chunk)
        cached = [int(j) for j in slot if j >= 0]
        cand = cached + ([] if write_first else chunk)
        for t in range(a, a + n):
            p = int(prob.qpos[t])
            seen = []
            shown = visible(mask, p, prob.kpos[cand]) if cand else []
            for j, ok in zip(cand, shown):
                kp = int(prob.kpos[j])
                if kp > p:
                    continue
                leak = bug == "stale_slot_leak" and j in cached
                if ok or leak:
                    seen.append(j)
            vis.append(tuple(sorted(set(seen))))
            dense.append(tuple(cand))
        if not write_first:
            write(chunk)
        states.append(slot.copy())
        a += n
        nxt += n
    scale = wrong_scale_of(prob) if bug == "wrong_scale" else prob.scale
    return Sim(vis, scale, states, dense)


def simulate(prob, bug=None):
    if prob.spec.op == "attention":
        return simulate_attention(prob, bug)
    return simulate_trace(prob, bug)


def slot_positions(prob, slot_map):
    """A simulated ring state (slot -> key-table index, -1 empty) as slot positions (-1 empty)."""
    return np.where(slot_map >= 0, prob.kpos[np.maximum(slot_map, 0)], -1)


def abs_error(actual, expected):
    """|actual - expected| per element; NaN or Inf against a finite value is an infinite error.

    The same special value on both sides (NaN and NaN, +Inf and +Inf) is no error.
    """
    with np.errstate(all="ignore"):
        diff = np.abs(actual - expected)
        same_special = (np.isnan(actual) & np.isnan(expected)) | (np.isinf(actual) & (actual == expected))
        diff = np.where(same_special, 0.0, diff)
        return np.where(np.isnan(diff), np.inf, diff)


def error_units(actual, expected, atol):
    """abs_error in units of the row tolerance atol[row]."""
    diff = abs_error(actual, expected)
    return diff / atol.reshape(atol.shape + (1,) * (diff.ndim - atol.ndim))


def softmax_rows(prob, vis, scale, bug=None, dense=None):
    """Outputs of every query over its visible keys, float64, with the case's softcap and sinks as a port
    with the softmax ``bug`` computes them; a query that sees nothing gives NaN."""
    s = prob.spec
    out = np.empty((len(prob.qpos), s.Hq, s.D))
    cap, sinks = prob.softcap, prob.sinks
    if bug == "softcap_before_scale" and cap is not None:
        cap = abs(scale) * cap           # scale * c * tanh(q.k / c) = c' * tanh(scale * q.k / c'), c' = |scale| c
    if bug == "sink_scaled" and sinks is not None:
        sinks = sinks * scale
    with np.errstate(all="ignore"):
        for t, idx in enumerate(vis):
            if not idx:
                out[t] = np.nan
                continue
            idx = list(idx)
            if bug == "softcap_after_mask" and cap is not None:
                out[t] = _capped_after_mask(prob, t, idx, list(dense[t]), scale)
                continue
            out[t] = softmax_attend(prob.q[t], prob.k[idx], prob.v[idx], scale, cap, sinks)
            if bug == "sink_value_row" and sinks is not None:     # + the sink's weight times a row of ones
                ones = np.ones_like(prob.v[idx])
                out[t] += 1.0 - softmax_attend(prob.q[t], prob.k[idx], ones, scale, cap, sinks)
    return out


def _capped_after_mask(prob, t, idx, dense, scale):
    """One query of an engine that adds -inf to masked scores of its dense row, then soft-caps:
    c * tanh(-inf) = -c, so every masked key gets weight exp(-c - m) (a NaN score stays NaN)."""
    s, c = prob.spec, prob.softcap
    G = s.Hq // s.Hkv
    q = prob.q[t].reshape(s.Hkv, G, s.D)
    k, v = prob.k[dense], prob.v[dense]
    raw = np.einsum("hgd,nhd->hgn", q, k) * scale
    visible = np.isin(dense, idx)
    sc = np.where(visible, c * np.tanh(raw / c), np.where(np.isnan(raw), np.nan, -c))
    w = np.exp(sc - sc.max(axis=-1, keepdims=True))
    w /= w.sum(axis=-1, keepdims=True)
    return np.einsum("hgn,nhd->hgd", w, v).reshape(s.Hq, s.D)


def variant_rows(prob, bug, sim=None):
    """Outputs of a port with ``bug`` (None: the correct algorithm) -> (outputs, Sim)."""
    sim = simulate(prob, bug) if sim is None else sim
    return softmax_rows(prob, sim.vis, sim.scale, bug, sim.dense), sim


def row_tolerance(prob, vis):
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
        if prob.sinks is not None:                                   # a sink logit is a logit too
            A = max(A, float(np.abs(prob.sinks).max()))
        atol[t] = SAFETY * vmax * (u_out + u_acc * (2.0 * math.sqrt(s.D) * A + len(idx) + 2))
    return atol
