"""The runner as port authors use it (swaref/conformance/runner.py, cli.py; docs/conformance.md).

Results folders, Python and --exec ports, tampered suites, bad results, case
selection with SKIP and the claim line, the JSON report against its published
schema, the Python API for a port's own pytest suite, and the sample output in
docs/conformance.md, regenerated here so it cannot drift.
"""
import difflib
import json
import os
import re
import shutil
import sys

import jsonschema
import numpy as np
import pytest

import swaref
from swaref import conformance as C
from swaref.cli import main as cli_main
from swaref.conformance import safetensors_io as ST
from swaref.conformance.schema import errors as schema_errors, load_schema

from conformance_helpers import copy_suite, core_suite, resign, run, statuses, valid_ids

DOC = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "conformance.md")


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return core_suite(tmp_path_factory)


@pytest.fixture(scope="module")
def results(suite, tmp_path_factory):
    d = tmp_path_factory.mktemp("results")
    C.run_port_to_dir(suite[0], C.reference_port, str(d))
    return str(d)


def _report_ok(doc):
    """The report satisfies report.schema.json, by our validator and by jsonschema."""
    schema = load_schema("report")
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
    assert not schema_errors(doc, schema)
    return doc


# --------------------------------------------------------------------------
# Tampering, results folders, bad results
# --------------------------------------------------------------------------

def _flip_byte(path, at=-1):
    data = bytearray(path.read_bytes())
    data[at] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how,needle", [
    ("flip", "sha256"), ("manifest", "suite_hash"), ("truncate", "malformed"), ("swap", "disagree"),
    ("delete", "cannot read"), ("nomanifest", "cannot read"),
])
def test_tampered_suite_exits_2(suite, tmp_path, how, needle):
    dst = copy_suite(suite, tmp_path)
    c0, c1 = suite[1]["cases"][0], suite[1]["cases"][1]
    if how == "flip":
        _flip_byte(dst / c0["file"])
    elif how == "manifest":
        m = json.loads((dst / "manifest.json").read_text())
        m["cases"][0]["window"] = 99
        (dst / "manifest.json").write_text(json.dumps(m))
    elif how == "truncate":
        p = dst / c0["file"]
        p.write_bytes(p.read_bytes()[:-4])
        resign(dst)
    elif how == "swap":
        shutil.copy(dst / c1["file"], dst / c0["file"])
        resign(dst)
    elif how == "delete":
        os.remove(dst / c0["file"])
    else:
        os.remove(dst / "manifest.json")
    rep = tmp_path / "r.json"
    code, lines = run(str(dst), C.reference_port, json_report=str(rep))
    assert code == 2
    assert lines[0].startswith("CORRUPT") and needle in lines[0], lines[0]
    assert _report_ok(json.loads(rep.read_text()))["status"] == "corrupt"


def test_golden_results_inconsistent_with_the_schedule_are_corrupt(suite, tmp_path):
    """A re-signed case whose schedule does not cover its golden rows: CORRUPT, not a judge crash."""
    dst = copy_suite(suite, tmp_path)
    c = next(c for c in suite[1]["cases"] if c["expect"] == "valid" and c["op"] == "prefill")
    t, d, meta = ST.read(dst / c["file"])
    t["schedule"] = t["schedule"][:-1]
    ST.write(dst / c["file"], t, dtypes=d, metadata=meta)
    m = json.loads((dst / "manifest.json").read_text())
    next(e for e in m["cases"] if e["id"] == c["id"])["tensors"]["schedule"]["shape"] = [len(t["schedule"])]
    resign(dst, m)
    code, lines = run(str(dst), C.reference_port)
    assert code == 2 and "do not cover the golden output rows" in lines[0]


@pytest.mark.parametrize("steps", [[[0, 5], [2, 1]], [[0, 5, 1]], [[3, 5], [2, 1]], "huge-rollback"])
def test_steps_inconsistent_with_the_schedule_are_corrupt(suite, tmp_path, steps):
    """A re-signed rollback case whose steps disagree with its schedule or golden states: CORRUPT."""
    dst = copy_suite(suite, tmp_path)
    c = next(c for c in suite[1]["cases"] if c["expect"] == "valid" and "rollback" in c["features"])
    t, d, meta = ST.read(dst / c["file"])
    if steps == "huge-rollback":       # consistent with the schedule, but rolls back 2^62 tokens
        steps = t["steps"].copy()
        steps[steps[:, 0] == 2, 1] = 2 ** 62
    t["steps"] = np.asarray(steps, dtype=np.int64)
    ST.write(dst / c["file"], t, dtypes=d, metadata=meta)
    m = json.loads((dst / "manifest.json").read_text())
    next(e for e in m["cases"] if e["id"] == c["id"])["tensors"]["steps"]["shape"] = list(t["steps"].shape)
    resign(dst, m)
    code, lines = run(str(dst), C.reference_port)
    assert code == 2 and lines[0].startswith("CORRUPT") and "steps" in lines[0], lines[0]


def test_results_folder_passes_and_json_report(suite, results, tmp_path):
    rep = tmp_path / "r.json"
    assert cli_main(["vectors", "check", suite[0], "--results", results, "--json-report", str(rep)]) == 0
    doc = _report_ok(json.loads(rep.read_text()))
    assert doc["status"] == "pass" and doc["suite_hash"] == suite[1]["suite_hash"]
    assert doc["counts"]["PASS"] == len(suite[1]["cases"]) and doc["claim"].startswith(f"swaref spec {swaref.SPEC_VERSION},")


def test_bad_results_get_per_case_messages(suite, results, tmp_path, capsys):
    res = tmp_path / "res"
    shutil.copytree(results, res)
    cases = {c["id"]: c for c in suite[1]["cases"]}
    ids = sorted(i for i in cases if cases[i]["expect"] == "valid" and cases[i]["op"] == "decode")
    att = sorted(i for i in cases if cases[i]["expect"] == "valid" and cases[i]["op"] == "attention")
    neg = sorted(i for i in cases if cases[i]["expect"] == "invalid")
    os.remove(res / f"{ids[0]}.out.safetensors")                                # missing
    p = res / f"{ids[1]}.out.safetensors"
    p.write_bytes(p.read_bytes()[:-10])                                         # truncated
    t, _, meta = ST.read(res / f"{att[0]}.out.safetensors")
    ST.write(res / f"{att[0]}.out.safetensors", {"out": t["out"].astype(np.int32)}, metadata=meta)
    ST.write(res / f"{att[1]}.out.safetensors", {"out": t["out"]}, metadata=meta)  # wrong shape/other digest
    t, _, meta = ST.read(res / f"{att[2]}.out.safetensors")
    ST.write(res / f"{att[2]}.out.safetensors", t, metadata={"input_digest": "0" * 64})
    t, _, meta = ST.read(res / f"{att[3]}.out.safetensors")
    ST.write(res / f"{att[3]}.out.safetensors", {"out": np.full_like(t["out"], np.nan)}, metadata=meta)
    (res / f"{neg[0]}.err.json").write_text('{"kind": "bogus"}')
    (res / f"{neg[1]}.err.json").write_text("not json")
    (res / f"{neg[2]}.err.json").write_text('["window"]')
    (res / "some-other-case.out.safetensors").write_bytes(b"")
    rep = tmp_path / "r.json"
    code = cli_main(["vectors", "check", suite[0], "--results", str(res), "--json-report", str(rep)])
    out = capsys.readouterr().out
    assert code == 1 and "Traceback" not in out
    doc = _report_ok(json.loads(rep.read_text()))
    by = {c["case_id"]: c for c in doc["cases"]}
    assert by[ids[0]]["status"] == "MISSING"
    assert by[ids[1]]["status"] == "FAIL" and "truncated" in by[ids[1]]["message"]
    assert "dtype I32" in by[att[0]]["message"]
    assert by[att[1]]["status"] == "FAIL"
    assert "another suite version" in by[att[2]]["message"]
    assert by[att[3]]["err_units"] is None and by[att[3]]["infinite_error"] is True    # a number or null, never "inf"
    assert "NaN/Inf in" in by[att[3]]["message"]
    assert "not in the closed list" in by[neg[0]]["message"]
    assert "not a JSON object" in by[neg[1]]["message"] and "not a JSON object" in by[neg[2]]["message"]
    assert "another suite version?" in out and doc["claim"] is None
    assert out.rstrip().splitlines()[-1] == f"{doc['counts']['PASS']} passed, {doc['counts']['FAIL'] + 1} failed"


def test_wrong_kind_and_accepting_negative_fail(suite):
    d, m = suite
    neg = [c["id"] for c in m["cases"] if c["expect"] == "invalid"]

    def wrong_kind(inputs, meta):
        raise swaref.SwarefError("argument", "nope")

    code, lines = run(d, wrong_kind, only=set(neg[:2]) | {next(iter(valid_ids(m)))})
    verdicts = [l for l in lines if l.split()[0] in ("PASS", "FAIL")]
    assert code == 1 and len(verdicts) == 3 and all(l.startswith("FAIL") for l in verdicts)
    assert "rejected a valid input" in "\n".join(lines)
    code, lines = run(d, lambda i, m: {"out": np.zeros(1)}, only=set(neg[:1]))
    assert code == 1 and "accepted an input that must be rejected" in lines[0]
    code, lines = run(d, lambda i, m: 1 / 0, only=set(neg[:1]))
    assert code == 1 and "ZeroDivisionError" in lines[0]


def test_a_port_bug_with_a_kind_attribute_outside_the_list_is_not_a_rejection(suite):
    d, m = suite
    neg = next(c for c in m["cases"] if c["expect"] == "invalid")

    class Oops(Exception):
        kind = neg["error_kinds"][0].upper()          # not in ERROR_KINDS: not a rejection

    def port(inputs, meta):
        raise Oops("internal bug")

    code, lines = run(d, port, only={neg["id"]})
    assert code == 1 and lines[0].startswith("FAIL") and "port raised Oops" in lines[0]

    def loads_a_suite(inputs, meta):        # a SuiteError inside a port: not a rejection, not exit 2
        raise C.SuiteError("the port's own suite is corrupt")

    code, lines = run(d, loads_a_suite, only={neg["id"]})
    assert code == 1 and lines[0].startswith("FAIL") and "port raised SuiteError" in lines[0]


# --------------------------------------------------------------------------
# Command line, --python, --exec
# --------------------------------------------------------------------------

def test_cli_generate_and_check_python(tmp_path, capsys):
    pick = [s for s in C.core_cases() if s.op == "decode"][:2]
    C.generate_suite(str(tmp_path / "s"), cases=pick)
    for spec in ("swaref.conformance.ports:reference_port", "swaref.vectors:reference_port"):
        assert cli_main(["vectors", "check", str(tmp_path / "s"), "--python", spec]) == 0
    assert cli_main(["vectors", "check", str(tmp_path / "s"), "--python", "swaref.conformance.ports:nope"]) == 2
    assert cli_main(["vectors", "check", str(tmp_path / "s"), "--results", str(tmp_path / "none")]) == 1
    out = capsys.readouterr().out
    assert out.count("MISSING") == 2 and "has no function 'nope'" in out


def test_python_port_is_found_in_the_current_folder(tmp_path, monkeypatch, capsys):
    """As with ``python -m``: a module next to the user, not installed, is importable."""
    pick = [s for s in C.core_cases() if s.op == "attention"][:1]
    C.generate_suite(str(tmp_path / "s"), cases=pick)
    (tmp_path / "my_local_port.py").write_text("from swaref.conformance.ports import reference_port as run\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "my_local_port", raising=False)
    assert cli_main(["vectors", "check", "s", "--python", "my_local_port:run"]) == 0
    sys.modules.pop("my_local_port", None)


def test_unknown_case_is_a_usage_error(suite, capsys):
    assert cli_main(["vectors", "check", suite[0], "--python", "swaref.conformance.ports:reference_port",
                     "--case", "does-not-exist"]) == 2
    assert "no case 'does-not-exist'" in capsys.readouterr().out


PORT_SCRIPT = """
import os, sys
from swaref import conformance as C
from swaref.conformance import safetensors_io as ST
t, d, meta = ST.read(sys.argv[1])
r = C.run_python(C.reference_port, (t, d, meta))
res = os.path.dirname(sys.argv[2])
if r[0] == "error":
    C.write_result(res, meta["case_id"], error=r[1])
else:
    C.write_result(res, meta["case_id"], r[1], input_digest=meta["input_digest"])
sys.exit(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
"""


def test_exec_mode_with_a_python_script(suite, tmp_path):
    script = tmp_path / "port.py"
    script.write_text(PORT_SCRIPT)
    ids = sorted(valid_ids(suite[1]))[:2] + [c["id"] for c in suite[1]["cases"] if c["expect"] == "invalid"][:1]
    lines = []
    code = C.check_suite(suite[0], exec_cmd=f"{sys.executable} {script} {{in}} {{out}}", out=lines.append,
                         only=set(ids))
    assert code == 0, lines
    lines = []
    code = C.check_suite(suite[0], exec_cmd=f"{sys.executable} -c 'import sys; sys.exit(7)' {{in}}",
                         out=lines.append, only=set(ids[:1]))
    assert code == 1 and "status 7" in lines[0]
    lines = []                        # a result file does not excuse a failing exit status
    code = C.check_suite(suite[0], exec_cmd=f"{sys.executable} {script} {{in}} {{out}} 3", out=lines.append,
                         only=set(ids[:1]))
    assert code == 1 and "status 3" in lines[0]


# --------------------------------------------------------------------------
# Selection, SKIP and the claim
# --------------------------------------------------------------------------

def test_filters_skip_and_claim_exactly_what_was_covered(suite, tmp_path):
    d, m = suite
    rep = tmp_path / "r.json"
    code, lines = run(d, C.reference_port, ops=["attention"], dtypes=["float16", "bfloat16"],
                      skip_features=["poison"], json_report=str(rep))
    picked = [c for c in m["cases"] if c["op"] == "attention" and c["dtype"] in ("float16", "bfloat16")
              and not c["poison"]]
    st = statuses(lines)
    assert code == 0 and sorted(i for i, s in st.items() if s == "PASS") == sorted(c["id"] for c in picked)
    assert sum(s == "SKIP" for s in st.values()) == len(m["cases"]) - len(picked)
    claim = next(l for l in lines if l.startswith("claim:"))
    assert f"{len(picked)}/{len(picked)} selected cases PASS" in claim
    assert f"{len(m['cases']) - len(picked)} of {len(m['cases'])} cases SKIPPED" in claim
    assert "op attention; dtype float16,bfloat16; without poison" in claim
    doc = _report_ok(json.loads(rep.read_text()))
    assert doc["counts"]["SKIP"] == len(m["cases"]) - len(picked) and doc["selection"]["skip_features"] == ["poison"]


def test_a_skipped_case_is_never_a_pass(suite):
    """A port that fails everything it is given still fails: SKIP only removes cases from the claim."""
    d, m = suite
    code, lines = run(d, lambda i, m: 1 / 0, dtypes=["float64"])
    assert code == 1 and lines[-1].startswith("0 passed")
    assert next(l for l in lines if l.startswith("claim:")).startswith("claim: none")


@pytest.mark.parametrize("kw,needle", [
    ({"ops": ["matmul"]}, "--op"), ({"dtypes": ["int8"]}, "--dtype"), ({"skip_features": ["x"]}, "--skip-feature"),
    ({"ops": ["attention"], "skip_features": list(C.FEATURES) + []}, None),
])
def test_bad_or_empty_selections_are_usage_errors(suite, kw, needle):
    d, m = suite
    if needle is None:               # a selection that leaves nothing to judge
        kw = {"ops": ["attention"], "dtypes": ["float32"], "only": {c["id"] for c in m["cases"] if c["op"] == "decode"}}
    code, lines = run(d, C.reference_port, **kw)
    assert code == 2 and lines[0].startswith("usage error") and (needle is None or needle in lines[0])


def test_cli_filters(suite, capsys):
    assert cli_main(["vectors", "check", suite[0], "--python", "swaref.conformance.ports:reference_port",
                     "--op", "prefill,decode", "--dtype", "float32", "--skip-feature", "initial_cache"]) == 0
    out = capsys.readouterr().out
    assert "SKIP    attention_" in out and "PASS    prefill_f32" in out
    with pytest.raises(SystemExit):
        cli_main(["vectors", "check", suite[0], "--python", "x:y", "--op", "matmul"])


# --------------------------------------------------------------------------
# The Python API, as docs/conformance.md shows it for a port's own pytest suite
# --------------------------------------------------------------------------

def test_python_api_example_in_the_docs_runs(suite, tmp_path):
    """The pytest example in docs/conformance.md, run as written (with the suite path filled in)."""
    with open(DOC) as f:
        text = f.read()
    code = re.search(r"<!-- pytest-example -->\n```python\n(.*?)```", text, re.S).group(1)
    test_file = tmp_path / "test_my_port.py"
    test_file.write_text(code.replace('"core-suite"', repr(suite[0])).replace(
        "from my_pkg.port import run_case", "from swaref.conformance.ports import reference_port as run_case"))
    r = pytest.main(["-q", "-p", "no:cacheprovider", str(test_file)])
    assert r == 0
    # ... and it can fail: the same test with a broken port (another module name: no stale import).
    broken = tmp_path / "test_my_broken_port.py"
    broken.write_text(test_file.read_text().replace(
        "from swaref.conformance.ports import reference_port as run_case", "def run_case(inputs, meta):\n    1 / 0"))
    assert pytest.main(["-q", "-p", "no:cacheprovider", str(broken)]) == 1


# --------------------------------------------------------------------------
# docs/conformance.md's sample output is what the runner prints
# --------------------------------------------------------------------------

SAMPLE_PASS = "attention_f16_w8_h2x2_d8_t19_s19"
SAMPLE_FAIL = "attention_f32_w5_h2x1_d4_t13_s13"


def _window_plus_one_on(case_id):
    """The reference, except that one case runs with the window one too wide."""
    def port(inputs, meta):
        if meta["case_id"] == case_id:
            inputs = dict(inputs, window=inputs["window"] + 1)
        return C.reference_port(inputs, meta)
    return port


def sample_blocks(suite_dir):
    """The two sample blocks of docs/conformance.md, produced by real runs."""
    _, lines = run(suite_dir, _window_plus_one_on(SAMPLE_FAIL))
    by_id = {l.split()[1]: l for l in lines if l.split()[0] in ("PASS", "FAIL")}
    check = [by_id[SAMPLE_PASS], by_id[SAMPLE_FAIL]] + lines[-3:]
    _, lines = run(suite_dir, C.reference_port, dtypes=["float16", "bfloat16"], skip_features=["negative"])
    blocks = {"check-output": "\n".join(check), "claim-output": "\n".join(lines[-3:])}
    _, lines = run(suite_dir, C.reference_port, skip_features=list(C.cases.FEATURES_1_1))
    blocks["claim-1.0-output"] = "\n".join(lines[-3:])
    _, lines = run(suite_dir, C.reference_port, skip_features=["sink_tokens", "two_sided", "chunked"])
    blocks["claim-part-one-output"] = "\n".join(lines[-3:])
    return blocks


def test_docs_sample_output_is_current(suite):
    with open(DOC) as f:
        text = f.read()
    for name, want in sample_blocks(suite[0]).items():
        m = re.search(rf"<!-- sample: {name} -->\n```\n(.*?)\n```", text, re.S)
        assert m, f"docs/conformance.md has no '<!-- sample: {name} -->' block"
        diff = "\n".join(difflib.unified_diff(m.group(1).splitlines(), want.splitlines(), "docs", "runner",
                                              lineterm=""))
        assert not diff, f"docs/conformance.md sample {name} is stale; replace the block by:\n{want}\n\n{diff}"


def test_one_exception_root():
    """Every error the conformance package raises on purpose is a SwarefError with a kind from the list."""
    from swaref.conformance.files import FileFormatError
    for cls, kind, msg in ((C.GeneratorError, "suite", "x"), (C.SuiteError, "suite", "x"),
                           (C.SafetensorsError, "format", "x"), (FileFormatError, "format", "x")):
        e = cls(msg)
        assert isinstance(e, swaref.SwarefError) and e.kind == kind and kind in swaref.ERROR_KINDS


def test_python_port_module_that_fails_to_import_is_a_usage_error(tmp_path, monkeypatch):
    pick = [s for s in C.core_cases() if s.op == "attention"][:1]
    C.generate_suite(str(tmp_path / "s"), cases=pick)
    (tmp_path / "broken_port_module.py").write_text("def run(:\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    code, lines = run(str(tmp_path / "s"), "broken_port_module:run")
    assert code == 2 and "SyntaxError" in lines[0]


def test_exec_results_left_by_an_earlier_case_do_not_count(suite, tmp_path):
    """Each case runs with a fresh {out} folder: a file planted for a later case is not its result."""
    neg = sorted(c["id"] for c in suite[1]["cases"] if c["expect"] == "invalid")[:2]
    kinds = {c["id"]: c["error_kinds"][0] for c in suite[1]["cases"] if c["expect"] == "invalid"}
    script = tmp_path / "planter.py"
    script.write_text(
        "import json, os, sys\nfrom swaref.conformance import safetensors_io as ST\n"
        "cid = ST.read(sys.argv[1])[2]['case_id']\n"
        f"if cid == {neg[0]!r}:\n"
        "    for c, k in ((sys.argv[3], sys.argv[4]), (cid, sys.argv[5])):\n"
        "        json.dump({'kind': k}, open(os.path.join(os.path.dirname(sys.argv[2]), c + '.err.json'), 'w'))\n")
    lines = []
    code = C.check_suite(suite[0], exec_cmd=f"{sys.executable} {script} {{in}} {{out}} {neg[1]} {kinds[neg[1]]} "
                                            f"{kinds[neg[0]]}", out=lines.append, only=set(neg))
    st = statuses(lines)
    assert code == 1 and st == {neg[0]: "PASS", neg[1]: "MISSING"}, lines
