"""Adversarial inputs: witnesses that make every applicable wrong variant show by a margin.

``pick_witnesses`` and ``boost`` (spec 1.0): a witness query sees one key a
variant adds or drops, with a large logit and a distinct value.  Spec 1.1:
``boost_softmax`` makes one free query a witness of the softmax variants (a sink
against scores placed where its weight is most sensitive; a soft-capped row whose
visible scores sit at -softcap, where a mask added before the cap leaks the most),
and ``very_negative_row`` gives a sink case a row of very negative scores.  Both
use the last axis of the head dimension, which the 1.0 witnesses leave alone.
"""
import math

import numpy as np

from .cases import GeneratorError

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


def boost(prob, witnesses, gold_vis, variant_vis, spread=False):
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
        if prob.sinks is not None:              # the witness key competes with the sink too
            L += max(0.0, float(prob.sinks.max()))
        if prob.softcap is not None and all(var is None for _, _, var in ws):
            L = min(L, 0.5 * prob.softcap)      # a scale witness below the cap, where the cap does not flatten it
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
            prob.v[j] = _witness_value(n_val, spread)
            n_val += 1
        if anchor is not None and anchor not in keys:
            prob.k[anchor, :, d] = BOOST_KEY * ANCHOR_LOGIT / L
            prob.v[anchor] = _witness_value(n_val, spread)
            n_val += 1
    prob.quantize()


def _witness_value(n, spread):
    """The value of the n-th witness key: +-3.5 alternating; with ``spread`` (the generator's fallback when
    two witness keys of equal value meet in a third query's row and cancel a variant) also growing."""
    return (1.0 if n % 2 == 0 else -1.0) * BOOST_VALUE * (1.0 + 0.5 * n if spread else 1.0)


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



#: Key component on the last axis that the spec 1.1 witnesses use to set a query's scores.
AXIS_KEY = 8.0
#: The scores of a ``neg_row`` query: all its keys at this logit, far below its sink.
NEG_ROW_LOGIT = -40.0
#: The visible scores of a softcap witness, before the cap: c * tanh(-10) is -c to 4e-9.
CAP_WITNESS = -10.0


def _set_scores(prob, t, keys, scores):
    """Query t's score against each of ``keys`` becomes scores[h] for query head h: only the last axis of
    q[t] is non-zero, and each key gets AXIS_KEY there (the 1.0 witnesses' queries are 0 on that axis)."""
    a = prob.spec.D - 1
    for j in keys:
        if not prob.poisoned[j]:
            prob.k[j, :, a] = AXIS_KEY
    prob.q[t] = 0.0
    prob.q[t, :, a] = np.asarray(scores, dtype=np.float64) / (prob.scale * AXIS_KEY)


def _set_values(prob, keys, value, keep):
    for j in keys:
        if j not in keep and not prob.poisoned[j]:
            prob.v[j] = value


def boost_softmax(prob, gold_vis, dense, witnesses):
    """Make one query that hosts no 1.0 witness the witness of the case's softmax variants -> {its index}.

    sinks: one of its keys scores (per head) halfway between the sink logit and the sink times the scale,
    where the sink's weight changes most between the two, the others <= -40, and that key's value is +3.5
    if no 1.0 witness query sees it (else the key of largest values is taken); with a sink near or below 0,
    all its keys score halfway less ln n.  softcap: the
    query whose dense row holds the most masked keys; its visible scores are -10 before the cap (-softcap
    after it, exactly where a mask added before the cap puts the masked keys), visible values +3.5 and
    masked ones -3.5, so a leak moves the output by up to 7.  Values of keys a 1.0 witness query may see
    are left alone, and so are keys whose last axis one reads (nothing is done when no query qualifies).
    """
    s = prob.spec
    hosts = list(dict.fromkeys(w[0] for w in witnesses))          # boost's order: host n uses axis n % D
    keep = {w[1] for w in witnesses}
    for h in hosts:
        keep |= set(dense[h]) | set(gold_vis[h])
    on_axis = set()                          # keys whose last axis a 1.0 witness query reads
    for n, h in enumerate(hosts):
        if n % s.D == s.D - 1:
            on_axis |= set(dense[h]) | set(gold_vis[h])
    free = [t for t in range(len(gold_vis)) if t not in hosts and gold_vis[t] and not set(gold_vis[t]) & on_axis]
    if not free:
        return set()
    if prob.sinks is not None:
        t = max(free, key=lambda u: (len(set(gold_vis[u]) - keep), u))
        mid = prob.sinks * (1.0 + prob.scale) / 2.0
        if mid.min() >= 0.1:          # one key at mid, the others at <= -40: the row is that key and the sink
            keys = list(gold_vis[t])
            star = max(keys, key=lambda j: (j not in keep and not prob.poisoned[j], np.abs(prob.v[j]).min(), j))
            _set_scores(prob, t, [star], mid)
            for j in keys:
                if j != star and not prob.poisoned[j]:
                    prob.k[j, :, s.D - 1] = -AXIS_KEY * 40.0 / mid.min()
            _set_values(prob, [star], BOOST_VALUE, keep)
        else:
            _set_scores(prob, t, gold_vis[t], mid - math.log(len(gold_vis[t])))
            _set_values(prob, gold_vis[t], BOOST_VALUE, keep)
    else:
        t = max(free, key=lambda u: (len(dense[u]) - len(gold_vis[u]), u))
        masked = set(dense[t]) - set(gold_vis[t])
        _set_scores(prob, t, gold_vis[t], np.full(s.Hq, CAP_WITNESS * prob.softcap))
        _set_values(prob, gold_vis[t], BOOST_VALUE, keep)
        _set_values(prob, masked, -BOOST_VALUE, keep)
    prob.quantize()
    return {t}


def very_negative_row(prob, gold_vis, witness_queries):
    """Give the last query that hosts no witness the score NEG_ROW_LOGIT for every key it sees, so that its
    sink takes nearly all the weight."""
    s = prob.spec
    if len(witness_queries) >= s.D - 1:
        raise GeneratorError(f"{s.case_id}: a very negative row needs head_dim > witnesses + 1")
    free = [t for t in range(len(gold_vis)) if t not in witness_queries and gold_vis[t]]
    if not free:
        raise GeneratorError(f"{s.case_id}: a very negative row needs a query that hosts no witness")
    t = free[-1]
    _set_scores(prob, t, gold_vis[t], np.full(s.Hq, NEG_ROW_LOGIT))
    prob.quantize()
