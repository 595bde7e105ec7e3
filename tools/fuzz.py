#!/usr/bin/env python
"""Long, seeded runs of swaref's fuzz properties (tests/test_fuzz.py), for manual use.

The test suite runs every property a bounded, derandomized number of times (CI,
the sanitizer build).  This script runs the same properties, with the same
strategies and the same checks, many more times and with fresh seeds: round r
uses seed ``--seed + r`` for every property, so any failure is reproduced by
the one command it prints.

    python tools/fuzz.py                          # 10 rounds x 1000 examples per property
    python tools/fuzz.py --minutes 30             # rounds until 30 minutes have passed
    python tools/fuzz.py --seed 7 --rounds 1 --only attention,sequence
    python tools/fuzz.py --include-known-bugs     # also the inputs of KNOWN_BUGS (expect failures)
    python tools/fuzz.py --list

Run it from the repository root; it puts this tree first on sys.path (like the
tests' PYTHONPATH=$PWD), so it fuzzes this checkout's swaref.  Exit status 0
if every round passed, 1 on the first failure (after printing the seed, the
property, hypothesis's falsifying example and the failing call).

Against the AddressSanitizer + UBSan build of the kernel (slower; fewer examples):

    CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
        LDFLAGS="-fsanitize=address,undefined" SWAREF_DEBUG=1 python setup.py build_ext --inplace --force
    LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
        ASAN_OPTIONS=detect_leaks=0 python tools/fuzz.py --minutes 10 --examples 300

The properties, the checks and the known bugs are in tests/test_fuzz.py; the
suite runs the same properties with SWAREF_FUZZ_EXAMPLES examples each
(default 300, derandomized).
"""
import argparse
import os
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from hypothesis import HealthCheck, given, seed as hseed, settings  # noqa: E402

import test_fuzz  # noqa: E402  (tests/test_fuzz.py: the properties and their strategies)


def short(name):
    return name[len("test_fuzz_"):] if name.startswith("test_fuzz_") else name


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=1000, help="examples per property per round (default 1000)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the first round (default: from the clock, printed)")
    ap.add_argument("--rounds", type=int, default=10, help="rounds (default 10; ignored with --minutes)")
    ap.add_argument("--minutes", type=float, default=None,
                    help="run rounds until this much time has passed (the round under way finishes)")
    ap.add_argument("--only", default=None, help="comma-separated property names (see --list); prefixes work")
    ap.add_argument("--include-known-bugs", action="store_true",
                    help="also draw the inputs of test_fuzz.KNOWN_BUGS (left out of the suite until fixed)")
    ap.add_argument("--no-shrink", action="store_true", help="report the first failing example as found")
    ap.add_argument("--list", action="store_true", help="list the properties and exit")
    args = ap.parse_args(argv)

    props = {short(n): p for n, p in test_fuzz.PROPERTIES.items()}
    if args.list:
        for name, (fn, _) in props.items():
            print(f"{name:40s} {(fn.__doc__ or '').strip().splitlines()[0] if fn.__doc__ else ''}")
        return 0
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        chosen = {n: p for n, p in props.items() if any(n.startswith(w) for w in wanted)}
        if not chosen:
            ap.error(f"--only {args.only!r} matches none of {', '.join(props)}")
        props = chosen
    if args.include_known_bugs:
        test_fuzz.KNOWN_BUGS.clear()
    first_seed = args.seed if args.seed is not None else int(time.time()) % 2 ** 31

    from swaref import _core
    _core.min_work_per_thread(1)          # as the suite's fixture: small calls use every thread given

    phases = None
    if args.no_shrink:
        from hypothesis import Phase
        phases = [Phase.explicit, Phase.reuse, Phase.generate]
    cfg = settings(max_examples=args.examples, derandomize=False, database=None, deadline=None,
                   print_blob=True, suppress_health_check=list(HealthCheck),
                   **({"phases": phases} if phases else {}))

    print(f"swaref fuzz: {len(props)} properties x {args.examples} examples per round, first seed {first_seed}"
          f"{', known bugs included' if args.include_known_bugs else ''}", flush=True)
    t0 = time.time()
    r = 0
    while True:
        if args.minutes is None and r >= args.rounds:
            break
        if args.minutes is not None and time.time() - t0 >= 60 * args.minutes:
            break
        s = first_seed + r
        for name, (body, strategies) in props.items():
            t = time.time()
            test = cfg(hseed(s)(given(**strategies)(body)))
            try:
                test()
            except Exception as e:            # AssertionError, or hypothesis's own errors
                print(f"\nFAILED: property {name}, seed {s} (round {r})", flush=True)
                traceback.print_exception(type(e), e, e.__traceback__, limit=-3)
                cmd = (f"python tools/fuzz.py --seed {s} --rounds 1 --examples {args.examples} --only {name}"
                       + (" --include-known-bugs" if args.include_known_bugs else ""))
                print(f"\nreproduce: {cmd}", flush=True)
                return 1
            print(f"seed {s} {name:40s} ok ({args.examples} examples, {time.time() - t:.1f} s)", flush=True)
        r += 1
    print(f"all {r} rounds passed in {time.time() - t0:.0f} s (seeds {first_seed} .. {first_seed + r - 1})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
