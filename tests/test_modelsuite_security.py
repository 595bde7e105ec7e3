"""Hostile model suites and results: the model checker trusts nothing in them (docs/robustness.md rules).

A tampered or unsafe suite is CORRUPT (exit 2) before any engine runs; a hostile result is a FAIL
or MISSING line, never a traceback, never a read outside its folder, never a hang.
"""
import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from swaref.conformance import safetensors_io as ST
from swaref.conformance.suite import manifest_hash
from swaref.modelsuite import check_model_suite, generate_suite
from swaref.modelsuite.checkpoint import canonical_json
from swaref.modelsuite.engines import swaref_engine


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("models-core"))
    generate_suite(d)
    return d


@pytest.fixture
def copy(core, tmp_path):
    dst = str(tmp_path / "suite")
    shutil.copytree(core, dst, symlinks=True)
    return dst


def _manifest(d):
    with open(os.path.join(d, "manifest.json")) as f:
        return json.load(f)


def _resign(d, m):
    """Rewrite the manifest with its suite hash recomputed (hashes prove integrity, not authorship)."""
    m["suite_hash"] = manifest_hash(m)
    with open(os.path.join(d, "manifest.json"), "wb") as f:
        f.write(canonical_json(m))


def _check(d, **kw):
    lines = []
    kw.setdefault("python", swaref_engine)
    return check_model_suite(d, out=lines.append, **kw), lines


def _never_called(*a):
    raise AssertionError("the engine ran on a corrupt suite")


def test_a_modified_checkpoint_file_is_corrupt(copy):
    path = os.path.join(copy, "mistral", "config.json")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace('"sliding_window": 16', '"sliding_window": 99'))   # same length
    code, lines = _check(copy, python=_never_called)
    assert code == 2 and "mistral: config.json does not match its sha256" in lines[0]


def test_an_edited_manifest_is_corrupt(copy):
    m = _manifest(copy)
    m["cases"][0]["window"] = 17
    with open(os.path.join(copy, "manifest.json"), "w") as f:
        json.dump(m, f)
    code, lines = _check(copy, python=_never_called)
    assert code == 2 and "suite_hash does not match" in lines[0]


@pytest.mark.parametrize("bad_id", ["../outside", "/etc", "a/b", ".hidden", "x\n"])
def test_case_ids_that_are_not_bare_names_are_corrupt(copy, bad_id):
    m = _manifest(copy)
    m["cases"][0]["id"] = bad_id
    _resign(copy, m)
    code, lines = _check(copy, python=_never_called)
    assert code == 2 and lines[0].startswith("CORRUPT")


def test_a_checkpoint_folder_that_links_outside_is_corrupt(copy, tmp_path):
    outside = tmp_path / "elsewhere"
    shutil.move(os.path.join(copy, "mistral"), outside)
    os.symlink(outside, os.path.join(copy, "mistral"))
    code, lines = _check(copy, python=_never_called)
    assert code == 2 and "not inside the suite folder" in lines[0]


def test_a_golden_file_larger_than_its_entry_is_not_read(copy):
    m = _manifest(copy)
    with open(os.path.join(copy, "mistral.golden.safetensors"), "ab") as f:
        f.write(b"\0" * 1024)
    code, lines = _check(copy, python=_never_called)
    assert code == 2 and "more than the" in lines[0]
    assert m == _manifest(copy)


def test_a_resigned_golden_file_with_the_wrong_tensors_is_corrupt(copy):
    """Hashes recomputed over a golden file whose logits have the wrong shape: still CORRUPT."""
    path = os.path.join(copy, "mistral.golden.safetensors")
    tensors, dtypes, meta = ST.read(path)
    tensors["logits"] = tensors["logits"][:-1]
    data = ST.write(path, tensors, dtypes={"tokens": "I64"}, metadata=meta)
    m = _manifest(copy)
    m["cases"][0]["golden"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    _resign(copy, m)
    code, lines = _check(copy, python=_never_called)
    assert code == 2 and "disagree with the manifest entry" in lines[0]


def test_a_deeply_nested_manifest_is_refused_without_recursion(copy):
    with open(os.path.join(copy, "manifest.json"), "w") as f:
        f.write("[" * 100000 + "]" * 100000)
    code, lines = _check(copy, python=_never_called)
    assert code == 2 and "nested" in lines[0]


def test_usage_errors_exit_2(copy, tmp_path):
    assert _check(copy, python=None)[0] == 2                                   # neither source
    assert _check(copy, logits_dir=str(tmp_path))[0] == 2                      # both sources
    code, lines = _check(copy, only={"no-such-case"})
    assert code == 2 and "no case 'no-such-case'" in lines[0]
    code, lines = _check(copy, python="no_such_module_xyz:fn")
    assert code == 2 and "cannot import" in lines[0]


# ---------------------------------------------------------------- hostile results

def _one(copy, results, cid="mistral"):
    code, lines = _check(copy, python=None, logits_dir=str(results), only={cid})
    return code, lines[0]


def test_missing_result_is_missing(copy, tmp_path):
    code, line = _one(copy, tmp_path)
    assert code == 1 and line.startswith("MISSING mistral")


def test_a_pickled_npy_is_not_unpickled(copy, tmp_path):
    np.save(tmp_path / "mistral.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    code, line = _one(copy, tmp_path)
    assert code == 1 and line.startswith("FAIL") and "not a readable .npy" in line


@pytest.mark.parametrize("make, words", [
    (lambda T, V: np.zeros((T, V + 1), np.float32), "has shape"),
    (lambda T, V: np.zeros((T, V), np.int64), "expected floats"),
    (lambda T, V: np.zeros((T * 200, V)), "more than the"),
])
def test_malformed_results_fail(copy, tmp_path, make, words):
    e = _manifest(copy)["cases"][0]
    np.save(tmp_path / "mistral.npy", make(e["tokens"], e["vocab_size"]))
    code, line = _one(copy, tmp_path)
    assert code == 1 and line.startswith("FAIL") and words in line


def test_nan_logits_are_an_infinite_error(copy, tmp_path):
    e = _manifest(copy)["cases"][0]
    bad = np.zeros((e["tokens"], e["vocab_size"]))
    bad[3, 5] = np.nan
    np.save(tmp_path / "mistral.npy", bad)
    rep = tmp_path / "r.json"
    code, lines = _check(copy, python=None, logits_dir=str(tmp_path), only={"mistral"}, json_report=str(rep))
    assert code == 1 and lines[0].startswith("FAIL")
    assert json.loads(rep.read_text())["cases"][0]["infinite_error"] is True


def test_two_result_files_for_one_case_fail(copy, tmp_path):
    e = _manifest(copy)["cases"][0]
    np.save(tmp_path / "mistral.npy", np.zeros((e["tokens"], e["vocab_size"])))
    ST.write(str(tmp_path / "mistral.safetensors"), {"logits": np.zeros((e["tokens"], e["vocab_size"]))})
    code, line = _one(copy, tmp_path)
    assert code == 1 and "write exactly one" in line


def test_a_result_that_links_outside_or_is_a_fifo_fails_without_hanging(copy, tmp_path):
    res = tmp_path / "res"
    res.mkdir()
    secret = tmp_path / "secret.npy"
    e = _manifest(copy)["cases"][0]
    np.save(secret, np.zeros((e["tokens"], e["vocab_size"])))
    os.symlink(secret, res / "mistral.npy")
    code, line = _one(copy, res)
    assert code == 1 and "outside" in line
    os.remove(res / "mistral.npy")
    os.mkfifo(res / "mistral.npy")
    code, line = _one(copy, res)
    assert code == 1 and "not a regular file" in line


def test_an_engine_that_raises_is_a_fail_with_its_place(copy):
    def engine(d, tokens):
        raise RuntimeError("boom")
    code, lines = _check(copy, python=engine, only={"mistral"})
    assert code == 1 and "engine raised RuntimeError: boom (at test_modelsuite_security.py:" in lines[0]


def test_an_engine_never_sees_a_path_outside_the_suite(copy):
    seen = []

    def engine(d, tokens):
        seen.append(os.path.realpath(d))
        return swaref_engine(d, tokens)
    assert _check(copy, python=engine)[0] == 0
    root = os.path.realpath(copy)
    assert seen and all(os.path.commonpath([root, s]) == root for s in seen)
