"""The C port in examples/c_port passes the core suite through ``swaref vectors check --exec``.

It is compiled here with the system compiler (``$CC`` or ``cc``) into a temporary
folder.  In CI (env CI=true) a missing compiler is a failure, not a skip: the
port is the proof that docs/conformance.md is enough to write a conforming port.
"""
import os
import shutil
import subprocess

import numpy as np
import pytest

from swaref import conformance as VX
from swaref.conformance import safetensors_io as ST

from conformance_helpers import core_suite

SRC = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "c_port", "swaref_port.c")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _compiler():
    cc = os.environ.get("CC", "cc").split()
    if shutil.which(cc[0]) is None:
        msg = f"no C compiler: {cc[0]!r} not found on PATH"
        if IN_CI:
            pytest.fail(msg + " (CI=true: the C port must be built and checked in CI)")
        pytest.skip(msg)
    return cc


def _build(tmp, source_text=None, name="swaref_port"):
    cc = _compiler()
    src = os.path.join(tmp, name + ".c")
    with open(SRC) as f:
        text = f.read()
    with open(src, "w") as f:
        f.write(source_text(text) if source_text else text)
    exe = os.path.join(tmp, name)
    r = subprocess.run(cc + ["-std=c99", "-O2", "-Wall", "-pedantic", "-o", exe, src, "-lm"],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"compiling {SRC} failed:\n{r.stderr}"
    return exe


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("cport"))
    exe = _build(tmp)
    return tmp, exe, core_suite(tmp_path_factory)[0]


def test_c_port_passes_core_suite(built, tmp_path):
    _, exe, suite = built
    lines = []
    rep = tmp_path / "report.json"
    code = VX.check_suite(suite, exec_cmd=f"{exe} {{in}} {{out}}", out=lines.append, json_report=str(rep))
    assert code == 0, "\n".join(l for l in lines if not l.startswith("PASS"))
    assert "0 failed, 0 missing" in next(l for l in lines if l.startswith("summary:"))
    assert lines[-1].endswith(" passed, 0 failed")


def test_c_port_output_is_standard_safetensors(built, tmp_path):
    """What the C port writes is readable by the safetensors package (and by our strict reader)."""
    stn = pytest.importorskip("safetensors.numpy")
    _, exe, suite = built
    m = VX.load_suite(suite).manifest
    for op in ("attention", "decode"):
        c = next(c for c in m["cases"] if c["op"] == op and c["expect"] == "valid")
        out = tmp_path / f"{c['id']}.out.safetensors"
        subprocess.run([exe, os.path.join(suite, c["file"]), str(out)], check=True)
        theirs = stn.load_file(str(out))
        ours, dtypes, meta = ST.read(out)
        assert meta["input_digest"] == c["input_digest"]
        for n in ours:
            np.testing.assert_array_equal(theirs[n], ours[n])


def test_c_port_with_an_off_by_one_window_fails(built, tmp_path):
    """The same C code with the W+1 bug (j >= p - W) must fail the cases that catch it."""
    tmp, _, suite = built
    patch = lambda t: t.replace("j > p - P->W", "j >= p - P->W")  # noqa: E731
    with open(SRC) as f:
        assert "j > p - P->W" in f.read()
    exe = _build(str(tmp_path), patch, "swaref_port_wplus1")
    m = VX.load_suite(suite).manifest
    must = {c["id"] for c in m["cases"] if c["expect"] == "valid" and c["wrong_variants"]["window_plus_1"]["applicable"]}
    lines = []
    code = VX.check_suite(suite, exec_cmd=f"{exe} {{in}} {{out}}", out=lines.append, only=must)
    assert code == 1
    verdicts = [l for l in lines if l.split()[0] in ("PASS", "FAIL", "MISSING", "SKIP")]
    assert len(verdicts) == len(must) and all(l.startswith("FAIL") for l in verdicts), \
        [l for l in verdicts if not l.startswith("FAIL")]
    assert any("matches known wrong variant window_plus_1" in l for l in verdicts)


def test_c_port_reports_unreadable_input(built, tmp_path):
    """A truncated case file makes the port exit 1; the runner's --exec path turns that into FAIL."""
    _, exe, suite = built
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00")
    r = subprocess.run([exe, str(bad), str(tmp_path / "x.out.safetensors")], capture_output=True, text=True)
    assert r.returncode == 1 and "too short" in r.stderr
