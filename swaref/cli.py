"""The ``swaref`` command line: ``swaref demo``, ``swaref vectors``, ``swaref generate``,
``swaref models``, ``swaref info``.

Each subcommand lives in its own module, imported only when it runs, and
exposes ``add_arguments(parser)`` and ``run(args) -> int``.
"""
import argparse
import importlib
import sys

SUBCOMMANDS = {
    "demo": ("swaref.demo", "walk through the sliding-window tutorial in the terminal"),
    "vectors": ("swaref.conformance.cli", "generate golden vectors or check a port against them"),
    "generate": ("swaref.models.cli", "run a Mistral-architecture model on the CPU"),
    "models": ("swaref.modelsuite.cli", "generate model-level golden logits or check an engine against them"),
    "info": ("swaref._cpu", "the compiled kernel's target for this CPU, its features, OpenMP and BLAS"),
}


class _Version(argparse.Action):
    """--version: swaref's version and the kernel target, found only when asked (it loads the kernel)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from . import __version__, _cpu
        print(f"swaref {__version__}; {_cpu.summary()}")
        parser.exit()


def _plain(docstring):
    """The first line of a docstring as --help shows it: without reST's double backquotes."""
    return docstring.strip().splitlines()[0].replace("``", "")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="swaref", description=_plain(__doc__))
    parser.add_argument("--version", action=_Version, help="show the version and the kernel target, and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name, (modname, help_) in SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(modname)
        except ImportError as e:
            if e.name != modname:
                raise
            continue
        modules[name] = mod
        p = sub.add_parser(name, help=help_, description=_plain(mod.__doc__ or help_))
        mod.add_arguments(p)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return modules[args.command].run(args) or 0
    except BrokenPipeError:                      # `swaref info | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
