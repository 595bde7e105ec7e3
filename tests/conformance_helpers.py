"""Shared by the tests/test_conformance_*.py files: one core suite per session, hostile-suite tools,
and ports with one known bug each (``broken_port``), written from swaref's public primitives.

The core suite is generated once into a session temporary folder and must not
be modified by a test: tests that tamper with a suite copy it first (``copy``).
"""
import hashlib
import json
import math
import os
import shutil

import numpy as np

import swaref
from swaref import conformance as C
from swaref.conformance.verdicts import STATUSES
from swaref.conformance.suite import manifest_hash

_CORE = {}


def window_of(t):
    """A case's window as swaref.windows spells it, read from its tensors (docs/conformance.md): the
    suite's files and the hand-made cases of the C port's tests spell it the same way."""
    if "two_sided" in t:
        return swaref.TwoSided(*(None if int(x) == -1 else int(x) for x in t["two_sided"]))
    if "attention_chunk" in t:
        return swaref.Chunked(int(t["attention_chunk"]))
    if "window" not in t:
        return None
    return swaref.Sliding(int(t["window"]), int(t.get("sink_tokens", 0)))


def core_suite(tmp_path_factory):
    """(folder, manifest) of the core suite, generated once per test session."""
    if "core" not in _CORE:
        d = tmp_path_factory.mktemp("core")
        _CORE["core"] = (str(d), C.generate_suite(str(d), "core"))
    return _CORE["core"]


def run(suite_dir, fn, **kw):
    """check_suite with a Python port -> (exit code, printed lines)."""
    lines = []
    code = C.check_suite(suite_dir, python=fn, out=lines.append, **kw)
    return code, lines


def statuses(lines):
    """case id -> status, from the printed verdict lines."""
    return {l.split()[1]: l.split()[0] for l in lines if l.split() and l.split()[0] in STATUSES}


def valid_ids(manifest):
    return {c["id"] for c in manifest["cases"] if c["expect"] == "valid"}


def copy_suite(suite, tmp_path, name="suite"):
    dst = tmp_path / name
    shutil.copytree(suite[0], dst)
    return dst


def read_manifest(dst):
    with open(dst / "manifest.json") as f:
        return json.load(f)


def resign(dst, manifest=None):
    """Recompute every case's sha256 and the suite hash, so that a tampered suite verifies.

    Hashes prove integrity, not authorship: this is what an attacker can do.
    Files a manifest names outside the folder (or that do not exist) keep their sha256.
    """
    m = read_manifest(dst) if manifest is None else manifest
    for c in m.get("cases", []):
        p = os.path.join(dst, str(c.get("file", ""))) if isinstance(c, dict) else ""
        if p and os.path.isfile(p) and os.path.getsize(p) < 10 ** 8:
            with open(p, "rb") as f:
                c["sha256"] = hashlib.sha256(f.read()).hexdigest()
    if isinstance(m, dict):
        m["suite_hash"] = manifest_hash(m)
    with open(dst / "manifest.json", "w") as f:
        json.dump(m, f)
    return m


def _dense_capped_after_mask(qrow, kk, vv, visible, scale, cap):
    """An engine that adds -inf to the masked scores of its dense row, then soft-caps (masked -> -cap)."""
    G = qrow.shape[0] // kk.shape[1]
    with np.errstate(all="ignore"):
        raw = np.einsum("hd,nhd->hn", qrow, np.repeat(kk, G, axis=1)) * scale
        sc = np.where(visible[None], cap * np.tanh(raw / cap), np.where(np.isnan(raw), np.nan, -cap))
        w = np.exp(sc - sc.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        return np.einsum("hn,nhd->hd", w, np.repeat(vv, G, axis=1))


def _softmax_settings(bug, inputs, D):
    """(scale, softcap, sinks) as a port with ``bug`` uses them."""
    scale = float(inputs["scale"]) if "scale" in inputs else None
    if bug == "wrong_scale":      # an explicit scale ignored, or the default scale not applied
        default = 1.0 / math.sqrt(D)
        if scale is not None:
            scale = default if abs(scale - default) > 1e-9 else 2 * scale
        else:
            scale = 1.0 if D > 1 else 2.0
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    cap = float(inputs["softcap"]) if "softcap" in inputs else None
    sinks = np.asarray(inputs["sinks"], dtype=np.float64) if "sinks" in inputs else None
    if bug == "softcap_before_scale" and cap is not None:
        cap *= abs(scale)             # scale * c * tanh(q.k / c) == c' * tanh(scale * q.k / c'), c' = |scale| c
    if bug == "sink_scaled" and sinks is not None:
        sinks = sinks * scale
    return scale, cap, sinks


def window_rule(inputs, bug=None):
    """(left, right, chunk, sink, shift) of a case's window as written in its file (None: unbounded), as a port
    with the mask ``bug`` reads it: key j is visible to query p iff (j < sink and j <= p) or
    (p - left <= j <= p + right and j >= (p // chunk) * chunk + shift)."""
    left, right, chunk, sink, shift = None, 0, 0, 0, 0
    if "window" in inputs:
        left = int(inputs["window"]) - 1
        sink = int(inputs["sink_tokens"]) if "sink_tokens" in inputs else 0
    if "two_sided" in inputs:
        left, right = (None if int(x) == -1 else int(x) for x in inputs["two_sided"])
    if "attention_chunk" in inputs:
        chunk = int(inputs["attention_chunk"])
    sliding = "window" in inputs
    if sliding and bug in ("window_plus_1", "window_minus_1"):
        left += 1 if bug == "window_plus_1" else -1
    if sliding and sink and bug == "sink_tokens_dropped":
        sink = 0
    if sliding and sink and bug == "sink_tokens_in_window":
        left -= sink
    if sliding and sink and bug in ("sink_tokens_plus_1", "sink_tokens_minus_1"):
        sink += 1 if bug == "sink_tokens_plus_1" else -1
    if "two_sided" in inputs and bug in ("two_sided_left_plus_1", "two_sided_left_minus_1") and left is not None:
        left += 1 if bug.endswith("plus_1") else -1
    if "two_sided" in inputs and bug in ("two_sided_right_plus_1", "two_sided_right_minus_1") and right is not None:
        right += 1 if bug.endswith("plus_1") else -1
    if "two_sided" in inputs and bug == "two_sided_as_causal":
        right = 0
    if chunk and bug == "chunked_as_sliding":
        chunk, left = 0, chunk - 1
    if chunk and bug in ("chunk_boundary_minus_1", "chunk_boundary_plus_1"):
        shift = -1 if bug == "chunk_boundary_minus_1" else 1
    return left, right, chunk, sink, shift


def sees(rule, p, pos):
    """Which of the key positions ``pos`` query ``p`` sees under ``rule`` (window_rule) -> bool array."""
    left, right, chunk, sink, shift = rule
    pos = np.asarray(pos, dtype=np.int64)
    m = np.ones(pos.shape, dtype=bool)
    if left is not None:
        m &= pos >= p - left
    if right is not None:
        m &= pos <= p + right
    if chunk:
        m &= pos >= (p // chunk) * chunk + shift
    return m | ((pos < sink) & (pos <= p))


def broken_port(bug):
    """A port with one known bug.  Traces run their own ring of C slots (positions -> slots) through the
    case's steps (prefill chunks, decode tokens, rollbacks)."""

    def port(inputs, meta):
        q, k, v = (inputs[n].astype(np.float64) for n in "qkv")
        W = int(inputs["window"]) if "window" in inputs else None
        if W is not None and W < 1:
            return {"out": np.full(q.shape, np.nan)}
        scale, cap, sinks = _softmax_settings(bug, inputs, q.shape[2])
        rule = window_rule(inputs, bug)

        def attend(rows, kk, vv, pp, qp, n_cached=0):
            """Each query row over the candidate keys (the first n_cached from the ring)."""
            out = []
            for qrow, p in zip(rows, qp):
                m = sees(rule, int(p), pp)
                if bug == "stale_slot_leak":           # every cached key up to p, whatever the window
                    m |= (np.arange(len(pp)) < n_cached) & (pp <= p)
                if not m.any():
                    out.append(np.full(qrow.shape, np.nan))
                elif bug == "softcap_after_mask" and cap is not None:
                    out.append(_dense_capped_after_mask(qrow, kk, vv, m, scale, cap))
                else:
                    o = swaref.softmax_attend(qrow, kk[m], vv[m], scale, cap, sinks)
                    if bug == "sink_value_row" and sinks is not None:
                        o += 1.0 - swaref.softmax_attend(qrow, kk[m], np.ones_like(vv[m]), scale, cap, sinks)
                    out.append(o)
            return np.stack(out)

        if meta["op"] == "attention":
            qp, kp = inputs["q_pos"], inputs["k_pos"]
            if bug == "ignored_position_offset":
                kp = np.arange(len(kp))
                qp = kp[len(kp) - len(qp):]
            with np.errstate(all="ignore"):
                return {"out": attend(q, k, v, kp, qp)}
        with np.errstate(all="ignore"):
            return _broken_trace(bug, inputs, q, k, v, attend)

    return port


def _program(inputs):
    if "steps" in inputs:
        return [(int(op), int(n)) for op, n in inputs["steps"]]
    return [(0, int(c)) for c in inputs["schedule"]] + [(1, 1)] * int(inputs["n_decode"])


def _rollback_ok(inputs, n, nxt, written, held, n_sink):
    """Rule 4: after taking back n, the queries at P = nxt - n and later need the ring keys from
    max(lo(P), first written, n_sink) to P - 1; possible iff n <= written and that range is empty or held."""
    P, first = nxt - n, nxt - written
    a = max(first, n_sink)
    if "window" in inputs:
        a = max(a, P - int(inputs["window"]) + 1)
    if "attention_chunk" in inputs:
        c = int(inputs["attention_chunk"])
        a = max(a, (P // c) * c)
    return n <= written and (a > P - 1 or a >= nxt - held)


def _broken_trace(bug, inputs, q, k, v, attend):
    C = int(inputs["capacity"])
    n_sink = int(inputs["sink_tokens"]) if "sink_tokens" in inputs else 0
    NS = n_sink + C                     # rule 4: n_sink fixed slots, then the ring
    start = int(inputs["start"])
    ring_k = np.zeros((NS,) + k.shape[1:])
    ring_v = np.zeros_like(ring_k)
    ring_p = np.full(NS, -1)
    base = start
    if "init_pos" in inputs:
        ok = inputs["init_pos"] >= 0
        ring_p[ok] = inputs["init_pos"][ok]
        ring_k[ok] = inputs["init_k"][ok]
        ring_v[ok] = inputs["init_v"][ok]
        base = int(ring_p[ok].min()) if ok.any() else start
    stored = int((ring_p >= 0).sum())

    def true_slot(p):
        return p if p < n_sink else n_sink + (p - n_sink) % C

    slot = (lambda p: true_slot(p - base)) if bug == "ignored_position_offset" else true_slot

    def write(a, n, p0):
        nonlocal stored
        ring = [i for i in range(a, a + n) if p0 + i - a >= n_sink]
        for i in [i for i in range(a, a + n) if p0 + i - a < n_sink] + ring[max(0, len(ring) - C):]:
            if bug == "no_wrap" and stored >= C and p0 + i - a >= n_sink:
                continue
            s = slot(p0 + i - a)
            ring_k[s], ring_v[s], ring_p[s] = k[i], v[i], p0 + i - a
            stored += p0 + i - a >= n_sink

    evicts = "window" in inputs or "attention_chunk" in inputs
    outs, states = [], []
    a, nxt, written, held = 0, start, stored, stored
    for op, n in _program(inputs):
        if op == 2:        # spec rule 4, unless the port has the bug of serving any rollback
            if n > written or (not _rollback_ok(inputs, n, nxt, written, held, n_sink)
                               and bug != "rollback_beyond_limit"):
                raise swaref.SwarefError("rollback", f"cannot roll back {n}")
            ring_n = sum(p >= n_sink for p in range(nxt - n, nxt))
            if bug != "rollback_keeps_slots":
                ring_p[[slot(p) for p in range(nxt - n, nxt)]] = -1
            stored, nxt, written, held = max(0, stored - ring_n), nxt - n, written - n, max(0, held - ring_n)
            states.append((ring_p.copy(), ring_k.copy(), ring_v.copy()))
            continue
        first = op == 1 or bug == "write_before_attend"
        if first:
            write(a, n, nxt)
        ok = ring_p >= 0
        order = np.argsort(ring_p[ok], kind="stable")
        kk, vv, pp = ring_k[ok][order], ring_v[ok][order], ring_p[ok][order]
        if not first:
            kk, vv = np.concatenate([kk, k[a:a + n]]), np.concatenate([vv, v[a:a + n]])
            pp = np.concatenate([pp, np.arange(nxt, nxt + n)])
        outs.append(attend(q[a:a + n], kk, vv, pp, np.arange(nxt, nxt + n), int(ok.sum())))
        if not first:
            write(a, n, nxt)
        states.append((ring_p.copy(), ring_k.copy(), ring_v.copy()))
        ring_n = sum(p >= n_sink for p in range(nxt, nxt + n))
        a, nxt, written, held = a + n, nxt + n, written + n, min(held + ring_n, C) if evicts else held + n
    return {"out": np.concatenate(outs), "cache_pos": np.stack([s[0] for s in states]),
            "cache_k": np.stack([s[1] for s in states]), "cache_v": np.stack([s[2] for s in states])}
