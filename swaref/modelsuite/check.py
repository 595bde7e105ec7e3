"""The model checker: an engine's logits per case against the golden ones -> PASS/FAIL and a diagnosis.

A case PASSes when every logit of every position is within the suite's
tolerance of the float64 golden logits (|engine - golden| <= atol + rtol
|golden|; NaN or Inf is an infinite error).  On a FAIL the result is compared
with every known-wrong variant stored for the case: a variant it is within
tolerance of is named ("matches `window dropped`"), otherwise the closest one
is given; either way the line says where divergence starts ("agrees for
positions < W = 16, diverges after").

Exit codes and the JSON report follow the attention runner
(``swaref.conformance.runner``): 0 every case passed, 1 a FAIL or MISSING, 2
the suite is corrupt or tampered with or the command line is unusable.
"""
import dataclasses
import json
import math

import numpy as np

from ..errors import SwarefError
from .generate import FORMAT, FORMAT_VERSION, first_divergence, units
from .results import read_logits, run_python
from .suite import SuiteError, load_model_suite


@dataclasses.dataclass
class Verdict:
    """One case's judgement; ``line()`` is what the checker prints, ``to_json()`` what the report holds."""

    case_id: str
    status: str                   # PASS, FAIL or MISSING
    message: str = ""
    err_units: float = None       # max over positions and logits of |err| / tolerance
    first_bad_position: int = None
    matches_variants: list = None     # the variants the result is within tolerance of
    closest_variant: str = None
    closest_variant_units: float = None
    greedy_agrees: bool = None    # argmax of the result's logits gives the golden continuation

    def line(self):
        s = f"{self.status:7s} {self.case_id}"
        if self.err_units is not None:
            s += f"  err/tol={self.err_units:.3g}"
        if self.message:
            s += f"  {self.message}"
        return s

    def to_json(self):
        d = dataclasses.asdict(self)
        infinite = False
        for k in ("err_units", "closest_variant_units"):
            if d[k] is not None and not math.isfinite(d[k]):
                d[k], infinite = None, True
        d["infinite_error"] = infinite
        return d


def _where(p, W):
    """'W = 16', 'W - 1 = 15' or '3': a position named by its relation to the window where it has one."""
    for off, name in ((0, "W"), (-1, "W - 1"), (1, "W + 1")):
        if p == W + off:
            return f"{name} = {p}"
    return str(p)


def judge(entry, golden, result):
    """entry: the manifest entry; golden: the golden file's tensors; result: ("logits", [T, V]) or a failure."""
    cid = entry["id"]
    if result[0] == "missing":
        return Verdict(cid, "MISSING", result[1])
    if result[0] != "logits":
        return Verdict(cid, "FAIL", result[1])
    r = result[1]
    u = units(r, golden["logits"])
    P, toks = entry["prompt_tokens"], golden["tokens"]
    greedy = bool(np.array_equal(np.argmax(r[P - 1:-1], axis=1), toks[P:])) if np.isfinite(r).all() else False
    worst = float(u.max())
    if worst <= 1.0:
        return Verdict(cid, "PASS", "", worst, greedy_agrees=greedy)
    first = first_divergence(u)
    matches, closest, closest_u = [], None, math.inf
    for v in entry["variants"]:
        vu = float(units(r, golden[v["tensor"]]).max())
        if vu <= 1.0:
            matches.append(v["name"])
        if vu < closest_u:
            closest, closest_u = v["name"], vu
    agree = f"agrees for positions < {_where(first, entry['window'])}, diverges after"
    if matches:
        msg = f"matches {' and '.join(f'`{m}`' for m in matches)}: {agree}"
    elif closest is not None:
        msg = f"matches no known wrong variant (closest: `{closest}`, err/tol {closest_u:.3g} from it); {agree}"
    else:
        msg = f"this case has no known wrong variant to compare with; {agree}"
    if not greedy:
        msg += "; the greedy continuation differs"
    return Verdict(cid, "FAIL", msg, worst, first, matches, closest, closest_u if closest else None, greedy)


def _source(logits_dir, python):
    if (logits_dir is None) == (python is None):
        raise SwarefError("argument", "give exactly one of --logits and --python")
    if logits_dir is not None:
        return lambda suite, entry, golden: read_logits(logits_dir, entry)
    from ..conformance.results import load_python_port
    fn = load_python_port(python) if isinstance(python, str) else python
    return lambda suite, entry, golden: run_python(fn, suite.checkpoint_dir(entry["id"]), golden["tokens"], entry)


def check_model_suite(suite_dir, *, logits_dir=None, python=None, json_report=None, out=None, only=None):
    """Judge an engine on a model suite; prints one line per case and a summary.  -> exit code 0, 1 or 2.

    Exactly one of ``logits_dir`` (a folder of <case_id>.npy / .safetensors) and ``python`` (a function
    fn(checkpoint_dir, tokens) -> [T, V] logits, or 'module:function') gives the results; ``only``: the
    case ids to judge.
    """
    out = out or (lambda s: print(s, flush=True))
    try:
        suite = load_model_suite(suite_dir)
    except SuiteError as e:
        return _stop(out, json_report, "corrupt", f"CORRUPT suite {suite_dir}: {e}",
                     "summary: suite corrupt, tampered with or unsafe; nothing judged")
    try:
        get = _source(logits_dir, python)
        unknown = sorted(set(only or ()) - set(suite.by_id))
        if unknown:
            raise SwarefError("argument", f"--case: no case {unknown[0]!r} in this suite")
    except SwarefError as e:
        return _stop(out, json_report, "usage", f"usage error: {e}", "summary: nothing judged")
    verdicts = []
    try:
        for entry in suite.entries:
            if only is not None and entry["id"] not in only:
                continue
            golden, _ = suite.golden(entry["id"])
            v = _judged(entry, golden, get(suite, entry, golden))
            verdicts.append(v)
            out(v.line())
    except SuiteError as e:          # a file changed after it was verified
        return _stop(out, json_report, "corrupt", f"CORRUPT suite {suite_dir}: {e}",
                     "summary: suite changed during the run; verdicts discarded")
    return _summarize(suite, verdicts, only is not None, out, json_report)


def _judged(entry, golden, result):
    try:
        return judge(entry, golden, result)
    except (ValueError, TypeError, IndexError, ArithmeticError) as e:
        return Verdict(entry["id"], "FAIL", f"result could not be judged: {type(e).__name__}: {e}")


def _summarize(suite, verdicts, partial, out, json_report):
    m = suite.manifest
    counts = {s: sum(v.status == s for v in verdicts) for s in ("PASS", "FAIL", "MISSING")}
    failed = counts["FAIL"] + counts["MISSING"]
    out(f"summary: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['MISSING']} missing of "
        f"{len(verdicts)} cases; model suite {m['suite']} {m['suite_hash']}; format {FORMAT} v{FORMAT_VERSION}")
    claim = None
    if not failed and not partial:
        claim = (f"swaref model suite {m['suite']} {m['suite_hash']}, format {FORMAT} v{FORMAT_VERSION}: "
                 f"{counts['PASS']}/{counts['PASS']} cases PASS")
    out(f"claim: {claim}" if claim else
        f"claim: none ({f'{failed} failed or missing' if failed else 'only the cases named by --case were judged'})")
    code = 0 if failed == 0 else 1
    _write_report(json_report, {"status": "pass" if code == 0 else "fail", "suite": m["suite"],
                                "suite_hash": m["suite_hash"], "format": FORMAT, "format_version": FORMAT_VERSION,
                                "counts": counts, "claim": claim, "cases": [v.to_json() for v in verdicts]})
    return code


def _stop(out, json_report, status, line, summary):
    out(line)
    out(summary)
    _write_report(json_report, {"status": status, "error": line})
    return 2


def _write_report(path, doc):
    if path:
        with open(path, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True, allow_nan=False)
            f.write("\n")
