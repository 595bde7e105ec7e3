"""The runner: judge a port on a suite, print one line per case, a summary and a claim.

``check_suite`` verifies the suite, selects cases (``--op``, ``--dtype``,
``--skip-feature``; the rest are SKIP and never count as passes), gets each
result from a results folder, a Python function or a command run per case,
judges it and returns the exit code: 0 every selected case passed, 1 a FAIL
or MISSING, 2 the suite is corrupt or the command line unusable.

A ``--exec`` command is split once (shlex) into an argv list and never goes
through a shell: ``{in}``, ``{out}`` and ``{err}`` are replaced inside each
argument.  The port runs in its own process group, killed as a whole on
timeout (and any stragglers once it exits); its output goes to a bounded buffer
of which the last 64 KiB are kept.
"""
import dataclasses
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading

from ..errors import SwarefError
from .cases import BASE_SPEC, DTYPES, FEATURES_1_1, FORMAT, FORMAT_VERSION
from .report import SUITE_CHANGED, stop_corrupt, stop_usage, write_report
from .verdicts import Verdict, judge
from .results import load_python_port, read_result, run_python
from .suite import SuiteError, load_suite

OPS = ("attention", "prefill", "decode")
#: Features a port may leave out of its claim with --skip-feature (each names the cases that need it).
FEATURES = {
    "negative": lambda e: e["expect"] == "invalid",
    "poison": lambda e: e["poison"],
    "initial_cache": lambda e: e.get("history", 0) > 0,
    "no_window": lambda e: e["window"] is None and not e["two_sided"] and not e["attention_chunk"],
    "explicit_scale": lambda e: e["scale"] is not None,
    "position_gaps": lambda e: e.get("positions") == "gaps",
    "large_positions": lambda e: max(e.get("start", 0), e.get("first_key_position", 0)) >= 2 ** 31,
    # spec 1.1: skipping all seven leaves exactly the spec 1.0 cases (BASE_SPEC); skipping the last three
    # exactly the cases of part one (format version 2)
    "softcap": lambda e: "softcap" in e["features"],
    "sinks": lambda e: "sinks" in e["features"],
    "slack": lambda e: "slack" in e["features"],
    "rollback": lambda e: "rollback" in e["features"],
    "sink_tokens": lambda e: "sink_tokens" in e["features"],
    "two_sided": lambda e: "two_sided" in e["features"],
    "chunked": lambda e: "chunked" in e["features"],
}
#: The last this many bytes of a port's output are kept for its FAIL line.
OUTPUT_TAIL = 64 * 1024
_PLACEHOLDER = re.compile(r"\{(in|out|err)\}")


def check_timeout(timeout):
    """--timeout: a finite number of seconds > 0."""
    try:
        t = float(timeout)
    except (TypeError, ValueError):
        t = math.nan
    if isinstance(timeout, bool) or not math.isfinite(t) or t <= 0:
        raise SwarefError("argument", f"--timeout must be a finite number of seconds > 0, got {timeout!r}")
    return t


def parse_exec(cmd):
    """Split an --exec template once into an argv list (SwarefError if it is empty or unbalanced)."""
    try:
        argv = shlex.split(cmd) if isinstance(cmd, str) else []
    except ValueError as e:
        raise SwarefError("argument", f"--exec: cannot split {cmd!r}: {e}") from None
    if not argv:
        raise SwarefError("argument", f"--exec needs a command, got {cmd!r}")
    if "{" not in argv[0] and shutil.which(argv[0]) is None:
        raise SwarefError("argument", f"--exec: {argv[0]!r} is not an executable file or a command on PATH")
    return argv


@dataclasses.dataclass
class Selection:
    """Which cases are judged: ops and dtypes (None: all), features left out, explicit case ids."""
    ops: tuple = None
    dtypes: tuple = None
    skip_features: tuple = ()
    case_ids: frozenset = None

    def check(self, suite):
        for name, got, known in (("--op", self.ops, OPS), ("--dtype", self.dtypes, tuple(DTYPES)),
                                 ("--skip-feature", self.skip_features, tuple(FEATURES))):
            bad = sorted(set(got or ()) - set(known))
            if bad:
                raise SwarefError("argument", f"{name}: unknown {bad}; known: {list(known)}")
        unknown = sorted(set(self.case_ids or ()) - set(suite.by_id))
        if unknown:
            raise SwarefError("argument", f"--case: no case {unknown[0]!r} in this suite "
                                          f"({len(unknown)} unknown ids; see manifest.json for the ids)")

    def skip_reason(self, entry):
        """Why a case is left out (None: judged)."""
        if self.ops is not None and entry["op"] not in self.ops:
            return f"op {entry['op']} not selected"
        if self.dtypes is not None and entry["dtype"] not in self.dtypes:
            return f"dtype {entry['dtype']} not selected"
        for f in self.skip_features:
            if FEATURES[f](entry):
                return f"feature {f} skipped"
        return None

    def describe(self):
        parts = [f"op {','.join(self.ops)}" if self.ops else "every op",
                 f"dtype {','.join(self.dtypes)}" if self.dtypes else "every dtype"]
        if self.skip_features:
            parts.append(f"without {','.join(self.skip_features)}")
        return "; ".join(parts)


def run_exec(argv, suite, entry, case, tmp, timeout):
    """Run the port once on a case, then read what it wrote."""
    cid = entry["id"]
    tmp = tempfile.mkdtemp(prefix="case-", dir=tmp)    # a fresh folder: nothing left by an earlier case counts
    paths = {"in": suite.input_path(cid), "out": os.path.join(tmp, cid + ".out.safetensors"),
             "err": os.path.join(tmp, cid + ".err.json")}
    args = [_PLACEHOLDER.sub(lambda m: paths[m.group(1)], a) for a in argv]
    try:
        status, tail = run_bounded(args, timeout)
    except OSError as e:
        return ("crash", f"cannot start the port {args[0]!r}: {e.strerror}")
    if status is None:
        return ("crash", f"port timed out after {timeout:g} s (its process group was killed)" + _tail(tail))
    res = read_result(tmp, cid, case)
    if status != 0:                      # a port that failed is not trusted even if it left a file
        return ("crash", f"port exited with status {status}" + _tail(tail))
    if res[0] == "missing":
        return ("missing", "port exited 0 but wrote neither {out} nor {err}")
    return res


def _tail(output):
    lines = output.decode(errors="replace").strip().splitlines()[-3:]
    return f": {' | '.join(lines)}" if lines else ""


def run_bounded(argv, timeout):
    """Run argv in a new process group -> (exit status or None on timeout, last OUTPUT_TAIL bytes of output)."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    tail = bytearray()

    def drain():
        for chunk in iter(lambda: proc.stdout.read1(1 << 16), b""):
            tail.extend(chunk)
            del tail[:-OUTPUT_TAIL]

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        status = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        status = None
    finally:
        _kill_group(proc.pid)            # on timeout the port; otherwise whatever it left running
        proc.wait()
        reader.join(5)
        proc.stdout.close()
    return status, bytes(tail)


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass                             # the group is gone already


def check_suite(suite_dir, *, results_dir=None, python=None, exec_cmd=None, json_report=None, out=None,
                timeout=60.0, only=None, ops=None, dtypes=None, skip_features=()):
    """Judge a port on a suite; prints one line per case and a summary.  -> exit code 0, 1 or 2.

    Exactly one of results_dir, python (a function or 'module:function') and
    exec_cmd gives the results.  ``only``: case ids to judge (others are not
    run); ``ops``, ``dtypes``, ``skip_features``: select what the claim covers
    (others are SKIP).
    """
    out = out or (lambda s: print(s, flush=True))
    try:
        suite = load_suite(suite_dir)
    except SuiteError as e:
        return stop_corrupt(out, json_report, suite_dir, e)
    sel = Selection(tuple(ops) if ops else None, tuple(dtypes) if dtypes else None, tuple(skip_features or ()),
                    frozenset(only) if only is not None else None)
    try:
        sel.check(suite)
        timeout = check_timeout(timeout)
        get = _result_source(suite, results_dir, python, exec_cmd, timeout)
    except SwarefError as e:
        return stop_usage(out, json_report, e)
    if not any(sel.skip_reason(e) is None for e in _chosen(suite, sel)):
        return stop_usage(out, json_report, "the selection leaves no case to judge")
    try:
        verdicts = _judge_all(suite, sel, get, out)
    except SuiteError as e:              # a case file changed after it was verified
        return stop_corrupt(out, json_report, suite_dir, e, SUITE_CHANGED)
    extra = _unknown_result_files(results_dir, suite)
    return _summarize(suite, sel, verdicts, extra, out, json_report)


def _chosen(suite, sel):
    return [e for e in suite.entries if sel.case_ids is None or e["id"] in sel.case_ids]


def _result_source(suite, results_dir, python, exec_cmd, timeout):
    """A function (entry, case, tmp) -> result, for whichever of the three sources was given."""
    if sum(x is not None for x in (results_dir, python, exec_cmd)) != 1:
        raise SwarefError("argument", "give exactly one of --results, --python and --exec")
    if results_dir is not None:
        return lambda entry, case, tmp: read_result(results_dir, entry["id"], case)
    if python is not None:
        fn = load_python_port(python) if isinstance(python, str) else python
        return lambda entry, case, tmp: run_python(fn, case)
    argv = parse_exec(exec_cmd)
    return lambda entry, case, tmp: run_exec(argv, suite, entry, case, tmp, timeout)


def _judge_all(suite, sel, get, out):
    verdicts = []
    with tempfile.TemporaryDirectory(prefix="swaref-vectors-") as tmp:
        for entry in _chosen(suite, sel):
            why = sel.skip_reason(entry)
            if why is not None:
                v = Verdict(entry["id"], "SKIP", why)
            else:
                case = suite.case(entry["id"])
                v = _judged(entry, case, get(entry, case, tmp))
            verdicts.append(v)
            out(v.line())
    return verdicts


def _judged(entry, case, result):
    try:
        return judge(entry, case, result)
    except (ValueError, TypeError, IndexError, KeyError, ArithmeticError) as e:
        # A result the layout checks let through but the comparison cannot use: a FAIL, never a PASS.
        return Verdict(entry["id"], "FAIL", f"result could not be judged: {type(e).__name__}: {e}")


def _unknown_result_files(results_dir, suite):
    if results_dir is None or not os.path.isdir(results_dir):
        return []
    extra = []
    for f in sorted(os.listdir(results_dir)):
        for suf in (".out.safetensors", ".err.json"):
            if f.endswith(suf) and f[:-len(suf)] not in suite.by_id:
                extra.append(f)
    return extra


def _summarize(suite, sel, verdicts, extra, out, json_report):
    m = suite.manifest
    counts = {s: sum(v.status == s for v in verdicts) for s in ("PASS", "FAIL", "MISSING", "SKIP")}
    failed = counts["FAIL"] + counts["MISSING"]
    if extra:
        out(f"note: {len(extra)} result files name no case of this suite (another suite version?), "
            f"e.g. {extra[0]}")
    out(f"summary: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['MISSING']} missing, "
        f"{counts['SKIP']} skipped of {len(verdicts)} cases; suite {m['suite']} {m['suite_hash']}; "
        f"spec {m['spec_version']}; format {FORMAT} v{FORMAT_VERSION}")
    claim = _claim(m, sel, counts, len(verdicts))
    out(f"claim: {claim}" if claim else f"claim: none ({_no_claim_reason(sel, counts)})")
    out(f"{counts['PASS']} passed, {failed} failed")
    code = 0 if failed == 0 else 1
    write_report(json_report, {
        "status": "pass" if code == 0 else "fail", "suite": m["suite"], "suite_hash": m["suite_hash"],
        "spec_version": m["spec_version"], "format_version": FORMAT_VERSION, "counts": counts,
        "selection": {"ops": list(sel.ops or OPS), "dtypes": list(sel.dtypes or DTYPES),
                      "skip_features": list(sel.skip_features),
                      "cases": sorted(sel.case_ids) if sel.case_ids is not None else None},
        "claim": claim, "unknown_result_files": extra, "cases": [v.to_json() for v in verdicts]})
    return code


def _claim(m, sel, counts, total):
    """The exact statement a port may make, or None when it may make none."""
    if counts["FAIL"] or counts["MISSING"] or sel.case_ids is not None:
        return None
    s = (f"swaref spec {covered_spec(m, sel)}, format {FORMAT} v{FORMAT_VERSION}, suite {m['suite']} "
         f"{m['suite_hash']}: {counts['PASS']}/{counts['PASS']} selected cases PASS")
    if counts["SKIP"]:
        s += f"; {counts['SKIP']} of {total} cases SKIPPED, not covered ({sel.describe()})"
    return s


def covered_spec(m, sel):
    """The spec version a claim covers: the suite's, or BASE_SPEC (plus the 1.1 features kept) when some
    spec 1.1 features were skipped."""
    skipped = [f for f in FEATURES_1_1 if f in sel.skip_features]
    if not skipped:
        return m["spec_version"]
    kept = [f for f in FEATURES_1_1 if f not in skipped]
    return BASE_SPEC + (f" plus {m['spec_version']} {','.join(kept)}" if kept else "")


def _no_claim_reason(sel, counts):
    if counts["FAIL"] or counts["MISSING"]:
        return f"{counts['FAIL']} failed, {counts['MISSING']} missing"
    return "only the cases named by --case were judged"
