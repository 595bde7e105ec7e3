"""Getting a port's result for one case: from a results folder, or from a Python function.

``read_result`` reads ``<case_id>.out.safetensors`` or ``<case_id>.err.json``
from a folder (bounded, regular files only, names checked); ``run_python``
calls a Python port in process; ``write_result`` and ``run_port_to_dir`` write
results the way any port must.  Results come back in the forms ``judge``
takes: ("missing", msg), ("crash", msg), ("error", kind, msg) or ("tensors",
tensors, dtypes, metadata).
"""
import importlib
import json
import os
import sys
import traceback

import numpy as np

from ..errors import ERROR_KINDS, SwarefError
from . import safetensors_io as ST
from .files import FileFormatError, is_safe_name, load_json, path_inside, read_regular
from .suite import SuiteError, load_suite

#: An .err.json larger than this is not a rejection, it is a malformed result.
MAX_ERR_BYTES = 64 * 1024
#: Room for a result file's JSON header beyond the largest tensors the case can produce.
RESULT_HEADER_ALLOWANCE = 1024 * 1024


def result_limit(case):
    """Bytes a result file of this case may have: the expected tensors at 8 bytes per value, plus a header."""
    n = sum(int(np.prod(a.shape, dtype=object)) for name, a in case[0].items()
            if name.startswith("expected.") and not name.endswith("_atol"))
    return 8 + RESULT_HEADER_ALLOWANCE + 8 * n


def read_result(results_dir, cid, case):
    """The result a port left for case ``cid`` in ``results_dir``."""
    out = path_inside(results_dir, cid + ".out.safetensors")
    err = path_inside(results_dir, cid + ".err.json")
    if out is None or err is None:
        return ("crash", f"the result files of {cid!r} would lie outside {results_dir} (symlink?)")
    has_out, has_err = os.path.lexists(out), os.path.lexists(err)
    if has_out and has_err:
        return ("crash", f"both {cid}.out.safetensors and {cid}.err.json exist; write exactly one")
    if has_err:
        return _read_rejection(err, cid)
    if not has_out:
        return ("missing", f"no {cid}.out.safetensors or {cid}.err.json in {results_dir}")
    try:
        tensors, dtypes, meta = ST.read(out, limit=result_limit(case))
    except FileFormatError as e:
        return ("crash", f"malformed result file: {e}")
    return ("tensors", tensors, dtypes, meta)


def _read_rejection(path, cid):
    try:
        doc = load_json(read_regular(path, MAX_ERR_BYTES, f"{cid}.err.json"), f"{cid}.err.json")
    except FileFormatError as e:
        return ("crash", f"{cid}.err.json is not a JSON object with a 'kind' ({e})")
    if not isinstance(doc, dict) or "kind" not in doc:
        return ("crash", f"{cid}.err.json is not a JSON object with a 'kind'")
    kind = doc["kind"]
    if not isinstance(kind, str) or kind not in ERROR_KINDS:
        return ("crash", f"{cid}.err.json: kind {kind!r} is not in the closed list {list(ERROR_KINDS)}")
    return ("error", kind, str(doc.get("message", ""))[:1000])


def python_inputs(case):
    """(inputs, meta) as a Python port receives them: BF16 as exact float32, no golden results."""
    tensors, dtypes, meta = case
    inputs = {n: (ST.as_float(a, dtypes[n]) if dtypes[n] == "BF16" else a)
              for n, a in tensors.items() if not n.startswith("expected.")}
    return inputs, {"op": meta["op"], "dtype": meta["dtype"], "case_id": meta["case_id"],
                    "dtypes": {n: d for n, d in dtypes.items() if not n.startswith("expected.")}}


def run_python(fn, case):
    """Call a Python port on one case.

    A ``SwarefError`` (or any exception whose ``kind`` is one of ERROR_KINDS) is a
    rejection; any other exception is a crash, reported with its place, so a
    port's internal bug can never pass a negative case by accident of its type.
    """
    inputs, meta = python_inputs(case)
    try:
        res = fn(inputs, meta)
    except Exception as e:  # noqa: BLE001 - the port's failure is a verdict, not our crash
        kind = getattr(e, "kind", None)
        if isinstance(e, SuiteError):   # a suite problem inside the port is no rejection of this input
            return ("crash", f"port raised SuiteError: {e}")
        if isinstance(e, SwarefError) or (isinstance(kind, str) and kind in ERROR_KINDS):
            return ("error", kind, str(e))
        tb = traceback.extract_tb(e.__traceback__)
        at = f" (at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno})" if tb else ""
        return ("crash", f"port raised {type(e).__name__}: {e}{at}")
    if not isinstance(res, dict):
        return ("crash", f"port returned {type(res).__name__}, expected a dict of arrays")
    tensors, dtypes = {}, {}
    for n, a in res.items():
        a = np.asarray(a)
        try:
            dtypes[n] = ST.dtype_name(a)
        except ST.SafetensorsError as e:
            return ("crash", f"result {n!r}: {e}")
        tensors[n] = a
    return ("tensors", tensors, dtypes, {})


def write_result(results_dir, case_id, result=None, error=None, input_digest=None):
    """Write one case's result the way any port must: tensors or a rejection.

    result: name -> ndarray (float arrays in their own dtype, positions int64);
    error: an error kind from ERROR_KINDS (writes <case_id>.err.json instead).
    """
    if not is_safe_name(case_id):
        raise SwarefError("argument", f"case_id must match letters, digits and '._-', got {case_id!r}")
    if error is not None:
        with open(os.path.join(results_dir, case_id + ".err.json"), "w") as f:
            json.dump({"kind": error}, f)
        return
    meta = {"input_digest": input_digest} if input_digest else None
    ST.write(os.path.join(results_dir, case_id + ".out.safetensors"),
             {n: np.asarray(a) for n, a in result.items()}, metadata=meta)


def run_port_to_dir(suite_dir, fn, results_dir):
    """Run a Python port over a suite and leave a results folder (for ``check --results``)."""
    suite = load_suite(suite_dir)
    os.makedirs(results_dir, exist_ok=True)
    for entry in suite.entries:
        case = suite.case(entry["id"])
        res = run_python(fn, case)
        if res[0] == "error":
            write_result(results_dir, entry["id"], error=res[1])
        elif res[0] == "tensors":
            write_result(results_dir, entry["id"], res[1], input_digest=case[2].get("input_digest"))


def load_python_port(spec):
    """'module:function' -> the function.  The current folder is searched first, as ``python -m`` does.

    Raises SwarefError (kind "argument") naming what is wrong with ``spec``.
    """
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise SwarefError("argument", f"--python expects module:function, got {spec!r}")
    mod, fn = spec.split(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        m = importlib.import_module(mod)
    except Exception as e:  # noqa: BLE001 - a port module that fails to import is a usage error, not a crash
        raise SwarefError("argument", f"--python: cannot import {mod!r}: {type(e).__name__}: {e}") from None
    if not callable(getattr(m, fn, None)):
        raise SwarefError("argument", f"--python: module {mod!r} has no function {fn!r}")
    return getattr(m, fn)
