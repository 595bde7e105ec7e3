"""The window family (docs/spec.md, rule 1): which keys a query sees.

A ``window`` argument anywhere in swaref is one of

* ``None``: plain causal attention, ``j <= p``;
* an ``int W >= 1``: the sliding window, ``p - W < j <= p`` (W keys, itself included);
* ``Sliding(W, sink_tokens=n)``: the sliding window plus the first ``n`` positions,
  ``j <= p and (j < n or p - W < j)`` (StreamingLLM's kept sink tokens);
* ``TwoSided(left, right)``: ``p - left <= j <= p + right``, either side ``None`` for
  unbounded (encoders: ModernBERT, Longformer; FlashAttention ``window_size=(left, right)``
  without ``causal``; ONNX opset 25 ``left_window_size`` / ``right_window_size``);
* ``Chunked(C)``: ``j <= p and j // C == p // C`` (Llama 4's ``attention_chunk_size``):
  not a sliding window; a query at the start of a chunk sees only itself.

``normalize`` maps every spelling of one visibility rule to one value: ``Sliding(W)``
and ``TwoSided(W - 1, 0)`` are the int ``W``, ``TwoSided(None, 0)`` is ``None``, so
code that handles ints and None handles spec 1.0 exactly as before.
"""
from dataclasses import dataclass
from typing import Optional, Tuple, Union

from . import _validate as V
from .errors import SwarefTypeError


@dataclass(frozen=True)
class Sliding:
    """Causal sliding window of ``size`` keys (itself included), plus the first
    ``sink_tokens`` positions, which every later query keeps seeing."""
    size: int
    sink_tokens: int = 0

    def __post_init__(self):
        object.__setattr__(self, "size", V.check_int(self.size, "Sliding.size", kind="window", minimum=1))
        object.__setattr__(self, "sink_tokens",
                           V.check_int(self.sink_tokens, "Sliding.sink_tokens", kind="window", minimum=0))


@dataclass(frozen=True)
class TwoSided:
    """Keys ``p - left .. p + right``; ``None`` on a side means unbounded there.
    ``TwoSided(W - 1, 0)`` is the causal window ``W``."""
    left: Optional[int]
    right: Optional[int]

    def __post_init__(self):
        for side in ("left", "right"):
            x = getattr(self, side)
            if x is not None:
                object.__setattr__(self, side, V.check_int(x, f"TwoSided.{side}", kind="window", minimum=0))


@dataclass(frozen=True)
class Chunked:
    """Llama 4's chunked attention: a query sees the keys of its own chunk of ``size``
    positions up to itself, ``j <= p and j // size == p // size``."""
    size: int

    def __post_init__(self):
        object.__setattr__(self, "size", V.check_int(self.size, "Chunked.size", kind="window", minimum=1))


Window = Union[None, int, Sliding, TwoSided, Chunked]


def normalize(window, name: str = "window") -> Window:
    """The one value for a window's visibility rule: None, an int W, ``Sliding`` with
    ``sink_tokens >= 1``, ``TwoSided`` looking ahead (``right`` not 0) or ``Chunked``."""
    if isinstance(window, Sliding):
        return window.size if window.sink_tokens == 0 else window
    if isinstance(window, TwoSided):
        if window.right == 0:
            return None if window.left is None else window.left + 1
        return window
    if isinstance(window, Chunked):
        return window
    if window is None or V.is_int(window):
        return V.check_window(window, name)
    raise SwarefTypeError("window", f"{name} must be None, an int >= 1, Sliding, TwoSided or Chunked, "
                                    f"got {V._describe(window)}")


def is_causal(window: Window) -> bool:
    """True when no query sees a later key (every window but a ``TwoSided`` looking ahead)."""
    return not isinstance(window, TwoSided)


def kernel_params(window: Window) -> Tuple[int, int, int, int]:
    """(left, right, chunk, sink_tokens) of a normalized window, as the compiled kernel takes them:
    key j is visible to query p iff ``(j < sink_tokens and j <= p)`` or ``lo(p) <= j <= hi(p)``
    with ``lo(p) = max(0, p - left, (p // chunk) * chunk)`` and ``hi(p) = p + right``, where
    left = -1 and right = -1 mean unbounded and chunk = 0 means none."""
    if window is None:
        return -1, 0, 0, 0
    if isinstance(window, Sliding):
        return window.size - 1, 0, 0, window.sink_tokens
    if isinstance(window, TwoSided):
        return (-1 if window.left is None else window.left), (-1 if window.right is None else window.right), 0, 0
    if isinstance(window, Chunked):
        return -1, 0, window.size, 0
    return window - 1, 0, 0, 0
