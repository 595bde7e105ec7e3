"""Deprecated alias of :mod:`swaref.conformance` (the golden vectors and the runner moved there).

Kept so that ``--python swaref.vectors:reference_port`` and old imports keep
working; new code imports ``swaref.conformance``.
"""
from .conformance import *  # noqa: F401,F403
from .conformance import __all__  # noqa: F401
