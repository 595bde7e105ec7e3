"""Golden vectors and the conformance runner (swaref/vectors.py, docs/conformance.md).

The suite is generated once per module into a temporary folder (never committed).
The expected values are checked against independent computations (tests/oracle.py,
a slot formula written here, the ``safetensors`` package); broken ports written
here from swaref's public primitives must FAIL the suite, and correct ones
(the reference, the compiled kernel, a float32-only port) must pass it.
"""
import hashlib
import json
import math
import os
import shutil
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import swaref
from swaref import _safetensors as ST
from swaref import vectors as VX
from swaref.cli import main as cli_main

from oracle import dense_attention_f64

try:
    import swaref._backend  # noqa: F401
    HAVE_CYTHON = True
except ImportError as e:  # pragma: no cover - depends on the build
    HAVE_CYTHON = False
    CYTHON_WHY = f"swaref._backend is not importable ({e})"


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    d = tmp_path_factory.mktemp("core")
    manifest = VX.generate_suite(str(d), "core")
    return str(d), manifest


def _valid_ids(manifest):
    return {c["id"] for c in manifest["cases"] if c["expect"] == "valid"}


def _run(suite_dir, fn, only=None):
    lines = []
    code = VX.check_suite(suite_dir, python=fn, out=lines.append, only=only)
    return code, lines


def _status(lines):
    return {l.split()[1]: l.split()[0] for l in lines if l.split()[0] in ("PASS", "FAIL", "MISSING")}


# --------------------------------------------------------------------------
# safetensors: our writer/reader against the safetensors package
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# The suite: determinism, manifest, coverage, golden values
# --------------------------------------------------------------------------

def test_regeneration_is_byte_identical(suite, tmp_path):
    d, m = suite
    m2 = VX.generate_suite(str(tmp_path), "core")
    assert m2["suite_hash"] == m["suite_hash"]
    for f in sorted(os.listdir(d)):
        with open(os.path.join(d, f), "rb") as a, open(tmp_path / f, "rb") as b:
            assert a.read() == b.read(), f
    # Ids and bytes do not depend on generation order or on the other cases.
    specs = VX.core_cases()
    pick = [specs[-1], specs[3], specs[40]]
    VX.generate_suite(str(tmp_path / "sub"), cases=pick)
    for s in pick:
        with open(os.path.join(d, s.case_id + ".safetensors"), "rb") as a, \
                open(tmp_path / "sub" / (s.case_id + ".safetensors"), "rb") as b:
            assert a.read() == b.read()


def test_manifest_fields_and_hashes(suite):
    d, m = suite
    assert m["format"] == "swaref-vectors" and m["format_version"] == VX.FORMAT_VERSION
    assert m["spec_version"] == swaref.SPEC_VERSION and m["generator"]["version"] == swaref.__version__
    assert "p - W < j <= p" in m["conventions"]["window_rule"]
    ids = [c["id"] for c in m["cases"]]
    assert len(ids) == len(set(ids))
    for c in m["cases"]:
        with open(os.path.join(d, c["file"]), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == c["sha256"]
        if c["expect"] == "valid":
            assert set(c["wrong_variants"]) == set(VX.WRONG_VARIANTS)
            assert "out" in c["tolerance"]
        else:
            assert c["error_kinds"] and set(c["error_kinds"]) <= set(swaref.ERROR_KINDS)
    assert 40 <= len(ids) <= 120


def test_core_coverage(suite):
    _, m = suite
    valid = [c for c in m["cases"] if c["expect"] == "valid"]
    windows = {c["window"] for c in valid}
    assert {1, 2, 3, None} <= windows
    rel = set()
    for c in valid:
        T = c.get("T") or c["T_prompt"] + c["n_decode"]
        if c["window"]:
            W = c["window"]
            rel |= {"W<T" if W < T else "W=T" if W == T else "W>T"}
            rel |= {x for x, n in (("1", 1), ("W-1", W - 1), ("W", W), ("W+1", W + 1), ("2W+3", 2 * W + 3))
                    if T == n}
            if c["op"] == "decode" and T >= 3 * W:
                rel.add("wraps3")
    assert rel >= {"W<T", "W=T", "W>T", "1", "W-1", "W", "W+1", "2W+3", "wraps3"}
    assert {c["Hq"] // c["Hkv"] for c in valid} >= {1, 2, 4, 8}
    assert any(c["Hkv"] == 1 and c["Hq"] > 1 for c in valid)
    assert {1, 256} <= {c["D"] for c in valid}
    assert {c["dtype"] for c in valid} == set(VX.DTYPES)
    assert {c["op"] for c in valid} == {"attention", "prefill", "decode"}
    assert any(c.get("first_key_position", 0) >= 2 ** 32 or c.get("start", 0) >= 2 ** 32 for c in valid)
    assert any(c["poison"] for c in valid if c["op"] == "attention")
    assert any(c["poison"] and c["history"] for c in valid if c["op"] != "attention")
    kinds = {k for c in m["cases"] if c["expect"] == "invalid" for k in c["error_kinds"]}
    assert kinds >= {"window", "shape", "heads", "dtype", "positions", "schedule", "no_visible_key"}
    for b in VX.WRONG_VARIANTS:
        assert any(c["wrong_variants"][b]["applicable"] for c in valid), b


def _load(d, c):
    t, dts, meta = ST.read(os.path.join(d, c["file"]))
    return {n: np.asarray(ST.as_float(a, dts[n]), dtype=np.float64) if dts[n] in ("BF16", "F16", "F32", "F64")
            else a for n, a in t.items()}


def test_golden_outputs_match_independent_oracle(suite):
    d, m = suite
    for c in m["cases"]:
        if c["expect"] != "valid":
            continue
        t = _load(d, c)
        scale = float(t["scale"]) if "scale" in t else None
        W = int(t["window"]) if "window" in t else None
        if c["op"] == "attention":
            q_pos, k_pos, k, v = t["q_pos"], t["k_pos"], t["k"], t["v"]
        else:
            N = t["q"].shape[0]
            start = int(t["start"])
            q_pos = np.arange(start, start + N)
            k, v, k_pos = t["k"], t["v"], q_pos
            if "init_pos" in t:
                ip = t["init_pos"]
                order = np.argsort(np.where(ip >= 0, ip, np.iinfo(np.int64).max))[:int((ip >= 0).sum())]
                k = np.concatenate([t["init_k"][order], k])
                v = np.concatenate([t["init_v"][order], v])
                k_pos = np.concatenate([ip[order], k_pos])
        # The oracle masks with -inf but multiplies probabilities by V: keep poison out of its V.
        want = dense_attention_f64(t["q"], np.nan_to_num(k, posinf=0, neginf=0),
                                   np.nan_to_num(v, posinf=0, neginf=0), q_pos, k_pos, W, scale)
        atol = t["expected.out_atol"]
        assert np.isfinite(t["expected.out"]).all()
        err = np.abs(want - t["expected.out"]).max(axis=(1, 2))
        assert (err <= 0.1 * atol).all(), (c["id"], err.max(), atol.min())
        if c["poison"]:
            assert not (np.isfinite(t["k"]).all() and np.isfinite(t.get("init_k", t["k"])).all()
                        and np.abs(t["k"]).max() < 6e4), c["id"]


def test_golden_cache_states_follow_slot_rule(suite):
    """Slot s after a step ending at position e holds the newest position <= e with p mod C == s."""
    d, m = suite
    for c in m["cases"]:
        if c["expect"] != "valid" or c["op"] == "attention":
            continue
        t = _load(d, c)
        C = int(t["capacity"])
        first = int(t["start"]) - c["history"]
        ends = int(t["start"]) - 1 + np.cumsum(list(c["schedule"]) + [1] * c["n_decode"])
        for i, e in enumerate(ends):
            want = np.full(C, -1)
            for p in range(first, int(e) + 1):
                want[p % C] = p
            np.testing.assert_array_equal(t["expected.cache_pos"][i], want, err_msg=c["id"])
            for s in np.nonzero(want >= 0)[0]:
                p = want[s]
                src_k = t["k"][p - int(t["start"])] if p >= int(t["start"]) else t["init_k"][s]
                np.testing.assert_array_equal(t["expected.cache_k"][i, s], src_k)


# --------------------------------------------------------------------------
# Correct ports pass
# --------------------------------------------------------------------------

def test_reference_backend_passes(suite):
    code, lines = _run(suite[0], VX.reference_port)
    assert code == 0, "\n".join(l for l in lines if not l.startswith("PASS"))
    assert lines[-1].startswith(f"summary: {len(suite[1]['cases'])} passed, 0 failed")
    assert suite[1]["suite_hash"] in lines[-1] and f"spec {swaref.SPEC_VERSION}" in lines[-1]


@pytest.mark.skipif(not HAVE_CYTHON, reason=CYTHON_WHY if not HAVE_CYTHON else "")
def test_cython_backend_passes(suite):
    code, lines = _run(suite[0], VX.cython_port)
    assert code == 0, "\n".join(l for l in lines if not l.startswith("PASS"))


def _float32_port(inputs, meta):
    """A port that computes everything in float32 (the least precision the tolerance allows)."""
    q = inputs["q"].astype(np.float32)
    k = inputs["k"].astype(np.float32)
    v = inputs["v"].astype(np.float32)
    D = q.shape[2]
    scale = np.float32(inputs["scale"]) if "scale" in inputs else np.float32(1 / math.sqrt(D))
    W = int(inputs["window"]) if "window" in inputs else None

    def attend(qrow, p, keys, vals, pos):
        m = pos <= p if W is None else (pos <= p) & (pos > p - W)
        kk, vv = keys[m], vals[m]
        G = qrow.shape[0] // kk.shape[1]
        s = np.einsum("hd,nhd->hn", qrow, np.repeat(kk, G, axis=1)) * scale
        e = np.exp(s - s.max(axis=1, keepdims=True))
        w = e / e.sum(axis=1, keepdims=True)
        return np.einsum("hn,nhd->hd", w, np.repeat(vv, G, axis=1))

    if meta["op"] == "attention":
        out = np.stack([attend(q[i], p, k, v, inputs["k_pos"]) for i, p in enumerate(inputs["q_pos"])])
        return {"out": out}
    return VX.reference_port(inputs, meta) | {"out": _trace32(inputs, attend, q, k, v)}


def _trace32(inputs, attend, q, k, v):
    start = int(inputs["start"])
    keys, vals, pos = k, v, np.arange(start, start + len(q))
    if "init_pos" in inputs:
        ip = inputs["init_pos"]
        ok = ip >= 0
        keys = np.concatenate([inputs["init_k"].astype(np.float32)[ok], k])
        vals = np.concatenate([inputs["init_v"].astype(np.float32)[ok], v])
        pos = np.concatenate([ip[ok], pos])
    return np.stack([attend(q[i], start + i, keys, vals, pos) for i in range(len(q))])


def test_float32_port_passes(suite):
    d, m = suite
    only = {c["id"] for c in m["cases"] if c["expect"] == "valid" and c["dtype"] != "float64"}
    code, lines = _run(d, _float32_port, only=only)
    assert code == 0, "\n".join(l for l in lines if not l.startswith("PASS"))


# --------------------------------------------------------------------------
# Broken ports fail: written here from swaref's public primitives
# --------------------------------------------------------------------------

def _broken_port(bug):
    """A port with one known bug.  Traces run their own W-slot ring (positions -> slots)."""

    def attend(q, keys, vals, kpos, qpos, W, scale):
        if W is not None and W < 1:
            return np.full(q.shape, np.nan)
        try:
            return swaref.attention(q, keys, vals, window=W, q_pos=qpos, k_pos=kpos, scale=scale)
        except swaref.SwarefError:
            return np.full(q.shape, np.nan)

    def port(inputs, meta):
        q, k, v = (inputs[n].astype(np.float64) for n in "qkv")
        W = int(inputs["window"]) if "window" in inputs else None
        D = q.shape[2]
        scale = float(inputs["scale"]) if "scale" in inputs else None
        if bug == "wrong_scale":      # an explicit scale ignored, or the default scale not applied
            default = 1.0 / math.sqrt(D)
            if scale is not None:
                scale = default if abs(scale - default) > 1e-9 else 2 * scale
            else:
                scale = 1.0 if D > 1 else 2.0
        Wb = None if W is None else W + {"window_plus_1": 1, "window_minus_1": -1}.get(bug, 0)
        if meta["op"] == "attention":
            qp, kp = inputs["q_pos"], inputs["k_pos"]
            if bug == "ignored_position_offset":
                kp = np.arange(len(kp))
                qp = kp[len(kp) - len(qp):]
            return {"out": attend(q, k, v, kp, qp, Wb, scale)}
        C = int(inputs["capacity"])
        start = int(inputs["start"])
        ring_k = np.zeros((C,) + k.shape[1:])
        ring_v = np.zeros_like(ring_k)
        ring_p = np.full(C, -1)
        base = start
        if "init_pos" in inputs:
            ok = inputs["init_pos"] >= 0
            ring_p[ok] = inputs["init_pos"][ok]
            ring_k[ok] = inputs["init_k"][ok]
            ring_v[ok] = inputs["init_v"][ok]
            base = int(ring_p[ok].min()) if ok.any() else start
        stored = int((ring_p >= 0).sum())

        def write(a, n):
            nonlocal stored
            for i in range(max(a, a + n - C), a + n):
                if bug == "no_wrap" and stored >= C:
                    continue
                p = start + i
                s = (p - base) % C if bug == "ignored_position_offset" else p % C
                ring_k[s], ring_v[s], ring_p[s] = k[i], v[i], p
                stored += 1

        sched = [int(c) for c in inputs["schedule"]] + [1] * int(inputs["n_decode"])
        outs, states = [], []
        a = 0
        for i, n in enumerate(sched):
            first = i >= len(inputs["schedule"]) or bug == "write_before_attend"
            if first:
                write(a, n)
            ok = ring_p >= 0
            order = np.argsort(ring_p[ok])
            kk, vv, pp = ring_k[ok][order], ring_v[ok][order], ring_p[ok][order]
            if not first:
                kk, vv = np.concatenate([kk, k[a:a + n]]), np.concatenate([vv, v[a:a + n]])
                pp = np.concatenate([pp, np.arange(start + a, start + a + n)])
            qp = np.arange(start + a, start + a + n)
            if bug == "stale_slot_leak":
                ncache = int(ok.sum())
                rows = []
                for j, p in enumerate(qp):
                    m = (pp <= p) & ((np.arange(len(pp)) < ncache) | (pp > p - W))
                    rows.append(swaref.softmax_attend(q[a + j], kk[m], vv[m], scale or 1 / math.sqrt(D)))
                outs.append(np.stack(rows))
            else:
                outs.append(attend(q[a:a + n], kk, vv, pp, qp, Wb, scale))
            if not first:
                write(a, n)
            states.append((ring_p.copy(), ring_k.copy(), ring_v.copy()))
            a += n
        return {"out": np.concatenate(outs), "cache_pos": np.stack([s[0] for s in states]),
                "cache_k": np.stack([s[1] for s in states]), "cache_v": np.stack([s[2] for s in states])}

    return port


def test_broken_test_port_without_bug_passes(suite):
    d, m = suite
    code, lines = _run(d, _broken_port(None), only=_valid_ids(m))
    assert code == 0, "\n".join(l for l in lines if not l.startswith("PASS"))


@pytest.mark.parametrize("bug", VX.WRONG_VARIANTS)
def test_broken_ports_fail(suite, bug):
    d, m = suite
    code, lines = _run(d, _broken_port(bug), only=_valid_ids(m))
    status = _status(lines)
    must_fail = {c["id"] for c in m["cases"] if c["expect"] == "valid" and c["wrong_variants"][bug]["applicable"]}
    assert must_fail and code == 1
    missed = sorted(i for i in must_fail if status[i] != "FAIL")
    assert not missed, f"{bug} passed {missed}"
    if bug in ("write_before_attend", "no_wrap"):
        assert any("first_bad_step=" in l for l in lines if l.startswith("FAIL"))


# --------------------------------------------------------------------------
# Tampering and bad results
# --------------------------------------------------------------------------

def _copy(suite, tmp_path):
    dst = tmp_path / "suite"
    shutil.copytree(suite[0], dst)
    return dst


def _rehash(dst):
    with open(dst / "manifest.json") as f:
        m = json.load(f)
    for c in m["cases"]:
        with open(dst / c["file"], "rb") as f:
            c["sha256"] = hashlib.sha256(f.read()).hexdigest()
    m["suite_hash"] = VX._manifest_hash(m)
    with open(dst / "manifest.json", "w") as f:
        json.dump(m, f)


def _flip_byte(path, at=-1):
    data = bytearray(path.read_bytes())
    data[at] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how,needle", [
    ("flip", "sha256"), ("manifest", "suite_hash"), ("truncate", "malformed"), ("swap", "disagree"),
    ("delete", "cannot read"), ("nomanifest", "cannot read"),
])
def test_tampered_suite_exits_2(suite, tmp_path, how, needle):
    dst = _copy(suite, tmp_path)
    c0, c1 = suite[1]["cases"][0], suite[1]["cases"][1]
    if how == "flip":
        _flip_byte(dst / c0["file"])
    elif how == "manifest":
        m = json.loads((dst / "manifest.json").read_text())
        m["cases"][0]["window"] = 99
        (dst / "manifest.json").write_text(json.dumps(m))
    elif how == "truncate":
        p = dst / c0["file"]
        p.write_bytes(p.read_bytes()[:-4])
        _rehash(dst)
    elif how == "swap":
        shutil.copy(dst / c1["file"], dst / c0["file"])
        _rehash(dst)
    elif how == "delete":
        os.remove(dst / c0["file"])
    else:
        os.remove(dst / "manifest.json")
    lines = []
    assert VX.check_suite(str(dst), python=VX.reference_port, out=lines.append) == 2
    assert lines[0].startswith("CORRUPT") and needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def results(suite, tmp_path_factory):
    d = tmp_path_factory.mktemp("results")
    VX.run_port_to_dir(suite[0], VX.reference_port, str(d))
    return str(d)


def test_results_folder_passes_and_json_report(suite, results, tmp_path):
    rep = tmp_path / "r.json"
    assert cli_main(["vectors", "check", suite[0], "--results", results, "--json-report", str(rep)]) == 0
    doc = json.loads(rep.read_text())
    assert doc["status"] == "pass" and doc["suite_hash"] == suite[1]["suite_hash"]
    assert doc["counts"]["PASS"] == len(suite[1]["cases"])


def test_bad_results_get_per_case_messages(suite, results, tmp_path, capsys):
    res = tmp_path / "res"
    shutil.copytree(results, res)
    cases = {c["id"]: c for c in suite[1]["cases"]}
    ids = sorted(i for i in cases if cases[i]["expect"] == "valid" and cases[i]["op"] == "decode")
    att = sorted(i for i in cases if cases[i]["expect"] == "valid" and cases[i]["op"] == "attention")
    neg = sorted(i for i in cases if cases[i]["expect"] == "invalid")
    os.remove(res / f"{ids[0]}.out.safetensors")                                # missing
    p = res / f"{ids[1]}.out.safetensors"
    p.write_bytes(p.read_bytes()[:-10])                                         # truncated
    t, _, meta = ST.read(res / f"{att[0]}.out.safetensors")
    ST.write(res / f"{att[0]}.out.safetensors", {"out": t["out"].astype(np.int32)}, metadata=meta)
    ST.write(res / f"{att[1]}.out.safetensors", {"out": t["out"]}, metadata=meta)  # wrong shape/other digest
    t, _, meta = ST.read(res / f"{att[2]}.out.safetensors")
    ST.write(res / f"{att[2]}.out.safetensors", t, metadata={"input_digest": "0" * 64})
    (res / f"{neg[0]}.err.json").write_text('{"kind": "bogus"}')
    (res / f"{neg[1]}.err.json").write_text("not json")
    (res / "some-other-case.out.safetensors").write_bytes(b"")
    rep = tmp_path / "r.json"
    code = cli_main(["vectors", "check", suite[0], "--results", str(res), "--json-report", str(rep)])
    out = capsys.readouterr().out
    assert code == 1 and "Traceback" not in out
    by = {c["case_id"]: c for c in json.loads(rep.read_text())["cases"]}
    assert by[ids[0]]["status"] == "MISSING"
    assert by[ids[1]]["status"] == "FAIL" and "truncated" in by[ids[1]]["message"]
    assert "dtype I32" in by[att[0]]["message"]
    assert by[att[1]]["status"] == "FAIL"
    assert "another suite version" in by[att[2]]["message"]
    assert "not in the closed list" in by[neg[0]]["message"]
    assert "not a JSON object" in by[neg[1]]["message"]
    assert "another suite version?" in out and "1 failed" not in out


def test_wrong_kind_and_accepting_negative_fail(suite):
    d, m = suite
    neg = [c["id"] for c in m["cases"] if c["expect"] == "invalid"]

    def wrong_kind(inputs, meta):
        raise swaref.SwarefError("argument", "nope")

    code, lines = _run(d, wrong_kind, only=set(neg[:2]) | {next(iter(_valid_ids(m)))})
    assert code == 1 and all(l.startswith("FAIL") for l in lines[:-1])
    assert "rejected a valid input" in "\n".join(lines)
    code, lines = _run(d, lambda i, m: {"out": np.zeros(1)}, only=set(neg[:1]))
    assert code == 1 and "accepted an input that must be rejected" in lines[0]
    code, lines = _run(d, lambda i, m: 1 / 0, only=set(neg[:1]))
    assert code == 1 and "ZeroDivisionError" in lines[0]


def test_cli_generate_and_check_python(tmp_path, capsys):
    pick = [s for s in VX.core_cases() if s.op == "decode"][:2]
    VX.generate_suite(str(tmp_path / "s"), cases=pick)
    assert cli_main(["vectors", "check", str(tmp_path / "s"), "--python", "swaref.vectors:reference_port"]) == 0
    assert cli_main(["vectors", "check", str(tmp_path / "s"), "--python", "swaref.vectors:nope"]) == 2
    assert cli_main(["vectors", "check", str(tmp_path / "s"), "--results", str(tmp_path / "none")]) == 1
    out = capsys.readouterr().out
    assert out.count("MISSING") == 2


def test_exec_mode_with_a_python_script(suite, tmp_path):
    script = tmp_path / "port.py"
    script.write_text(
        "import sys\nfrom swaref import vectors as VX, _safetensors as ST\n"
        "t, d, meta = ST.read(sys.argv[1])\n"
        "case_id = meta['case_id']\n"
        "try:\n    r = VX.run_python(VX.reference_port, (t, d, meta))\n"
        "except Exception:\n    sys.exit(3)\n"
        "import os\nout = sys.argv[2]\nres = os.path.dirname(out)\n"
        "if r[0] == 'error':\n    VX.write_result(res, case_id, error=r[1])\n"
        "else:\n    VX.write_result(res, case_id, r[1], input_digest=meta['input_digest'])\n")
    ids = sorted(_valid_ids(suite[1]))[:2] + [c["id"] for c in suite[1]["cases"] if c["expect"] == "invalid"][:1]
    lines = []
    import sys
    code = VX.check_suite(suite[0], exec_cmd=f"{sys.executable} {script} {{in}} {{out}}", out=lines.append,
                          only=set(ids))
    assert code == 0, lines
    lines = []
    code = VX.check_suite(suite[0], exec_cmd="exit 7", out=lines.append, only=set(ids[:1]))
    assert code == 1 and "status 7" in lines[0]
    lines = []                        # a result file does not excuse a failing exit status
    code = VX.check_suite(suite[0], exec_cmd=f"{sys.executable} {script} {{in}} {{out}}; exit 3",
                          out=lines.append, only=set(ids[:1]))
    assert code == 1 and "status 3" in lines[0]


# --------------------------------------------------------------------------
# The generator refuses cases that would not catch bugs
# --------------------------------------------------------------------------

def test_generator_raises_when_a_wrong_variant_would_pass(monkeypatch):
    spec = [s for s in VX.core_cases() if s.op == "prefill" and s.dtype == "bfloat16" and s.window][0]
    VX.build_case(spec)
    monkeypatch.setattr(VX, "_boost", lambda *a, **k: None)
    monkeypatch.setattr(VX, "MIN_MISS", 1e9)
    with pytest.raises(VX.GeneratorError, match="would pass"):
        VX.build_case(spec)


def test_generator_confirms_negative_kinds(monkeypatch):
    spec = [s for s in VX.core_cases() if s.error == "window-zero"][0]
    monkeypatch.setitem(VX._NEGATIVE, "window-zero", ("attention", ("shape",)))
    tensors, entry = VX.build_case(spec)
    with pytest.raises(VX.GeneratorError, match="kind 'window'"):
        VX._confirm_negative(spec, tensors, entry)


def test_every_wrong_variant_recorded_with_margin(suite):
    _, m = suite
    for c in m["cases"]:
        for b, r in c.get("wrong_variants", {}).items():
            if r["applicable"]:
                miss = math.inf if r["output_miss_units"] == "inf" else r["output_miss_units"]
                assert miss >= VX.MIN_MISS or r["cache_steps_wrong"] > 0, (c["id"], b, r)


@st.composite
def _specs(draw):
    op = draw(st.sampled_from(["attention", "prefill", "decode"]))
    dt = draw(st.sampled_from(sorted(VX.DTYPES)))
    Hkv = draw(st.integers(1, 3))
    Hq = Hkv * draw(st.sampled_from([1, 2, 4]))
    D = draw(st.sampled_from([1, 2, 3, 8, 32]))
    W = draw(st.one_of(st.none(), st.integers(1, 9)))
    T = draw(st.integers(1, 20))
    start = draw(st.sampled_from([0, 1, 5, 1000, 2 ** 35 + 3]))
    if op == "attention":
        return VX.CaseSpec(op, dt, Hq, Hkv, D, W, T, T + draw(st.integers(0, 6)), start=start,
                           gaps=draw(st.booleans()), scale=draw(st.sampled_from([None, 0.1, 3.0])))
    cuts = sorted(draw(st.sets(st.integers(1, T - 1), max_size=4))) if T > 1 else []
    sched = tuple(b - a for a, b in zip([0] + cuts, cuts + [T]))
    hist = 0 if W is None or start == 0 else min(start, draw(st.integers(0, W)))
    return VX.CaseSpec(op, dt, Hq, Hkv, D, W, T, schedule=sched,
                       n_decode=draw(st.integers(1, 15)) if op == "decode" else 0, start=start, hist=hist,
                       capacity=T + 16 if W is None else 0, poison=bool(hist) and draw(st.booleans()))


@settings(max_examples=15)
@given(spec=_specs())
def test_generator_handles_any_case_and_its_bugs_are_caught(spec, tmp_path_factory):
    """Random cases: the generator never gives up, the reference passes, applicable bugs fail."""
    d = str(tmp_path_factory.mktemp("one"))
    m = VX.generate_suite(d, cases=[spec])
    c = m["cases"][0]
    assert _run(d, VX.reference_port)[0] == 0
    for bug in ("window_plus_1", "write_before_attend", "stale_slot_leak", "no_wrap"):
        if c["wrong_variants"][bug]["applicable"]:
            code, lines = _run(d, _broken_port(bug))
            assert code == 1, (bug, lines)
