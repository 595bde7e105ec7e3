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


def broken_port(bug):
    """A port with one known bug.  Traces run their own W-slot ring (positions -> slots)."""

    def attend(q, keys, vals, kpos, qpos, W, scale):
        if W is not None and W < 1:
            return np.full(q.shape, np.nan)
        try:
            return swaref.attention(q, keys, vals, window=W, q_pos=qpos, k_pos=kpos, scale=scale)
        except swaref.SwarefError:
            if len(q) > 1:               # some query sees no key: attend row by row, NaN for those rows
                return np.concatenate([attend(q[i:i + 1], keys, vals, kpos, qpos[i:i + 1], W, scale)
                                       for i in range(len(q))])
            return np.full(q.shape, np.nan)

    def port(inputs, meta):
        q, k, v = (inputs[n].astype(np.float64) for n in "qkv")
        W = int(inputs["window"]) if "window" in inputs else None
        D = q.shape[2]
        scale = float(inputs["scale"]) if "scale" in inputs else None
        if bug == "wrong_scale":      # an explicit scale ignored, or the default scale not applied
            default = 1.0 / math.sqrt(D)
            if scale is not None:
                scale = default if abs(scale - default) > 1e-9 else 2 * scale
            else:
                scale = 1.0 if D > 1 else 2.0
        Wb = None if W is None else W + {"window_plus_1": 1, "window_minus_1": -1}.get(bug, 0)
        if meta["op"] == "attention":
            qp, kp = inputs["q_pos"], inputs["k_pos"]
            if bug == "ignored_position_offset":
                kp = np.arange(len(kp))
                qp = kp[len(kp) - len(qp):]
            return {"out": attend(q, k, v, kp, qp, Wb, scale)}
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

        def write(a, n):
            nonlocal stored
            for i in range(max(a, a + n - C), a + n):
                if bug == "no_wrap" and stored >= C:
                    continue
                p = start + i
                s = (p - base) % C if bug == "ignored_position_offset" else p % C
                ring_k[s], ring_v[s], ring_p[s] = k[i], v[i], p
                stored += 1

        sched = [int(c) for c in inputs["schedule"]] + [1] * int(inputs["n_decode"])
        outs, states = [], []
        a = 0
        for i, n in enumerate(sched):
            first = i >= len(inputs["schedule"]) or bug == "write_before_attend"
            if first:
                write(a, n)
            ok = ring_p >= 0
            order = np.argsort(ring_p[ok])
            kk, vv, pp = ring_k[ok][order], ring_v[ok][order], ring_p[ok][order]
            if not first:
                kk, vv = np.concatenate([kk, k[a:a + n]]), np.concatenate([vv, v[a:a + n]])
                pp = np.concatenate([pp, np.arange(start + a, start + a + n)])
            qp = np.arange(start + a, start + a + n)
            if bug == "stale_slot_leak":
                ncache = int(ok.sum())
                rows = []
                for j, p in enumerate(qp):
                    m = (pp <= p) & ((np.arange(len(pp)) < ncache) | (pp > p - W))
                    rows.append(swaref.softmax_attend(q[a + j], kk[m], vv[m], scale or 1 / math.sqrt(D)))
                outs.append(np.stack(rows))
            else:
                outs.append(attend(q[a:a + n], kk, vv, pp, qp, Wb, scale))
            if not first:
                write(a, n)
            states.append((ring_p.copy(), ring_k.copy(), ring_v.copy()))
            a += n
        return {"out": np.concatenate(outs), "cache_pos": np.stack([s[0] for s in states]),
                "cache_k": np.stack([s[1] for s in states]), "cache_v": np.stack([s[2] for s in states])}

    return port
