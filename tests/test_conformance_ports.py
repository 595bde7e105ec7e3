"""Ports against the core suite: correct ones pass, ports with one known bug fail and are named.

The correct ports are swaref's reference and compiled kernel
(swaref/conformance/ports.py) and a float32-only port written here; the broken
ports are written here from swaref's public primitives, one known bug each,
and every case where the bug is applicable must FAIL and name it.
"""
import json
import math

import numpy as np
import pytest

import swaref
from swaref import conformance as C
from swaref.conformance.schema import errors as schema_errors, load_schema

from conformance_helpers import broken_port, core_suite, run, sees, statuses, valid_ids, window_rule

try:
    import swaref._backend  # noqa: F401
    HAVE_CYTHON = True
except ImportError as e:  # pragma: no cover - depends on the build
    HAVE_CYTHON = False
    CYTHON_WHY = f"swaref._backend is not importable ({e})"


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return core_suite(tmp_path_factory)


def test_reference_backend_passes(suite):
    code, lines = run(suite[0], C.reference_port)
    assert code == 0, "\n".join(l for l in lines if not l.startswith("PASS"))
    summary = next(l for l in lines if l.startswith("summary:"))
    assert summary.startswith(f"summary: {len(suite[1]['cases'])} passed, 0 failed")
    assert suite[1]["suite_hash"] in summary and f"spec {swaref.SPEC_VERSION}" in summary
    assert lines[-1] == f"{len(suite[1]['cases'])} passed, 0 failed"


@pytest.mark.skipif(not HAVE_CYTHON, reason=CYTHON_WHY if not HAVE_CYTHON else "")
def test_cython_backend_passes(suite):
    """The compiled backend passes every case and claims spec 1.1; skipping the 1.1 features
    leaves exactly the 1.0 cases and the 1.0.1 claim, with the others SKIP, never PASS."""
    d, m = suite
    code, lines = run(d, C.cython_port, skip_features=[] if _kernel_has_windows() else list(WINDOW_FEATURES))
    assert code == 0, "\n".join(l for l in lines if not l.startswith("PASS"))
    claim = next(l for l in lines if l.startswith("claim:"))
    want = "claim: swaref spec 1.1, " if _kernel_has_windows() else "claim: swaref spec 1.0.1 plus 1.1 softcap,sinks,"
    assert claim.startswith(want) and "format swaref-vectors v3" in claim, claim
    code, lines = run(d, C.cython_port, skip_features=list(C.cases.FEATURES_1_1))      # the 1.0 claim
    assert code == 0 and next(l for l in lines if l.startswith("claim:")).startswith(
        "claim: swaref spec 1.0.1, format")
    skipped = {c["id"] for c in m["cases"] if set(c["features"]) & set(C.cases.FEATURES_1_1)}
    assert {i for i, s in statuses(lines).items() if s == "SKIP"} == skipped and skipped


WINDOW_FEATURES = ("sink_tokens", "two_sided", "chunked")


def _kernel_has_windows():
    """Whether the compiled backend takes the window family yet (branch kernel); until then its port claims
    spec 1.1 part one, skipping the window family's features."""
    q = np.zeros((2, 1, 2))
    try:
        swaref.attention(q, q, q, window=swaref.Chunked(2), backend="cython")
    except swaref.SwarefError:
        return False
    return True


def _float32_port(inputs, meta, sink_in_max=True):
    """A port that computes everything in float32 (the least precision the tolerance allows).
    sink_in_max=False: the sink logit left out of the softmax maximum (docs/conformance.md: not separable)."""
    q = inputs["q"].astype(np.float32)
    k = inputs["k"].astype(np.float32)
    v = inputs["v"].astype(np.float32)
    D = q.shape[2]
    scale = np.float32(inputs["scale"]) if "scale" in inputs else np.float32(1 / math.sqrt(D))
    rule = window_rule(inputs)
    cap = np.float32(inputs["softcap"]) if "softcap" in inputs else None
    sink = inputs["sinks"].astype(np.float32)[:, None] if "sinks" in inputs else None

    def attend(qrow, p, keys, vals, pos):
        m = sees(rule, int(p), pos)
        kk, vv = keys[m], vals[m]
        G = qrow.shape[0] // kk.shape[1]
        s = np.einsum("hd,nhd->hn", qrow, np.repeat(kk, G, axis=1)) * scale
        if cap is not None:
            s = cap * np.tanh(s / cap)
        mx = s.max(axis=1, keepdims=True)
        mx = np.maximum(mx, sink) if sink is not None and sink_in_max else mx
        e = np.exp(s - mx)
        w = e / (e.sum(axis=1, keepdims=True) + (0 if sink is None else np.exp(sink - mx)))
        return np.einsum("hn,nhd->hd", w, np.repeat(vv, G, axis=1))

    if meta["op"] == "attention":
        out = np.stack([attend(q[i], p, k, v, inputs["k_pos"]) for i, p in enumerate(inputs["q_pos"])])
        return {"out": out}
    return C.reference_port(inputs, meta) | {"out": _trace32(inputs, attend, q, k, v)}


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
    only = {c["id"] for c in m["cases"] if c["expect"] == "valid" and c["dtype"] != "float64"
            and "rollback" not in c["features"]}
    code, lines = run(d, _float32_port, only=only)
    assert code == 0, "\n".join(l for l in lines if not l.startswith("PASS"))


def test_broken_test_port_without_bug_passes(suite):
    d, m = suite
    code, lines = run(d, broken_port(None), only=valid_ids(m))
    assert code == 0, "\n".join(l for l in lines if not l.startswith("PASS"))


@pytest.mark.parametrize("bug", C.WRONG_VARIANTS)
def test_broken_ports_fail_and_are_named(suite, bug):
    d, m = suite
    code, lines = run(d, broken_port(bug), only=valid_ids(m))
    status = statuses(lines)
    must_fail = {c["id"] for c in m["cases"] if c["expect"] == "valid" and c["wrong_variants"][bug]["applicable"]}
    assert must_fail and code == 1
    missed = sorted(i for i in must_fail if status[i] != "FAIL")
    assert not missed, f"{bug} passed {missed}"
    # ... and exactly those: where the manifest says the bug changes nothing, the port passes
    extra = sorted(i for i, s_ in status.items() if s_ == "FAIL" and i not in must_fail)
    assert not extra, f"{bug} failed cases the manifest does not mark for it: {extra}"
    if bug in ("write_before_attend", "no_wrap"):
        assert any("first_bad_step=" in l for l in lines if l.startswith("FAIL"))
    # The FAIL line names the variant the port matches, on (nearly) every case that catches it; not
    # all: with W = 1, window_minus_1 sees no key at all, and a port's output there matches nothing.
    named = {l.split()[1] for l in lines if l.startswith("FAIL") and f"matches known wrong variant {bug} " in l}
    assert len(named) >= 0.9 * len(must_fail), (bug, len(named), len(must_fail))
    assert not any(f"wrong variant {bug} " in l for l in lines if l.startswith("PASS"))


def test_a_port_matching_no_known_variant_is_not_named(suite):
    """Hint check can fail: an output that is wrong in an unknown way names no variant."""
    d, m = suite
    cid = sorted(c["id"] for c in m["cases"] if c["expect"] == "valid" and c["op"] == "attention")[0]

    def noisy(inputs, meta):
        res = C.reference_port(inputs, meta)
        return {"out": res["out"] + np.asarray(0.5, dtype=res["out"].dtype)}

    code, lines = run(d, noisy, only={cid})
    assert code == 1 and lines[0].startswith("FAIL") and "matches known wrong variant" not in lines[0]


def test_poison_reaching_the_output_is_named(suite):
    """A port that multiplies masked keys' weights by their NaN values: the FAIL says a masked key leaked."""
    d, m = suite
    ids = {c["id"] for c in m["cases"] if c["poison"] and c["op"] == "attention"}

    def masked_times_zero(inputs, meta):
        res = C.reference_port(inputs, meta)
        leak = np.isnan(inputs["v"].astype(np.float64)).any() * 0.0
        out = res["out"].astype(np.float64)
        out[-1] += np.nan if not np.isfinite(inputs["v"].astype(np.float64)).all() else leak
        return {"out": out}

    code, lines = run(d, masked_times_zero, only=ids)
    fails = [l for l in lines if l.startswith("FAIL")]
    assert code == 1 and len(fails) == len(ids)
    assert all("a masked or stale key (poisoned with NaN/Inf) reached the output" in l for l in fails), fails


def test_sink_left_out_of_the_max_cannot_be_separated(suite):
    """The known bug 'sink excluded from the max' is the same formula up to rounding: in float32 it differs
    only where exp(sink - max s) overflows, and there every key's exact weight is below e^-88.  So a float32
    port with that bug passes every sink case, the row of very negative scores included (docs)."""
    d, m = suite
    only = {c["id"] for c in m["cases"] if c["expect"] == "valid" and c["sinks"] and c["dtype"] != "float64"
            and "rollback" not in c["features"]}
    assert any("negrow" in i for i in only)
    code, lines = run(d, lambda i, mt: _float32_port(i, mt, sink_in_max=False), only=only)
    assert code == 0, "\n".join(l for l in lines if not l.startswith("PASS"))


@pytest.mark.parametrize("bug", C.variants.NEGATIVE_VARIANTS)
def test_ports_accepting_what_they_must_refuse_fail_and_are_named(suite, bug, tmp_path):
    """A port that serves a rollback beyond max_rollback fails exactly the negative cases marked for it."""
    d, m = suite
    neg = [c for c in m["cases"] if c["expect"] == "invalid" and c["error_kinds"] == ["rollback"]]
    must_fail = {c["id"] for c in neg if c.get("wrong_variants", {}).get(bug, {}).get("applicable")}
    code, lines = run(d, broken_port(bug), only={c["id"] for c in neg}, json_report=str(tmp_path / "r.json"))
    st = statuses(lines)
    assert must_fail and code == 1
    doc = json.loads((tmp_path / "r.json").read_text())
    assert not schema_errors(doc, load_schema("report"))
    assert {c["case_id"] for c in doc["cases"] if c["matches_variants"] == [bug]} == must_fail
    assert {i for i, s_ in st.items() if s_ == "FAIL"} == must_fail, lines
    assert all(f"matches known wrong variant {bug} " in l for l in lines if l.startswith("FAIL"))
    assert run(d, broken_port(None), only={c["id"] for c in neg})[0] == 0
