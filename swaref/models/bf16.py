"""bfloat16 weights, held as their raw bits (NumPy has no bfloat16): a uint16 array.

bfloat16 is the top 16 bits of a float32 (sign, 8 exponent bits, 7 mantissa
bits), so widening is exact: ``bits << 16``.  Narrowing a float32 rounds to
nearest, ties to even (what torch's ``.to(torch.bfloat16)`` does): add
0x7FFF plus the lowest kept bit, keep the top half.  A NaN stays a (quiet)
NaN; a finite float32 beyond bfloat16's largest finite value, about
3.39e38, rounds to infinity, which the checkpoint loader then refuses.

These are the NumPy definitions; swaref._linear widens the same way inside
its kernels (tests/test_linear.py checks the two bit for bit).
"""
import numpy as np

from ..errors import SwarefTypeError

BF16 = np.dtype(np.uint16)


def is_bf16(w):
    """True for a bfloat16 weight (a uint16 array of bits)."""
    return isinstance(w, np.ndarray) and w.dtype == BF16


def widen(bits):
    """bits: uint16 array (any shape) -> float32 array of the same shape, exactly."""
    if not is_bf16(bits):
        raise SwarefTypeError("dtype", f"bfloat16 bits must be a uint16 array, got "
                                       f"{bits.dtype if isinstance(bits, np.ndarray) else type(bits).__name__}")
    return (bits.astype(np.uint32) << 16).view(np.float32)


def to_bfloat16(a):
    """a: float32 array -> uint16 bfloat16 bits, rounded to nearest even (NaN -> quiet NaN)."""
    if not isinstance(a, np.ndarray) or a.dtype != np.float32:
        raise SwarefTypeError("dtype", f"to_bfloat16 takes a float32 array, got "
                                       f"{a.dtype if isinstance(a, np.ndarray) else type(a).__name__}")
    u = np.ascontiguousarray(a).view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():  # the rounding carry could turn a NaN's payload into infinity: keep it NaN
        rounded[nan] = ((u[nan] >> 16) | np.uint32(0x0040)).astype(np.uint16)
    return rounded


def as_float32(w):
    """A weight as float32: widened when bfloat16, itself when float32."""
    return widen(w) if is_bf16(w) else w
