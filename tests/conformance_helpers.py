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


def broken_port(bug):
    """A port with one known bug.  Traces run their own ring of C slots (positions -> slots) through the
    case's steps (prefill chunks, decode tokens, rollbacks)."""

    def port(inputs, meta):
        q, k, v = (inputs[n].astype(np.float64) for n in "qkv")
        W = int(inputs["window"]) if "window" in inputs else None
        if W is not None and W < 1:
            return {"out": np.full(q.shape, np.nan)}
        scale, cap, sinks = _softmax_settings(bug, inputs, q.shape[2])
        Wb = None if W is None else W + {"window_plus_1": 1, "window_minus_1": -1}.get(bug, 0)

        def attend(rows, kk, vv, pp, qp, n_cached=0):
            """Each query row over the candidate keys (the first n_cached from the ring)."""
            out = []
            for qrow, p in zip(rows, qp):
                m = pp <= p
                if Wb is not None:
                    leak = (np.arange(len(pp)) < n_cached) if bug == "stale_slot_leak" else False
                    m &= (pp > p - Wb) | leak
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


def _broken_trace(bug, inputs, q, k, v, attend):
    C = int(inputs["capacity"])
    start = int(inputs["start"])
    ring_k = np.zeros((C,) + k.shape[1:])
    ring_v = np.zeros_like(ring_k)
    ring_p = np.full(C, -1)
    base = start
    if "init_pos" in inputs:
        ok = inputs["init_pos"] >= 0
        ring_p[ok] = inputs["init_pos"][ok]
        ring_k[ok] = inputs["init_k"][ok]
        ring_v[ok] = inputs["init_v"][ok]
        base = int(ring_p[ok].min()) if ok.any() else start
    stored = int((ring_p >= 0).sum())
    slot = (lambda p: (p - base) % C) if bug == "ignored_position_offset" else (lambda p: p % C)

    def write(a, n, p0):
        nonlocal stored
        for i in range(max(a, a + n - C), a + n):
            if bug == "no_wrap" and stored >= C:
                continue
            s = slot(p0 + i - a)
            ring_k[s], ring_v[s], ring_p[s] = k[i], v[i], p0 + i - a
            stored += 1

    W = int(inputs["window"]) if "window" in inputs else None
    outs, states = [], []
    a, nxt, written, held = 0, start, stored, stored
    for op, n in _program(inputs):
        if op == 2:        # spec rule 4: n <= written, and the keys a later query needs are still held
            limit = written if held == written or W is None or W == 1 else max(0, held - W + 1)
            if n > written or (limit < n < written and bug != "rollback_beyond_limit"):
                raise swaref.SwarefError("rollback", f"cannot roll back {n}")
            if bug != "rollback_keeps_slots":
                ring_p[[slot(p) for p in range(nxt - n, nxt)]] = -1
            stored, nxt, written, held = max(0, stored - n), nxt - n, written - n, max(0, held - n)
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
        a, nxt, written, held = a + n, nxt + n, written + n, held + n if W is None else min(held + n, C)
    return {"out": np.concatenate(outs), "cache_pos": np.stack([s[0] for s in states]),
            "cache_k": np.stack([s[1] for s in states]), "cache_v": np.stack([s[2] for s in states])}
