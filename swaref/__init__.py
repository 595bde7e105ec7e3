"""swaref: the golden reference for Mistral-style sliding-window attention.

The NumPy reference (``backend="reference"``, the default) is the definition;
``backend="cython"`` runs the compiled kernel in ``swaref._core``, which must
equal it.  See docs/spec.md for every rule.
"""
import os as _os

#: GCC's OpenMP runtime lets an idle worker spin 300,000 times (milliseconds) before it sleeps.
#: A prefill then runs OpenBLAS's threads (the projections) while the kernel's worker still spins on
#: a core: at 2 threads that cost about 14% of a 512-token prefill (docs/performance.md, "OpenMP
#: workers and OpenBLAS threads").  20,000 spins still keep a decode step's back-to-back calls on
#: awake workers.  A value the user set wins; libgomp reads it once, when the first OpenMP module
#: loads, which swaref's modules do only after this (``swaref info`` reports it).
GOMP_SPINCOUNT_DEFAULT = "20000"
_os.environ.setdefault("GOMP_SPINCOUNT", GOMP_SPINCOUNT_DEFAULT)
#: OpenBLAS (NumPy's BLAS) lets an idle worker thread spin 2**28 time-stamp ticks (about 0.1 s)
#: after every threaded call before it sleeps.  After a prefill's projections that worker holds the
#: second core while the decode steps that follow run on swaref's OpenMP threads: at 2 threads the
#: first ~10 steps took twice as long (docs/performance.md, "OpenBLAS's idle workers").  2**16
#: ticks (tens of microseconds) still cover back-to-back products.  A value the user set wins;
#: OpenBLAS reads it when it loads, i.e. when NumPy is first imported: importing swaref before
#: NumPy applies it, importing it after does not (``swaref info`` reports the value in force).
OPENBLAS_THREAD_TIMEOUT_DEFAULT = "16"
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", OPENBLAS_THREAD_TIMEOUT_DEFAULT)

from .errors import ERROR_KINDS, SwarefError, SwarefTypeError  # noqa: E402
from .attention import attention, window_mask, receptive_field, visible_key_range, kv_head_of, softmax_attend  # noqa: E402
from .cache import RollingBufferCache, cache_view, cache_write, load_state, max_rollback, rollback, slot_of  # noqa: E402
from .prefill import prefill, decode_step, chunk_schedule, attend_chunk  # noqa: E402
from .windows import Chunked, Sliding, TwoSided  # noqa: E402
from . import conventions  # noqa: E402

from ._version import __version__  # noqa: E402
#: Version of the semantics in docs/spec.md; golden vectors record it.
SPEC_VERSION = "1.1"

__all__ = [
    "attention", "window_mask", "receptive_field", "visible_key_range", "kv_head_of", "softmax_attend",
    "RollingBufferCache", "cache_view", "cache_write", "load_state", "max_rollback", "rollback", "slot_of",
    "prefill", "decode_step", "chunk_schedule", "attend_chunk", "Sliding", "TwoSided", "Chunked",
    "conventions", "SwarefError", "SwarefTypeError", "ERROR_KINDS", "SPEC_VERSION", "__version__",
    "load_model",
]


def __getattr__(name):
    # swaref.load_model(DIR) -> swaref.models.text.TextModel, imported on first use: importing swaref
    # imports neither the models nor tokenizers.
    if name == "load_model":
        from .models.text import load_model
        return load_model
    raise AttributeError(f"module 'swaref' has no attribute {name!r}")
