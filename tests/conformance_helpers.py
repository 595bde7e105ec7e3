"""Shared by the tests/test_conformance_*.py files: one core suite per session, hostile-suite tools.

The core suite is generated once into a session temporary folder and must not
be modified by a test: tests that tamper with a suite copy it first (``copy``).
"""
import hashlib
import json
import os
import shutil

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
