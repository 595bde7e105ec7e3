"""Reading a suite safely: the manifest against its schema, then each case file, one at a time.

Nothing in a suite is trusted: hashes prove integrity, not authorship.  The
manifest must be valid JSON of bounded nesting and satisfy
``manifest.schema.json``; its suite hash must match; case ids and file names
are bare names of a strict pattern whose real path stays in the suite folder;
a case file is read only if it is a regular file no larger than its manifest
entry allows, and its sha256, tensors and golden results must agree with the
entry.  Any problem is a ``SuiteError`` (kind "suite"; the runner exits 2).
Case files are verified up front but kept out of memory: ``Suite.case`` reads
(and verifies again) one case when it is judged.
"""
import hashlib
import json
import os

import numpy as np

from ..errors import SwarefError
from . import safetensors_io as ST
from .cases import DTYPES
from .files import FileFormatError, is_safe_name, load_json, path_inside, read_regular
from .schema import errors as schema_errors, load_schema

#: A manifest larger than this is refused (the full suite's is about 2 MB).
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
#: Room for a case file's JSON header beyond its tensor bytes (swaref writes about 2 KB).
HEADER_ALLOWANCE = 1024 * 1024
#: No case file may exceed this, whatever its manifest entry says.
MAX_CASE_BYTES = 256 * 1024 * 1024


class SuiteError(SwarefError):
    """The suite itself is corrupt, tampered with or unsafe (kind "suite"; the runner exits 2)."""

    def __init__(self, message):
        super().__init__("suite", message)


def manifest_hash(manifest):
    """sha256 of the manifest's canonical JSON without ``suite_hash``: the identity of a suite."""
    body = {k: v for k, v in manifest.items() if k != "suite_hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def tensor_bytes(info):
    """Bytes a tensor of a manifest entry's {dtype, shape} takes."""
    n = ST.DTYPES[info["dtype"]].itemsize
    for s in info["shape"]:
        n *= s
    return n


class Case(tuple):
    """One case as read: (tensors, dtypes, metadata); BF16 tensors are uint16 bit patterns."""

    def __new__(cls, tensors, dtypes, meta):
        return super().__new__(cls, (tensors, dtypes, meta))

    tensors = property(lambda self: self[0])
    dtypes = property(lambda self: self[1])
    meta = property(lambda self: self[2])


class Suite:
    """A verified suite folder: ``manifest``, ``entries`` (the cases in id order), ``case(id)``."""

    def __init__(self, folder, manifest):
        self.folder = folder
        self.manifest = manifest
        self.entries = manifest["cases"]
        self.by_id = {e["id"]: e for e in self.entries}

    def case(self, case_id):
        """Read and verify one case file -> Case (SuiteError if it changed or is malformed)."""
        entry = self.by_id[case_id]
        path = path_inside(self.folder, entry["file"])
        if path is None:
            raise SuiteError(f"{case_id}: file {entry['file']!r} is not a file name inside the suite folder")
        limit = min(MAX_CASE_BYTES, 8 + HEADER_ALLOWANCE + sum(tensor_bytes(t) for t in entry["tensors"].values()))
        try:
            data = read_regular(path, limit, entry["file"])
        except FileFormatError as e:
            raise SuiteError(f"{case_id}: {e}") from None
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise SuiteError(f"{case_id}: sha256 of {entry['file']} does not match the manifest (file modified)")
        try:
            tensors, dtypes, meta = ST.decode(data, what=entry["file"])
        except ST.SafetensorsError as e:
            raise SuiteError(f"{case_id}: malformed safetensors: {e}") from None
        got = {n: {"dtype": dtypes[n], "shape": list(tensors[n].shape)} for n in tensors}
        if meta.get("case_id") != case_id or got != entry["tensors"]:
            raise SuiteError(f"{case_id}: file contents disagree with the manifest entry")
        _check_golden(entry, tensors, dtypes)
        return Case(tensors, dtypes, meta)

    def input_path(self, case_id):
        """The real path of a case file (checked to be inside the suite folder)."""
        return path_inside(self.folder, self.by_id[case_id]["file"])


def load_suite(suite_dir):
    """Read and verify a suite -> Suite.  Raises SuiteError listing every problem found.

    Checked: the manifest is bounded, parses, satisfies manifest.schema.json and
    its suite_hash; ids are unique; each case file is inside the folder,
    a regular file, matches its sha256, is well-formed safetensors and agrees
    with its entry (names, dtypes, shapes, golden results).
    """
    path = os.path.join(suite_dir, "manifest.json")
    manifest = read_manifest(path, MAX_MANIFEST_BYTES, load_schema("manifest"), "manifest.schema.json")
    if manifest["suite_hash"] != manifest_hash(manifest):
        raise SuiteError(f"{path}: suite_hash does not match the manifest's contents (manifest edited?)")
    suite = Suite(suite_dir, manifest)
    if len(suite.by_id) != len(suite.entries):
        raise SuiteError(f"{path}: two cases share an id")
    unsafe = [e["id"] for e in suite.entries if not is_safe_name(e["id"])]
    if unsafe:           # ids name result files and --exec arguments
        raise SuiteError(f"{path}: case id {unsafe[0]!r} is not a bare name of letters, digits and '._-'")
    verify_each(suite.entries, lambda e: suite.case(e["id"]))
    return suite


def read_manifest(path, max_bytes, schema, schema_name):
    """The manifest at ``path``: a regular file of at most ``max_bytes`` holding JSON of bounded nesting
    that satisfies ``schema`` (named ``schema_name`` in the message) -> dict, else SuiteError."""
    try:
        manifest = load_json(read_regular(path, max_bytes, path), path)
    except FileFormatError as e:
        raise SuiteError(str(e)) from None
    problems = schema_errors(manifest, schema)
    if problems:
        raise SuiteError(f"{path} does not satisfy {schema_name}: " + "; ".join(problems))
    return manifest


def verify_each(entries, verify):
    """Call ``verify(entry)`` on every entry; one SuiteError naming every problem found, not just the first."""
    problems = []
    for e in entries:
        try:
            verify(e)
        except SuiteError as err:
            problems.append(str(err))
    if problems:
        raise SuiteError("; ".join(problems))


def _want(ok, case_id, what):
    if not ok:
        raise SuiteError(f"{case_id}: {what}")


def _check_golden(entry, tensors, dtypes):
    """The golden results the judge relies on are present, of the right dtypes, shapes and values."""
    cid = entry["id"]
    if entry["expect"] == "invalid":
        _want(not any(n.startswith("expected.") for n in tensors), cid, "a negative case has golden results")
        return
    for n in ("q", "expected.out", "expected.out_atol"):
        _want(n in tensors, cid, f"no tensor {n!r}")
    _want(sorted(entry["features"]) == _features_of(tensors), cid,
          f"features {entry['features']} disagree with the inputs (which need {_features_of(tensors)})")
    out, atol = tensors["expected.out"], tensors["expected.out_atol"]
    _want(dtypes["expected.out"] == dtypes["expected.out_atol"] == "F64", cid, "golden results must be F64")
    _want(out.ndim == 3 and out.shape == tensors["q"].shape and atol.shape == out.shape[:1], cid,
          f"expected.out {out.shape} and expected.out_atol {atol.shape} do not fit q {tensors['q'].shape}")
    _want(bool(np.isfinite(out).all() and np.isfinite(atol).all() and (atol > 0).all()), cid,
          "golden outputs must be finite and tolerances finite and > 0")
    if entry["op"] != "attention":
        _check_golden_trace(cid, entry["dtype"], tensors, dtypes)


def _features_of(tensors):
    """The spec 1.1 features a valid case's inputs need: what --skip-feature must leave out."""
    f = {n for n in ("softcap", "sinks") if n in tensors}
    if "window" in tensors and "capacity" in tensors and tensors["capacity"].size == tensors["window"].size == 1 \
            and int(tensors["capacity"].reshape(-1)[0]) > int(tensors["window"].reshape(-1)[0]):
        f.add("slack")
    if "attention_chunk" in tensors and "capacity" in tensors and tensors["capacity"].size == \
            tensors["attention_chunk"].size == 1 and \
            int(tensors["capacity"].reshape(-1)[0]) > int(tensors["attention_chunk"].reshape(-1)[0]):
        f.add("slack")
    if "steps" in tensors:
        f.add("rollback")
    f |= {feature for name, feature in (("sink_tokens", "sink_tokens"), ("two_sided", "two_sided"),
                                        ("attention_chunk", "chunked")) if name in tensors}
    return sorted(f)


def _check_golden_trace(cid, dtype, tensors, dtypes):
    for n in ("schedule", "n_decode", "expected.cache_pos", "expected.cache_k", "expected.cache_v"):
        _want(n in tensors, cid, f"no tensor {n!r}")
    sched, n_dec = tensors["schedule"].reshape(-1), tensors["n_decode"].reshape(-1)
    _want(dtypes["schedule"] == dtypes["n_decode"] == "I64" and n_dec.size == 1 and 0 <= n_dec[0] <= 2 ** 31,
          cid, "bad schedule or n_decode")
    n_steps = sched.size + int(n_dec[0])
    if "steps" in tensors:
        st = tensors["steps"]
        _want(dtypes["steps"] == "I64" and st.ndim == 2 and st.shape[1] == 2, cid, "steps must be I64 [n_steps, 2]")
        ops, ns = st[:, 0], st[:, 1]
        _want(bool(np.isin(ops, (0, 1, 2)).all() and (ns >= 0).all() and (ns[ops == 0] >= 1).all()
                   and (ns[ops == 1] == 1).all()) and ns[ops == 0].tolist() == sched.tolist()
              and int((ops == 1).sum()) == int(n_dec[0]), cid, "steps disagree with schedule and n_decode")
        # A valid trace never rolls back more than was written (bounds every loop over a rollback).
        held0 = int((tensors["init_pos"] >= 0).sum()) if "init_pos" in tensors else 0
        written = held0 + np.cumsum(np.where(ops == 2, -ns, ns))
        _want(bool((written >= 0).all()), cid, "steps roll back more tokens than were written")
        n_steps = st.shape[0]
    _want(bool((sched >= 1).all()) and int(sched.sum()) + int(n_dec[0]) == tensors["expected.out"].shape[0], cid,
          "schedule and n_decode do not cover the golden output rows")
    pos = tensors["expected.cache_pos"]
    _want(dtypes["expected.cache_pos"] == "I64" and pos.ndim == 2 and pos.shape[0] == n_steps, cid,
          "expected.cache_pos must be I64 of shape [steps, C]")
    for n in ("expected.cache_k", "expected.cache_v"):
        t = tensors[n]
        _want(dtypes[n] == DTYPES[dtype][0] and t.ndim == 4 and t.shape[:2] == pos.shape
              and t.shape[3] == tensors["expected.out"].shape[2], cid, f"{n} does not fit expected.cache_pos")
