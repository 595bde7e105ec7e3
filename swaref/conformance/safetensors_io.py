"""A minimal, strict, deterministic safetensors reader and writer in pure NumPy.

The golden vectors must be readable from any language and must hash stably,
so swaref writes them itself instead of depending on the ``safetensors``
package (the tests cross-check both directions against it).  The reader takes
untrusted files: like the official package it rejects headers over 100 MiB,
nesting beyond what the format uses, shapes whose byte size overflows or
disagrees with the offsets, and a ``__metadata__`` that is not a str -> str map.

File layout (https://huggingface.co/docs/safetensors): an 8-byte little-endian
unsigned header length N, N bytes of UTF-8 JSON ``{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {str: str}}``, then the raw
little-endian row-major tensor bytes.  This writer sorts names, emits compact
JSON with sorted keys, pads the header with spaces to a multiple of 8 and lays
the tensors out back to back in name order: the same tensors always give the
same bytes.

NumPy has no bfloat16, so a BF16 tensor travels as its uint16 bit patterns:
``write`` takes ``dtypes={"name": "BF16"}`` with a uint16 array, ``read``
returns uint16 arrays and reports "BF16" in its dtype map.  ``bf16_to_f32`` and
``f32_to_bf16`` convert (the latter rounds to nearest, ties to even).
"""
import json
import struct

import numpy as np

from .files import FileFormatError, load_json, read_regular

#: safetensors dtype name -> little-endian NumPy storage dtype.
DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAME_OF = {np.dtype(v).newbyteorder("="): k for k, v in DTYPES.items() if k != "BF16"}

#: Refuse headers beyond this size (the official reader caps it at 100 MiB too).
MAX_HEADER = 100 * 1024 * 1024
#: A header is {name: {"shape": [...]}}: three levels.  One more is allowed so that a
#: nested shape gets the clearer "shape must be a list of ints" message.
MAX_HEADER_DEPTH = 4
#: At most this many dimensions, and a byte size (zero dimensions counted as 1) below 2**62,
#: so that NumPy can always build the array.
MAX_NDIM = 16
MAX_BYTES = 2 ** 62


class SafetensorsError(FileFormatError):
    """A file that is not a well-formed safetensors file (truncated, bad header, holes, ...); kind "format"."""


def dtype_name(arr):
    """safetensors name of an array's dtype (uint16 maps to nothing: BF16 must be explicit)."""
    dt = np.dtype(arr.dtype).newbyteorder("=")
    if dt not in _NAME_OF:
        raise SafetensorsError(f"dtype {arr.dtype} has no safetensors name (supported: {sorted(DTYPES)})")
    return _NAME_OF[dt]


def bf16_to_f32(bits):
    """uint16 bfloat16 bit patterns -> float32 (exact)."""
    bits = np.asarray(bits, dtype=np.uint16)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x):
    """float32 values -> uint16 bfloat16 bit patterns, round to nearest even (NaN stays NaN)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    return np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), rounded)


def encode(tensors, dtypes=None, metadata=None):
    """The bytes of a safetensors file holding ``tensors`` (name -> ndarray).

    dtypes: optional name -> safetensors dtype override (needed for "BF16", whose
    arrays are uint16 bit patterns).  metadata: optional str -> str map.
    """
    dtypes = dict(dtypes or {})
    header = {}
    chunks = []
    offset = 0
    for name in sorted(tensors):
        if name == "__metadata__":
            raise SafetensorsError("'__metadata__' is reserved")
        arr = np.asarray(tensors[name])
        dt = dtypes.pop(name, None) or dtype_name(arr)
        if dt not in DTYPES:
            raise SafetensorsError(f"{name}: unknown dtype {dt!r}")
        if dt == "BF16" and arr.dtype != np.uint16:
            raise SafetensorsError(f"{name}: a BF16 tensor must be given as uint16 bit patterns, got {arr.dtype}")
        data = np.ascontiguousarray(arr, dtype=DTYPES[dt]).tobytes()
        header[name] = {"dtype": dt, "shape": [int(s) for s in arr.shape],
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    if dtypes:
        raise SafetensorsError(f"dtypes given for absent tensors: {sorted(dtypes)}")
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise SafetensorsError("__metadata__ must map str to str")
        header["__metadata__"] = dict(metadata)
    h = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(chunks)


def write(path, tensors, dtypes=None, metadata=None):
    """Write ``tensors`` to ``path`` (see :func:`encode`); returns the bytes written."""
    data = encode(tensors, dtypes, metadata)
    with open(path, "wb") as f:
        f.write(data)
    return data


def decode(data, what="file"):
    """Parse safetensors bytes strictly -> (tensors, dtypes, metadata).

    tensors: name -> ndarray (BF16 as uint16 bits, copies in native byte order),
    dtypes: name -> safetensors dtype name, metadata: dict (empty if absent).
    Raises SafetensorsError naming the problem (truncation, bad JSON, unknown
    dtype, a size that does not match the shape, holes or overlaps, trailing bytes).
    """
    if len(data) < 8:
        raise SafetensorsError(f"{what}: {len(data)} bytes, too short for the 8-byte header length")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER:
        raise SafetensorsError(f"{what}: header length {n} exceeds {MAX_HEADER}")
    if 8 + n > len(data):
        raise SafetensorsError(f"{what}: truncated: header says {n} bytes of JSON, file has {len(data) - 8}")
    header = load_json(bytes(data[8:8 + n]), f"{what}: header", MAX_HEADER_DEPTH, SafetensorsError)
    if not isinstance(header, dict):
        raise SafetensorsError(f"{what}: header must be a JSON object")
    metadata = _metadata(header.pop("__metadata__", None), what)
    buf = memoryview(data)[8 + n:]
    spans = []
    tensors, dtypes = {}, {}
    for name, info in header.items():
        dt, shape, size, offs = _tensor_info(name, info, what)
        if offs[1] > len(buf):
            raise SafetensorsError(f"{what}: truncated: tensor {name!r} ends at byte {offs[1]} of the data "
                                   f"section, which has {len(buf)} bytes")
        spans.append((offs[0], offs[1], name))
        arr = np.frombuffer(buf[offs[0]:offs[1]], dtype=DTYPES[dt]).reshape(shape)
        tensors[name] = arr.astype(DTYPES[dt].newbyteorder("="), copy=True)
        dtypes[name] = dt
    pos = 0
    for b, e, name in sorted(spans):
        if b != pos:
            raise SafetensorsError(f"{what}: tensor {name!r} starts at {b}, expected {pos} (hole or overlap)")
        pos = e
    if pos != len(buf):
        raise SafetensorsError(f"{what}: {len(buf) - pos} trailing bytes after the last tensor")
    return tensors, dtypes, metadata


def _metadata(metadata, what):
    if metadata is None:                   # absent, or null as the official reader allows
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsError(f"{what}: __metadata__ must map str to str")
    return metadata


def _tensor_info(name, info, what):
    """Check one header entry -> (dtype, shape, byte size, data_offsets)."""
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise SafetensorsError(f"{what}: tensor {name!r}: entry must have exactly dtype, shape, data_offsets")
    dt, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dt, str) or dt not in DTYPES:
        raise SafetensorsError(f"{what}: tensor {name!r}: unsupported dtype {dt!r} (supported: {sorted(DTYPES)})")
    if (not isinstance(shape, list) or len(shape) > MAX_NDIM
            or not all(_is_count(s) for s in shape)):
        raise SafetensorsError(f"{what}: tensor {name!r}: shape must be a list of at most {MAX_NDIM} "
                               f"ints >= 0, got {shape!r}")
    if not isinstance(offs, list) or len(offs) != 2 or not all(_is_count(o) for o in offs) or offs[0] > offs[1]:
        raise SafetensorsError(f"{what}: tensor {name!r}: bad data_offsets {offs!r}")
    itemsize = DTYPES[dt].itemsize
    # Python ints: the product cannot wrap around (NumPy's int64 product would).
    if _product(max(s, 1) for s in shape) * itemsize >= MAX_BYTES:
        raise SafetensorsError(f"{what}: tensor {name!r}: shape {shape} of {dt} overflows (2**62 bytes or more)")
    size = _product(shape) * itemsize
    if offs[1] - offs[0] != size:
        raise SafetensorsError(f"{what}: tensor {name!r}: {offs[1] - offs[0]} bytes for shape {shape} "
                               f"of {dt} (needs {size})")
    return dt, shape, size, offs


def _is_count(x):
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _product(xs):
    out = 1
    for x in xs:
        out *= x
    return out


def read(path, limit=None):
    """Read and strictly parse a safetensors file -> (tensors, dtypes, metadata); see :func:`decode`.

    Only a regular file of at most ``limit`` bytes (default: the header limit plus 1 GiB) is read.
    """
    limit = MAX_HEADER + 2 ** 30 if limit is None else limit
    try:
        data = read_regular(path, limit, str(path))
    except FileFormatError as e:
        raise SafetensorsError(str(e)) from None
    return decode(data, what=str(path))


def as_float(arr, dt):
    """A tensor read with dtype name ``dt`` as a float array (BF16 bits -> float32, exactly)."""
    if dt == "BF16":
        return bf16_to_f32(arr)
    return arr
