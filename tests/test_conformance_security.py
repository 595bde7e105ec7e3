"""Hostile suites and results: the runner trusts nothing in them (issue 8, items 1, 3, 5, 6).

Every hostile suite here is re-signed (sha256s and suite hash recomputed), so it
verifies: hashes prove integrity, not authorship.  Each must be CORRUPT (exit
2) with no command run, nothing read or written outside its folder, and never
a traceback; each hostile result must be a FAIL line.
"""
import json
import os
import sys
import time

import jsonschema
import numpy as np
import pytest

import swaref
from swaref import conformance as C
from swaref.cli import main as cli_main
from swaref.conformance import runner as R
from swaref.conformance import safetensors_io as ST
from swaref.conformance.schema import errors as schema_errors, load_schema

from conformance_helpers import copy_suite, core_suite, read_manifest, resign


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return core_suite(tmp_path_factory)


def _check(dst, capsys=None, **kw):
    lines = []
    code = C.check_suite(str(dst), out=lines.append, **kw)
    return code, lines


def _first_valid(m, op="attention"):
    return next(c for c in m["cases"] if c["expect"] == "valid" and c["op"] == op)


# --------------------------------------------------------------------------
# Item 1: --exec never goes through a shell; ids and file names are strict
# --------------------------------------------------------------------------

def _inject(dst, file_name=None, case_id=None):
    """The issue's reproducer: a case file named case{out}.safetensors and a case id with a shell command."""
    m = read_manifest(dst)
    c = m["cases"][0]
    if file_name:
        os.rename(dst / c["file"], dst / file_name)
        c["file"] = file_name
    if case_id:
        c["id"] = case_id
        t, d, meta = ST.read(dst / c["file"])        # the file names the same id, so the suite verifies
        ST.write(dst / c["file"], t, dtypes=d, metadata=dict(meta, case_id=case_id))
    resign(dst, m)


@pytest.mark.parametrize("file_name,case_id", [
    ("case{out}.safetensors", "x;touch MARKER;#"),
    ("case{out}.safetensors", None),
    (None, "x;touch MARKER;#"),
    ("x;touch MARKER;#.safetensors", None),
])
def test_exec_injection_through_names_is_corrupt(suite, tmp_path, monkeypatch, file_name, case_id):
    dst = copy_suite(suite, tmp_path)
    _inject(dst, file_name, case_id)
    monkeypatch.chdir(tmp_path)
    code, lines = _check(dst, exec_cmd="true {in} {out}")
    assert code == 2 and lines[0].startswith("CORRUPT"), lines[:2]
    assert not (tmp_path / "MARKER").exists() and not (dst / "MARKER").exists()


def test_exec_template_is_never_run_by_a_shell(suite, tmp_path, monkeypatch):
    """Shell syntax in the template is passed as arguments, not run: no MARKER appears."""
    monkeypatch.chdir(tmp_path)
    cid = _first_valid(suite[1])["id"]
    code, lines = _check(suite[0], exec_cmd="true {in} ; touch MARKER ; echo $(touch MARKER2)", only={cid})
    assert code == 1 and "wrote neither" in lines[0]
    assert not (tmp_path / "MARKER").exists() and not (tmp_path / "MARKER2").exists()


def test_exec_placeholders_are_substituted_once_per_argument(tmp_path):
    argv = R.parse_exec("true --in={in} '{out}' x{err}y {{in}}")
    paths = {"in": "/s/a{out}", "out": "/t/b.out", "err": "/t/b.err"}
    got = [R._PLACEHOLDER.sub(lambda m: paths[m.group(1)], a) for a in argv]
    assert got == ["true", "--in=/s/a{out}", "/t/b.out", "x/t/b.erry", "{/s/a{out}}"]


@pytest.mark.parametrize("cmd", ["", "   ", "'unbalanced {in}", "/no/such/port {in} {out}"])
def test_unusable_exec_template_is_a_usage_error(suite, cmd):
    code, lines = _check(suite[0], exec_cmd=cmd)
    assert code == 2 and lines[0].startswith("usage error: --exec")


# --------------------------------------------------------------------------
# Item 3: paths from the suite or the results stay inside their folder
# --------------------------------------------------------------------------

def _point_file(dst, value):
    m = read_manifest(dst)
    m["cases"][0]["file"] = value
    resign(dst, m)


@pytest.mark.parametrize("how", ["absolute", "dotdot", "dev-zero", "subfolder", "symlink-out", "symlink-dev-zero",
                                 "id-dotdot"])
def test_case_paths_outside_the_suite_are_corrupt(suite, tmp_path, how):
    dst = copy_suite(suite, tmp_path)
    m = read_manifest(dst)
    c0 = m["cases"][0]
    outside = tmp_path / c0["file"]
    os.replace(dst / c0["file"], outside)               # the real case, moved out of the suite
    if how == "absolute":
        _point_file(dst, str(outside))
    elif how == "dotdot":
        _point_file(dst, "../" + c0["file"])
    elif how == "dev-zero":
        _point_file(dst, "/dev/zero")
    elif how == "subfolder":
        os.mkdir(dst / "sub")
        os.replace(outside, dst / "sub" / c0["file"])
        _point_file(dst, "sub/" + c0["file"])
    elif how == "symlink-out":
        os.symlink(outside, dst / c0["file"])
        resign(dst)
    elif how == "symlink-dev-zero":
        os.symlink("/dev/zero", dst / c0["file"])
        resign(dst)
    else:
        c0["id"] = "../../somewhere/x"
        resign(dst, m)
    code, lines = _check(dst, python=C.reference_port)
    assert code == 2 and lines[0].startswith("CORRUPT"), lines[:2]
    assert "PASS" not in "\n".join(lines)


def test_symlink_inside_the_suite_is_allowed(suite, tmp_path):
    dst = copy_suite(suite, tmp_path)
    c0 = read_manifest(dst)["cases"][0]
    os.replace(dst / c0["file"], dst / "real.bin")
    os.symlink("real.bin", dst / c0["file"])
    assert _check(dst, python=C.reference_port, only={c0["id"]})[0] == 0


def test_results_are_read_only_inside_the_results_folder(suite, tmp_path):
    res = tmp_path / "res"
    res.mkdir()
    (tmp_path / "planted.err.json").write_text('{"kind": "window"}')
    neg = next(c for c in suite[1]["cases"] if c["expect"] == "invalid" and "window" in c["error_kinds"])
    os.symlink(tmp_path / "planted.err.json", res / (neg["id"] + ".err.json"))
    code, lines = _check(suite[0], results_dir=str(res), only={neg["id"]})
    assert code == 1 and lines[0].startswith("FAIL") and "outside" in lines[0]


def test_run_port_to_dir_and_write_result_stay_in_their_folder(suite, tmp_path):
    dst = copy_suite(suite, tmp_path)
    m = read_manifest(dst)
    m["cases"][0]["id"] = "../escaped"
    resign(dst, m)
    with pytest.raises(C.SuiteError):
        C.run_port_to_dir(str(dst), C.reference_port, str(tmp_path / "res"))
    assert not (tmp_path / "escaped.out.safetensors").exists()
    with pytest.raises(swaref.SwarefError, match="case_id"):
        C.write_result(str(tmp_path), "../escaped", error="window")
    assert not (tmp_path.parent / "escaped.err.json").exists()


# --------------------------------------------------------------------------
# Item 5: malformed files are CORRUPT (suite) or FAIL (result), never a traceback
# --------------------------------------------------------------------------

def _manifest_mutations():
    return {
        "cases-str": lambda m: m.__setitem__("cases", ["str"]),
        "no-suite": lambda m: m.pop("suite"),
        "bad-format-version": lambda m: m.__setitem__("format_version", 2),       # a v2 manifest, or a v4 one
        "future-format-version": lambda m: m.__setitem__("format_version", 4),
        "unknown-feature": lambda m: m["cases"][0]["features"].append("paged_cache"),
        "softcap-string": lambda m: m["cases"][0].__setitem__("softcap", "2.0"),
        "no-features": lambda m: m["cases"][0].pop("features"),
        "features-hidden": lambda m: next(c for c in m["cases"] if c["expect"] == "valid" and c["features"])
        .__setitem__("features", []),       # a 1.1 case passed off as 1.0: a 1.0 claim would cover it
        # a window-family case passed off as spec 1.1 part one: a part-one claim would cover it
        "window-features-hidden": lambda m: next(c for c in m["cases"] if c["expect"] == "valid" and c["two_sided"])
        .__setitem__("features", [f for f in next(c for c in m["cases"] if c["expect"] == "valid" and c["two_sided"])
                                  ["features"] if f != "two_sided"]),
        "two-sided-three": lambda m: next(c for c in m["cases"] if c["two_sided"]).__setitem__("two_sided", [1, 2, 3]),
        "chunk-zero": lambda m: next(c for c in m["cases"] if c["attention_chunk"]).__setitem__("attention_chunk", 0),
        "unknown-variant": lambda m: next(c for c in m["cases"] if c["expect"] == "valid")["wrong_variants"]
        .__setitem__("sink_not_in_max", {"applicable": False}),
        "window-string": lambda m: m["cases"][0].__setitem__("window", "4"),
        "unknown-field": lambda m: m["cases"][0].__setitem__("extra", 1),
        "invalid-without-kinds": lambda m: next(c for c in m["cases"] if c["expect"] == "invalid").pop("error_kinds"),
        "tensors-not-object": lambda m: m["cases"][0].__setitem__("tensors", []),
        "shape-negative": lambda m: next(iter(m["cases"][0]["tensors"].values()))["shape"].append(-1),
        "bool-as-int": lambda m: m["cases"][0].__setitem__("Hq", True),
        "id-newline": lambda m: m["cases"][0].__setitem__("id", m["cases"][0]["id"] + "\n"),
        "miss-units-nan-string": lambda m: next(v for c in m["cases"] if c["expect"] == "valid"
                                                for v in c["wrong_variants"].values()).__setitem__(
            "output_miss_units", "nan"),
    }


MUTATIONS = _manifest_mutations()


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_hostile_manifests_are_corrupt(suite, tmp_path, name, capsys):
    dst = copy_suite(suite, tmp_path)
    m = read_manifest(dst)
    MUTATIONS[name](m)
    resign(dst, m)
    assert cli_main(["vectors", "check", str(dst), "--python", "swaref.conformance.ports:reference_port"]) == 2
    out = capsys.readouterr().out
    assert out.startswith("CORRUPT") and "Traceback" not in out
    if name == "id-newline":
        assert "is not a bare name" in out


def test_deeply_nested_manifest_is_corrupt_not_recursion_error(suite, tmp_path, capsys):
    dst = copy_suite(suite, tmp_path)
    text = (dst / "manifest.json").read_text()
    (dst / "manifest.json").write_text(text[:-2] + ', "deep": ' + "[" * 100000 + "]" * 100000 + "}\n")
    assert cli_main(["vectors", "check", str(dst), "--python", "swaref.conformance.ports:reference_port"]) == 2
    out = capsys.readouterr().out
    assert out.startswith("CORRUPT") and "nested 100001 levels" in out


def test_our_validator_and_jsonschema_agree(suite, tmp_path):
    """The published schema accepts every real manifest and rejects the hostile ones, by both validators."""
    schema = load_schema("manifest")
    jsonschema.Draft202012Validator.check_schema(schema)
    v = jsonschema.Draft202012Validator(schema)
    docs = {"core": suite[1]}
    for name, mutate in MUTATIONS.items():
        m = json.loads(json.dumps(suite[1]))
        mutate(m)
        docs[name] = m
    for spec in C.full_cases()[::97]:
        docs["full-sample"] = C.generate_suite(str(tmp_path / "f"), cases=[spec])
        assert not schema_errors(docs["full-sample"], schema)
    for name, m in docs.items():
        ours = not schema_errors(m, schema)
        assert ours == v.is_valid(m), (name, schema_errors(m, schema), [e.message for e in v.iter_errors(m)][:3])
        expected_valid = name in ("core", "full-sample", "id-newline", "features-hidden", "window-features-hidden")
        assert ours == expected_valid, name
    # A trailing \n passes both regexes, so the runner's own name check (a full match) catches the newline;
    # hidden features are well-formed JSON, so the check of the entry against its file does: CORRUPT either
    # way (test_hostile_manifests_are_corrupt).


@pytest.mark.parametrize("how", ["deep-header", "shape-2**32-squared", "shape-2**64", "metadata-list"])
def test_hostile_case_files_are_corrupt(suite, tmp_path, how, capsys):
    dst = copy_suite(suite, tmp_path)
    c0 = read_manifest(dst)["cases"][0]
    header = {"deep-header": b'{"a":' + b"[" * 50000 + b"]" * 50000 + b"}",
              "shape-2**32-squared": b'{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}',
              "shape-2**64": b'{"a":{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,0]}}',
              "metadata-list": b'{"__metadata__":[]}'}[how]
    (dst / c0["file"]).write_bytes(len(header).to_bytes(8, "little") + header)
    resign(dst)
    assert cli_main(["vectors", "check", str(dst), "--python", "swaref.conformance.ports:reference_port"]) == 2
    out = capsys.readouterr().out
    assert out.startswith("CORRUPT") and "malformed safetensors" in out and "Traceback" not in out


def test_hostile_result_files_are_fail_lines(suite, tmp_path, capsys):
    res = tmp_path / "res"
    res.mkdir()
    valid = sorted(c["id"] for c in suite[1]["cases"] if c["expect"] == "valid")[:5]
    neg = sorted(c["id"] for c in suite[1]["cases"] if c["expect"] == "invalid")[:1]
    hdr = b'{"out":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}'
    (res / f"{valid[0]}.out.safetensors").write_bytes(len(hdr).to_bytes(8, "little") + hdr)
    hdr = b'{"out":' + b"[" * 50000 + b"]" * 50000 + b"}"
    (res / f"{valid[1]}.out.safetensors").write_bytes(len(hdr).to_bytes(8, "little") + hdr)
    os.symlink("/dev/zero", res / f"{valid[2]}.out.safetensors")
    with open(res / f"{valid[3]}.out.safetensors", "wb") as f:
        f.truncate(3 * 2 ** 30)                                  # 3 GB sparse: refused by its size
    os.mkfifo(res / f"{valid[4]}.out.safetensors")
    (res / f"{neg[0]}.err.json").write_text("[" * 20000 + "]" * 20000)
    rep = tmp_path / "r.json"
    code = cli_main(["vectors", "check", suite[0], "--results", str(res), "--json-report", str(rep)]
                    + [a for i in valid + neg for a in ("--case", i)])
    out = capsys.readouterr().out
    assert code == 1 and "Traceback" not in out
    by = {c["case_id"]: c for c in json.loads(rep.read_text())["cases"]}
    assert all(by[i]["status"] == "FAIL" for i in valid + neg), by
    assert "overflows" in by[valid[0]]["message"] and "nested" in by[valid[1]]["message"]
    assert "outside" in by[valid[2]]["message"] and "more than" in by[valid[3]]["message"]
    assert "not a regular file" in by[valid[4]]["message"] and "nested" in by[neg[0]]["message"]


# --------------------------------------------------------------------------
# Item 6: --exec resources: process group, bounded output, timeout values
# --------------------------------------------------------------------------

def _dead(pid, wait=3.0):
    """True once ``pid`` is gone or a zombie (killed, not yet reaped by init)."""
    end = time.monotonic() + wait
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


SPAWNER = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open(sys.argv[1], "w").write(str(child.pid))
if sys.argv[2] == "hang":
    time.sleep(60)
"""


@pytest.mark.parametrize("mode", ["hang", "exit"])
def test_port_and_its_children_are_killed_as_a_group(suite, tmp_path, mode):
    script = tmp_path / "spawner.py"
    script.write_text(SPAWNER)
    pidfile = tmp_path / "child.pid"
    cid = _first_valid(suite[1])["id"]
    t0 = time.monotonic()
    code, lines = _check(suite[0], exec_cmd=f"{sys.executable} {script} {pidfile} {mode}", only={cid}, timeout=2)
    assert code == 1 and time.monotonic() - t0 < 30
    assert ("timed out" in lines[0]) == (mode == "hang")
    assert _dead(int(pidfile.read_text())), "the port's child survived the runner"


def test_port_output_is_kept_in_a_bounded_tail():
    status, tail = R.run_bounded([sys.executable, "-c", "import sys; sys.stdout.write('x' * 5_000_000); "
                                  "print(); print('LAST LINE'); sys.exit(3)"], 30)
    assert status == 3 and len(tail) <= R.OUTPUT_TAIL and tail.rstrip().endswith(b"LAST LINE")


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1", "soon"])
def test_timeout_must_be_finite_and_positive(suite, value, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["vectors", "check", suite[0], "--exec", "true {in}", "--timeout", value])
    assert e.value.code == 2 and "--timeout" in capsys.readouterr().err
    code, lines = _check(suite[0], exec_cmd="true {in}", timeout=float(value) if value != "soon" else value)
    assert code == 2 and "--timeout" in lines[0]


def test_result_size_limit_follows_the_case(suite):
    s = C.load_suite(suite[0])
    c = s.case(_first_valid(suite[1], "decode")["id"])
    from swaref.conformance.results import RESULT_HEADER_ALLOWANCE, result_limit
    n = sum(a.size for k, a in c[0].items() if k.startswith("expected.") and not k.endswith("_atol"))
    assert result_limit(c) == 8 + RESULT_HEADER_ALLOWANCE + 8 * n
    big = np.zeros(n + 1, np.float64)
    assert len(ST.encode({"out": big})) > result_limit(c) - RESULT_HEADER_ALLOWANCE


@pytest.mark.parametrize("name,ok", [
    ("attention_f32_w4_h2x1_d8_t8_s8_scale0.3", True), ("a-b.c_d", True), ("x" * 200, True),
    ("x" * 201, False), ("", False), (".hidden", False), ("a/b", False), ("/abs", False), ("..", False),
    ("a..b", False), ("a\n", False), ("a\\b", False), ("x;touch MARKER;#", False), ("case{out}", False),
    ("caf\u00e9", False), (None, False),
])
def test_safe_names(name, ok):
    from swaref.conformance.files import is_safe_name
    assert is_safe_name(name) is ok
