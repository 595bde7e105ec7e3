"""Reading a model suite safely: the manifest against its schema, then every file against its hash.

The rules are the attention suite's (``swaref.conformance.suite``,
docs/robustness.md): nothing in a suite is trusted; the manifest is a bounded
regular file of bounded JSON nesting that satisfies ``manifest.schema.json``
and its own ``suite_hash``; case ids are bare names; every file is reached
through ``path_inside`` (no separator, no '..', symlinks resolved inside the
folder), read only if it is a regular file no larger than its entry says, and
must match its sha256; the golden file must hold the tensors its entry
implies.  Any problem is a ``SuiteError`` (kind "suite"; the checker exits 2).
"""
import hashlib
import json
import os

import numpy as np

from ..conformance import safetensors_io as ST
from ..conformance.files import FileFormatError, is_safe_name, load_json, path_inside, read_regular
from ..conformance.schema import errors as schema_errors
from ..conformance.suite import SuiteError, manifest_hash
from .generate import CHECKPOINT_FILES, FORMAT_VERSION

MAX_MANIFEST_BYTES = 16 * 1024 * 1024
#: No file of a suite may exceed this, whatever the manifest says (the schema caps it too).
MAX_FILE_BYTES = 256 * 1024 * 1024
_SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "manifest.schema.json")


def load_schema():
    with open(_SCHEMA) as f:
        return json.load(f)


class ModelSuite:
    """A verified suite: ``manifest``, ``entries``, ``by_id``; ``checkpoint_dir(id)``, ``golden(id)``."""

    def __init__(self, folder, manifest):
        self.folder = folder
        self.manifest = manifest
        self.entries = manifest["cases"]
        self.by_id = {e["id"]: e for e in self.entries}

    def checkpoint_dir(self, case_id):
        """The real path of a case's checkpoint folder (inside the suite folder)."""
        path = path_inside(self.folder, case_id)
        if path is None or not os.path.isdir(path):
            raise SuiteError(f"{case_id}: the checkpoint folder is missing or not inside the suite folder")
        return path

    def _read(self, case_id, folder, name, digest):
        path = path_inside(folder, name)
        if path is None:
            raise SuiteError(f"{case_id}: {name!r} is not a file name inside its folder")
        try:
            data = read_regular(path, min(MAX_FILE_BYTES, digest["bytes"]), f"{case_id}: {name}")
        except FileFormatError as e:
            raise SuiteError(str(e)) from None
        if len(data) != digest["bytes"] or hashlib.sha256(data).hexdigest() != digest["sha256"]:
            raise SuiteError(f"{case_id}: {name} does not match its sha256 in the manifest (file modified)")
        return data

    def verify_checkpoint(self, case_id):
        """Check every checkpoint file of a case against its hash."""
        entry = self.by_id[case_id]
        folder = self.checkpoint_dir(case_id)
        for name in CHECKPOINT_FILES:
            self._read(case_id, folder, name, entry["files"][name])

    def golden(self, case_id):
        """-> (tensors, metadata) of a case's golden file, verified against its entry."""
        entry = self.by_id[case_id]
        g = entry["golden"]
        data = self._read(case_id, self.folder, g["file"], g)
        try:
            tensors, dtypes, meta = ST.decode(data, what=g["file"])
        except ST.SafetensorsError as e:
            raise SuiteError(f"{case_id}: malformed golden file: {e}") from None
        T, V = entry["tokens"], entry["vocab_size"]
        want = {"tokens": ("I64", [T]), "logits": ("F64", [T, V]), "logits_f32": ("F32", [T, V])}
        want.update({v["tensor"]: ("F32", [T, V]) for v in entry["variants"]})
        got = {n: (dtypes[n], list(t.shape)) for n, t in tensors.items()}
        if got != want or meta.get("case_id") != case_id:
            raise SuiteError(f"{case_id}: the golden file's tensors disagree with the manifest entry")
        tok = tensors["tokens"]
        if tok.min() < 0 or tok.max() >= V or not np.isfinite(tensors["logits"]).all() \
                or not 1 <= entry["prompt_tokens"] <= T:
            raise SuiteError(f"{case_id}: the golden file's tokens or logits are out of range")
        return tensors, meta


def load_model_suite(folder):
    """Read and verify a model suite -> ModelSuite (SuiteError naming every problem found)."""
    path = os.path.join(folder, "manifest.json")
    try:
        manifest = load_json(read_regular(path, MAX_MANIFEST_BYTES, path), path)
    except FileFormatError as e:
        raise SuiteError(str(e)) from None
    problems = schema_errors(manifest, load_schema())
    if problems:
        raise SuiteError(f"{path} does not satisfy the model suite's manifest.schema.json: " + "; ".join(problems))
    if manifest["format_version"] != FORMAT_VERSION:
        raise SuiteError(f"{path}: format version {manifest['format_version']} is not {FORMAT_VERSION}")
    if manifest["suite_hash"] != manifest_hash(manifest):
        raise SuiteError(f"{path}: suite_hash does not match the manifest's contents (manifest edited?)")
    suite = ModelSuite(folder, manifest)
    if len(suite.by_id) != len(suite.entries):
        raise SuiteError(f"{path}: two cases share an id")
    bad = [e["id"] for e in suite.entries if not is_safe_name(e["id"]) or not is_safe_name(e["golden"]["file"])]
    if bad:
        raise SuiteError(f"{path}: case {bad[0]!r} has an id or golden file name that is not a bare name")
    problems = []
    for e in suite.entries:
        try:
            suite.verify_checkpoint(e["id"])
            suite.golden(e["id"])
        except SuiteError as err:
            problems.append(str(err))
    if problems:
        raise SuiteError("; ".join(problems))
    return suite
