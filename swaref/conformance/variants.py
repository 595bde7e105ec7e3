"""Simulators of the correct algorithm and of its known-wrong variants, and adversarial inputs.

``Problem`` holds one valid case's inputs and its key table; ``simulate`` runs
the correct rule or a wrong variant (``WRONG_VARIANTS``) and says which keys
each query sees and what the ring holds after each step; ``softmax_rows`` and
``row_tolerance`` turn that into outputs and tolerances.  The generator uses
them to make inputs adversarial (``boost``: each variant's extra or missing key
gets a large logit and a distinct value) and to record by how much each variant
misses; the judge uses them to name the variant a failing port matches.
"""
import math

import numpy as np

from ..attention import softmax_attend
from .cases import DTYPES, SAFETY, U_ACC, GeneratorError, poison_value, quantize

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

    @classmethod
    def from_arrays(cls, spec, q, k, v, kpos, hist, qpos=None):
        """A Problem from stored inputs (the judge's view): k, v, kpos include the ``hist`` history keys;
        queries sit at the last len(q) key positions unless ``qpos`` says otherwise."""
        self = cls.__new__(cls)
        self.spec = spec
        self.scale = 1.0 / math.sqrt(spec.D) if spec.scale is None else float(spec.scale)
        self.q, self.k, self.v = q, k, v
        self.kpos = np.asarray(kpos, dtype=np.int64)
        self.hist = hist
        self.qpos = self.kpos[len(self.kpos) - len(q):].copy() if qpos is None else np.asarray(qpos, np.int64)
        self.poisoned = ~np.isfinite(k).all(axis=(1, 2))
        self.capacity = spec.capacity or spec.window
        self.empty_garbage = None
        return self

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
                  "wrong_scale", "ignored_position_offset", "stale_slot_leak")
#: What each variant gets wrong, as the runner names it on a FAIL line.
VARIANT_BUGS = {
    "window_plus_1": "sees W+1 keys (p - W <= j <= p)",
    "window_minus_1": "sees W-1 keys",
    "write_before_attend": "writes a prefill chunk into the ring before its queries attend",
    "no_wrap": "the ring stops taking writes once full",
    "wrong_scale": "wrong softmax scale (default 1/sqrt(D) not applied, or the given scale ignored)",
    "ignored_position_offset": "slots or positions taken from the index in the sequence, not the absolute position",
    "stale_slot_leak": "cached keys visible regardless of the window",
}


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


def softmax_rows(prob, vis, scale):
    """Outputs of every query over its visible keys, float64; a query that sees nothing gives NaN."""
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


def boost(prob, witnesses, gold_vis, variant_vis):
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


def pick_witnesses(prob, gold_vis, variant_vis, want_scale):
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

