"""swaref._core: the compiled kernel, as built for the best target this CPU runs.

swaref/_core.pyx is compiled once per target into swaref/_targets/<target>.<ext> (setup.py);
each of those files holds the module swaref._core.  Importing this name runs swaref._cpu's
choice (the CPU's features; SWAREF_TARGET forces a lower target) and puts the chosen module in
its place, so ``from swaref import _core`` gives the extension module itself.
"""
import sys

from . import _cpu

sys.modules[__name__] = _cpu.kernel()
