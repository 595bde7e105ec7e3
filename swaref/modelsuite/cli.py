"""Generate model-level golden outputs, or check an engine against them (docs/conformance.md).

  swaref models generate OUT [--suite core|full]
  swaref models check SUITE (--logits DIR | --python module:function) [--case ID] [--json-report FILE]

check exits 0 when every case passed, 1 on any FAIL or MISSING, 2 when the
suite is corrupt or tampered with (or the command line is unusable).
"""
import sys

from .cases import SUITES


def add_arguments(parser):
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION")
    g = sub.add_parser("generate", help="write tiny checkpoints with golden logits, one per architecture")
    g.add_argument("out", metavar="OUT", help="folder to write (created if needed)")
    g.add_argument("--suite", choices=SUITES, default="core")
    g.add_argument("--quiet", action="store_true", help="do not list the cases as they are written")
    c = sub.add_parser("check", help="judge an engine's logits against a model suite")
    c.add_argument("suite", metavar="SUITE", help="folder holding manifest.json, the checkpoints and golden files")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--logits", metavar="DIR",
                     help="folder with <case_id>.npy or <case_id>.safetensors (tensor 'logits'): [T, V] logits of "
                          "every position of the case's tokens")
    src.add_argument("--python", metavar="MODULE:FUNCTION",
                     help="an engine: FUNCTION(checkpoint_dir, tokens) -> [T, V] logits, imported with the current "
                          "folder first on the path (e.g. swaref.modelsuite.engines:swaref_engine)")
    c.add_argument("--case", action="append", metavar="ID", help="judge only this case (repeatable; no claim)")
    c.add_argument("--json-report", metavar="FILE", help="also write the verdicts as JSON")


def run(args):
    from .check import check_model_suite
    from .generate import generate_suite
    if args.models_command == "generate":
        log = None if args.quiet else (lambda cid: print(f"wrote {cid}", flush=True))
        try:
            m = generate_suite(args.out, suite=args.suite, log=log)
        except OSError as e:
            print(f"swaref models generate: cannot write {args.out}: {e.strerror}", file=sys.stderr)
            return 2
        print(f"model suite {m['suite']}: {len(m['cases'])} cases in {args.out}; suite_hash {m['suite_hash']}")
        return 0
    if args.models_command == "check":
        return check_model_suite(args.suite, logits_dir=args.logits, python=args.python,
                                 json_report=args.json_report, only=set(args.case) if args.case else None)
    print("usage: swaref models {generate,check} ... (see swaref models --help)", file=sys.stderr)
    return 2
