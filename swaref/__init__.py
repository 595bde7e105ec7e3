"""swaref: the golden reference for Mistral-style sliding-window attention.

The NumPy reference (``backend="reference"``, the default) is the definition;
``backend="cython"`` runs the compiled kernel in ``swaref._core``, which must
equal it.  See docs/spec.md for every rule.
"""
from .errors import ERROR_KINDS, SwarefError, SwarefTypeError
from .attention import attention, window_mask, receptive_field, visible_key_range, kv_head_of, softmax_attend
from .cache import RollingBufferCache, cache_view, cache_write, load_state, max_rollback, rollback, slot_of
from .prefill import prefill, decode_step, chunk_schedule, attend_chunk
from .windows import Chunked, Sliding, TwoSided
from . import conventions

from ._version import __version__
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
