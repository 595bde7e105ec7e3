"""The generator (swaref/conformance/generate.py, cases.py, variants.py): determinism, coverage, golden values.

Golden values are checked against independent computations (tests/oracle.py, a
slot formula written here); the generator must refuse a case that would let a
known-wrong variant pass; generated suites are byte-identical to the ones
swaref wrote before the conformance package was split out of swaref/vectors.py.
"""
import hashlib
import json
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import swaref
from swaref import conformance as C
from swaref.conformance import generate as G
from swaref.conformance import safetensors_io as ST
from swaref.conformance.files import is_safe_name
from swaref.conformance.suite import manifest_hash

from conformance_helpers import broken_port, core_suite, run
from oracle import dense_attention_f64

#: sha256 over the sorted "sha256  file" lines of every core case file, and the manifest hash with
#: generator.version and spec_version set to "X" (both move with releases), as swaref/vectors.py wrote
#: them before the split (commit f0a5278).  A change here changes every port's claim: bump
#: FORMAT_VERSION or regenerate deliberately.
CORE_FILES_DIGEST = "d76497023699ebbf423abc62c19528ad53be453afc63b3b3c4bab14bc22a4a8e"
CORE_MANIFEST_HASH_VERSIONLESS = "e9b389aecbc25b415b33e825f8d4e3c95a928ac54535f7b7f346a583c4b9ec92"


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return core_suite(tmp_path_factory)


def test_core_suite_is_byte_identical_to_before_the_split(suite):
    d, m = suite
    lines = []
    for f in sorted(os.listdir(d)):
        if f != "manifest.json":
            with open(os.path.join(d, f), "rb") as fh:
                lines.append(f"{hashlib.sha256(fh.read()).hexdigest()}  {f}")
    assert hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest() == CORE_FILES_DIGEST
    with open(os.path.join(d, "manifest.json")) as f:
        on_disk = json.load(f)
    on_disk["generator"]["version"] = on_disk["spec_version"] = "X"
    assert manifest_hash(on_disk) == CORE_MANIFEST_HASH_VERSIONLESS
    assert m["generator"]["module"] == "swaref.vectors"


def test_case_ids_are_safe_names():
    ids = [c.case_id for c in C.full_cases()]
    assert ids and all(is_safe_name(i) for i in ids)


def test_generator_refuses_an_unsafe_case_id(tmp_path, monkeypatch):
    spec = C.core_cases()[0]
    monkeypatch.setattr(type(spec), "case_id", property(lambda self: "x;touch MARKER;#"))
    with pytest.raises(C.GeneratorError, match="case id"):
        C.generate_suite(str(tmp_path), cases=[spec])
    assert not os.listdir(tmp_path)


def test_regeneration_is_byte_identical(suite, tmp_path):
    d, m = suite
    m2 = C.generate_suite(str(tmp_path), "core")
    assert m2["suite_hash"] == m["suite_hash"]
    for f in sorted(os.listdir(d)):
        with open(os.path.join(d, f), "rb") as a, open(tmp_path / f, "rb") as b:
            assert a.read() == b.read(), f
    # Ids and bytes do not depend on generation order or on the other cases.
    specs = C.core_cases()
    pick = [specs[-1], specs[3], specs[40]]
    C.generate_suite(str(tmp_path / "sub"), cases=pick)
    for s in pick:
        with open(os.path.join(d, s.case_id + ".safetensors"), "rb") as a, \
                open(tmp_path / "sub" / (s.case_id + ".safetensors"), "rb") as b:
            assert a.read() == b.read()


def test_manifest_fields_and_hashes(suite):
    d, m = suite
    assert m["format"] == "swaref-vectors" and m["format_version"] == C.FORMAT_VERSION
    assert m["spec_version"] == swaref.SPEC_VERSION and m["generator"]["version"] == swaref.__version__
    assert "p - W < j <= p" in m["conventions"]["window_rule"]
    ids = [c["id"] for c in m["cases"]]
    assert len(ids) == len(set(ids))
    for c in m["cases"]:
        with open(os.path.join(d, c["file"]), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == c["sha256"]
        if c["expect"] == "valid":
            assert set(c["wrong_variants"]) == set(C.WRONG_VARIANTS)
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
    assert {c["dtype"] for c in valid} == set(C.DTYPES)
    assert {c["op"] for c in valid} == {"attention", "prefill", "decode"}
    assert any(c.get("first_key_position", 0) >= 2 ** 32 or c.get("start", 0) >= 2 ** 32 for c in valid)
    assert any(c["poison"] for c in valid if c["op"] == "attention")
    assert any(c["poison"] and c["history"] for c in valid if c["op"] != "attention")
    kinds = {k for c in m["cases"] if c["expect"] == "invalid" for k in c["error_kinds"]}
    assert kinds >= {"window", "shape", "heads", "dtype", "positions", "schedule", "no_visible_key"}
    for b in C.WRONG_VARIANTS:
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


def test_generator_raises_when_a_wrong_variant_would_pass(monkeypatch):
    spec = [s for s in C.core_cases() if s.op == "prefill" and s.dtype == "bfloat16" and s.window][0]
    C.build_case(spec)
    monkeypatch.setattr(G, "boost", lambda *a, **k: None)
    monkeypatch.setattr(G, "MIN_MISS", 1e9)
    with pytest.raises(C.GeneratorError, match="would pass"):
        C.build_case(spec)


def test_generator_confirms_negative_kinds(monkeypatch):
    spec = [s for s in C.core_cases() if s.error == "window-zero"][0]
    monkeypatch.setitem(C.cases.NEGATIVE, "window-zero", ("attention", ("shape",)))
    tensors, entry = C.build_case(spec)
    with pytest.raises(C.GeneratorError, match="kind 'window'"):
        G._confirm_negative(spec, tensors, entry)


def test_every_wrong_variant_recorded_with_margin(suite):
    _, m = suite
    for c in m["cases"]:
        for b, r in c.get("wrong_variants", {}).items():
            if r["applicable"]:
                miss = math.inf if r["output_miss_units"] == "inf" else r["output_miss_units"]
                assert miss >= G.MIN_MISS or r["cache_steps_wrong"] > 0, (c["id"], b, r)


@st.composite
def _specs(draw):
    op = draw(st.sampled_from(["attention", "prefill", "decode"]))
    dt = draw(st.sampled_from(sorted(C.DTYPES)))
    Hkv = draw(st.integers(1, 3))
    Hq = Hkv * draw(st.sampled_from([1, 2, 4]))
    D = draw(st.sampled_from([1, 2, 3, 8, 32]))
    W = draw(st.one_of(st.none(), st.integers(1, 9)))
    T = draw(st.integers(1, 20))
    start = draw(st.sampled_from([0, 1, 5, 1000, 2 ** 35 + 3]))
    if op == "attention":
        return C.CaseSpec(op, dt, Hq, Hkv, D, W, T, T + draw(st.integers(0, 6)), start=start,
                           gaps=draw(st.booleans()), scale=draw(st.sampled_from([None, 0.1, 3.0])))
    cuts = sorted(draw(st.sets(st.integers(1, T - 1), max_size=4))) if T > 1 else []
    sched = tuple(b - a for a, b in zip([0] + cuts, cuts + [T]))
    hist = 0 if W is None or start == 0 else min(start, draw(st.integers(0, W)))
    return C.CaseSpec(op, dt, Hq, Hkv, D, W, T, schedule=sched,
                       n_decode=draw(st.integers(1, 15)) if op == "decode" else 0, start=start, hist=hist,
                       capacity=T + 16 if W is None else 0, poison=bool(hist) and draw(st.booleans()))


@settings(max_examples=15)
@given(spec=_specs())
def test_generator_handles_any_case_and_its_bugs_are_caught(spec, tmp_path_factory):
    """Random cases: the generator never gives up, the reference passes, applicable bugs fail."""
    d = str(tmp_path_factory.mktemp("one"))
    m = C.generate_suite(d, cases=[spec])
    c = m["cases"][0]
    assert run(d, C.reference_port)[0] == 0
    for bug in ("window_plus_1", "write_before_attend", "stale_slot_leak", "no_wrap"):
        if c["wrong_variants"][bug]["applicable"]:
            code, lines = run(d, broken_port(bug))
            assert code == 1, (bug, lines)
