# cython: language_level=3
"""swaref's compiled kernels (placeholder until the banded kernel lands: issue 3)."""

IF SWAREF_OPENMP:
    cimport openmp


def openmp_enabled():
    """True when this build was compiled with OpenMP."""
    IF SWAREF_OPENMP:
        return True
    ELSE:
        return False
