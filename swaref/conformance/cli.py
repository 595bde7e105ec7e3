"""Generate golden vectors, or check a port against them (docs/conformance.md).

  swaref vectors generate OUT [--suite core|full]
  swaref vectors check SUITE (--results DIR | --python module:function | --exec "CMD {in} {out}")
                       [--op OP] [--dtype DTYPE] [--skip-feature F] [--case ID] [--timeout S]
                       [--json-report FILE]

check exits 0 when every selected case passed, 1 on any FAIL or MISSING, 2
when the suite is corrupt or tampered with (or the command line is unusable).
"""
import argparse
import math
import sys

from .cases import DTYPES, SUITES
from .runner import FEATURES, OPS


def _timeout(text):
    try:
        t = float(text)
    except ValueError:
        t = math.nan
    if not math.isfinite(t) or t <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return t


def _listed(known):
    """A repeatable, comma-separated option whose values must be in ``known``."""
    def parse(text):
        vals = [v for v in text.split(",") if v]
        bad = [v for v in vals if v not in known]
        if bad or not vals:
            raise argparse.ArgumentTypeError(f"unknown {bad or [text]}; choose from {', '.join(known)}")
        return vals
    return parse


def add_generate(sub, help, suites):
    """The ``generate OUT [--suite S] [--quiet]`` action, the same for golden vectors and model suites."""
    g = sub.add_parser("generate", help=help)
    g.add_argument("out", metavar="OUT", help="folder to write (created if needed)")
    g.add_argument("--suite", choices=suites, default="core")
    g.add_argument("--quiet", action="store_true", help="do not list the cases as they are written")
    return g


def run_generate(command, generate_suite, args, summary):
    """Write a suite with ``generate_suite(out, suite=, log=)``, listing cases unless --quiet; print
    ``summary(manifest)`` -> exit code 0, or 2 when OUT cannot be written."""
    log = None if args.quiet else (lambda cid: print(f"wrote {cid}", flush=True))
    try:
        m = generate_suite(args.out, suite=args.suite, log=log)
    except OSError as e:
        print(f"{command}: cannot write {args.out}: {e.strerror}", file=sys.stderr)
        return 2
    print(summary(m))
    return 0


def add_arguments(parser):
    sub = parser.add_subparsers(dest="vectors_command", metavar="ACTION")
    add_generate(sub, "write a deterministic suite of golden vectors", SUITES)
    c = sub.add_parser("check", help="judge a port's results against a suite")
    c.add_argument("suite", metavar="SUITE", help="folder holding manifest.json and the case files")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--results", metavar="DIR",
                     help="folder with <case_id>.out.safetensors or <case_id>.err.json per case")
    src.add_argument("--python", metavar="MODULE:FUNCTION",
                     help="a Python port: FUNCTION(inputs: dict, meta: dict) -> dict of arrays, imported with "
                          "the current folder first on the path (e.g. swaref.conformance.ports:reference_port)")
    src.add_argument("--exec", dest="exec_cmd", metavar="CMD",
                     help='a command run once per case, split like a shell line but never run by a shell; '
                          '{in}, {out} and {err} become the case file, the result file and the rejection file '
                          '(e.g. "./swa_port {in} {out}")')
    c.add_argument("--op", action="extend", type=_listed(OPS), metavar="OP",
                   help=f"judge only these ops ({', '.join(OPS)}); the others are SKIP")
    c.add_argument("--dtype", action="extend", type=_listed(tuple(DTYPES)), metavar="DTYPE",
                   help=f"judge only these dtypes ({', '.join(DTYPES)}); the others are SKIP")
    c.add_argument("--skip-feature", action="extend", type=_listed(tuple(FEATURES)), metavar="FEATURE",
                   default=[], help=f"SKIP the cases that need a feature ({', '.join(FEATURES)})")
    c.add_argument("--case", action="append", metavar="ID", help="judge only this case (repeatable; no claim)")
    c.add_argument("--json-report", metavar="FILE", help="also write the verdicts as JSON (report.schema.json)")
    c.add_argument("--timeout", type=_timeout, default=60.0, help="seconds per case for --exec (default 60)")


def run(args):
    from .generate import generate_suite
    from .runner import check_suite
    if args.vectors_command == "generate":
        return run_generate("swaref vectors generate", generate_suite, args,
                            lambda m: f"suite {m['suite']}: {len(m['cases'])} cases in {args.out}; "
                                      f"suite_hash {m['suite_hash']}; spec {m['spec_version']}")
    if args.vectors_command == "check":
        return check_suite(args.suite, results_dir=args.results, python=args.python, exec_cmd=args.exec_cmd,
                           json_report=args.json_report, timeout=args.timeout,
                           only=set(args.case) if args.case else None, ops=args.op, dtypes=args.dtype,
                           skip_features=args.skip_feature)
    print("usage: swaref vectors {generate,check} ... (see swaref vectors --help)", file=sys.stderr)
    return 2
