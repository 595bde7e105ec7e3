"""Getting an engine's logits for one case: from a folder (.npy or .safetensors), or from a Python function.

A results folder holds ``<case_id>.npy`` (a [T, V] float array, no pickles)
or ``<case_id>.safetensors`` (a tensor named ``logits``), not both.  Files are
reached through ``path_inside``, read only if regular and no larger than a
[T, V] float64 array plus a header, parsed without pickle.  A Python engine is
``fn(checkpoint_dir, tokens) -> [T, V]`` logits; an exception is the engine's
failure, reported with its place, never the checker's.

Results come back as ("logits", array [T, V] float64), ("missing", message)
or ("crash", message).
"""
import io
import os
import traceback

import numpy as np

from ..conformance import safetensors_io as ST
from ..conformance.files import FileFormatError, path_inside, read_regular

#: Room for a result file's header beyond its [T, V] float64 values.
HEADER_ALLOWANCE = 64 * 1024
SUFFIXES = (".npy", ".safetensors")
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


def result_limit(entry):
    return HEADER_ALLOWANCE + 8 * entry["tokens"] * entry["vocab_size"]


def _as_logits(arr, entry, what):
    want = (entry["tokens"], entry["vocab_size"])
    if arr.dtype.kind != "f":
        return ("crash", f"{what} holds {arr.dtype} values; expected floats")
    if arr.shape != want:
        return ("crash", f"{what} has shape {list(arr.shape)}; expected [T, V] = {list(want)}")
    return ("logits", arr.astype(np.float64))


def _read_npy(data, what):
    """A .npy array from bytes, without pickle (np.load refuses object arrays then; an .npz is refused here)."""
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise FileFormatError(f"{what} is not a readable .npy array ({e})") from None
    if not isinstance(arr, np.ndarray):
        raise FileFormatError(f"{what} is not a single .npy array")
    return arr


def read_logits(results_dir, entry):
    """The logits an engine left for a case in ``results_dir``."""
    cid = entry["id"]
    paths = [path_inside(results_dir, cid + s) for s in SUFFIXES]
    if None in paths:
        return ("crash", f"the result files of {cid!r} would lie outside {results_dir} (symlink?)")
    present = [p for p in paths if os.path.lexists(p)]
    if len(present) > 1:
        return ("crash", f"both {cid}.npy and {cid}.safetensors exist; write exactly one")
    if not present:
        return ("missing", f"no {cid}.npy or {cid}.safetensors in {results_dir}")
    path, what = present[0], os.path.basename(present[0])
    try:
        data = read_regular(path, result_limit(entry), what)
        if path.endswith(".npy"):
            return _as_logits(_read_npy(data, what), entry, what)
        tensors, dtypes, _ = ST.decode(data, what=what)
    except FileFormatError as e:
        return ("crash", f"malformed result file: {e}")
    if "logits" not in tensors:
        return ("crash", f"{what} has no tensor named 'logits' (it has {sorted(tensors)[:5]})")
    if dtypes["logits"] not in FLOAT_DTYPES:
        return ("crash", f"{what}: logits are {dtypes['logits']}; expected one of {FLOAT_DTYPES}")
    return _as_logits(ST.as_float(tensors["logits"], dtypes["logits"]), entry, what)


def run_python(fn, checkpoint_dir, tokens, entry):
    """Call a Python engine on one case -> ("logits", ...) or ("crash", message)."""
    try:
        res = fn(checkpoint_dir, np.array(tokens, dtype=np.int64))
    except Exception as e:  # noqa: BLE001 - the engine's failure is a verdict, not the checker's crash
        tb = traceback.extract_tb(e.__traceback__)
        at = f" (at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno})" if tb else ""
        return ("crash", f"engine raised {type(e).__name__}: {e}{at}")
    try:
        arr = np.asarray(res)
    except Exception as e:  # noqa: BLE001 - whatever it returned cannot be an array
        return ("crash", f"engine returned {type(res).__name__}, not an array ({e})")
    return _as_logits(arr, entry, "the engine's result")
