"""The strict safetensors reader and writer (swaref/conformance/safetensors_io.py).

Checked against the ``safetensors`` package and torch in both directions, and
against hostile files: each one must give a SafetensorsError (kind "format")
naming the problem, never another exception and never unbounded memory.
"""
import json
import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import swaref
from swaref.conformance import safetensors_io as ST
from swaref.conformance.files import json_depth, load_json


def _file(header, data=b""):
    h = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(h)) + h + data


@settings(max_examples=25)
@given(shape=st.lists(st.integers(0, 4), min_size=0, max_size=3),
       dt=st.sampled_from(["<f2", "<f4", "<f8", "<i8", "<i4", "u1", "?"]))
def test_safetensors_roundtrip(shape, dt):
    rng = np.random.default_rng(len(shape))
    a = (rng.standard_normal(shape) * 10).astype(dt)
    data = ST.encode({"x": a, "b": np.arange(3, dtype=np.int64)}, metadata={"k": "v"})
    t, d, m = ST.decode(data)
    assert m == {"k": "v"} and t["x"].dtype == np.dtype(dt).newbyteorder("=")
    np.testing.assert_array_equal(t["x"], a)
    assert len(data[8:8 + struct.unpack("<Q", data[:8])[0]]) % 8 == 0


def test_safetensors_crosscheck_with_package(tmp_path):
    stn = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(0)
    tensors = {"a": rng.standard_normal((3, 2, 4)).astype(np.float16), "b": np.arange(5, dtype=np.int64),
               "c": rng.standard_normal(7).astype(np.float32), "d": np.array([True, False]),
               "e": np.array(2.5), "f": np.zeros((0, 3), np.int32), "g": np.arange(4, dtype=np.uint8)}
    ST.write(tmp_path / "ours.st", tensors, metadata={"op": "x"})
    theirs = stn.load_file(str(tmp_path / "ours.st"))
    assert sorted(theirs) == sorted(tensors)
    for n, a in tensors.items():
        assert theirs[n].dtype == a.dtype and theirs[n].shape == a.shape
        np.testing.assert_array_equal(theirs[n], a)
    stn.save_file(tensors, str(tmp_path / "theirs.st"))
    ours, dts, _ = ST.read(tmp_path / "theirs.st")
    for n, a in tensors.items():
        np.testing.assert_array_equal(ours[n], a)


@pytest.mark.crosscheck
def test_bf16_against_torch(tmp_path):
    # CI runs the crosscheck-marked tests with torch installed and SWAREF_REQUIRE_CROSSCHECK=1:
    # there this comparison must run, not skip.
    if os.environ.get("SWAREF_REQUIRE_CROSSCHECK") == "1":
        import torch
        import safetensors.torch as st_torch
    else:
        torch = pytest.importorskip("torch")
        st_torch = pytest.importorskip("safetensors.torch")
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(2000) * 10.0 ** rng.integers(-30, 30, 2000),
                        [0.0, -0.0, np.inf, -np.inf, 3.4e38, 1e-40]]).astype(np.float32)
    bits = ST.f32_to_bf16(x)
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(bits, want)
    assert np.isnan(ST.bf16_to_f32(ST.f32_to_bf16(np.array([np.nan], np.float32))))[0]
    ST.write(tmp_path / "b.st", {"x": bits}, dtypes={"x": "BF16"})
    t = st_torch.load_file(str(tmp_path / "b.st"))["x"]
    assert t.dtype == torch.bfloat16
    np.testing.assert_array_equal(t.float().numpy(), ST.bf16_to_f32(bits))


@pytest.mark.parametrize("mutate,needle", [
    (lambda d: d[:5], "too short"),
    (lambda d: d[:-3], "truncated"),
    (lambda d: d + b"xx", "trailing"),
    (lambda d: struct.pack("<Q", 10 ** 12) + d[8:], "exceeds"),
    (lambda d: d[:8] + b"[" + d[9:], "not valid"),
    (lambda d: d.replace(b'"F32"', b'"F31"'), "unsupported dtype"),
    (lambda d: d.replace(b'"shape":[3]', b'"shape":[4]'), "needs"),
])
def test_safetensors_rejects_malformed(mutate, needle):
    data = ST.encode({"a": np.arange(3, dtype=np.float32), "b": np.arange(2, dtype=np.float32)})
    with pytest.raises(ST.SafetensorsError, match=needle):
        ST.decode(mutate(data))


def test_safetensors_rejects_holes():
    h = json.dumps({"a": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]}}).encode()
    with pytest.raises(ST.SafetensorsError, match="hole"):
        ST.decode(struct.pack("<Q", len(h)) + h + b"\0\0\0")


# Each hostile header once gave a traceback (RecursionError, a raw NumPy ValueError,
# OverflowError) or was silently accepted; each must now be a SafetensorsError.
HOSTILE = {
    "nested-100k": (b'{"a":' + b"[" * 100000 + b"]" * 100000 + b"}", "nested"),
    "nested-metadata": ({"__metadata__": {"k": {"x": {"y": [[]]}}}}, "nested"),
    "shape-2**32-squared": ({"a": {"dtype": "F32", "shape": [2 ** 32, 2 ** 32], "data_offsets": [0, 0]}}, "shape"),
    "shape-2**64": ({"a": {"dtype": "F32", "shape": [2 ** 64], "data_offsets": [0, 0]}}, "overflows"),
    "zero-size-huge-dim": ({"a": {"dtype": "F32", "shape": [2 ** 63, 0], "data_offsets": [0, 0]}}, "overflows"),
    "too-many-dims": ({"a": {"dtype": "U8", "shape": [1] * 40, "data_offsets": [0, 1]}}, "at most"),
    "shape-bool": ({"a": {"dtype": "U8", "shape": [True], "data_offsets": [0, 1]}}, "shape"),
    "metadata-list": ({"__metadata__": ["a"]}, "str to str"),
    "metadata-int-value": ({"__metadata__": {"a": 1}}, "str to str"),
    "metadata-false": ({"__metadata__": False}, "str to str"),
    "duplicate-name": (b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                       b'"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', "duplicate"),
    "dtype-not-string": ({"a": {"dtype": ["F32"], "shape": [], "data_offsets": [0, 4]}}, "unsupported dtype"),
    "nan-constant": (b'{"a":{"dtype":"U8","shape":[NaN],"data_offsets":[0,1]}}', "not valid"),
    "offsets-reversed": ({"a": {"dtype": "U8", "shape": [0], "data_offsets": [1, 0]}}, "data_offsets"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_safetensors_rejects_hostile_headers(name):
    header, needle = HOSTILE[name]
    with pytest.raises(ST.SafetensorsError, match=needle) as e:
        ST.decode(_file(header, b"\0" * 8))
    assert e.value.kind == "format" and isinstance(e.value, swaref.SwarefError)


def test_safetensors_null_metadata_is_absent_like_the_package():
    t, _, meta = ST.decode(_file({"__metadata__": None, "a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}},
                                 b"\x07"))
    assert meta == {} and t["a"].tolist() == [7]


def test_safetensors_header_over_100_mib_is_refused_before_parsing():
    n = ST.MAX_HEADER + 8
    with pytest.raises(ST.SafetensorsError, match="exceeds"):
        ST.decode(struct.pack("<Q", n) + b" " * 16)
    assert ST.MAX_HEADER == 100 * 1024 * 1024


def test_hostile_headers_agree_with_the_safetensors_package(tmp_path):
    """The official reader rejects the same files (where it can read them at all)."""
    stn = pytest.importorskip("safetensors.numpy")
    for name in ("shape-2**32-squared", "metadata-list", "metadata-int-value", "offsets-reversed"):
        header, _ = HOSTILE[name]
        p = tmp_path / f"{name}.st"
        p.write_bytes(_file(header, b"\0" * 8))
        with pytest.raises(Exception):
            stn.load_file(str(p))


def test_read_refuses_devices_fifos_and_oversized_files(tmp_path):
    with pytest.raises(ST.SafetensorsError, match="not a regular file"):
        ST.read("/dev/zero")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ST.SafetensorsError, match="not a regular file"):
        ST.read(tmp_path / "fifo")
    big = tmp_path / "sparse.st"
    with open(big, "wb") as f:
        f.truncate(3 * 2 ** 30)                     # 3 GB sparse file: never read
    with pytest.raises(ST.SafetensorsError, match="more than"):
        ST.read(big, limit=2 ** 20)


def test_json_depth_ignores_brackets_in_strings_and_limits_nesting():
    assert json_depth(b'{"a": "[[[[{{{{", "b": [1, [2]]}') == 3
    assert json_depth(b'"\\"[[["') == 0
    assert json_depth(b"[" * 5000 + b"]" * 5000) == 5000
    with pytest.raises(swaref.SwarefError, match="nested 17 levels"):
        load_json(b"[" * 17 + b"]" * 17, "doc")
    assert load_json(b"[" * 16 + b"]" * 16, "doc") == [[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]
