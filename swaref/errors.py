"""swaref's exceptions.

Every rejected input raises a :class:`SwarefError` whose message names the
argument, what was expected and what came, and whose ``kind`` is one of the
closed list :data:`ERROR_KINDS` (the conformance suite's negative cases use the
same list, see docs/conformance.md).  Type problems also derive from
``TypeError`` and value problems from ``ValueError``, so ordinary ``except``
clauses keep working.
"""

#: The closed list of error kinds (docs/spec.md, section "Errors").
ERROR_KINDS = (
    "window",          # window not an int >= 1 (or None)
    "shape",           # wrong ndim, mismatched T/S/D, empty where not allowed
    "heads",           # Hq not a positive multiple of Hkv
    "dtype",           # not float16/float32/float64, or mixed dtypes
    "positions",       # wrong type/length, negative, not strictly increasing, not consecutive with the cache
    "no_visible_key",  # a query position sees no key
    "schedule",        # chunk size < 1, or a chunk schedule that does not sum to T
    "cache",           # cache of other window/dims/dtype, or a full-attention cache that is full
    "scale",           # scale not a finite real number
    "backend",         # unknown backend, or a backend that is not built
    "argument",        # any other argument out of its domain (num_threads, n_layers, ...)
    "softcap",         # softcap not a finite real > 0 (or None)
    "sinks",           # sinks not finite reals of shape [Hq] (or None)
    "rollback",        # a rollback the cache cannot serve (more than it holds, or beyond its slack)
    "format",          # a malformed file (safetensors header, JSON nesting, sizes that disagree)
    "suite",           # a conformance suite that is corrupt, tampered with or unsafe (runner exit 2)
    "checkpoint",      # a model checkpoint or config that swaref cannot load faithfully
    "dependency",      # an optional extra (matplotlib, safetensors, tokenizers, ...) that is not installed
)


class SwarefError(ValueError):
    """Base class of every error swaref raises on purpose; ``kind`` is in ERROR_KINDS.

    Modules derive their own classes from it (a corrupt suite, a bad checkpoint),
    so ``except swaref.SwarefError`` catches every rejection and nothing else.
    """

    def __init__(self, kind, message):
        if kind not in ERROR_KINDS:  # pragma: no cover - programming error
            raise AssertionError(f"unknown error kind {kind!r}")
        super().__init__(message)
        self.kind = kind


class SwarefTypeError(SwarefError, TypeError):
    """An argument of the wrong type (also a ``TypeError``)."""
